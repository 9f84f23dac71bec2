//! Who may use the sidecar and which route serves a request, checked in this order before
//! anything is sent upstream ([`admit`]): the request head's limits, the sidecar-wide client
//! networks and client token, CONNECT refused, the route match, the route's own networks and
//! client identities, a LiteLLM key, then the route bound from the credential snapshot (loaded
//! once for the request). Each refusal is the JSON error the client receives (401, 403, 404,
//! 405, 503); none names a secret.

use std::net::IpAddr;
use std::sync::Arc;

use http::Method;
use pingora::http::RequestHeader;

use super::respond::ErrorReply;
use super::{request_checks, RequestCtx};
use crate::access::litellm_keys::VirtualKey;
use crate::access::{allowed, Cidr, TokenCheck};
use crate::config::{AccessSettings, Backend};
use crate::credentials::{CredentialCache, Snapshot};
use crate::identity::ClientIdentity;
use crate::live_config::LiveConfig;
use crate::router::{bind, Binding, RouteBinding, Router};
use crate::routes::{Route, RouteTable};

/// What admission decided for a request that may go ahead.
pub enum Admitted {
    /// Bound by its route: a credential route's key, or a `model:` route's next deployment.
    Bound(Binding),
    /// A `dispatch: model` route: the body names the model, bound from this snapshot, the one
    /// the request was admitted with.
    FromBody(Arc<Snapshot>),
}

/// Decides what to do with a request before anything is sent upstream: what serves it (the
/// route is recorded in `ctx` as soon as it is known), or the error to answer with. The
/// credential snapshot is loaded once, here.
pub fn admit(
    live_config: &LiveConfig,
    credentials: &CredentialCache,
    router: &Router,
    req: &RequestHeader,
    client: Option<IpAddr>,
    identity: Option<&ClientIdentity>,
    ctx: &mut RequestCtx,
) -> Result<Admitted, ErrorReply> {
    request_checks::check_head(req, &live_config.limits)?;
    ctx.limits = live_config.limits;
    check_sidecar_access(&live_config.access, req, client)?;
    refuse_connect(req)?;
    let route = find_route(&live_config.routes, req)?;
    // Known from here on, so every later refusal is logged with its route.
    ctx.route = Some(route.clone());
    check_route_access(route, client, identity)?;
    let snapshot = credentials.snapshot();
    if live_config.access.litellm_keys {
        let model = match &route.backend {
            Backend::Model(alias) => ModelCheck::Now(alias),
            Backend::Credential(_) => ModelCheck::NoModel,
            Backend::RequestModel => ModelCheck::FromBody,
        };
        ctx.litellm_key = Some(check_litellm_key(&snapshot, req, model)?);
    }
    match bind(route, &snapshot, router) {
        Ok(RouteBinding::Bound(binding)) => Ok(Admitted::Bound(binding)),
        Ok(RouteBinding::FromBody) => Ok(Admitted::FromBody(snapshot)),
        Err(unbound) => Err(ErrorReply::credential_unavailable(unbound.to_string())),
    }
}

/// When a route's model is known, for a LiteLLM key check.
pub enum ModelCheck<'a> {
    /// A `model:` route: its alias, checked now; the request counts against the key's rate
    /// limit once its body is accepted (`pinned`).
    Now(&'a str),
    /// A credential route: it names no model, so a key limited to models may not use it.
    NoModel,
    /// A `dispatch: model` route: the body names it; the model check and the request's count
    /// against the key's rate limit come once it is read.
    FromBody,
}

