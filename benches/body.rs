//! The `dispatch: model` body rewrite: finding the top-level `model` of a 300 KB chat body and
//! replacing it, against what a copy of the body costs.
//!
//! Every request on a `dispatch: model` (or `model:`) route does it once, on the request path,
//! after the body was read whole. The body is what a long prompt looks like: a system message and
//! 40 user/assistant turns of prose with the escapes JSON writers emit (`\n`, `\"`, `\u00e9`),
//! 300 KB, with `model` first (as LiteLLM's benchmark and many clients write it) or last (as
//! OpenAI's Python SDK does). Cases:
//! - `copy`: one copy of the body into a fresh buffer, the yardstick;
//! - `serde_pass` and `find_model`: the reference serde_json pass alone, and `find_model` (the
//!   scan, and the alias read from its value) alone;
//! - `serde_and_copy`: the reference pass and the body rebuilt around the new value, as every
//!   request did before the scan;
//! - `scan_and_replace`: `find_model` (the scan) and the value replaced in place in the buffer the
//!   body was read into, as every request does now.
//!
//! The buffer the body is read into is made outside the timed region (`iter_batched`); reading
//! the body into it is the same copy either way.

mod common;

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sidecar::proxy::unified::body::{find_model, parsed, replace_model, ClientBody};

/// The size of the bench body.
const BODY_BYTES: usize = 300 * 1024;

/// A chat body of about `size` bytes, `model` first or last.
fn chat_body(size: usize, model_first: bool) -> Vec<u8> {
    let paragraph = "The proxy reads the whole request before it picks a deployment, so the \
                     prompt is held once; a \"quoted\" phrase, a line break\nand an accent: café. ";
    let mut messages = vec![serde_json::json!({"role": "system", "content": paragraph.repeat(20)})];
    let turn = paragraph.repeat((size / 41 / paragraph.len()).max(1));
    for i in 0..40 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": turn}));
    }
    let messages = serde_json::to_string(&messages).expect("json");
    // ASCII-only output, as Python's json.dumps writes it by default.
    let messages = messages.replace('é', "\\u00e9");
    let body = if model_first {
        format!(r#"{{"model":"bench-alias","messages":{messages},"stream":false,"user":"u-1"}}"#)
    } else {
        format!(r#"{{"messages":{messages},"model":"bench-alias","stream":false,"user":"u-1"}}"#)
    };
    body.into_bytes()
}

fn read(body: &[u8]) -> ClientBody {
    let mut read = ClientBody::with_capacity(body.len());
    read.extend_from_slice(body);
    read
}

fn bench_body(c: &mut Criterion) {
    let model = "openai/gpt-4o-2024-08-06";
    let quoted = serde_json::Value::from(model).to_string();
    for (name, model_first) in [("model_first", true), ("model_last", false)] {
        let body = chat_body(BODY_BYTES, model_first);
        // Check once that every case reads the same body the same way.
        let field = find_model(&body).expect("named");
        assert_eq!(field.alias, "bench-alias");
        let found = parsed(&body).expect("object");
        let (replaced, at) = replace_model(read(&body), &field, model, &quoted);
        assert_eq!(&replaced[at.clone()], quoted.as_bytes());
        assert_eq!(found.model.as_ref().map(|r| r.start), Some(at.start));

        let mut group = c.benchmark_group(format!("body/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("copy", |b| {
            b.iter(|| Bytes::copy_from_slice(black_box(&body)))
        });
        group.bench_function("serde_pass", |b| {
            b.iter(|| parsed(black_box(&body)).expect("object"))
        });
        group.bench_function("find_model", |b| {
            b.iter(|| find_model(black_box(&body)).expect("named"))
        });
        group.bench_function("serde_and_copy", |b| {
            b.iter(|| {
                let found = parsed(black_box(&body)).expect("object");
                let range = found.model.expect("model");
                let alias: String = serde_json::from_slice(&body[range.clone()]).expect("string");
                let mut out = BytesMut::with_capacity(body.len() + quoted.len());
                out.extend_from_slice(&body[..range.start]);
                out.extend_from_slice(quoted.as_bytes());
                out.extend_from_slice(&body[range.end..]);
                (alias, out.freeze())
            })
        });
        group.bench_function("scan_and_replace", |b| {
            b.iter_batched(
                || read(&body),
                |read| {
                    let field = find_model(black_box(read.as_bytes())).expect("named");
                    replace_model(read, &field, model, &quoted)
                },
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_body
}
criterion_main!(benches);
