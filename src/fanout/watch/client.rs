//! One watch round trip to one server address, every step under a deadline of its own.
//!
//! Pingora's `Connector::get_http_session` does not apply `PeerOptions::read_timeout`, so no
//! timeout of Pingora's is relied on here: connect (TCP and TLS), writing the request, the
//! response head (the requested wait plus [`ANSWER_SLACK`]) and each body read are each wrapped
//! in `tokio::time::timeout`, and the whole body has a deadline too. The answer's size is
//! checked against `max_answer_bytes` from its `Content-Length` before any of the body is read,
//! and again while reading (chunked answers). A server's error text reaches the log truncated
//! and with control characters escaped (so is the text of every error, which may quote what the
//! server sent; see [`super::failure`]); the token is never part of a message.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::header;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::{HttpPeer, PeerOptions};
use pingora::utils::tls::CertKey;

use super::failure::{Failure, Problem};
use super::WatchError;
use crate::config::{FanoutServer, WatchSettings};
use crate::credentials::Secret;
use crate::upstream::provider_tls::{load_ca_bundle, load_client_cert};

/// Deadline for the TCP connection and the TLS handshake together.
pub(super) const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline for writing the request.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Added to the requested wait: a server that has not sent the response head by then is hung.
pub const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Deadline for each read of the body.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline for the whole body.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// A new snapshot from a server, not parsed yet.
pub(super) struct RawAnswer {
    pub tag: String,
    pub body: BytesMut,
}

/// One address of one configured server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub server: Arc<FanoutServer>,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// `https://name:9443 (10.0.0.5:9443)`, or the URL alone when it is the address.
    pub fn describe(&self) -> String {
        let literal = self.server.host.parse::<std::net::IpAddr>().is_ok();
        if literal {
            format!("fan-out server {}", self.server.url)
        } else {
            format!("fan-out server {} ({})", self.server.url, self.addr)
        }
    }
}

/// Makes the requests.
pub(super) struct WatchClient {
    pub connector: Connector,
    pub settings: WatchSettings,
    pub options: PeerOptions,
    pub client_cert: Option<Arc<CertKey>>,
    pub token: Secret,
    pub path_and_query: String,
}

/// `future` under `deadline`; on expiry a `timeout` failure saying what did not finish.
async fn within<T>(
    deadline: Duration,
    step: &'static str,
    server: &str,
    future: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| Err(Failure::new(server, Problem::Timeout { deadline, step })))
}

