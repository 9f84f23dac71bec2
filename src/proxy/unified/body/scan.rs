//! The fast pass over a request body: a hand-written JSON syntax check of the whole body that
//! keeps only where the top-level `model` and `user` values sit. It accepts exactly the bodies
//! the reference pass ([`super::parsed`], serde_json) accepts, or gives up: a `None` sends the
//! body to the reference pass, which then decides (and words the error). So a body the scan
//! cannot vouch for costs one more pass, never a different answer.
//!
//! Why it agrees with serde_json 1.0 on what it accepts (`Deserializer::deserialize_map` over
//! `Cow<str>` keys and `RawValue` values, then `end`; every check below is serde_json's):
//! - the text is UTF-8 (serde_json's `from_str` needs a `str`): the whole body is checked once,
//!   and only when a byte is over 0x7F;
//! - whitespace is exactly space, tab, line feed and carriage return, anywhere between tokens;
//! - a string has no byte under 0x20 and only the escapes `\" \\ \/ \b \f \n \r \t` and `\u`
//!   with four hex digits (values are skipped as serde_json's `ignore_value` skips them, which
//!   does not pair surrogates); a top-level key with an escape is left to serde_json, which
//!   decodes keys (and refuses lone surrogates in them);
//! - numbers are `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, literals `true`, `false`,
//!   `null` spelled out; after any value comes `,`, the closing bracket or (at the top level)
//!   the end: so `01`, `1.`, `nul`, `[1,]` and `{"a":1,}` are refused;
//! - nesting deeper than 64 is left to serde_json (its `ignore_value` has no limit);
//! - after the object, only whitespace.
//!
//! Cost: one pass over the body eight bytes at a time (is any byte over 0x7F, any a control
//! byte), then string contents are skipped eight bytes at a time to the next `"` or `\` (SWAR,
//! as serde_json does; the crate forbids `unsafe`, so no SIMD intrinsics); a body with no
//! control byte at all (no line break between tokens: what SDKs send) looks for no control byte
//! in its strings. What remains is per escape (a prompt's line breaks and quotes): one stop each.
//! The property tests below hold it to serde_json on random and adversarial bodies.

use std::ops::Range;

use super::Found;

/// How deep the scan follows nesting before it leaves the body to serde_json (one bit each).
const MAX_DEPTH: u32 = u64::BITS;

/// The top-level `model` and `user` of `body` when it is one valid JSON object the scan can
/// vouch for; `None` when it is not, or the scan cannot tell (see the module docs).
pub(super) fn top_level(body: &[u8]) -> Option<Found> {
    let (any_high, any_control) = byte_classes(body);
    if any_high && std::str::from_utf8(body).is_err() {
        return None;
    }
    let mut scan = Scanner {
        bytes: body,
        at: 0,
        controls: any_control,
    };
    scan.object()
}

/// Eight bytes at a time, as one `u64` (SWAR): `ONES` has 0x01 in every byte, `HIGHS` 0x80.
const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

/// The bytes of `word` under `n` (n <= 0x80), flagged by their high bit. The lowest flag is
/// exactly the first such byte (little-endian: a borrow only runs upward, from a flagged byte);
/// flags above it may be false, so only the lowest is read, or whether there is any.
fn under(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// The bytes of `word` equal to `byte`, flagged as [`under`] flags them.
fn equal(word: u64, byte: u8) -> u64 {
    under(word ^ (ONES * u64::from(byte)), 1)
}

/// Whether any byte of `bytes` is over 0x7F, and whether any is under 0x20: one pass, a word
/// at a time.
fn byte_classes(bytes: &[u8]) -> (bool, bool) {
    let (mut high, mut control) = (0u64, 0u64);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        high |= word;
        control |= under(word, 0x20);
    }
    let mut last = [b' '; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    let word = u64::from_le_bytes(last);
    high |= word;
    control |= under(word, 0x20);
    (high & HIGHS != 0, control != 0)
}

/// A position in the body being scanned.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Whether the body holds any control byte (else strings need not be checked for one).
    controls: bool,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Skips whitespace, then `byte`, or fails.
    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The top-level object and nothing but whitespace after it: where its first `model`
    /// value and first `user` value are, and whether `model` is repeated.
    fn object(&mut self) -> Option<Found> {
        let mut found = Found::default();
        self.eat(b'{')?;
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                let key = self.key()?;
                let value = self.value()?;
                match &self.bytes[key] {
                    b"model" => found.add_model(value),
                    b"user" if found.user.is_none() => found.user = Some(value),
                    _ => {}
                }
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.skip_whitespace();
        (self.at == self.bytes.len()).then_some(found)
    }

    /// A top-level key and its colon: the key's range inside its quotes. A key with an escape
    /// is left to serde_json.
    fn key(&mut self) -> Option<Range<usize>> {
        self.eat(b'"')?;
        let start = self.at;
        if self.string()? {
            return None;
        }
        let key = start..self.at - 1;
        self.eat(b':')?;
        Some(key)
    }

    /// Where the next `"`, `\\` or (in a body that has any) control byte is, from `self.at`: a
    /// word at a time.
    fn next_special(&self) -> Option<usize> {
        let mut at = self.at;
        while let Some(word) = self.bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            let mut flags = equal(word, b'"') | equal(word, b'\\');
            if self.controls {
                flags |= under(word, 0x20);
            }
            if flags != 0 {
                return Some(at + flags.trailing_zeros() as usize / 8);
            }
            at += 8;
        }
        let special = |b: &u8| *b == b'"' || *b == b'\\' || (self.controls && *b < 0x20);
        Some(at + self.bytes[at..].iter().position(special)?)
    }

    /// After an opening quote: to just after the closing one. Returns whether the string held
    /// an escape.
    fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.at = self.next_special()?;
            let stop = self.bytes[self.at];
            self.at += 1;
            match stop {
                b'"' => return Some(escaped),
                b'\\' => escaped = true,
                _ => return None, // a control byte
            }
            match self.peek()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                b'u' => {
                    let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.at += 5;
                }
                _ => return None,
            }
        }
    }

    /// `word` (a literal's letters), or fails.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// Skips ASCII digits; how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// A number (see the module docs for its grammar).
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// One value after optional whitespace: its range. Nested arrays and objects are followed
    /// without recursion, on a stack of one bit per level (set: an object).
    fn value(&mut self) -> Option<Range<usize>> {
        self.skip_whitespace();
        let start = self.at;
        let (mut stack, mut depth) = (0u64, 0u32);
        'value: loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    self.string()?;
                }
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    self.at += 1;
                    let object = open == b'{';
                    (stack, depth) = (stack << 1 | u64::from(object), depth + 1);
                    self.skip_whitespace();
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.at += 1;
                        (stack, depth) = (stack >> 1, depth - 1);
                    } else {
                        if object {
                            self.nested_key()?;
                        }
                        self.skip_whitespace();
                        continue 'value;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close what it ends, until a comma starts the next value.
            loop {
                if depth == 0 {
                    return Some(start..self.at);
                }
                self.skip_whitespace();
                let object = stack & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if object {
                            self.nested_key()?;
                        }
                        self.skip_whitespace();
                        continue 'value;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.at += 1;
                (stack, depth) = (stack >> 1, depth - 1);
            }
        }
    }

    /// A key inside a nested object, and its colon (any valid string).
    fn nested_key(&mut self) -> Option<()> {
        self.eat(b'"')?;
        self.string()?;
        self.eat(b':')
    }
}

#[cfg(test)]
mod tests;
