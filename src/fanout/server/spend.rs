//! `POST /v1/spend` on the fan-out listener: a watcher's spend batch, added to this instance's
//! pending batch and written with its own flushes (one writer per serving instance, whatever
//! the number of watchers).
//!
//! A watcher may report spend only for the keys its grant's `litellm_keys` covers, as this
//! instance last read them: a batch naming any other key (or, in its totals, a team or user
//! none of those keys has) is refused whole (403). Each record's team and user are set from
//! the key's row, so a watcher cannot charge another team or user with its keys' spend.
//!
//! Exactly once: the ids of the last [`REMEMBERED_IDS`] batches taken from each watcher are
//! kept; a batch sent again (its acknowledgement was lost) is acknowledged as a duplicate and
//! not added. The check and the addition happen under one lock, so two tries of one batch at
//! once add it once. Across replicas, the spend flush records each watcher's batch as
//! `{watcher}/{id}` and writes it once, whichever replica took it ([`crate::spend::flush`]).
//! Bounded: the body is read up to [`MAX_SPEND_REPORT_BYTES`], under [`BODY_DEADLINE`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::{header, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;
use tracing::{debug, info};

use super::error;
use crate::config::{KeyGrant, WatcherGrant};
use crate::credentials::rows::StoredRows;
use crate::fanout::{SpendReport, MAX_SPEND_REPORT_BYTES};
use crate::metrics::spend::FANOUT_REPORTS;
use crate::spend::batch::Batch;
use crate::spend::writer::SpendWriter;

/// How many batch ids are remembered per watcher (a watcher has one batch in flight at a time,
/// so a few cover every retry).
pub const REMEMBERED_IDS: usize = 16;
/// Longest a spend report's body may take to arrive.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// The ids of the batches taken from each watcher, by watcher name.
#[derive(Default)]
pub struct Receipts {
    taken: Mutex<HashMap<String, VecDeque<String>>>,
}

impl Receipts {
    /// Adds `batch` to `writer` unless a batch with `id` was taken from `watcher` before;
    /// whether it was added.
    pub fn take(&self, watcher: &str, id: &str, batch: Batch, writer: &SpendWriter) -> bool {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let ids = taken.entry(watcher.to_string()).or_default();
        if ids.iter().any(|seen| seen == id) {
            return false;
        }
        writer.absorb(format!("{watcher}/{id}"), batch);
        if ids.len() == REMEMBERED_IDS {
            ids.pop_front();
        }
        ids.push_back(id.to_string());
        true
    }
}

/// Checks `batch` against the key rows `grant` covers in `rows`, and sets each record's team
/// and user from its key's row. Errors list what is outside the grant (by key digest prefix,
/// team or user id). One pass over the key rows, looking up only the keys the batch names.
pub fn vouch(batch: &mut Batch, rows: &StoredRows, grant: &KeyGrant) -> Result<(), Vec<String>> {
    let named = batch.overflow.named();
    let asked: HashSet<&str> = batch
        .records
        .iter()
        .map(|r| &*r.key)
        .chain(named.keys.iter().copied())
        .collect();
    let mut keys = HashMap::new();
    let mut users = HashSet::new();
    for row in rows
        .keys
        .iter()
        .filter(|k| grant.covers_team(k.team_id.as_deref()))
    {
        if asked.contains(row.token.as_str()) {
            keys.insert(row.token.as_str(), row);
        }
        if !named.users.is_empty() {
            users.extend(row.user_id.as_deref());
        }
    }
    let teams: HashSet<&str> = rows
        .teams
        .iter()
        .filter(|t| grant.covers_team(Some(&t.id)))
        .map(|t| t.id.as_str())
        .collect();
    let shown = |key: &str| format!("key {}…", key.get(..8).unwrap_or(key));
    let mut outside: Vec<String> = named
        .keys
        .iter()
        .filter(|k| !keys.contains_key(*k))
        .map(|k| shown(k))
        .chain(
            named
                .teams
                .iter()
                .filter(|t| !teams.contains(*t))
                .map(|t| format!("team {t}")),
        )
        .chain(
            named
                .users
                .iter()
                .filter(|u| !users.contains(*u))
                .map(|u| format!("user {u}")),
        )
        .collect();
    let mut vouched = Vec::with_capacity(batch.records.len());
    for record in &batch.records {
        match keys.get(&*record.key) {
            Some(row) => vouched.push((
                row.team_id.clone().filter(|t| teams.contains(t.as_str())),
                row.user_id.clone(),
            )),
            None => outside.push(shown(&record.key)),
        }
    }
    outside.sort_unstable();
    outside.dedup();
    if !outside.is_empty() {
        return Err(outside);
    }
    for (record, (team, user)) in batch.records.iter_mut().zip(vouched) {
        record.team_id = team.map(Arc::from);
        record.user_id = user.map(Arc::from);
    }
    Ok(())
}

