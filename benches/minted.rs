//! The token lookup a request with a minted credential (Entra ID, Vertex AI) pays on the request
//! path: `Credential::header_value`, which for a key returns its cached header value and for a
//! minted credential loads the current token (one `ArcSwap` load, an expiry check, a reference
//! count). Both are measured side by side, so the ratio is the minted token's cost; nothing is
//! minted in the timed region (the token is minted once before, and lives an hour).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sidecar::credentials::{Credential, Secret};
use sidecar::minted::{Issued, Mint, MintError, Minted, MintedCredential};
use sidecar::providers::AuthStyle;

/// A realistic Entra ID access token's length (about 1,500 characters).
const TOKEN_LEN: usize = 1500;

/// Mints a fixed token living an hour.
struct HourToken;

#[async_trait::async_trait]
impl Mint for HourToken {
    fn kind(&self) -> &'static str {
        "bench"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        Ok(Minted {
            token: Issued::Bearer(Secret::new("e".repeat(TOKEN_LEN))),
            lifetime: Duration::from_secs(3600),
        })
    }
}

fn credential(minted: Option<Arc<MintedCredential>>) -> Credential {
    Credential {
        name: "bench".into(),
        provider: None,
        api_key: Secret::new("sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJuVwXyZ0123456789abcd".into()),
        api_base: None,
        api_version: None,
        header_values: Default::default(),
        aws: None,
        minted,
    }
}

fn lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let minted = Arc::new(MintedCredential::new("bench".into(), Box::new(HourToken)));
    runtime.block_on(minted.ready()).expect("minted");
    let with_key = credential(None);
    let with_token = credential(Some(minted));
    let auth = AuthStyle::OpenAi;
    let mut group = c.benchmark_group("credential_header");
    group.bench_function("api_key", |b| {
        b.iter(|| black_box(with_key.header_value(black_box(&auth))))
    });
    group.bench_function("minted_token", |b| {
        b.iter(|| black_box(with_token.header_value(black_box(&auth))))
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
