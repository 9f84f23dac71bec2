"""Fleet benchmark driver: many real sidecar processes against one PostgreSQL, counting what the
database pays (connections, CPU while idle) and how long a credential change takes to reach
every instance, for two forms:

- direct: every instance reads the database itself (`credentials.postgres`);
- fan-out: one serving instance reads it and serves a `fanout:` endpoint; every other instance
  takes its snapshot from there (`credentials.watch`, plain HTTP on loopback).

each with NOTIFY (triggers installed, `listen: true`) and without (triggers removed,
`listen: false`, polling every `--refresh`). Prints a markdown report and writes it to
`<workdir>/results.md`. Started by `benches/fleet.sh`; benches/README.md documents it.
"""

import argparse
import hashlib
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import time

import database
import fleet
import report

SCHEMA_PREFIX = "sidecar_fleet_"
SMOKE_DEFAULTS = dict(sizes="3", rows=100, refresh=1.0, idle_seconds=1.0, updates=2,
                      ready_timeout=20.0, settle=0.5)
FULL_DEFAULTS = dict(sizes="50,200", rows=10_000, refresh=5.0, idle_seconds=20.0, updates=3,
                     ready_timeout=60.0, settle=2.0)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="the sidecar binary")
    p.add_argument("--workdir", required=True, help="instance directories and results.md")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test",
                   help="the server and database (psql and the sidecars use it)")
    p.add_argument("--sslmode", default="disable",
                   help="sslmode the sidecars connect with (loopback: disable)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny and fast (N=3, 100 rows, 1 s refresh, 2 s idle): proves it runs")
    p.add_argument("--sizes", help="instance counts N, comma-separated (default 50,200)")
    p.add_argument("--forms", default="direct,fanout", help="direct, fanout or both")
    p.add_argument("--notify", default="on,off",
                   help="with NOTIFY (on), polling only (off), or both")
    p.add_argument("--rows", type=int, help="credential rows in the table (default 10000)")
    p.add_argument("--refresh", type=float, help="refresh_interval, seconds (default 5)")
    p.add_argument("--idle-seconds", type=float, help="idle CPU window (default 20)")
    p.add_argument("--updates", type=int, help="UPDATEs timed per configuration (default 3)")
    p.add_argument("--settle", type=float,
                   help="after the last instance is ready, wait one refresh_interval plus this "
                        "many seconds before measuring (default 2)")
    p.add_argument("--batch", type=int, default=25, help="instances started at once")
    p.add_argument("--ready-timeout", type=float,
                   help="longest wait for a batch to answer /readyz 200, seconds (default 60)")
    p.add_argument("--base-port", type=int, default=20000,
                   help="first port handed out (listener and admin ports count up from it)")
    p.add_argument("--headroom", type=int, default=10,
                   help="connections left free for everyone else when deciding whether a "
                        "configuration fits under max_connections")
    p.add_argument("--allow-exceed", action="store_true",
                   help="run configurations that would exceed max_connections anyway (to see "
                        "how instances fail); other users of the server may be refused meanwhile")
    p.add_argument("--postgres-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra key under credentials.postgres of every instance that reads the "
                        "database (repeatable), e.g. a new knob being evaluated")
    args = p.parse_args(argv)
    defaults = SMOKE_DEFAULTS if args.smoke else FULL_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.size_list = [int(n) for n in args.sizes.split(",") if n]
    args.form_list = [f for f in args.forms.split(",") if f]
    args.notify_list = [{"on": True, "off": False}[m] for m in args.notify.split(",") if m]
    for form in args.form_list:
        if form not in ("direct", "fanout"):
            p.error(f"unknown form {form!r}: direct or fanout")
    return args


T0 = time.monotonic()


def log(message):
    """Progress on stdout, each line with the seconds since the driver started."""
    lead = len(message) - len(message.lstrip("\n"))
    print("\n" * lead + f"[{time.monotonic() - T0:6.1f} s] {message[lead:]}", flush=True)


