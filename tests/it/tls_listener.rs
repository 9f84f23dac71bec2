//! TLS termination: protocol versions, ALPN, certificate reload without dropping open
//! connections; client certificates (mTLS) with per-route identity allow lists are in
//! [`identities`].

mod identities;

use std::path::Path;
use std::time::Duration;

use crate::support::certs::{alpn_wire, TestCa};
use crate::support::config::{extend, gateway, local_credentials, route};
use crate::support::gateway::start_with_test_credentials;
use crate::support::http::{admin_get, hyper_text};
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{free_port, wait_until_async};
use boring::ssl::{SslConnector, SslFiletype, SslMethod, SslVersion};
use boring::x509::X509;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_boring::SslStream;

struct Tls {
    mock: MockProvider,
    sidecar: SidecarProcess,
    tls_port: u16,
    server_ca: TestCa,
    client_ca: TestCa,
    dir: tempfile::TempDir,
}

/// A sidecar with a plain listener (for readiness) and a TLS one; the fields `tls_extra` returns
/// for the directory holding the test's certificates (`client-ca.pem` among them) go into the
/// listener's `tls` mapping.
async fn start(tls_extra: impl FnOnce(&Path) -> Value) -> Tls {
    let server_ca = TestCa::new();
    let client_ca = TestCa::new();
    let upstream_ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = server_ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.path().join("tls.crt"), cert).expect("write");
    std::fs::write(dir.path().join("tls.key"), key).expect("write");
    std::fs::write(dir.path().join("client-ca.pem"), client_ca.ca_cert_pem()).expect("write");
    let upstream_ca_file = upstream_ca.write_ca_file(dir.path());
    let mock = MockProvider::start_http1(&upstream_ca).await;
    let tls_port = free_port();
    let u = mock.base_url();
    let mut narrow = route("narrow", &u, "openai", "openai-cred");
    narrow["allowed_identities"] = json!(["dns:app-a.internal"]);
    let mut alice = route("alice", &u, "openai", "openai-cred");
    alice["allowed_identities"] = json!(["uri:spiffe://x/alice"]);
    let mut config = gateway(
        json!({ "ca_file": upstream_ca_file }),
        local_credentials(),
        vec![route("open", &u, "openai", "openai-cred"), narrow, alice],
    );
    let mut tls = json!({
        "cert": dir.path().join("tls.crt"),
        "key": dir.path().join("tls.key"),
        "reload_interval": "100ms",
    });
    extend(&mut tls, tls_extra(dir.path()));
    let listeners = config["listeners"].as_array_mut().expect("listeners");
    listeners.push(json!({ "address": format!("127.0.0.1:{tls_port}"), "tls": tls }));
    let sidecar = start_with_test_credentials(&config).await;
    // Readiness was seen on the plain listener; Pingora binds the listeners one after another.
    let tls_bound = wait_until_async(Duration::from_secs(10), || async {
        TcpStream::connect(("127.0.0.1", tls_port)).await.is_ok()
    })
    .await;
    assert!(tls_bound, "the TLS listener never accepted a connection");
    Tls {
        mock,
        sidecar,
        tls_port,
        server_ca,
        client_ca,
        dir,
    }
}

/// Client options: TLS versions, ALPN, an optional client certificate.
#[derive(Default)]
struct Client<'a> {
    max: Option<SslVersion>,
    alpn: Option<&'a [&'a str]>,
    cert: Option<(&'a Path, &'a Path)>,
}

async fn handshake(t: &Tls, c: Client<'_>) -> Result<SslStream<TcpStream>, String> {
    let mut builder = SslConnector::builder(SslMethod::tls()).expect("builder");
    let ca = t.dir.path().join("server-ca.pem");
    std::fs::write(&ca, t.server_ca.ca_cert_pem()).expect("write");
    builder.set_ca_file(&ca).expect("ca");
    builder
        .set_min_proto_version(Some(SslVersion::TLS1))
        .expect("min");
    builder.set_max_proto_version(c.max).expect("max");
    if let Some(alpn) = c.alpn {
        builder.set_alpn_protos(&alpn_wire(alpn)).expect("alpn");
    }
    if let Some((cert, key)) = c.cert {
        builder
            .set_certificate_chain_file(cert)
            .expect("client cert");
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .expect("client key");
    }
    let tcp = TcpStream::connect(("127.0.0.1", t.tls_port))
        .await
        .expect("tcp");
    let config = builder.build().configure().expect("configure");
    let mut stream = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_boring::connect(config, "localhost", tcp),
    )
    .await
    .map_err(|_| "no TLS handshake within 30 s".to_string())?
    .map_err(|e| e.to_string())?;
    // With TLS 1.3 a refused client certificate surfaces on the first read, not the handshake.
    use tokio::io::AsyncWriteExt;
    stream.flush().await.map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends requests over one kept-alive HTTP/1.1 connection.
struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(stream: SslStream<TcpStream>) -> Result<Conn, String> {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Conn(sender))
    }

    async fn post(&mut self, path: &str) -> Result<u16, String> {
        self.post_reading(path).await.map(|(status, _)| status)
    }

    /// Like [`Conn::post`], with the response body.
    async fn post_reading(&mut self, path: &str) -> Result<(u16, String), String> {
        let req = hyper::Request::post(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        // Bounded: an answer that never comes fails the test instead of holding the suite (one
        // full run of the suite under load hung here, with neither end holding the connection).
        let exchange = async {
            let resp = self.0.send_request(req).await.map_err(|e| e.to_string())?;
            hyper_text(resp).await
        };
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .unwrap_or_else(|_| Err(format!("POST {path}: no answer within 30 s")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_and_alpn() {
    let _turn = crate::support::lock::shared().await;
    let t = start(|_| json!({})).await;
    for version in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        let stream = handshake(
            &t,
            Client {
                max: Some(version),
                ..Client::default()
            },
        )
        .await
        .expect("accepted");
        assert_eq!(stream.ssl().version2(), Some(version));
        assert_eq!(
            Conn::open(stream)
                .await
                .expect("http")
                .post("/open/x")
                .await,
            Ok(200)
        );
    }
    let refused = handshake(
        &t,
        Client {
            max: Some(SslVersion::TLS1_1),
            ..Client::default()
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "TLS 1.1 must be refused when the minimum is 1.2"
    );
    let h2 = handshake(
        &t,
        Client {
            alpn: Some(&["h2", "http/1.1"]),
            ..Client::default()
        },
    )
    .await
    .expect("h2");
    assert_eq!(h2.ssl().selected_alpn_protocol(), Some(b"h2".as_slice()));
    let h1 = handshake(
        &t,
        Client {
            alpn: Some(&["http/1.1"]),
            ..Client::default()
        },
    )
    .await
    .expect("h1");
    // Four handshakes completed (1.3, 1.2, h2, h1); the refused 1.1 one is not counted. The
    // client's side of a TLS 1.3 handshake ends before the server has read its Finished, so the
    // last ones may be counted a moment after `connect` returns: wait for the count to settle.
    let handshakes = || async {
        let (_, page) = admin_get(&t.sidecar, "/metrics").await;
        crate::support::metric(&page, "sidecar_downstream_tls_handshakes_total")
    };
    wait_until_async(Duration::from_secs(10), || async {
        handshakes().await >= Some(4.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handshakes().await, Some(4.0));
    assert_eq!(
        h1.ssl().selected_alpn_protocol(),
        Some(b"http/1.1".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_3_only_refuses_1_2() {
    let _turn = crate::support::lock::shared().await;
    let t = start(|_| json!({ "min_version": "1.3" })).await;
    assert!(handshake(
        &t,
        Client {
            max: Some(SslVersion::TLS1_2),
            ..Client::default()
        }
    )
    .await
    .is_err());
    assert!(handshake(&t, Client::default()).await.is_ok());
}

fn served_cert(stream: &SslStream<TcpStream>) -> Vec<u8> {
    stream
        .ssl()
        .peer_certificate()
        .expect("server cert")
        .to_der()
        .expect("der")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_serves_new_connections_and_open_ones_keep_working() {
    let _turn = crate::support::lock::shared().await;
    let t = start(|_| json!({})).await;
    let old_stream = handshake(&t, Client::default()).await.expect("tls");
    let old_cert = served_cert(&old_stream);
    let mut old = Conn::open(old_stream).await.expect("http");
    assert_eq!(old.post("/open/a").await, Ok(200));

    // A corrupted file is refused; the old certificate keeps serving.
    std::fs::write(t.dir.path().join("tls.crt"), "not a certificate").expect("write");
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            t.sidecar.output().contains("cannot reload the certificate")
        })
        .await
    );
    assert_eq!(
        served_cert(&handshake(&t, Client::default()).await.expect("tls")),
        old_cert
    );
    // So is a deleted one (a new error, logged once more).
    std::fs::remove_file(t.dir.path().join("tls.crt")).expect("remove");
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            t.sidecar
                .output()
                .matches("cannot reload the certificate")
                .count()
                >= 2
        })
        .await,
        "{}",
        t.sidecar.output()
    );
    assert_eq!(
        served_cert(&handshake(&t, Client::default()).await.expect("tls")),
        old_cert
    );

    let (cert, key) = t.server_ca.issue(&["localhost", "127.0.0.1"]);
    let new_cert = X509::from_pem(cert.as_bytes())
        .expect("pem")
        .to_der()
        .expect("der");
    std::fs::write(t.dir.path().join("tls.key"), key).expect("write");
    std::fs::write(t.dir.path().join("tls.crt"), cert).expect("write");
    let switched = wait_until_async(Duration::from_secs(10), || async {
        handshake(&t, Client::default())
            .await
            .map(|s| served_cert(&s))
            .ok()
            == Some(new_cert.clone())
    })
    .await;
    assert!(switched, "new connections see the new certificate");
    assert_eq!(
        old.post("/open/b").await,
        Ok(200),
        "the open connection keeps working"
    );
}
