//! The Pingora `ProxyHttp` implementation: the request's phases, each delegating to the module
//! that owns the work (routes, credentials, rewrite, upstream).
//!
//! Order for one request: `early_request_filter` (pipelined HTTP/1 requests answered in order,
//! see `framing`) → `request_filter` (refuse CONNECT, match the route, take the credential from
//! the current snapshot, see `admission`; then bind it, see `bind`: on a `dispatch: model` route
//! read the body and pick a deployment, see `unified`; or answer with a JSON error and send
//! nothing) → `upstream_peer` (a pre-resolved peer) → `upstream_request_filter` (strip and
//! inject, one `Content-Length`, sign; see `upstream_request`) → response streamed back →
//! `logging` (one access line, no secrets).

mod admission;
mod bind;
mod ctx;
pub mod failure;
pub mod framing;
mod pinned;
mod request_checks;
mod request_end;
mod request_id;
pub mod respond;
pub mod rewrite;
mod spent;
pub mod unified;
mod upstream_request;
mod usage;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use tracing::{info, trace, warn};

use crate::credentials::CredentialCache;
use crate::downstream::ClientConnections;
use crate::identity::ClientIdentity;
use crate::live_config::SharedLiveConfig;
use crate::router::Router;
use crate::spend::tracker::SpendTracker;
use crate::upstream::gate::ConnectionGate;
use crate::upstream::retry::{should_retry, FailedAttempt};
use ctx::Bound;
pub use ctx::RequestCtx;
use request_id::RequestId;
use respond::ErrorReply;

/// The proxy's shared state: routes and access rules, the credential cache, the model router,
/// the connection gate, the client connections (told when a request starts and ends).
pub struct SidecarProxy {
    live_config: SharedLiveConfig,
    credentials: Arc<CredentialCache>,
    router: Arc<Router>,
    gate: Arc<ConnectionGate>,
    clients: Arc<ClientConnections>,
    spend: Option<Arc<SpendTracker>>,
}

impl SidecarProxy {
    /// A proxy serving `dispatch` with credentials from `credentials`, model routes' deployments
    /// picked by `router`; with `spend`, what LiteLLM-key requests cost is written back.
    pub fn new(
        live_config: SharedLiveConfig,
        credentials: Arc<CredentialCache>,
        router: Arc<Router>,
        gate: Arc<ConnectionGate>,
        clients: Arc<ClientConnections>,
        spend: Option<Arc<SpendTracker>>,
    ) -> SidecarProxy {
        SidecarProxy {
            live_config,
            credentials,
            router,
            gate,
            clients,
            spend,
        }
    }
}

