"""Markdown tables of one load-benchmark run, and the issue's targets checked against them
(reported, never asserted: CI runs the smoke size, whose numbers mean nothing)."""

from measure import REQUEST_BODY

WAYS = ("direct", "sidecar", "sidecar-model", "nginx", "bare")


def _num(value, fmt):
    return "—" if value is None else format(value, fmt)


def _per_thousand(handshakes, requests):
    return handshakes * 1000 / requests if requests else 0.0


def closed_loop_table(closed):
    lines = [
        "| concurrency | path | req/s | vs direct | p50 ms | p90 ms | p99 ms | p99.9 ms "
        "| added p50 ms | new upstream TLS handshakes / 1,000 req | proxy peak RSS MB "
        "| proxy CPU s | proxy CPU µs / req | proxy context switches / req | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in sorted({c for c, _ in closed}):
        direct = closed[(concurrency, "direct")]
        for way in (w for w in WAYS if (concurrency, w) in closed):
            r = closed[(concurrency, way)]
            added = None if way == "direct" else r["p50"] - direct["p50"]
            lines.append(
                f"| {concurrency} | {way} | {r['rps']:.0f} | {r['rps'] / direct['rps']:.2f} "
                f"| {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} "
                f"| {_num(added, '+.3f')} "
                f"| {_per_thousand(r['handshakes'], r['provider_requests']):.2f} "
                f"| {_num(r['peak_rss_mb'], '.1f')} | {_num(r['cpu_s'], '.2f')} "
                f"| {_num(r['cpu_us_per_req'], '.0f')} | {_num(r['switches_per_req'], '.2f')} "
                f"| {r['errors']} |"
            )
    return "\n".join(lines)


def fixed_rate_table(rate):
    direct = rate["direct"]
    lines = [
        "| path | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | added p99 ms "
        "| new upstream TLS handshakes / 1,000 req | proxy peak RSS MB | proxy CPU s | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for way in (w for w in WAYS if w in rate):
        r = rate[way]
        added = None if way == "direct" else r["p99"] - direct["p99"]
        failed = sum(r["failures"].values())
        lines.append(
            f"| {way} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} "
            f"| {r['p999']:.3f} | {_num(added, '+.3f')} "
            f"| {_per_thousand(r['handshakes'], r['provider_requests']):.2f} "
            f"| {_num(r['peak_rss_mb'], '.1f')} | {_num(r['cpu_s'], '.2f')} | {failed} |"
        )
    return "\n".join(lines)


def streams_table(runs, cap):
    lines = [
        "| concurrent streams | cap | ok | failed | waited for a slot | provider peak connections "
        "| wall s | slowest s | sidecar peak RSS MB | sidecar CPU s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        failed = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "0"
        lines.append(
            f"| {r['count']} | {cap} | {r['ok']} | {failed} | {r['cap_waits']} "
            f"| {r['provider_peak']} | {r['wall_s']:.1f} | {r['slowest'] / 1000:.2f} "
            f"| {r['peak_rss_mb']:.1f} | {r['cpu_s']:.2f} |"
        )
    return "\n".join(lines)


def targets_table(closed, rate, runs, idle_rss_mb, cap):
    def row(target, measured, met):
        mark = "—" if met is None else "yes" if met else "**no**"
        return f"| {target} | {measured} | {mark} |"

    concurrencies = sorted({c for c, _ in closed})
    lines = ["| target | measured | met |", "|---|---|:-:|"]
    for c in concurrencies:
        s, n = closed[(c, "sidecar")]["rps"], closed[(c, "nginx")]["rps"]
        lines.append(row(f"throughput ≥ nginx at c={c}", f"{s / n:.2f} × nginx", s >= n))
        if c >= 32:
            lines.append(row(f"throughput ≥ 0.6 × nginx at c={c} (issue 14)",
                             f"{s / n:.2f} × nginx", s >= 0.6 * n))
        bare = closed.get((c, "bare"))
        if bare:
            lines.append(row(f"bare Pingora's throughput at c={c} (no target)",
                             f"{bare['rps'] / n:.2f} × nginx", None))
    for c in concurrencies:
        s, b = closed[(c, "sidecar")]["cpu_us_per_req"], closed[(c, "bare")]["cpu_us_per_req"]
        if s and b:
            lines.append(row(f"CPU per request ≤ 1.05 × bare Pingora at c={c}",
                             f"{s:.0f} vs {b:.0f} µs ({s / b:.2f} ×)", s <= 1.05 * b))
    for c in concurrencies:
        m, s = closed[(c, "sidecar-model")], closed[(c, "sidecar")]
        if m["cpu_us_per_req"] and s["cpu_us_per_req"]:
            ratio = m["cpu_us_per_req"] / s["cpu_us_per_req"]
            lines.append(row(f"`dispatch: model` route vs the credential route, CPU per "
                             f"request at c={c} (no target)",
                             f"{m['cpu_us_per_req']:.0f} vs {s['cpu_us_per_req']:.0f} µs "
                             f"({ratio:.2f} ×)", None))
    low = concurrencies[0]
    direct = closed[(low, "direct")]["p50"]
    added_s = closed[(low, "sidecar")]["p50"] - direct
    added_n = closed[(low, "nginx")]["p50"] - direct
    lines.append(row(f"added p50 at c={low} ≤ nginx's",
                     f"{added_s:+.3f} ms vs {added_n:+.3f} ms", added_s <= added_n))
    lines.append(row(f"added p50 at c={low} ≤ 1.5 × nginx's (issue 14)",
                     f"{added_s / added_n:.1f} × nginx's" if added_n > 0 else "—",
                     added_n > 0 and added_s <= 1.5 * added_n))
    if (low, "bare") in closed:
        added_b = closed[(low, "bare")]["p50"] - direct
        lines.append(row(f"bare Pingora's added p50 at c={low} (no target)",
                         f"{added_b:+.3f} ms" + (f", {added_b / added_n:.1f} × nginx's"
                                                 if added_n > 0 else ""), None))
    gap = rate["sidecar"]["p99"] - rate["direct"]["p99"]
    lines.append(row("p99 at the fixed rate within 1 ms of direct", f"{gap:+.3f} ms", gap <= 1.0))
    sidecar_rows = [r for (_, way), r in closed.items() if way == "sidecar"] + [rate["sidecar"]]
    handshakes = sum(r["handshakes"] for r in sidecar_rows)
    served = sum(r["provider_requests"] for r in sidecar_rows)
    per_k = _per_thousand(handshakes, served)
    lines.append(row("≤ 1 new upstream handshake / 1,000 requests (steady state)",
                     f"{per_k:.3f} ({handshakes} in {served:,} requests)", per_k <= 1.0))
    lines.append(row("RSS ≤ 30 MB idle", f"{idle_rss_mb:.1f} MB", idle_rss_mb <= 30))
    streams = runs[0]
    lines.append(row(f"RSS ≤ 100 MB with {streams['count']} streams open",
                     f"{streams['peak_rss_mb']:.1f} MB", streams["peak_rss_mb"] <= 100))
    peak = max(r["provider_peak"] for r in runs)
    lines.append(row(f"provider never sees more than the cap ({cap}) connections",
                     f"peak {peak}", peak <= cap))
    overflow = runs[1]
    lines.append(row(f"{overflow['count']} streams at cap {cap}: none fail",
                     f"{overflow['ok']} ok, {sum(overflow['failures'].values())} failed",
                     not overflow["failures"]))
    return "\n".join(lines)


def render(args, machine, date, closed, rate, runs, idle_rss_mb, settled_rss_mb):
    cap = args.streams
    return f"""## Load benchmark — {date}

Machine: {machine}. Everything on this one machine (load generator, proxy, provider share the
cores). Sidecar `server.threads: {args.threads}`, nginx `worker_processes {args.threads}`; access
logs {args.access_log}. Workload: `POST /v1/chat/completions` ({len(REQUEST_BODY)}-byte JSON) → a
{args.response_bytes}-byte JSON answer after {args.latency_ms} ms. Closed-loop runs: wrk, {args.seconds} s
each after a {args.warmup_seconds} s warm-up, {args.rounds} rounds alternating the order; the median
round by req/s is shown. Fixed rate: oha `-q {args.rate} --latency-correction`, {args.seconds} s, median
round by p99. "direct" is the client speaking TLS to the provider itself (the limit); sidecar and
nginx take plain HTTP and keep verified TLS keepalive connections to the provider. "sidecar" is
the sidecar's credential route; "sidecar-model" the same process's `dispatch: model` route (the
body's `model` picks a local `model_list` deployment and is rewritten), same body on both.
Handshakes are counted by the provider. nginx RSS is the sum over its master and workers.

![latency percentiles and proxy CPU per request, per path and concurrency](results.svg)

### Closed loop

{closed_loop_table(closed)}

### Fixed rate: {args.rate} req/s

{fixed_rate_table(rate)}

### Streams through the sidecar (SSE, {args.stream_events} events over {args.stream_ms} ms each; cap {cap})

{streams_table(runs, cap)}

Sidecar RSS: {idle_rss_mb:.1f} MB idle at start, {settled_rss_mb:.1f} MB at the end of the run.

### Targets

{targets_table(closed, rate, runs, idle_rss_mb, cap)}
"""