class Context:
    """What every configuration shares: the database, the schema, secrets, the CLI."""

    def __init__(self, args):
        self.args = args
        self.pg = database.Postgres(args.database_url)
        self.schema = database.Schema(self.pg, f"{SCHEMA_PREFIX}{os.getpid()}")
        self.salt = "fleet-salt-" + secrets.token_hex(16)
        self.token = secrets.token_urlsafe(32)
        self.token_sha256 = hashlib.sha256(self.token.encode()).hexdigest()
        env = {k: v for k, v in os.environ.items()
               if k not in ("RUST_LOG", "DATABASE_URL", "LITELLM_MASTER_KEY")}
        env.update(LITELLM_SALT_KEY=self.salt, SIDECAR_WATCH_TOKEN=self.token)
        self.env = env
        self.ports = fleet.Ports(args.base_port)
        self.values_written = 0
        # (role, notify) → connections one instance was measured to hold.
        self.measured_per_instance = {}
        sep = "&" if "?" in args.database_url else "?"
        self.sidecar_url = args.database_url
        if "sslmode=" not in args.database_url:
            self.sidecar_url += f"{sep}sslmode={args.sslmode}"

    def sidecar(self, *argv, timeout=120):
        return subprocess.run([self.args.bin, *argv], capture_output=True, text=True,
                              timeout=timeout, env=self.env, cwd=self.args.workdir)

    def encrypt(self, value):
        done = subprocess.run([self.args.bin, "credentials", "encrypt"], input=value,
                              capture_output=True, text=True, timeout=30, env=self.env)
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"sidecar credentials encrypt failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def postgres_yaml(self, notify):
        lines = ["  postgres:",
                 f'    url: "{self.sidecar_url}"',
                 f"    schema: {self.schema.name}",
                 f"    refresh_interval: {int(self.args.refresh * 1000)}ms",
                 f"    listen: {'true' if notify else 'false'}"]
        for option in self.args.postgres_option:
            key, _, value = option.partition("=")
            lines.append(f"    {key.strip()}: {value.strip()}")
        return "\n".join(lines) + "\n"

    def watch_yaml(self, fanout_port):
        return ("  watch:\n"
                f'    url: "http://127.0.0.1:{fanout_port}"\n'
                "    token_env: SIDECAR_WATCH_TOKEN\n")

    def fanout_yaml(self, fanout_port):
        return ("fanout:\n"
                f'  address: "127.0.0.1:{fanout_port}"\n'
                "  watchers:\n"
                f'    - {{ name: fleet, token_sha256: "{self.token_sha256}", '
                f"credentials: [{database.ROUTE_CREDENTIAL}] }}\n")

    def set_triggers(self, notify):
        """`sidecar db install-notify` / `uninstall-notify` with a config pointing at the schema."""
        conf = os.path.join(self.args.workdir, "db-admin", "sidecar.yaml")
        os.makedirs(os.path.dirname(conf), exist_ok=True)
        with open(conf, "w") as f:
            f.write(fleet.config_yaml(os.path.dirname(conf), 1, 2, self.postgres_yaml(notify)))
        command = "install-notify" if notify else "uninstall-notify"
        done = self.sidecar("-c", conf, "db", command)
        if done.returncode != 0:
            raise RuntimeError(f"sidecar db {command} failed: {done.stderr.strip()}")
        triggers = self.schema.has_triggers()
        if bool(triggers) != notify:
            raise RuntimeError(f"after db {command} the schema has {triggers} triggers")

    def other_connections(self):
        """Client backends on the server now, other than the driver's own psql."""
        return [a for a in self.pg.activity() if a["app"] != database.DRIVER_APP_NAME]


def config_check(ctx, instance):
    """`sidecar -t -c FILE`: None when the config is accepted, else what it said."""
    done = ctx.sidecar("-t", "-c", instance.config, timeout=120)
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")[-800:]


def connection_budget(ctx, server):
    others = len(ctx.other_connections())
    return server["max_connections"] - others - ctx.args.headroom, others


