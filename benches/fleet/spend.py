"""Fleet spend benchmark: what writing spend back to LiteLLM costs the database, for N sidecars
sharing a fixed total request rate, in two forms:

- direct: every sidecar reads the database and writes its own spend (`credentials.postgres`,
  `access.litellm_keys`, `spend`);
- fan-out: one serving sidecar reads the database and writes; N watchers take their keys from
  it (`credentials.watch`) and send it their spend (`POST /v1/spend`).

Every sidecar serves a `model:` route to a local provider (`bench_provider`) with LiteLLM keys;
the driver sends `--rate` requests per second in all, spread evenly over the N sidecars, for
`--seconds`, after `--warmup`. Measured over the window: spend write statements per second (each
flush is one statement that records its batch id in "Sidecar_SpendBatches", so the new ids are
the statements), all committed transactions per second on the database (reads included), the
database server's CPU, and the spend-log rows written. LiteLLM's schema comes from the template
database the integration tests build (`litellm_schema_<version>`).

    python3 benches/fleet/spend.py --bin target/release/sidecar \
        --provider target/release/examples/bench_provider --sizes 1,50,200 --rate 1000
"""

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time

import database
import fleet

KEYS = 10


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--provider", required=True, help="the bench_provider example binary")
    p.add_argument("--workdir", default="target/bench-fleet-spend")
    p.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--template", default="litellm_schema_1_106_2")
    p.add_argument("--sizes", default="1,50,200")
    p.add_argument("--forms", default="direct,fanout")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second in all")
    p.add_argument("--seconds", type=float, default=30.0, help="measured window")
    p.add_argument("--warmup", type=float, default=12.0)
    p.add_argument("--flush", default="10s", help="spend.flush_interval of every sidecar")
    p.add_argument("--max-direct", type=int, default=60,
                   help="largest N run in the direct form (one connection per sidecar)")
    p.add_argument("--base-port", type=int, default=24000)
    return p.parse_args(argv)


