"""Side-by-side CPU per request of sidecar variants against bare Pingora, in one interleaved
run: different binaries (before/after a change), thread counts, CPU pinning or log levels.
Uses the load benchmark's services (`services.py`) and meter (`measure.py`); build first with
`cargo build --release --bin sidecar --example bench_provider --example bare_pingora`.

    python3 benches/load/compare.py --bare-threads 1,2 \\
        --sidecar t1=target/release/sidecar:1 --sidecar t2=target/release/sidecar:2 \\
        --sidecar pinned=target/release/sidecar:1:info:0

Each `--sidecar NAME=BINARY[:THREADS[:LOG_LEVEL[:CPU]]]` starts one sidecar (CPU: confined to
that CPU with `taskset`, as a pod with a 1-CPU limit is). `--model-route` adds, for each
sidecar, the path `NAME-model` through the same process's `dispatch: model` route (same body).
Rounds rotate the order; the median round per path is printed with its range. `--perf NAME` records a `perf` profile of that path
in the first round at `--perf-concurrency`."""
import argparse
import os
import shutil
import stat
import subprocess
import time

import driver
import measure
import services
from services import MODEL_ROUTE_PREFIX, ROUTE_PREFIX

HEADERS = ["Authorization: Bearer unused", "Content-Type: application/json"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default="target/release", help="where the built binaries are")
    p.add_argument("--workdir", default="target/bench-compare")
    p.add_argument("--sidecar", action="append", default=[],
                   help="NAME=BINARY[:THREADS[:LOG_LEVEL[:CPU]]]")
    p.add_argument("--bare-threads", default="2", help="bare Pingora thread counts, comma-separated")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model-route", action="store_true",
                   help="also measure each sidecar's dispatch: model route (NAME-model)")
    p.add_argument("--perf", default="", help="path name to profile with perf record")
    p.add_argument("--perf-concurrency", type=int, default=32)
    return p.parse_args()


def pinned(binary, cpu, workdir, name):
    """A wrapper that runs `binary` confined to `cpu` (exec, so the pid is the sidecar's)."""
    path = os.path.join(workdir, f"{name}-pinned.sh")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec taskset -c {cpu} {os.path.abspath(binary)} "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def start(args, workdir):
    """The provider, then each path as (display name, `driver.Way`): a way is named by the
    provider port it uses, which every sidecar variant shares."""
    provider = services.Provider(os.path.join(args.release, "examples/bench_provider"), workdir,
                                 1024, 0, 3, 300)
    started, ways = [provider], []

    def add(name, server, port_name):
        started.append(server)
        url = f"http://127.0.0.1:{server.port}{ROUTE_PREFIX}/v1/chat/completions"
        ways.append((name, driver.Way(port_name, url, HEADERS, server)))

    def add_model_route(name, server):
        url = f"http://127.0.0.1:{server.port}{MODEL_ROUTE_PREFIX}/chat/completions"
        ways.append((f"{name}-model", driver.Way("sidecar-model", url, HEADERS, server)))

    for threads in args.bare_threads.split(","):
        add(f"bare{threads}", services.BarePingora(
            os.path.join(args.release, "examples/bare_pingora"), workdir, provider, int(threads)),
            "bare")
    for spec in args.sidecar:
        name, rest = spec.split("=", 1)
        binary, threads, level, cpu = (rest.split(":") + ["", "", ""])[:4]
        if cpu:
            binary = pinned(binary, cpu, workdir, name)
        add(name, services.Sidecar(binary, workdir, provider, int(threads or 1), 1000, 5,
                                   level or "info", name=name), "sidecar")
        if args.model_route:
            add_model_route(name, started[-1])
    return provider, started, ways


def run_round(args, provider, ways, concurrency, round_index, results):
    for name, way in driver.rotated(ways, round_index):
        perf = None
        if args.perf == name and concurrency == args.perf_concurrency and round_index == 0:
            out = os.path.join(args.workdir, f"{name}.perf.data")
            perf = subprocess.Popen(["perf", "record", "-F", "2000", "-g", "-o", out, "-p",
                                     ",".join(map(str, way.pids()))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        result = driver.measured(way, provider, lambda: measure.wrk_closed_loop(
            way.url, concurrency, args.seconds, way.headers))
        if perf:
            perf.send_signal(2)
            perf.wait()
        results.setdefault(name, []).append((result["cpu_us_per_req"], result["switches_per_req"],
                                             result["rps"], result["p50"], result["p99"]))


def main():
    args = parse_args()
    args.workdir = os.path.abspath(args.workdir)  # the sidecar resolves paths from its config
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    provider, started, ways = start(args, args.workdir)
    try:
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for _, way in ways:  # fill each pool first
                measure.wrk_closed_loop(way.url, concurrency, 2, way.headers)
            results = {}
            for round_index in range(args.rounds):
                run_round(args, provider, ways, concurrency, round_index, results)
            print(f"c={concurrency}  (CPU µs/req median [min–max], context switches/req, "
                  f"req/s, p50 ms, p99 ms)")
            for name, rows in results.items():
                rows.sort()
                cpu, switches, rps, p50, p99 = rows[len(rows) // 2]
                print(f"  {name:12} {cpu:6.1f} [{rows[0][0]:.0f}–{rows[-1][0]:.0f}]  {switches:5.2f}"
                      f"  {rps:8.0f}  {p50:6.3f}  {p99:6.3f}", flush=True)
    finally:
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    main()
