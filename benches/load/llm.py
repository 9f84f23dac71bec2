"""LLM-shaped load benchmark (issue 28): large prompts with half the answers streamed, then many
long streams held at once, through nginx, bare Pingora, the sidecar's credential route, the
sidecar's `dispatch: model` route with LiteLLM keys, and the LiteLLM proxy, against the client
talking to the provider directly, in one interleaved run. Every proxy runs on one thread or worker
pinned to `--proxy-cpu`; this driver, its clients (wrk, `examples/stream_client.rs`), the provider
and PostgreSQL's share `--client-cpu`. Started by `benches/llm.sh`, which documents the knobs; writes
`results.md`, `results.json` and `results.svg` (`llm_report.py`) into the work directory.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import compare
import driver
import keys_db
import litellm_service
import llm_report
import measure
import services
from services import MODEL_ROUTE_PREFIX, PROVIDER_KEY, ROUTE_PREFIX

# The small chat body of each long stream.
STREAM_BODY = ('{"model":"bench-alias","stream":true,'
               '"messages":[{"role":"user","content":"Tell me a long story"}]}')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default="target/release", help="where the built binaries are")
    p.add_argument("--workdir", default="target/bench-llm")
    p.add_argument("--request-bytes", type=int, default=307200,
                   help="large-body workload: the prompt's size (a chat body, model first)")
    p.add_argument("--concurrency", type=int, default=32, help="large-body workload: wrk -c")
    p.add_argument("--seconds", type=int, default=10, help="large-body workload: each round")
    p.add_argument("--warmup-seconds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="large-body rounds; median reported")
    p.add_argument("--answer-chunks", type=int, default=20,
                   help="large-body workload: events of a streamed answer, sent back to back")
    p.add_argument("--streams", type=int, default=1000, help="streams workload: held at once")
    p.add_argument("--chunks", type=int, default=100, help="streams workload: events per stream")
    p.add_argument("--chunk-ms", type=int, default=50, help="streams workload: gap before each")
    p.add_argument("--ramp-ms", type=int, default=1000, help="streams start spread over this")
    p.add_argument("--stream-rounds", type=int, default=1)
    p.add_argument("--litellm-streams", type=int, default=200,
                   help="streams through the LiteLLM proxy (1,000 broke it in issue 28)")
    p.add_argument("--no-litellm", action="store_true", help="leave the LiteLLM proxy out")
    p.add_argument("--only", choices=["large", "streams"], help="run one workload only")
    p.add_argument("--sidecar-bin", help="another sidecar binary (default: RELEASE/sidecar)")
    p.add_argument("--before-bin", metavar="BINARY",
                   help="also both sidecar paths with this binary (a build before a change), "
                        "as sidecar-before and sidecar-model-keys-before")
    p.add_argument("--bare-read-buffer", type=int, metavar="BYTES",
                   help="also bare Pingora with this read buffer under each client connection "
                        "(bare-read-buffer; Pingora's default is 64 KiB)")
    p.add_argument("--stream-body-bytes", type=int, default=0, metavar="N",
                   help="held streams: send a chat body of about N bytes (a long prompt) "
                        "instead of a small one")
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--database-url",
                   default="postgresql://postgres@127.0.0.1:5432/test?sslmode=disable",
                   help="PostgreSQL for the LiteLLM keys (a schema is created and dropped)")
    return p.parse_args()


def pin(service, cpu):
    """Every thread of the service's processes onto `cpu` (threads made later inherit it)."""
    for pid in service.pids():
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                       stdout=subprocess.DEVNULL)


