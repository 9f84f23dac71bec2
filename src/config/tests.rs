//! Config validation tests on plain strings (no files, no process environment).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::providers::AuthStyle;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_yaml(text, Path::new("."), &no_env)
}

const MINIMAL: &str = r#"
listeners: [{ address: "127.0.0.1:4000" }]
routes:
  - { name: openai, path_prefix: /openai/, strip_prefix: true, upstream: "https://api.openai.com/v1", provider: openai, credential: openai-prod }
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = load(MINIMAL).expect("valid");
    assert_eq!(c.server.threads, DEFAULT_THREADS as usize);
    assert!(c.server.grace_period + c.server.graceful_shutdown_timeout <= Duration::from_secs(25));
    assert_eq!(c.upstream.read_timeout, Duration::from_secs(600));
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.credentials.salt_key_env, "LITELLM_SALT_KEY");
    let r = &c.routes[0];
    assert_eq!(r.path_prefix.as_deref(), Some("/openai"));
    assert_eq!(r.upstream.as_ref().expect("upstream").base_path, "/v1");
    assert_eq!(r.auth, Some(AuthStyle::OpenAi));
    assert_eq!(r.backend, Backend::Credential("openai-prod".into()));
}

#[test]
fn threads_are_a_number_or_auto() {
    let with = |threads: &str| {
        load(&MINIMAL.replace(
            "routes:",
            &format!("server: {{ threads: {threads} }}\nroutes:"),
        ))
    };
    assert_eq!(with("3").expect("valid").server.threads, 3);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(with("auto").expect("valid").server.threads, cpus);
    let errors = with("many").expect_err("invalid");
    assert!(
        errors
            .iter()
            .any(|e| e.path == "server.threads" && e.message.contains("\"auto\"")),
        "{errors:?}"
    );
}

#[test]
fn every_mistake_is_reported_with_its_path() {
    let text = r#"
listner: []
server: { threads: 0, grace_period: soon }
listeners: [{ address: "localhost" }]
upstream: { read_timeout: 10, keepalive_pool_size: -1 }
routes:
  - { name: a, path_prefix: openai, upstream: "ftp://x", provider: openai, credential: c }
  - { name: a, provider: cohere, upstream: "https://x", credential: c, extra: 1 }
  - { name: b, path_prefix: /b, upstream: "https://x", provider: header }
log: { level: loud }
"#;
    let errors = load(text).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "listner",
        "server.threads",
        "server.grace_period",
        "listeners[0].address",
        "upstream.read_timeout",
        "upstream.keepalive_pool_size",
        "routes[0].path_prefix",
        "routes[0].upstream",
        "routes[1].extra",
        "routes[1].provider",
        "routes[1]",
        "routes[2].credential",
        "routes[2].provider",
        "log.level",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn duplicate_names_and_matches_are_errors() {
    let text = r#"
listeners: [{ address: "127.0.0.1:4000" }]
routes:
  - { name: a, path_prefix: /x, upstream: "https://x", provider: openai, credential: c }
  - { name: a, path_prefix: /x/, upstream: "https://y", provider: openai, credential: c }
"#;
    let errors = load(text).expect_err("invalid");
    assert!(
        errors.iter().any(|e| e.path == "routes[1].name"),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.path == "routes[1]"), "{errors:?}");
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let errors = load("routes: [\n  - {").expect_err("invalid");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].path.starts_with("line "), "{errors:?}");
}

#[test]
fn missing_files_are_reported() {
    let text = format!("{MINIMAL}\nupstream: {{ ca_file: /nonexistent/ca.pem }}\ncredentials: {{ local: nope.yaml }}\n");
    let errors = load(&text).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["upstream.ca_file", "credentials.local"]);
}

#[test]
fn ssl_cert_file_is_the_ca_fallback() {
    let env = |name: &str| (name == "SSL_CERT_FILE").then(|| "/nonexistent/bundle.pem".to_string());
    let errors = Config::from_yaml(MINIMAL, Path::new("."), &env).expect_err("missing file");
    assert_eq!(errors[0].path, "SSL_CERT_FILE");
}

