-- LiteLLM's key and team tables (the columns the sidecar reads, as LiteLLM's schema.prisma
-- declares them), in schema {schema}. Read by the integration tests (tests/it/support/pg.rs)
-- and the load benchmark (benches/load/keys_db.py), with {schema} replaced.
CREATE TABLE {schema}."LiteLLM_TeamTable" (
  team_id TEXT NOT NULL PRIMARY KEY,
  team_alias TEXT,
  max_budget DOUBLE PRECISION,
  spend DOUBLE PRECISION NOT NULL DEFAULT 0.0,
  models TEXT[],
  blocked BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE {schema}."LiteLLM_VerificationToken" (
  token TEXT NOT NULL PRIMARY KEY,
  key_name TEXT,
  key_alias TEXT,
  spend DOUBLE PRECISION NOT NULL DEFAULT 0.0,
  expires TIMESTAMP(3),
  models TEXT[],
  user_id TEXT,
  team_id TEXT,
  blocked BOOLEAN,
  tpm_limit BIGINT,
  rpm_limit BIGINT,
  max_budget DOUBLE PRECISION,
  created_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP
);
