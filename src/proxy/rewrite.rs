//! The header and URI rewrite applied to every forwarded request: strip whatever credential the
//! client sent, inject the route's, point Host (and so SNI's twin) at the upstream, and rewrite
//! the path and query. Pure functions over a [`RequestHeader`], tested without sockets.
//!
//! Credentials are stripped in every spelling some server stack reads as the credential, since
//! the provider's stack is not ours to know: header names with `_` for `-` (CGI and WSGI fold
//! both to `_`; `x_api_key` is `x-api-key` there), and query parameters whose name is a
//! credential's in any case, percent-encoding (also double), with NULs or control characters,
//! with an array suffix (`key[]`), or inside a `;`-separated list (`a=1;key=x`).

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{HeaderName, Uri};
use pingora::http::RequestHeader;

use super::framing;
use crate::credentials::Credential;
use crate::percent;
use crate::providers::{AuthStyle, CLIENT_CREDENTIAL_QUERY_PARAMS};
use crate::router::Binding;
use crate::routes::Route;

/// Rewrites `req` for `route` as `binding` says; with `body_len`, the body is replaced by one of
/// that length. Errors never contain the credential.
pub fn rewrite_request(
    req: &mut RequestHeader,
    route: &Route,
    binding: &Binding,
    body_len: Option<usize>,
) -> Result<(), String> {
    let (credential, auth) = (&binding.credential, &binding.auth);
    let path = match (&binding.path, &binding.model) {
        (Some(path), _) => path.clone(),
        (None, Some(deployment)) => {
            let path = route.upstream_path(&binding.upstream, req.uri.path());
            super::pinned::pin_path(&path, deployment.path_model()).into_owned()
        }
        (None, None) => route.upstream_path(&binding.upstream, req.uri.path()),
    };
    let mut query = rewrite_query(req.uri.query(), auth, credential);
    if let Some(deployment) = &binding.model {
        query = super::pinned::pin_query(query, &deployment.model);
    }
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // From the `String` itself: `parse` would copy it into a new buffer first.
    let uri = Uri::try_from(target)
        .map_err(|_| "the rewritten request target is not a valid URI".to_string())?;
    req.set_uri(uri);

    // AWS keys inject nothing here: the request is signed once it is final (`crate::aws`).
    let value = match auth {
        AuthStyle::AwsSigV4 => None,
        _ => Some(credential.header_value(auth).ok_or_else(|| {
            format!(
                "credential {:?} cannot be sent in a header",
                credential.name
            )
        })?),
    };
    let injected = auth.header_name();
    // The client's header of the injected name is replaced by the insert below, not removed
    // first (a removal from both of Pingora's header maps per request).
    let keep = value.as_ref().map(|_| &injected);
    strip_credential_headers(req, &route.strip_headers, keep);
    match body_len {
        Some(len) => framing::replace_body_length(req, len)?,
        None => framing::single_content_length(req)?,
    }
    if let Some(value) = value {
        insert(req, wire_name(auth, injected), value)?;
    }
    if let Some(required) = auth.required_header() {
        if !req.headers.contains_key(&required.name) {
            insert(
                req,
                required.wire,
                HeaderValue::from_static(required.default),
            )?;
        }
    }
    insert(req, HOST, binding.upstream.host_value().clone())
}

/// The injected header's name as sent (see [`AuthStyle::wire_name`]).
fn wire_name(auth: &AuthStyle, name: HeaderName) -> Bytes {
    match auth.wire_name() {
        Some(wire) => Bytes::from_static(wire.as_bytes()),
        None => Bytes::copy_from_slice(name.as_str().as_bytes()),
    }
}

/// Removes every header in `strip`, and every header whose name reads as one of them with `_`
/// taken for `-` (`x_api_key`, `X_Api-Key`). One pass over the request's few header names,
/// rather than a lookup per listed name: a request carries a handful of headers, the list a
/// dozen names. `keep` (the header about to be injected, replacing the client's) is left.
fn strip_credential_headers(
    req: &mut RequestHeader,
    strip: &[HeaderName],
    keep: Option<&HeaderName>,
) {
    let listed = |name: &HeaderName| {
        if Some(name) == keep {
            return false;
        }
        let name = name.as_str();
        strip.iter().any(|s| {
            let s = s.as_str();
            s.len() == name.len()
                && s.bytes()
                    .zip(name.bytes())
                    .all(|(s, n)| s == n || (s == b'-' && n == b'_'))
        })
    };
    while let Some(name) = req.headers.keys().find(|n| listed(n)).cloned() {
        req.remove_header(&name);
    }
}

fn insert(
    req: &mut RequestHeader,
    name: impl pingora::http::IntoCaseHeaderName,
    value: HeaderValue,
) -> Result<(), String> {
    req.insert_header(name, value)
        .map_err(|_| "cannot set an upstream request header".to_string())
}

/// The upstream query: client `key=` parameters removed in every spelling (see the module
/// docs); for Azure with a credential `api_version`, `api-version` set to it (the operator's pin
/// wins over the client's, in any spelling). `None` when nothing is left.
pub fn rewrite_query(
    query: Option<&str>,
    auth: &AuthStyle,
    credential: &Credential,
) -> Option<String> {
    let pinned_version = auth
        .api_version_param()
        .zip(credential.api_version.as_deref());
    let mut kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let names = parameter_names(pair);
            let credential_param = names
                .iter()
                .any(|n| CLIENT_CREDENTIAL_QUERY_PARAMS.contains(&n.as_str()));
            let replaced_version =
                pinned_version.is_some_and(|(param, _)| names.iter().any(|n| n == param));
            !credential_param && !replaced_version
        })
        .collect();
    let version_pair;
    if let Some((param, version)) = pinned_version {
        version_pair = format!("{param}={}", percent::encode(version));
        kept.push(&version_pair);
    }
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// How many times a parameter name is percent-decoded, for servers that decode more than once.
const DECODE_ROUNDS: usize = 3;

/// Every name the `&`-separated `pair` may carry for some server: the names of its
/// `;`-separated parts, as sent and once fully decoded (a server that decodes before splitting
/// sees `a%26key=x` as `a` and `key`), each [normalized](normalized_name).
fn parameter_names(pair: &str) -> Vec<String> {
    let decoded = decode_fully(pair);
    pair.split(';')
        .chain(decoded.split(['&', ';']))
        .map(|part| normalized_name(part.split('=').next().unwrap_or("")))
        .collect()
}

/// A parameter name as the most lenient server reads it: [decoded](decode_fully), control
/// characters (NUL included) dropped, surrounding spaces trimmed, ASCII lowercase, and without
/// an array suffix (`key[]`, `key[0]`).
fn normalized_name(raw: &str) -> String {
    let mut name: String = decode_fully(raw)
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_ascii_lowercase();
    if let (Some(open), true) = (name.find('['), name.ends_with(']')) {
        name.truncate(open);
    }
    name.trim_end().to_string()
}

/// `text` with `+` read as a space and percent-escapes decoded until none is left (at most
/// [`DECODE_ROUNDS`] times: `%256B` is `%6B` to one server and `k` to one that decodes twice).
fn decode_fully(text: &str) -> String {
    let mut text = text.replace('+', " ");
    for _ in 0..DECODE_ROUNDS {
        match percent::decode(&text) {
            Cow::Owned(next) if next != text => text = next,
            _ => break,
        }
    }
    text
}

#[cfg(test)]
mod tests;
