//! Percent-encoding (RFC 3986) for the few places the sidecar reads or writes URL components:
//! query parameter names in the rewrite, fan-out query values and `sslrootcert` in database URLs.
//! The `percent-encoding` crate does the work (the one `url` and `reqwest` use); this module only
//! fixes the character set and the lossy UTF-8 rule in one place.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// As [`NOT_UNRESERVED`], keeping `/`: a path's segments encoded, its separators left.
const NOT_UNRESERVED_OR_SLASH: &AsciiSet = &NOT_UNRESERVED.remove(b'/');

/// Decodes `%XX` escapes (malformed ones are kept as they are; invalid UTF-8 is replaced), so
/// `%6Bey` reads as `key`. Borrows when there is nothing to decode.
pub fn decode(text: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy()
}

/// Encodes everything but unreserved characters.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// Encodes everything but unreserved characters and `/` (AWS SigV4's canonical path: the path as
/// sent, `%` included, encoded once more).
pub fn encode_path(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED_OR_SLASH).to_string()
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
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert!(matches!(decode("plain"), Cow::Borrowed("plain")));
        assert_eq!(encode("2024-10-21 x&"), "2024-10-21%20x%26");
        assert_eq!(encode("a-b.c_d~é"), "a-b.c_d~%C3%A9");
        assert_eq!(encode_path("/model/a%3A0/x y"), "/model/a%253A0/x%20y");
    }
}
