"""LiteLLM virtual keys for `compare.py --litellm-keys`: a fresh schema in a local PostgreSQL
holding LiteLLM's four tables (credentials and models, empty: the route's credential stays in the
local store; keys and teams, with one key), reached through `psql` as the fleet benchmark does
(`benches/fleet/database.py`), and dropped at the end of the run.
"""

import hashlib
import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fleet"))
import database  # noqa: E402  (benches/fleet/database.py: psql, LiteLLM's first two tables)

# The key every path's requests carry (`Authorization: Bearer …`): the keys sidecar checks it,
# the others strip it like any client credential, so every sidecar gets the same bytes.
LITELLM_KEY = "sk-bench-litellm-virtual-key"
WRONG_KEY = "sk-bench-litellm-wrong-key"
KEY_ALIAS = "bench-key"
SCHEMA_PREFIX = "sidecar_bench_keys_"

# LiteLLM's key and team tables: the file the integration tests create them from too.
KEY_TABLES_SQL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                   "tests", "data", "litellm_key_tables.sql")


def key_tables_sql(schema):
    """The key and team tables' DDL, in `schema`."""
    with open(KEY_TABLES_SQL_FILE) as f:
        return f.read().replace("{schema}", schema)


def digest(key):
    """What LiteLLM stores in `token`: the key's SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def litellm_migrations():
    """LiteLLM's own migrations (`litellm-proxy-extras`, in `target/litellm-venv`, made by
    `scripts/bootstrap.sh`), in the order `prisma migrate deploy` applies them."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target",
                        "litellm-venv", "lib")
    pythons = [d for d in os.listdir(root) if d.startswith("python")] if os.path.isdir(root) else []
    if not pythons:
        raise RuntimeError(f"{root}: no LiteLLM venv; run `bash scripts/bootstrap.sh --postgres`")
    migrations = os.path.join(root, pythons[0], "site-packages", "litellm_proxy_extras",
                              "migrations")
    steps = sorted(os.path.join(migrations, d, "migration.sql") for d in os.listdir(migrations))
    return [step for step in steps if os.path.exists(step)]


class LiteLlmDatabase:
    """`sidecar_bench_litellm_<pid>`: a database of its own with LiteLLM's whole schema (every
    migration applied, so the spend writer's statement lands as on a real LiteLLM database) and
    the one key, for `compare.py --spend-off`. LiteLLM's migrations assume one LiteLLM per
    database, hence a database rather than a schema."""

    def __init__(self, url):
        self.admin = database.Postgres(url)
        self.name = f"sidecar_bench_litellm_{os.getpid()}"
        self.schema = "public"
        base, _, _ = url.partition("?")
        query = url[len(base):]
        self.url = base.rsplit("/", 1)[0] + "/" + self.name + query
        self.pg = database.Postgres(self.url)

    def create(self):
        self.admin.psql(f"DROP DATABASE IF EXISTS {self.name};")
        self.admin.psql(f"CREATE DATABASE {self.name};")
        steps = litellm_migrations()
        for step in steps:
            with open(step) as f:
                self.pg.psql(f.read())
        self.pg.psql(f'INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, spend, blocked) '
                     f"VALUES ({database.literal(digest(LITELLM_KEY))}, "
                     f"{database.literal(KEY_ALIAS)}, 0, false);")
        print(f"{self.name}: LiteLLM's schema ({len(steps)} migrations) and one key", flush=True)
        return self

    def spend_rows(self):
        """How many spend-log rows the sidecars wrote, and the key's spend counter's requests."""
        return int(self.pg.scalar('SELECT count(*) FROM "LiteLLM_SpendLogs"'))

    def drop(self):
        self.admin.psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE);")


class KeysSchema:
    """`<SCHEMA_PREFIX><pid>` in the database at `url`: LiteLLM's four tables and one key
    (`LITELLM_KEY`: no models list, budget, limits or team, so only the key itself is checked,
    as on any credential route)."""

    def __init__(self, url):
        self.url = url
        self.pg = database.Postgres(url)
        self.name = f"{SCHEMA_PREFIX}{os.getpid()}"
        self.schema = self.name

    def create(self):
        database.drop_abandoned_schemas(self.pg, SCHEMA_PREFIX)
        self.pg.psql(
            f"DROP SCHEMA IF EXISTS {self.name} CASCADE;\n"
            + database.TABLES_SQL.format(schema=self.name)
            + key_tables_sql(self.name)
            + f'INSERT INTO {self.name}."LiteLLM_VerificationToken" (token, key_alias, spend, '
              f"blocked) VALUES ({database.literal(digest(LITELLM_KEY))}, "
              f"{database.literal(KEY_ALIAS)}, 0, false);\n")
        n = self.pg.scalar(f'SELECT count(*) FROM {self.name}."LiteLLM_VerificationToken"')
        if n != "1":
            raise RuntimeError(f"{self.name}: expected one key row, found {n}")
        return self

    def drop(self):
        self.pg.psql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE;")
