use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// Mints `tok-N` (N counting from 1) living `lifetime`, after `delay`; fails while `failing`.
struct Counting {
    mints: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    lifetime: Duration,
    delay: Duration,
}

#[async_trait::async_trait]
impl Mint for Counting {
    fn kind(&self) -> &'static str {
        "test"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        tokio::time::sleep(self.delay).await;
        let n = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
        if self.failing.load(Ordering::SeqCst) {
            return Err(MintError::Refused {
                endpoint: "login.example:443".into(),
                status: 401,
                code: ": invalid_client".into(),
            });
        }
        Ok(Minted {
            token: Issued::Bearer(Secret::new(format!("tok-{n}"))),
            lifetime: self.lifetime,
        })
    }
}

struct Fixture {
    credential: Arc<MintedCredential>,
    mints: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

fn fixture(lifetime: Duration) -> Fixture {
    let mints = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let minter = Counting {
        mints: mints.clone(),
        failing: failing.clone(),
        lifetime,
        delay: Duration::from_millis(50),
    };
    Fixture {
        credential: Arc::new(MintedCredential::new("az-prod".into(), Box::new(minter))),
        mints,
        failing,
    }
}

fn bearer(credential: &Arc<MintedCredential>) -> String {
    let header = credential.header().expect("a usable token");
    String::from_utf8(header.as_bytes().to_vec()).expect("ascii")
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_a_thousand_requests_mints_once() {
    let f = fixture(Duration::from_secs(3600));
    let waiters: Vec<_> = (0..1000)
        .map(|_| {
            let c = f.credential.clone();
            tokio::spawn(async move { c.ready().await })
        })
        .collect();
    for waiter in waiters {
        waiter.await.expect("join").expect("a token");
    }
    assert_eq!(f.mints.load(Ordering::SeqCst), 1);
    assert_eq!(bearer(&f.credential), "Bearer tok-1");
    assert_eq!(f.credential.report()["state"], "valid");
    assert_eq!(f.credential.report()["mints"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refreshed_ahead_of_expiry_off_the_request_path() {
    let f = fixture(Duration::from_secs(3600));
    f.credential.ready().await.expect("first");
    // 3,600 s: refreshed in the last 300 s.
    tokio::time::advance(Duration::from_secs(3299)).await;
    assert_eq!(bearer(&f.credential), "Bearer tok-1");
    assert_eq!(f.mints.load(Ordering::SeqCst), 1, "not due yet");
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..100 {
        assert_eq!(
            bearer(&f.credential),
            "Bearer tok-1",
            "served while refreshing"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        f.mints.load(Ordering::SeqCst),
        2,
        "one refresh for 100 requests"
    );
    assert_eq!(bearer(&f.credential), "Bearer tok-2");
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_keeps_the_token_until_it_expires_then_fails_closed() {
    let f = fixture(Duration::from_secs(400));
    f.credential.ready().await.expect("first");
    f.failing.store(true, Ordering::SeqCst);
    // In the refresh window (the last 100 s): the refresh fails, the token is still served.
    tokio::time::advance(Duration::from_secs(350)).await;
    assert_eq!(bearer(&f.credential), "Bearer tok-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.mints.load(Ordering::SeqCst), 2);
    assert_eq!(
        bearer(&f.credential),
        "Bearer tok-1",
        "kept after a failure"
    );
    assert_eq!(f.credential.report()["state"], "valid_refresh_failing");
    // Past expiry: requests fail closed, naming the credential and the cause.
    tokio::time::advance(Duration::from_secs(60)).await;
    let failed = f.credential.ready().await.expect_err("expired");
    let text = failed.to_string();
    assert!(
        text.contains("az-prod") && text.contains("invalid_client"),
        "{text}"
    );
    assert!(!text.contains("tok-"), "{text}");
    assert_eq!(f.credential.report()["state"], "failing");
    // Failures within RETRY_AFTER are shared rather than minted again.
    let before = f.mints.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert!(f.credential.ready().await.is_err());
    }
    assert!(f.mints.load(Ordering::SeqCst) <= before + 1);
    // The endpoint recovers: the next request after RETRY_AFTER mints.
    f.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(RETRY_AFTER).await;
    f.credential.ready().await.expect("recovered");
    assert!(bearer(&f.credential).starts_with("Bearer tok-"));
}

#[tokio::test(start_paused = true)]
async fn waiters_behind_a_failed_mint_take_its_failure() {
    let f = fixture(Duration::from_secs(3600));
    f.failing.store(true, Ordering::SeqCst);
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let c = f.credential.clone();
            tokio::spawn(async move { c.ready().await })
        })
        .collect();
    for waiter in waiters {
        assert!(waiter.await.expect("join").is_err());
    }
    assert_eq!(f.mints.load(Ordering::SeqCst), 1);
}

#[test]
fn the_report_never_holds_the_token() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let f = fixture(Duration::from_secs(3600));
    runtime.block_on(f.credential.ready()).expect("minted");
    let report = f.credential.report().to_string();
    assert!(!report.contains("tok-1"), "{report}");
    assert!(report.contains("expires_at"), "{report}");
}
