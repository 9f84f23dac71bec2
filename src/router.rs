//! The model router: what serves a request on a model route, and what happens when a deployment
//! fails. To change how requests are spread over deployments, cooled down or moved, read this
//! folder; its settings (`router:` in the config) are [`crate::config::RouterSettings`], and what
//! it knows of each provider is [`crate::providers::PROVIDERS`].
//!
//! - [`binding`]: a request bound to what serves it: a credential route's key, a `model:`
//!   route's next deployment, or (`dispatch: model`) a deployment reached through its
//!   provider's OpenAI-compatible API.
//! - [`pick`]: the next deployment of an alias (weighted turns, cooled deployments skipped).
//! - [`health`]: failures and cooldowns by deployment, kept while the deployment is in the
//!   snapshot.
//!
//! One [`Router`] serves the process (the proxy, the readiness probe and the start-up report
//! share it); it holds the deployments' health, so a refresh keeps a cooldown and a deployment
//! that leaves the snapshot leaves the router too. The deployments themselves, and the router's
//! turn among them, are in the request's snapshot. The attempts of one `dispatch: model`
//! request (the body sent, one retry on another deployment) are request-phase code in
//! `proxy::unified::attempts`, which asks the router what happens next ([`Router::failed`]).

pub mod binding;
pub mod health;
pub mod pick;

use std::sync::Arc;

use tracing::warn;

use crate::config::RouterSettings;
use crate::credentials::models::Deployment;
use crate::credentials::{Lookup, Snapshot};
use health::{Failure, HealthBook};

pub use binding::{
    bind, bind_deployment, bind_deployment_at, compat_path, Binding, RouteBinding, Unbound,
};

/// The model router's state: the health of the deployments that failed.
#[derive(Debug, Default)]
pub struct Router {
    health: HealthBook,
}

/// Which deployments can take a request: those of the API it needs (a Messages API request
/// goes only to deployments that take it).
pub type Serves = fn(&Deployment) -> bool;

/// Every deployment (a request any deployment can take).
pub fn any_deployment(_: &Deployment) -> bool {
    true
}