def run_configuration(ctx, server, form, n, notify):
    args = ctx.args
    label = f"{form}-n{n}-{'notify' if notify else 'poll'}"
    result = {"form": form, "n": n, "notify": notify, "label": label, "status": "run",
              "notes": []}
    log(f"\n== {label}: {form}, N = {n}, {'NOTIFY' if notify else 'polling only'}")
    ctx.set_triggers(notify)
    db_role = "direct" if form == "direct" else "serving"
    db_instances = n if form == "direct" else 1
    # Connections one instance holds: as measured in an earlier configuration of the same kind,
    # else at least 1 (then measured on the first batch started, below).
    measured_before = ctx.measured_per_instance.get((db_role, notify))
    per = measured_before or 1
    budget, others = connection_budget(ctx, server)
    need = db_instances * per
    result.update(budget=budget, others_at_start=others)
    if need > budget and not args.allow_exceed:
        result["status"] = "not run"
        how = ("as measured at a smaller N" if measured_before
               else "at least one per instance")
        result["reason"] = (f"would need {db_instances} × {per} = {need} database connections "
                            f"({how}); max_connections {server['max_connections']} − {others} "
                            f"open elsewhere − {args.headroom} headroom = {budget}")
        log(f"  not run: {result['reason']}")
        return result

    workdir = os.path.join(args.workdir, label)
    instances, serving = [], None
    try:
        if form == "direct":
            instances = [fleet.Instance(f"i{k:03d}", workdir, ctx.ports, "direct")
                         for k in range(n)]
            for instance in instances:
                instance.write_config(ctx.postgres_yaml(notify))
            problem = config_check(ctx, instances[0])
            if problem:
                result.update(status="not run", reason=f"`sidecar -t` refused the config: {problem}")
                log(f"  not run: {result['reason']}")
                return result
            readers = instances
            first, rest = instances[:args.batch], instances[args.batch:]
            not_ready = fleet.start_batched(first, args.bin, ctx.env, args.batch,
                                            args.ready_timeout, log, total=n)
            # Connections per instance as measured on the first batch: the real cost, whatever
            # the code under test does; re-check the budget with it before starting the rest.
            held = fleet.database_ports([i for i in first if i.ready_at], ctx.pg.port)
            if held:
                measured = max(len(p) for p in held.values())
                ctx.measured_per_instance[(db_role, notify)] = measured
                projected = n * measured
                if rest and projected > budget and not args.allow_exceed:
                    result.update(status="not run", reason=(
                        f"the first {len(first)} instances hold {measured} database connections "
                        f"each: N = {n} would need {projected} > {budget} available "
                        f"(max_connections {server['max_connections']} − {others} open "
                        f"elsewhere − {args.headroom} headroom)"))
                    log(f"  stopped: {result['reason']}")
                    return result
            not_ready += fleet.start_batched(rest, args.bin, ctx.env, args.batch,
                                             args.ready_timeout, log, counted=len(first),
                                             total=n)
        else:
            fanout_port = ctx.ports.take()
            serving = fleet.Instance("serving", workdir, ctx.ports, "serving")
            serving.write_config(ctx.postgres_yaml(notify), ctx.fanout_yaml(fanout_port))
            problem = config_check(ctx, serving)
            if problem:
                result.update(status="not run",
                              reason=f"`sidecar -t` refused the serving config: {problem}")
                log(f"  not run: {result['reason']}")
                return result
            instances = [serving]
            if fleet.start_batched([serving], args.bin, ctx.env, 1, args.ready_timeout, log):
                result.update(status="failed", reason="the serving instance never became ready: "
                              + serving.last_log_line())
                log(f"  failed: {result['reason']}")
                return result
            readers = [fleet.Instance(f"r{k:03d}", workdir, ctx.ports, "reader")
                       for k in range(n)]
            for reader in readers:
                reader.write_config(ctx.watch_yaml(fanout_port))
            problem = config_check(ctx, readers[0])
            if problem:
                result.update(status="not run",
                              reason=f"`sidecar -t` refused the reader config: {problem}")
                log(f"  not run: {result['reason']}")
                return result
            instances += readers
            not_ready = fleet.start_batched(readers, args.bin, ctx.env, args.batch,
                                            args.ready_timeout, log)

        exited = [i for i in instances if not i.alive()]
        result["ready"] = sum(1 for i in readers if i.ready_at is not None)
        result["not_ready"] = [i.name for i in not_ready]
        result["exited"] = [(i.name, i.proc.returncode, i.last_log_line()) for i in exited]
        for name, code, line in result["exited"][:3]:
            log(f"  {name} exited ({code}): {line}")

        # Let every start-up load and first poll pass, so the idle window is idle.
        time.sleep(args.refresh + args.settle)
        measure_connections(ctx, result, instances, serving)
        measure_memory(result, readers, serving)
        measure_idle(ctx, result, instances, serving)
        measure_propagation(ctx, result, readers, serving)
        # The serving instance rebuilds its whole snapshot on each change: its peak is what a
        # manifest must allow for.
        result["rss_serving_peak_mb"] = serving.peak_rss_kib() / 1024 if serving else None
        trouble = {}
        for instance in instances:
            kinds, first_line = instance.trouble()
            for kind in kinds:
                entry = trouble.setdefault(kind, {"instances": 0, "example": first_line})
                entry["instances"] += 1
        result["trouble"] = trouble
        return result
    finally:
        fleet.stop_all(instances)
        # Their backends end when the sockets close; wait, so the next budget is not off.
        gone = time.monotonic() + 10
        while time.monotonic() < gone and any(
                os.path.exists(f"/proc/{pid}") for pid in result.get("fleet_backend_pids", [])):
            time.sleep(0.1)


