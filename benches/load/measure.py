"""Load generators and process accounting.

- `wrk_closed_loop`: wrk (Debian) at a fixed concurrency; results via `wrk_report.lua`.
- `oha_run`: oha (crates.io) at a fixed request rate (latency-corrected) or a fixed number
  of concurrent requests (the streams runs).
- `ProcessMeter`: CPU seconds (utime + stime), context switches (voluntary + involuntary, over
  every thread) and peak RSS (VmHWM, reset through `/proc/PID/clear_refs`) of a set of
  processes over one run.
"""

import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The body of every path's requests (wrk and oha, through a file): one OpenAI chat completion
# naming the alias the sidecar's `dispatch: model` route serves (services.MODEL_ALIAS), so both
# sidecar routes get the same 71 bytes (`--request-bytes`: a long prompt, `chat_body`). The deployment's model name has the alias's length: the provider, too,
# receives 71 bytes on every path.
REQUEST_BODY = '{"model":"bench-alias","messages":[{"role":"user","content":"Say hi"}]}'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A paragraph of a long prompt, with what JSON writers escape: quotes, a line break, an accent.
PARAGRAPH = ('The proxy reads the whole request before it picks a deployment, so the prompt is '
             'held once; a "quoted" phrase, a line break\nand an accent: caf\u00e9. ')


def chat_body(size):
    """A chat completion of about `size` bytes naming the alias first (as LiteLLM's benchmark
    and many clients write it): a system message and 40 turns of prose, compact and ASCII
    (`\\u00e9`), as Python's `json.dumps` writes it; the same shape as `benches/body.rs`."""
    turn = PARAGRAPH * max(1, size // 41 // len(PARAGRAPH))
    messages = [{"role": "system", "content": PARAGRAPH * 20}]
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": turn}
                 for i in range(40)]
    return json.dumps({"model": "bench-alias", "messages": messages}, separators=(",", ":"))


# With `use_request_bytes(…, half_streamed=True)`: the same body asking for a streamed answer,
# which wrk sends every other request (`wrk_report.lua`).
STREAM_BODY = None


def use_request_bytes(size, half_streamed=False):
    """From now on every path sends a chat body of about `size` bytes (0: the 71-byte one);
    with `half_streamed`, every other request asks for a streamed answer."""
    global REQUEST_BODY, STREAM_BODY
    if size:
        REQUEST_BODY = chat_body(size)
    STREAM_BODY = streamed(REQUEST_BODY) if half_streamed else None


def streamed(body):
    """`body` asking for a streamed answer: `"stream":true` right after its leading `model`."""
    model_end = body.index(",") + 1
    return body[:model_end] + '"stream":true,' + body[model_end:]


def body_file(body, kind="body"):
    """`body` in a file, for wrk (an environment variable cannot hold 300 KB), oha and the
    stream client."""
    path = os.path.join(tempfile.gettempdir(), f"sidecar-bench-{kind}-{os.getpid()}.json")
    with open(path, "w") as f:
        f.write(body)
    return path


def _run(argv, timeout, env=None):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return done.stdout


def wrk_closed_loop(url, concurrency, seconds, headers):
    """Closed loop: `concurrency` connections, each sending the next request when the last
    answer arrived. Returns req/s, errors and latency percentiles in milliseconds."""
    threads = min(2, concurrency)
    argv = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s",
            "--timeout", "10s", "-s", os.path.join(HERE, "wrk_report.lua")]
    for header in headers:
        argv += ["-H", header]
    env = dict(os.environ, WRK_BODY_FILE=body_file(REQUEST_BODY))
    if STREAM_BODY is not None:
        env["WRK_STREAM_BODY_FILE"] = body_file(STREAM_BODY, "stream-body")
    out = _run(argv + [url], timeout=seconds + 60, env=env)
    line = next((l for l in out.splitlines() if l.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line:\n{out}")
    raw = json.loads(line[len("WRK_RESULT "):])
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "errors": raw["socket_errors"] + raw["status_errors"],
        "p50": raw["p50"] / 1000, "p90": raw["p90"] / 1000,
        "p99": raw["p99"] / 1000, "p999": raw["p999"] / 1000,
    }


def oha_run(url, headers, *, rate=None, seconds=None, requests=None, concurrency,
            cacert=None, timeout_s=30):
    """oha without its TUI, JSON out. With `rate`, an open loop at that many req/s for
    `seconds` (latency measured from when each request was due, not when it was sent).
    Returns req/s, successes, failures by kind and latency percentiles in milliseconds."""
    argv = ["oha", "--no-tui", "--output-format", "json", "-c", str(concurrency),
            "-m", "POST", "-D", body_file(REQUEST_BODY), "-H", "content-type: application/json",
            "-t", f"{timeout_s}s"]
    if rate is not None:
        # -w: requests in flight at the deadline finish (and count) instead of being cut.
        argv += ["-q", str(rate), "--latency-correction", "-z", f"{seconds}s", "-w"]
    else:
        argv += ["-n", str(requests)]
    if cacert:
        argv += ["--cacert", cacert]
    for header in headers:
        argv += ["-H", header]
    out = _run(argv + [url], timeout=(seconds or timeout_s) + 120)
    raw = json.loads(out)
    percentiles = raw.get("latencyPercentiles", {})
    statuses = {int(k): v for k, v in raw.get("statusCodeDistribution", {}).items()}
    failures = dict(raw.get("errorDistribution", {}))
    for status, count in statuses.items():
        if status != 200:
            failures[f"HTTP {status}"] = count
    ms = lambda key: (percentiles.get(key) or 0.0) * 1000
    return {
        "ok": statuses.get(200, 0),
        "failures": failures,
        "rps": raw["summary"]["requestsPerSec"],
        "p50": ms("p50"), "p90": ms("p90"), "p99": ms("p99"), "p999": ms("p99.9"),
        "slowest": (raw["summary"].get("slowest") or 0.0) * 1000,
    }


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _context_switches(pid):
    """Voluntary + involuntary context switches of every thread of `pid` so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return total


class ProcessMeter:
    """CPU seconds, context switches and peak RSS of `pids` between `__enter__` and
    `__exit__`. The peak of a multi-process server (nginx) is the sum of each process's peak.
    Context switches of threads that end during the run are not counted."""

    def __init__(self, pids):
        self.pids = pids
        self.cpu_s = 0.0
        self.switches = 0
        self.peak_rss_mb = 0.0

    def __enter__(self):
        for pid in self.pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        self._start = sum(_cpu_ticks(pid) for pid in self.pids)
        self._switches = sum(_context_switches(pid) for pid in self.pids)
        return self

    def __exit__(self, *exc):
        end = sum(_cpu_ticks(pid) for pid in self.pids)
        self.cpu_s = (end - self._start) / CLOCK_TICKS
        self.switches = sum(_context_switches(pid) for pid in self.pids) - self._switches
        self.peak_rss_mb = sum(rss_kib(pid, "VmHWM") for pid in self.pids) / 1024
        return False
