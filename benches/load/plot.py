"""Draws one load-benchmark run as an SVG picture, written by hand (standard library only).

    python3 benches/load/plot.py target/bench-load/results.json   # writes results.svg beside it

`driver.py` writes `results.json` and calls `write_svg` at the end of every run. Two panels share
the x axis: one group per closed-loop concurrency (wrk), then one for the fixed-rate run (oha);
in each group one column per path (direct, sidecar, sidecar with `dispatch: model`, nginx, bare
Pingora) present in the run, in the same place in both panels. The numbers are those of the
median round, as in the markdown report.

- latency: p50, p90 and p99 (ms) as marks joined by a line, one line per path; log scale when
  the largest value is more than 10 × the smallest.
- proxy CPU per request served (µs): bars with their value; "direct" has no proxy ("n/a").

A value that is missing (None, absent, or a latency of 0, which oha reports when it has none) is
left out, so the smoke run's tiny numbers draw too.
"""

import json
import math
import os
import sys
from xml.sax.saxutils import escape

PATHS = (("direct", "direct", "#555555"), ("sidecar", "sidecar", "#0072B2"),
         ("sidecar-model", "sidecar dispatch: model", "#CC79A7"),
         ("nginx", "nginx", "#009E73"), ("bare", "bare Pingora", "#E69F00"))
PERCENTILES = ("p50", "p90", "p99")
WIDTH, HEIGHT, LEFT, RIGHT = 960, 700, 80, 20
INK, GRID = "#222222", "#dddddd"


def el(tag, body="", **attrs):
    """One SVG element; `stroke_width=2` is written `stroke-width="2"`, floats to 0.1 px."""
    pairs = " ".join(f'{k.replace("_", "-")}="{_attr(v)}"' for k, v in attrs.items())
    return f"<{tag} {pairs}>{escape(body)}</{tag}>" if body else f"<{tag} {pairs}/>"


def _attr(value):
    return f"{value:.1f}" if isinstance(value, float) else escape(str(value), {'"': "&quot;"})


def text(x, y, body, size=12, anchor="middle", **attrs):
    return el("text", body, x=x, y=y, font_size=size, text_anchor=anchor, fill=INK, **attrs)


def groups(results):
    """[(label, {path: row})]: one per closed-loop concurrency, then the fixed-rate run."""
    by_concurrency = {}
    for row in results.get("closed_loop", []):
        by_concurrency.setdefault(row["concurrency"], {})[row["path"]] = row
    out = [(f"c = {c}", by_concurrency[c]) for c in sorted(by_concurrency)]
    if results.get("fixed_rate"):
        rate = results.get("args", {}).get("rate")
        out.append((f"fixed {rate} req/s" if rate else "fixed rate", results["fixed_rate"]))
    return out


def nice_step(span):
    """The step of 1, 2 or 5 × 10^k that cuts `span` into at most 5 parts."""
    power = 10 ** math.floor(math.log10(span / 5))
    return next(m * power for m in (1, 2, 5, 10) if m * power * 5 >= span)


def ticks(values, log):
    """Axis ticks covering `values` (all > 0 on a log axis): from the nearest 1, 2 or 5 × 10^k
    around them (only the decades between when they span more than 8 of those), or multiples of
    a nice step from 0."""
    if not values:
        return [1, 10] if log else [0, 1]
    if log:
        low, high = min(values), max(values)
        decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        nice = [(m, m * 10.0 ** k) for k in decades for m in (1, 2, 5)]
        start = max(v for _, v in nice if v <= low * 1.000001)
        end = min(v for _, v in nice if v >= high / 1.000001)
        inside = [(m, v) for m, v in nice if start <= v <= end]
        if len(inside) > 8:
            return [start] + [v for m, v in inside[1:-1] if m == 1] + [end]
        return [v for _, v in inside]
    step = nice_step(max(values) or 1)
    return [i * step for i in range(math.ceil((max(values) or 1) / step - 1e-9) + 1)]


class Axis:
    """Maps values to y pixels between `top` and `bottom`, linearly or on log10."""

    def __init__(self, values, top, bottom, log):
        self.top, self.bottom, self.log = top, bottom, log
        self.ticks = ticks(values, log)
        self.low, self.high = self._f(self.ticks[0]), self._f(self.ticks[-1])

    def _f(self, value):
        return math.log10(value) if self.log else value

    def y(self, value):
        share = (self._f(value) - self.low) / (self.high - self.low)
        return self.bottom - share * (self.bottom - self.top)

    def draw(self, label):
        out = [el("line", x1=LEFT, y1=self.y(t), x2=WIDTH - RIGHT, y2=self.y(t), stroke=GRID)
               for t in self.ticks]
        out += [text(LEFT - 6, self.y(t) + 4, f"{t:g}", 11, "end") for t in self.ticks]
        middle = (self.top + self.bottom) / 2
        out.append(text(18, middle, label, 12, transform=f"rotate(-90 18 {middle:.1f})"))
        out.append(el("line", x1=LEFT, y1=self.bottom, x2=WIDTH - RIGHT, y2=self.bottom,
                      stroke=INK))
        return out


