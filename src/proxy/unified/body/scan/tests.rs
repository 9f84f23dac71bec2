//! The scan against serde_json (the reference, [`parsed`]): whenever the scan vouches for a body
//! it finds what serde_json finds, and on the bodies SDKs send it does vouch (the fast path is
//! the one taken). Random bodies, then the same bodies broken one byte at a time, then bytes
//! drawn from JSON's own alphabet.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::super::parsed;
use super::top_level;

/// The scan and serde_json agree on `body`: the scan gives up, or finds what serde_json finds.
fn agrees(body: &[u8]) -> Result<(), TestCaseError> {
    if let Some(found) = top_level(body) {
        prop_assert_eq!(
            Ok(found),
            parsed(body),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

/// Strings that look like JSON's structure, escapes, the key being looked for, and bytes a
/// JSON string must escape.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        Just("\"model\": \"x\"".to_string()),
        Just("model".to_string()),
        Just("{\"model\":1}".to_string()),
        Just("\\\"\\\\ \\u0000 \u{1F600} é \u{7F}".to_string()),
        "[\u{0}-\u{1F}\"\\\\/]{0,6}",
        any::<String>().prop_map(|s| s.chars().take(16).collect()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model".to_string()),
        Just("user".to_string()),
        Just("messages".to_string()),
        Just("Model".to_string()),
        Just("model ".to_string()),
        text(),
    ]
}

/// A top-level object as SDKs and people write it: compact or pretty, members in any order,
/// `model` and `user` present or not, of any type, sometimes repeated (serde_json's maps cannot
/// repeat a key, so members are written out one by one). With whether a top-level key holds an
/// escape (which the scan leaves to serde_json).
fn body() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let member = (key(), value());
    (
        prop::collection::vec(member, 0..8),
        any::<bool>(),
        prop_oneof![Just(""), Just(" "), Just("\n\t ")],
    )
        .prop_map(|(members, pretty, padding)| {
            let mut escaped_key = false;
            let mut out = String::from(padding);
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(if pretty { ",\n  " } else { "," });
                }
                let value = if pretty {
                    serde_json::to_string_pretty(value)
                } else {
                    serde_json::to_string(value)
                };
                let sep = if pretty { ": " } else { ":" };
                let key = json!(key).to_string();
                escaped_key |= key.contains('\\');
                out.push_str(&format!("{key}{sep}{}", value.expect("serialises")));
            }
            out.push('}');
            out.push_str(padding);
            (out.into_bytes(), escaped_key)
        })
}

/// One edit that may break a body: a byte removed, replaced or inserted (from JSON's
/// structural bytes, control bytes and bytes that are not UTF-8), or the body cut short.
#[derive(Debug, Clone)]
enum Edit {
    Remove(usize),
    Replace(usize, u8),
    Insert(usize, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop::sample::select(
        b"{}[]\",:\\ 0123456789.eE+-tfnrulsa/\t\n\r\x00\x1f\x7f\xc3\xa9\xff\xed\xa0\x80".to_vec(),
    );
    prop_oneof![
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Replace(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(body: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *edit {
        Edit::Remove(i) if !body.is_empty() => {
            body.remove(at(i, body.len()));
        }
        Edit::Replace(i, b) if !body.is_empty() => {
            let i = at(i, body.len());
            body[i] = b;
        }
        Edit::Insert(i, b) => body.insert(at(i, body.len() + 1), b),
        Edit::Truncate(i) => body.truncate(at(i, body.len() + 1)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_body_takes_the_fast_path_and_finds_what_serde_json_finds(
        (body, escaped_key) in body(),
    ) {
        let found = top_level(&body);
        prop_assert!(
            found.is_some() || escaped_key,
            "gave up on {:?}",
            String::from_utf8_lossy(&body)
        );
        agrees(&body)?;
    }

    #[test]
    fn a_broken_body_is_refused_or_read_as_serde_json_reads_it(
        (body, _) in body(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut body = body;
        for edit in &edits {
            apply(&mut body, edit);
        }
        agrees(&body)?;
    }

    #[test]
    fn bytes_from_jsons_alphabet_are_read_as_serde_json_reads_them(
        body in prop::collection::vec(prop::sample::select(
            b"{}[]\",:\\ 0123456789.eE+-truefalsnmodel\t\n\x01\xc3\xa9".to_vec()), 0..40),
    ) {
        let mut body = body;
        body.insert(0, b'{');
        agrees(&body)?;
    }
}

#[test]
fn adversarial_bodies_are_read_as_serde_json_reads_them() {
    let deep = format!(
        r#"{{"model":"m","x":{}1{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let cases: Vec<Vec<u8>> = [
        r#"{"model":"a"}"#,
        r#" {"model" : "a" , "user":"u", "user":"v"} "#,
        r#"{"model":"a","model":"a"}"#,
        r#"{"mod\u0065l":"a"}"#,
        r#"{"model":"\ud800"}"#,
        r#"{"model":"a","x":"\ud800"}"#,
        r#"{"model":"a","x":"\u00"}"#,
        r#"{"model":"a","x":"\x"}"#,
        "{\"model\":\"a\",\"x\":\"tab\there\"}",
        "{\"model\":\"a\",\n\"x\":\r\t[]}",
        r#"{"model":"a","x":01}"#,
        r#"{"model":"a","x":-}"#,
        r#"{"model":"a","x":1.}"#,
        r#"{"model":"a","x":1e}"#,
        r#"{"model":"a","x":-0.5E+7}"#,
        r#"{"model":"a","x":[1,]}"#,
        r#"{"model":"a",}"#,
        r#"{"model":"a","x":{"a":1,}}"#,
        r#"{"model":"a","x":nul}"#,
        r#"{"model":"a","x":nullx}"#,
        r#"{"model":"a","x":[}"#,
        r#"{"model":"a","x":{]}"#,
        r#"{"model":"a"}}"#,
        r#"{"model":"a"} x"#,
        r#"{"model":"a"#,
        r#"{"model":"a\"#,
        r#"{"model":"a","x":{"model":"b"}}"#,
        r#"{"messages":[{"content":"\"model\":\"no\""}],"model":"yes"}"#,
        "{\"model\":\"a\",\"x\":\"\u{7f}\"}",
        r#"{}"#,
        r#"[]"#,
        "",
        "\u{feff}{}",
        &deep,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        b"{\"model\":\"\xff\"}".to_vec(),
        b"{\"x\":\"\xed\xa0\x80\"}".to_vec(),
    ])
    .collect();
    for body in &cases {
        agrees(body).expect("agrees");
    }
    assert!(
        top_level(deep.as_bytes()).is_none(),
        "deeper than 64 is serde_json's"
    );
    assert!(parsed(deep.as_bytes()).is_ok());
    assert!(
        top_level(br#"{"mod\u0065l":"a"}"#).is_none(),
        "escaped keys are serde_json's"
    );
    assert!(top_level(br#"{"model":"a","x":"\ud800"}"#).is_some());
}
