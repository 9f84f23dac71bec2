//! Upstream TLS: providers are verified; per-endpoint CA bundles and the explicitly named
//! `insecure_skip_verify` (warned about at every start); the minimum TLS version; upstreams
//! given by IP address (verified against IP SANs, sent without SNI).

use crate::support::certs::TestCa;
use crate::support::config::{extend, gateway, local_credentials, route};
use crate::support::gateway::start_with_test_credentials;
use crate::support::http::post;
use crate::support::mock_provider::MockProvider;
use serde_json::{json, Value};

/// A sidecar whose `upstream` section trusts `trusted_ca` and has the fields of `upstream_extra`,
/// with route `/a` to `mock`; returns the status and body of one request, and the sidecar's output.
async fn run(
    upstream_extra: Value,
    mock: &MockProvider,
    trusted_ca: &TestCa,
) -> (u16, String, String) {
    run_to(upstream_extra, &mock.base_url(), trusted_ca).await
}

/// [`run`] with the route's upstream `url` (e.g. the mock by IP address).
async fn run_to(upstream_extra: Value, url: &str, trusted_ca: &TestCa) -> (u16, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut upstream = json!({ "ca_file": trusted_ca.write_ca_file(dir.path()) });
    extend(&mut upstream, upstream_extra);
    let routes = vec![route("a", url, "openai", "openai-cred")];
    let config = gateway(upstream, local_credentials(), routes);
    let sidecar = start_with_test_credentials(&config).await;
    let (status, body) = post(&sidecar, "/a/x").await;
    // The request's access line comes after every line before it: once it is out, they are.
    assert!(
        sidecar.wait_for_output("route=a").await,
        "{}",
        sidecar.output()
    );
    (status, body, sidecar.output())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_providers_are_refused_unless_their_endpoint_says_otherwise() {
    let _turn = crate::support::lock::shared().await;
    let provider_ca = TestCa::new();
    let other_ca = TestCa::new();
    let mock = MockProvider::start_http1(&provider_ca).await;

    let (status, body, _) = run(json!({}), &mock, &other_ca).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_tls_failed"), "{body}");
    assert!(
        mock.requests().is_empty(),
        "nothing sent to an unverified provider"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint_ca = provider_ca.write_ca_file(dir.path());
    let endpoint = json!({ "endpoints": [{ "host": "localhost", "ca_file": endpoint_ca }] });
    let (status, body, _) = run(endpoint, &mock, &other_ca).await;
    assert_eq!(status, 200, "the endpoint's own CA bundle: {body}");

    let (status, body, logs) = run(
        json!({ "endpoints": [{ "host": "localhost", "insecure_skip_verify": true }] }),
        &mock,
        &other_ca,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(logs.contains("certificate verification is OFF"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_certificate_for_another_host_name_is_refused() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let mock = MockProvider::start_with_cert_names(&ca, &["api.other-provider.example"]).await;
    let (status, body, _) = run(json!({}), &mock, &ca).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_tls_failed"), "{body}");
    assert!(
        mock.requests().is_empty(),
        "nothing sent to a host-name mismatch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimum_tls_version_is_enforced_before_anything_is_sent() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let modern = MockProvider::start_http1(&ca).await;
    let (status, body, _) = run(json!({ "min_tls_version": "1.3" }), &modern, &ca).await;
    assert_eq!(
        status, 200,
        "a TLS 1.3 provider passes a 1.3 minimum: {body}"
    );

    let legacy = MockProvider::start_with_max_tls(&ca, boring::ssl::SslVersion::TLS1_2).await;
    let (status, body, _) = run(json!({}), &legacy, &ca).await;
    assert_eq!(status, 200, "TLS 1.2 passes the default minimum: {body}");
    let before = legacy.requests().len();
    let (status, body, _) = run(
        json!({ "endpoints": [{ "host": "localhost", "min_tls_version": "1.3" }] }),
        &legacy,
        &ca,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_tls_version"), "{body}");
    assert_eq!(legacy.requests().len(), before, "nothing sent over TLS 1.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_client_certificate_is_presented_to_providers_that_require_one() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let mock = MockProvider::start_requiring_client_cert(&ca, &client_ca).await;
    let (status, body, _) = run(json!({}), &mock, &ca).await;
    assert_eq!(
        status, 502,
        "no client certificate: the provider refuses: {body}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = client_ca.issue(&["sidecar.internal"]);
    std::fs::write(dir.path().join("client.crt"), cert).expect("write");
    std::fs::write(dir.path().join("client.key"), key).expect("write");
    let endpoint = json!({ "endpoints": [{
        "host": "localhost",
        "client_cert": dir.path().join("client.crt"),
        "client_key": dir.path().join("client.key"),
    }] });
    let (status, body, _) = run(endpoint, &mock, &ca).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_upstream_is_verified_against_its_ip_san_and_sent_no_sni() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let mock = MockProvider::start_with_cert(&cert, &key).await;
    let (status, body, _) = run_to(json!({}), &mock.ip_url(), &ca).await;
    assert_eq!(status, 200, "{body}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-openai-SECRET-0001")
    );
    assert_eq!(mock.server_names(), [None], "no SNI for an IP literal");

    // A host name is still sent as SNI (the recording works).
    let by_name = MockProvider::start_http1(&ca).await;
    let (status, body, _) = run(json!({}), &by_name, &ca).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(by_name.server_names(), [Some("localhost".to_string())]);
}

/// One request to `mock` by IP with `trusted_ca` configured: a refusal naming the upstream
/// and `reason`, and nothing sent to the provider.
async fn assert_ip_refused(mock: &MockProvider, trusted_ca: &TestCa, reason: &str) {
    let (status, body, _) = run_to(json!({}), &mock.ip_url(), trusted_ca).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_tls_failed"), "{body}");
    let upstream = format!("upstream {}: certificate verification failed", mock.addr());
    assert!(body.contains(&upstream), "{body}");
    assert!(body.contains(reason), "{reason:?} in {body}");
    assert!(mock.requests().is_empty(), "nothing sent: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_upstream_whose_certificate_names_only_a_host_is_an_ip_mismatch() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["localhost"]);
    let mock = MockProvider::start_with_cert(&cert, &key).await;
    assert_ip_refused(&mock, &ca, "IP address mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_upstream_from_an_untrusted_ca_is_refused_as_an_unknown_issuer() {
    let _turn = crate::support::lock::shared().await;
    let (ca, other) = (TestCa::new(), TestCa::new());
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let mock = MockProvider::start_with_cert(&cert, &key).await;
    assert_ip_refused(&mock, &other, "unable to get local issuer certificate").await;

    // An endpoint's own CA bundle is the trust for its IP.
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint_ca = ca.write_ca_file(dir.path());
    let endpoint = json!({ "endpoints": [{ "host": "127.0.0.1", "ca_file": endpoint_ca }] });
    let (status, body, _) = run_to(endpoint, &mock.ip_url(), &other).await;
    assert_eq!(status, 200, "the endpoint's own CA bundle: {body}");

    let insecure = json!({ "endpoints": [{ "host": "127.0.0.1", "insecure_skip_verify": true }] });
    let (status, body, _) = run_to(insecure, &mock.ip_url(), &other).await;
    assert_eq!(status, 200, "verification off for the endpoint: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_upstream_with_an_expired_certificate_is_refused_as_expired() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let (cert, key) = ca.issue_expired(&["127.0.0.1"]);
    let mock = MockProvider::start_with_cert(&cert, &key).await;
    assert_ip_refused(&mock, &ca, "certificate has expired").await;
}
