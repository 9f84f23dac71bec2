//! LiteLLM at-rest cipher: `decrypt` per stored format, `encrypt` per format, and `Keys::derive`.
//!
//! Every credential row is decrypted once per refresh (poll or LISTEN/NOTIFY), off the request
//! path, so these numbers bound how long a refresh of N credentials spends in crypto (N ×
//! `decrypt`, plus one `Keys::derive`) and how much CPU a busy refresh loop steals from the proxy
//! workers on a small machine. The formats differ in cipher (AES-256-GCM in BoringSSL vs. NaCl
//! XSalsa20-Poly1305 in pure Rust) and, for NaCl in standard base64, in a failed url-safe decode
//! before the standard one; the benches show whether any of them is an outlier. `encrypt` is what
//! `sidecar` pays when it writes a value LiteLLM can read.

mod common;

use std::hint::black_box;

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use sidecar::credentials::cipher::{decrypt, encrypt, Format, Keys};
use sidecar::credentials::Secret;

/// A realistic salt key (LiteLLM's `LITELLM_SALT_KEY` is usually an `sk-` string).
const SALT: &str = "sk-salt-3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e";
/// A realistic provider key: 51 characters, like a classic OpenAI `sk-` key.
const API_KEY: &str = "sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJuVwXyZ0123456789abcd";

fn keys() -> Keys {
    Keys::derive(&Secret::new(SALT.to_string()))
}

/// A NaCl value re-encoded in standard base64, the spelling LiteLLM's decoder falls back to.
/// Retries until the text has a `+` or `/`, so the url-safe decode really fails first (as it does
/// for nearly every real value of this length).
fn nacl_standard(keys: &Keys) -> String {
    loop {
        let url_safe = encrypt(API_KEY, Format::Nacl, keys);
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(&url_safe)
            .expect("encrypt writes url-safe base64");
        let standard = base64::engine::general_purpose::STANDARD.encode(raw);
        if standard.contains(['+', '/']) {
            return standard;
        }
    }
}

/// Like [`nacl_standard`], but a url-safe value that has a `-` or `_` (so it is not also valid
/// standard base64), which is what `encrypt(.., Format::Nacl, ..)` normally produces.
fn nacl_url_safe(keys: &Keys) -> String {
    loop {
        let value = encrypt(API_KEY, Format::Nacl, keys);
        if value.contains(['-', '_']) {
            return value;
        }
    }
}

fn bench_cipher(c: &mut Criterion) {
    let keys = keys();
    let stored = [
        ("v3_gcm", encrypt(API_KEY, Format::V3, &keys)),
        ("v2_gcm", encrypt(API_KEY, Format::V2, &keys)),
        ("nacl_url_safe", nacl_url_safe(&keys)),
        ("nacl_standard", nacl_standard(&keys)),
    ];
    for (name, value) in &stored {
        let back = decrypt(value, &keys).expect("own ciphertext decrypts");
        assert_eq!(back.expose(), API_KEY, "{name}");
    }

    let mut group = c.benchmark_group("cipher/decrypt");
    for (name, value) in &stored {
        group.bench_function(*name, |b| {
            b.iter(|| {
                decrypt(black_box(value), black_box(&keys))
                    .expect("decrypts")
                    .expose()
                    .len()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("cipher/encrypt");
    for (name, format) in [
        ("v3_gcm", Format::V3),
        ("v2_gcm", Format::V2),
        ("nacl", Format::Nacl),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| encrypt(black_box(API_KEY), black_box(format), black_box(&keys)))
        });
    }
    group.finish();

    let salt = Secret::new(SALT.to_string());
    c.bench_function("cipher/keys_derive", |b| {
        b.iter(|| Keys::derive(black_box(&salt)))
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_cipher
}
criterion_main!(benches);
