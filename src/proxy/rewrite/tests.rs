//! Rewrite tests on plain request headers.

use super::*;
use crate::config::Config;
use crate::credentials::Secret;
use crate::providers::{CLIENT_CREDENTIAL_HEADERS, DEFAULT_ANTHROPIC_VERSION};
use crate::routes::RouteTable;
use crate::upstream::Targets;

const KEY: &str = "sk-injected-0123";

fn route(provider: &str, extra: &str) -> std::sync::Arc<Route> {
    let text = format!(
        "listeners: [{{ address: \"127.0.0.1:1\" }}]\nroutes:\n  - {{ name: r, path_prefix: /p, strip_prefix: true, upstream: \"https://api.example.com:8443/v1\", provider: {provider}, credential: c{extra} }}\n"
    );
    let config = Config::from_yaml(&text, std::path::Path::new("."), &|_| None).expect("valid");
    let targets = Targets::standalone(&config.upstream).expect("targets");
    let table = RouteTable::new(&config.routes, &targets, None);
    let route = table.iter().next().expect("one route").clone();
    route
}

/// Rewrites `req` for `r` with a credential whose `api_version` is `api_version`.
fn apply(req: &mut RequestHeader, r: &Route, api_version: Option<&str>) {
    rewrite_request(req, r, &bound(r, credential(api_version)), None).expect("rewrite");
}

fn credential(api_version: Option<&str>) -> Credential {
    Credential {
        name: "c".into(),
        provider: None,
        api_key: Secret::new(KEY.into()),
        api_base: None,
        api_version: api_version.map(str::to_string),
        header_values: Default::default(),
        aws: None,
        minted: None,
    }
}

fn bound(route: &Route, credential: Credential) -> Binding {
    Binding {
        credential: std::sync::Arc::new(credential),
        upstream: route.upstream.clone().expect("upstream"),
        target: route.target.clone().expect("target"),
        auth: route.auth.clone().expect("provider"),
        path: None,
        model: None,
    }
}

