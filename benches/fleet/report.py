"""Markdown report of one fleet-benchmark run. Reports, never asserts: the smoke size's numbers
mean nothing, and a configuration that did not fit under max_connections is a finding."""

import datetime


def _num(value, fmt, scale=1.0):
    if value is None:
        return "—"
    return format(value * scale if scale != 1.0 else value, fmt)


def _config(r):
    return f"| {r['form']} | {r['n']} | {'yes' if r['notify'] else 'no'} "


def cost_table(runs):
    lines = [
        "| form | N | NOTIFY | ready | DB connections (`application_name = 'sidecar'`) "
        "| held by the fleet (sockets) | per instance | serving instance | other clients "
        "| DB CPU ms/s | ÷ N | in the fleet's backends ms/s | DB run time ms/s (schedstat) "
        "| sidecars' CPU ms/s | per instance ms/s | serving instance ms/s |",
        "|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lo, hi = r["conn_per_instance"]
        per = f"{lo}" if lo == hi else f"{lo}–{hi}"
        db = r["db_cpu_ms_per_s"]
        lines.append(
            _config(r)
            + f"| {r['ready']}/{r['n']} | {r['conn_app_name']} | {r['conn_fleet']} | {per} "
            f"| {_num(r['conn_serving'], 'd')} | {r['conn_others']} "
            f"| {_num(db, '.1f')} | {_num(db / r['n'] if db is not None else None, '.2f')} "
            f"| {_num(r['db_backends_cpu_ms_per_s'], '.1f')} "
            f"| {_num(r['db_sched_ms_per_s'], '.2f')} "
            f"| {r['fleet_cpu_ms_per_s']:.1f} "
            f"| {(r['fleet_cpu_ms_per_s'] - (r['serving_cpu_ms_per_s'] or 0.0)) / r['n']:.2f} "
            f"| {_num(r['serving_cpu_ms_per_s'], '.1f')} |"
        )
    return "\n".join(lines)


def propagation_table(runs):
    lines = [
        "| form | N | NOTIFY | update | served by | never | p50 ms | max ms | first ms "
        "| serving instance ms | psql ms |",
        "|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        watched = None
        for k, u in enumerate(r["updates"], 1):
            watched = u["published"] + u["never"]
            lines.append(
                _config(r)
                + f"| {k} | {u['published']}/{watched} | {u['never']} "
                f"| {_num(u['p50_s'], '.0f', 1000)} | {_num(u['max_s'], '.0f', 1000)} "
                f"| {_num(u['min_s'], '.0f', 1000)} | {_num(u['serving_s'], '.0f', 1000)} "
                f"| {u['psql_s'] * 1000:.0f} |"
            )
    return "\n".join(lines)


def memory_table(runs):
    lines = [
        "| form | N | NOTIFY | RSS, all sidecars MB | median instance MB | largest instance MB "
        "| serving instance MB | serving instance peak MB (VmHWM, after the updates) |",
        "|---|---:|:-:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            _config(r)
            + f"| {r['rss_sum_mb']:.0f} | {r['rss_median_mb']:.1f} | {r['rss_max_mb']:.1f} "
            f"| {_num(r['rss_serving_mb'], '.1f')} "
            f"| {_num(r.get('rss_serving_peak_mb'), '.1f')} |"
        )
    return "\n".join(lines)


def trouble_lines(runs):
    lines = []
    for r in runs:
        if r.get("not_ready"):
            lines.append(f"- {r['label']}: {len(r['not_ready'])} instances never answered "
                         f"`/readyz` 200 within the wait")
        for name, code, line in r.get("exited", []):
            lines.append(f"- {r['label']}: {name} exited ({code}): `{line}`")
        for kind, entry in sorted(r.get("trouble", {}).items()):
            lines.append(f"- {r['label']}: {entry['instances']} instances logged {kind}, "
                         f"e.g. `{entry['example']}`")
    return "\n".join(lines) or "None: every instance started, became ready and logged no error."


def render(args, machine, results, elapsed_s):
    measured = [r for r in results if r["status"] == "run"]
    skipped = [r for r in results if r["status"] != "run"]
    skipped_text = "\n".join(f"- {r['label']} ({r['status']}): {r['reason']}" for r in skipped)
    sections = [f"""## Fleet benchmark — {datetime.date.today().isoformat()}

Machine: {machine['nproc']} × {machine['cpu']}, Linux {machine['kernel']}. PostgreSQL
{machine['postgres']} on the same machine: max_connections {machine['max_connections']}
({machine['superuser_reserved']} of them reserved for superusers; the sidecars connect as
`postgres`, a superuser). `{machine['sidecar']}`, commit {machine['commit']}
(`{machine['binary']}`). Everything on loopback; the fan-out endpoint is plain HTTP (no TLS).

Each instance: `server.threads: 1`, one route, its own listener and admin port,
`log.level: info`. {args.rows:,} credential rows (the fillers share one ciphertext;
`fleet-key`, the route's credential, has its own). `refresh_interval` {args.refresh:g} s, idle
window {args.idle_seconds:g} s, {args.updates} UPDATEs of `fleet-key` per configuration (each
waited for at most {3 * args.refresh + 10:g} s). The run took {elapsed_s / 60:.1f} min."""]
    if measured:
        sections.append(f"""### Database cost while idle

Connections: `pg_stat_activity` rows in database `{machine['database']}` with
`application_name = 'sidecar'` (0 when the binary does not set it yet), and the connections the
fleet's processes hold, found from their sockets in `/proc` (exact, whatever the name). CPU:
utime + stime of every process of the server (postmaster and its children) over the idle window,
in ms of CPU per second (1000 = one core); "÷ N" divides it by the number of instances; "in the
fleet's backends" is the part spent by the backends serving the fleet's connections. utime +
stime moves in whole clock ticks (10 ms) per process, so a load of a few ms per second shows as
0 or a multiple of 0.5 over a 20 s window: "DB run time (schedstat)" is the same processes'
nanosecond run time from `/proc/PID/schedstat`, for the light loads. The
sidecars' own CPU over the same window: all of them, per instance (fan-out: per reader), and the
serving instance.

{cost_table(measured)}

### A credential change: time until every instance serves it

From just before `psql` starts the UPDATE until the first `{'credentials: snapshot published'}`
line each instance logs after it (log timestamps, ms). "psql ms" is psql's own start, connect
and commit, included in every other time.

{propagation_table(measured)}

### Memory (RSS after start-up, from `/proc`)

{memory_table(measured)}

### Instances the database refused, lost, or that did not start

{trouble_lines(measured)}""")
    if skipped:
        sections.append(f"### Not run\n\n{skipped_text}")
    return "\n\n".join(sections) + "\n"
