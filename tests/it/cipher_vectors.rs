//! LiteLLM's published-format test vectors (a copy of `shared/test-vectors/litellm-encryption.json`
//! lives in `tests/data/` so the tests pass on any clone).

use sidecar::credentials::cipher::{decrypt, Keys};
use sidecar::credentials::Secret;

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/litellm-encryption.json"
    ))
    .expect("tests/data/litellm-encryption.json");
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn keys(salt: &str) -> Keys {
    Keys::derive(&Secret::new(salt.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cases<'a>(v: &'a serde_json::Value, list: &str) -> &'a Vec<serde_json::Value> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} is a list"))
}

#[test]
fn derived_keys_match() {
    let _turn = crate::support::lock::shared_blocking();
    let v = vectors();
    let k = keys(v["salt_key"].as_str().expect("salt_key"));
    assert_eq!(hex(k.sha256_key()), v["derived_keys"]["sha256_hex"]);
    assert_eq!(hex(k.hkdf_v3_key()), v["derived_keys"]["hkdf_v3_hex"]);
}

#[test]
fn every_decrypt_vector_decrypts() {
    let _turn = crate::support::lock::shared_blocking();
    let v = vectors();
    let k = keys(v["salt_key"].as_str().expect("salt_key"));
    let list = cases(&v, "decrypt");
    assert!(list.len() >= 20, "all four formats are covered");
    for case in list {
        let stored = case["stored"].as_str().expect("stored");
        let got = decrypt(stored, &k).unwrap_or_else(|e| panic!("{} failed: {e}", case["format"]));
        assert_eq!(
            got.expose(),
            case["plaintext"].as_str().expect("plaintext"),
            "{}",
            case["format"]
        );
    }
}

#[test]
fn every_must_fail_vector_fails() {
    let _turn = crate::support::lock::shared_blocking();
    let v = vectors();
    let k = keys(v["salt_key"].as_str().expect("salt_key"));
    for case in cases(&v, "must_fail") {
        let stored = case["stored"].as_str().expect("stored");
        assert!(decrypt(stored, &k).is_err(), "should fail: {}", case["why"]);
    }
}

#[test]
fn every_vector_fails_under_another_key() {
    let _turn = crate::support::lock::shared_blocking();
    let v = vectors();
    for case in cases(&v, "must_fail_with_other_key") {
        let k = keys(case["salt_key"].as_str().expect("salt_key"));
        let stored = case["stored"].as_str().expect("stored");
        assert!(decrypt(stored, &k).is_err(), "should fail: {}", case["why"]);
    }
}
