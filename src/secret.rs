//! `Secret`: a string that holds key material (provider keys, the salt key).
//!
//! The bytes are zeroized when the value is dropped, and `Debug`/`Display` print `[redacted]`,
//! so a secret cannot reach a log line or an error body by accident. The only way to read it is
//! [`Secret::expose`], which makes every use greppable.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderValue, InvalidHeaderValue};
use zeroize::Zeroizing;

/// What `Debug` and `Display` print in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// A secret string, zeroized on drop and redacted when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`; the `String`'s buffer is zeroized when the secret is dropped.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// Takes ownership of decrypted bytes, which must be UTF-8. On error the bytes are zeroized.
    pub fn from_utf8(bytes: Zeroizing<Vec<u8>>) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        let mut bytes = bytes;
        let owned = std::mem::take(&mut *bytes);
        // The buffer was checked above; this moves it without copying the plaintext.
        let text = String::from_utf8(owned).map_err(|e| e.utf8_error())?;
        Ok(Secret::new(text))
    }

    /// The secret's value. Call only where the value is put on the wire or encrypted.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text of the file at `path`, at most `max` bytes, read into a zeroizing buffer made
    /// to size first (so it is never moved, leaving no copy behind). Errors name the path,
    /// never what it holds.
    pub fn read_file(path: &std::path::Path, max: u64) -> Result<Secret, String> {
        use std::io::Read;
        let shown = path.display();
        let failed = |e: std::io::Error| format!("cannot read {shown}: {e}");
        let file = std::fs::File::open(path).map_err(failed)?;
        let room = usize::try_from(max).map_or(usize::MAX, |m| m.saturating_add(1));
        let mut bytes = Zeroizing::new(Vec::with_capacity(room));
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(failed)?;
        if bytes.len() as u64 > max {
            return Err(format!("{shown} holds more than {max} bytes"));
        }
        Secret::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8"))
    }

    /// The string a JSON string literal (`raw`, quotes included, as a
    /// [`serde_json::value::RawValue`] borrows it) holds, unescaped straight into a zeroizing
    /// buffer: serde_json's own unescaping goes through a scratch buffer it frees without
    /// clearing, which would leave a private key behind in freed memory. The buffer is made as
    /// large as `raw` first (unescaping never lengthens), so it is never moved. `None` when
    /// `raw` is not a string literal or holds an escape JSON does not have (a lone surrogate).
    pub fn from_json_string(raw: &str) -> Option<Secret> {
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = Zeroizing::new(String::with_capacity(inner.len()));
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            out.push(match chars.next()? {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'b' => '\u{8}',
                'f' => '\u{c}',
                c @ ('"' | '\\' | '/') => c,
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 4)?;
                    char::from_u32(code)?
                }
                _ => return None,
            });
        }
        Some(Secret(out))
    }

    /// `prefix` then the secret, as a header value marked sensitive (printed as `Sensitive`),
    /// whose bytes are zeroized when its last clone is dropped. Fails on bytes a header value
    /// cannot hold (the error carries no value).
    pub fn to_header_value(&self, prefix: &str) -> Result<HeaderValue, InvalidHeaderValue> {
        let mut text = Zeroizing::new(Vec::with_capacity(prefix.len() + self.0.len()));
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(self.0.as_bytes());
        // Shared without a copy (`from_maybe_shared` takes `Bytes` as they are).
        let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(ZeroizedOnDrop(text)))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A row's decrypted fields from `pairs`, for tests.
#[cfg(test)]
pub(crate) fn fields(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, Secret> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Secret::new(v.to_string())))
        .collect()
}

/// Bytes zeroized when dropped, as the owner of a [`Bytes`].
struct ZeroizedOnDrop(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_redacted_in_debug_and_display() {
        let secret = Secret::new("sk-live-123".to_string());
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "sk-live-123");
    }

    #[test]
    fn a_header_value_holds_prefix_and_key_and_prints_as_sensitive() {
        let secret = Secret::new("sk-live-123".to_string());
        let value = secret.to_header_value("Bearer ").expect("valid");
        assert_eq!(value.as_bytes(), b"Bearer sk-live-123");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("sk-live"));
        let broken = Secret::new("sk\nx".to_string());
        assert!(broken.to_header_value("").is_err());
    }

    #[test]
    fn a_json_string_is_unescaped_as_serde_json_unescapes_it() {
        for text in [
            "-----BEGIN PRIVATE KEY-----\nMIIE/a+b==\n-----END PRIVATE KEY-----\n",
            "tab\t quote\" backslash\\ slash/ ctl\u{1} é 雪 \u{1F600}",
            "",
        ] {
            let literal = serde_json::to_string(text).expect("json");
            // Escaped slashes and \u escapes too, which serde_json does not write.
            let literal = literal.replace('/', "\\/").replace('é', "\\u00e9");
            let secret = Secret::from_json_string(&literal).expect("a string literal");
            assert_eq!(secret.expose(), text, "{literal}");
        }
        for bad in ["nope", "\"x", "\"a\\q\"", "\"\\u12\"", "\"\\ud800\"", "5"] {
            assert!(Secret::from_json_string(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn from_utf8_rejects_invalid_bytes() {
        assert!(Secret::from_utf8(Zeroizing::new(vec![0xff, 0xfe])).is_err());
        let ok = Secret::from_utf8(Zeroizing::new(b"abc".to_vec())).expect("utf-8");
        assert_eq!(ok.expose(), "abc");
    }
}
