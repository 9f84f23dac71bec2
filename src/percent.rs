//! Percent-encoding (RFC 3986) for the few places the sidecar reads or writes URL components:
//! query parameter names in the rewrite, and `sslrootcert` in database URLs.

use std::borrow::Cow;

/// Decodes `%XX` escapes (malformed ones are kept as they are; invalid UTF-8 is replaced), so
/// `%6Bey` reads as `key`. Borrows when there is nothing to decode.
pub fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Encodes everything but unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_never_panics_on_odd_input() {
        for q in ["%", "%4", "%zz", "%é", "a=%ff%fe", "+%2", "é%"] {
            let _ = decode(q);
        }
        assert_eq!(decode("%6Bey"), "key");
        assert_eq!(decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(encode("2024-10-21 x&"), "2024-10-21%20x%26");
    }
}