fn client_request(target: &str) -> RequestHeader {
    let mut req = RequestHeader::build("POST", target.as_bytes(), None).expect("request");
    for (name, value) in [
        ("Authorization", "Bearer client-token"),
        ("X-Api-Key", "client-x"),
        ("api-key", "client-azure"),
        ("x-goog-api-key", "client-goog"),
        ("Proxy-Authorization", "Basic abc"),
        ("Host", "127.0.0.1:4000"),
        ("Content-Type", "application/json"),
    ] {
        req.append_header(name, value).expect("header");
    }
    req
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
    req.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[test]
fn each_provider_gets_its_header_and_client_credentials_are_gone() {
    let cases = [
        ("openai", "", "authorization", format!("Bearer {KEY}")),
        ("anthropic", "", "x-api-key", KEY.to_string()),
        ("azure", "", "api-key", KEY.to_string()),
        ("gemini", "", "x-goog-api-key", KEY.to_string()),
        (
            "header",
            ", auth_header: X-Custom, auth_prefix: \"Token \"",
            "x-custom",
            format!("Token {KEY}"),
        ),
    ];
    for (provider, extra, injected, value) in cases {
        let r = route(provider, extra);
        let mut req = client_request("/p/chat/completions");
        req.append_header("X-Custom", "client-custom")
            .expect("header");
        apply(&mut req, &r, None);
        assert_eq!(header(&req, injected), [value.as_str()], "{provider}");
        for name in CLIENT_CREDENTIAL_HEADERS {
            if name != injected {
                assert!(
                    header(&req, name).is_empty(),
                    "{provider}: {name} left in place"
                );
            }
        }
        assert_eq!(header(&req, "host"), ["api.example.com:8443"]);
        assert_eq!(header(&req, "content-type"), ["application/json"]);
        assert_eq!(req.uri.path(), "/v1/chat/completions");
        assert!(req.headers.get(injected).expect("set").is_sensitive());
    }
}

#[test]
fn anthropic_version_is_added_only_when_missing() {
    let r = route("anthropic", "");
    let mut req = client_request("/p/messages");
    apply(&mut req, &r, None);
    assert_eq!(
        header(&req, "anthropic-version"),
        [DEFAULT_ANTHROPIC_VERSION]
    );
    let mut req = client_request("/p/messages");
    req.append_header("anthropic-version", "2024-01-01")
        .expect("header");
    apply(&mut req, &r, None);
    assert_eq!(header(&req, "anthropic-version"), ["2024-01-01"]);
}

#[test]
fn key_query_parameters_are_removed_in_any_spelling() {
    let r = route("gemini", "");
    let mut req = client_request("/p/models?key=client&alt=sse&%6Bey=x&keys=kept&k%65y=y");
    apply(&mut req, &r, None);
    assert_eq!(req.uri.query(), Some("alt=sse&keys=kept"));
    let mut req = client_request("/p/models?key=only");
    apply(&mut req, &r, None);
    assert_eq!(req.uri.query(), None);
}

#[test]
fn azure_api_version_comes_from_the_credential_when_it_has_one() {
    let r = route("azure", "");
    let mut req =
        client_request("/p/openai/deployments/gpt/chat/completions?api-version=2023-05-15&x=1");
    apply(&mut req, &r, Some("2024-10-21"));
    assert_eq!(req.uri.query(), Some("x=1&api-version=2024-10-21"));
    let mut req =
        client_request("/p/openai/deployments/gpt/chat/completions?api-version=2023-05-15");
    apply(&mut req, &r, None);
    assert_eq!(req.uri.query(), Some("api-version=2023-05-15"));
}

#[test]
fn absolute_form_targets_are_replaced_by_origin_form() {
    let r = route("openai", "");
    let mut req = client_request("http://evil.example/p/chat");
    apply(&mut req, &r, None);
    assert_eq!(
        std::str::from_utf8(req.raw_path()).expect("utf8"),
        "/v1/chat"
    );
    assert_eq!(header(&req, "host"), ["api.example.com:8443"]);
}

#[test]
fn key_query_parameters_in_other_stacks_spellings_are_removed() {
    let r = route("gemini", "");
    let stripped = [
        "KEY=a",
        "Key=b",
        "key%00=c",
        "%00key=c2",
        "key[]=d",
        "key%5B%5D=e",
        "key[0]=f",
        ";key=g",
        "alt=json;key=h",
        "k%2565y=i",
        "key+=j",
        "a%26key%3Dk=1",
        "x=1%26key=l",
    ];
    let kept = [
        "alt=sse", "keys=1", "monkey=2", "key_id=3", "k=4", "q=%6Bey", "x=a;b",
    ];
    let query: Vec<&str> = stripped.iter().chain(kept.iter()).copied().collect();
    let mut req = client_request(&format!("/p/models?{}", query.join("&")));
    apply(&mut req, &r, None);
    assert_eq!(req.uri.query(), Some(kept.join("&").as_str()));
}

#[test]
fn azure_version_pin_replaces_the_clients_in_any_spelling() {
    let r = route("azure", "");
    let mut req = client_request("/p/x?API-Version=2023-05-15&api%2Dversion=1&x=1");
    apply(&mut req, &r, Some("2024-10-21"));
    assert_eq!(req.uri.query(), Some("x=1&api-version=2024-10-21"));
}

#[test]
fn underscore_spellings_of_credential_headers_are_removed() {
    // The route's own auth header is in the list too: `x_custom` goes as well.
    let r = route("header", ", auth_header: X-Custom, auth_prefix: \"Token \"");
    let mut req = client_request("/p/chat");
    for name in CLIENT_CREDENTIAL_HEADERS {
        req.append_header(name.replace('-', "_"), "client-underscore")
            .expect("header");
    }
    for (name, value) in [
        ("X_Api-Key", "client-mixed"),
        ("x-goog_api-key", "client-mixed"),
        ("X_CUSTOM", "client-custom"),
        ("x_request_id", "kept"),
        ("x__api_key", "kept-double"),
    ] {
        req.append_header(name, value).expect("header");
    }
    apply(&mut req, &r, None);
    let left: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_string()))
        .collect();
    assert!(
        !left.iter().any(|(_, v)| v.starts_with("client")),
        "{left:?}"
    );
    assert_eq!(header(&req, "x_request_id"), ["kept"]);
    assert_eq!(header(&req, "x__api_key"), ["kept-double"]);
    assert_eq!(header(&req, "x-custom"), [format!("Token {KEY}")]);
}

#[test]
fn the_upstream_request_has_one_content_length() {
    let r = route("openai", "");
    let mut req = client_request("/p/chat");
    req.append_header("Content-Length", "2, 2").expect("header");
    req.append_header("Content-Length", "2").expect("header");
    apply(&mut req, &r, None);
    assert_eq!(header(&req, "content-length"), ["2"]);
}