T0 = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - T0:6.1f} s] {message}", flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = os.path.abspath(args.workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.admin = database.Postgres(args.server_url)
        self.dbname = f"sidecar_spend_bench_{os.getpid()}"
        base = args.server_url.rsplit("/", 1)[0]
        self.db_url = f"{base}/{self.dbname}"
        self.db = database.Postgres(self.db_url)
        self.ports = fleet.Ports(args.base_port)
        self.token = secrets.token_urlsafe(24)
        self.env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.env.update(LITELLM_SALT_KEY="spend-bench-salt-" + secrets.token_hex(8),
                        SIDECAR_WATCH_TOKEN=self.token)
        self.provider = None

    def encrypt(self, value):
        done = subprocess.run([self.args.bin, "credentials", "encrypt"], input=value,
                              capture_output=True, text=True, env=self.env, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return done.stdout.strip()

    def setup(self):
        self.admin.psql(f'CREATE DATABASE "{self.dbname}" TEMPLATE "{self.args.template}"')
        port, stats = self.ports.take(), self.ports.take()
        self.ca = os.path.join(self.workdir, "provider-ca.pem")
        self.provider_log = open(os.path.join(self.workdir, "provider.log"), "wb")
        self.provider = subprocess.Popen(
            [self.args.provider, "--listen", f"p=127.0.0.1:{port}", "--stats",
             f"127.0.0.1:{stats}", "--ca-out", self.ca, "--key", "sk-provider"],
            stdout=self.provider_log, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        params = json.dumps({"model": self.encrypt("openai/gpt-4o"),
                             "api_key": self.encrypt("sk-provider"),
                             "api_base": self.encrypt(f"https://127.0.0.1:{port}/v1")})
        keys = ",".join(
            f"(encode(sha256('sk-bench-{k}'::bytea), 'hex'), 'bench-{k}', 'u1', 't1')"
            for k in range(KEYS))
        self.db.psql(
            f"""INSERT INTO "LiteLLM_ProxyModelTable"
                  (model_id, model_name, litellm_params, created_by, updated_by)
                VALUES ('d-gpt', 'gpt', {database.literal(params)}::jsonb, 'bench', 'bench');
                INSERT INTO "LiteLLM_TeamTable" (team_id, members_with_roles)
                  VALUES ('t1', '[{{"user_id": "u1", "role": "user"}}]');
                INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('u1');
                INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, user_id, team_id)
                  VALUES {keys};""")
        conf = self.config_file("db-admin", self.postgres_yaml())
        done = subprocess.run([self.args.bin, "-c", conf, "db", "install-notify"],
                              capture_output=True, text=True, env=self.env, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)

    def teardown(self):
        if self.provider:
            self.provider.terminate()
            self.provider.wait(10)
        self.admin.psql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def postgres_yaml(self):
        return (f'  postgres: {{ url: "{self.db_url}?sslmode=disable", schema: public, '
                f"refresh_interval: 30s, listen: true }}\n")

    def config_text(self, directory, port, admin_port, credentials, extra=""):
        return f"""\
server: {{ threads: 1, grace_period: 1s, graceful_shutdown_timeout: 1s,
          pid_file: {directory}/sidecar.pid, upgrade_sock: {directory}/upgrade.sock }}
listeners: [{{ address: "127.0.0.1:{port}" }}]
admin: {{ address: "127.0.0.1:{admin_port}" }}
log: {{ level: info }}
upstream: {{ ca_file: {self.ca} }}
access: {{ litellm_keys: true }}
spend: {{ flush_interval: {self.args.flush} }}
credentials:
{credentials}routes:
  - {{ name: gpt, path_prefix: /gpt, strip_prefix: true, model: gpt }}
{extra}"""

    def config_file(self, name, credentials, extra=""):
        directory = os.path.join(self.workdir, name)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "sidecar.yaml")
        with open(path, "w") as f:
            f.write(self.config_text(directory, 9, 10, credentials, extra))
        return path

    def instance(self, workdir, name, credentials, extra=""):
        inst = fleet.Instance(name, workdir, self.ports, "bench")
        with open(inst.config, "w") as f:
            f.write(self.config_text(inst.dir, inst.port, inst.admin_port, credentials, extra))
        return inst

    def counts(self):
        row = self.db.rows(
            'SELECT (SELECT count(*) FROM "Sidecar_SpendBatches"), '
            '(SELECT count(*) FROM "LiteLLM_SpendLogs"), '
            f"(SELECT xact_commit FROM pg_stat_database WHERE datname = '{self.dbname}')")
        return [int(v) for v in row[0]]


async def one_request(conn, port, key):
    reader, writer = conn
    body = b'{"model":"gpt","messages":[{"role":"user","content":"hi"}]}'
    writer.write(b"POST /gpt/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
                 b"authorization: Bearer %s\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (port, key, len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(instances, rate, seconds):
    """`rate` requests per second spread round-robin over `instances` for `seconds`, each
    sidecar over at most a few keep-alive connections (a request due while all of its sidecar's
    are busy is skipped, not queued: the rate served is what is reported); returns
    (sent, ok, failed)."""
    most = max(2, 32 // len(instances) + 1)
    pools = {i.port: [] for i in instances}
    opened = {i.port: 0 for i in instances}
    sent = ok = failed = 0
    tasks = set()

    async def run(port, key):
        nonlocal ok, failed
        conn = pools[port].pop() if pools[port] else None
        try:
            if conn is None:
                opened[port] += 1
                conn = await asyncio.open_connection("127.0.0.1", port)
            status = await one_request(conn, port, key)
            ok += status == 200
            failed += status != 200
            pools[port].append(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            failed += 1
            opened[port] -= 1

    start = time.monotonic()
    due = 0
    while (elapsed := time.monotonic() - start) < seconds:
        while due < rate * elapsed:
            port = instances[due % len(instances)].port
            key = b"sk-bench-%d" % (due % KEYS)
            due += 1
            if not pools[port] and opened[port] >= most:
                continue
            sent += 1
            task = asyncio.ensure_future(run(port, key))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks, return_exceptions=True)
    for conns in pools.values():
        for _, writer in conns:
            writer.close()
    return sent, ok, failed


def run_configuration(bench, form, n):
    args = bench.args
    label = f"{form}-n{n}"
    workdir = os.path.join(bench.workdir, label)
    log(f"== {label}")
    instances, clients = [], []
    if form == "direct":
        clients = [bench.instance(workdir, f"d{k:03d}", bench.postgres_yaml()) for k in range(n)]
        instances = clients
    else:
        fanout_port = bench.ports.take()
        serving = bench.instance(
            workdir, "serving", bench.postgres_yaml(),
            f'fanout: {{ address: "127.0.0.1:{fanout_port}", watchers: [{{ name: fleet, '
            f'token_sha256: "{hashlib.sha256(bench.token.encode()).hexdigest()}", '
            f'models: [gpt], litellm_keys: all }}] }}\n')
        instances = [serving]
        if fleet.start_batched([serving], args.bin, bench.env, 1, 60, log):
            raise RuntimeError("serving instance not ready: " + serving.last_log_line())
        clients = [bench.instance(workdir, f"w{k:03d}",
                                  f'  watch: {{ url: "http://127.0.0.1:{fanout_port}", '
                                  f"wait: 30s }}\n") for k in range(n)]
        instances += clients
    try:
        not_ready = fleet.start_batched([i for i in instances if i.proc is None], args.bin,
                                        bench.env, 25, 90, log)
        if not_ready:
            raise RuntimeError(f"{len(not_ready)} not ready: {not_ready[0].last_log_line()}")
        loop = asyncio.new_event_loop()
        rate = args.rate
        log(f"  warm-up {args.warmup:.0f} s at {rate:.0f} req/s over {n} sidecars")
        loop.run_until_complete(load(clients, rate, args.warmup))
        postmaster = bench.admin.postmaster_pid()
        cpu = database.ServerCpu(postmaster)
        before = bench.counts()
        fleet_before = {i.name: i.cpu_ms() for i in instances}
        cpu.start()
        started = time.monotonic()
        sent, ok, failed = loop.run_until_complete(load(clients, rate, args.seconds))
        window = time.monotonic() - started
        window_cpu, spent, ran = cpu.stop()
        after = bench.counts()
        fleet_ms = sum(i.cpu_ms() - fleet_before[i.name] for i in instances if i.alive())
        loop.close()
        result = {
            "form": form, "n": n, "window_s": window, "sent": sent, "ok": ok,
            "failed": failed, "req_per_s": ok / window,
            "spend_statements_per_s": (after[0] - before[0]) / window,
            "log_rows_per_s": (after[1] - before[1]) / window,
            "xact_per_s": (after[2] - before[2]) / window,
            "db_cpu_ms_per_s": sum(spent.values()) / window_cpu,
            "db_sched_ms_per_s": sum(ran.values()) / window_cpu,
            "fleet_cpu_ms_per_s": fleet_ms / window,
        }
        log("  " + json.dumps({k: round(v, 2) if isinstance(v, float) else v
                               for k, v in result.items()}))
        return result
    finally:
        fleet.stop_all(instances)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.bin = os.path.abspath(args.bin)
    args.provider = os.path.abspath(args.provider)
    bench = Bench(args)
    results = []
    try:
        bench.setup()
        for n in [int(s) for s in args.sizes.split(",") if s]:
            for form in [f for f in args.forms.split(",") if f]:
                if form == "direct" and n > args.max_direct:
                    log(f"== direct-n{n}: not run ({n} connections; --max-direct "
                        f"{args.max_direct})")
                    continue
                results.append(run_configuration(bench, form, n))
    finally:
        bench.teardown()
    print("\n| form | N | req/s served | spend write statements/s | all transactions/s "
          "| spend-log rows/s | database CPU ms/s | sidecars' CPU ms/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['form']} | {r['n']} | {r['req_per_s']:.0f} | "
              f"{r['spend_statements_per_s']:.2f} | {r['xact_per_s']:.1f} | "
              f"{r['log_rows_per_s']:.0f} | {r['db_cpu_ms_per_s']:.0f} | "
              f"{r['fleet_cpu_ms_per_s']:.0f} |")
    with open(os.path.join(bench.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