#[test]
fn access_lists_report_bad_items_and_empty_token_lists() {
    let text = format!(
        "{MINIMAL}access:\n  allowed_cidrs: [\"10.0.0.0/8\", \"nope\", 7]\n  client_tokens: {{ sha256: [] }}\n"
    );
    let errors = load(&text).expect_err("invalid");
    let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "access.allowed_cidrs[1]",
            "access.allowed_cidrs[2]",
            "access.client_tokens.sha256"
        ],
        "{errors:?}"
    );
}

#[test]
fn watch_and_fanout_settings_parse_with_defaults() {
    let digest = "a".repeat(64);
    let text = format!(
        "{MINIMAL}credentials:\n  watch: {{ url: \"https://Sidecar-Fanout.svc:9443/\" }}\n"
    );
    let c = load(&text).expect("valid");
    let w = c.credentials.watch.expect("watch");
    let s = &w.servers[0];
    assert_eq!(
        (w.servers.len(), s.tls, s.host.as_str(), s.port),
        (1, true, "sidecar-fanout.svc", 9443)
    );
    assert_eq!(w.token_env, DEFAULT_WATCH_TOKEN_ENV);
    assert_eq!(w.wait, DEFAULT_WATCH_WAIT);
    assert_eq!(w.max_answer_bytes, DEFAULT_WATCH_MAX_ANSWER_BYTES);
    let several = format!(
        "{MINIMAL}credentials:\n  watch: {{ url: \"https://a:9443\", urls: [\"https://b:9443\", \"https://c\"], max_answer_bytes: 1048576 }}\n"
    );
    let w = load(&several)
        .expect("valid")
        .credentials
        .watch
        .expect("watch");
    let urls: Vec<&str> = w.servers.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, ["https://a:9443", "https://b:9443", "https://c"]);
    assert_eq!(w.urls(), "https://a:9443, https://b:9443, https://c");
    assert_eq!(w.max_answer_bytes, 1 << 20);
    let local = format!("{MINIMAL}credentials:\n  watch: {{ url: \"http://[::1]:9\" }}\n");
    let w = load(&local)
        .expect("valid")
        .credentials
        .watch
        .expect("watch");
    let s = &w.servers[0];
    assert_eq!((s.tls, s.host.as_str(), s.port), (false, "::1", 9));

    let text = format!(
        "{MINIMAL}credentials:\n  postgres: {{ url: \"postgres://db/x\" }}\n\
         fanout:\n  address: \"127.0.0.1:9443\"\n  watchers:\n    - {{ name: w, token_sha256: \"{digest}\", models: [gpt] }}\n"
    );
    let c = load(&text).expect("valid");
    let pg = c.credentials.postgres.expect("postgres");
    assert_eq!(pg.query_timeout, DEFAULT_DB_QUERY_TIMEOUT);
    assert_eq!(pg.full_check_interval, DEFAULT_FULL_CHECK_INTERVAL);
    assert_eq!(pg.notify_jitter, DEFAULT_NOTIFY_JITTER);
    let f = c.fanout.expect("fanout");
    assert_eq!(f.watchers[0].models, ["gpt"]);
    assert_eq!(f.watchers[0].token_sha256, [0xaa; 32]);
    assert_eq!(f.watchers[0].litellm_keys, None);
}

