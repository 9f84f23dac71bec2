"""Instructions per request of the sidecar's credential route against its `dispatch: model` route,
counted by callgrind: steadier than CPU time on a shared VM. One sidecar process (under
`valgrind --tool=callgrind --instr-atstart=no`) serves both routes of the load benchmark's
config (`services.Sidecar`); after a warm-up of each route, instrumentation is switched on for
exactly `--requests` sequential keep-alive requests (one connection, c=1) to one route, then
off, and the counts are dumped; the routes alternate for `--rounds` rounds. `--bare` counts
bare Pingora (`examples/bare_pingora.rs`, under its own callgrind) the same way, as path
`bare`; `--bare-timeouts` gives it the sidecar's default upstream timeouts. Build first with
`cargo build --release --bin sidecar --example bench_provider --example bare_pingora`.

    python3 benches/load/instructions.py --requests 2000 --rounds 2 [--bare]

Counts cover every thread of the sidecar (the access-log writer too), over the requests sent
while instrumentation was on.

`--spend` also counts the `dispatch: model` route with a LiteLLM key in two more sidecars over a
database with LiteLLM's whole schema (`keys_db.LiteLlmDatabase`): `keys-spend` writes spend back
(every second, so the flushes' statements fall inside the counted requests in proportion),
`keys-nospend` has `spend.enabled: false`. Their ratio is what spend costs per request, flushes
included.

`--per-chunk N` counts what relaying one more chunk of a streamed answer costs: every request
asks for a stream (`"stream":true`), each round is counted once with answers of 1 chunk and once
with N chunks (2 ms apart, so each arrives on its own), and the difference over N - 1 is the
instructions per chunk (the request's own cost cancels out).
"""
import argparse
import glob
import http.client
import os
import shutil
import stat
import subprocess
import time

import keys_db
import measure
import services
from services import MODEL_ROUTE_PREFIX, ROUTE_PREFIX

PATHS = {
    "sidecar": f"{ROUTE_PREFIX}/v1/chat/completions",
    "sidecar-model": f"{MODEL_ROUTE_PREFIX}/chat/completions",
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default="target/release", help="where the built binaries are")
    p.add_argument("--workdir", default="target/bench-instructions")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--requests", type=int, default=2000, help="instrumented requests per route")
    p.add_argument("--warmup", type=int, default=500, help="uninstrumented requests per route")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--request-bytes", type=int, default=0, metavar="N",
                   help="send a chat body of about N bytes (a long prompt) instead of 71 bytes")
    p.add_argument("--bare", action="store_true", help="also count bare Pingora (path `bare`)")
    p.add_argument("--spend", action="store_true",
                   help="also count keys sidecars with spend written back and without")
    p.add_argument("--database-url",
                   default="postgresql://postgres@127.0.0.1:5432/test?sslmode=disable",
                   help="the PostgreSQL for --spend (a database is created and dropped)")
    p.add_argument("--per-chunk", type=int, default=0, metavar="N",
                   help="count instructions per relayed chunk: answers of N chunks against 1")
    p.add_argument("--bare-timeouts", action="store_true",
                   help="give bare Pingora the sidecar's default upstream timeouts")
    return p.parse_args()


