//! A real PostgreSQL for tests: each [`TestDb`] is its own schema in the `test` database on
//! 127.0.0.1:5432 (override with `SIDECAR_TEST_DATABASE_URL`), holding LiteLLM's two tables with
//! LiteLLM's columns and types, dropped when the test ends. [`PgRelay`] is a TCP relay in front
//! of the server that a test can cut and restore, to make the database unreachable on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("SIDECAR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".to_string())
}

static NEXT_SCHEMA: AtomicU64 = AtomicU64::new(0);

/// A schema with LiteLLM's tables, dropped on drop.
pub struct TestDb {
    /// The schema name.
    pub schema: String,
    /// A connection for the test's own reads and writes.
    pub client: Client,
}

/// LiteLLM's key and team tables, with `{schema}` for the schema (shared with the load
/// benchmark's `benches/load/keys_db.py`).
const KEY_TABLES_SQL: &str = include_str!("../../data/litellm_key_tables.sql");

impl TestDb {
    /// A fresh schema; `with_blocked` adds the `blocked` column newer LiteLLM schemas have.
    pub async fn new(with_blocked: bool) -> TestDb {
        let schema = format!(
            "sidecar_test_{}_{}",
            std::process::id(),
            NEXT_SCHEMA.fetch_add(1, Ordering::SeqCst)
        );
        let client = connect().await;
        let blocked = if with_blocked {
            ",\n  blocked BOOLEAN NOT NULL DEFAULT false"
        } else {
            ""
        };
        client
            .batch_execute(&format!(
                r#"DROP SCHEMA IF EXISTS {schema} CASCADE;
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
  updated_by TEXT NOT NULL{blocked}
);
{key_tables}"#,
                key_tables = KEY_TABLES_SQL.replace("{schema}", &schema),
            ))
            .await
            .expect("create the test schema and LiteLLM's tables");
        TestDb { schema, client }
    }

    /// Inserts (or replaces) a credential row as stored.
    pub async fn put_credential(&self, name: &str, values: Value, provider: &str) {
        let sql = format!(
            r#"INSERT INTO {}."LiteLLM_CredentialsTable" (credential_id, credential_name, credential_values, credential_info, created_by, updated_by)
               VALUES ($1, $1, $2, $3, 'test', 'test')
               ON CONFLICT (credential_name) DO UPDATE SET credential_values = EXCLUDED.credential_values, updated_at = now()"#,
            self.schema
        );
        let info = serde_json::json!({ "custom_llm_provider": provider });
        self.client
            .execute(&sql, &[&name, &values, &info])
            .await
            .expect("insert credential row");
    }

    /// Inserts a model row as stored.
    pub async fn put_model(&self, id: &str, name: &str, params: Value) {
        let sql = format!(
            r#"INSERT INTO {}."LiteLLM_ProxyModelTable" (model_id, model_name, litellm_params, created_by, updated_by)
               VALUES ($1, $2, $3, 'test', 'test')"#,
            self.schema
        );
        self.client
            .execute(&sql, &[&id, &name, &params])
            .await
            .expect("insert model row");
    }

    /// Runs SQL in this schema (`{schema}` is replaced).
    pub async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(&sql.replace("{schema}", &self.schema))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A config URL for the sidecar, through `relay` when given.
    pub fn url(relay: Option<&PgRelay>) -> String {
        match relay {
            Some(r) => format!(
                "postgresql://postgres@127.0.0.1:{}/test?sslmode=disable",
                r.port
            ),
            None => format!("{}?sslmode=disable", server_url()),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        run_on_the_server(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

/// Runs `sql` on the test server from a fresh thread and runtime (for `Drop`, which may run
/// inside a test's runtime); a failure is ignored (the thing may already be gone).
pub fn run_on_the_server(sql: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            if let Ok((client, conn)) = tokio_postgres::connect(&server_url(), NoTls).await {
                tokio::spawn(conn);
                let _ = client.batch_execute(&sql).await;
            }
        });
    })
    .join();
}

/// A connection to the test server.
pub async fn connect() -> Client {
    let (client, connection) = tokio_postgres::connect(&server_url(), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is required for this test: {e}",
                server_url()
            )
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A TCP relay to the test server that can be cut (every open connection closed, new ones
/// refused), frozen (connections stay open, no byte moves: a database that stops answering
/// mid-query) and restored.
pub struct PgRelay {
    /// The relay's port on 127.0.0.1.
    pub port: u16,
    down: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl PgRelay {
    /// Starts the relay.
    pub async fn start() -> PgRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let down = down.clone();
            let frozen = frozen.clone();
            let connections = connections.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let frozen = frozen.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect("127.0.0.1:5432").await {
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::join!(
                                forward(client_read, server_write, &frozen),
                                forward(server_read, client_write, &frozen)
                            );
                        }
                    });
                    connections.lock().expect("lock").push(task);
                }
            }
        });
        PgRelay {
            port,
            down,
            frozen,
            connections,
            accept,
        }
    }

    /// Stops moving bytes (both ways, every connection, new ones too) without closing anything.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again after [`PgRelay::freeze`].
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, holding each chunk while `frozen`.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                while frozen.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for PgRelay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