#[test]
fn litellm_keys_are_granted_to_watchers_and_asked_for_by_them() {
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let server = format!(
        "{MINIMAL}credentials:\n  postgres: {{ url: \"postgres://db/x\" }}\n\
         fanout:\n  address: \"127.0.0.1:9443\"\n  watchers:\n\
         \x20   - {{ name: every, token_sha256: \"{a}\", litellm_keys: all }}\n\
         \x20   - {{ name: some, token_sha256: \"{b}\", models: [m], litellm_keys: {{ teams: [t1, t2] }} }}\n"
    );
    let c = load(&server).expect("valid");
    assert!(c.spend.enabled, "watchers' spend comes back to the server");
    let f = c.fanout.expect("fanout");
    assert_eq!(f.watchers[0].litellm_keys, Some(KeyGrant::All));
    assert_eq!(
        f.watchers[1].litellm_keys,
        Some(KeyGrant::Teams(vec!["t1".into(), "t2".into()]))
    );
    // A watcher enforces keys from its server: no database needed; it asks for all by default.
    let watcher = "listeners: [{ address: \"127.0.0.1:4000\" }]\n\
                   credentials: { watch: { url: \"https://s:9443\" } }\n\
                   access: { litellm_keys: true }\n\
                   routes: [{ name: g, path_prefix: /g, model: gpt }]\n";
    let c = load(watcher).expect("valid");
    assert_eq!(
        c.credentials.watch.expect("watch").litellm_keys,
        KeyGrant::All
    );
    let teams = watcher.replace("9443\" }", "9443\", litellm_keys: { teams: [t1] } }");
    let w = load(&teams)
        .expect("valid")
        .credentials
        .watch
        .expect("watch");
    assert_eq!(w.litellm_keys, KeyGrant::Teams(vec!["t1".into()]));
    let big = format!("{watcher}spend: {{ max_pending_requests: 50000 }}\n");
    let errors = load(&big).expect_err("too many for one report");
    assert!(
        errors
            .iter()
            .any(|e| e.path == "spend.max_pending_requests"),
        "{errors:?}"
    );

    for (grant, path) in [
        ("litellm_keys: some", "fanout.watchers[0].litellm_keys"),
        (
            "litellm_keys: { teams: [] }",
            "fanout.watchers[0].litellm_keys.teams",
        ),
        (
            "litellm_keys: { team: [t] }",
            "fanout.watchers[0].litellm_keys.team",
        ),
    ] {
        let text = format!(
            "{MINIMAL}credentials:\n  postgres: {{ url: \"postgres://db/x\" }}\n\
             fanout: {{ address: \"127.0.0.1:9443\", watchers: [{{ name: w, token_sha256: \"{a}\", {grant} }}] }}\n"
        );
        let errors = load(&text).expect_err("invalid");
        assert!(
            errors.iter().any(|e| e.path == path),
            "{path} in {errors:?}"
        );
    }
}

