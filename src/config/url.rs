//! Upstream base URLs: `https://host[:port][/base/path]` (or `http://` for local tests), and
//! [`redacted`], the one way a URL that came from outside (a deployment's `api_base`, a route's
//! `upstream`) is shown: in errors, 503 bodies, `/readyz`, `/config` and logs.

use std::fmt;

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    /// `true` for `https`.
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path prepended to every forwarded path, without a trailing slash (`""` for none).
    pub base_path: String,
    /// The `Host` header value, made (and checked) once here rather than on every request.
    host_header: http::HeaderValue,
}

impl UpstreamUrl {
    /// Parses `text`, explaining what is wrong when it cannot.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let shown = || redacted(text);
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "{:?} must start with https:// (or http:// for local use)",
                shown()
            ));
        };
        if rest.contains(['?', '#']) {
            return Err(format!("{:?} must not have a query or fragment", shown()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("{:?} must not carry user info", shown()));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("{:?} has no valid host[:port]", shown()))?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        let host = host.to_ascii_lowercase();
        // Cannot fail for a host `split_host_port` accepted; checked rather than assumed.
        let host_header = http::HeaderValue::try_from(host_header(&host, port, tls))
            .map_err(|_| format!("{:?} has a host that cannot be a Host header", shown()))?;
        Ok(UpstreamUrl {
            host_header,
            tls,
            host,
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The same scheme, host and port with no base path (an endpoint, shared by routes).
    pub fn endpoint(&self) -> UpstreamUrl {
        UpstreamUrl {
            base_path: String::new(),
            ..self.clone()
        }
    }

    /// The `Host` header value: the host, plus the port when it is not the scheme's default.
    pub fn host_header(&self) -> &str {
        // Checked when parsed: `host[:port]` is ASCII.
        self.host_header.to_str().unwrap_or("-")
    }

    /// The `Host` header value, to put on a request (a reference count, not a copy).
    pub fn host_value(&self) -> &http::HeaderValue {
        &self.host_header
    }
}

fn host_header(host: &str, port: u16, tls: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == if tls { 443 } else { 80 } {
        host
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.base_path)
    }
}

/// `text` as it may be shown anywhere: scheme, host, port and path kept; user info replaced by
/// `REDACTED@`; each query value replaced by `REDACTED` (a parameter without `=` entirely); the
/// fragment dropped. `https://svc:pw@host/v1?api-key=k&x` → `https://REDACTED@host/v1?api-key=REDACTED&REDACTED`.
pub fn redacted(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("REDACTED@{host}"),
        None => authority.to_string(),
    };
    let mut shown = format!("{scheme}{host}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=REDACTED"),
                None if pair.is_empty() => String::new(),
                None => "REDACTED".to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let port = rest[end + 1..].strip_prefix(':');
        (&rest[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !valid_host {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheme_host_port_and_path() {
        let u = UpstreamUrl::parse("https://api.openai.com").expect("valid");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (true, "api.openai.com", 443, "")
        );
        let u = UpstreamUrl::parse("http://127.0.0.1:8080/v1/").expect("valid");
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (false, 8080, "/v1"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = UpstreamUrl::parse("https://[::1]:9443").expect("valid");
        assert_eq!((u.host.as_str(), u.host_header()), ("::1", "[::1]:9443"));
    }

    #[test]
    fn rejects_what_cannot_be_an_upstream() {
        for bad in [
            "api.openai.com",
            "ftp://x",
            "https://",
            "https://user:pw@host",
            "https://host:0",
            "https://host:99999",
            "https://host/path?q=1",
            "https://ho st",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_shown_without_user_info_or_query_values() {
        let cases = [
            (
                "https://svc:SECRET@host:8443/v1?api-key=SECRET&SECRET&x=#SECRET",
                "https://REDACTED@host:8443/v1?api-key=REDACTED&REDACTED&x=REDACTED",
            ),
            ("https://a@b@host/v1", "https://REDACTED@host/v1"),
            ("svc:SECRET@host/v1?k=SECRET", "REDACTED@host/v1?k=REDACTED"),
            ("https://host/v1/path", "https://host/v1/path"),
            ("https://host?SECRET", "https://host?REDACTED"),
        ];
        for (text, shown) in cases {
            assert_eq!(redacted(text), shown, "{text}");
        }
        for bad in [
            "https://svc:SECRET@host/v1",
            "https://host/v1?api-key=SECRET",
        ] {
            let error = UpstreamUrl::parse(bad).expect_err(bad);
            assert!(!error.contains("SECRET"), "{error}");
        }
    }
}
