//! How each provider expects its credential: header name, value prefix, extra headers and query
//! parameters; and what the sidecar knows of each LiteLLM provider ([`PROVIDERS`]: auth style,
//! public base, where its OpenAI-compatible API is). Pure data and pure functions; the proxy
//! applies them in [`crate::proxy::rewrite`], the model router in `router`.

use http::HeaderName;

/// `anthropic-version` sent when the client sent none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A header a provider's API requires, sent with a default value when the client sent none.
#[derive(Debug)]
pub struct RequiredHeader {
    /// Its name as sent (static, so that Pingora keeps it without a copy per request).
    pub wire: &'static str,
    /// The same name, for lookups.
    pub name: HeaderName,
    /// The value sent when the client sent none.
    pub default: &'static str,
}

/// Anthropic's API version header.
static ANTHROPIC_VERSION: RequiredHeader = RequiredHeader {
    wire: "anthropic-version",
    name: HeaderName::from_static("anthropic-version"),
    default: DEFAULT_ANTHROPIC_VERSION,
};

/// Headers that carry a credential with at least one supported provider. All are removed from
/// every client request, whatever the route's provider (together with every route's own auth
/// header: see `Route::strip_headers`), also when spelled with `_` for `-` (see
/// [`crate::proxy::rewrite`]).
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    // An AWS client's session token (its own signature is in `Authorization`).
    "x-amz-security-token",
];

/// Query parameter names that carry a credential (Gemini's older `?key=`). Removed from every
/// request, in any case, encoding or array form (see [`crate::proxy::rewrite`]).
pub const CLIENT_CREDENTIAL_QUERY_PARAMS: [&str; 1] = ["key"];

/// The provider auth styles a route can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStyle {
    /// OpenAI and OpenAI-compatible APIs (Mistral, Groq, DeepSeek, xAI, Together, OpenRouter,
    /// Cohere): `Authorization: Bearer KEY`.
    OpenAi,
    /// Anthropic: `x-api-key: KEY`, plus `anthropic-version` when the client sent none.
    Anthropic,
    /// Azure OpenAI: `api-key: KEY`, plus the credential's `api_version` as the `api-version`
    /// query parameter when the credential has one.
    Azure,
    /// Azure OpenAI with a Microsoft Entra ID token (minted, or LiteLLM's `azure_ad_token`):
    /// `Authorization: Bearer TOKEN`, plus `api-version` as for [`AuthStyle::Azure`].
    AzureBearer,
    /// Gemini (AI Studio): `x-goog-api-key: KEY`.
    Gemini,
    /// AWS (Bedrock with `aws_*` keys): no key is sent; the request is signed with SigV4 once
    /// its final path, headers and body are known (`Authorization`, `X-Amz-Date`, and
    /// `X-Amz-Security-Token` with temporary keys; see [`crate::aws`]).
    AwsSigV4,
    /// Any other API: a named header with an optional value prefix (e.g. `Token `).
    Header {
        /// The header carrying the key.
        name: HeaderName,
        /// Text put before the key, if any.
        prefix: String,
    },
}

/// The prefix of an `Authorization: Bearer` value.
pub const BEARER_PREFIX: &str = "Bearer ";

/// The route `provider:` that names its own auth header ([`AuthStyle::Header`]).
const HEADER_PROVIDER: &str = "header";

impl AuthStyle {
    /// The header the key goes in.
    pub fn header_name(&self) -> HeaderName {
        match self {
            AuthStyle::OpenAi | AuthStyle::AzureBearer | AuthStyle::AwsSigV4 => {
                http::header::AUTHORIZATION
            }
            AuthStyle::Anthropic => HeaderName::from_static("x-api-key"),
            AuthStyle::Azure => HeaderName::from_static("api-key"),
            AuthStyle::Gemini => HeaderName::from_static("x-goog-api-key"),
            AuthStyle::Header { name, .. } => name.clone(),
        }
    }

