//! Fan-out against a real PostgreSQL: a serving sidecar holds the only database connection and
//! watchers take the rows from it (over TLS), each receiving only its grant, as ciphertext; a
//! watcher keeps its last rows when the server goes away.

use std::time::{Duration, Instant};

use crate::support::certs::TestCa;
use crate::support::config::{self, yaml};
use crate::support::db_gateway::*;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{free_port, sha256_hex, wait_until_async};
use serde_json::{json, Value};
use sidecar::credentials::cipher::Format;

pub(crate) const TOKEN_A: &str = "watch-token-team-a-0123456789";
const TOKEN_B: &str = "watch-token-team-b-9876543210";

/// The route both sides serve: `/mine`, with the credential `mine`.
pub(crate) fn mine_route(e: &Env) -> Value {
    credential_route("mine", "mine", &e.mock.base_url(), "openai")
}

/// A database URL whose connections are counted apart from every other test's.
pub(crate) fn counted_url(db: &TestDb) -> (String, String) {
    let app = format!("fanout_{}", db.schema);
    (format!("{}&application_name={app}", TestDb::url(None)), app)
}

/// The serving sidecar's config: the database, the fan-out listener (TLS when `tls` names the
/// certificate files), two watchers with one credential each.
pub(crate) fn server_config(e: &Env, db: &TestDb, url: &str, fanout_port: u16, tls: bool) -> Value {
    let mut fanout = json!({
        "address": format!("127.0.0.1:{fanout_port}"),
        "watchers": [
            { "name": "team-a", "token_sha256": sha256_hex(TOKEN_A), "credentials": ["mine"] },
            { "name": "team-b", "token_sha256": sha256_hex(TOKEN_B), "credentials": ["theirs"] },
        ],
    });
    if tls {
        fanout["tls"] = json!({ "cert": "fanout.crt", "key": "fanout.key" });
    }
    let mut config = gateway(e, db, url, "1h", true, vec![mine_route(e)]);
    config["credentials"]["postgres"]["notify_jitter"] = json!("50ms");
    config["fanout"] = fanout;
    config
}

/// `db install-notify` with the serving config (less its fan-out section, whose certificate
/// files exist only in the sidecar's own directory).
pub(crate) fn install_notify(config: &Value) {
    let mut config = config.clone();
    config.as_object_mut().expect("an object").remove("fanout");
    db_command(&config, "install-notify");
}

async fn connections(db: &TestDb, application_name: &str) -> i64 {
    db.client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .expect("count connections")
        .get(0)
}

