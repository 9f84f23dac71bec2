//! The JSON body of a `dispatch: model` request: its top-level `model` found in one pass (nested
//! values are checked for syntax and skipped, never built), and replaced in place, so
//! everything else reaches the provider byte for byte.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::proxy::respond::ErrorReply;

/// The alias a body asks for, and where its value sits in the body.
#[derive(Debug, Clone)]
pub struct ModelField {
    /// The value of the top-level `model`.
    pub alias: String,
    /// The byte range of that value (with its quotes).
    range: Range<usize>,
    /// The top-level `user` (OpenAI's end-user id, LiteLLM's end user), when it is a string.
    pub end_user: Option<String>,
}

/// What a body says about the model it asks for.
#[derive(Debug)]
pub enum BodyModel {
    /// A JSON object with one string `model`.
    Named(ModelField),
    /// A JSON object without `model`.
    Unnamed,
    /// Not a JSON object (multipart, JSON Lines, text, empty): the sidecar cannot tell.
    NotJson(String),
}

/// Finds the top-level `model` of a JSON object body. Malformed JSON, a body that is not an
/// object, a missing, repeated or non-string `model` are 400s.
pub fn find_model(body: &[u8]) -> Result<ModelField, ErrorReply> {
    match model_in(body)? {
        BodyModel::Named(field) => Ok(field),
        BodyModel::Unnamed => Err(bad("the body has no \"model\"".into())),
        BodyModel::NotJson(why) => Err(bad(why)),
    }
}

/// The top-level `model` of `body`, if it is a JSON object. A repeated or non-string `model`
/// is a 400: providers differ on which of two they read.
pub fn model_in(body: &[u8]) -> Result<BodyModel, ErrorReply> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(BodyModel::NotJson("the body is not UTF-8".into()));
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let values = match de
        .deserialize_map(ModelValues)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(values) => values,
        Err(e) => {
            return Ok(BodyModel::NotJson(format!(
                "the body is not a JSON object: {e}"
            )))
        }
    };
    let end_user = values
        .user
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    let raw = match values.models.as_slice() {
        [raw] => *raw,
        [] => return Ok(BodyModel::Unnamed),
        _ => return Err(bad("the body names \"model\" more than once".into())),
    };
    let alias: String =
        serde_json::from_str(raw.get()).map_err(|_| bad("\"model\" is not a string".into()))?;
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    Ok(BodyModel::Named(ModelField {
        alias,
        range: start..start + raw.get().len(),
        end_user,
    }))
}

fn bad(message: String) -> ErrorReply {
    ErrorReply::invalid_request(400, "invalid_request_error", message)
}

/// The body with the `model` value replaced by `model` (`quoted`: the same as a JSON string,
/// made once per snapshot); the same bytes when it is unchanged.
pub fn replace_model(body: &Bytes, field: &ModelField, model: &str, quoted: &str) -> Bytes {
    if field.alias == model {
        return body.clone();
    }
    let mut out = BytesMut::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..field.range.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[field.range.end..]);
    out.freeze()
}

/// Visits a JSON object's top level, keeping the raw value of every `model` key and of the
/// first `user` key.
struct ModelValues;

/// What [`ModelValues`] keeps.
struct Found<'de> {
    models: Vec<&'de RawValue>,
    user: Option<&'de RawValue>,
}

impl<'de> Visitor<'de> for ModelValues {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Found {
            models: Vec::new(),
            user: None,
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            if key == "model" {
                found.models.push(value);
            } else if key == "user" && found.user.is_none() {
                found.user = Some(value);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str, model: &str) -> Result<String, ErrorReply> {
        let bytes = Bytes::from(body.to_string());
        let field = find_model(&bytes)?;
        let quoted = serde_json::Value::from(model).to_string();
        let replaced = replace_model(&bytes, &field, model, &quoted);
        Ok(String::from_utf8(replaced.to_vec()).expect("utf8"))
    }

    #[test]
    fn only_the_top_level_model_value_changes() {
        let body = r#"{"messages":[{"role":"user","content":"model: \"x\"","model":"inner"}], "model" : "fast", "n":1.50}"#;
        assert_eq!(
            rewritten(body, "gpt-4o").expect("ok"),
            body.replace(r#""model" : "fast""#, r#""model" : "gpt-4o""#)
        );
        let with_user = r#"{"model":"m","user":"customer-7","metadata":{"user":"inner"}}"#;
        let field = find_model(with_user.as_bytes()).expect("ok");
        assert_eq!(field.end_user.as_deref(), Some("customer-7"));
        let not_a_string = r#"{"model":"m","user":{"id":1}}"#;
        assert_eq!(
            find_model(not_a_string.as_bytes()).expect("ok").end_user,
            None
        );
        let escaped = r#"{"model":"f\u0061st"}"#;
        assert_eq!(find_model(escaped.as_bytes()).expect("ok").alias, "fast");
        assert_eq!(
            rewritten(escaped, "a\"b").expect("ok"),
            r#"{"model":"a\"b"}"#
        );
    }

    #[test]
    fn bodies_without_one_string_model_are_400s() {
        for body in [
            "",
            "not json",
            "[1]",
            r#"{"messages":[]}"#,
            r#"{"model":1}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a"} trailing"#,
            r#"{"model":"a","x":[}"#,
        ] {
            let err = find_model(body.as_bytes()).expect_err(body);
            assert_eq!(err.status, 400, "{body}");
        }
    }
}
