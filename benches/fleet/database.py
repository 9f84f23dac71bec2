"""The database side of the fleet benchmark: `psql` as a subprocess for every statement, the
benchmark's own schema with LiteLLM's two tables, and what the server pays (connections in
`pg_stat_activity`, CPU of the server's processes from `/proc`).

Nothing here connects to the database except through `psql` (its backends are tagged with
`application_name = sidecar-fleet-driver`, so they are never counted as the fleet's).
"""

import os
import subprocess
import time
import urllib.parse

DRIVER_APP_NAME = "sidecar-fleet-driver"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CREDENTIALS = '"LiteLLM_CredentialsTable"'
MODELS = '"LiteLLM_ProxyModelTable"'
ROUTE_CREDENTIAL = "fleet-key"

# The column lists of LiteLLM's tables, as tests/it/support/pg.rs creates them (with `blocked`).
TABLES_SQL = """\
CREATE SCHEMA {schema};
CREATE TABLE {schema}."LiteLLM_CredentialsTable" (
  credential_id TEXT NOT NULL PRIMARY KEY,
  credential_name TEXT NOT NULL UNIQUE,
  credential_values JSONB NOT NULL,
  credential_info JSONB,
  created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  created_by TEXT NOT NULL,
  updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_by TEXT NOT NULL
);
CREATE TABLE {schema}."LiteLLM_ProxyModelTable" (
  model_id TEXT NOT NULL PRIMARY KEY,
  model_name TEXT NOT NULL,
  litellm_params JSONB NOT NULL,
  model_info JSONB,
  created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  created_by TEXT NOT NULL,
  updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_by TEXT NOT NULL,
  blocked BOOLEAN NOT NULL DEFAULT false
);
"""


def literal(text):
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


