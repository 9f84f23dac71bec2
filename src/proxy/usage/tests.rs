//! The usage reader on scripted answers: every shape, split anywhere.

use super::*;
use crate::aws::eventstream::{encode, MAX_FRAME};
use base64::Engine;
use proptest::prelude::*;

fn reader(content_type: &str) -> UsageReader {
    reader_for(content_type, false).expect("a reader")
}

fn reader_for(content_type: &str, bedrock: bool) -> Option<UsageReader> {
    let mut header = ResponseHeader::build(200, None).expect("header");
    header
        .insert_header("content-type", content_type)
        .expect("content-type");
    UsageReader::for_response(&header, bedrock)
}

#[test]
fn a_json_answer_split_anywhere_is_read_at_its_end() {
    let body =
        br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#;
    for split in [1, 10, body.len() - 1] {
        let mut r = reader("application/json; charset=utf-8");
        r.feed(&body[..split]);
        r.feed(&body[split..]);
        let usage = Some(Usage {
            prompt: 12,
            completion: 34,
            ..Usage::default()
        });
        assert_eq!(r.finish().usage, usage, "split at {split}");
    }
}

#[test]
fn openai_and_anthropic_streams_give_their_usage() {
    let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";
    let mut r = reader("text/event-stream");
    for piece in openai.as_bytes().chunks(9) {
        r.feed(piece);
    }
    assert_eq!(
        r.finish().usage,
        Some(Usage {
            prompt: 5,
            completion: 7,
            ..Usage::default()
        })
    );

    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
                     event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    let mut r = reader("text/event-stream");
    r.feed(anthropic.as_bytes());
    assert_eq!(
        r.finish().usage,
        Some(Usage {
            prompt: 25,
            completion: 15,
            ..Usage::default()
        })
    );
}

#[test]
fn cached_and_reasoning_tokens_are_read_in_litellms_terms() {
    let openai = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":200,
        "prompt_tokens_details":{"cached_tokens":300,"audio_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":50}}}"#;
    let mut r = reader("application/json");
    r.feed(openai);
    let expected = Usage {
        prompt: 1000,
        completion: 200,
        cache_read: 300,
        cache_creation: 0,
        reasoning: 50,
    };
    assert_eq!(r.finish().usage, Some(expected));

    // Anthropic leaves cached tokens out of input_tokens; LiteLLM adds them back.
    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":40,\"output_tokens\":1}}}\n\n\
                     event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    let mut r = reader("text/event-stream");
    r.feed(anthropic.as_bytes());
    let expected = Usage {
        prompt: 165,
        completion: 15,
        cache_read: 100,
        cache_creation: 40,
        reasoning: 0,
    };
    assert_eq!(r.finish().usage, Some(expected));
}

#[test]
fn the_model_an_answer_names_is_read_with_its_usage() {
    let mut r = reader("application/json");
    r.feed(br#"{"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":1}}"#);
    assert_eq!(r.finish().model.as_deref(), Some("gpt-4o-2024-08-06"));
    let openai = "data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{}}]}\n\n\
                  data: {\"model\":\"m-2\",\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n\n";
    let mut r = reader("text/event-stream");
    r.feed(openai.as_bytes());
    assert_eq!(
        r.finish().model.as_deref(),
        Some("m-2"),
        "read where the usage is"
    );
    let anthropic = "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":2}}}\n\n";
    let mut r = reader("text/event-stream");
    r.feed(anthropic.as_bytes());
    assert_eq!(r.finish().model.as_deref(), Some("claude-x"));
}

#[test]
fn no_usage_errors_and_other_bodies_count_nothing() {
    let mut r = reader("text/event-stream");
    r.feed(b"data: {\"i\":0}\n\ndata: [DONE]\n\n");
    assert_eq!(r.finish().usage, None);
    let mut error = ResponseHeader::build(429, None).expect("header");
    error
        .insert_header("content-type", "application/json")
        .expect("ct");
    assert!(UsageReader::for_response(&error, true).is_none());
    let mut big = reader("application/json");
    big.feed(&vec![b' '; MAX_JSON_BYTES + 1]);
    big.feed(br#"{"usage":{"prompt_tokens":1}}"#);
    assert_eq!(big.finish().usage, None, "too large to keep");
}

const AWS: &str = "application/vnd.amazon.eventstream";

fn aws_event(kind: &str, payload: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(payload).expect("json");
    encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &payload,
    )
}

/// An InvokeModelWithResponseStream `chunk` event holding `inner`.
fn chunk(inner: &Value) -> Vec<u8> {
    let bytes =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(inner).expect("json"));
    aws_event("chunk", &serde_json::json!({ "bytes": bytes }))
}

fn usage(prompt: u64, completion: u64, cache_read: u64, cache_creation: u64) -> Option<Usage> {
    Some(Usage {
        prompt,
        completion,
        cache_read,
        cache_creation,
        reasoning: 0,
    })
}

