//! AWS event-stream frames (`application/vnd.amazon.eventstream`, Bedrock's ConverseStream and
//! InvokeModelWithResponseStream answers) read as an answer's chunks pass, whatever their
//! splits: a prelude (total length, headers length, the prelude's CRC-32), headers, a payload
//! and the message's CRC-32. Read by the usage reader (`proxy::usage`) and by the stream that
//! turns Bedrock's Anthropic events into SSE (`proxy::unified::messages`).
//!
//! Bounded: only the incomplete last frame is kept, and a frame longer than [`MAX_FRAME`] is
//! counted past without being kept (its payload is not read). Hostile bytes never panic: a
//! prelude or message whose CRC does not hold, a length that cannot be, or headers that do not
//! parse stop the reading for good ([`Frames::broken`]). This module only reads.

/// The longest frame kept to be read; a longer one is skipped.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Prelude (12 bytes) and message CRC (4): the least a frame can be.
const OVERHEAD: usize = 16;

/// One whole frame whose CRCs held.
#[derive(Debug, PartialEq)]
pub struct Frame<'a> {
    /// Its `:event-type` header (`metadata`, `chunk`, …), when it has one.
    pub event_type: Option<&'a str>,
    /// Its `:message-type` header (`event`, `exception`, `error`), when it has one.
    pub message_type: Option<&'a str>,
    /// Its `:exception-type` header (`throttlingException`, …), on an exception.
    pub exception_type: Option<&'a str>,
    /// Its payload.
    pub payload: &'a [u8],
}

/// The frames of one answer, read as its chunks come.
#[derive(Debug, Default)]
pub struct Frames {
    /// The incomplete last frame.
    pending: Vec<u8>,
    /// Bytes of a frame over [`MAX_FRAME`] still to be passed over.
    skip: usize,
    /// A frame over [`MAX_FRAME`] breaks the reading instead of being passed over.
    strict: bool,
    /// Whether the bytes stopped reading as frames.
    broken: bool,
}

impl Frames {
    /// Reads `chunk`, handing each whole frame to `on_frame`.
    pub fn feed(&mut self, chunk: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        if self.broken {
            return;
        }
        let passed = self.skip.min(chunk.len());
        self.skip -= passed;
        self.pending.extend_from_slice(&chunk[passed..]);
        let mut read = 0;
        while let Some(step) = self.next(read) {
            match step {
                Step::Frame(len) => {
                    match frame(&self.pending[read..read + len]) {
                        Some(frame) => on_frame(frame),
                        None => return self.break_off(),
                    }
                    read += len;
                }
                Step::Skip(len) => {
                    let here = len.min(self.pending.len() - read);
                    read += here;
                    self.skip = len - here;
                }
                Step::Broken => return self.break_off(),
            }
        }
        self.pending.drain(..read);
    }

    /// Whether the bytes stopped reading as frames (a CRC, a length or headers were wrong).
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// A reader for which a frame over [`MAX_FRAME`] is broken rather than passed over: for a
    /// reader that must hand on every frame.
    pub fn strict() -> Frames {
        Frames {
            strict: true,
            ..Frames::default()
        }
    }

    /// Whether bytes of an unfinished frame remain (the answer ended mid-frame).
    pub fn unfinished(&self) -> bool {
        !self.pending.is_empty() || self.skip > 0
    }

    /// What the bytes from `at` hold next; `None` until more come.
    fn next(&self, at: usize) -> Option<Step> {
        let rest = &self.pending[at..];
        if rest.len() < 12 || self.skip > 0 {
            return None;
        }
        let total = be32(&rest[0..4]) as usize;
        let headers = be32(&rest[4..8]) as usize;
        if crc32fast::hash(&rest[0..8]) != be32(&rest[8..12])
            || total < OVERHEAD
            || headers > total - OVERHEAD
        {
            return Some(Step::Broken);
        }
        if total > MAX_FRAME {
            return Some(if self.strict {
                Step::Broken
            } else {
                Step::Skip(total)
            });
        }
        (rest.len() >= total).then_some(Step::Frame(total))
    }

    fn break_off(&mut self) {
        self.broken = true;
        self.pending = Vec::new();
        self.skip = 0;
    }
}

/// What the next bytes are.
enum Step {
    /// A whole frame of this length.
    Frame(usize),
    /// A frame of this length too long to keep.
    Skip(usize),
    /// Not a frame.
    Broken,
}

fn be32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .fold(0, |n, &b| (n << 8) | u32::from(b))
}

