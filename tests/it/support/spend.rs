//! What the spend tests share: the usage every successful mock answer reports, what it costs,
//! and the LiteLLM deployment row they send it to.

use serde_json::{json, Value};
use sidecar::credentials::cipher::Format;
use sidecar::spend::cost::cost;
use sidecar::spend::prices::PriceMap;
use sidecar::spend::Usage;

use super::db_gateway::{enc, Env};
use super::litellm_db::LiteLlmDb;

/// The usage every successful answer reports (`x-mock-usage`): prompt, completion, cached.
pub const USAGE: (u64, u64, u64) = (1000, 200, 300);

/// What one successful request costs: the usage priced as LiteLLM prices it (the sidecar's
/// cost function, shown bit-equal to `litellm.completion_cost` in cost_parity.rs).
pub fn one_request_cost() -> f64 {
    let map = PriceMap::built_in().expect("price map");
    let usage = Usage {
        prompt: USAGE.0,
        completion: USAGE.1,
        cache_read: USAGE.2,
        ..Usage::default()
    };
    cost(
        map.find("gpt-4o", "openai").expect("gpt-4o"),
        &usage,
        "openai",
    )
}

/// Deployment `d-gpt` of alias `gpt`: openai/gpt-4o on `e`'s mock provider, as LiteLLM writes
/// the row.
pub async fn insert_gpt_deployment(e: &Env, db: &LiteLlmDb) {
    let params = json!({ "model": enc("openai/gpt-4o", Format::Nacl),
        "api_key": enc("sk-provider", Format::Nacl),
        "api_base": enc(&format!("{}/v1", e.mock.base_url()), Format::Nacl) });
    db.client
        .execute(
            r#"INSERT INTO "LiteLLM_ProxyModelTable"
                 (model_id, model_name, litellm_params, created_by, updated_by)
               VALUES ('d-gpt', 'gpt', $1, 'test', 'test')"#,
            &[&params],
        )
        .await
        .expect("model row");
}

/// The one row `sql` selects, as a JSON object of its columns.
pub async fn value(db: &LiteLlmDb, sql: &str) -> Value {
    let row = db
        .client
        .query_one(&format!("SELECT to_jsonb(x) FROM ({sql}) x"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.get(0)
}
