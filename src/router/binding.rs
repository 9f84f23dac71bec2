//! Binding a request to what serves it: the key, the upstream and the auth style, taken from the
//! route (credential routes) or from the next deployment of the route's model (model routes,
//! where settings on the route win), or, for a `dispatch: model` request, from a deployment
//! reached through its provider's OpenAI-compatible API. Decided once per request, from one
//! snapshot. The proxy serves with it; the admin's `/readyz` and start-up's report ask it which
//! routes cannot serve.

use std::sync::Arc;

use super::Router;
use crate::config::{Backend, UpstreamUrl};
use crate::credentials::models::Deployment;
use crate::credentials::{Credential, Lookup, Snapshot};
use crate::providers::{known_provider, AuthStyle, OpenAiApi};
use crate::routes::Route;
use crate::upstream::Target;

/// Everything the rewrite and the upstream choice need for one request.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The key and its companions.
    pub credential: Arc<Credential>,
    /// The upstream base URL (host for `Host`, base path for the path).
    pub upstream: Arc<UpstreamUrl>,
    /// The upstream's endpoint (resolved peer).
    pub target: Arc<Target>,
    /// How the key is presented.
    pub auth: AuthStyle,
    /// The whole upstream path, when the binding decides it (`dispatch: model` routes); else
    /// the route's prefix rules apply.
    pub path: Option<String>,
    /// A `model:` route's deployment: its model replaces any the request names, in the body
    /// and in the path (`proxy::pinned`).
    pub model: Option<Arc<Deployment>>,
}

/// Why a route cannot serve now (the proxy answers 503 `credential_unavailable`; nothing is sent
/// upstream). The text names the route, credential or model, never a value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unbound(String);

/// How a route that can serve binds a request.
#[derive(Debug)]
pub enum RouteBinding {
    /// The route decides: a credential route's key, or a `model:` route's next deployment.
    Bound(Binding),
    /// A `dispatch: model` route: each request is bound from its body's `model`
    /// (`proxy::unified`).
    FromBody,
}

/// Binds a request for `route` using `snapshot` (a `model:` route's deployment picked by
/// `router`), or says why it cannot be served.
pub fn bind(route: &Route, snapshot: &Snapshot, router: &Router) -> Result<RouteBinding, Unbound> {
    match &route.backend {
        Backend::Credential(name) => {
            let credential = ready(snapshot.credential(name), "credential", name)?;
            if credential.aws.is_some() {
                // SigV4 signs the body, which only model routes read before sending.
                return Err(unavailable(format!(
                    "credential {name:?} holds AWS keys: serve Bedrock through a model: or \
                     dispatch: model route"
                )));
            }
            match (&route.upstream, &route.target, &route.auth) {
                (Some(upstream), Some(target), Some(auth)) => Ok(RouteBinding::Bound(Binding {
                    auth: credential.auth_for(auth),
                    credential,
                    upstream: upstream.clone(),
                    target: target.clone(),
                    path: None,
                    model: None,
                })),
                _ => Err(unavailable(format!(
                    "route {} has no upstream or provider",
                    route.name
                ))),
            }
        }
        Backend::Model(alias) => {
            let deployment = ready(router.pick(snapshot, alias, None), "model", alias)?;
            let upstream = route.upstream.as_ref().or(deployment.upstream.as_ref());
            let target = route.target.as_ref().or(deployment.target.as_ref());
            let (Some(upstream), Some(target)) = (upstream, target) else {
                return Err(unavailable(format!(
                    "model {alias:?}: deployment {} has no api_base and provider {:?} has no known \
                     public endpoint; set upstream on route {}",
                    deployment.id, deployment.provider, route.name
                )));
            };
            let Some(auth) = route.auth.as_ref().or(deployment.auth.as_ref()) else {
                return Err(unavailable(format!(
                    "model {alias:?}: provider {:?} has no known auth style; set provider on route {}",
                    deployment.provider, route.name
                )));
            };
            Ok(RouteBinding::Bound(Binding {
                credential: deployment.credential.clone(),
                upstream: upstream.clone(),
                target: target.clone(),
                auth: deployment.credential.auth_for(auth),
                path: None,
                model: Some(deployment.clone()),
            }))
        }
        // Bound per request from the body's `model` (`proxy::unified`); the route can serve
        // as long as one alias can.
        Backend::RequestModel if snapshot.models.values().any(|d| !d.all().is_empty()) => {
            Ok(RouteBinding::FromBody)
        }
        Backend::RequestModel => Err(unavailable(format!(
            "route {} dispatches by model, and no model deployment is loaded",
            route.name
        ))),
    }
}

