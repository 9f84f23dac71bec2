//! The Grafana dashboard (`k8s/grafana/sidecar-dashboard.json`) queries only what the sidecar
//! exports: every metric a panel's query names is a family on a live sidecar's `/metrics`
//! page, and every label the query uses on it (selectors, `by (…)`) is on that family's
//! samples. The PromQL reading is in [`promql`].

mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::gateway::{gateway_config, start_with_test_credentials};
use crate::support::http::{admin_get, post};
use crate::support::mock_provider::MockProvider;
use crate::support::wait_until_async;
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/k8s/grafana/sidecar-dashboard.json"
);

/// Suffixes of a histogram's or summary's samples, beside its family name.
const SAMPLE_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// The metric families of a Prometheus text page: name → label names seen on its samples.
struct Families(BTreeMap<String, BTreeSet<String>>);

impl Families {
    fn parse(page: &str) -> Self {
        let mut families: BTreeMap<String, BTreeSet<String>> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
            .map(|name| (name.to_string(), BTreeSet::new()))
            .collect();
        for sample in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, rest)) = sample.split_once('{') else {
                continue;
            };
            let Some(family) = Self::family_of(&families, name) else {
                continue;
            };
            let labels = rest
                .split(',')
                .filter_map(|pair| Some(pair.split_once('=')?.0.trim().to_string()));
            families.get_mut(&family).expect("family").extend(labels);
        }
        Families(families)
    }

    /// The family a sample or query name belongs to: itself, or a histogram's or summary's
    /// family with `_bucket`, `_sum` or `_count` stripped.
    fn family_of(families: &BTreeMap<String, BTreeSet<String>>, name: &str) -> Option<String> {
        if families.contains_key(name) {
            return Some(name.to_string());
        }
        SAMPLE_SUFFIXES
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|family| families.contains_key(*family))
            .map(str::to_string)
    }

    /// What is wrong with `metric` used with `labels`, if anything.
    fn problems(&self, metric: &str, labels: &[String]) -> Vec<String> {
        let Some(family) = Self::family_of(&self.0, metric) else {
            return vec![format!(
                "metric `{metric}` is not exported (no `# TYPE {metric}`)"
            )];
        };
        let known = &self.0[&family];
        labels
            .iter()
            .filter(|label| !known.contains(*label))
            .map(|label| format!("label `{label}` is not on `{family}` (it has {known:?})"))
            .collect()
    }
}

/// (panel title, query) for every target of every panel, rows' nested panels included. A
/// panel with queries must read the data source the `datasource` variable picks.
fn queries(panels: &[Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["targets"].is_array() {
            let source = &panel["datasource"]["uid"];
            assert_eq!(source, "${datasource}", "panel {title:?}: its data source");
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str();
            let expr = expr.unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            out.push((title.to_string(), expr.to_string()));
        }
        queries(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
    }
}

/// (variable, metric, label) of every `label_values(metric, label)` variable query.
fn label_values_queries(variables: &[Value]) -> Vec<(String, String, String)> {
    variables
        .iter()
        .filter_map(|v| {
            // Grafana writes a variable's query as an object, older versions as a string.
            let query = v["query"]["query"].as_str().or(v["query"].as_str());
            let inside = query?.strip_prefix("label_values(")?.strip_suffix(')')?;
            let (metric, label) = inside.split_once(',')?;
            let name = v["name"].as_str().unwrap_or("?").to_string();
            Some((name, metric.trim().to_string(), label.trim().to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_exported_metrics_and_labels() {
    let _turn = crate::support::lock::shared().await;
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["datasource", "route"]);
    let label_values = label_values_queries(variables);
    assert_eq!(label_values.len(), 1, "the route variable's query");
    let mut all = Vec::new();
    queries(dashboard["panels"].as_array().expect("panels"), &mut all);
    assert!(all.len() >= 10, "only {} queries", all.len());

    // A vector metric has no sample (and no labels to check) until it has a series: a
    // success and a sidecar error (requests, latency), a credential that fails to load (the
    // test store's broken-cred) and a reload give every family the dashboard reads its labels.
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let config = gateway_config(&mock.base_url(), &ca.write_ca_file(dir.path()));
    let sidecar = start_with_test_credentials(&config).await;
    assert_eq!(post(&sidecar, "/openai/chat/completions").await.0, 200);
    assert_eq!(post(&sidecar, "/missing/x").await.0, 503);
    sidecar.signal("HUP");
    assert!(sidecar.wait_for_output("config reload: applied").await);
    let complete = wait_until_async(Duration::from_secs(10), || async {
        let page = admin_get(&sidecar, "/metrics").await.1;
        page.contains("sidecar_config_reloads_total{")
            && page.contains("route=\"missing\"")
            && page.contains("sidecar_upstream_ttfb_seconds_bucket{")
    })
    .await;
    let page = admin_get(&sidecar, "/metrics").await.1;
    assert!(complete, "series missing from\n{page}");
    let exported = Families::parse(&page);

    let mut problems = Vec::new();
    for (variable, metric, label) in &label_values {
        for problem in exported.problems(metric, std::slice::from_ref(label)) {
            problems.push(format!("variable {variable:?}: {problem}"));
        }
    }
    for (panel, expr) in &all {
        let uses = promql::metric_uses(expr);
        if uses.is_empty() {
            problems.push(format!("panel {panel:?}: no metric in `{expr}`"));
        }
        for metric in uses {
            for problem in exported.problems(&metric.name, &metric.labels) {
                problems.push(format!("panel {panel:?}: {problem}\n    in `{expr}`"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
