//! Measures what credential refresh costs with many rows: the time (and memory) to load N
//! credential rows from LiteLLM's table, decryption included, and the time of a refresh that
//! finds nothing changed, in both change-detection modes: the full hash of both tables (no
//! version table) and the version row `db install-notify` adds. Each is a client-side round
//! trip over loopback: an upper bound on the database's own time.
//!
//! `cargo run --release --example refresh_cost -- [ROWS] [DATABASE_URL]`
//! (default 10000 rows, `postgresql://postgres@127.0.0.1:5432/test`). Uses its own schema and
//! drops it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sidecar::config::{Config, DEFAULT_DB_CONNECT_TIMEOUT};
use sidecar::credentials::cipher::{encrypt, Format, Keys};
use sidecar::credentials::postgres::PostgresSource;
use sidecar::credentials::source::CredentialSource;
use sidecar::credentials::Secret;
use sidecar::db::litellm::install_notify;
use sidecar::db::session::Session;
use sidecar::db::Database;
use sidecar::upstream::Targets;

const SALT: &str = "refresh-cost-salt";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .map_or(Ok(10_000), |a| a.parse())
        .map_err(|e| format!("ROWS: {e}"))?;
    let url = args
        .next()
        .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/test".to_string());
    let schema = format!("sidecar_refresh_cost_{}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(connection);

    let keys = Keys::derive(&Secret::new(SALT.into()));
    eprintln!("creating {rows} credential rows in schema {schema} …");
    client
        .batch_execute(&format!(
            r#"CREATE SCHEMA {schema};
               CREATE TABLE {schema}."LiteLLM_CredentialsTable" (credential_id TEXT PRIMARY KEY, credential_name TEXT UNIQUE NOT NULL,
                 credential_values JSONB NOT NULL, credential_info JSONB, created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
                 created_by TEXT NOT NULL, updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, updated_by TEXT NOT NULL);
               CREATE TABLE {schema}."LiteLLM_ProxyModelTable" (model_id TEXT PRIMARY KEY, model_name TEXT NOT NULL,
                 litellm_params JSONB NOT NULL, model_info JSONB, created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
                 created_by TEXT NOT NULL, updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, updated_by TEXT NOT NULL,
                 blocked BOOLEAN NOT NULL DEFAULT false);"#
        ))
        .await
        .map_err(|e| format!("create schema: {e}"))?;
    let insert = format!(
        r#"INSERT INTO {schema}."LiteLLM_CredentialsTable" (credential_id, credential_name, credential_values, credential_info, created_by, updated_by)
           SELECT 'id-' || n, 'cred-' || n, jsonb_build_object('api_key', $1::text, 'api_base', $2::text), '{{"custom_llm_provider":"openai"}}', 'bench', 'bench'
           FROM generate_series(1, $3::int) n"#
    );
    let api_key = encrypt(
        "sk-bench-0123456789abcdef0123456789abcdef",
        Format::V3,
        &keys,
    );
    let api_base = encrypt("https://api.openai.com/v1", Format::V3, &keys);
    client
        .execute(&insert, &[&api_key, &api_base, &(rows as i32)])
        .await
        .map_err(|e| format!("insert: {e}"))?;

    let config = Config::from_yaml(
        "listeners: [{ address: \"127.0.0.1:1\" }]\nroutes: [{ name: a, path_prefix: /a, model: m }]\n",
        std::path::Path::new("."),
        &|_| None,
    )
    .map_err(|e| format!("{e:?}"))?;
    let targets = Arc::new(Targets::standalone(&config.upstream).map_err(|e| e.to_string())?);
    let db = Database::new(
        &Secret::new(format!("{url}?sslmode=disable")),
        &schema,
        None,
        DEFAULT_DB_CONNECT_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    let session = Session::new(db, None, Duration::from_secs(30), Arc::default());
    let hour = Duration::from_secs(3600);
    let source = PostgresSource::new(
        std::sync::Arc::new(session),
        Some(keys),
        targets,
        hour,
        None,
    );
    source.fingerprint().await.map_err(|e| e.to_string())?; // connect

    let rss_before = rss_kib();
    let mut loads = Vec::new();
    let mut kept = None;
    let mut rss_first = 0;
    for i in 0..5 {
        let started = Instant::now();
        let outcome = source.load().await.map_err(|e| e.to_string())?;
        loads.push(started.elapsed());
        if outcome.credentials.len() != rows {
            return Err(format!(
                "loaded {} of {rows} rows",
                outcome.credentials.len()
            ));
        }
        kept = Some(outcome);
        if i == 0 {
            rss_first = rss_kib();
        }
    }
    let rss_after = rss_kib();
    let mut unchanged_full = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        source.fingerprint().await.map_err(|e| e.to_string())?;
        unchanged_full.push(started.elapsed());
    }
    install_notify(&client, &schema, "refresh_cost")
        .await
        .map_err(|e| e.to_string())?;
    source.fingerprint().await.map_err(|e| e.to_string())?; // finds the version table (one last full check)
    let mut unchanged_version = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        source.fingerprint().await.map_err(|e| e.to_string())?;
        unchanged_version.push(started.elapsed());
    }
    drop(kept);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .map_err(|e| format!("drop schema: {e}"))?;

    println!("rows: {rows}");
    println!(
        "full load (read + decrypt), median of 5: {:?}",
        median(loads)
    );
    println!(
        "unchanged refresh, full hash of both tables, median of 20: {:?}",
        median(unchanged_full)
    );
    println!(
        "unchanged refresh, version row (after db install-notify), median of 20: {:?}",
        median(unchanged_version)
    );
    println!(
        "resident memory growth after the first load (snapshot held): {} KiB",
        rss_first.saturating_sub(rss_before)
    );
    println!(
        "resident memory growth after 5 loads (one snapshot held): {} KiB",
        rss_after.saturating_sub(rss_before)
    );
    Ok(())
}
