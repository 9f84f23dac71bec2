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


class KeysSchema:
    """`<SCHEMA_PREFIX><pid>` in the database at `url`: LiteLLM's four tables and one key
    (`LITELLM_KEY`: no models list, budget, limits or team, so only the key itself is checked,
    as on any credential route)."""

    def __init__(self, url):
        self.url = url
        self.pg = database.Postgres(url)
        self.name = f"{SCHEMA_PREFIX}{os.getpid()}"

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