def start(args, workdir, started, schema):
    """The provider, then every path as (name, `driver.Way`), `direct` first."""
    release = args.release
    provider = services.Provider(os.path.join(release, "examples/bench_provider"), workdir,
                                 1024, 0, args.answer_chunks, 0)
    started.append(provider)
    cap = max(args.streams, 1000)
    headers = compare.HEADERS
    chat = f"{ROUTE_PREFIX}/v1/chat/completions"
    ways = [("direct", driver.Way(
        "direct", f"https://127.0.0.1:{provider.ports['direct']}/v1/chat/completions",
        [f"Authorization: Bearer {PROVIDER_KEY}", headers[1]], cacert=provider.ca_file))]

    def add(name, server, port_name, url):
        started.append(server)
        ways.append((name, driver.Way(port_name, url, headers, server)))

    nginx = services.Nginx(workdir, provider, 1, keepalive=256, access_log=True)
    add("nginx", nginx, "nginx", f"http://127.0.0.1:{nginx.port}{chat}")
    bare_bin = os.path.join(release, "examples/bare_pingora")
    bare = services.BarePingora(bare_bin, workdir, provider, 1)
    add("bare", bare, "bare", f"http://127.0.0.1:{bare.port}{chat}")
    if args.bare_read_buffer is not None:
        bare = services.BarePingora(bare_bin, workdir, provider, 1, name="bare-read-buffer",
                                    client_read_buffer=args.bare_read_buffer)
        add("bare-read-buffer", bare, "bare", f"http://127.0.0.1:{bare.port}{chat}")
    sidecars = [("", args.sidecar_bin or os.path.join(release, "sidecar"))]
    if args.before_bin:
        sidecars.append(("-before", args.before_bin))
    for suffix, binary in sidecars:
        plain = services.Sidecar(binary, workdir, provider, 1, cap, 10, "info",
                                 name=f"sidecar{suffix}")
        add(f"sidecar{suffix}", plain, "sidecar", f"http://127.0.0.1:{plain.port}{chat}")
        keys = services.Sidecar(binary, workdir, provider, 1, cap, 10, "info",
                                name=f"sidecar-keys{suffix}",
                                litellm_keys=(schema.url, schema.schema))
        compare.check_keys(f"sidecar-keys{suffix}", f"http://127.0.0.1:{keys.port}{chat}",
                           provider)
        add(f"sidecar-model-keys{suffix}", keys, "sidecar-model",
            f"http://127.0.0.1:{keys.port}{MODEL_ROUTE_PREFIX}/chat/completions")
    if not args.no_litellm:
        litellm = litellm_service.LiteLlm(workdir, provider)
        add("litellm", litellm, "litellm", f"http://127.0.0.1:{litellm.port}/v1/chat/completions")
    return provider, ways


def children_cpu_s():
    """CPU seconds of this driver's finished children (wrk, the stream client)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def client_side(provider, run):
    """`run()` with the client side's load counted: the clients' and the provider's CPU seconds
    over the run's wall time (both on `--client-cpu`: near 1.0 would mean client-bound)."""
    before = children_cpu_s()
    started = time.monotonic()
    with measure.ProcessMeter(provider.pids()) as meter:
        result = run()
    wall = time.monotonic() - started
    result.update(client_cpu_s=children_cpu_s() - before, provider_cpu_s=meter.cpu_s,
                  client_core_busy=(children_cpu_s() - before + meter.cpu_s) / wall)
    return result


def large_bodies(args, provider, ways):
    """wrk at `--concurrency`, every other request streamed; the median round by CPU per
    request (by req/s for direct)."""
    measure.use_request_bytes(args.request_bytes, half_streamed=True)
    provider.set_stream(args.answer_chunks, 0)
    for _, way in ways:
        measure.wrk_closed_loop(way.url, args.concurrency, args.warmup_seconds, way.headers)
    rows = {}
    for round_index in range(args.rounds):
        for name, way in driver.rotated(ways, round_index):
            result = client_side(provider, lambda: driver.measured(
                way, provider, lambda: measure.wrk_closed_loop(
                    way.url, args.concurrency, args.seconds, way.headers)))
            rows.setdefault(name, []).append(result)
            print(f"  {name:<19} {result['rps']:8.1f} req/s  CPU "
                  f"{result['cpu_us_per_req'] or 0:8.0f} µs/req  p50 {result['p50']:8.2f} ms  "
                  f"errors {result['errors']}", flush=True)
    return {name: driver.median_by(results, "cpu_us_per_req" if name != "direct" else "rps")
            for name, results in rows.items()}


