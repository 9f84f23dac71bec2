//! Binding a request to what serves it: the key, the upstream and the auth style, taken from the
//! route (credential routes) or from the next deployment of the route's model (model routes,
//! where settings on the route win). Decided once per request, from one snapshot. The proxy
//! serves with it; the admin's `/readyz` and start-up's report ask it which routes cannot serve.

use std::sync::Arc;

use crate::config::{Backend, UpstreamUrl};
use crate::credentials::{Credential, Lookup, Snapshot};
use crate::providers::AuthStyle;
use crate::upstream::Target;

use super::Route;

/// Everything the rewrite and the upstream choice need for one request.
#[derive(Debug)]
pub struct Binding {
    /// The key and its companions.
    pub credential: Arc<Credential>,
    /// The upstream base URL (host for `Host`, base path for the path).
    pub upstream: Arc<UpstreamUrl>,
    /// The upstream's endpoint (resolved peer).
    pub target: Arc<Target>,
    /// How the key is presented.
    pub auth: AuthStyle,
}

/// Why a route cannot serve now (the proxy answers 503 `credential_unavailable`; nothing is sent
/// upstream). The text names the route, credential or model, never a value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unbound(String);

/// Binds a request for `route` using `snapshot`, or says why it cannot be served.
pub fn bind(route: &Route, snapshot: &Snapshot) -> Result<Binding, Unbound> {
    match &route.backend {
        Backend::Credential(name) => {
            let credential = ready(snapshot.credential(name), "credential", name)?;
            match (&route.upstream, &route.target, &route.auth) {
                (Some(upstream), Some(target), Some(auth)) => Ok(Binding {
                    credential,
                    upstream: upstream.clone(),
                    target: target.clone(),
                    auth: auth.clone(),
                }),
                _ => Err(unavailable(format!(
                    "route {} has no upstream or provider",
                    route.name
                ))),
            }
        }
        Backend::Model(alias) => {
            let deployment = ready(snapshot.deployment(alias), "model", alias)?;
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
            Ok(Binding {
                credential: deployment.credential.clone(),
                upstream: upstream.clone(),
                target: target.clone(),
                auth: auth.clone(),
            })
        }
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
