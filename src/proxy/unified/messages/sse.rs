//! Bedrock's InvokeModelWithResponseStream answer, for a client of Anthropic's Messages API:
//! each `chunk` frame's payload (`{"bytes": base64}`) holds one of the model's Anthropic stream
//! events (`message_start`, `content_block_delta`, …), and the client gets it as Anthropic's own
//! SSE, `event: {type}` then `data: {event}`, the event's JSON byte for byte as the model wrote
//! it (Bedrock's `amazon-bedrock-invocationMetrics` in the last one included).
//!
//! An exception frame (`throttlingException`, `modelStreamErrorException`, …) becomes an `error`
//! event in Anthropic's shape, as the Anthropic API reports an error mid-stream. It ends the
//! stream, as do framing that does not hold (a CRC, a length), a chunk that is not an event, a
//! frame over 1 MiB (not kept, so not relayed) and an answer that ends mid-frame: an `error` event, and nothing after it is passed on. The client
//! never gets a stream that looks whole and is not.

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use crate::aws::eventstream::{Frame, Frames};

/// Turns one event-stream answer into SSE, as its chunks come.
#[derive(Debug)]
pub struct EventStreamToSse {
    frames: Frames,
    /// An `error` event ended the stream.
    ended: bool,
}

impl Default for EventStreamToSse {
    fn default() -> EventStreamToSse {
        EventStreamToSse {
            frames: Frames::strict(),
            ended: false,
        }
    }
}

impl EventStreamToSse {
    /// The SSE bytes `chunk` completes (`end`: the answer's last chunk).
    pub fn translate(&mut self, chunk: &[u8], end: bool) -> Bytes {
        let mut out = Vec::new();
        if self.ended {
            return Bytes::new();
        }
        let ended = &mut self.ended;
        self.frames.feed(chunk, |frame| {
            if !*ended {
                *ended = write_frame(&mut out, &frame);
            }
        });
        let failure = if self.ended {
            None
        } else if self.frames.broken() {
            Some(
                "the provider's event stream could not be read (a frame's length or CRC is \
                 wrong, or a frame is over 1 MiB)",
            )
        } else if end && self.frames.unfinished() {
            Some("the provider's event stream ended in the middle of a frame")
        } else {
            None
        };
        if let Some(message) = failure {
            write_error(&mut out, "api_error", message);
            self.ended = true;
        }
        Bytes::from(out)
    }
}

/// A `chunk` frame's payload.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

/// The part of an Anthropic event read here: its type.
#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// An exception frame's payload.
#[derive(Deserialize)]
struct Exception<'a> {
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Writes what `frame` says to the client: a `chunk`'s event, an exception's `error` event.
/// Other frames (none that Bedrock sends on this operation) are passed over. Returns whether it
/// wrote an `error` event, which ends the stream.
fn write_frame(out: &mut Vec<u8>, frame: &Frame<'_>) -> bool {
    match frame.message_type {
        Some("exception") | Some("error") => {
            let exception = frame.exception_type.unwrap_or("exception");
            let detail = serde_json::from_slice::<Exception>(frame.payload)
                .ok()
                .and_then(|e| e.message.map(Cow::into_owned));
            let message = match detail {
                Some(detail) => format!("Bedrock {exception}: {detail}"),
                None => format!("Bedrock {exception}"),
            };
            write_error(out, error_type(exception), &message);
            true
        }
        _ if frame.event_type == Some("chunk") => match decoded_event(frame.payload) {
            Some((kind, event)) => {
                write_event(out, &kind, &event);
                false
            }
            None => {
                let message =
                    "the provider sent a stream chunk that is not a base64 Anthropic event";
                write_error(out, "api_error", message);
                true
            }
        },
        _ => false,
    }
}

/// A `chunk` payload's Anthropic event and its type, when it is one.
fn decoded_event(payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let chunk: Chunk = serde_json::from_slice(payload).ok()?;
    let event = base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .ok()?;
    let kind = serde_json::from_slice::<Typed>(&event)
        .ok()?
        .kind
        .into_owned();
    let plain = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then_some((kind, event))
}

/// Anthropic's error type for a Bedrock exception.
fn error_type(exception: &str) -> &'static str {
    match exception {
        "throttlingException" => "rate_limit_error",
        "serviceUnavailableException" => "overloaded_error",
        "validationException" => "invalid_request_error",
        "accessDeniedException" => "permission_error",
        "resourceNotFoundException" => "not_found_error",
        _ => "api_error",
    }
}