def stream_client(args, way, count):
    """`examples/stream_client.rs` holding `count` streams through `way`; its JSON result."""
    body = (measure.streamed(measure.chat_body(args.stream_body_bytes))
            if args.stream_body_bytes else STREAM_BODY)
    argv = [os.path.join(args.release, "examples/stream_client"), "--url", way.url,
            "--streams", str(count), "--body-file", measure.body_file(body, "stream"),
            "--ramp-ms", str(args.ramp_ms),
            "--timeout-s", str(args.chunks * args.chunk_ms // 1000 * 4 + 60)]
    for header in way.headers:
        argv += ["--header", header]
    if way.cacert:
        argv += ["--cacert", way.cacert]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def held_streams(args, provider, ways):
    """Each path in turn holds its streams; memory per stream is the proxy's peak RSS (VmHWM)
    over its RSS before, divided by the streams, in the first round (later rounds reuse the
    memory the first freed); CPU per chunk relayed, and the chunks' delays, of the median round
    by CPU."""
    provider.set_stream(args.chunks, args.chunks * args.chunk_ms)
    rows = {}
    for round_index in range(args.stream_rounds):
        for name, way in driver.rotated(ways, round_index):
            count = args.litellm_streams if name == "litellm" else args.streams
            way = driver.Way(way.name, way.url, way.headers, way.server, way.cacert)
            idle_kib = sum(measure.rss_kib(pid) for pid in way.pids())
            provider.stats(reset_peak=True)
            result = client_side(provider, lambda: driver.measured(
                way, provider, lambda: stream_client(args, way, count)))
            result.update(count=count, provider_peak=provider.stats()[way.name]["peak_open"])
            if way.server:
                result["kb_per_stream"] = (result["peak_rss_mb"] * 1024 - idle_kib) / count
                result["cpu_us_per_chunk"] = (result["cpu_s"] * 1e6 / result["chunks"]
                                              if result["chunks"] else None)
            rows.setdefault(name, []).append(result)
            delay = result["delay_ms"]
            print(f"  {name:<19} {result['ok']}/{count} ok  "
                  f"{result.get('kb_per_stream') or 0:6.1f} KB/stream  delay p50 "
                  f"{delay['p50']:.2f} p99 {delay['p99']:.2f} max {delay['max']:.2f} ms"
                  + (f"  ({result['first_error']})" if result["failed"] else ""), flush=True)
    medians = {}
    for name, results in rows.items():
        medians[name] = driver.median_by(results, "cpu_s" if name != "direct" else "ok")
        medians[name]["kb_per_stream"] = results[0].get("kb_per_stream")
    return medians


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} × {model}, Linux {platform.release()}"


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    args = parse_args()
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    os.sched_setaffinity(0, {args.client_cpu})  # the driver, the clients and the provider
    if not args.no_litellm and (reason := litellm_service.missing_reason()):
        print(f"the LiteLLM proxy is left out: {reason}", flush=True)
        args.no_litellm = True
    notes = {"machine": machine(), "date": datetime.date.today().isoformat(),
             "load_before": load_average(), "litellm": "left out" if args.no_litellm else "on"}
    schema = keys_db.KeysSchema(args.database_url).create()
    started = []
    try:
        provider, ways = start(args, args.workdir, started, schema)
        for _, way in ways:  # now that nginx has forked its worker
            if way.server:
                pin(way.server, args.proxy_cpu)
        # Streams first: memory per stream is only meaningful in a process that has not yet
        # held (and freed) that much memory.
        print(f"held streams: {args.streams} × {args.chunks} chunks {args.chunk_ms} ms apart",
              flush=True)
        streams = held_streams(args, provider, ways) if args.only != "large" else {}
        print(f"large bodies: {args.request_bytes} B, half streamed, c={args.concurrency}",
              flush=True)
        large = large_bodies(args, provider, ways) if args.only != "streams" else {}
    finally:
        for service in reversed(started):
            service.stop()
        schema.drop()
    notes["load_after"] = load_average()
    results = {"notes": notes, "args": vars(args), "large": large, "streams": streams}
    json_path = os.path.join(args.workdir, "results.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    text = llm_report.render(results)
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(text)
    llm_report.write_svg(json_path)
    print(text)
    failed = [name for name, r in large.items() if r["errors"]]
    failed += [name for name, r in streams.items() if r["failed"]]
    if failed:
        print(f"requests failed on: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