def columns(group_list, paths):
    """(x, path index, row or None) for every path in every group, and the group centres."""
    group_width = (WIDTH - LEFT - RIGHT) / len(group_list)
    slot = group_width * 0.8 / len(paths)
    cells, centres = [], []
    for i, (_, rows) in enumerate(group_list):
        start = LEFT + i * group_width
        centres.append(start + group_width / 2)
        for j, (name, _, _) in enumerate(paths):
            cells.append((start + group_width * 0.1 + slot * (j + 0.5), j, rows.get(name)))
    return cells, centres, slot


def group_labels(group_list, centres, axis):
    """Each group's name under the axis; a dashed line between closed loop and fixed rate."""
    out = [text(x, axis.bottom + 20, label, 12) for (label, _), x in zip(group_list, centres)]
    if group_list[-1][0].startswith("fixed") and len(group_list) > 1:
        x = (centres[-2] + centres[-1]) / 2
        out.append(el("line", x1=x, y1=axis.top, x2=x, y2=axis.bottom, stroke="#999999",
                      stroke_dasharray="4 4"))
    return out


def marker(percentile, x, y, color):
    if percentile == "p50":
        return el("circle", cx=x, cy=y, r=4.5, fill=color)
    if percentile == "p90":
        return el("circle", cx=x, cy=y, r=4, fill="white", stroke=color, stroke_width=2)
    return el("line", x1=x - 7, y1=y, x2=x + 7, y2=y, stroke=color, stroke_width=3)


def latency_panel(group_list, paths, top, height):
    def known(row):
        points = [(p, row.get(p)) for p in PERCENTILES] if row else []
        return [(p, v) for p, v in points if v]

    cells, centres, _ = columns(group_list, paths)
    values = [v for _, _, row in cells for _, v in known(row)]
    log = bool(values) and max(values) > 10 * min(values)
    axis = Axis(values, top, top + height, log)
    scale = "log scale" if log else "linear scale"
    out = [text(LEFT, top - 12, f"Latency, ms (median round; {scale})", 14, "start",
                font_weight="bold")]
    out += axis.draw("latency, ms")
    for x, j, row in cells:
        color, points = paths[j][2], known(row)
        if len(points) > 1:
            out.append(el("line", x1=x, y1=axis.y(points[0][1]), x2=x, y2=axis.y(points[-1][1]),
                          stroke=color, stroke_width=2))
        out += [marker(p, x, axis.y(v), color) for p, v in points]
    return out + group_labels(group_list, centres, axis)


def cpu_panel(group_list, paths, top, height):
    cells, centres, slot = columns(group_list, paths)
    value = lambda row: row.get("cpu_us_per_req") if row else None
    values = [value(row) for _, _, row in cells if value(row) is not None]
    axis = Axis(values, top, top + height, log=False)
    out = [text(LEFT, top - 12, "Proxy CPU per request served, µs (utime + stime; median round)",
                14, "start", font_weight="bold")]
    out += axis.draw("CPU µs / request")
    for x, j, row in cells:
        v = value(row)
        if v is None:
            out.append(text(x, axis.bottom - 4, "n/a", 10, fill_opacity="0.6"))
            continue
        y = axis.y(v)
        out.append(el("rect", x=x - slot * 0.35, y=y, width=slot * 0.7, height=axis.bottom - y,
                      fill=paths[j][2]))
        out.append(text(x, y - 4, f"{v:.0f}", 10))
    return out + group_labels(group_list, centres, axis)


def header(results, paths):
    args = results.get("args", {})
    out = [text(LEFT, 28, f"Load benchmark — {results.get('date', 'undated')}", 18, "start",
                font_weight="bold"),
           text(LEFT, 48, results.get("machine", "machine unknown"), 11, "start")]
    if args:
        out.append(text(LEFT, 64, (
            f"proxy threads {args['threads']}, access logs {args['access_log']}; "
            f"{args['rounds']} × {args['seconds']} s runs per path and load; "
            f"{args['response_bytes']}-byte answers after {args['latency_ms']} ms"), 11, "start"))
    x = LEFT
    for _, label, color in paths:
        out.append(el("rect", x=x, y=80, width=12, height=12, fill=color))
        out.append(text(x + 17, 90, label, 12, "start"))
        x += 30 + 7.5 * len(label)
    for percentile in PERCENTILES:
        out.append(marker(percentile, x + 20, 86, INK))
        out.append(text(x + 31, 90, percentile, 12, "start"))
        x += 65
    return out


def svg(results):
    """The whole picture, as SVG text."""
    group_list = groups(results) or [("no results", {})]
    present = {name for _, rows in group_list for name in rows}
    paths = [p for p in PATHS if p[0] in present] or list(PATHS)
    body = (header(results, paths) + latency_panel(group_list, paths, 140, 260)
            + cpu_panel(group_list, paths, 480, 180))
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        el("rect", x=0, y=0, width=WIDTH, height=HEIGHT, fill="white"), *body, "</svg>\n"])


def write_svg(json_path, draw=None):
    """Reads `json_path` (driver.py's results.json, or llm.py's with `draw=llm_report.svg`),
    writes results.svg beside it; its path."""
    with open(json_path, encoding="utf-8") as f:
        results = json.load(f)
    svg_path = os.path.join(os.path.dirname(os.path.abspath(json_path)), "results.svg")
    with open(svg_path, "w", encoding="utf-8") as f:
        f.write((draw or svg)(results))
    return svg_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RESULTS.json  (writes results.svg beside it)")
    print(write_svg(sys.argv[1]))