#[async_trait]
impl ProxyHttp for SidecarProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        framing::enable_pipelining(session);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        ctx.stream_counted = self.clients.request_started(peer);
        trace!("request head read");
        ctx.request_id = RequestId::for_request(session.req_header());
        ctx.span = crate::otel::RequestSpan::start(session.req_header());
        let client = peer.map(|a| a.ip());
        let identity = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|ssl| ssl.extension.get::<ClientIdentity>())
            .cloned();
        let live_config = self.live_config.load();
        let admitted = admission::admit(
            &live_config,
            &self.credentials,
            &self.router,
            session.req_header(),
            client,
            identity.as_ref(),
            ctx,
        );
        let bound = match admitted {
            Ok(admitted) => {
                bind::bind(session, ctx, admitted, &self.router, live_config.router).await
            }
            Err(reply) => Err(reply),
        };
        match bound {
            Ok(Some(bound)) => {
                ctx.bound = Some(bound);
                Ok(false)
            }
            // Answered here (`GET /models`); nothing goes upstream.
            Ok(None) => Ok(true),
            Err(reply) => {
                if matches!(reply.status, 401 | 403) {
                    let who = client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
                    warn!("denied a request from {who}: {}", reply.code);
                }
                reply.send(session, &ctx.request_id).await?;
                ctx.reply = Some(reply);
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // Already read and bounded; Pingora replays its tail, which the whole body replaces.
        if unified::attempts::on_body(ctx, body) {
            return Ok(());
        }
        let chunk = body.as_ref().map_or(0, |b| b.len());
        request_checks::count_body(&mut ctx.body_received, chunk, &ctx.limits).map_err(|reply| {
            ctx.reply = Some(reply);
            Error::new(ErrorType::Custom("RequestBodyTooLarge"))
        })
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // A retry after a deployment failed goes to the one the router chose instead.
        unified::attempts::on_next_attempt(ctx)?;
        let binding = ctx
            .bound
            .as_ref()
            .map(Bound::binding)
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let connector = ctx
            .lease
            .admit(&self.gate, binding.target.address())
            .await?;
        ctx.upstream_started.get_or_insert_with(Instant::now);
        binding.target.peer(connector, ctx.retried).ok_or_else(|| {
            let message = format!(
                "upstream host {:?} has not been resolved",
                binding.upstream.host
            );
            ctx.reply = Some(ErrorReply::new(502, "upstream_unresolved", message));
            Error::new(ErrorType::ConnectNoRoute)
        })
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let ssl = digest.and_then(|d| d.ssl_digest.as_deref());
        if let Some(binding) = ctx.binding() {
            if let Err((reply, etype)) = failure::check_upstream_tls(binding, ssl) {
                ctx.reply = Some(reply);
                return Err(Error::new(etype));
            }
        }
        ctx.reused_connection = Some(reused);
        ctx.lease.connected(&self.gate, fd, reused);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        upstream_request::prepare(upstream_request, ctx)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let retry = std::mem::take(&mut ctx.retry_elsewhere)
            || should_retry(FailedAttempt {
                reused: client_reused,
                already_retried: ctx.retried,
                body_truncated: session.as_ref().retry_buffer_truncated(),
                answered: ctx.upstream_ttfb.is_some(),
                error_type: &e.etype,
                retry_class: &e.retry,
            });
        e.set_retry(retry);
        if retry {
            ctx.retried = true;
            info!(
                "route {}: pooled connection was closed by the provider; retrying once",
                route_name(ctx)
            );
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let reply = ctx
            .reply
            .clone()
            .or_else(|| failure::reply_for(e, ctx.binding()));
        let error_code = match reply {
            Some(reply) => {
                let status = reply.status;
                if let Err(write_error) = reply.send(session, &ctx.request_id).await {
                    warn!(
                        "route {}: could not send error response: {write_error}",
                        route_name(ctx)
                    );
                }
                ctx.reply = Some(reply);
                status
            }
            None => 0,
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        unified::attempts::on_connect_failure(ctx, &mut e, &self.router);
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.upstream_ttfb = ctx.upstream_started.map(|t| t.elapsed());
        // Nothing has reached the client yet: another deployment may answer instead.
        unified::attempts::on_response(ctx, upstream_response.status.as_u16(), &self.router)?;
        if !upstream_response.status.is_informational() {
            ctx.release_retry_body();
        }
        ctx.upstream_request_id = request_id::from_provider(upstream_response);
        ctx.request_id.mark_response(upstream_response)?;
        unified::messages::on_response_header(ctx, upstream_response)?;
        usage::on_response_header(ctx, upstream_response);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        unified::messages::on_body(ctx, body, end_of_stream);
        usage::on_body(ctx, body.as_ref(), end_of_stream);
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.lease.end(&self.gate);
        // Only an HTTP/2 stream is found by its peer; an HTTP/1 request by its task.
        let peer = if ctx.stream_counted {
            session.client_addr().and_then(|a| a.as_inet()).copied()
        } else {
            None
        };
        self.clients.request_ended(peer, ctx.stream_counted);
        if let Some(spend) = &self.spend {
            spent::record(spend, session, ctx);
        }
        request_end::finish(session, e, ctx);
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        // Pingora's default summary includes the query string, which may hold a client key.
        let req = session.req_header();
        format!(
            "{} {} route={}",
            req.method,
            req.uri.path(),
            route_name(ctx)
        )
    }
}

fn route_name(ctx: &RequestCtx) -> &str {
    ctx.route.as_ref().map_or("-", |r| r.name.as_str())
}