def measure_connections(ctx, result, instances, serving):
    activity = ctx.pg.activity()
    held = fleet.database_ports(instances, ctx.pg.port)
    fleet_ports = {port for ports in held.values() for port in ports}
    db = ctx.pg.database
    by_app = [a for a in activity if a["datname"] == db and a["app"] == "sidecar"]
    by_socket = [a for a in activity if a["port"] in fleet_ports]
    others = [a for a in activity
              if a["port"] not in fleet_ports and a["app"] != database.DRIVER_APP_NAME]
    per_instance = [len(held.get(i.name, [])) for i in instances
                    if i.alive() and i is not serving]
    result.update(
        conn_app_name=len(by_app),
        conn_fleet=len(by_socket),
        conn_serving=len(held.get(serving.name, [])) if serving else None,
        conn_per_instance=(min(per_instance), max(per_instance)) if per_instance else (0, 0),
        conn_others=len(others),
        conn_server_total=len(activity),
        fleet_backend_pids=[a["pid"] for a in by_socket],
    )
    log(f"  database connections: {len(by_app)} with application_name 'sidecar', "
        f"{len(by_socket)} held by the fleet's processes (per instance "
        f"{result['conn_per_instance'][0]}–{result['conn_per_instance'][1]}), "
        f"{len(others)} others on the server")


def measure_memory(result, readers, serving):
    rss = [i.rss_kib() / 1024 for i in readers if i.alive()]
    result.update(
        rss_sum_mb=sum(rss) + (serving.rss_kib() / 1024 if serving else 0.0),
        rss_median_mb=statistics.median(rss) if rss else 0.0,
        rss_max_mb=max(rss) if rss else 0.0,
        rss_serving_mb=serving.rss_kib() / 1024 if serving else None,
    )
    log(f"  RSS: {result['rss_sum_mb']:.0f} MB in all, median instance "
        f"{result['rss_median_mb']:.1f} MB"
        + (f", serving {result['rss_serving_mb']:.1f} MB" if serving else ""))


def measure_idle(ctx, result, instances, serving):
    seconds = ctx.args.idle_seconds
    postmaster = ctx.pg.postmaster_pid()
    alive = [i for i in instances if i.alive()]
    fleet_before = {i.name: i.cpu_ms() for i in alive}
    server_cpu = database.ServerCpu(postmaster) if postmaster else None
    if server_cpu:
        server_cpu.start()
    started = time.monotonic()
    time.sleep(seconds)
    window = time.monotonic() - started
    spent, ran = {}, {}
    if server_cpu:
        window, spent, ran = server_cpu.stop()
    fleet_after = {i.name: i.cpu_ms() for i in alive}
    fleet_ms = sum(fleet_after[n] - fleet_before[n] for n in fleet_before)
    serving_ms = (fleet_after[serving.name] - fleet_before[serving.name]
                  if serving and serving.name in fleet_before else None)
    backend_pids = set(result.get("fleet_backend_pids", []))
    db_instances = result["n"] if result["form"] == "direct" else 1
    result.update(
        idle_window_s=window,
        db_cpu_ms_per_s=sum(spent.values()) / window if server_cpu else None,
        db_backends_cpu_ms_per_s=(sum(ms for pid, ms in spent.items() if pid in backend_pids)
                                  / window if server_cpu else None),
        db_sched_ms_per_s=sum(ran.values()) / window if server_cpu else None,
        db_backends_sched_ms_per_s=(sum(ms for pid, ms in ran.items() if pid in backend_pids)
                                    / window if server_cpu else None),
        db_instances=db_instances,
        fleet_cpu_ms_per_s=fleet_ms / window,
        serving_cpu_ms_per_s=serving_ms / window if serving_ms is not None else None,
    )
    if server_cpu:
        log(f"  idle {window:.1f} s: database {result['db_cpu_ms_per_s']:.1f} ms CPU/s "
            f"({result['db_backends_cpu_ms_per_s']:.1f} in the fleet's backends; scheduler run "
            f"time {result['db_sched_ms_per_s']:.2f}, {result['db_backends_sched_ms_per_s']:.2f}), "
            f"sidecars {result['fleet_cpu_ms_per_s']:.1f} ms CPU/s")
    else:
        log("  idle: the database server's processes are not visible here; CPU not measured")


