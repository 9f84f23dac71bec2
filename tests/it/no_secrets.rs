//! No secret leaves the process except in the injected upstream header: a full traffic mix
//! (every provider style, client credentials of every kind, client tokens right, wrong and
//! missing, every sidecar error, a stream, an upstream error, a reload) at the most verbose log
//! level, then every credential value and client token is looked for in stdout, stderr, the
//! admin pages and every response body.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::certs::TestCa;
use crate::support::config::yaml;
use crate::support::gateway::{credentials_yaml, gateway_config, CLIENT_SECRETS, KEYS, SALT_KEY};
use crate::support::http::admin_get;
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{free_port, sha256_hex, wait_until, wait_until_async};
use serde_json::{json, Value};

/// The client token the sidecar accepts (the config holds only its hash).
const TOKEN: &str = "tok-CLIENT-TOKEN-7777";

/// One request of the mix: path, client token, extra headers.
type Step = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

/// Every value that must never be printed.
fn secrets() -> Vec<&'static str> {
    let mut all: Vec<&str> = KEYS.iter().map(|(_, key, _)| *key).collect();
    all.extend(CLIENT_SECRETS);
    all.extend([TOKEN, "tok-WRONG-8888", SALT_KEY]);
    all
}

/// Stops the sidecar and checks its whole output: its own trace lines were on, and no secret
/// appears. Returns the output.
fn stopped_output_without_secrets(sidecar: &mut SidecarProcess) -> String {
    assert!(sidecar.stop().success());
    let output = sidecar.output();
    assert!(
        output.contains("request head read"),
        "the sidecar's own trace lines are on"
    );
    for secret in secrets() {
        assert!(!output.contains(secret), "{secret} in the process output");
    }
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_or_token_appears_in_logs_metrics_or_error_bodies() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let hash = sha256_hex(TOKEN);
    let mut config = gateway_config(&mock.base_url(), &ca.write_ca_file(ca_dir.path()));
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("2s");
    config["access"] =
        json!({ "client_tokens": { "header": "x-sidecar-token", "sha256": [hash] } });
    config["log"] = json!({ "level": "trace", "format": "json" });
    let mut sidecar = SidecarProcess::start_async(
        &yaml(&config),
        &[("credentials.yaml", &credentials_yaml())],
        &[("LITELLM_SALT_KEY", SALT_KEY), ("RUST_LOG", "trace")],
    )
    .await;
    let client = reqwest::Client::new();
    let base = sidecar.base_url();
    let mut bodies = Vec::new();
    let send = |path: &str, token: Option<&str>, extra: &[(&str, &str)]| {
        let mut req = client
            .post(format!("{base}{path}?key={}", CLIENT_SECRETS[3]))
            .header("Authorization", format!("Bearer {}", CLIENT_SECRETS[0]))
            .header("x-api-key", CLIENT_SECRETS[1])
            .header("api-key", CLIENT_SECRETS[2])
            .header("x-goog-api-key", CLIENT_SECRETS[3])
            .header("X-Custom-Key", CLIENT_SECRETS[4])
            .body(r#"{"model":"m"}"#);
        if let Some(token) = token {
            req = req.header("x-sidecar-token", token);
        }
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("body"))
        }
    };
    let mut statuses = Vec::new();
    let mix: [Step; 12] = [
        ("/openai/chat/completions", Some(TOKEN), &[]),
        ("/anthropic/v1/messages", Some(TOKEN), &[]),
        ("/azure/chat/completions", Some(TOKEN), &[]),
        ("/gemini/models/x:generateContent", Some(TOKEN), &[]),
        ("/custom/v1/complete", Some(TOKEN), &[]),
        (
            "/openai/chat/completions",
            Some(TOKEN),
            &[("x-mock-sse-events", "3"), ("x-mock-sse-delay-ms", "10")],
        ),
        (
            "/openai/chat/completions",
            Some(TOKEN),
            &[("x-mock-status", "500")],
        ),
        ("/missing/x", Some(TOKEN), &[]),
        ("/broken/x", Some(TOKEN), &[]),
        ("/nowhere", Some(TOKEN), &[]),
        ("/openai/chat/completions", None, &[]),
        ("/openai/chat/completions", Some("tok-WRONG-8888"), &[]),
    ];
    for (path, token, extra) in mix {
        let (status, body) = send(path, token, extra).await;
        statuses.push(status);
        bodies.push(body);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 500, 503, 503, 404, 401, 403],
        "{bodies:?}"
    );
    assert_eq!(mock.requests().len(), 7, "refused requests sent nothing");

    // A reload (credential sources re-read), then the admin pages.
    sidecar.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || sidecar
            .output()
            .contains("config reload: applied"))
        .await
    );
    for page in ["/metrics", "/readyz", "/healthz", "/config"] {
        let (status, body) = admin_get(&sidecar, page).await;
        assert!(
            status == 200 || page == "/readyz",
            "{page}: {status} {body}"
        );
        bodies.push(body);
    }
    let output = stopped_output_without_secrets(&mut sidecar);
    for secret in secrets() {
        for body in &bodies {
            assert!(
                !body.contains(secret),
                "{secret} in a response body: {body}"
            );
        }
    }
    // The access lines are JSON, one per request, with their fields.
    let access: Vec<Value> = output
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).expect("access line is JSON"))
        .collect();
    assert_eq!(access.len(), 12, "{output}");
    assert_eq!(access[0]["route"], "openai");
    assert_eq!(access[0]["status"], 200);
    assert!(access.iter().all(|a| a["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:"))));
}

