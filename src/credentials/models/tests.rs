//! Model-row parsing: both `litellm_params` shapes, credential resolution, provider inference.

use super::*;
use crate::credentials::cipher::{encrypt, Format, Keys};
use crate::credentials::Secret;

fn keys() -> Keys {
    Keys::derive(&Secret::new("salt".into()))
}

fn targets() -> Targets {
    crate::upstream::test_targets()
}

fn row(params: Value) -> ModelRow {
    ModelRow {
        id: "id-1".into(),
        name: "gpt-4o".into(),
        params,
        info: None,
    }
}

fn enc(k: &Keys, v: &str) -> Value {
    Value::String(encrypt(v, Format::V3, k))
}

#[test]
fn params_as_object_or_as_string_holding_json() {
    let k = keys();
    let object = serde_json::json!({ "model": enc(&k, "azure/gpt-4o"), "api_key": enc(&k, "sk-a"),
        "api_base": enc(&k, "https://res.openai.azure.com"), "api_version": enc(&k, "2024-10-21"), "rpm": 10 });
    let as_string = Value::String(object.to_string());
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    for params in [object, as_string] {
        let d = deployment(
            &row(params),
            &reader,
            ParamsStorage::Encrypted,
            &HashMap::new(),
            &targets(),
        )
        .expect("valid");
        assert_eq!(d.provider, "azure");
        assert_eq!(d.auth, Some(AuthStyle::Azure));
        assert_eq!(d.credential.api_key.expose(), "sk-a");
        assert_eq!(d.credential.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(
            d.upstream.as_ref().map(|u| u.host.as_str()),
            Some("res.openai.azure.com")
        );
    }
}

#[test]
fn row_values_win_over_the_linked_credential() {
    let k = keys();
    let linked = Credential {
        name: "shared".into(),
        provider: Some("openai".into()),
        api_key: Secret::new("sk-linked".into()),
        api_base: Some("https://linked.example/v1".into()),
        api_version: Some("v-linked".into()),
        header_values: Default::default(),
        aws: None,
        minted: None,
    };
    let credentials = HashMap::from([("shared".to_string(), Arc::new(linked))]);
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    let params = serde_json::json!({ "model": enc(&k, "gpt-4o"), "litellm_credential_name": enc(&k, "shared"),
        "api_base": enc(&k, "https://row.example/v1") });
    let d = deployment(
        &row(params),
        &reader,
        ParamsStorage::Encrypted,
        &credentials,
        &targets(),
    )
    .expect("valid");
    assert_eq!(
        d.credential.api_key.expose(),
        "sk-linked",
        "missing on the row: from the credential"
    );
    assert_eq!(
        d.credential.api_base.as_deref(),
        Some("https://row.example/v1"),
        "row wins"
    );
    assert_eq!(d.credential.api_version.as_deref(), Some("v-linked"));
    assert_eq!(d.provider, "openai");

    let missing = serde_json::json!({ "model": enc(&k, "gpt-4o"), "litellm_credential_name": enc(&k, "nope") });
    let err = deployment(
        &row(missing),
        &reader,
        ParamsStorage::Encrypted,
        &credentials,
        &targets(),
    )
    .unwrap_err();
    assert!(err.contains("\"nope\" is not a loaded credential"), "{err}");
}

#[test]
fn provider_defaults_and_unknown_providers() {
    let k = keys();
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    let anthropic =
        serde_json::json!({ "model": enc(&k, "anthropic/claude"), "api_key": enc(&k, "sk-ant") });
    let d = deployment(
        &row(anthropic),
        &reader,
        ParamsStorage::Encrypted,
        &HashMap::new(),
        &targets(),
    )
    .expect("valid");
    assert_eq!(
        d.upstream.as_ref().map(|u| u.to_string()).as_deref(),
        Some("https://api.anthropic.com")
    );
    // The dashboard's display casing, read as LiteLLM reads it (lowercased).
    let cased = serde_json::json!({
        "model": enc(&k, "claude-3-5-sonnet"),
        "custom_llm_provider": enc(&k, "Anthropic"),
        "api_key": enc(&k, "sk-ant"),
    });
    let d = deployment(
        &row(cased),
        &reader,
        ParamsStorage::Encrypted,
        &HashMap::new(),
        &targets(),
    )
    .expect("valid");
    assert_eq!(d.auth, Some(AuthStyle::Anthropic));
    let custom = serde_json::json!({ "model": enc(&k, "somevendor/m"), "api_key": enc(&k, "sk") });
    let d = deployment(
        &row(custom),
        &reader,
        ParamsStorage::Encrypted,
        &HashMap::new(),
        &targets(),
    )
    .expect("valid");
    assert!(d.upstream.is_none() && d.auth.is_none() && d.target.is_none());
}

#[test]
fn plaintext_env_references_and_bad_shapes_fail_the_row() {
    let k = keys();
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    let cases = [
        (
            serde_json::json!({ "model": "gpt-4o", "api_key": enc(&k, "sk") }),
            "model: cannot decrypt",
        ),
        (
            serde_json::json!({ "api_key": enc(&k, "os.environ/OPENAI_API_KEY") }),
            "not resolved for database rows",
        ),
        (
            serde_json::json!({ "model": enc(&k, "gpt-4o") }),
            "no api_key",
        ),
        (
            Value::String("not json".into()),
            "does not hold a JSON object",
        ),
        (serde_json::json!([1, 2]), "neither an object"),
    ];
    for (params, expected) in cases {
        let err = deployment(
            &row(params),
            &reader,
            ParamsStorage::Encrypted,
            &HashMap::new(),
            &targets(),
        )
        .unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn an_explicit_custom_llm_provider_wins_over_the_model_prefix_as_in_litellm() {
    let k = keys();
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    let load = |model: &str, provider: &str| {
        let params = serde_json::json!({ "model": enc(&k, model), "api_key": enc(&k, "sk-x"),
            "api_base": enc(&k, "https://llm.internal/v1"), "custom_llm_provider": enc(&k, provider) });
        let storage = ParamsStorage::Encrypted;
        deployment(&row(params), &reader, storage, &HashMap::new(), &targets()).expect("valid")
    };
    // A self-hosted model on an OpenAI-compatible server keeps its whole name.
    let hosted = load("meta-llama/Llama-3-8B", "openai");
    assert_eq!(
        (hosted.provider.as_str(), hosted.model.as_str()),
        ("openai", "meta-llama/Llama-3-8B")
    );
    // The provider's own prefix is removed.
    let azure = load("azure/my-deployment", "Azure");
    assert_eq!(
        (azure.provider.as_str(), azure.model.as_str()),
        ("azure", "my-deployment")
    );
}

#[test]
fn prices_are_read_from_model_info_and_params_as_litellm_stores_them() {
    let k = keys();
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    // Numbers stay numbers in a stored row; a string (a price typed as text) is encrypted.
    let params = serde_json::json!({ "model": enc(&k, "azure/prod-4o"), "api_key": enc(&k, "sk-a"),
        "api_base": enc(&k, "https://res.openai.azure.com"), "input_cost_per_token": 2e-6,
        "output_cost_per_token": enc(&k, "8e-06"), "base_model": enc(&k, "azure/gpt-4o") });
    let info = serde_json::json!({ "id": "id-1", "output_cost_per_token": 1.0,
        "cache_read_input_token_cost": 1e-7 });
    for info in [info.clone(), Value::String(info.to_string())] {
        let mut row = row(params.clone());
        row.info = Some(info);
        let d = deployment(
            &row,
            &reader,
            ParamsStorage::Encrypted,
            &HashMap::new(),
            &targets(),
        )
        .expect("valid");
        let own = d.pricing.own.as_ref().expect("own prices");
        assert_eq!(own.base.input, Some(2e-6));
        assert_eq!(own.base.output, Some(8e-6), "litellm_params win");
        assert_eq!(own.base.cache_read, Some(1e-7), "model_info's fill in");
        assert_eq!(d.pricing.base_model.as_deref(), Some("azure/gpt-4o"));
    }
    let mut row = row(params);
    row.info = Some(Value::String("not json".into()));
    let d = deployment(
        &row,
        &reader,
        ParamsStorage::Encrypted,
        &HashMap::new(),
        &targets(),
    )
    .expect("a model_info LiteLLM would ignore is ignored");
    assert_eq!(d.pricing.own.as_ref().and_then(|p| p.base.cache_read), None);
}

#[test]
fn bedrock_rows_sign_with_their_keys_or_a_linked_credentials() {
    let k = keys();
    let reader = ValueReader {
        keys: Some(&k),
        env: None,
    };
    let aws_values = serde_json::json!({ "aws_access_key_id": enc(&k, "AKID"),
        "aws_secret_access_key": enc(&k, "s3cret"), "aws_region_name": enc(&k, "eu-west-1") });
    let linked = reader
        .credential("aws-prod", aws_values.as_object().expect("object"), None)
        .expect("a credential row with AWS keys");
    assert!(linked.aws.is_some() && linked.api_key.is_empty());
    let credentials = HashMap::from([("aws-prod".to_string(), Arc::new(linked))]);
    let build = |params: Value| {
        deployment(
            &row(params),
            &reader,
            ParamsStorage::Encrypted,
            &credentials,
            &targets(),
        )
    };
    let host = |d: &Deployment| d.upstream.as_ref().map(|u| u.host.clone());

    // The credential's keys, the row's region; the id without LiteLLM's API prefix.
    let d = build(
        serde_json::json!({ "model": enc(&k, "bedrock/converse/anthropic.claude-v2:1"),
        "litellm_credential_name": enc(&k, "aws-prod"), "aws_region_name": enc(&k, "us-west-2") }),
    )
    .expect("valid");
    assert_eq!(d.model, "anthropic.claude-v2:1");
    assert_eq!(
        host(&d).as_deref(),
        Some("bedrock-runtime.us-west-2.amazonaws.com")
    );
    let aws = d.credential.aws.as_ref().expect("signs");
    assert_eq!(aws.region.as_deref(), Some("us-west-2"));
    assert_eq!(
        d.credential.auth_for(&AuthStyle::OpenAi),
        AuthStyle::AwsSigV4
    );

    // A region path names the region; the credential's region is the last resort.
    let d = build(
        serde_json::json!({ "model": enc(&k, "bedrock/us-east-2/meta.llama3-8b"),
        "litellm_credential_name": enc(&k, "aws-prod") }),
    )
    .expect("valid");
    assert_eq!(d.model, "meta.llama3-8b");
    assert_eq!(
        host(&d).as_deref(),
        Some("bedrock-runtime.us-east-2.amazonaws.com")
    );
    // Priced by the region's own entry first, as LiteLLM looks it up.
    assert_eq!(
        d.pricing.regional_model.as_deref(),
        Some("us-east-2/meta.llama3-8b")
    );
    let d = build(
        serde_json::json!({ "model": enc(&k, "bedrock/meta.llama3-8b"),
        "litellm_credential_name": enc(&k, "aws-prod") }),
    )
    .expect("valid");
    assert_eq!(
        host(&d).as_deref(),
        Some("bedrock-runtime.eu-west-1.amazonaws.com")
    );
    assert_eq!(d.pricing.regional_model, None);

    // A Bedrock API key wins over AWS keys, as in LiteLLM.
    let d = build(
        serde_json::json!({ "model": enc(&k, "bedrock/x"), "api_key": enc(&k, "bk"),
        "aws_access_key_id": enc(&k, "AKID"), "aws_secret_access_key": enc(&k, "s3cret"),
        "aws_region_name": enc(&k, "us-east-1") }),
    )
    .expect("valid");
    assert!(d.credential.aws.is_none());
    assert_eq!(d.credential.api_key.expose(), "bk");
    assert_eq!(d.credential.auth_for(&AuthStyle::OpenAi), AuthStyle::OpenAi);

    // Nothing to sign with, or nowhere to send: refused, naming the field.
    let err = build(serde_json::json!({ "model": enc(&k, "bedrock/x"),
        "aws_region_name": enc(&k, "us-east-1") }))
    .expect_err("no keys");
    assert!(err.contains("aws_access_key_id"), "{err}");
    let err = build(serde_json::json!({ "model": enc(&k, "bedrock/x"), "api_key": enc(&k, "bk") }))
        .expect_err("no region");
    assert!(err.contains("aws_region_name"), "{err}");
}
