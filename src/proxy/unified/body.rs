//! The JSON body of a `dispatch: model` (or `model:`) request: its top-level `model` found in
//! one pass (`scan`: a syntax check of the whole body that keeps only where `model` and `user`
//! sit; serde_json, the reference, decides any body the scan cannot vouch for, and words every
//! refusal), and replaced in place in the buffer the body was read into ([`ClientBody`]), so
//! everything else reaches the provider byte for byte and the body is not copied again.

mod scan;

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::proxy::respond::ErrorReply;

/// Room kept free before (and after) a body read whole: a `model` value that grows moves the
/// shorter side of the body, usually the few bytes before or after it, not the whole body.
const HEADROOM: usize = 128;

/// The alias a body asks for, and where its value sits in the body.
#[derive(Debug, Clone)]
pub struct ModelField {
    /// The value of the top-level `model`.
    pub alias: String,
    /// The byte range of that value (with its quotes).
    range: Range<usize>,
    /// The value as the client wrote it (quotes and escapes included): what an attempt whose
    /// deployment's model is the alias itself sends.
    written: String,
    /// The top-level `user` (OpenAI's end-user id, LiteLLM's end user), when it is a string.
    pub end_user: Option<String>,
}

impl ModelField {
    /// The bytes `model`'s value takes for a deployment of `model` (`quoted`: the same as a
    /// JSON string): the client's own when it is the alias.
    fn value_for<'a>(&'a self, model: &str, quoted: &'a str) -> &'a [u8] {
        if self.alias == model {
            self.written.as_bytes()
        } else {
            quoted.as_bytes()
        }
    }
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

/// Where the top-level `model` and `user` values of a JSON object body are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The first `model` value.
    pub model: Option<Range<usize>>,
    /// Whether `model` comes more than once.
    pub repeated: bool,
    /// The first `user` value.
    pub user: Option<Range<usize>>,
}

impl Found {
    fn add_model(&mut self, value: Range<usize>) {
        if self.model.is_some() {
            self.repeated = true;
        } else {
            self.model = Some(value);
        }
    }
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
    let found = match scan::top_level(body) {
        Some(found) => found,
        None => match parsed(body) {
            Ok(found) => found,
            Err(why) => return Ok(BodyModel::NotJson(why)),
        },
    };
    // Both passes checked that the body is UTF-8; a value's range starts and ends at a quote.
    let text = |range: &Range<usize>| std::str::from_utf8(&body[range.clone()]).unwrap_or("");
    let end_user = found
        .user
        .and_then(|user| serde_json::from_str::<String>(text(&user)).ok());
    if found.repeated {
        return Err(bad("the body names \"model\" more than once".into()));
    }
    let Some(range) = found.model else {
        return Ok(BodyModel::Unnamed);
    };
    let written = text(&range);
    let alias: String =
        serde_json::from_str(written).map_err(|_| bad("\"model\" is not a string".into()))?;
    Ok(BodyModel::Named(ModelField {
        alias,
        written: written.to_string(),
        range,
        end_user,
    }))
}

/// The reference pass: serde_json over the whole body as one object (`Cow<str>` keys, raw
/// values), as the sidecar parsed every body before `scan`. `Err` says why the body is not a
/// JSON object.
pub fn parsed(body: &[u8]) -> Result<Found, String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err("the body is not UTF-8".into());
    };
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(ModelValues { text })
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| format!("the body is not a JSON object: {e}"))
}

fn bad(message: String) -> ErrorReply {
    ErrorReply::invalid_request(400, "invalid_request_error", message)
}

/// `body` with its `model` set to `model` (`quoted`: the same as a JSON string, made once per
/// snapshot), replaced in place; with where the value now sits. Unchanged when `model` is the
/// alias.
pub fn replace_model(
    body: ClientBody,
    field: &ModelField,
    model: &str,
    quoted: &str,
) -> (Bytes, Range<usize>) {
    if field.alias == model {
        return (body.freeze(), field.range.clone());
    }
    body.replace(field.range.clone(), quoted.as_bytes())
}

/// A retry's body: `sent` (an earlier attempt's, its `model` value at `at`) with `model` set
/// to `model` (`quoted` as in [`replace_model`]); one copy, with where the value now sits.
pub fn respliced(
    sent: &Bytes,
    at: Range<usize>,
    field: &ModelField,
    model: &str,
    quoted: &str,
) -> (Bytes, Range<usize>) {
    let mut body = ClientBody::with_capacity(sent.len());
    body.extend_from_slice(sent);
    body.replace(at, field.value_for(model, quoted))
}

/// A request body read whole into one buffer with `HEADROOM` free on both sides, so that its
/// `model` can be replaced in place.
#[derive(Debug)]
pub struct ClientBody {
    /// `HEADROOM` unused bytes, then the body.
    buf: BytesMut,
}