    /// The built-in styles' header name as sent (OpenAI's as `Authorization`); `None` for a
    /// configured header, which goes as configured. Static, so that Pingora keeps it without a
    /// copy per request.
    pub fn wire_name(&self) -> Option<&'static str> {
        match self {
            AuthStyle::OpenAi | AuthStyle::AzureBearer | AuthStyle::AwsSigV4 => {
                Some("Authorization")
            }
            AuthStyle::Anthropic => Some("x-api-key"),
            AuthStyle::Azure => Some("api-key"),
            AuthStyle::Gemini => Some("x-goog-api-key"),
            AuthStyle::Header { .. } => None,
        }
    }

    /// What goes before the key in the header's value (`Bearer ` for OpenAI's style).
    pub fn value_prefix(&self) -> &str {
        match self {
            AuthStyle::OpenAi | AuthStyle::AzureBearer => BEARER_PREFIX,
            AuthStyle::Header { prefix, .. } => prefix,
            AuthStyle::Anthropic | AuthStyle::Azure | AuthStyle::Gemini | AuthStyle::AwsSigV4 => "",
        }
    }

    /// The header this style's API requires besides the key (Anthropic's `anthropic-version`).
    pub fn required_header(&self) -> Option<&'static RequiredHeader> {
        match self {
            AuthStyle::Anthropic => Some(&ANTHROPIC_VERSION),
            _ => None,
        }
    }

    /// The query parameter a credential's `api_version` is sent in, replacing the client's
    /// (Azure's `api-version`).
    pub fn api_version_param(&self) -> Option<&'static str> {
        match self {
            AuthStyle::Azure | AuthStyle::AzureBearer => Some("api-version"),
            _ => None,
        }
    }

    /// Parses a route's `provider` (plus `auth_header` / `auth_prefix` for `header`).
    pub fn from_config(
        provider: &str,
        header: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<AuthStyle, String> {
        let simple = match known_provider(provider).filter(|p| p.route_provider) {
            Some(known) => Some(known.auth.clone()),
            None if provider == HEADER_PROVIDER => None,
            None => {
                let names: Vec<&str> = PROVIDERS
                    .iter()
                    .filter(|p| p.route_provider)
                    .map(|p| p.name)
                    .chain([HEADER_PROVIDER])
                    .collect();
                return Err(format!(
                    "unknown provider {provider:?} (expected one of: {}; use openai for any \
                     OpenAI-compatible API)",
                    names.join(", ")
                ));
            }
        };
        if let Some(style) = simple {
            if header.is_some() || prefix.is_some() {
                return Err(
                    "auth_header and auth_prefix are only used with provider: header".into(),
                );
            }
            return Ok(style);
        }
        let name = header.ok_or("provider: header needs auth_header")?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("auth_header {name:?} is not a valid header name"))?;
        if is_forbidden_auth_header(&name) {
            return Err(format!("auth_header {name:?} is a connection-level header"));
        }
        let prefix = prefix.unwrap_or("").to_string();
        if prefix.chars().any(|c| c.is_control()) {
            return Err("auth_prefix must not contain control characters".to_string());
        }
        Ok(AuthStyle::Header { name, prefix })
    }
}

/// Where a provider serves OpenAI's API (the one a `dispatch: model` route speaks), relative
/// to its base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiApi {
    /// Under the base itself (OpenAI and OpenAI-compatible APIs, whose base, as in LiteLLM,
    /// includes the version).
    AtBase,
    /// Under this compatibility path below the base, unless the base already ends with it
    /// (Anthropic's `/v1`, Gemini's `/v1beta/openai`).
    Under(&'static str),
    /// Under `/openai/deployments/{deployment}` (Azure, whose deployment is the model name).
    AzureDeployment,
}

/// What the sidecar knows about one LiteLLM provider (the part before `/` in a deployment's
/// `model`).
#[derive(Debug)]
pub struct Provider {
    /// LiteLLM's name for it.
    pub name: &'static str,
    /// Whether a route may name it as its `provider:` (the others are OpenAI-compatible: a
    /// route uses `openai` for them).
    pub route_provider: bool,
    /// How its own API takes the key.
    pub auth: AuthStyle,
    /// Its public API base (the base URL its SDK appends paths to); `None` for Azure, where each
    /// resource has its own.
    pub base: Option<&'static str>,
    /// Where it serves OpenAI's API.
    pub openai_api: OpenAiApi,
}

impl Provider {
    /// How a request through its OpenAI-compatible API takes the key: as OpenAI's does
    /// (`Authorization: Bearer`), except Azure's.
    pub fn openai_api_auth(&self) -> AuthStyle {
        match self.openai_api {
            OpenAiApi::AzureDeployment => AuthStyle::Azure,
            OpenAiApi::AtBase | OpenAiApi::Under(_) => AuthStyle::OpenAi,
        }
    }
}

