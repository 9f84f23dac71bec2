//! The database CLI against a real PostgreSQL: put → served → rotate-key → still served →
//! restarted with the new key → served; list never shows values; check finds bad rows; and TLS
//! to the database with libpq's `sslmode` values.

use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::config::{self, route, yaml};
use crate::support::http::post;
use crate::support::mock_provider::MockProvider;
use crate::support::pg::{server_url, TestDb};
use crate::support::sidecar_process::SidecarProcess;
use crate::support::wait_until_async;
use serde_json::{json, Value};
use sidecar::credentials::cipher::{decrypt, format_of, Format, Keys};
use sidecar::credentials::Secret;

const OLD: &str = "sk-old-salt";
const NEW: &str = "sk-new-salt";

/// The `credentials` section for `db`'s schema, polled every second.
fn postgres(db: &TestDb) -> Value {
    json!({ "postgres": { "url": TestDb::url(None), "schema": db.schema, "refresh_interval": "1s" } })
}

struct Cli {
    conf: String,
    _dir: tempfile::TempDir,
}

impl Cli {
    /// A config file naming `db`'s schema, for the CLI.
    fn new(db: &TestDb) -> Cli {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("gateway.yaml");
        let config = json!({
            "listeners": [{ "address": "127.0.0.1:1" }],
            "credentials": postgres(db),
            "routes": [{ "name": "r", "path_prefix": "/r", "upstream": "https://x",
                         "provider": "openai", "credential": "c" }],
        });
        std::fs::write(&conf, yaml(&config)).expect("write");
        Cli {
            conf: conf.display().to_string(),
            _dir: dir,
        }
    }

    fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        let mut full = vec!["-c", &self.conf];
        full.extend_from_slice(args);
        let out = SidecarProcess::run_cli(&full, stdin, env);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Sends a request to route `/a`; returns the status and the key the provider saw last.
async fn served(sidecar: &SidecarProcess, mock: &MockProvider) -> (u16, Option<String>) {
    let (status, _) = post(sidecar, "/a/v1/messages").await;
    let key = mock
        .requests()
        .last()
        .and_then(|r| r.header("x-api-key").map(str::to_string));
    (status, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_serve_rotate_and_serve_again() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_ca_file(ca_dir.path());
    let mock = MockProvider::start_http1(&ca).await;
    let db = TestDb::new(true).await;
    let cli = Cli::new(&db);
    let old = [("LITELLM_SALT_KEY", OLD)];

    let (ok, _, err) = cli.run(
        &[
            "credentials",
            "put",
            "prod",
            "--provider",
            "anthropic",
            "--api-version",
            "2023-06-01",
        ],
        Some("sk-ant-cli-123\n"),
        &old,
    );
    assert!(ok, "{err}");
    // The row is what LiteLLM writes: every value encrypted, a uuid id, created_by/updated_by.
    let row = db
        .client
        .query_one(&format!(r#"SELECT credential_id, credential_values, credential_info, created_by, updated_by FROM {}."LiteLLM_CredentialsTable""#, db.schema), &[])
        .await
        .expect("row");
    let id: String = row.get(0);
    assert_eq!(id.len(), 36, "uuid: {id}");
    let values: serde_json::Value = row.get(1);
    let stored = values["api_key"].as_str().expect("api_key");
    assert_eq!(
        format_of(stored),
        Format::Nacl,
        "an empty table gets LiteLLM's default"
    );
    let keys = Keys::derive(&Secret::new(OLD.into()));
    assert_eq!(
        decrypt(stored, &keys).expect("decrypts").expose(),
        "sk-ant-cli-123"
    );
    assert_eq!(
        row.get::<_, serde_json::Value>(2),
        json!({ "custom_llm_provider": "anthropic" })
    );
    assert_eq!(
        (row.get::<_, String>(3), row.get::<_, String>(4)),
        ("sidecar-cli".into(), "sidecar-cli".into())
    );

    let (ok, listing, _) = cli.run(&["credentials", "list"], None, &[]);
    assert!(
        ok && listing.contains("prod") && listing.contains("anthropic"),
        "{listing}"
    );
    assert!(
        !listing.contains("sk-ant") && !listing.contains("v3:gcm"),
        "values never listed"
    );

    let gateway = yaml(&config::gateway(
        json!({ "ca_file": ca_file }),
        postgres(&db),
        vec![route("a", &mock.base_url(), "anthropic", "prod")],
    ));
    let sidecar = SidecarProcess::start_async(&gateway, &[], &old).await;
    assert_eq!(
        served(&sidecar, &mock).await,
        (200, Some("sk-ant-cli-123".into()))
    );

    let both = [("LITELLM_SALT_KEY", OLD), ("LITELLM_NEW_SALT_KEY", NEW)];
    let (ok, out, err) = cli.run(&["credentials", "rotate-key"], None, &both);
    assert!(
        ok && out.contains("re-encrypted 1 credential row(s)"),
        "{out}{err}"
    );
    // The running sidecar still has the old key: every row now fails under it, which it reports
    // as a wrong key and keeps serving its last good snapshot.
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            sidecar.output().contains("probably wrong")
        })
        .await
    );
    assert_eq!(
        served(&sidecar, &mock).await,
        (200, Some("sk-ant-cli-123".into()))
    );
    drop(sidecar);

    let (ok, out, _) = cli.run(
        &["credentials", "check"],
        None,
        &[("LITELLM_SALT_KEY", NEW)],
    );
    assert!(ok && out.contains("1 rows checked, 0 failed"), "{out}");
    let (ok, out, err) = cli.run(&["credentials", "check"], None, &old);
    assert!(
        !ok && out.contains("FAIL credential prod") && err.contains("probably wrong"),
        "{out}{err}"
    );

    let sidecar = SidecarProcess::start_async(&gateway, &[], &[("LITELLM_SALT_KEY", NEW)]).await;
    assert_eq!(
        served(&sidecar, &mock).await,
        (200, Some("sk-ant-cli-123".into()))
    );

    let (ok, _, err) = cli.run(&["credentials", "delete", "prod"], None, &[]);
    assert!(ok, "{err}");
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            served(&sidecar, &mock).await.0 == 503
        })
        .await
    );
    let (ok, _, err) = cli.run(&["credentials", "delete", "prod"], None, &[]);
    assert!(!ok && err.contains("no credential named"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_writes_the_format_the_table_already_uses_and_rotation_keeps_each() {
    let _turn = crate::support::lock::shared().await;
    let db = TestDb::new(true).await;
    let cli = Cli::new(&db);
    let old = [("LITELLM_SALT_KEY", OLD)];
    let put = |name: &str, format: Option<&str>| {
        let mut args = vec!["credentials", "put", name, "--provider", "openai"];
        if let Some(format) = format {
            args.extend(["--format", format]);
        }
        let (ok, _, err) = cli.run(&args, Some("sk-value\n"), &old);
        assert!(ok, "{err}");
        err
    };
    let stored = |name: &'static str| {
        let (client, schema) = (&db.client, db.schema.clone());
        async move {
            let sql = format!(
                r#"SELECT credential_values->>'api_key' FROM {schema}."LiteLLM_CredentialsTable" WHERE credential_name = $1"#
            );
            let row = client.query_one(&sql, &[&name]).await.expect("row");
            format_of(&row.get::<_, String>(0))
        }
    };
    let said = put("first", None);
    assert!(said.contains("format: nacl (LiteLLM's default"), "{said}");
    assert_eq!(stored("first").await, Format::Nacl);
    put("second", Some("v2"));
    put("third", Some("v2"));
    let said = put("fourth", None);
    assert!(said.contains("format: v2 (as 2 of the table's 3"), "{said}");
    assert_eq!(stored("fourth").await, Format::V2);
    put("fifth", Some("v3"));
    assert_eq!(stored("fifth").await, Format::V3);

    let both = [("LITELLM_SALT_KEY", OLD), ("LITELLM_NEW_SALT_KEY", NEW)];
    let (ok, out, err) = cli.run(&["credentials", "rotate-key"], None, &both);
    assert!(ok, "{out}{err}");
    for (name, format) in [
        ("first", Format::Nacl),
        ("fourth", Format::V2),
        ("fifth", Format::V3),
    ] {
        assert_eq!(stored(name).await, format, "{name} keeps its format");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_changes_nothing_when_a_row_does_not_decrypt() {
    let _turn = crate::support::lock::shared().await;
    let db = TestDb::new(true).await;
    let cli = Cli::new(&db);
    let old = [("LITELLM_SALT_KEY", OLD)];
    assert!(
        cli.run(
            &["credentials", "put", "a", "--provider", "openai"],
            Some("sk-a"),
            &old
        )
        .0
    );
    db.put_credential(
        "bad",
        json!({ "api_key": "v3:gcm:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }),
        "openai",
    )
    .await;
    let before = db.client.query_one(&format!(r#"SELECT credential_values::text FROM {}."LiteLLM_CredentialsTable" WHERE credential_name = 'a'"#, db.schema), &[]).await.expect("row").get::<_, String>(0);
    let (ok, _, err) = cli.run(
        &["credentials", "rotate-key"],
        None,
        &[("LITELLM_SALT_KEY", OLD), ("LITELLM_NEW_SALT_KEY", NEW)],
    );
    assert!(
        !ok && err.contains("FAIL credential bad") && err.contains("nothing was changed"),
        "{err}"
    );
    let after = db.client.query_one(&format!(r#"SELECT credential_values::text FROM {}."LiteLLM_CredentialsTable" WHERE credential_name = 'a'"#, db.schema), &[]).await.expect("row").get::<_, String>(0);
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_follows_sslmode() {
    let _turn = crate::support::lock::shared().await;
    let client = crate::support::pg::connect().await;
    let ssl: String = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get(0);
    assert_eq!(
        ssl, "on",
        "this test needs the PostgreSQL server's TLS (Debian's default, snakeoil certificate)"
    );
    let base = server_url();
    let list = |url: String| {
        let out = SidecarProcess::run_cli(
            &["-c", "/nonexistent.yaml", "credentials", "list"],
            None,
            &[("DATABASE_URL", url.as_str())],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `public` may lack LiteLLM's tables: a query error proves the TLS connection was made.
    let connected = |(ok, err): &(bool, String)| *ok || err.contains("cannot list credentials");
    let require = list(format!("{base}?sslmode=require"));
    assert!(connected(&require), "sslmode=require: {}", require.1);
    let wrong_ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = wrong_ca.write_ca_file(dir.path());
    let refused = list(format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ));
    assert!(
        !refused.0 && refused.1.contains("cannot connect"),
        "an untrusted server certificate is refused: {}",
        refused.1
    );
    // The server's own (self-signed) certificate as the root: the chain verifies.
    let cert_file: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("SHOW ssl_cert_file")
        .get(0);
    let verified = list(format!("{base}?sslmode=verify-ca&sslrootcert={cert_file}"));
    assert!(
        connected(&verified),
        "sslmode=verify-ca with the server's certificate: {}",
        verified.1
    );
    let disabled = list(format!("{base}?sslmode=disable"));
    assert!(connected(&disabled), "sslmode=disable: {}", disabled.1);
}