/// Raw request bytes with the client's secrets in them and a broken header line: the parser
/// refuses the head (Pingora used to log it whole at DEBUG).
fn malformed_head() -> String {
    format!(
        "POST /openai/chat/completions HTTP/1.1\r\nHost: sidecar\r\nAuthorization: Bearer {}\r\n\
         x-sidecar-token: {TOKEN}\r\nx-api-key: {}\r\nthis is not a header\r\n\r\n",
        CLIENT_SECRETS[0], CLIENT_SECRETS[1]
    )
}

/// Writes `bytes` on `stream` and reads the answer until the sidecar closes (bounded).
async fn exchange(mut stream: impl AsyncRead + AsyncWrite + Unpin, bytes: &[u8]) -> String {
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_over_http1_and_http2_leave_no_client_secret_in_the_log() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let (cert, key) = ca.issue(&["localhost"]);
    std::fs::write(dir.path().join("tls.crt"), cert).expect("write");
    std::fs::write(dir.path().join("tls.key"), key).expect("write");
    let hash = sha256_hex(TOKEN);
    let mut config = gateway_config(&mock.base_url(), &ca.write_ca_file(dir.path()));
    let tls_port = free_port();
    config["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(json!({
            "address": format!("127.0.0.1:{tls_port}"),
            "tls": { "cert": dir.path().join("tls.crt"), "key": dir.path().join("tls.key") },
        }));
    config["access"] =
        json!({ "client_tokens": { "header": "x-sidecar-token", "sha256": [hash] } });
    config["log"] = json!({ "level": "trace" });
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("2s");
    let mut sidecar = SidecarProcess::start_async(
        &yaml(&config),
        &[("credentials.yaml", &credentials_yaml())],
        &[("LITELLM_SALT_KEY", SALT_KEY), ("RUST_LOG", "trace")],
    )
    .await;
    let tls_up = wait_until_async(Duration::from_secs(10), || async {
        TcpStream::connect(("127.0.0.1", tls_port)).await.is_ok()
    })
    .await;
    assert!(tls_up, "the TLS listener never accepted");
    let tls = |alpn: &'static [&'static str]| {
        let ca = &ca;
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", tls_port))
                .await
                .expect("tcp");
            let config = ca.client_connector(alpn).configure().expect("tls config");
            tokio_boring::connect(config, "localhost", tcp)
                .await
                .expect("TLS handshake")
        }
    };

    // HTTP/1, plain and over TLS: the parser refuses the head with 400.
    let plain = TcpStream::connect(sidecar.listen_addr())
        .await
        .expect("tcp");
    let answer = exchange(plain, malformed_head().as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = exchange(tls(&["http/1.1"]).await, malformed_head().as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // HTTP/2: a body shorter than its content-length (a malformed message), a header list over
    // the limits, and a path the sidecar refuses; each with the client's secrets in its head.
    let (mut h2, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls(&["h2"]).await),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let request = |path: &str, extra: &[(&str, String)]| {
        let mut builder = hyper::Request::post(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {}", CLIENT_SECRETS[0]))
            .header("x-sidecar-token", TOKEN)
            .header("x-api-key", CLIENT_SECRETS[1]);
        for (name, value) in extra {
            builder = builder.header(*name, value);
        }
        builder
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .expect("request")
    };
    let mut outcomes = Vec::new();
    let cases = [
        request("/openai/x", &[("content-length", "9".to_string())]),
        request("/openai/x", &[("x-filler", "f".repeat(100_000))]),
        request("/openai/%2e%2e/x", &[]),
    ];
    for case in cases {
        outcomes.push(match h2.send_request(case).await {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(e) => e.to_string(),
        });
    }
    assert_eq!(outcomes[2], "400", "{outcomes:?}");
    assert_eq!(
        mock.requests().len(),
        0,
        "nothing was forwarded: {outcomes:?}"
    );
    drop(h2);
    stopped_output_without_secrets(&mut sidecar);
}
