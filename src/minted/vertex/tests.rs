use boring::rsa::Rsa;
use boring::sign::Verifier;

use super::*;

fn account(key: &PKey<Private>) -> String {
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().expect("pem")).expect("utf-8");
    json!({
        "type": "service_account", "project_id": "proj-from-key", "private_key_id": "kid-1",
        "private_key": pem, "client_email": "sa@proj.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.example.com/token",
    })
    .to_string()
}

use crate::secret::fields as values;

#[test]
fn the_assertion_is_signed_with_the_accounts_key_and_names_its_endpoint() {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let text = account(&key);
    let mut row = values(&[("vertex_credentials", &text), ("api_version", "x")]);
    let (minted, place) = from_fields("v", &mut row).expect("valid").expect("vertex");
    assert_eq!(place.project, "proj-from-key");
    assert_eq!(place.location, DEFAULT_LOCATION);
    assert_eq!(minted.report()["grant"], "vertex_service_account");
    assert!(row.contains_key("api_version") && !row.contains_key("vertex_credentials"));

    let account: Value = serde_json::from_str(&text).expect("json");
    let grant = JwtBearer {
        client_email: "sa@proj.iam.gserviceaccount.com".into(),
        key_id: Some("kid-1".into()),
        key: PKey::private_key_from_pem(account["private_key"].as_str().unwrap().as_bytes())
            .expect("key"),
        token_uri: "https://oauth2.example.com/token".into(),
        token_url: token_client::token_url("https://oauth2.example.com/token").expect("url"),
    };
    let assertion = grant.assertion().expect("signed");
    let parts: Vec<&str> = assertion.expose().split('.').collect();
    assert_eq!(parts.len(), 3);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    let mut verifier = Verifier::new(MessageDigest::sha256(), &key).expect("verifier");
    verifier
        .update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .expect("update");
    assert!(verifier.verify(&signature).expect("verify"));
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(claims["aud"], "https://oauth2.example.com/token");
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some("kid-1"))
    );
}

#[test]
fn the_rows_project_and_location_win_and_the_place_makes_the_path() {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let text = account(&key);
    let mut row = values(&[
        ("vertex_credentials", &text),
        ("vertex_project", "my-proj"),
        ("vertex_location", "europe-west4"),
    ]);
    let (_, place) = from_fields("v", &mut row).expect("valid").expect("vertex");
    assert_eq!(
        place.public_base(),
        "https://europe-west4-aiplatform.googleapis.com"
    );
    assert_eq!(
        place.openai_path(),
        "/v1/projects/my-proj/locations/europe-west4/endpoints/openapi"
    );
}

#[test]
fn other_credentials_are_refused_without_quoting_them() {
    for bad in [
        "/etc/gcp/key.json".to_string(),
        json!({ "type": "authorized_user", "refresh_token": "rt-secret" }).to_string(),
        json!({ "type": "service_account", "client_email": "a@b", "private_key": "pk-secret" })
            .to_string(),
    ] {
        let mut row = values(&[("vertex_credentials", &bad), ("vertex_project", "p")]);
        let err = from_fields("v", &mut row).unwrap_err();
        assert!(err.starts_with("vertex_credentials"), "{err}");
        assert!(!err.contains("secret") && !err.contains("/etc"), "{err}");
    }
    assert!(from_fields("v", &mut values(&[("vertex_project", "p")]))
        .expect("valid")
        .is_none());
}

#[test]
fn a_key_file_is_read_as_litellm_reads_it_and_its_text_never_quoted() {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("key.json");
    std::fs::write(&path, account(&key)).expect("write the key file");
    let shown = path.display().to_string();
    let mut row = values(&[("vertex_credentials", &shown)]);
    let (minted, place) = from_fields("v", &mut row).expect("valid").expect("vertex");
    assert_eq!(place.project, "proj-from-key");
    assert_eq!(minted.report()["grant"], "vertex_service_account");

    std::fs::write(&path, "not a key: pk-secret").expect("write");
    let err = from_fields("v", &mut values(&[("vertex_credentials", &shown)])).unwrap_err();
    assert!(!err.contains("pk-secret"), "{err}");
    std::fs::write(&path, vec![b' '; MAX_KEY_FILE_BYTES as usize + 1]).expect("write");
    let err = from_fields("v", &mut values(&[("vertex_credentials", &shown)])).unwrap_err();
    assert!(err.contains("more than") && err.contains(&shown), "{err}");
}