pub(crate) async fn seed(db: &TestDb) {
    for (name, key) in [("mine", "sk-mine-v1"), ("theirs", "sk-theirs-v1")] {
        db.put_credential(name, json!({ "api_key": enc(key, Format::Nacl) }), "openai")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_serve_their_keys_from_one_database_connection_and_keep_them_when_the_server_goes()
{
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&db).await;
    let (url, app) = counted_url(&db);
    let fanout_port = free_port();
    let server_conf = server_config(&e, &db, &url, fanout_port, true);
    install_notify(&server_conf);
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["localhost"]);
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let fanout_ca = ca.write_ca_file(ca_dir.path()).display().to_string();
    let mut server = SidecarProcess::start_async(
        &yaml(&server_conf),
        &[("fanout.crt", &cert), ("fanout.key", &key)],
        &[("LITELLM_SALT_KEY", SALT), ("RUST_LOG", "trace")],
    )
    .await;

    let watcher_conf = |token_env: &str| {
        config::gateway(
            json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
            json!({ "watch": {
                "url": format!("https://localhost:{fanout_port}"), "ca_file": fanout_ca,
                "token_env": token_env, "wait": "20s" } }),
            vec![mine_route(&e)],
        )
    };
    let env_a = [
        ("LITELLM_SALT_KEY", SALT),
        ("TEAM_TOKEN", TOKEN_A),
        ("RUST_LOG", "trace"),
    ];
    let watchers = [
        SidecarProcess::start_async(&yaml(&watcher_conf("TEAM_TOKEN")), &[], &env_a).await,
        SidecarProcess::start_async(&yaml(&watcher_conf("TEAM_TOKEN")), &[], &env_a).await,
    ];
    for watcher in &watchers {
        assert_eq!(
            call(&e, watcher, "/mine/x", "authorization").await,
            (200, Some("Bearer sk-mine-v1".to_string())),
            "{}",
            watcher.output()
        );
    }
    // The watchers hold no database connection; the server holds exactly one (LISTEN included).
    assert_eq!(connections(&db, &app).await, 1, "{}", server.output());

    db.put_credential(
        "mine",
        json!({ "api_key": enc("sk-mine-v2", Format::Nacl) }),
        "openai",
    )
    .await;
    let updated = Instant::now();
    for watcher in &watchers {
        let took = wait_for_key(&e, watcher, "/mine/x", "authorization", "Bearer sk-mine-v2").await;
        assert!(took.is_some(), "no new key: {}", watcher.output());
    }
    println!("UPDATE → both watchers serve it: {:?}", updated.elapsed());
    assert_eq!(connections(&db, &app).await, 1, "{}", server.output());

    // A watcher whose grant does not cover its routes is refused and says so.
    let env_b = [("LITELLM_SALT_KEY", SALT), ("TEAM_TOKEN", TOKEN_B)];
    let refused =
        SidecarProcess::start_async(&yaml(&watcher_conf("TEAM_TOKEN")), &[], &env_b).await;
    assert_eq!(call(&e, &refused, "/mine/x", "authorization").await.0, 503);
    assert!(
        refused
            .wait_for_output("not granted to watcher team-b: credential mine")
            .await,
        "{}",
        refused.output()
    );

    // At trace level, neither side logs the token, the salt key or a provider key.
    for output in [server.output(), watchers[0].output(), watchers[1].output()] {
        for secret in [TOKEN_A, SALT, "sk-mine-v1", "sk-mine-v2", "sk-theirs-v1"] {
            assert!(!output.contains(secret), "{secret} in a log:\n{output}");
        }
    }

    // The server goes away: the watchers keep serving the last rows they received.
    server.stop();
    for watcher in &watchers {
        assert!(
            watcher
                .wait_for_output("keeping the last rows received")
                .await,
            "{}",
            watcher.output()
        );
        assert_eq!(
            call(&e, watcher, "/mine/x", "authorization").await,
            (200, Some("Bearer sk-mine-v2".to_string()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_authenticates_grants_least_privilege_and_answers_only_changes() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&db).await;
    let (url, _) = counted_url(&db);
    let fanout_port = free_port();
    let conf = server_config(&e, &db, &url, fanout_port, false);
    install_notify(&conf);
    let server =
        SidecarProcess::start_async(&yaml(&conf), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    let base = format!("http://127.0.0.1:{fanout_port}/v1/snapshot");
    let get = |query: &str, token: Option<&str>, tag: Option<&str>| {
        let mut request = e.client.get(format!("{base}?{query}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        request.send()
    };
    let ready = wait_until_async(DEADLINE, || async {
        let r = get("credential=mine", Some(TOKEN_A), None).await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "the fan-out endpoint never answered 200");

    for token in [None, Some("not-a-known-token")] {
        let r = get("credential=mine", token, None).await.expect("request");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers().get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }
    let r = get("credential=mine&credential=theirs", Some(TOKEN_A), None)
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("credential theirs") && !body.contains("sk-"),
        "{body}"
    );

    let r = get("credential=mine", Some(TOKEN_A), None)
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let tag = r.headers()["etag"].to_str().expect("ascii").to_string();
    let body = r.text().await.expect("body");
    let rows: Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> = rows["credentials"]
        .as_array()
        .expect("credentials")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["mine"], "{body}");
    assert!(
        !body.contains("sk-mine") && !body.contains("sk-theirs"),
        "plaintext on the wire: {body}"
    );

    // Nothing changed for this watcher: 304 after the wait.
    let r = get("credential=mine&wait=1", Some(TOKEN_A), Some(&tag))
        .await
        .expect("request");
    assert_eq!(r.status(), 304);
    // Another watcher's row changes: still nothing for this one.
    let waiting = tokio::spawn(get("credential=mine&wait=3", Some(TOKEN_A), Some(&tag)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.put_credential(
        "theirs",
        json!({ "api_key": enc("sk-theirs-v2", Format::Nacl) }),
        "openai",
    )
    .await;
    assert_eq!(waiting.await.expect("join").expect("request").status(), 304);
    // Its own row changes: the held request answers with the new rows.
    let waiting = tokio::spawn(get("credential=mine&wait=60", Some(TOKEN_A), Some(&tag)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed = Instant::now();
    db.put_credential(
        "mine",
        json!({ "api_key": enc("sk-mine-v2", Format::Nacl) }),
        "openai",
    )
    .await;
    let r = waiting.await.expect("join").expect("request");
    println!(
        "UPDATE → held watch request answered: {:?}",
        changed.elapsed()
    );
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().expect("ascii"), tag);

    // Revoked by a reload while a request waits: the next change answers 401, not rows.
    let tag = r.headers()["etag"].to_str().expect("ascii").to_string();
    let waiting = tokio::spawn(get("credential=mine&wait=60", Some(TOKEN_A), Some(&tag)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    config::edit_file(&server.dir().join("gateway.yaml"), |config| {
        let team_a = &mut config["fanout"]["watchers"][0];
        assert_eq!(team_a["token_sha256"], sha256_hex(TOKEN_A));
        team_a["token_sha256"] = json!(sha256_hex("a-token-nobody-has"));
    });
    server.signal("HUP");
    assert!(
        server.wait_for_output("config reload: applied").await,
        "{}",
        server.output()
    );
    db.put_credential(
        "mine",
        json!({ "api_key": enc("sk-mine-v3", Format::Nacl) }),
        "openai",
    )
    .await;
    let r = waiting.await.expect("join").expect("request");
    assert_eq!(r.status(), 401, "a revoked watcher received rows");
    let r = get("credential=mine", Some(TOKEN_A), None)
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_503_while_the_fanout_listener_is_not_bound() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&db).await;
    // Something else holds the fan-out port: the service cannot bind it.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let config = server_config(&e, &db, &TestDb::url(None), port, false);
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    let (status, body) = crate::support::http::admin_get(&sidecar, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let report: Value = serde_json::from_str(&body).expect("JSON");
    let unbound = report["unbound_listeners"].to_string();
    assert!(unbound.contains(&format!("127.0.0.1:{port}")), "{body}");
    assert_eq!(
        report["missing"],
        json!([]),
        "only the listener is missing: {body}"
    );
    drop(holder);
}