fn converse_stream() -> Vec<u8> {
    let mut stream = aws_event("messageStart", &serde_json::json!({ "role": "assistant" }));
    stream.extend(aws_event(
        "contentBlockDelta",
        &serde_json::json!({ "contentBlockIndex": 0, "delta": { "text": "usage" } }),
    ));
    stream.extend(aws_event(
        "metadata",
        &serde_json::json!({ "usage": { "inputTokens": 11, "outputTokens": 7, "totalTokens": 48,
                                       "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10 },
                             "metrics": { "latencyMs": 5 } }),
    ));
    stream
}

fn invoke_stream() -> Vec<u8> {
    let mut stream = chunk(&serde_json::json!({ "type": "message_start",
        "message": { "model": "claude", "usage": { "input_tokens": 13, "output_tokens": 1 } } }));
    stream.extend(chunk(&serde_json::json!({ "type": "content_block_delta",
        "delta": { "type": "text_delta", "text": "hi" } })));
    stream.extend(chunk(
        &serde_json::json!({ "type": "message_delta", "usage": { "output_tokens": 9 } }),
    ));
    stream.extend(chunk(&serde_json::json!({ "type": "message_stop",
        "amazon-bedrock-invocationMetrics": { "inputTokenCount": 13, "outputTokenCount": 9,
                                              "invocationLatency": 5, "firstByteLatency": 2 } })));
    stream
}

#[test]
fn bedrocks_converse_and_invoke_answers_are_read_on_bedrock_requests_only() {
    let converse = br#"{"output":{"message":{"role":"assistant","content":[{"text":"x"}]}},
        "stopReason":"end_turn","usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}"#;
    let mut r = reader_for("application/json", true).expect("a reader");
    r.feed(converse);
    assert_eq!(r.finish().usage, usage(3, 2, 0, 0));
    let mut other = reader("application/json");
    other.feed(converse);
    assert_eq!(
        other.finish().usage,
        None,
        "Converse's names only from Bedrock"
    );
    assert!(
        reader_for(AWS, false).is_none(),
        "event streams only from Bedrock"
    );

    let invoke = br#"{"type":"message","model":"claude","usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":4}}"#;
    let mut r = reader_for("application/json", true).expect("a reader");
    r.feed(invoke);
    let report = r.finish();
    assert_eq!(report.usage, usage(7, 2, 4, 0));
    assert_eq!(report.model, None, "priced by the deployment's model id");

    // Another model's body (Llama's): the counts Bedrock puts in the headers.
    let mut header = ResponseHeader::build(200, None).expect("header");
    for (name, value) in [
        ("content-type", "application/json"),
        ("x-amzn-bedrock-input-token-count", "21"),
        ("x-amzn-bedrock-output-token-count", "8"),
    ] {
        header.insert_header(name, value).expect("header");
    }
    let llama = br#"{"generation":"hi","prompt_token_count":21,"generation_token_count":8}"#;
    let mut r = UsageReader::for_response(&header, true).expect("a reader");
    r.feed(llama);
    assert_eq!(r.finish().usage, usage(21, 8, 0, 0));
    let mut r = UsageReader::for_response(&header, false).expect("a reader");
    r.feed(llama);
    assert_eq!(
        r.finish().usage,
        None,
        "Bedrock's headers only from Bedrock"
    );
}

#[test]
fn bedrocks_event_streams_split_anywhere_give_their_usage() {
    for (stream, expected) in [
        (converse_stream(), usage(41, 7, 20, 10)),
        (invoke_stream(), usage(13, 9, 0, 0)),
    ] {
        for split in (0..stream.len()).step_by(7) {
            let mut r = reader_for(AWS, true).expect("a reader");
            r.feed(&stream[..split]);
            r.feed(&stream[split..]);
            assert_eq!(r.finish().usage, expected, "split at {split}");
        }
    }
}

#[test]
fn a_bedrock_stream_that_breaks_or_ends_mid_frame_counts_nothing() {
    let mut stream = converse_stream();
    let at = stream.len() - 30;
    stream[at] ^= 1;
    let mut r = reader_for(AWS, true).expect("a reader");
    r.feed(&stream);
    assert_eq!(r.finish().usage, None, "a CRC that does not hold");
    let stream = invoke_stream();
    let mut r = reader_for(AWS, true).expect("a reader");
    r.feed(&stream[..stream.len() - 1]);
    assert_eq!(r.finish().usage, None, "cut short");
    // A frame over the cap is passed over; the usage after it still counts.
    let mut huge = aws_event(
        "chunk",
        &serde_json::json!({ "bytes": "A".repeat(MAX_FRAME) }),
    );
    huge.extend(converse_stream());
    let mut r = reader_for(AWS, true).expect("a reader");
    for piece in huge.chunks(16 * 1024) {
        r.feed(piece);
    }
    assert_eq!(r.finish().usage, usage(41, 7, 20, 10));
}

proptest! {
    #[test]
    fn hostile_bytes_in_bedrock_streams_never_panic(
        noise in proptest::collection::vec(any::<u8>(), 0..2048),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        invoke in any::<bool>(),
    ) {
        let mut stream = if invoke { invoke_stream() } else { converse_stream() };
        for (at, bits) in flips {
            let at = at % stream.len();
            stream[at] ^= bits;
        }
        stream.extend_from_slice(&noise);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut r = reader_for(AWS, true).expect("a reader");
        let mut from = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            r.feed(&stream[from..cut]);
            from = cut;
        }
        let _ = r.finish();
    }
}
