"""The LLM benchmark's report (`llm.py`): two markdown tables (large bodies; held streams) with
ratios to nginx, and one SVG picture of the run, drawn by hand like `plot.py` (standard library).

    python3 benches/load/llm_report.py target/bench-llm/results.json   # redraws results.svg
"""

import math
import sys

import plot
from plot import INK, GRID, el, text

# (key in results, label, colour), in the order of the tables.
PATHS = (("direct", "direct (no proxy)", "#555555"), ("nginx", "nginx", "#009E73"),
         ("bare", "bare Pingora", "#E69F00"),
         ("bare-read-buffer", "bare Pingora, --bare-read-buffer", "#F0C36D"),
         ("sidecar", "sidecar, credential route", "#0072B2"),
         ("sidecar-model-keys", "sidecar, dispatch: model + keys", "#CC79A7"),
         ("sidecar-before", "sidecar before, credential route", "#56B4E9"),
         ("sidecar-model-keys-before", "sidecar before, model + keys", "#E4A6CB"),
         ("litellm", "LiteLLM proxy", "#D55E00"))
LABELS = {key: label for key, label, _ in PATHS}
WIDTH, LEFT, RIGHT, BAR, PANEL_GAP = 960, 250, 90, 16, 56


def _ratio(value, base):
    return f"{value / base:.2f}×" if value is not None and base else "—"


def _num(value, fmt):
    return "—" if value is None else format(value, fmt)


def _table(results, header, row):
    """`header` lines, then `row(key, label, result)` for each path present, in PATHS order."""
    lines = list(header)
    lines += [row(key, label, results[key]) for key, label, _ in PATHS if results.get(key)]
    return "\n".join(lines)


