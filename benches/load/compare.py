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
`--litellm-keys` adds, for each sidecar, `NAME-keys`: the same sidecar with
`access.litellm_keys: true` over a fresh schema in a local PostgreSQL (`--database-url`; LiteLLM's
four tables, one key, dropped at the end), serving the same credential route to the same
provider port; every path sends that key (the others strip it), a wrong key must get 401 before
anything is measured, and the client → provider path `direct` is measured too, for the added p50.
`--request-bytes N` sends a long prompt of about N bytes instead of the 71-byte body (the
large-body workload: 300 KB, see benches/README.md). Rounds rotate the order; the median round
per path is printed with its range. `--perf NAME` records a `perf` profile of that path in the
first round at `--perf-concurrency`."""
import argparse
import os
import shutil
import stat
import subprocess
import time
import urllib.error
import urllib.request

import driver
import keys_db
import measure
import services
from services import MODEL_ROUTE_PREFIX, PROVIDER_KEY, ROUTE_PREFIX

# The LiteLLM key on every path: checked by the `--litellm-keys` sidecars, stripped by the others.
HEADERS = [f"Authorization: Bearer {keys_db.LITELLM_KEY}", "Content-Type: application/json"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default="target/release", help="where the built binaries are")
    p.add_argument("--workdir", default="target/bench-compare")
    p.add_argument("--sidecar", action="append", default=[],
                   help="NAME=BINARY[:THREADS[:LOG_LEVEL[:CPU]]]")
    p.add_argument("--bare-threads", default="2", help="bare Pingora thread counts, comma-separated")
    p.add_argument("--bare-timeouts", action="store_true",
                   help="also run each bare Pingora with the sidecar's default upstream timeouts "
                        "(bareN-timeouts)")
    p.add_argument("--bare-h2", type=int, default=0, metavar="STREAMS",
                   help="also run each bare Pingora with HTTP/2 upstream (bareN-h2), up to "
                        "STREAMS streams per connection")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model-route", action="store_true",
                   help="also measure each sidecar's dispatch: model route (NAME-model)")
    p.add_argument("--litellm-keys", action="store_true",
                   help="also measure each sidecar with LiteLLM virtual keys (NAME-keys)")
    p.add_argument("--spend-off", action="store_true",
                   help="with --litellm-keys: also NAME-keys-nospend, the keys sidecar with "
                        "spend.enabled: false, over a database with LiteLLM's whole schema "
                        "(every migration), so NAME-keys writes its spend as on LiteLLM's")
    p.add_argument("--database-url",
                   default="postgresql://postgres@127.0.0.1:5432/test?sslmode=disable",
                   help="the PostgreSQL for --litellm-keys (a schema is created and dropped)")
    p.add_argument("--streams", type=int, default=0, metavar="N",
                   help="after the closed loops, hold N streams open through each path "
                        "(SSE, 20 events over 2 s) and report its memory per stream")
    p.add_argument("--request-bytes", type=int, default=0, metavar="N",
                   help="send a chat body of about N bytes (a long prompt, model first) instead "
                        "of the 71-byte one")
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


def post(url, key):
    """(status, body) of one request with `key` as the bearer token."""
    request = urllib.request.Request(url, data=measure.REQUEST_BODY.encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_keys(name, url, provider):
    """Proves the key check runs on `url` before anything is measured: the right key is served
    (once the key table is loaded), a wrong key and no key get 401 and reach nothing."""
    services.wait_until(f"{name}: the key table", lambda: post(url, keys_db.LITELLM_KEY)[0] == 200)
    before = provider.stats()["sidecar"]["requests"]
    # LiteLLM's refusals: an unknown key is `token_not_found_in_db`, no key `auth_error`.
    for key, kind in ((keys_db.WRONG_KEY, b"token_not_found_in_db"), ("", b"auth_error")):
        status, body = post(url, key)
        if status != 401 or kind not in body:
            raise RuntimeError(f"{name}: key {key!r} got {status} {body[:200]!r}, not 401")
    if provider.stats()["sidecar"]["requests"] != before:
        raise RuntimeError(f"{name}: a refused request reached the provider")
    print(f"{name}: the right key gets 200, a wrong key and no key 401", flush=True)


def start(args, workdir, started, schema=None):
    """The provider, then each path as (display name, `driver.Way`): a way is named by the
    provider port it uses, which every sidecar variant shares. With `schema` (a
    `keys_db.KeysSchema`), each sidecar also runs as NAME-keys over it, and `direct` is a path."""
    provider = services.Provider(os.path.join(args.release, "examples/bench_provider"), workdir,
                                 1024, 0, 20, 2000)
    started.append(provider)  # the caller's list: stopped even when a later start fails
    ways = []
    if schema:
        url = f"https://127.0.0.1:{provider.ports['direct']}/v1/chat/completions"
        ways.append(("direct", driver.Way(
            "direct", url, [f"Authorization: Bearer {PROVIDER_KEY}", HEADERS[1]],
            cacert=provider.ca_file)))

    def add(name, server, port_name):
        started.append(server)
        url = f"http://127.0.0.1:{server.port}{ROUTE_PREFIX}/v1/chat/completions"
        ways.append((name, driver.Way(port_name, url, HEADERS, server)))

    def add_model_route(name, server):
        url = f"http://127.0.0.1:{server.port}{MODEL_ROUTE_PREFIX}/chat/completions"
        ways.append((f"{name}-model", driver.Way("sidecar-model", url, HEADERS, server)))

    bare = os.path.join(args.release, "examples/bare_pingora")
    for threads in args.bare_threads.split(","):
        add(f"bare{threads}", services.BarePingora(bare, workdir, provider, int(threads)), "bare")
        if args.bare_timeouts:
            add(f"bare{threads}-timeouts", services.BarePingora(
                bare, workdir, provider, int(threads), name=f"bare{threads}-timeouts",
                timeouts=True), "bare")
        if args.bare_h2:
            add(f"bare{threads}-h2", services.BarePingora(
                bare, workdir, provider, int(threads), h2_streams=args.bare_h2,
                name=f"bare{threads}-h2"), "bare")
    for spec in args.sidecar:
        name, rest = spec.split("=", 1)
        binary, threads, level, cpu = (rest.split(":") + ["", "", ""])[:4]
        if cpu:
            binary = pinned(binary, cpu, workdir, name)
        add(name, services.Sidecar(binary, workdir, provider, int(threads or 1), 1000, 5,
                                   level or "info", name=name), "sidecar")
        if args.model_route:
            add_model_route(name, started[-1])
        if schema:
            keys = f"{name}-keys"
            add(keys, services.Sidecar(binary, workdir, provider, int(threads or 1), 1000, 5,
                                       level or "info", name=keys,
                                       litellm_keys=(schema.url, schema.schema)), "sidecar")
            check_keys(keys, f"http://127.0.0.1:{started[-1].port}{ROUTE_PREFIX}"
                       "/v1/chat/completions", provider)
            if args.model_route:
                add_model_route(keys, started[-1])
            if args.spend_off:
                quiet = f"{name}-keys-nospend"
                add(quiet, services.Sidecar(binary, workdir, provider, int(threads or 1), 1000,
                                            5, level or "info", name=quiet,
                                            litellm_keys=(schema.url, schema.schema), spend=False),
                    "sidecar")
                if args.model_route:
                    add_model_route(quiet, started[-1])
    return provider, ways


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
        if result["errors"]:
            raise RuntimeError(f"{name}: {result['errors']} requests failed")
        results.setdefault(name, []).append((result["cpu_us_per_req"] or 0.0,
                                             result["switches_per_req"] or 0.0,
                                             result["rps"], result["p50"], result["p99"]))


def main():
    args = parse_args()
    measure.use_request_bytes(args.request_bytes)
    args.workdir = os.path.abspath(args.workdir)  # the sidecar resolves paths from its config
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    if args.spend_off and not args.litellm_keys:
        raise SystemExit("--spend-off compares keys sidecars: give --litellm-keys too")
    schema = None
    if args.litellm_keys:
        schema = (keys_db.LiteLlmDatabase(args.database_url) if args.spend_off
                  else keys_db.KeysSchema(args.database_url)).create()
    started = []
    try:
        provider, ways = start(args, args.workdir, started, schema)
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for _, way in ways:  # fill each pool first
                measure.wrk_closed_loop(way.url, concurrency, 2, way.headers)
            results = {}
            for round_index in range(args.rounds):
                run_round(args, provider, ways, concurrency, round_index, results)
            print(f"c={concurrency}  (CPU µs/req median [min–max], context switches/req, "
                  f"req/s, p50 ms, p99 ms" + (", added p50 ms)" if schema else ")"))
            median = {}
            for name, rows in results.items():
                rows.sort()
                median[name] = rows[len(rows) // 2]
            for name, rows in results.items():
                cpu, switches, rps, p50, p99 = median[name]
                added = ""
                if schema and name != "direct":
                    added = f"  {p50 - median['direct'][3]:+6.3f}"
                proxy = (f"{cpu:6.1f} [{rows[0][0]:.0f}–{rows[-1][0]:.0f}]  {switches:5.2f}"
                         if name != "direct" else f"{'—':>6} {'':9}  {'—':>5}")
                print(f"  {name:12} {proxy}  {rps:8.0f}  {p50:6.3f}  {p99:6.3f}{added}",
                      flush=True)
            if schema:
                print_key_ratios(median)
        if args.streams:
            held_streams(args, provider, ways)
    finally:
        for service in reversed(started):
            service.stop()
        if schema:
            if args.spend_off:
                print(f"spend-log rows written: {schema.spend_rows()}", flush=True)
            schema.drop()
            print(f"dropped {schema.name}", flush=True)


def held_streams(args, provider, ways):
    """`args.streams` streams held open through each path at once (closed loop on the SSE
    path for 6 s, three streams' length): the proxy's RSS before and at its peak, the growth
    per stream, and the provider's peak connections."""
    print(f"{args.streams} streams held open (RSS idle → peak MB, KB per stream, "
          f"provider peak connections, streams served)")
    for name, way in ways:
        if not way.server or not way.url.endswith(f"{ROUTE_PREFIX}/v1/chat/completions"):
            continue  # the direct path has no proxy to measure; model routes stream the same
        url = way.url.replace("/v1/chat/completions", "/v1/stream")
        idle_mb = sum(measure.rss_kib(pid) for pid in way.pids()) / 1024
        provider.stats(reset_peak=True)
        stream_way = driver.Way(way.name, url, way.headers, way.server)
        result = driver.measured(stream_way, provider, lambda: measure.wrk_closed_loop(
            url, args.streams, 6, way.headers))
        peak = provider.stats()[way.name]["peak_open"]
        per_stream_kb = (result["peak_rss_mb"] - idle_mb) * 1024 / args.streams
        print(f"  {name:12} {idle_mb:6.1f} → {result['peak_rss_mb']:6.1f}  {per_stream_kb:6.1f}"
              f"  {peak:5}  {result['provider_requests']:6}  errors {result['errors']}",
              flush=True)


def print_key_ratios(median):
    """NAME-keys over NAME: CPU per request, added p50, context switches, req/s; and, with
    --spend-off, spend on over spend off."""
    direct_p50 = median["direct"][3]
    for name in median:
        quiet = median.get(name.replace("-keys", "-keys-nospend", 1)) if "-keys" in name else None
        if quiet is not None and "nospend" not in name:
            on = median[name]
            print(f"  {name} spend on / off: CPU/req {on[0] / quiet[0]:.3f}× "
                  f"({on[0] - quiet[0]:+.1f} µs), req/s {on[2] / quiet[2]:.2f}×", flush=True)
        keys = median.get(f"{name}-keys")
        if keys is None:
            continue
        plain = median[name]
        added_plain, added_keys = plain[3] - direct_p50, keys[3] - direct_p50
        print(f"  {name}-keys / {name}: CPU/req {keys[0] / plain[0]:.2f}× "
              f"({keys[0] - plain[0]:+.1f} µs), added p50 "
              f"{added_keys / added_plain if added_plain > 0 else float('nan'):.2f}× "
              f"({added_keys - added_plain:+.3f} ms), switches/req {keys[1] / plain[1]:.2f}×, "
              f"req/s {keys[2] / plain[2]:.2f}×", flush=True)


if __name__ == "__main__":
    main()
