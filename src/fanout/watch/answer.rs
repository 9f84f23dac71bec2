//! Reading a server's answer: only the rows this watcher asked for are built. Every other row
//! is looked at for its name alone (as raw JSON borrowed from the body, never turned into a
//! value tree) and counted, so an answer full of rows nobody asked for costs little more than
//! its bytes. A credential name received twice keeps its first row (names are unique in
//! LiteLLM's table).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::credentials::rows::{linked_credential, StoredRows};
use crate::credentials::values::ValueReader;
use crate::db::litellm::{CredentialRow, ModelRow};

/// The answer's shape, rows left raw.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    credentials: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    models: Vec<&'a RawValue>,
}

/// A row's name, the rest skipped.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// What was asked for: credential names and model aliases, and the reader that resolves the
/// credentials model rows link to.
pub(super) struct Selection<'a> {
    pub credentials: &'a [String],
    pub models: &'a [String],
    pub reader: ValueReader<'a>,
}

/// The rows asked for in `body` (plus the credentials the selected model rows link to), and how
/// many others it held. Errors say what is not valid.
pub(super) fn requested_rows(
    body: &[u8],
    selection: &Selection<'_>,
) -> Result<(StoredRows, usize), serde_json::Error> {
    let wire: Wire<'_> = serde_json::from_slice(body)?;
    let name = |raw: &RawValue| -> Result<String, serde_json::Error> {
        let named: Named<'_> = serde_json::from_str(raw.get())?;
        Ok(named.name.into_owned())
    };
    let mut dropped = 0;
    let mut rows = StoredRows::default();
    for raw in &wire.models {
        if selection.models.contains(&name(raw)?) {
            let row: ModelRow = serde_json::from_str(raw.get())?;
            rows.models.push(row);
        } else {
            dropped += 1;
        }
    }
    let linked: Vec<String> = rows
        .models
        .iter()
        .filter_map(|m| linked_credential(m, &selection.reader))
        .collect();
    for raw in &wire.credentials {
        let name = name(raw)?;
        let wanted = selection.credentials.contains(&name) || linked.contains(&name);
        if wanted && !rows.credentials.iter().any(|c| c.name == name) {
            let row: CredentialRow = serde_json::from_str(raw.get())?;
            rows.credentials.push(row);
        } else {
            dropped += 1;
        }
    }
    Ok((rows, dropped))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credentials::cipher::{encrypt, Format, Keys};
    use crate::credentials::Secret;

    fn keys() -> Keys {
        Keys::derive(&Secret::new("answer-test-salt".into()))
    }

    fn select(
        body: &serde_json::Value,
        credentials: &[&str],
        models: &[&str],
    ) -> (StoredRows, usize) {
        let credentials: Vec<String> = credentials.iter().map(|s| s.to_string()).collect();
        let models: Vec<String> = models.iter().map(|s| s.to_string()).collect();
        let keys = keys();
        let selection = Selection {
            credentials: &credentials,
            models: &models,
            reader: ValueReader {
                keys: Some(&keys),
                env: None,
            },
        };
        requested_rows(body.to_string().as_bytes(), &selection).expect("valid")
    }

    #[test]
    fn only_rows_asked_for_and_linked_are_built_and_the_rest_counted() {
        let link = encrypt("linked", Format::Nacl, &keys());
        let body = json!({
            "credentials": [
                { "name": "a", "values": { "api_key": "x" } },
                { "name": "linked", "values": { "api_key": "y" } },
                { "name": "other", "values": { "api_key": "z" } },
                { "name": "a", "values": { "api_key": "again" } },
            ],
            "models": [
                { "id": "1", "name": "m", "params": { "litellm_credential_name": link } },
                { "id": "2", "name": "n", "params": {} },
            ],
            "unknown": [1, 2, 3],
        });
        let (rows, dropped) = select(&body, &["a"], &["m"]);
        let names: Vec<&str> = rows.credentials.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "linked"]);
        assert_eq!(rows.credentials[0].values["api_key"], "x");
        assert_eq!(rows.models.len(), 1);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn rows_without_a_name_or_not_json_are_refused() {
        let selection = Selection {
            credentials: &[],
            models: &[],
            reader: ValueReader {
                keys: None,
                env: None,
            },
        };
        assert!(requested_rows(b"{\"credentials\":[{\"values\":{}}]}", &selection).is_err());
        assert!(requested_rows(b"[1,2", &selection).is_err());
        let (rows, dropped) = requested_rows(b"{}", &selection).expect("empty is valid");
        assert_eq!((rows, dropped), (StoredRows::default(), 0));
    }
}