def large_table(large):
    direct = large.get("direct", {}).get("p50")
    nginx = large.get("nginx", {}).get("cpu_us_per_req")

    def row(key, label, r):
        cpu = r.get("cpu_us_per_req")
        added = None if key == "direct" or direct is None else r["p50"] - direct
        return (f"| {label} | {r['rps']:,.1f} | {_num(cpu, ',.0f')} | {_ratio(cpu, nginx)} "
                f"| {r['p50']:.2f} | {_num(added, '+.2f')} | {r['p99']:.2f} "
                f"| {_num(r.get('peak_rss_mb'), '.1f')} | {r['errors']} |")

    return _table(large, ["| path | req/s | proxy CPU µs / request | × nginx | p50 ms "
                          "| added p50 ms | p99 ms | proxy peak RSS MB | errors |",
                          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"], row)


def streams_table(streams):
    direct = streams.get("direct", {}).get("delay_ms", {})
    nginx = streams.get("nginx", {})

    def row(key, label, r):
        delay = r["delay_ms"]
        own = " / ".join(f"{delay[p]:.2f}" for p in ("p50", "p99", "max"))
        added = "—" if key == "direct" or not direct else " / ".join(
            f"{delay[p] - direct[p]:+.2f}" for p in ("p50", "p99", "max"))
        kb, cpu = r.get("kb_per_stream"), r.get("cpu_us_per_chunk")
        return (f"| {label} | {r['count']:,} | {r['ok']:,} | {_num(kb, '.1f')} "
                f"| {_ratio(kb, nginx.get('kb_per_stream'))} | {_num(cpu, '.1f')} "
                f"| {_ratio(cpu, nginx.get('cpu_us_per_chunk'))} | {own} | {added} "
                f"| {r['provider_peak']:,} |")

    return _table(streams, [
        "| path | streams | ok | memory per stream KB | × nginx | CPU µs per chunk | × nginx "
        "| chunk delay p50 / p99 / max ms | added p50 / p99 / max ms | provider peak connections |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"], row)


def client_check(results):
    """How busy the client core was (clients + provider CPU over wall time), per workload."""
    out = []
    for workload in ("large", "streams"):
        busy = [r.get("client_core_busy") for r in results[workload].values()]
        busy = [b for b in busy if b is not None]
        if busy:
            out.append(f"{workload}: {min(busy):.0%}–{max(busy):.0%}")
    return "; ".join(out)


def render(results):
    notes, args = results["notes"], results["args"]
    return f"""## LLM benchmark — {notes['date']}

Machine: {notes['machine']}; load average {notes['load_before']} before the run,
{notes['load_after']} after. Every proxy on one thread or worker pinned to CPU
{args['proxy_cpu']}; the clients, the provider and this driver on CPU {args['client_cpu']}
(busy {client_check(results)} of that core: well under 100 % means the proxies, not the
clients, set the pace). LiteLLM proxy: {notes['litellm']}.

![CPU, latency and memory per path, ratios to nginx](results.svg)

### Large bodies: {args['request_bytes']:,}-byte prompts, half streamed ({args['answer_chunks']} chunks), c={args['concurrency']}

wrk, {args['rounds']} rounds of {args['seconds']} s per path rotating the order, the median round
by CPU per request; added p50 is over direct's.

{large_table(results['large'])}

### Held streams: {args['streams']:,} at once, {args['chunks']} chunks {args['chunk_ms']} ms apart

`stream_client`, streams started over {args['ramp_ms']} ms, {args['stream_rounds']} round(s) per
path before the large bodies; memory per stream is the proxy's peak RSS (VmHWM) over its RSS
before, divided by the streams, in the first round; CPU per chunk and the delays are the median
round's by CPU. A chunk's delay runs from the provider writing it to the client reading it (same
clock); added is over direct's.

{streams_table(results['streams'])}
"""


def _log_axis(values):
    low = min(values) / 1.5
    high = max(values) * 1.5
    return math.log10(low), math.log10(high)


def panel(title, rows, top, fmt):
    """Horizontal bars on a log scale: `rows` is [(path key, value)]; values > 0 drawn."""
    drawn = [(k, v) for k, v in rows if v is not None and v > 0]
    out = [text(20, top, title, 14, "start", font_weight="bold")]
    if not drawn:
        return out + [text(LEFT, top + 20, "no values", 11, "start")], top + 40
    low, high = _log_axis([v for _, v in drawn])
    x = lambda v: LEFT + (math.log10(v) - low) / (high - low) * (WIDTH - LEFT - RIGHT)
    y = top + 12
    colours = {key: colour for key, _, colour in PATHS}
    for key, value in drawn:
        out.append(text(LEFT - 8, y + BAR - 4, LABELS.get(key, key), 11, "end"))
        out.append(el("rect", x=LEFT, y=y, width=max(1.0, x(value) - LEFT), height=BAR,
                      fill=colours.get(key, INK)))
        out.append(text(x(value) + 6, y + BAR - 4, format(value, fmt), 11, "start"))
        y += BAR + 6
    out.append(el("line", x1=LEFT, y1=top + 8, x2=LEFT, y2=y, stroke=GRID))
    return out, y + PANEL_GAP - 24


def svg(results):
    large, streams = results["large"], results["streams"]
    keys = [key for key, _, _ in PATHS]
    direct_p50 = large.get("direct", {}).get("p50")
    direct_delay = streams.get("direct", {}).get("delay_ms", {}).get("p99")
    args = results["args"]
    panels = [
        (f"Large bodies ({args['request_bytes']:,} B, half streamed, c={args['concurrency']}): "
         "proxy CPU µs per request (log scale)",
         [(k, large[k].get("cpu_us_per_req")) for k in keys if k in large], ",.0f"),
        ("Large bodies: added p50 latency over direct, ms (log scale)",
         [(k, large[k]["p50"] - direct_p50) for k in keys if k in large and k != "direct"
          and direct_p50 is not None], ".2f"),
        (f"{args['streams']:,} held streams: memory per stream, KB (log scale)",
         [(k, streams[k].get("kb_per_stream")) for k in keys if k in streams], ".1f"),
        ("Held streams: proxy CPU µs per chunk relayed (log scale)",
         [(k, streams[k].get("cpu_us_per_chunk")) for k in keys if k in streams], ".1f"),
        ("Held streams: chunk delay p99, added over direct, ms (log scale; ≤ 0 not drawn)",
         [(k, streams[k]["delay_ms"]["p99"] - direct_delay) for k in keys
          if k in streams and k != "direct" and direct_delay is not None], ".2f"),
    ]
    notes = results["notes"]
    body = [text(20, 28, f"LLM benchmark — {notes['date']}", 18, "start", font_weight="bold"),
            text(20, 48, f"{notes['machine']}; proxies pinned to one CPU, clients and provider "
                         f"on the other", 11, "start")]
    y = 84
    for title, rows, fmt in panels:
        drawn, y = panel(title, rows, y, fmt)
        body += drawn
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0f}" '
        f'viewBox="0 0 {WIDTH} {y:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        el("rect", x=0, y=0, width=WIDTH, height=round(y), fill="white"), *body, "</svg>\n"])


def write_svg(json_path):
    """Reads `json_path` (llm.py's results.json), writes results.svg beside it; its path."""
    return plot.write_svg(json_path, svg)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RESULTS.json  (writes results.svg beside it)")
    print(write_svg(sys.argv[1]))