def measure_propagation(ctx, result, readers, serving):
    args = ctx.args
    limit = 3 * args.refresh + 10
    rounds = []
    for _ in range(args.updates):
        ctx.values_written += 1
        ciphertext = ctx.encrypt(f"sk-fleet-{ctx.values_written}")
        watched = [i for i in readers if i.alive()] + ([serving] if serving else [])
        for instance in watched:
            instance.mark_log()
        started, returned = ctx.schema.update_key(ciphertext)
        found = fleet.wait_published(watched, started, limit)
        serving_s = found.pop(serving.name, None) if serving else None
        times = sorted(t for t in found.values() if t is not None)
        missing = sum(1 for t in found.values() if t is None)
        row = {
            "psql_s": returned - started,
            "p50_s": statistics.median(times) if times else None,
            "max_s": times[-1] if times else None,
            "min_s": times[0] if times else None,
            "published": len(times),
            "never": missing,
            "serving_s": serving_s,
        }
        rounds.append(row)
        log(f"  update {len(rounds)}: served by {len(times)}/{len(found)} instances, "
            + (f"p50 {row['p50_s'] * 1000:.0f} ms, max {row['max_s'] * 1000:.0f} ms"
               if times else "none")
            + (f", {missing} never within {limit:.0f} s" if missing else "")
            + (f" (serving instance {serving_s * 1000:.0f} ms)" if serving_s is not None else "")
            + f"; psql itself {row['psql_s'] * 1000:.0f} ms")
        time.sleep(0.5)
    result["updates"] = rounds
    result["update_limit_s"] = limit


def machine(ctx, server):
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([ctx.args.bin, "--version"], capture_output=True,
                             text=True).stdout.strip()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if ctx.args.bin.startswith(root + os.sep):
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " with uncommitted changes in src/"
    else:
        commit = "unknown (a binary from outside this checkout)"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "postgres": server["version"],
        "database": ctx.pg.database,
        "max_connections": server["max_connections"],
        "superuser_reserved": server["superuser_reserved"],
        "sidecar": version,
        "commit": commit,
        "binary": ctx.args.bin,
    }


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.bin = os.path.abspath(args.bin)
    os.makedirs(args.workdir, exist_ok=True)

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    ctx = Context(args)
    server = ctx.pg.server_info()
    log(f"PostgreSQL {server['version']}, max_connections {server['max_connections']}; "
        f"schema {ctx.schema.name}; sidecar {args.bin}")
    for name in database.drop_abandoned_schemas(ctx.pg, SCHEMA_PREFIX):
        log(f"dropped {name}, left behind by a run that was killed")
    started = time.monotonic()
    results = []
    try:
        filler = ctx.encrypt("sk-filler-not-a-real-key")
        key = ctx.encrypt("sk-fleet-0")
        rows = ctx.schema.create(args.rows, filler, key)
        log(f"{rows} credential rows in {ctx.schema.name}.\"LiteLLM_CredentialsTable\"")
        for n in args.size_list:
            for form in args.form_list:
                for notify in args.notify_list:
                    results.append(run_configuration(ctx, server, form, n, notify))
    finally:
        try:
            ctx.schema.drop()
            log(f"\ndropped schema {ctx.schema.name}")
        except Exception as e:  # the report still matters; say what to clean by hand
            log(f"\ncould not drop schema {ctx.schema.name} ({e}); run: "
                f"psql {args.database_url} -c 'DROP SCHEMA {ctx.schema.name} CASCADE'")
    text = report.render(args, machine(ctx, server), results, time.monotonic() - started)
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(text)
    print(text)
    failed = [r for r in results if r["status"] == "failed"]
    if args.smoke:
        # CI: the smoke run must prove the whole path, so anything short of every instance ready
        # and every update served everywhere fails it (the numbers themselves are not checked).
        failed += [r for r in results if r["status"] != "run" or r.get("not_ready")
                   or r.get("exited")
                   or any(u["never"] for u in r.get("updates", []))]
    for r in failed:
        log(f"FAILED: {r['label']}: {r.get('reason') or 'instances not ready, exited or never served an update'}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every instance was stopped and the schema dropped", file=sys.stderr)
        sys.exit(130)
