//! The plain requests many tests make: one call, the status and the body back. Tests that need
//! headers, streams or their own TLS client build their requests themselves; [`status_line`]
//! sends raw bytes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The tokens of `kind` (`prompt`, `completion`) that `metrics` (the admin's `/metrics` text)
/// counts for `model`, with `key` (a key alias) when given.
pub fn tokens_counted(metrics: &str, model: &str, key: Option<&str>, kind: &str) -> Option<u64> {
    let (model, kind) = (format!("model=\"{model}\""), format!("kind=\"{kind}\""));
    let key = key.map(|k| format!("key=\"{k}\""));
    metrics
        .lines()
        .filter(|l| l.starts_with("sidecar_tokens_total{"))
        .filter(|l| l.contains(&model) && l.contains(&kind))
        .find(|l| key.as_ref().is_none_or(|k| l.contains(k)))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
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

/// The status and body text of a response from a hyper client connection (tests that drive
/// their own TLS or HTTP/2 client), or the error reading the body.
pub async fn hyper_text(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `bytes` as they are on a fresh connection and reads until the sidecar closes it (at
/// most 5 s); returns the status line (or `<closed>`).
pub async fn status_line(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines().next().unwrap_or("<closed>").to_string()
}