impl ClientBody {
    /// An empty body with room for `len` bytes.
    pub fn with_capacity(len: usize) -> ClientBody {
        let mut buf = BytesMut::with_capacity(HEADROOM + len + HEADROOM);
        buf.resize(HEADROOM, 0);
        ClientBody { buf }
    }

    /// Appends `chunk` to the body.
    pub fn extend_from_slice(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The body's length.
    pub fn len(&self) -> usize {
        self.buf.len() - HEADROOM
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[HEADROOM..]
    }

    /// The body, as it is (no copy).
    pub fn freeze(self) -> Bytes {
        self.buf.freeze().slice(HEADROOM..)
    }

    /// The body with the bytes at `range` replaced by `value`, in place: the shorter of the
    /// parts before and after `range` moves (when it fits the headroom), so the cost is that
    /// part's length, not the body's. Returns the body (no copy) and where `value` now sits.
    pub fn replace(self, range: Range<usize>, value: &[u8]) -> (Bytes, Range<usize>) {
        let mut buf = self.buf;
        let (start, end, len) = (HEADROOM + range.start, HEADROOM + range.end, buf.len());
        let (old, new) = (end - start, value.len());
        let (before, after) = (range.start, len - end);
        let body = if new == old {
            buf[start..end].copy_from_slice(value);
            HEADROOM..len
        } else if before <= after && new <= old + HEADROOM {
            // The part before moves by the difference, into the headroom when `model` grows.
            let first = HEADROOM + old - new;
            buf.copy_within(HEADROOM..start, first);
            buf[first + before..first + before + new].copy_from_slice(value);
            first..len
        } else {
            if new > old {
                buf.resize(len + new - old, 0);
            }
            buf.copy_within(end..len, start + new);
            buf[start..start + new].copy_from_slice(value);
            buf.truncate(start + new + after);
            HEADROOM..start + new + after
        };
        (buf.freeze().slice(body), range.start..range.start + new)
    }
}

/// Visits a JSON object's top level, keeping where every `model` value and the first `user`
/// value sit in `text`.
struct ModelValues<'t> {
    text: &'t str,
}

impl<'de> Visitor<'de> for ModelValues<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Found::default();
        let base = self.text.as_ptr() as usize;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            let start = value.get().as_ptr() as usize - base;
            let range = start..start + value.get().len();
            if key == "model" {
                found.add_model(range);
            } else if key == "user" && found.user.is_none() {
                found.user = Some(range);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &[u8]) -> ClientBody {
        let mut read = ClientBody::with_capacity(body.len());
        read.extend_from_slice(body);
        read
    }

    fn rewritten(body: &str, model: &str) -> Result<String, ErrorReply> {
        let field = find_model(body.as_bytes())?;
        let quoted = serde_json::Value::from(model).to_string();
        let (replaced, at) = replace_model(read(body.as_bytes()), &field, model, &quoted);
        assert_eq!(&replaced[at], field.value_for(model, &quoted));
        Ok(String::from_utf8(replaced.to_vec()).expect("utf8"))
    }

    #[test]
    fn a_replaced_value_moves_the_shorter_side_and_keeps_every_other_byte() {
        let long = "x".repeat(3 * HEADROOM);
        let bodies = [
            format!(r#"{{"model":"m","pad":"{long}"}}"#),
            format!(r#"{{"pad":"{long}","model":"m"}}"#),
            format!(r#"{{"pad":"{long}","model":"{long}","tail":"{long}"}}"#),
            r#"{"model":"m"}"#.to_string(),
        ];
        let values = [
            "n",
            "",
            "a-much-longer-model-name",
            &"y".repeat(2 * HEADROOM),
        ];
        for body in &bodies {
            let field = find_model(body.as_bytes()).expect("named");
            for value in values {
                let quoted = format!("\"{value}\"");
                let (replaced, at) =
                    read(body.as_bytes()).replace(field.range.clone(), quoted.as_bytes());
                let want = format!(
                    "{}{quoted}{}",
                    &body[..field.range.start],
                    &body[field.range.end..]
                );
                assert_eq!(std::str::from_utf8(&replaced).expect("utf8"), want);
                assert_eq!(&replaced[at.clone()], quoted.as_bytes());
                // A retry's body, from this one.
                let again = field.value_for("other", "\"other\"");
                let (retried, at) = respliced(&replaced, at, &field, "other", "\"other\"");
                assert_eq!(&retried[at], again);
                assert_eq!(retried.len(), body.len() - field.range.len() + again.len());
            }
        }
    }

    #[test]
    fn a_retry_to_the_alias_itself_sends_the_clients_own_value() {
        let body = r#"{"model":"f\u0061st","x":1}"#;
        let field = find_model(body.as_bytes()).expect("named");
        let (first, at) = replace_model(read(body.as_bytes()), &field, "gpt", "\"gpt\"");
        assert_eq!(&first[..], br#"{"model":"gpt","x":1}"#);
        let (second, _) = respliced(&first, at, &field, "fast", "\"fast\"");
        assert_eq!(&second[..], body.as_bytes());
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