def under_callgrind(binary, workdir):
    """A wrapper that execs `binary` under callgrind (so the pid is valgrind's, which
    `callgrind_control` addresses)."""
    path = os.path.join(workdir, f"{os.path.basename(binary)}-callgrind.sh")
    out = os.path.join(workdir, "callgrind.out.%p")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no '
                f'--callgrind-out-file={out} {os.path.abspath(binary)} "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def send(port, path, count, key="unused"):
    """`count` POSTs of the benchmark's body on one keep-alive connection, with `key` as the
    bearer token; all must be 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for _ in range(count):
        connection.request("POST", path, body=measure.REQUEST_BODY, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
    connection.close()


def control(pid, *flags):
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True)


def dumped_instructions(workdir, pid, seen):
    """Ir of the newest dump of `pid` not in `seen` (waits for callgrind to write it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(glob.glob(os.path.join(workdir, f"callgrind.out.{pid}*"))) - seen,
                     key=os.path.getmtime)
        for path in new:
            with open(path) as f:
                for line in f:
                    if line.startswith("totals:"):  # (its `summary:` line reads 0)
                        seen.add(path)
                        return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def main():
    args = parse_args()
    measure.use_request_bytes(args.request_bytes)
    if args.per_chunk:
        measure.REQUEST_BODY = measure.streamed(measure.REQUEST_BODY)
    args.workdir = os.path.abspath(args.workdir)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    provider = services.Provider(os.path.join(args.release, "examples/bench_provider"),
                                 args.workdir, 1024, 0, 3, 300)
    started = [provider]
    database = keys_db.LiteLlmDatabase(args.database_url).create() if args.spend else None
    try:
        binary = under_callgrind(os.path.join(args.release, "sidecar"), args.workdir)
        sidecar = services.Sidecar(binary, args.workdir, provider, args.threads, 100, 5, "info")
        started.append(sidecar)
        # name → (callgrind's pid, proxy port, path, the provider port it arrives on, key)
        targets = {name: (sidecar.proc.pid, sidecar.port, path, name, "unused")
                   for name, path in PATHS.items()}
        for name, spend in (("keys-spend", True), ("keys-nospend", False)) if database else ():
            keyed = services.Sidecar(binary, args.workdir, provider, args.threads, 100, 5, "info",
                                     name=name, litellm_keys=(database.url, database.schema),
                                     spend=spend, flush_interval="1s" if spend else None)
            started.append(keyed)
            targets[name] = (keyed.proc.pid, keyed.port, PATHS["sidecar-model"], "sidecar-model",
                             keys_db.LITELLM_KEY)
        if args.bare:
            bare = services.BarePingora(
                under_callgrind(os.path.join(args.release, "examples/bare_pingora"), args.workdir),
                args.workdir, provider, args.threads, timeouts=args.bare_timeouts)
            started.append(bare)
            targets["bare"] = (bare.proc.pid, bare.port, PATHS["sidecar"], "bare", "unused")
        for _, port, path, _, key in targets.values():
            services.wait_until(f"{port}: served", lambda: send_one(port, path, key))
            send(port, path, args.warmup, key)
        seen, counts = set(), {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, target in targets.items():
                if args.per_chunk:
                    provider.set_stream(1, 2)
                    one = counted(args, provider, name, target, seen)
                    provider.set_stream(args.per_chunk, 2 * args.per_chunk)
                    many = counted(args, provider, name, target, seen)
                    per_chunk = (many - one) / (args.per_chunk - 1)
                    counts[name].append(per_chunk)
                    print(f"  {name:<14} {per_chunk / 1000:8.2f} k instructions / chunk "
                          f"({one / 1000:.1f} k / request of 1 chunk)", flush=True)
                    continue
                per_request = counted(args, provider, name, target, seen)
                counts[name].append(per_request)
                print(f"  {name:<14} {per_request / 1000:8.1f} k instructions / request",
                      flush=True)
        base = min(counts["sidecar"])
        unit = "chunk" if args.per_chunk else "request"
        print(f"instructions per {unit} ({args.requests} requests per round, c=1, "
              f"{args.rounds} rounds; min [max]):")
        for name, values in counts.items():
            print(f"  {name:<14} {min(values) / 1000:8.1f} k [{max(values) / 1000:.1f} k]  "
                  f"{min(values) / base:.3f} × the credential route")
        if database:
            spend, quiet = min(counts["keys-spend"]), min(counts["keys-nospend"])
            print(f"spend written back: {spend / quiet:.3f} × the instructions per request "
                  f"without ({(spend - quiet) / 1000:+.1f} k); spend-log rows written: "
                  f"{database.spend_rows()}")
    finally:
        for service in reversed(started):
            service.stop()
        if database:
            database.drop()


def counted(args, provider, name, target, seen):
    """Instructions per request over `args.requests` requests to one target."""
    pid, port, path, arrives_on, key = target
    before = provider.stats()[arrives_on]
    control(pid, "-i", "on")
    send(port, path, args.requests, key)
    control(pid, "-i", "off")
    control(pid, "-d")
    after = provider.stats()[arrives_on]
    for counter in ("unauthorized", "wrong_model"):
        if after[counter] != before[counter]:
            raise RuntimeError(f"{name}: the provider counted {counter}")
    return dumped_instructions(args.workdir, pid, seen) / args.requests


def send_one(port, path, key):
    """Whether one request is served (the key table may still be loading)."""
    try:
        send(port, path, 1, key)
        return True
    except (RuntimeError, OSError):
        return False


if __name__ == "__main__":
    main()