impl Router {
    /// The next deployment of `alias` in `snapshot` (the request's), skipping those cooling
    /// down and `exclude` (see the `pick` module).
    pub fn pick<'s>(
        &self,
        snapshot: &'s Snapshot,
        alias: &str,
        exclude: Option<&str>,
    ) -> Lookup<'s, &'s Arc<Deployment>> {
        self.pick_serving(snapshot, alias, exclude, any_deployment)
    }

    /// [`pick`](Self::pick) among the deployments that `serves` the request: the one way to
    /// pick, since it also prunes the health of deployments `snapshot` no longer holds.
    pub fn pick_serving<'s>(
        &self,
        snapshot: &'s Snapshot,
        alias: &str,
        exclude: Option<&str>,
        serves: Serves,
    ) -> Lookup<'s, &'s Arc<Deployment>> {
        self.health.prune(snapshot);
        pick::pick(snapshot, &self.health.entries(), alias, (exclude, serves))
    }

    /// Records that `deployment`, serving `alias` from `snapshot`, failed: it counts toward the
    /// deployment's cooldown (a cooldown is logged and counted). With `retry` (nothing has
    /// reached the client, no retry yet: which deployments can take the request), returns the
    /// deployment of the alias the next attempt moves to, if there is another.
    pub fn failed(
        &self,
        snapshot: &Snapshot,
        alias: &str,
        deployment: &Deployment,
        failure: Failure,
        settings: &RouterSettings,
        retry: Option<Serves>,
    ) -> Option<Arc<Deployment>> {
        self.health.prune(snapshot);
        let alone = snapshot.models.get(alias).is_none_or(|d| d.all().len() < 2);
        let health = self.health.entry(&deployment.id);
        if health.record(failure, alone, settings) {
            crate::metrics::record_cooldown(alias, &deployment.id);
            warn!(
                "model {alias}: deployment {} cools down for {:?} after {failure:?}",
                deployment.id, settings.cooldown_time
            );
        }
        let serves = match retry {
            Some(serves) if !alone => serves,
            _ => return None,
        };
        match self.pick_serving(snapshot, alias, Some(&deployment.id), serves) {
            Lookup::Ready(next) if next.id != deployment.id && serves(next) => Some(next.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credentials::cache::Deployments;
    use crate::credentials::{Credential, CredentialCache, Secret};

    /// A deployment `id` of weight `weight`, with no upstream.
    pub(crate) fn deployment(id: &str, weight: f64) -> Arc<Deployment> {
        Arc::new(Deployment {
            id: id.into(),
            provider: "openai".into(),
            model: id.into(),
            model_json: format!("{id:?}"),
            weight,
            credential: Arc::new(Credential {
                name: id.into(),
                provider: None,
                api_key: Secret::new(id.into()),
                api_base: None,
                api_version: None,
                header_values: Default::default(),
                aws: None,
                minted: None,
            }),
            upstream: None,
            upstream_text: None,
            target: None,
            auth: None,
            pricing: Default::default(),
            spend_names: Default::default(),
            bedrock_mantle: false,
        })
    }

    /// A snapshot serving `list` as alias `m`.
    pub(crate) fn snapshot(list: Vec<Arc<Deployment>>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.models.insert("m".into(), Deployments::new(list));
        snapshot
    }

    fn published(cache: &CredentialCache, list: Vec<Arc<Deployment>>) -> Arc<Snapshot> {
        cache.publish(snapshot(list));
        cache.snapshot()
    }

    #[test]
    fn a_failure_moves_the_next_attempt_to_another_deployment() {
        let (router, settings) = (Router::default(), RouterSettings::default());
        let snap = snapshot(vec![deployment("a", 1.0), deployment("b", 1.0)]);
        let a = deployment("a", 1.0);
        let next = router.failed(
            &snap,
            "m",
            &a,
            Failure::Unavailable,
            &settings,
            Some(any_deployment),
        );
        assert_eq!(next.map(|d| d.id.clone()).as_deref(), Some("b"));
        let no_retry = router.failed(&snap, "m", &a, Failure::Unavailable, &settings, None);
        assert!(no_retry.is_none(), "a retry was already made");
        let alone = snapshot(vec![deployment("a", 1.0)]);
        let next = router.failed(
            &alone,
            "m",
            &a,
            Failure::RateLimited,
            &settings,
            Some(any_deployment),
        );
        assert!(next.is_none(), "nowhere else to go");
    }

    #[test]
    fn a_pick_and_a_retry_go_only_to_deployments_that_take_the_request() {
        fn only_b_or_c(d: &Deployment) -> bool {
            d.id != "a"
        }
        let (router, settings) = (Router::default(), RouterSettings::default());
        let (a, b) = (deployment("a", 1.0), deployment("b", 1.0));
        let snap = snapshot(vec![a.clone(), b.clone(), deployment("c", 1.0)]);
        for _ in 0..6 {
            match router.pick_serving(&snap, "m", None, only_b_or_c) {
                Lookup::Ready(d) => assert_ne!(d.id, "a"),
                _ => panic!("ready"),
            }
        }
        // b fails: the retry goes to c, never to a, whatever the turn.
        for _ in 0..6 {
            let next = router.failed(
                &snap,
                "m",
                &b,
                Failure::Unavailable,
                &settings,
                Some(only_b_or_c),
            );
            assert_eq!(next.map(|d| d.id.clone()).as_deref(), Some("c"));
        }
        // Alone with a deployment that does not take it: no retry.
        let pair = snapshot(vec![a, b.clone()]);
        let next = router.failed(
            &pair,
            "m",
            &b,
            Failure::Unavailable,
            &settings,
            Some(only_b_or_c),
        );
        assert!(next.is_none());
    }

    #[test]
    fn a_deployment_that_leaves_the_snapshot_leaves_its_health_behind() {
        let (router, settings) = (Router::default(), RouterSettings::default());
        let cache = CredentialCache::default();
        let (a, b) = (deployment("a", 1.0), deployment("b", 1.0));
        let both = published(&cache, vec![a.clone(), b.clone()]);
        router.failed(
            &both,
            "m",
            &a,
            Failure::RateLimited,
            &settings,
            Some(any_deployment),
        );
        assert!(router.health.entries().contains_key("a"));

        // A refresh drops a: the router's first look at the new snapshot forgets it.
        let without_a = published(&cache, vec![b.clone()]);
        router.pick(&without_a, "m", None);
        assert!(!router.health.entries().contains_key("a"), "evicted");

        // A request that still holds the older snapshot does not bring it back for good: the
        // next snapshot without a evicts it again, and one that holds a again finds it healthy.
        router.failed(
            &both,
            "m",
            &a,
            Failure::RateLimited,
            &settings,
            Some(any_deployment),
        );
        let still_without_a = published(&cache, vec![b.clone()]);
        router.pick(&still_without_a, "m", None);
        assert!(!router.health.entries().contains_key("a"));
        let back = published(&cache, vec![a, b]);
        let picks: Vec<String> = (0..2)
            .map(|_| match router.pick(&back, "m", None) {
                Lookup::Ready(d) => d.id.clone(),
                _ => panic!("ready"),
            })
            .collect();
        assert!(
            picks.contains(&"a".to_string()),
            "a is not cooling: {picks:?}"
        );
    }

    #[test]
    fn an_older_snapshot_prunes_nothing() {
        let (router, settings) = (Router::default(), RouterSettings::default());
        let cache = CredentialCache::default();
        let (a, b) = (deployment("a", 1.0), deployment("b", 1.0));
        let old = published(&cache, vec![b.clone()]);
        let new = published(&cache, vec![a.clone(), b]);
        router.failed(
            &new,
            "m",
            &a,
            Failure::RateLimited,
            &settings,
            Some(any_deployment),
        );
        router.pick(&old, "m", None);
        assert!(
            router.health.entries().contains_key("a"),
            "a is still served"
        );
    }
}