/// The frame `message` (exactly one, its prelude CRC checked), when its message CRC holds and
/// its headers parse.
fn frame(message: &[u8]) -> Option<Frame<'_>> {
    let (body, crc) = message.split_at(message.len() - 4);
    if crc32fast::hash(body) != be32(crc) {
        return None;
    }
    let headers_len = be32(&message[4..8]) as usize;
    let (headers, payload) = body[12..].split_at(headers_len);
    let mut frame = Frame {
        event_type: None,
        message_type: None,
        exception_type: None,
        payload,
    };
    let mut rest = headers;
    while !rest.is_empty() {
        let (name, value, after) = header(rest)?;
        match name {
            b":event-type" => frame.event_type = value,
            b":message-type" => frame.message_type = value,
            b":exception-type" => frame.exception_type = value,
            _ => {}
        }
        rest = after;
    }
    Some(frame)
}

/// One header: its name, its value when it is a UTF-8 string, and the bytes after it.
fn header(bytes: &[u8]) -> Option<(&[u8], Option<&str>, &[u8])> {
    let (&name_len, rest) = bytes.split_first()?;
    let name = rest.get(..usize::from(name_len))?;
    let (&kind, rest) = rest.get(usize::from(name_len)..)?.split_first()?;
    let fixed = match kind {
        0 | 1 => 0,
        2 => 1,
        3 => 2,
        4 => 4,
        5 | 8 => 8,
        9 => 16,
        6 | 7 => {
            let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
            let value = rest.get(2..2 + len)?;
            let text = (kind == 7)
                .then(|| std::str::from_utf8(value).ok())
                .flatten();
            return Some((name, text, &rest[2 + len..]));
        }
        _ => return None,
    };
    Some((name, None, rest.get(fixed..)?))
}

/// One frame in event-stream framing, with string headers (for tests here and in the readers).
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = (OVERHEAD + head.len() + payload.len()) as u32;
    let mut message = total.to_be_bytes().to_vec();
    message.extend_from_slice(&(head.len() as u32).to_be_bytes());
    message.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());
    message.extend_from_slice(&head);
    message.extend_from_slice(payload);
    message.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(kind: &str, payload: &[u8]) -> Vec<u8> {
        encode(
            &[(":event-type", kind), (":message-type", "event")],
            payload,
        )
    }

    /// Each frame read: its event type and payload.
    type Seen = Vec<(Option<String>, Vec<u8>)>;

    fn read(chunks: &[&[u8]]) -> (Seen, Frames) {
        let mut frames = Frames::default();
        let mut seen = vec![];
        for chunk in chunks {
            frames.feed(chunk, |f| {
                seen.push((f.event_type.map(str::to_string), f.payload.to_vec()))
            });
        }
        (seen, frames)
    }

    #[test]
    fn frames_split_anywhere_are_read_whole_and_in_order() {
        let mut stream = event("chunk", b"{\"a\":1}");
        stream.extend(event("metadata", b"{}"));
        stream.extend(encode(&[], b""));
        for split in 0..=stream.len() {
            let (seen, frames) = read(&[&stream[..split], &stream[split..]]);
            let kinds: Vec<Option<&str>> = seen.iter().map(|(k, _)| k.as_deref()).collect();
            assert_eq!(kinds, [Some("chunk"), Some("metadata"), None], "{split}");
            assert_eq!(seen[0].1, b"{\"a\":1}");
            assert!(!frames.broken() && !frames.unfinished(), "{split}");
        }
    }

    #[test]
    fn a_wrong_crc_stops_the_reading_and_a_huge_frame_is_skipped_unkept() {
        let mut bad = event("metadata", b"{}");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let (seen, frames) = read(&[&bad, &event("chunk", b"")]);
        assert!(seen.is_empty() && frames.broken());
        let mut prelude = event("metadata", b"{}");
        prelude[9] ^= 1;
        assert!(read(&[&prelude]).1.broken());

        let huge = event("chunk", &vec![b'x'; MAX_FRAME]);
        let after = event("metadata", b"{}");
        let mut frames = Frames::default();
        let mut seen = vec![];
        for piece in huge.chunks(64 * 1024).chain([after.as_slice()]) {
            frames.feed(piece, |f| seen.push(f.event_type.map(str::to_string)));
            assert!(frames.pending.len() <= 64 * 1024 + after.len());
        }
        assert_eq!(seen, [Some("metadata".to_string())]);
        assert!(!frames.broken());
        let mut strict = Frames::strict();
        strict.feed(&huge[..64 * 1024], |_| {});
        assert!(strict.broken());
    }

    proptest! {
        #[test]
        fn random_bytes_in_random_pieces_never_panic_nor_grow_unbounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            cuts in proptest::collection::vec(0usize..4096, 0..8),
            framed in any::<bool>(),
        ) {
            // Random bytes, or a real frame with random bytes after it (and bits flipped in it).
            let mut stream = if framed { event("chunk", &bytes[..bytes.len() / 2]) } else { vec![] };
            stream.extend_from_slice(&bytes);
            if framed && !cuts.is_empty() {
                let at = cuts[0] % stream.len();
                stream[at] ^= 0x20;
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut frames = Frames::default();
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                frames.feed(&stream[from..cut], |_| {});
                from = cut;
                prop_assert!(frames.pending.len() <= stream.len());
            }
        }
    }
}