/// Reads the body, up to [`MAX_SPEND_REPORT_BYTES`] (declared or received), under
/// [`BODY_DEADLINE`]; the refusal otherwise.
async fn read_report(session: &mut ServerSession) -> Result<BytesMut, Response<Vec<u8>>> {
    let too_large = || {
        FANOUT_REPORTS.with_label_values(&["too_large"]).inc();
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a spend report is at most {MAX_SPEND_REPORT_BYTES} bytes"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_SPEND_REPORT_BYTES) {
        return Err(too_large());
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| e.to_string())?
        {
            if body.len() + chunk.len() > MAX_SPEND_REPORT_BYTES {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, String>(Some(body))
    };
    match tokio::time::timeout(BODY_DEADLINE, read).await {
        Ok(Ok(Some(body))) => Ok(body),
        Ok(Ok(None)) => Err(too_large()),
        Ok(Err(e)) => Err(bad_request(&format!("cannot read the body: {e}"))),
        Err(_) => Err(bad_request(&format!(
            "the body did not arrive within {BODY_DEADLINE:?}"
        ))),
    }
}

fn bad_request(message: &str) -> Response<Vec<u8>> {
    FANOUT_REPORTS.with_label_values(&["bad_request"]).inc();
    error(StatusCode::BAD_REQUEST, message)
}

/// A batch id as a watcher makes one: 1 to 64 ASCII letters, digits or `-`.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The answer to one spend report from the watcher with `grant`: `writer` is this instance's
/// (none: spend is off here), `rows` what it last read (none: nothing yet).
pub async fn answer(
    session: &mut ServerSession,
    grant: &WatcherGrant,
    writer: Option<&SpendWriter>,
    rows: Option<&StoredRows>,
    receipts: &Receipts,
) -> Response<Vec<u8>> {
    let Some(keys) = grant.litellm_keys.as_ref() else {
        FANOUT_REPORTS.with_label_values(&["refused"]).inc();
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "watcher {} is granted no litellm_keys to report spend for",
                grant.name
            ),
        );
    };
    let (Some(writer), Some(rows)) = (writer, rows) else {
        FANOUT_REPORTS.with_label_values(&["unavailable"]).inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server writes no spend (spend.enabled) or has not read the database yet",
        );
    };
    let body = match read_report(session).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let mut report: SpendReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => return bad_request(&format!("not a spend report: {e}")),
    };
    drop(body);
    if !valid_id(&report.id) {
        return bad_request("the batch id is 1 to 64 letters, digits or '-'");
    }
    if let Err(outside) = vouch(&mut report.batch, rows, keys) {
        FANOUT_REPORTS.with_label_values(&["refused"]).inc();
        let listed = outside
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        info!(
            "fanout: watcher {} reported spend outside its grant ({} in all): {listed}",
            grant.name,
            outside.len()
        );
        return error(
            StatusCode::FORBIDDEN,
            &format!("not granted to watcher {}: {listed}", grant.name),
        );
    }
    let requests = report.batch.len();
    let fresh = receipts.take(&grant.name, &report.id, report.batch, writer);
    let result = if fresh { "taken" } else { "duplicate" };
    FANOUT_REPORTS.with_label_values(&[result]).inc();
    debug!(
        "fanout: watcher {} reported {requests} requests' spend ({result})",
        grant.name
    );
    json_response(json!({ "duplicate": !fresh }))
}

#[allow(clippy::expect_used, reason = "the status and headers are constants")]
fn json_response(body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests;
