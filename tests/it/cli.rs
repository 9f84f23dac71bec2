//! The command line: config testing (`-t`) and `credentials encrypt`.

use crate::support::sidecar_process::SidecarProcess;
use sidecar::credentials::cipher::{decrypt, Keys};
use sidecar::credentials::Secret;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn shipped_config_is_valid() {
    let _turn = crate::support::lock::shared_blocking();
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.yaml");
    let out = SidecarProcess::run_cli(&["-t", "-c", conf], None, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn a_config_with_several_mistakes_lists_every_one_with_its_path() {
    let _turn = crate::support::lock::shared_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        r#"
server: { threads: zero }
listeners: [{ address: "127.0.0.1" }]
upstream: { read_timeout: forever, ca_file: missing-ca.pem }
credentials: { local: missing-credentials.yaml }
routes:
  - { name: a, path_prefix: /a, upstream: "api.openai.com", provider: openai, credential: c }
  - { name: b, path_prefix: /b, upstream: "https://x", provider: mistral, credential: c, colour: blue }
"#,
    )
    .expect("write");
    let out = SidecarProcess::run_cli(&["-t", "-c", path.to_str().expect("utf-8 path")], None, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for path in [
        "server.threads",
        "listeners[0].address",
        "upstream.read_timeout",
        "upstream.ca_file",
        "credentials.local",
        "routes[0].upstream",
        "routes[1].provider",
        "routes[1].colour",
    ] {
        assert!(err.contains(path), "{path} not reported:\n{err}");
    }
    assert!(err.contains("8 errors"), "{err}");
}

#[test]
fn running_with_an_invalid_config_exits_before_listening() {
    let _turn = crate::support::lock::shared_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, "routes: []\n").expect("write");
    let out = SidecarProcess::run_cli(&["-c", path.to_str().expect("utf-8 path")], None, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("listeners: at least one listener")
            && err.contains("routes: at least one route"),
        "{err}"
    );
}

#[test]
fn encrypt_reads_the_secret_from_stdin_in_every_format() {
    let _turn = crate::support::lock::shared_blocking();
    let salt = "sk-cli-salt";
    let keys = Keys::derive(&Secret::new(salt.to_string()));
    for (format, prefix) in [("v3", "v3:gcm:"), ("v2", "v2:gcm:"), ("nacl", "")] {
        let out = SidecarProcess::run_cli(
            &["credentials", "encrypt", "--format", format],
            Some("sk-from-stdin-123\n"),
            &[("LITELLM_SALT_KEY", salt)],
        );
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        let stored = String::from_utf8(out.stdout).expect("utf-8");
        let stored = stored.trim_end();
        assert!(stored.starts_with(prefix), "{format}: {stored}");
        assert!(!stored.contains("sk-from-stdin"));
        assert_eq!(
            decrypt(stored, &keys).expect("decrypts").expose(),
            "sk-from-stdin-123"
        );
    }
}

#[test]
fn encrypt_falls_back_to_the_master_key_and_refuses_without_any_key() {
    let _turn = crate::support::lock::shared_blocking();
    let out = SidecarProcess::run_cli(
        &["credentials", "encrypt"],
        Some("sk-x"),
        &[("LITELLM_MASTER_KEY", "sk-master")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        !stored.contains(':'),
        "NaCl (no prefix), LiteLLM's default: {stored}"
    );
    let keys = Keys::derive(&Secret::new("sk-master".to_string()));
    assert_eq!(
        decrypt(stored.trim_end(), &keys)
            .expect("decrypts")
            .expose(),
        "sk-x"
    );

    let out = SidecarProcess::run_cli(&["credentials", "encrypt"], Some("sk-x"), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("LITELLM_SALT_KEY"));
}

#[test]
fn encrypt_refuses_control_characters_and_empty_input() {
    let _turn = crate::support::lock::shared_blocking();
    let env = [("LITELLM_SALT_KEY", "k")];
    for input in ["", "\n", "sk-a\r\nInjected: 1\n", "sk\tb"] {
        let out = SidecarProcess::run_cli(&["credentials", "encrypt"], Some(input), &env);
        assert!(!out.status.success(), "{input:?} accepted");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn sidecar_config_names_the_file_and_exit_codes_tell_failures_apart() {
    let _turn = crate::support::lock::shared_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listeners: []\nroutes: []\n").expect("write");
    let bad = bad.to_str().expect("utf-8 path");
    // SIDECAR_CONFIG is the file when -c is not given; an invalid config exits 1.
    let out = SidecarProcess::run_cli(&["-t"], None, &[("SIDECAR_CONFIG", bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.yaml"), "{}", stderr(&out));
    // -c wins over SIDECAR_CONFIG.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.yaml");
    let out = SidecarProcess::run_cli(&["-t", "-c", shipped], None, &[("SIDECAR_CONFIG", bad)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Wrong usage: 2.
    let out = SidecarProcess::run_cli(&["--no-such-flag"], None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A database that cannot be reached: 3.
    let unreachable = dir.path().join("db.yaml");
    let config = "listeners: [{ address: \"127.0.0.1:1\" }]\n\
                  credentials: { postgres: { url: \"postgres://postgres@127.0.0.1:1/x\", connect_timeout: 1s } }\n\
                  routes: [{ name: a, path_prefix: /a, model: m }]\n";
    std::fs::write(&unreachable, config).expect("write");
    let unreachable = unreachable.to_str().expect("utf-8 path");
    let out = SidecarProcess::run_cli(&["-c", unreachable, "db", "install-notify"], None, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}
