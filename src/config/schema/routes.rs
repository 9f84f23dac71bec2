//! Routes (which requests each takes and what supplies its key) and client access control.

use crate::access::{Cidr, ClientTokens};
use crate::config::url::UpstreamUrl;
use crate::identity::AllowedIdentity;
use crate::providers::AuthStyle;

/// The header client tokens are presented in when `access.client_tokens.header` is unset.
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";

/// One route: which requests it takes and where they go with which key.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name, used in logs and errors.
    pub name: String,
    /// Path prefix to match, on segment boundaries (`/openai` matches `/openai/v1`, not
    /// `/openaiX`).
    pub path_prefix: Option<String>,
    /// Host to match (case-insensitive, port ignored).
    pub host: Option<String>,
    /// Remove `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Where matching requests go. Required for credential routes; for model routes it
    /// overrides the deployment's `api_base`.
    pub upstream: Option<UpstreamUrl>,
    /// How the provider expects the credential. Required for credential routes; for model
    /// routes it overrides the style derived from the deployment's provider.
    pub auth: Option<AuthStyle>,
    /// What supplies the key.
    pub backend: Backend,
    /// Client networks allowed on this route (in addition to `access.allowed_cidrs`); empty
    /// allows everyone the global list allows.
    pub allowed_cidrs: Vec<Cidr>,
    /// mTLS client identities allowed on this route, each naming its type (`uri:`, `dns:`,
    /// `email:`, `ip:`, `CN=`) and matching only a name of that type; empty allows any client.
    pub allowed_identities: Vec<AllowedIdentity>,
}

/// What supplies a route's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A named credential (local store or `"LiteLLM_CredentialsTable"`).
    Credential(String),
    /// A LiteLLM model alias (`"LiteLLM_ProxyModelTable"`), its deployments used round-robin.
    Model(String),
    /// `dispatch: model`: OpenAI's JSON endpoints under the route's prefix, each request's
    /// `model` naming the alias (LiteLLM proxy style; see `proxy::unified`).
    RequestModel,
}

/// Client access control (the node-local form).
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// Client networks allowed to use any route; empty allows everyone.
    pub allowed_cidrs: Vec<Cidr>,
    /// Client tokens required on every request, when set.
    pub client_tokens: Option<ClientTokens>,
    /// LiteLLM virtual keys required on every request (read from LiteLLM's key and team
    /// tables; see `access::litellm_keys`).
    pub litellm_keys: bool,
}
