//! The sidecar answers a LiteLLM virtual key as LiteLLM's proxy does: the same status, the same
//! error `type` and the same four error fields, case by case, and for a key let through the same
//! `GET /v1/models` list, with LiteLLM's answer taken from
//! the real `litellm` package (pinned in `scripts/bootstrap.sh`, run from `target/litellm-venv`
//! by `tests/parity/litellm_auth.py`), never from memory. Each case is one key (and team) row,
//! written into PostgreSQL for the sidecar and handed to LiteLLM's own checks with the same
//! values.

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sidecar::credentials::cipher::Format;

/// The aliases the deployments serve.
const SERVED: [&str; 2] = ["claude", "gpt"];

/// One request: a key (its row's columns, `None`: no key presented), its team, the model asked.
struct Case {
    name: &'static str,
    model: &'static str,
    key: Option<Value>,
    team: Option<Value>,
    /// The key is presented but has no row (never created, or deleted).
    absent: bool,
}

fn case(name: &'static str, model: &'static str, key: Value) -> Case {
    Case {
        name,
        model,
        key: Some(key),
        team: None,
        absent: false,
    }
}

fn team_case(name: &'static str, model: &'static str, key: Value, team: Value) -> Case {
    Case {
        team: Some(team),
        ..case(name, model, key)
    }
}

/// The cases: each way LiteLLM refuses a key on `/chat/completions`, and its neighbours that
/// pass. Column names are LiteLLM's (`UserAPIKeyAuth`, `LiteLLM_TeamTable`).
fn cases() -> Vec<Case> {
    vec![
        Case {
            key: None,
            ..case("no key", "gpt", Value::Null)
        },
        Case {
            absent: true,
            ..case("unknown key", "gpt", json!({}))
        },
        case("key allowed every model", "gpt", json!({})),
        case(
            "key may call the model",
            "gpt",
            json!({ "models": ["gpt"] }),
        ),
        case(
            "key may not call the model",
            "claude",
            json!({ "models": ["gpt"] }),
        ),
        case(
            "key with all-proxy-models",
            "claude",
            json!({ "models": ["all-proxy-models"] }),
        ),
        case("key blocked", "gpt", json!({ "blocked": true })),
        case(
            "key expired",
            "gpt",
            json!({ "expires": "2020-01-01T00:00:00" }),
        ),
        case(
            "key expires later",
            "gpt",
            json!({ "expires": "2099-01-01T00:00:00" }),
        ),
        case(
            "key spend at max_budget",
            "gpt",
            json!({ "max_budget": 1.0, "spend": 1.0 }),
        ),
        case(
            "key spend over max_budget",
            "gpt",
            json!({ "max_budget": 1.0, "spend": 1.5 }),
        ),
        case(
            "key spend under max_budget",
            "gpt",
            json!({ "max_budget": 1.0, "spend": 0.5 }),
        ),
        team_case(
            "team may call the model",
            "gpt",
            json!({}),
            json!({ "models": ["gpt"] }),
        ),
        team_case(
            "team may not call the model",
            "claude",
            json!({}),
            json!({ "models": ["gpt"] }),
        ),
        team_case("team blocked", "gpt", json!({}), json!({ "blocked": true })),
        team_case(
            "team spend over max_budget",
            "gpt",
            json!({}),
            json!({ "max_budget": 1.0, "spend": 2.0 }),
        ),
    ]
}

/// The key a case presents.
fn secret(index: usize) -> String {
    format!("sk-parity-{index}")
}

