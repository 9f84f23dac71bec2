//! A database with LiteLLM's real schema: every migration of the `litellm-proxy-extras`
//! package that LiteLLM's pinned version installs (from `target/litellm-venv`, see
//! `scripts/bootstrap.sh`), applied in order, as LiteLLM's `prisma migrate deploy` applies them.
//!
//! LiteLLM's migrations assume one LiteLLM per database (some look constraints up by name
//! without a schema), so each test gets a database of its own, copied from a template database
//! built once per LiteLLM version (`litellm_schema_<version>`), and dropped when the test ends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::{Client, NoTls};

use super::pg::{run_on_the_server, server_url};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A database holding LiteLLM's tables in `public`, dropped on drop.
pub struct LiteLlmDb {
    /// The database's name.
    pub name: String,
    /// A connection to it, for the test's own reads and writes.
    pub client: Client,
}

/// `server_url()` with its database replaced by `database`.
fn url_of(database: &str) -> String {
    let base = server_url();
    let (server, _) = base.rsplit_once('/').expect("a database URL");
    format!("{server}/{database}")
}

async fn connect(database: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&url_of(database), NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL database {database}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// LiteLLM's site-packages in the venv, and the LiteLLM version installed there.
fn site_packages() -> (PathBuf, String) {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/litellm-venv/lib");
    let python = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `bash scripts/bootstrap.sh --postgres`, which makes LiteLLM's venv",
                lib.display()
            )
        })
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .expect("a python directory in the venv");
    let site = python.path().join("site-packages");
    let version = std::fs::read_dir(&site)
        .expect("site-packages")
        .filter_map(Result::ok)
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix("litellm-")?
                .strip_suffix(".dist-info")
                .map(str::to_string)
        })
        .expect("litellm installed in the venv");
    (site, version)
}

/// Builds the template database if it is not there yet (the caller holds the advisory lock,
/// so that concurrent tests and processes build it once), and returns its name.
async fn template(admin: &Client) -> String {
    let (site, version) = site_packages();
    let name = format!("litellm_schema_{}", version.replace(['.', '-'], "_"));
    let exists = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("look for the template")
        .get::<_, i64>(0)
        > 0;
    if !exists {
        let building = format!("{name}_building");
        // One statement per call: several in one would run as one transaction, which
        // CREATE and DROP DATABASE refuse.
        for sql in [
            format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
            format!("CREATE DATABASE {building}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .expect("make the template database");
        }
        let migrations = site.join("litellm_proxy_extras/migrations");
        let mut steps: Vec<PathBuf> = std::fs::read_dir(&migrations)
            .unwrap_or_else(|e| panic!("{}: {e}", migrations.display()))
            .filter_map(Result::ok)
            .map(|e| e.path().join("migration.sql"))
            .filter(|p| p.exists())
            .collect();
        steps.sort();
        let target = connect(&building).await;
        for step in &steps {
            let sql = std::fs::read_to_string(step).expect("read a migration");
            target
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("LiteLLM migration {}: {e}", step.display()));
        }
        drop(target);
        // The dropped connection closes in the background; a database with a session open
        // can be neither renamed nor copied.
        for _ in 0..200 {
            let open: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&building],
                )
                .await
                .expect("sessions on the template")
                .get(0);
            if open == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .expect("name the template");
    }
    name
}

impl LiteLlmDb {
    /// A fresh database with LiteLLM's schema.
    pub async fn new() -> LiteLlmDb {
        let name = format!(
            "sidecar_litellm_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let admin = super::pg::connect().await;
        // One lock orders making the template and copying it (CREATE DATABASE … TEMPLATE fails
        // while another session is copying the same template).
        admin
            .execute(
                "SELECT pg_advisory_lock(hashtext('sidecar litellm schema template'))",
                &[],
            )
            .await
            .expect("lock");
        let template = template(&admin).await;
        let created = admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await;
        admin
            .execute(
                "SELECT pg_advisory_unlock(hashtext('sidecar litellm schema template'))",
                &[],
            )
            .await
            .expect("unlock");
        created.expect("copy the LiteLLM schema template");
        let client = connect(&name).await;
        LiteLlmDb { name, client }
    }

    /// Another connection to the database (for a transaction of the test's own).
    pub async fn connect(&self) -> Client {
        connect(&self.name).await
    }

    /// A config URL for the sidecar.
    pub fn url(&self) -> String {
        format!("{}?sslmode=disable", url_of(&self.name))
    }
}

impl Drop for LiteLlmDb {
    fn drop(&mut self) {
        run_on_the_server(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
