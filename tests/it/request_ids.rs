//! Request ids: the client's sane `x-request-id` (or a new one) goes upstream, comes back, and
//! is in the access record with the provider's own id; `traceparent` passes through.

use crate::support::gateway::start_openai_only;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_forwarded_returned_and_logged_with_the_providers() {
    let _turn = crate::support::lock::shared().await;
    let (mock, sidecar, _dir) = start_openai_only(|_| {}).await;
    let client = reqwest::Client::new();
    let url = format!("{}/openai/chat/completions", sidecar.base_url());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = client
        .post(&url)
        .header("x-request-id", "client-req-42")
        .header("traceparent", traceparent)
        .header("x-mock-provider-id", "request-id: req_provider_7")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-req-42");
    assert_eq!(response.headers()["x-sidecar-request-id"], "client-req-42");
    let seen = mock.requests().pop().expect("sent");
    assert_eq!(seen.header("x-request-id"), Some("client-req-42"));
    assert_eq!(seen.header("traceparent"), Some(traceparent));
    let logged = "request_id=client-req-42 upstream_request_id=req_provider_7";
    assert!(
        sidecar.wait_for_output(logged).await,
        "{}",
        sidecar.output()
    );

    // No id, or one that is not sane: a new UUID, the same upstream and back. A provider that
    // answers with its own x-request-id keeps it (OpenAI's SDK reads it as OpenAI's id).
    for sent in [None, Some("has spaces in it")] {
        let mut request = client
            .post(&url)
            .header("x-mock-provider-id", "x-request-id: req_openai_1")
            .body("{}");
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.expect("request");
        let ours = response.headers()["x-sidecar-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(uuid::Uuid::parse_str(&ours).is_ok(), "{ours}");
        assert_eq!(response.headers()["x-request-id"], "req_openai_1");
        let seen = mock.requests().pop().expect("sent");
        assert_eq!(seen.header("x-request-id"), Some(ours.as_str()));
    }

    // The sidecar's own answers carry the id too.
    let response = client
        .post(format!("{}/nowhere", sidecar.base_url()))
        .header("x-request-id", "lost-1")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.headers()["x-request-id"], "lost-1");
}
