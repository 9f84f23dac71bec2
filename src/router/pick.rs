//! Which deployment of a model alias serves the next attempt: weighted turns (smooth weighted
//! round-robin, its order made once per snapshot, so a turn is one atomic increment), skipping
//! the deployments that cool down and the one a retry moves away from.

use std::sync::Arc;

use super::health::Entries;
use super::Serves;
use crate::credentials::models::Deployment;
use crate::credentials::{Lookup, Snapshot};

/// Length of one weighted cycle: shares are honoured to within 1/`WEIGHTED_CYCLE`.
const WEIGHTED_CYCLE: usize = 1000;

/// The next deployment of `alias` in `snapshot` that is not cooling down (by `health`), is not
/// `exclude` and `serves` the request; when every such one is cooling down, the one that failed
/// least recently, `exclude` only when it is the alias's only deployment (and, when none serves,
/// the alias's first, which the caller refuses).
pub(super) fn pick<'s>(
    snapshot: &'s Snapshot,
    health: &Entries,
    alias: &str,
    (exclude, serves): (Option<&str>, Serves),
) -> Lookup<'s, &'s Arc<Deployment>> {
    let deployments = match snapshot.models.get(alias) {
        Some(d) if !d.all().is_empty() => d,
        _ => {
            return match snapshot.model_failures.get(alias) {
                Some(reason) => Lookup::Failed(reason),
                None => Lookup::Missing,
            }
        }
    };
    let list = deployments.all();
    let order = deployments
        .order(|list| weighted_schedule(&list.iter().map(|d| d.weight).collect::<Vec<_>>()));
    let start = deployments.next_turn();
    let usable = |i: usize| exclude != Some(list[i].id.as_str()) && serves(&list[i]);
    let cooling = |i: usize| health.get(&list[i].id).is_some_and(|h| h.is_cooling());
    let last_failure = |i: usize| health.get(&list[i].id).map_or(0, |h| h.last_failure());
    let ready = (0..order.len())
        .map(|k| order[(start + k) % order.len()])
        .find(|&i| usable(i) && !cooling(i));
    let fallback = || {
        (0..list.len())
            .filter(|&i| usable(i) || list.len() == 1)
            .min_by_key(|&i| last_failure(i))
            .unwrap_or(0)
    };
    Lookup::Ready(&list[ready.unwrap_or_else(fallback)])
}

/// One cycle of smooth weighted round-robin (nginx's): each step every entry gains its weight,
/// the richest is picked and pays the total. Plain rotation when the weights are equal.
fn weighted_schedule(weights: &[f64]) -> Vec<usize> {
    if weights.windows(2).all(|w| w[0] == w[1]) {
        return (0..weights.len()).collect();
    }
    let total: f64 = weights.iter().sum();
    let mut credit = vec![0.0; weights.len()];
    (0..WEIGHTED_CYCLE)
        .map(|_| {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                credit[i] += w;
                if credit[i] > credit[best] {
                    best = i;
                }
            }
            credit[best] -= total;
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterSettings;
    use crate::credentials::cache::Deployments;
    use crate::router::any_deployment;
    use crate::router::health::{Failure, HealthBook};
    use crate::router::tests::{deployment, snapshot};

    fn picked(snapshot: &Snapshot, book: &HealthBook, exclude: Option<&str>) -> String {
        match pick(snapshot, &book.entries(), "m", (exclude, any_deployment)) {
            Lookup::Ready(d) => d.id.clone(),
            _ => panic!("ready"),
        }
    }

    #[test]
    fn deployments_rotate_round_robin() {
        let snap = snapshot(vec![deployment("a", 1.0), deployment("b", 1.0)]);
        let book = HealthBook::default();
        let picks: Vec<String> = (0..4).map(|_| picked(&snap, &book, None)).collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
        assert!(matches!(
            pick(&snap, &book.entries(), "other", (None, any_deployment)),
            Lookup::Missing
        ));
    }

    #[test]
    fn weights_share_requests_in_proportion_and_interleaved() {
        let snap = snapshot(vec![deployment("a", 3.0), deployment("b", 1.0)]);
        let book = HealthBook::default();
        let picks: Vec<String> = (0..WEIGHTED_CYCLE)
            .map(|_| picked(&snap, &book, None))
            .collect();
        let a = picks.iter().filter(|p| *p == "a").count();
        assert_eq!(a, WEIGHTED_CYCLE * 3 / 4, "a's share");
        // Interleaved: never more than three a's in a row.
        assert!(!picks.windows(4).any(|w| w.iter().all(|p| p == "a")));
    }

    #[test]
    fn cooling_deployments_are_skipped_and_the_least_recently_failed_tried_last() {
        let settings = RouterSettings::default();
        let snap = snapshot(vec![deployment("a", 1.0), deployment("b", 1.0)]);
        let book = HealthBook::default();
        book.entry("a")
            .record(Failure::RateLimited, false, &settings);
        for _ in 0..4 {
            assert_eq!(picked(&snap, &book, None), "b", "a is cooling");
        }
        assert_eq!(
            picked(&snap, &book, Some("b")),
            "a",
            "the retry takes what is left"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        book.entry("b")
            .record(Failure::RateLimited, false, &settings);
        // Both cooling: a failed first, so a is tried.
        for _ in 0..4 {
            assert_eq!(picked(&snap, &book, None), "a");
        }
    }

    #[test]
    fn an_alias_without_deployments_says_why() {
        let mut snap = snapshot(Vec::new());
        snap.models
            .insert("empty".into(), Deployments::new(Vec::new()));
        snap.model_failures
            .insert("empty".into(), "api_key: cannot decrypt".into());
        let book = HealthBook::default();
        assert!(matches!(
            pick(&snap, &book.entries(), "empty", (None, any_deployment)),
            Lookup::Failed(r) if r.contains("decrypt")
        ));
    }
}
