//! Fan-out: a few sidecars read the database and every other sidecar watches one of them, so the
//! database sees a constant number of readers whatever the fleet size.
//!
//! The protocol is a long poll with an entity tag, as Consul's blocking queries and HTTP caches
//! do it (chosen over a streamed watch such as Kubernetes' because the payload is a small full
//! state that changes rarely: every answer is complete in itself, so a watcher can never miss or
//! misapply a delta; each request is ordinary HTTP/1.1 that any load balancer, proxy idle timeout
//! or reconnect handles without special framing; and a serving replica keeps no per-watcher
//! state beyond the open request):
//!
//! ```text
//! GET /v1/snapshot?credential=NAME&model=ALIAS&keys=all&wait=30   Authorization: Bearer TOKEN
//!      (keys=all, or team=ID repeated: LiteLLM keys)              If-None-Match: "ETAG"  (after the first)
//! 200  {"credentials":[…],"models":[…],"keys":[…],"teams":[…]}  ETag: "…"
//!                                                     the rows as stored: LiteLLM ciphertext,
//!                                                     key rows with LiteLLM's SHA-256 digest
//! 304                                                 nothing changed for the watcher within `wait`
//! 401 unknown token · 403 a name outside the watcher's grant · 503 no database read yet
//!
//! POST /v1/spend   {"id":"BATCH_ID","batch":{…}}          Authorization: Bearer TOKEN
//! 200  {"duplicate":false|true}                       taken into the server's pending spend
//! 403 a key outside the grant · 413 over MAX_SPEND_REPORT_BYTES · 503 no spend writer here
//! ```
//!
//! The entity tag is a digest of the watcher's own rows, so it is the same on every serving
//! replica and changes only when something the watcher receives changes. Rows are never
//! decrypted for the wire: each watcher decrypts with its own salt key.
//!
//! - [`server`]: the serving side, a listener of its own with per-watcher grants; it also takes
//!   watchers' spend and writes it with its own (database writes independent of the watchers).
//! - [`watch`]: the watching side, a credential source fed by long polls, and the sink its
//!   spend writer sends batches to.

pub mod server;
pub mod watch;

use std::sync::Arc;

use tokio::sync::watch as channel;

use crate::credentials::rows::{RowsSink, StoredRows};

/// The path of the snapshot endpoint.
pub const SNAPSHOT_PATH: &str = "/v1/snapshot";
/// The path of the spend endpoint: watchers send their spend batches there.
pub const SPEND_PATH: &str = "/v1/spend";
/// Largest spend report a server reads (a watcher's batch of `spend.max_pending_requests`
/// requests at most, which a watcher's config caps at [`MAX_WATCHER_PENDING_REQUESTS`]).
pub const MAX_SPEND_REPORT_BYTES: usize = 32 << 20;
/// The most requests a watcher's batch may hold (`spend.max_pending_requests` on a watcher):
/// about 1 KiB each at most on the wire, so a report stays under [`MAX_SPEND_REPORT_BYTES`].
pub const MAX_WATCHER_PENDING_REQUESTS: u64 = 20_000;

/// What a watcher sends to `POST /v1/spend`: one batch under its id (the same id on every
/// retry, so a server that already took it does not add it twice).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SpendReport {
    /// The batch's id.
    pub id: String,
    /// The batch.
    pub batch: crate::spend::batch::Batch,
}
/// Longest wait a server grants one request, whatever the watcher asks.
pub const MAX_WAIT_SECONDS: u64 = 300;

/// The latest database rows, for the fan-out server to hand out.
pub struct FanoutHub {
    current: channel::Sender<Option<Arc<StoredRows>>>,
}

impl Default for FanoutHub {
    fn default() -> Self {
        FanoutHub {
            current: channel::Sender::new(None),
        }
    }
}

impl RowsSink for FanoutHub {
    /// Records a new read; waiting requests wake only when the rows differ from the last read.
    fn publish(&self, rows: StoredRows) {
        self.current.send_if_modified(|current| {
            if current.as_deref() == Some(&rows) {
                return false;
            }
            *current = Some(Arc::new(rows));
            true
        });
    }
}

impl FanoutHub {
    /// A receiver that sees every new read (`None` until the first).
    pub fn subscribe(&self) -> channel::Receiver<Option<Arc<StoredRows>>> {
        self.current.subscribe()
    }
}

/// The entity tag of a response body: a digest of exactly what the watcher receives.
pub fn entity_tag(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::litellm::CredentialRow;

    fn rows(value: &str) -> StoredRows {
        StoredRows {
            credentials: vec![CredentialRow {
                name: "a".into(),
                values: serde_json::json!({ "api_key": value }),
                info: None,
            }],
            ..StoredRows::default()
        }
    }

    #[test]
    fn waiting_watchers_wake_only_for_different_rows() {
        let hub = FanoutHub::default();
        let mut rx = hub.subscribe();
        assert!(rx.borrow_and_update().is_none());
        hub.publish(rows("c1"));
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();
        hub.publish(rows("c1"));
        assert!(!rx.has_changed().expect("open"), "same rows woke watchers");
        hub.publish(rows("c2"));
        assert!(rx.has_changed().expect("open"));
    }

    #[test]
    fn entity_tags_follow_the_bytes() {
        assert_eq!(entity_tag(b"x"), entity_tag(b"x"));
        assert_ne!(entity_tag(b"x"), entity_tag(b"y"));
        assert!(entity_tag(b"x").starts_with('"') && entity_tag(b"x").len() == 34);
    }
}