class Postgres:
    """One PostgreSQL server reached through `psql` with `url`."""

    def __init__(self, url):
        self.url = url
        parsed = urllib.parse.urlsplit(url)
        self.port = parsed.port or 5432
        self.database = parsed.path.lstrip("/") or "postgres"
        self.env = dict(os.environ, PGAPPNAME=DRIVER_APP_NAME, PGCONNECT_TIMEOUT="10")

    def psql(self, sql, timeout=120):
        """Runs `sql` (one or more statements, in one transaction when several) and returns the
        unaligned, tuples-only output; raises with psql's message on failure."""
        argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                "-d", self.url, "-f", "-"]
        done = subprocess.run(argv, input=sql, capture_output=True, text=True,
                              timeout=timeout, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()[-600:]}")
        return done.stdout

    def rows(self, sql, timeout=120):
        return [line.split("\t") for line in self.psql(sql, timeout).splitlines() if line]

    def scalar(self, sql, timeout=120):
        return self.psql(sql, timeout).strip()

    def server_info(self):
        version = self.scalar("SHOW server_version")
        max_connections = int(self.scalar("SHOW max_connections"))
        reserved = int(self.scalar("SHOW superuser_reserved_connections"))
        return {"version": version, "max_connections": max_connections,
                "superuser_reserved": reserved}

    def activity(self):
        """Every client backend of the server: pid, database, application_name, client port."""
        out = []
        for pid, datname, app, port in self.rows(
                "SELECT pid, coalesce(datname, ''), coalesce(application_name, ''), "
                "coalesce(client_port, -1) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend'"):
            out.append({"pid": int(pid), "datname": datname, "app": app, "port": int(port)})
        return out

    def postmaster_pid(self):
        """The server's main process, when it runs on this machine (else None): the parent of
        its checkpointer, else the first line of `postmaster.pid` in its data directory."""
        pid = self.scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        if pid:
            try:
                parent = _stat_fields(int(pid))[1]
                return parent
            except OSError:
                pass
        try:
            data_dir = self.scalar("SHOW data_directory")
            with open(os.path.join(data_dir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError, RuntimeError):
            return None


class Schema:
    """The benchmark's schema: LiteLLM's tables, `rows` credential rows, dropped at the end."""

    def __init__(self, pg, name):
        self.pg = pg
        self.name = name

    def create(self, rows, filler_ciphertext, key_ciphertext):
        """`rows - 1` filler rows sharing one ciphertext, plus `fleet-key` with its own."""
        fillers = max(rows - 1, 0)
        info = literal('{"custom_llm_provider": "openai"}')
        self.pg.psql(
            f"DROP SCHEMA IF EXISTS {self.name} CASCADE;\n"
            + TABLES_SQL.format(schema=self.name)
            + f"INSERT INTO {self.name}.{CREDENTIALS} (credential_id, credential_name, "
              f"credential_values, credential_info, created_by, updated_by) "
              f"SELECT 'filler-' || g, 'filler-' || g, "
              f"jsonb_build_object('api_key', {literal(filler_ciphertext)}), {info}::jsonb, "
              f"'fleet-bench', 'fleet-bench' FROM generate_series(1, {fillers}) AS g;\n"
              f"INSERT INTO {self.name}.{CREDENTIALS} (credential_id, credential_name, "
              f"credential_values, credential_info, created_by, updated_by) VALUES "
              f"('{ROUTE_CREDENTIAL}', '{ROUTE_CREDENTIAL}', "
              f"jsonb_build_object('api_key', {literal(key_ciphertext)}), {info}::jsonb, "
              f"'fleet-bench', 'fleet-bench');\n"
              f"ANALYZE {self.name}.{CREDENTIALS};\n",
            timeout=600)
        return int(self.pg.scalar(f"SELECT count(*) FROM {self.name}.{CREDENTIALS}"))

    def update_key(self, ciphertext):
        """Writes a new `fleet-key` value. Returns (wall time just before psql started, wall
        time when it returned): the second minus the first is psql's own cost (process start,
        connect, commit), included in every propagation time measured from the first."""
        sql = (f"UPDATE {self.name}.{CREDENTIALS} SET credential_values = "
               f"jsonb_build_object('api_key', {literal(ciphertext)}), updated_at = now(), "
               f"updated_by = 'fleet-bench' WHERE credential_name = '{ROUTE_CREDENTIAL}';")
        started = time.time()
        self.pg.psql(sql, timeout=60)
        return started, time.time()

    def drop(self):
        self.pg.psql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE;", timeout=120)

    def has_triggers(self):
        n = self.pg.scalar(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {literal(self.name)} AND NOT t.tgisinternal")
        return int(n)


def drop_abandoned_schemas(pg, prefix):
    """Drops `<prefix><pid>` schemas whose driver process no longer runs (a run that was
    killed with SIGKILL); returns their names."""
    dropped = []
    for (name,) in pg.rows("SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                           + literal(prefix.replace("_", "\\_") + "%")):
        pid = name[len(prefix):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            pg.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE;")
            dropped.append(name)
    return dropped


def _stat_fields(pid):
    """(state, ppid, utime, stime) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return rest[0], int(rest[1]), int(rest[11]), int(rest[12])


def server_processes(postmaster):
    """The postmaster and every process it started (backends, checkpointer, walwriter, …)."""
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _stat_fields(int(entry))[1] == postmaster:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_ms(pids):
    """pid → (utime + stime from /proc/PID/stat, run time from /proc/PID/schedstat), both in
    milliseconds, for each pid still alive. The first is what `top` and `ps` count, in clock
    ticks (10 ms); the second is the scheduler's own nanosecond sum, for loads so light that
    whole ticks hide them."""
    out = {}
    for pid in pids:
        try:
            _, _, utime, stime = _stat_fields(pid)
            with open(f"/proc/{pid}/schedstat") as f:
                ran_ns = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue
        out[pid] = ((utime + stime) * 1000 / CLOCK_TICKS, ran_ns / 1e6)
    return out


class ServerCpu:
    """CPU the database server spends between `start()` and `stop()`: every process of the
    server alive at either end. A process born during the window counts whole (its CPU was all
    spent in the window); one that ended during the window is lost (backends here live long)."""

    def __init__(self, postmaster):
        self.postmaster = postmaster

    def start(self):
        self._t0 = time.monotonic()
        self._before = cpu_ms(server_processes(self.postmaster))

    def stop(self):
        """(seconds, pid → ms of utime + stime, pid → ms of scheduler run time)."""
        seconds = time.monotonic() - self._t0
        after = cpu_ms(server_processes(self.postmaster))
        zero = (0.0, 0.0)
        ticks = {pid: ms[0] - self._before.get(pid, zero)[0] for pid, ms in after.items()}
        ran = {pid: ms[1] - self._before.get(pid, zero)[1] for pid, ms in after.items()}
        return seconds, ticks, ran