#[test]
fn watch_and_fanout_mistakes_are_named() {
    let digest = "b".repeat(64);
    let cases = [
        // (added text, path, words the message must contain)
        (
            "credentials:\n  watch: { url: \"http://10.0.0.5:9443\" }\n".to_string(),
            "credentials.watch.url",
            "loopback",
        ),
        (
            "credentials:\n  watch: { url: \"https://h:9443/v1\" }\n".to_string(),
            "credentials.watch.url",
            "scheme and host only",
        ),
        (
            "credentials:\n  watch: { url: \"https://h:port\" }\n".to_string(),
            "credentials.watch.url",
            "port",
        ),
        (
            "credentials:\n  watch: { urls: [\"https://a\", \"http://10.0.0.5:9443\"] }\n"
                .to_string(),
            "credentials.watch.urls[1]",
            "loopback",
        ),
        (
            "credentials:\n  watch: { url: \"https://a\", urls: [\"https://a/\"] }\n".to_string(),
            "credentials.watch.urls[0]",
            "listed twice",
        ),
        (
            "credentials:\n  watch: { token_env: T }\n".to_string(),
            "credentials.watch.url",
            "required",
        ),
        (
            "credentials:\n  watch: { url: \"https://a\", max_answer_bytes: 10 }\n".to_string(),
            "credentials.watch.max_answer_bytes",
            "whole number",
        ),
        (
            "credentials:\n  watch: { url: \"https://h\" }\n  postgres: { url: \"postgres://db/x\" }\n"
                .to_string(),
            "credentials.watch",
            "exclude each other",
        ),
        (
            format!("fanout: {{ address: \"127.0.0.1:9443\", watchers: [{{ name: w, token_sha256: \"{digest}\", credentials: [a] }}] }}\n"),
            "fanout",
            "needs credentials.postgres",
        ),
        (
            format!("credentials:\n  postgres: {{ url: \"postgres://db/x\" }}\nfanout: {{ address: \"0.0.0.0:9443\", watchers: [{{ name: w, token_sha256: \"{digest}\", credentials: [a] }}] }}\n"),
            "fanout.tls",
            "reachable from other hosts",
        ),
        (
            "credentials:\n  postgres: { url: \"postgres://db/x\" }\nfanout: { address: \"127.0.0.1:9443\", watchers: [{ name: w, token_sha256: \"hunter2\", credentials: [a] }] }\n".to_string(),
            "fanout.watchers[0].token_sha256",
            "",
        ),
        (
            format!("credentials:\n  postgres: {{ url: \"postgres://db/x\" }}\nfanout: {{ address: \"127.0.0.1:9443\", watchers: [{{ name: w, token_sha256: \"{digest}\" }}] }}\n"),
            "fanout.watchers[0]",
            "grants nothing",
        ),
        (
            format!("credentials:\n  postgres: {{ url: \"postgres://db/x\" }}\nfanout: {{ address: \"127.0.0.1:4000\", watchers: [{{ name: w, token_sha256: \"{digest}\", credentials: [a] }}] }}\n"),
            "fanout.address",
            "already a proxy or admin listener",
        ),
    ];
    for (added, path, words) in cases {
        let errors = load(&format!("{MINIMAL}{added}")).expect_err(&added);
        let found = errors
            .iter()
            .any(|e| e.path == path && e.message.contains(words));
        assert!(found, "{added}: expected {path}: …{words}…, got {errors:?}");
        assert!(
            errors.iter().all(|e| !e.message.contains("hunter2")),
            "{errors:?}"
        );
    }
}

#[test]
fn identity_entries_without_a_type_are_errors_that_say_what_to_write() {
    let text = r#"
listeners: [{ address: "127.0.0.1:4000" }]
routes:
  - { name: a, path_prefix: /a, upstream: "https://a", provider: openai, credential: c, allowed_identities: ["uri:spiffe://x/a", "DNS:A.internal", "email:a@b.c", "ip:10.0.0.1", "CN=a"] }
  - { name: b, path_prefix: /b, upstream: "https://b", provider: openai, credential: c }
  - name: c
    path_prefix: /c
    upstream: "https://c"
    provider: openai
    credential: c
    allowed_identities: ["spiffe://x/alice", "web.internal", "a@b.c", "10.0.0.1", "ip:web", "uri:", "dns:*"]
"#;
    let errors = load(text).expect_err("untyped entries");
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let expected = [
        (
            "routes[2].allowed_identities[0]",
            "\"spiffe://x/alice\" has no type: write uri:spiffe://x/alice",
        ),
        (
            "routes[2].allowed_identities[1]",
            "\"web.internal\" has no type: write dns:web.internal",
        ),
        (
            "routes[2].allowed_identities[2]",
            "\"a@b.c\" has no type: write email:a@b.c",
        ),
        (
            "routes[2].allowed_identities[3]",
            "\"10.0.0.1\" has no type: write ip:10.0.0.1",
        ),
        (
            "routes[2].allowed_identities[4]",
            "\"web\" is not an IP address",
        ),
        ("routes[2].allowed_identities[5]", "uri: needs a value"),
        (
            "routes[2].allowed_identities[6]",
            "wildcards are not supported",
        ),
    ];
    assert_eq!(found.len(), expected.len(), "{errors:?}");
    for ((path, message), (want_path, want_message)) in found.iter().zip(expected) {
        assert_eq!(*path, want_path, "{errors:?}");
        assert!(message.starts_with(want_message), "{path}: {message}");
    }
    // The routes[0] entries are all typed: no error names them.
    assert!(errors.iter().all(|e| !e.path.starts_with("routes[0]")));
}

