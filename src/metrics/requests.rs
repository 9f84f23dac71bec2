//! A finished request's metrics (`sidecar_requests_total`, `sidecar_request_duration_seconds`,
//! `sidecar_upstream_ttfb_seconds`), through handles each route holds.
//!
//! `with_label_values` hashes the label values (SipHash) and takes the family's read lock: three
//! times per request, ~500 instructions (callgrind; benches/README.md). A route resolves each series
//! the first time it is used and keeps it, so a request costs three atomic updates. Series
//! appear on `/metrics` when first used, as before; after a reload the new routes find the same
//! series by their labels, so counts carry on.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus::{Histogram, IntCounter};

use super::{status_class, REQUESTS, REQUEST_DURATION, UPSTREAM_TTFB};

/// Who answered the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The provider's answer passed through.
    Provider,
    /// The sidecar answered itself (a refusal, the cap, a missing credential, a failure).
    Sidecar,
}

impl Origin {
    /// The `origin` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Provider => "provider",
            Origin::Sidecar => "sidecar",
        }
    }
}

/// The status classes, in the order of a route's request counters.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// One route's request series, resolved on first use.
pub struct RouteMetrics {
    /// The `route` label.
    route: String,
    /// `sidecar_requests_total` by status class and origin ([`CLASSES`] × provider, sidecar).
    requests: [OnceLock<IntCounter>; 12],
    ttfb: OnceLock<Histogram>,
    duration: OnceLock<Histogram>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The series of requests no route matched (`route="-"`).
static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new("-"));

impl RouteMetrics {
    /// Handles for the route named `route`; nothing is resolved or exported yet.
    pub fn new(route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            requests: Default::default(),
            ttfb: OnceLock::new(),
            duration: OnceLock::new(),
        }
    }

    fn requests(&self, status: u16, origin: Origin) -> &IntCounter {
        let class = status_class(status);
        let class_at = CLASSES.iter().position(|c| *c == class).unwrap_or(5);
        let at = class_at * 2 + usize::from(origin == Origin::Sidecar);
        self.requests[at].get_or_init(|| {
            REQUESTS.with_label_values(&[self.route.as_str(), class, origin.as_str()])
        })
    }
}

/// Records one finished request, on its route's series (`None`: no route matched).
pub fn record_request(
    route: Option<&RouteMetrics>,
    status: u16,
    origin: Origin,
    ttfb: Option<Duration>,
    total: Duration,
) {
    let route = route.unwrap_or(&UNROUTED);
    route.requests(status, origin).inc();
    if let Some(ttfb) = ttfb {
        route
            .ttfb
            .get_or_init(|| UPSTREAM_TTFB.with_label_values(&[route.route.as_str()]))
            .observe(ttfb.as_secs_f64());
    }
    route
        .duration
        .get_or_init(|| REQUEST_DURATION.with_label_values(&[route.route.as_str()]))
        .observe(total.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(route: &str, class: &str, origin: &str) -> u64 {
        REQUESTS.with_label_values(&[route, class, origin]).get()
    }

    #[test]
    fn each_status_class_and_origin_lands_on_its_own_series() {
        let route = RouteMetrics::new("requests-test");
        let cases = [
            (101, Origin::Provider, "1xx"),
            (200, Origin::Provider, "2xx"),
            (200, Origin::Sidecar, "2xx"),
            (302, Origin::Provider, "3xx"),
            (429, Origin::Sidecar, "4xx"),
            (503, Origin::Provider, "5xx"),
            (503, Origin::Sidecar, "5xx"),
            (0, Origin::Sidecar, "none"),
        ];
        for (i, (status, origin, class)) in cases.into_iter().enumerate() {
            let before = count("requests-test", class, origin.as_str());
            // Twice: the second goes through the handle the first resolved.
            for _ in 0..2 {
                record_request(Some(&route), status, origin, None, Duration::ZERO);
            }
            assert_eq!(
                count("requests-test", class, origin.as_str()),
                before + 2,
                "case {i}: {status} from {origin:?}"
            );
        }
        assert_eq!(count("requests-test", "1xx", "sidecar"), 0);
    }

    #[test]
    fn a_reloaded_route_carries_on_counting_the_same_series() {
        let before = count("requests-reload", "2xx", "provider");
        // Each load of the config makes the route, and its handles, anew.
        for _load in 0..2 {
            let route = RouteMetrics::new("requests-reload");
            record_request(Some(&route), 200, Origin::Provider, None, Duration::ZERO);
        }
        assert_eq!(count("requests-reload", "2xx", "provider"), before + 2);
        let histogram = REQUEST_DURATION.with_label_values(&["requests-reload"]);
        assert!(histogram.get_sample_count() >= 2);
    }
}