impl WatchClient {
    /// A client of `settings.servers` (`upstream_ca` trusted when `settings.ca_file` is unset)
    /// whose polls ask for `path_and_query`. Errors name the missing token variable or an
    /// unreadable certificate file.
    pub fn new(
        settings: &WatchSettings,
        upstream_ca: Option<&std::path::PathBuf>,
        path_and_query: String,
    ) -> Result<WatchClient, WatchError> {
        let token = std::env::var(&settings.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| WatchError::NoToken {
                variable: settings.token_env.clone(),
            })?;
        let mut options = PeerOptions::new();
        options.connection_timeout = Some(CONNECT_DEADLINE);
        options.total_connection_timeout = Some(CONNECT_DEADLINE);
        options.verify_cert = true;
        options.verify_hostname = true;
        if let Some(ca) = settings.ca_file.as_ref().or(upstream_ca) {
            options.ca = Some(load_ca_bundle(ca)?);
        }
        let client_cert = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some(load_client_cert(cert, key)?),
            _ => None,
        };
        Ok(WatchClient {
            connector: Connector::new(None),
            settings: settings.clone(),
            options,
            client_cert,
            token,
            path_and_query,
        })
    }

    /// A connection to `endpoint` (pooled when one is idle; `server` names it in failures),
    /// within [`CONNECT_DEADLINE`]: the peer it was made for, the session, and whether the
    /// session was reused.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        server: &str,
    ) -> Result<(HttpPeer, HttpSession, bool), Failure> {
        let target = &endpoint.server;
        let mut peer = HttpPeer::new(endpoint.addr, target.tls, target.host.clone());
        peer.options = self.options.clone();
        peer.client_cert_key = self.client_cert.clone();
        let (session, reused) = within(CONNECT_DEADLINE, "connecting", server, async {
            self.connector
                .get_http_session(&peer)
                .await
                .map_err(|e| Failure::new(server, Problem::Connect(e)))
        })
        .await?;
        Ok((peer, session, reused))
    }

    /// One long poll to `endpoint`: `Ok(None)` when nothing changed within `wait`. The
    /// connection goes back to the pool after a complete answer when `keep` is set.
    pub async fn poll(
        &self,
        endpoint: &Endpoint,
        tag: Option<&str>,
        wait: Duration,
        keep: bool,
    ) -> Result<Option<RawAnswer>, Failure> {
        let server = endpoint.describe();
        let server = server.as_str();
        let target = &endpoint.server;
        let (peer, mut session, reused) = self.connect(endpoint, server).await?;
        let answer = self.exchange(&mut session, target, server, tag, wait).await;
        let (status, new_tag, body) = answer.map_err(|mut f| {
            // A pooled connection the server had closed fails at once; a timeout is the
            // server's, whatever the connection.
            f.reused = reused && f.kind() == "error";
            f
        })?;
        if keep {
            self.connector
                .release_http_session(session, &peer, None)
                .await;
        }
        match (status, new_tag) {
            (304, _) => Ok(None),
            (200, Some(tag)) => Ok(Some(RawAnswer { tag, body })),
            (200, None) => Err(Failure::new(server, Problem::NoTag)),
            (status, _) => {
                let reason = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                Err(Failure::new(server, Problem::Refused { status, reason }))
            }
        }
    }

    /// `POST path` with a JSON `body` to `endpoint` on a new connection, every step under the
    /// same deadlines as a poll (the answer's head within [`ANSWER_SLACK`]); the status and the
    /// body of the answer.
    pub async fn post(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, BytesMut), Failure> {
        let server = endpoint.describe();
        let server = server.as_str();
        let target = &endpoint.server;
        let (_, mut session, _) = self.connect(endpoint, server).await?;
        let mut request = self
            .head("POST", path, target, None)
            .map_err(|problem| Failure::new(server, problem))?;
        for (name, value) in [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_LENGTH, body.len().to_string()),
        ] {
            let what = name.to_string();
            request
                .insert_header(name, value)
                .map_err(|_| Failure::new(server, Problem::Header(what)))?;
        }
        within(WRITE_DEADLINE, "sending the request", server, async {
            session
                .write_request_header(Box::new(request))
                .await
                .map_err(|e| Failure::new(server, Problem::Send(e)))?;
            session
                .write_body(body)
                .await
                .map_err(|e| Failure::new(server, Problem::Send(e)))?;
            session
                .finish_body()
                .await
                .map(drop)
                .map_err(|e| Failure::new(server, Problem::Send(e)))
        })
        .await?;
        let (status, _, answer) = self
            .read_answer(&mut session, server, Duration::ZERO)
            .await?;
        // Not pooled: a post comes once a flush interval, longer than the server keeps an idle
        // connection, so a pooled one would mostly be found closed.
        Ok((status, answer))
    }

    /// Sends the request and reads the answer: status, entity tag, body.
    async fn exchange(
        &self,
        session: &mut HttpSession,
        target: &FanoutServer,
        server: &str,
        tag: Option<&str>,
        wait: Duration,
    ) -> Result<(u16, Option<String>, BytesMut), Failure> {
        let request = self
            .request(target, tag, wait)
            .map_err(|problem| Failure::new(server, problem))?;
        within(WRITE_DEADLINE, "sending the request", server, async {
            session
                .write_request_header(Box::new(request))
                .await
                .map(drop)
                .map_err(|e| Failure::new(server, Problem::Send(e)))
        })
        .await?;
        self.read_answer(session, server, wait).await
    }

    /// Reads an answer (its head within `wait` + [`ANSWER_SLACK`]): status, entity tag, body.
    async fn read_answer(
        &self,
        session: &mut HttpSession,
        server: &str,
        wait: Duration,
    ) -> Result<(u16, Option<String>, BytesMut), Failure> {
        within(
            wait + ANSWER_SLACK,
            "waiting for the answer",
            server,
            async {
                session
                    .read_response()
                    .await
                    .map(drop)
                    .map_err(|e| Failure::new(server, Problem::NoAnswer(e)))
            },
        )
        .await?;
        let response = session
            .resp_header()
            .ok_or_else(|| Failure::new(server, Problem::NoResponseHead))?;
        let status = response.status.as_u16();
        let new_tag = response
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = self.settings.max_answer_bytes;
        let declared = response
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(server, limit));
        }
        let body = within(BODY_DEADLINE, "reading the answer", server, async {
            let mut body = BytesMut::new();
            loop {
                let chunk = within(READ_DEADLINE, "reading the answer", server, async {
                    session
                        .read_body_bytes()
                        .await
                        .map_err(|e| Failure::new(server, Problem::Read(e)))
                })
                .await?;
                let Some(chunk) = chunk else {
                    return Ok(body);
                };
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large(server, limit));
                }
                body.extend_from_slice(&chunk);
            }
        })
        .await?;
        Ok((status, new_tag, body))
    }

    /// The watch request's head.
    fn request(
        &self,
        target: &FanoutServer,
        tag: Option<&str>,
        wait: Duration,
    ) -> Result<RequestHeader, Problem> {
        let path = format!("{}&wait={}", self.path_and_query, wait.as_secs());
        self.head("GET", &path, target, tag)
    }

    /// A request head to `target` (the bearer token is only ever in this header).
    fn head(
        &self,
        method: &str,
        path: &str,
        target: &FanoutServer,
        tag: Option<&str>,
    ) -> Result<RequestHeader, Problem> {
        let mut request =
            RequestHeader::build(method, path.as_bytes(), None).map_err(Problem::Request)?;
        let authority = if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let bearer = format!("Bearer {}", self.token.expose());
        let mut headers = vec![
            (header::HOST, authority.as_str()),
            (header::AUTHORIZATION, bearer.as_str()),
        ];
        if let Some(tag) = tag {
            headers.push((header::IF_NONE_MATCH, tag));
        }
        for (name, value) in headers {
            let what = name.to_string();
            request
                .insert_header(name, value)
                .map_err(|_| Problem::Header(what))?;
        }
        Ok(request)
    }
}

fn too_large(server: &str, limit: u64) -> Failure {
    Failure::new(server, Problem::TooLarge { limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_past_its_deadline_is_a_timeout_naming_it() {
        let never = std::future::pending::<Result<(), Failure>>();
        let failure = within(Duration::from_secs(5), "waiting for the answer", "s", never)
            .await
            .expect_err("times out");
        assert_eq!(failure.kind(), "timeout");
        assert_eq!(
            failure.to_string(),
            "s: timed out after 5s waiting for the answer"
        );
    }
}
