//! How each provider expects its credential: header name, value prefix, extra headers and query
//! parameters. Pure data and pure functions; the proxy applies them in
//! [`crate::proxy::rewrite`].

use http::HeaderName;

/// `anthropic-version` sent when the client sent none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Headers that carry a credential with at least one supported provider. All are removed from
/// every client request, whatever the route's provider (together with every route's own auth
/// header: see `Route::strip_headers`), also when spelled with `_` for `-` (see
/// [`crate::proxy::rewrite`]).
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
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
    /// Gemini (AI Studio): `x-goog-api-key: KEY`.
    Gemini,
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

/// The config spellings of [`AuthStyle`], for error messages.
pub const PROVIDER_NAMES: [&str; 5] = ["openai", "anthropic", "azure", "gemini", "header"];

impl AuthStyle {
    /// The header the key goes in.
    pub fn header_name(&self) -> HeaderName {
        match self {
            AuthStyle::OpenAi => http::header::AUTHORIZATION,
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
            AuthStyle::OpenAi => Some("Authorization"),
            AuthStyle::Anthropic => Some("x-api-key"),
            AuthStyle::Azure => Some("api-key"),
            AuthStyle::Gemini => Some("x-goog-api-key"),
            AuthStyle::Header { .. } => None,
        }
    }

    /// What goes before the key in the header's value (`Bearer ` for OpenAI's style).
    pub fn value_prefix(&self) -> &str {
        match self {
            AuthStyle::OpenAi => BEARER_PREFIX,
            AuthStyle::Header { prefix, .. } => prefix,
            AuthStyle::Anthropic | AuthStyle::Azure | AuthStyle::Gemini => "",
        }
    }

    /// Parses a route's `provider` (plus `auth_header` / `auth_prefix` for `header`).
    pub fn from_config(
        provider: &str,
        header: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<AuthStyle, String> {
        let simple = match provider {
            "openai" => Some(AuthStyle::OpenAi),
            "anthropic" => Some(AuthStyle::Anthropic),
            "azure" => Some(AuthStyle::Azure),
            "gemini" => Some(AuthStyle::Gemini),
            "header" => None,
            other => {
                return Err(format!(
                    "unknown provider {other:?} (expected one of: {}; use openai for any \
                     OpenAI-compatible API)",
                    PROVIDER_NAMES.join(", ")
                ))
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

/// The auth style and public API base (the base URL its SDK appends paths to) of a LiteLLM
/// provider name (the part before `/` in a deployment's `model`), when the sidecar knows it.
/// Azure has no public base: each resource has its own.
pub fn known_provider(name: &str) -> Option<(AuthStyle, Option<&'static str>)> {
    let (style, base) = match name {
        "openai" => (AuthStyle::OpenAi, "https://api.openai.com/v1"),
        "anthropic" => (AuthStyle::Anthropic, "https://api.anthropic.com"),
        "azure" => return Some((AuthStyle::Azure, None)),
        "gemini" => (
            AuthStyle::Gemini,
            "https://generativelanguage.googleapis.com",
        ),
        "mistral" => (AuthStyle::OpenAi, "https://api.mistral.ai/v1"),
        "groq" => (AuthStyle::OpenAi, "https://api.groq.com/openai/v1"),
        "deepseek" => (AuthStyle::OpenAi, "https://api.deepseek.com"),
        "xai" => (AuthStyle::OpenAi, "https://api.x.ai/v1"),
        "together_ai" => (AuthStyle::OpenAi, "https://api.together.xyz/v1"),
        "openrouter" => (AuthStyle::OpenAi, "https://openrouter.ai/api/v1"),
        "cohere" => (AuthStyle::OpenAi, "https://api.cohere.com"),
        _ => return None,
    };
    Some((style, Some(base)))
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
}
