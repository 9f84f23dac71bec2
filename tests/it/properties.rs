//! Property tests (proptest): the cipher never panics and never decrypts anything but what was
//! encrypted; the config validator never panics, whatever it is fed; a credential value either
//! reaches the upstream header byte for byte or is refused when it is loaded.

use std::path::Path;
use std::sync::Arc;

use pingora::http::RequestHeader;
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use sidecar::config::Config;
use sidecar::credentials::cipher::{decrypt, encrypt, Format, Keys};
use sidecar::credentials::values::ValueReader;
use sidecar::credentials::{Credential, Secret};
use sidecar::proxy::rewrite::rewrite_request;
use sidecar::router::Binding;
use sidecar::routes::{Route, RouteTable};
use sidecar::upstream::Targets;

fn keys() -> Keys {
    Keys::derive(&Secret::new("sk-property-salt".to_string()))
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::V3), Just(Format::V2), Just(Format::Nacl)]
}

/// One change to a stored value: flip a character, cut it short, or append to it.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Truncate(usize),
    Append(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let b64 =
        prop::char::ranges(vec!['A'..='Z', 'a'..='z', '0'..='9', '-'..='-', '_'..='_'].into());
    prop_oneof![
        (any::<usize>(), b64).prop_map(|(i, c)| Mutation::Replace(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
        "[A-Za-z0-9_=-]{1,8}".prop_map(Mutation::Append),
    ]
}

fn mutate(stored: &str, m: &Mutation) -> String {
    let chars: Vec<char> = stored.chars().collect();
    match m {
        Mutation::Replace(i, c) => {
            let mut chars = chars;
            let i = i % chars.len();
            chars[i] = *c;
            chars.into_iter().collect()
        }
        Mutation::Truncate(n) => chars[..n % chars.len()].iter().collect(),
        Mutation::Append(tail) => format!("{stored}{tail}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn what_encrypt_writes_decrypt_reads(plain in any::<String>(), format in format()) {
        let _turn = crate::support::lock::shared_blocking();
        let keys = keys();
        let stored = encrypt(&plain, format, &keys);
        let secret = decrypt(&stored, &keys).expect("round trip");
        prop_assert_eq!(secret.expose(), plain.as_str());
    }

    #[test]
    fn a_mutated_ciphertext_never_decrypts_to_anything_else(
        plain in "[ -~]{0,64}",
        format in format(),
        m in mutation(),
    ) {
        let _turn = crate::support::lock::shared_blocking();
        let keys = keys();
        let stored = encrypt(&plain, format, &keys);
        let mutated = mutate(&stored, &m);
        // Base64 padding bits can make a changed character decode to the same bytes.
        if let Ok(secret) = decrypt(&mutated, &keys) {
            prop_assert_eq!(secret.expose(), plain.as_str());
        }
    }

    #[test]
    fn random_input_never_decrypts_and_never_panics(
        prefix in prop_oneof![Just(""), Just("v2:gcm:"), Just("v3:gcm:"), Just("v9:x:")],
        body in prop_oneof!["[A-Za-z0-9_=+/-]{0,120}", any::<String>()],
    ) {
        let _turn = crate::support::lock::shared_blocking();
        let stored = format!("{prefix}{body}");
        prop_assert!(decrypt(&stored, &keys()).is_err());
    }

    #[test]
    fn the_validator_never_panics_on_random_text(text in any::<String>()) {
        let _turn = crate::support::lock::shared_blocking();
        let _ = Config::from_yaml(&text, Path::new("."), &|_| None);
    }

    #[test]
    fn the_validator_never_panics_on_random_documents(doc in document()) {
        let _turn = crate::support::lock::shared_blocking();
        let text = serde_yaml::to_string(&doc).expect("serializable");
        let _ = Config::from_yaml(&text, Path::new("."), &|_| None);
    }

    #[test]
    fn a_credential_value_reaches_the_header_intact_or_is_refused(key in any::<String>()) {
        let _turn = crate::support::lock::shared_blocking();
        let keys = keys();
        let reader = ValueReader { keys: Some(&keys), env: None };
        let Ok(secret) = reader.read("api_key", &encrypt(&key, Format::V3, &keys)) else {
            // Refused when loaded (control characters): the route then answers 503.
            prop_assert!(key.chars().any(char::is_control));
            return Ok(());
        };
        let route = openai_route();
        let binding = Binding {
            credential: Arc::new(Credential {
                name: "c".into(),
                provider: None,
                api_key: secret,
                api_base: None,
                api_version: None,
                header_values: Default::default(),
                aws: None,
                minted: None,
            }),
            upstream: route.upstream.clone().expect("upstream"),
            target: route.target.clone().expect("target"),
            auth: route.auth.clone().expect("auth"),
            path: None,
            model: None,
        };
        let mut req = RequestHeader::build("POST", b"/p/v1/chat", None).expect("request");
        rewrite_request(&mut req, &route, &binding, None).expect("a loaded key can be injected");
        let sent = req.headers.get("authorization").expect("injected").as_bytes();
        let expected = format!("Bearer {key}");
        prop_assert_eq!(sent, expected.as_bytes());
    }
}

/// A route to an OpenAI-style upstream, built as the proxy builds it.
fn openai_route() -> Arc<Route> {
    let text = "listeners: [{ address: \"127.0.0.1:1\" }]\nroutes:\n  - { name: r, path_prefix: /p, strip_prefix: true, upstream: \"https://api.example.com\", provider: openai, credential: c }\n";
    let config = Config::from_yaml(text, Path::new("."), &|_| None).expect("valid");
    let targets = Targets::standalone(&config.upstream).expect("targets");
    let table = RouteTable::new(&config.routes, &targets, None);
    let route = table.iter().next().expect("one route").clone();
    route
}

/// YAML documents whose keys are mostly the config's own, so the validator's deep paths run.
fn document() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "server",
        "listeners",
        "upstream",
        "credentials",
        "routes",
        "access",
        "admin",
        "log",
        "address",
        "tls",
        "cert",
        "key",
        "threads",
        "grace_period",
        "name",
        "path_prefix",
        "host",
        "upstream",
        "provider",
        "credential",
        "model",
        "strip_prefix",
        "postgres",
        "url",
        "local",
        "max_connections",
        "endpoints",
        "level",
        "format",
        "client_tokens",
        "sha256",
        "allowed_cidrs",
        "min_version",
        "read_timeout",
        "refresh_interval",
        "bogus",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            Just("5s".to_string()),
            Just("127.0.0.1:4000".to_string()),
            Just("https://api.example.com".to_string()),
            Just("openai".to_string()),
            Just("/p".to_string()),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                let mut map = Mapping::new();
                for (k, v) in pairs {
                    map.insert(Value::String(k.to_string()), v);
                }
                Value::Mapping(map)
            }),
        ]
    })
}
