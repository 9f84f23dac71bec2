//! The plain requests many tests make: one call, the status and the body back. Tests that need
//! headers, streams, raw bytes or their own TLS client build their requests themselves.

use super::sidecar_process::SidecarProcess;

/// POSTs `{}` to `path` on the sidecar's proxy listener.
pub async fn post(sidecar: &SidecarProcess, path: &str) -> (u16, String) {
    let url = format!("{}{path}", sidecar.base_url());
    send(reqwest::Client::new().post(url).body("{}")).await
}

/// GETs `path` (`/healthz`, `/readyz`, `/metrics`) on the sidecar's admin listener.
pub async fn admin_get(sidecar: &SidecarProcess, path: &str) -> (u16, String) {
    get(&format!("{}{path}", sidecar.admin_url())).await
}

/// GETs `url`.
pub async fn get(url: &str) -> (u16, String) {
    send(reqwest::Client::new().get(url)).await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("response body"))
}