/// `access.litellm_keys`: the LiteLLM virtual key the request presents, checked against the
/// snapshot's key table (fail closed while it has not been read); the model, when known, must be
/// allowed for the key and its team, and a key limited to models may not use a route that names
/// none; then the request counts against the key's `rpm_limit`.
pub fn check_litellm_key(
    snapshot: &Snapshot,
    req: &RequestHeader,
    model: ModelCheck<'_>,
) -> Result<Arc<VirtualKey>, ErrorReply> {
    let Some(table) = snapshot.litellm_keys.as_ref() else {
        return Err(ErrorReply::new(
            503,
            "keys_unavailable",
            "LiteLLM's keys have not been read from the database yet",
        ));
    };
    let key = table.admit(req).map_err(ErrorReply::litellm)?;
    match model {
        ModelCheck::Now(model) => key.check_model(model).map_err(ErrorReply::litellm)?,
        ModelCheck::NoModel if key.limited_to_models() => {
            return Err(ErrorReply::litellm(
                key.refuse_unseen_model("a credential route"),
            ))
        }
        ModelCheck::NoModel => key.take_request().map_err(ErrorReply::litellm)?,
        ModelCheck::FromBody => {}
    }
    Ok(key)
}

/// Whether `client` is inside `list` (an empty list allows every client).
fn client_allowed(list: &[Cidr], client: Option<IpAddr>) -> bool {
    list.is_empty() || client.is_some_and(|ip| allowed(list, ip))
}

/// `access.allowed_cidrs` and `access.client_tokens`.
pub fn check_sidecar_access(
    access: &AccessSettings,
    req: &RequestHeader,
    client: Option<IpAddr>,
) -> Result<(), ErrorReply> {
    if !client_allowed(&access.allowed_cidrs, client) {
        return Err(ErrorReply::new(
            403,
            "client_not_allowed",
            "this client address may not use the sidecar",
        ));
    }
    let Some(tokens) = &access.client_tokens else {
        return Ok(());
    };
    match tokens.check(req) {
        TokenCheck::Accepted => Ok(()),
        TokenCheck::Missing => Err(ErrorReply::new(
            401,
            "client_token_missing",
            format!("a client token is required in the {} header", tokens.header),
        )),
        TokenCheck::Rejected => Err(ErrorReply::new(
            403,
            "client_token_rejected",
            "the client token is not accepted",
        )),
    }
}

/// CONNECT is answered with an explanation, never tunnelled: a tunnel would carry the client's
/// own TLS, where no credential can be injected.
pub fn refuse_connect(req: &RequestHeader) -> Result<(), ErrorReply> {
    if req.method != Method::CONNECT {
        return Ok(());
    }
    Err(ErrorReply::new(
        405,
        "connect_not_supported",
        "CONNECT tunnels cannot carry an injected credential; set your SDK's base URL to \
         this sidecar (e.g. http://127.0.0.1:4000/openai/v1) instead of using it as an \
         HTTPS proxy",
    ))
}

/// The route for the request's host (absolute URI, else `Host`) and path.
pub fn find_route<'a>(
    routes: &'a RouteTable,
    req: &RequestHeader,
) -> Result<&'a Arc<Route>, ErrorReply> {
    let path = req.uri.path();
    let host = req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    routes.find(host, path).ok_or_else(|| {
        ErrorReply::new(
            404,
            "route_not_found",
            format!("no route matches path {path:?}"),
        )
    })
}

/// The route's `allowed_cidrs` and `allowed_identities`.
pub fn check_route_access(
    route: &Route,
    client: Option<IpAddr>,
    identity: Option<&ClientIdentity>,
) -> Result<(), ErrorReply> {
    if !client_allowed(&route.allowed_cidrs, client) {
        return Err(ErrorReply::new(
            403,
            "client_not_allowed",
            format!("this client address may not use route {}", route.name),
        ));
    }
    if route.allowed_identities.is_empty() {
        return Ok(());
    }
    let permitted =
        identity.is_some_and(|id| route.allowed_identities.iter().any(|e| e.matches(id)));
    if !permitted {
        return Err(ErrorReply::new(
            403,
            "client_identity_not_allowed",
            format!("route {} needs an allowed client certificate", route.name),
        ));
    }
    Ok(())
}
