"""Load benchmark driver: the same workload five ways in one run (client → provider directly,
client → sidecar → provider through a credential route and through a `dispatch: model` route,
client → nginx → provider, client → bare Pingora → provider), alternating the order every round,
then the streaming runs through the sidecar. Prints a markdown report and writes it to
`<workdir>/results.md`, every number (each round's too) to `<workdir>/results.json` and a picture
of latency and proxy CPU to `<workdir>/results.svg` (`plot.py`). Started by `benches/load.sh`,
which documents every knob.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import measure
import plot
import report
from services import (MODEL_ROUTE_PREFIX, PROVIDER_KEY, ROUTE_PREFIX, BarePingora, Nginx,
                      Provider, Sidecar)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sidecar-bin", required=True)
    p.add_argument("--bare-bin", required=True, help="examples/bare_pingora (the baseline)")
    p.add_argument("--provider-bin", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--threads", type=int, default=2, help="sidecar threads = nginx workers")
    p.add_argument("--concurrency", default="1,32,256", help="closed-loop connection counts")
    p.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    p.add_argument("--warmup-seconds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; median reported")
    p.add_argument("--rate", type=int, default=2000, help="fixed-rate run, requests/s")
    p.add_argument("--response-bytes", type=int, default=1024)
    p.add_argument("--latency-ms", type=int, default=0, help="provider time to answer")
    p.add_argument("--streams", type=int, default=1000, help="concurrent streams = the cap")
    p.add_argument("--overflow-streams", type=int, default=1500)
    p.add_argument("--stream-ms", type=int, default=2000)
    p.add_argument("--stream-events", type=int, default=20)
    p.add_argument("--access-log", choices=["on", "off"], default="on",
                   help="sidecar access records (info level) and nginx access_log")
    return p.parse_args()


class Way:
    """One of the paths a request can take, with what to measure on it. `name` is also the
    provider port (client) it arrives on."""

    def __init__(self, name, url, headers, server=None, cacert=None):
        self.name, self.url, self.headers = name, url, headers
        self.server, self.cacert = server, cacert

    def pids(self):
        return self.server.pids() if self.server else []


def rotated(ways, round_index):
    shift = round_index % len(ways)
    return ways[shift:] + ways[:shift]


def measured(way, provider, run):
    """Runs `run()` while counting the proxy's CPU and peak RSS and the provider's handshakes."""
    before = provider.stats()[way.name]
    with measure.ProcessMeter(way.pids()) as meter:
        result = run()
    after = provider.stats()[way.name]
    if after["unauthorized"] != before["unauthorized"]:
        raise RuntimeError(f"{way.name}: the provider saw requests without the right key")
    if after["wrong_model"] != before["wrong_model"]:
        raise RuntimeError(f"{way.name}: the provider saw bodies without the deployment's model")
    served = after["requests"] - before["requests"]
    result.update(
        handshakes=after["handshakes"] - before["handshakes"],
        provider_requests=served,
        cpu_s=meter.cpu_s if way.server else None,
        cpu_us_per_req=meter.cpu_s * 1e6 / served if way.server and served else None,
        switches_per_req=meter.switches / served if way.server and served else None,
        peak_rss_mb=meter.peak_rss_mb if way.server else None,
    )
    return result


def median_by(results, measure_key):
    """The round whose `measure_key` is the median (one real round, not averaged numbers), with
    every round under `rounds`."""
    ordered = sorted(results, key=lambda r: r[measure_key])
    return dict(ordered[len(ordered) // 2], rounds=results)


def closed_loop(args, ways, provider):
    rows = {}
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        for way in ways:  # fill each pool to this concurrency, so the rounds are steady state
            measure.wrk_closed_loop(way.url, concurrency, args.warmup_seconds, way.headers)
        for round_index in range(args.rounds):
            for way in rotated(ways, round_index):
                result = measured(way, provider, lambda: measure.wrk_closed_loop(
                    way.url, concurrency, args.seconds, way.headers))
                rows.setdefault((concurrency, way.name), []).append(result)
                print(f"  c={concurrency:<4} {way.name:<13} {result['rps']:>9.0f} req/s  "
                      f"p50 {result['p50']:.3f} ms  p99 {result['p99']:.3f} ms", flush=True)
    return {key: median_by(results, "rps") for key, results in rows.items()}


def fixed_rate(args, ways, provider):
    rows = {}
    for round_index in range(args.rounds):
        for way in rotated(ways, round_index):
            result = measured(way, provider, lambda: measure.oha_run(
                way.url, way.headers, rate=args.rate, seconds=args.seconds, concurrency=100,
                cacert=way.cacert))
            rows.setdefault(way.name, []).append(result)
            print(f"  {args.rate} req/s {way.name:<13} p50 {result['p50']:.3f} ms  "
                  f"p99 {result['p99']:.3f} ms  p99.9 {result['p999']:.3f} ms", flush=True)
    # Fixed rate: latency is the measure.
    return {name: median_by(results, "p99") for name, results in rows.items()}


def streams(args, sidecar, provider, count):
    url = f"http://127.0.0.1:{sidecar.port}{ROUTE_PREFIX}/v1/stream"
    way = Way("sidecar", url, ["Authorization: Bearer unused"], sidecar)
    waits_before = sidecar.metric("sidecar_upstream_cap_waits_total")
    provider.stats(reset_peak=True)
    started = time.monotonic()
    result = measured(way, provider, lambda: measure.oha_run(
        url, way.headers, requests=count, concurrency=count,
        timeout_s=args.stream_ms / 1000 * 3 + 15))
    result.update(
        count=count,
        wall_s=time.monotonic() - started,
        provider_peak=provider.stats()["sidecar"]["peak_open"],
        cap_waits=int(sidecar.metric("sidecar_upstream_cap_waits_total") - waits_before),
    )
    print(f"  {count} streams: {result['ok']} ok, provider peak {result['provider_peak']} "
          f"connections, sidecar peak RSS {result['peak_rss_mb']:.1f} MB", flush=True)
    return result


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    oha = subprocess.run(["oha", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} × {model}, Linux {platform.release()}; "
            f"{nginx.replace('nginx version: ', '')}, {wrk.split(' [')[0]}, {oha}")


def raw_results(args, machine, date, closed, rate, stream_runs, idle_rss_mb, settled_rss_mb):
    """What the report is made of, as JSON (closed-loop keys become fields of each row)."""
    return {
        "date": date, "machine": machine, "args": vars(args),
        "closed_loop": [dict(r, concurrency=c, path=way) for (c, way), r in sorted(closed.items())],
        "fixed_rate": rate, "streams": stream_runs,
        "sidecar_rss_mb": {"idle": idle_rss_mb, "settled": settled_rss_mb},
    }


def main():
    args = parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    services = []
    try:
        provider = Provider(args.provider_bin, args.workdir, args.response_bytes,
                            args.latency_ms, args.stream_events, args.stream_ms)
        services.append(provider)
        sidecar = Sidecar(args.sidecar_bin, args.workdir, provider, args.threads,
                          max_connections=args.streams, pool_wait=10,
                          log_level="info" if args.access_log == "on" else "warn")
        services.append(sidecar)
        idle_rss_mb = measure.rss_kib(sidecar.proc.pid) / 1024
        nginx = Nginx(args.workdir, provider, args.threads, keepalive=256,
                      access_log=args.access_log == "on")
        services.append(nginx)
        bare = BarePingora(args.bare_bin, args.workdir, provider, args.threads)
        services.append(bare)
        path = "/v1/chat/completions"
        ways = [
            Way("direct", f"https://127.0.0.1:{provider.ports['direct']}{path}",
                [f"Authorization: Bearer {PROVIDER_KEY}"], cacert=provider.ca_file),
            Way("sidecar", f"http://127.0.0.1:{sidecar.port}{ROUTE_PREFIX}{path}",
                ["Authorization: Bearer unused"], sidecar),
            # The same sidecar process, its `dispatch: model` route: the body picks the upstream.
            Way("sidecar-model",
                f"http://127.0.0.1:{sidecar.port}{MODEL_ROUTE_PREFIX}/chat/completions",
                ["Authorization: Bearer unused"], sidecar),
            Way("nginx", f"http://127.0.0.1:{nginx.port}{ROUTE_PREFIX}{path}",
                ["Authorization: Bearer unused"], nginx),
            Way("bare", f"http://127.0.0.1:{bare.port}{ROUTE_PREFIX}{path}",
                ["Authorization: Bearer unused"], bare),
        ]
        print("closed loop (wrk)", flush=True)
        closed = closed_loop(args, ways, provider)
        print(f"fixed rate (oha, {args.rate} req/s)", flush=True)
        rate = fixed_rate(args, ways, provider)
        print("streams through the sidecar (oha)", flush=True)
        stream_runs = [streams(args, sidecar, provider, args.streams),
                       streams(args, sidecar, provider, args.overflow_streams)]
        settled_rss_mb = measure.rss_kib(sidecar.proc.pid) / 1024
    finally:
        for service in reversed(services):
            service.stop()
    numbers = (machine(), datetime.date.today().isoformat(), closed, rate, stream_runs,
               idle_rss_mb, settled_rss_mb)
    text = report.render(args, *numbers)
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(text)
    json_path = os.path.join(args.workdir, "results.json")
    with open(json_path, "w") as f:
        json.dump(raw_results(args, *numbers), f, indent=1)
    plot.write_svg(json_path)
    print(text)
    failed = [r for r in stream_runs + list(rate.values()) if r["failures"]]
    failed += [r for r in closed.values() if r["errors"]]
    if failed:
        print("some requests failed: see the tables above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