/// `event: {kind}` and the event as `data:` lines (one per line of its JSON, which SSE joins
/// back with newlines: JSON whitespace either way).
fn write_event(out: &mut Vec<u8>, kind: &str, event: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    for line in event.split(|b| *b == b'\n' || *b == b'\r') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// An `error` event in Anthropic's shape.
fn write_error(out: &mut Vec<u8>, kind: &str, message: &str) {
    let error = serde_json::json!({
        "type": "error",
        "error": { "type": kind, "message": message },
    });
    write_event(out, "error", error.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::eventstream::encode;
    use proptest::prelude::*;

    fn chunk(event: &str) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(event);
        let payload = serde_json::json!({ "bytes": bytes }).to_string();
        encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            payload.as_bytes(),
        )
    }

    const EVENTS: [&str; 3] = [
        r#"{"type":"message_start","message":{"usage":{"input_tokens":3}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"h\u00e9"}}"#,
        r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3}}"#,
    ];

    fn sse(events: &[&str]) -> String {
        events
            .iter()
            .map(|e| {
                let kind = serde_json::from_str::<serde_json::Value>(e).expect("json")["type"]
                    .as_str()
                    .expect("type")
                    .to_string();
                format!("event: {kind}\ndata: {e}\n\n")
            })
            .collect()
    }

    fn translated(stream: &[u8], cuts: &[usize]) -> String {
        let mut sse = EventStreamToSse::default();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            out.extend_from_slice(&sse.translate(&stream[from..cut], cut == stream.len()));
            from = cut;
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn each_chunk_becomes_the_anthropic_event_it_holds_byte_for_byte_at_any_split() {
        let stream: Vec<u8> = EVENTS.iter().flat_map(|e| chunk(e)).collect();
        let want = sse(&EVENTS);
        for split in 0..=stream.len() {
            assert_eq!(translated(&stream, &[split]), want, "split at {split}");
        }
    }

    #[test]
    fn an_exception_becomes_an_anthropic_error_event() {
        let mut stream = chunk(EVENTS[0]);
        stream.extend(encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"Too many requests"}"#,
        ));
        let out = translated(&stream, &[]);
        let error = out
            .split("event: error\ndata: ")
            .nth(1)
            .expect("an error event");
        let error: serde_json::Value = serde_json::from_str(error.trim()).expect("json");
        assert_eq!(error["error"]["type"], "rate_limit_error");
        assert_eq!(
            error["error"]["message"],
            "Bedrock throttlingException: Too many requests"
        );
    }

    #[test]
    fn broken_or_cut_framing_ends_the_stream_with_an_error_and_nothing_after() {
        let mut bad = chunk(EVENTS[1]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut sse = EventStreamToSse::default();
        let out = sse.translate(&bad, false);
        assert!(out.starts_with(b"event: error\n"), "{out:?}");
        assert!(sse.translate(&chunk(EVENTS[2]), true).is_empty());

        let whole = chunk(EVENTS[0]);
        let out = translated(&whole[..whole.len() - 3], &[]);
        assert!(out.contains("ended in the middle of a frame"), "{out}");

        let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(1024 * 1024));
        let mut stream = chunk(&huge);
        stream.extend(chunk(EVENTS[2]));
        let out = translated(&stream, &[]);
        assert!(
            out.starts_with("event: error\n"),
            "{}",
            &out[..80.min(out.len())]
        );
        assert!(
            out.contains("over 1 MiB") && !out.contains("message_stop"),
            "{out}"
        );
    }

    #[test]
    fn a_chunk_that_is_not_an_event_is_an_error_and_newlines_stay_inside_data_lines() {
        let not_base64 = encode(&[(":event-type", "chunk")], br#"{"bytes":"%%%"}"#);
        assert!(translated(&not_base64, &[]).contains("not a base64 Anthropic event"));
        let pretty = "{\n  \"type\": \"ping\"\r\n}";
        let out = translated(&chunk(pretty), &[]);
        assert_eq!(
            out,
            "event: ping\ndata: {\ndata:   \"type\": \"ping\"\ndata: \ndata: }\n\n"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_nothing_follows_an_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..6),
        ) {
            let mut stream = chunk(EVENTS[0]);
            stream.extend_from_slice(&bytes);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let out = translated(&stream, &cuts);
            prop_assert!(out.starts_with(&sse(&EVENTS[..1])));
            if let Some(at) = out.find("event: error\n") {
                let rest = &out[at..];
                prop_assert_eq!(rest.matches("event: ").count(), 1, "{}", rest);
            }
        }
    }
}