/// A SQL literal for a JSON value: a string, a number, a boolean or a text array.
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(literal).collect();
            format!("ARRAY[{}]::text[]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// Writes `columns` (plus `fixed`) into `table` of `db`'s schema.
async fn insert(db: &TestDb, table: &str, fixed: &[(&str, String)], columns: &Value) {
    let mut names: Vec<String> = fixed.iter().map(|(n, _)| n.to_string()).collect();
    let mut values: Vec<String> = fixed.iter().map(|(_, v)| v.clone()).collect();
    for (name, value) in columns.as_object().into_iter().flatten() {
        names.push(name.clone());
        values.push(literal(value));
    }
    db.exec(&format!(
        r#"INSERT INTO {{schema}}."{table}" ({}) VALUES ({})"#,
        names.join(", "),
        values.join(", ")
    ))
    .await;
}

/// Writes every case's rows, and the `gpt` and `claude` deployments; starts a sidecar with
/// LiteLLM keys on and a `dispatch: model` route `/v1`.
async fn start(e: &Env, db: &TestDb, cases: &[Case]) -> SidecarProcess {
    let base = format!("{}/v1", e.mock.base_url());
    for alias in SERVED {
        let params = json!({ "model": enc(&format!("openai/{alias}-x"), Format::Nacl),
            "api_key": enc("sk-provider", Format::Nacl), "api_base": enc(&base, Format::Nacl) });
        db.put_model(&format!("d-{alias}"), alias, params).await;
    }
    for (index, case) in cases.iter().enumerate() {
        let (Some(key), false) = (&case.key, case.absent) else {
            continue;
        };
        let digest = format!("{:x}", Sha256::digest(secret(index).as_bytes()));
        let mut fixed = vec![("token", format!("'{digest}'"))];
        if let Some(team) = &case.team {
            let id = format!("team-{index}");
            insert(
                db,
                "LiteLLM_TeamTable",
                &[("team_id", format!("'{id}'"))],
                team,
            )
            .await;
            fixed.push(("team_id", format!("'{id}'")));
        }
        insert(db, "LiteLLM_VerificationToken", &fixed, key).await;
    }
    let routes = vec![json!({ "name": "v1", "path_prefix": "/v1", "dispatch": "model" })];
    let mut config = gateway(e, db, &TestDb::url(None), "1h", false, routes);
    config["access"] = json!({ "litellm_keys": true });
    SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await
}

/// LiteLLM's answers, by case name.
async fn litellm_answers(cases: &[Case]) -> Value {
    let input: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let mut key = c.key.clone();
            if let Some(Value::Object(k)) = key.as_mut() {
                k.insert("token".into(), json!(format!("parity-{index}")));
                if c.team.is_some() {
                    k.insert("team_id".into(), json!(format!("team-{index}")));
                }
            }
            let team = c.team.clone().map(|mut t| {
                t["team_id"] = json!(format!("team-{index}"));
                t
            });
            json!({ "name": c.name, "model": c.model, "key": key, "team": team,
                    "absent": c.absent, "served": SERVED })
        })
        .collect();
    crate::support::litellm_venv::ask("litellm_auth.py", Value::Array(input)).await
}

/// The sidecar's answer to one case: the status and, for a refusal, the error object; when it
/// is let through, the aliases `GET /v1/models` lists for the key, sorted.
async fn sidecar_answer(e: &Env, sidecar: &SidecarProcess, index: usize, c: &Case) -> Value {
    let before = e.mock.requests().len();
    let mut request = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .body(json!({ "model": c.model, "messages": [] }).to_string());
    if c.key.is_some() {
        request = request.header("authorization", format!("Bearer {}", secret(index)));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let sent = e.mock.requests().len() > before;
    assert_eq!(
        sent,
        status == 200,
        "{}: sent upstream on {status}?",
        c.name
    );
    if status == 200 {
        let list: Value = e
            .client
            .get(format!("{}/v1/models", sidecar.base_url()))
            .header("authorization", format!("Bearer {}", secret(index)))
            .send()
            .await
            .expect("GET /v1/models")
            .json()
            .await
            .expect("a model list");
        let mut models: Vec<&str> = list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str())
            .collect();
        models.sort();
        json!({ "status": 200, "models": models })
    } else {
        json!({ "status": status, "error": body["error"] })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_refusals_and_model_lists_are_litellms_case_by_case() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let cases = cases();
    let sidecar = start(&e, &db, &cases).await;
    let litellm = litellm_answers(&cases).await;
    let mut table = vec![format!(
        "{:<30} | {:<32} | {:<32}",
        "case", "LiteLLM 1.106.2", "sidecar"
    )];
    let mut differ = vec![];
    for (index, c) in cases.iter().enumerate() {
        let ours = sidecar_answer(&e, &sidecar, index, c).await;
        let theirs = &litellm[c.name];
        table.push(format!(
            "{:<30} | {:<32} | {:<32}",
            c.name,
            summary(theirs),
            summary(&ours)
        ));
        let same = ours["status"] == theirs["status"]
            && models(&ours) == models(theirs)
            && ours["error"]["type"] == theirs["error"]["type"]
            && ours["error"]["code"] == theirs["error"]["code"]
            && fields(&ours) == fields(theirs);
        if !same {
            differ.push(format!("{}: LiteLLM {theirs}, sidecar {ours}", c.name));
        }
        if let Some(message) = ours["error"]["message"].as_str() {
            assert!(!message.contains(&secret(index)), "the key in: {message}");
        }
    }
    println!("{}", table.join("\n"));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// An answer in a table cell: the status, and the error type or the models listed.
fn summary(answer: &Value) -> String {
    match answer["error"]["type"].as_str() {
        Some(kind) => format!("{} {kind}", answer["status"]),
        None => format!("{} {}", answer["status"], models(answer).join(",")),
    }
}

/// The models an answer lists, sorted.
fn models(answer: &Value) -> Vec<String> {
    let mut names: Vec<String> = answer["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The error object's field names, sorted (`None` without an error).
fn fields(answer: &Value) -> Option<Vec<String>> {
    let mut names: Vec<String> = answer["error"].as_object()?.keys().cloned().collect();
    names.sort();
    Some(names)
}