/// The value of a lookup, or why there is none.
fn ready<T: Clone>(lookup: Lookup<'_, &T>, what: &str, name: &str) -> Result<T, Unbound> {
    match lookup {
        Lookup::Ready(value) => Ok(value.clone()),
        Lookup::Failed(reason) => Err(unavailable(format!(
            "{what} {name:?} could not be loaded: {reason}"
        ))),
        Lookup::Missing => Err(unavailable(format!("{what} {name:?} not loaded yet"))),
    }
}

fn unavailable(message: String) -> Unbound {
    Unbound(message)
}

/// Binds a request to `deployment` through its provider's OpenAI-compatible API, for a
/// `dispatch: model` route; `rest` is the request path after the route's prefix
/// (`/chat/completions`). OpenAI and OpenAI-compatible providers take `rest` under their base
/// (`api_base`, which for them includes the version, as in LiteLLM); Anthropic and Gemini under
/// their compatibility paths (`/v1`, `/v1beta/openai`) unless `api_base` already ends with
/// them; Azure under `/openai/deployments/{deployment}` with its `api-version`. Every one but
/// Azure takes the key as `Authorization: Bearer`. A provider the sidecar does not know is taken
/// for an OpenAI-compatible one (see [`crate::providers::PROVIDERS`]).
pub fn bind_deployment(deployment: &Deployment, rest: &str) -> Result<Binding, Unbound> {
    let known = known_provider(&deployment.provider);
    let auth = known.map_or(AuthStyle::OpenAi, |p| p.openai_api_auth());
    bind_deployment_at(deployment, &auth, |base| {
        match known.map_or(OpenAiApi::AtBase, |p| p.openai_api) {
            OpenAiApi::AtBase => format!("{base}{rest}"),
            OpenAiApi::Under(compat) => compat_path(base, compat, rest),
            OpenAiApi::AzureDeployment => {
                format!("{base}/openai/deployments/{}{rest}", deployment.model)
            }
        }
    })
}

/// Binds a request to `deployment` at the path `path` makes of its base path (without a
/// trailing `/`), the key presented as `auth` (or signed, for AWS keys).
pub fn bind_deployment_at(
    deployment: &Deployment,
    auth: &AuthStyle,
    path: impl FnOnce(&str) -> String,
) -> Result<Binding, Unbound> {
    let (Some(upstream), Some(target)) = (&deployment.upstream, &deployment.target) else {
        return Err(unavailable(format!(
            "deployment {} has no api_base and provider {:?} has no known public endpoint",
            deployment.id, deployment.provider
        )));
    };
    Ok(Binding {
        credential: deployment.credential.clone(),
        upstream: upstream.clone(),
        target: target.clone(),
        auth: deployment.credential.auth_for(auth),
        path: Some(path(upstream.base_path.trim_end_matches('/'))),
        model: None,
    })
}

/// `base` + `compat` + `rest`, without repeating `compat` when `base` already ends with it.
pub fn compat_path(base: &str, compat: &str, rest: &str) -> String {
    if base.ends_with(compat) {
        format!("{base}{rest}")
    } else {
        format!("{base}{compat}{rest}")
    }
}