#[test]
fn dispatch_router_and_litellm_keys_are_validated() {
    let ok = "listeners: [{ address: \"127.0.0.1:4000\" }]\n\
              credentials: { postgres: { url: \"postgres://db/x\" } }\n\
              access: { litellm_keys: true }\n\
              router: { allowed_fails: 0, cooldown_time: 30s }\n\
              routes: [{ name: v1, path_prefix: /v1, dispatch: model }]\n";
    let config = load(ok).expect("valid");
    assert!(config.access.litellm_keys);
    assert_eq!(config.routes[0].backend, Backend::RequestModel);
    assert_eq!(config.router.allowed_fails, 0);
    assert_eq!(config.router.cooldown_time, Duration::from_secs(30));

    let bad = "listeners: [{ address: \"127.0.0.1:4000\" }]\n\
               access: { litellm_keys: true, client_tokens: { sha256: [\"00\"] } }\n\
               routes:\n\
               - { name: a, path_prefix: /a, dispatch: model, upstream: \"https://x\" }\n\
               - { name: b, path_prefix: /b, dispatch: everything }\n\
               - { name: c, path_prefix: /c, dispatch: model, model: m }\n";
    let errors = load(bad).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "access.litellm_keys",
        "routes[0].upstream",
        "routes[1].dispatch",
        "routes[2]",
    ] {
        assert!(paths.contains(&expected), "{expected} in {errors:?}");
    }
    let no_database = errors
        .iter()
        .filter(|e| e.path == "access.litellm_keys")
        .count();
    assert_eq!(
        no_database, 2,
        "needs the database, and conflicts with client_tokens: {errors:?}"
    );
}

#[test]
fn spend_is_on_with_litellm_keys_and_its_mistakes_are_named() {
    let keys = "listeners: [{ address: \"127.0.0.1:4000\" }]\n\
                credentials: { postgres: { url: \"postgres://db/x\" } }\n\
                access: { litellm_keys: true }\n\
                routes: [{ name: v1, path_prefix: /v1, dispatch: model }]\n";
    let config = load(keys).expect("valid");
    assert!(config.spend.enabled, "on by default with LiteLLM keys");
    assert_eq!(config.spend.flush_interval, Duration::from_secs(10));
    assert!(!config.spend.disable_spend_logs);
    let plain = load(
        "listeners: [{ address: \"127.0.0.1:4000\" }]\n\
         routes: [{ name: o, path_prefix: /o, upstream: \"https://x\", provider: openai, credential: c }]\n\
         credentials: { postgres: { url: \"postgres://db/x\" } }\n",
    )
    .expect("valid");
    assert!(!plain.spend.enabled, "off without keys");

    let tuned = format!(
        "{keys}spend: {{ flush_interval: 2s, disable_spend_logs: true, max_pending_requests: 5 }}\n"
    );
    let config = load(&tuned).expect("valid");
    assert_eq!(config.spend.flush_interval, Duration::from_secs(2));
    assert!(config.spend.disable_spend_logs);
    assert_eq!(config.spend.max_pending_requests, 5);

    let bad = "listeners: [{ address: \"127.0.0.1:4000\" }]\n\
               spend: { enabled: true, flush_interval: 0s, max_pending_requests: 0, \
               prices_file: /nonexistent/prices.json, flush: 1s }\n\
               routes: [{ name: v1, path_prefix: /v1, dispatch: model }]\n";
    let errors = load(bad).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "spend.enabled",
        "spend.flush_interval",
        "spend.max_pending_requests",
        "spend.prices_file",
        "spend.flush",
    ] {
        assert!(paths.contains(&expected), "{expected} in {errors:?}");
    }
}
