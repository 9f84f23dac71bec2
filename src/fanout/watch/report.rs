//! A watcher's spend, sent to its fan-out servers instead of the database: each flush posts the
//! writer's batch (`POST /v1/spend`, the watcher's token, the batch's id) to the server in use,
//! which adds it to its own pending batch and writes it with its own flushes, so the database's
//! writes do not grow with the number of watchers.
//!
//! The writer keeps a batch no server took and sends it again first, under the same id
//! ([`crate::spend::writer`]); the server remembers the ids it took from each watcher, so a
//! batch whose acknowledgement was lost is not added twice. A failure (no connection, a timeout,
//! an error status) moves on to the next server address at once, as the poll does; a refusal
//! that a retry cannot change (the batch names keys outside the grant, it is malformed or too
//! large) ends the batch, logged and counted (`sidecar_spend_batches_total{result="refused"}`).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Mutex;

use super::client::WatchClient;
use super::endpoints::{resolve, Rotation};
use super::WatchError;
use crate::config::{FanoutServer, WatchSettings};
use crate::fanout::SPEND_PATH;
use crate::metrics::spend as metrics;
use crate::spend::batch::Batch;
use crate::spend::writer::{BatchSink, SendError, Sent};

/// Sends a watcher's spend batches to its fan-out servers.
pub struct SpendReporter {
    client: WatchClient,
    servers: Vec<Arc<FanoutServer>>,
    /// The addresses, resolved again after a round in which none took the batch.
    rotation: Mutex<Option<Rotation>>,
}

impl SpendReporter {
    /// A reporter to `settings.servers`, with the watcher's token and TLS settings. Errors as
    /// the watch source's.
    pub fn new(
        settings: &WatchSettings,
        upstream_ca: Option<&std::path::PathBuf>,
    ) -> Result<SpendReporter, WatchError> {
        Ok(SpendReporter {
            client: WatchClient::new(settings, upstream_ca, SPEND_PATH.to_string())?,
            servers: settings.servers.iter().cloned().map(Arc::new).collect(),
            rotation: Mutex::new(None),
        })
    }
}

/// What a server's answer means for the batch.
fn verdict(status: u16, body: &[u8]) -> Result<Sent, String> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = answer["error"].as_str().unwrap_or_default();
    match status {
        200 if answer["duplicate"] == Value::Bool(true) => Ok(Sent::Duplicate),
        200 => Ok(Sent::Fresh),
        // What a retry cannot change.
        400 | 403 | 413 => Ok(Sent::Refused(format!("{status} {reason}"))),
        // Unknown token (a reload in progress?), no rows or no spend writer there: another
        // server, or a later try, may take it.
        _ => Err(format!("{status} {reason}")),
    }
}

#[async_trait]
impl BatchSink for SpendReporter {
    async fn send(&self, id: &str, batch: &Batch) -> Result<Sent, SendError> {
        let body = serde_json::to_vec(&serde_json::json!({ "id": id, "batch": batch }))
            .map_err(|e| SendError::Fanout(format!("cannot encode the batch: {e}")))?;
        let mut rotation = self.rotation.lock().await;
        if rotation.as_ref().is_none_or(|r| r.len() == 0) {
            let (endpoints, problems) = resolve(&self.servers).await;
            if endpoints.is_empty() {
                *rotation = None;
                return Err(SendError::Fanout(problems.join("; ")));
            }
            let mut fresh = Rotation::default();
            fresh.replace(endpoints);
            *rotation = Some(fresh);
        }
        let Some(addresses) = rotation.as_mut() else {
            return Err(SendError::Fanout("no server address".into()));
        };
        let mut problems = Vec::new();
        for _ in 0..addresses.len() {
            let Some(endpoint) = addresses.current().cloned() else {
                break;
            };
            let answer = self.client.post(&endpoint, SPEND_PATH, &body).await;
            let outcome = match answer {
                Ok((status, answer)) => verdict(status, &answer),
                Err(failure) => Err(failure.to_string()),
            };
            match outcome {
                Ok(sent) => {
                    let result = match sent {
                        Sent::Fresh => "sent",
                        Sent::Duplicate => "duplicate",
                        // (The second is a database's answer, never a server's.)
                        Sent::Refused(_) | Sent::AbsorbedWritten(_) => return Ok(sent),
                    };
                    metrics::BATCHES.with_label_values(&[result]).inc();
                    return Ok(sent);
                }
                Err(problem) => {
                    problems.push(format!("{}: {problem}", endpoint.describe()));
                    addresses.advance();
                }
            }
        }
        // No address took it: resolve the names again before the next try.
        *rotation = None;
        Err(SendError::Fanout(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_taken_kept_or_refused_for_good() {
        assert_eq!(verdict(200, br#"{"duplicate":false}"#), Ok(Sent::Fresh));
        assert_eq!(verdict(200, br#"{"duplicate":true}"#), Ok(Sent::Duplicate));
        assert!(matches!(
            verdict(403, br#"{"error":"not granted"}"#),
            Ok(Sent::Refused(r)) if r.contains("not granted")
        ));
        assert!(matches!(verdict(413, b""), Ok(Sent::Refused(_))));
        for kept in [401, 404, 500, 503] {
            assert!(verdict(kept, b"{}").is_err(), "{kept}");
        }
    }
}