/// Every provider the sidecar knows, the ones a route may name first (in the order error
/// messages list them).
pub static PROVIDERS: [Provider; 13] = [
    Provider {
        name: DEFAULT_PROVIDER,
        route_provider: true,
        auth: AuthStyle::OpenAi,
        base: Some("https://api.openai.com/v1"),
        openai_api: OpenAiApi::AtBase,
    },
    Provider {
        name: "anthropic",
        route_provider: true,
        auth: AuthStyle::Anthropic,
        base: Some("https://api.anthropic.com"),
        openai_api: OpenAiApi::Under("/v1"),
    },
    Provider {
        name: AZURE_PROVIDER,
        route_provider: true,
        auth: AuthStyle::Azure,
        base: None,
        openai_api: OpenAiApi::AzureDeployment,
    },
    Provider {
        name: "gemini",
        route_provider: true,
        auth: AuthStyle::Gemini,
        base: Some("https://generativelanguage.googleapis.com"),
        openai_api: OpenAiApi::Under("/v1beta/openai"),
    },
    openai_compatible("mistral", "https://api.mistral.ai/v1"),
    openai_compatible("groq", "https://api.groq.com/openai/v1"),
    openai_compatible("deepseek", "https://api.deepseek.com"),
    openai_compatible("xai", "https://api.x.ai/v1"),
    openai_compatible("together_ai", "https://api.together.xyz/v1"),
    openai_compatible("openrouter", "https://openrouter.ai/api/v1"),
    openai_compatible("cohere", "https://api.cohere.com"),
    // Vertex AI: a minted service-account token; each deployment's base (location host and
    // project path) is made from its row (`minted::vertex`), under which OpenAI's API is served.
    Provider {
        name: VERTEX_PROVIDER,
        route_provider: false,
        auth: AuthStyle::OpenAi,
        base: None,
        openai_api: OpenAiApi::AtBase,
    },
    // AWS Bedrock: requests signed with the row's AWS keys (SigV4), or a Bedrock API key as
    // `Authorization: Bearer`; each deployment's base is its region's runtime endpoint
    // (`aws::bedrock`), under which Bedrock serves OpenAI's Chat Completions API.
    Provider {
        name: crate::aws::bedrock::PROVIDER,
        route_provider: false,
        auth: AuthStyle::OpenAi,
        base: None,
        openai_api: OpenAiApi::Under(crate::aws::bedrock::OPENAI_PATH),
    },
];

/// LiteLLM's name for Vertex AI.
pub const VERTEX_PROVIDER: &str = "vertex_ai";

/// LiteLLM's name for Azure OpenAI.
pub const AZURE_PROVIDER: &str = "azure";

/// An OpenAI-compatible API at `base`, which a route reaches as `provider: openai`.
const fn openai_compatible(name: &'static str, base: &'static str) -> Provider {
    Provider {
        name,
        route_provider: false,
        auth: AuthStyle::OpenAi,
        base: Some(base),
        openai_api: OpenAiApi::AtBase,
    }
}

/// LiteLLM's provider for a deployment whose `model`, `custom_llm_provider` and credential name
/// none.
pub const DEFAULT_PROVIDER: &str = "openai";

/// The provider LiteLLM calls `name`, when the sidecar knows it.
pub fn known_provider(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// Headers that frame or route the request and so can never carry a credential.
fn is_forbidden_auth_header(name: &HeaderName) -> bool {
    [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
    ]
    .contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_style_puts_the_key_where_the_provider_expects_it() {
        let cases = [
            (AuthStyle::OpenAi, "authorization", "Bearer k"),
            (AuthStyle::Anthropic, "x-api-key", "k"),
            (AuthStyle::Azure, "api-key", "k"),
            (AuthStyle::Gemini, "x-goog-api-key", "k"),
        ];
        for (style, header, value) in cases {
            assert_eq!(style.header_name().as_str(), header);
            let wire = style
                .wire_name()
                .expect("a built-in style's name is static");
            assert_eq!(wire.to_ascii_lowercase(), header, "sent as the same header");
            assert_eq!(format!("{}k", style.value_prefix()), value);
        }
        let custom =
            AuthStyle::from_config("header", Some("X-Custom-Key"), Some("Token ")).expect("valid");
        assert_eq!(custom.header_name().as_str(), "x-custom-key");
        assert_eq!(custom.wire_name(), None);
        assert_eq!(custom.value_prefix(), "Token ");
    }

    #[test]
    fn config_mistakes_are_explained() {
        assert!(AuthStyle::from_config("cohere", None, None)
            .unwrap_err()
            .contains("openai"));
        assert!(AuthStyle::from_config("header", None, None).is_err());
        assert!(AuthStyle::from_config("openai", Some("x"), None).is_err());
        assert!(AuthStyle::from_config("openai", None, Some("x")).is_err());
        assert!(AuthStyle::from_config("header", Some("bad header"), None).is_err());
        assert!(AuthStyle::from_config("header", Some("Host"), None).is_err());
    }

    #[test]
    fn the_table_knows_each_providers_base_and_openai_api() {
        let anthropic = known_provider("anthropic").expect("known");
        assert_eq!(anthropic.auth, AuthStyle::Anthropic);
        assert_eq!(anthropic.openai_api, OpenAiApi::Under("/v1"));
        assert_eq!(anthropic.openai_api_auth(), AuthStyle::OpenAi);
        let azure = known_provider("azure").expect("known");
        assert_eq!(
            (azure.base, azure.openai_api_auth()),
            (None, AuthStyle::Azure)
        );
        let groq = known_provider("groq").expect("known");
        assert_eq!(groq.base, Some("https://api.groq.com/openai/v1"));
        assert!(!groq.route_provider, "a route reaches it as openai");
        assert!(
            known_provider("Azure").is_none(),
            "LiteLLM's names, lowercase"
        );
        let message = AuthStyle::from_config("mistral", None, None).unwrap_err();
        let listed = "expected one of: openai, anthropic, azure, gemini, header;";
        assert!(message.contains(listed), "{message}");
    }
}
