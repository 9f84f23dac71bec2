//! LiteLLM's at-rest encryption: the four stored formats, read and written.
//!
//! | format | layout after the prefix | key |
//! | --- | --- | --- |
//! | NaCl (standard or url-safe base64, no prefix) | nonce 24 ‖ Poly1305 tag 16 ‖ ciphertext (XSalsa20-Poly1305 secretbox) | SHA-256(salt key) |
//! | `v2:gcm:` + url-safe base64 | nonce 12 ‖ ciphertext ‖ tag 16 (AES-256-GCM, no AAD) | SHA-256(salt key) |
//! | `v3:gcm:` + url-safe base64 | same as v2 | HKDF-SHA256(ikm = salt key, no salt, info `litellm-at-rest-v3`) |
//!
//! Decryption never falls back to treating the input as plaintext (LiteLLM does; we fail closed),
//! and no error message carries any part of the plaintext or the key.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use boring::symm::{decrypt_aead, encrypt_aead, Cipher};
use dryoc::classic::crypto_secretbox::{crypto_secretbox_easy, crypto_secretbox_open_easy};
use dryoc::constants::{CRYPTO_SECRETBOX_MACBYTES, CRYPTO_SECRETBOX_NONCEBYTES};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Secret;

const V2_PREFIX: &str = "v2:gcm:";
const V3_PREFIX: &str = "v3:gcm:";
const V3_HKDF_INFO: &[u8] = b"litellm-at-rest-v3";
const GCM_NONCE_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const NACL_MIN_LEN: usize = CRYPTO_SECRETBOX_NONCEBYTES + CRYPTO_SECRETBOX_MACBYTES;

/// Lenient on padding (LiteLLM pads; hand-edited rows sometimes do not), strict on the alphabet.
const PAD_INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_SAFE_DECODER: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PAD_INDIFFERENT);
const STANDARD_DECODER: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PAD_INDIFFERENT);
const URL_SAFE_ENCODER: GeneralPurpose = base64::engine::general_purpose::URL_SAFE;

/// A stored format `encrypt` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `v3:gcm:` AES-256-GCM with an HKDF-derived key: LiteLLM's source after its 1.110.2
    /// release. No released LiteLLM reads it: 1.106.2 and 1.110.2 decrypt it to nothing and
    /// then send the ciphertext itself as the key.
    V3,
    /// `v2:gcm:` AES-256-GCM with a SHA-256 key: read by LiteLLM 1.106.2 and 1.110.2.
    V2,
    /// NaCl secretbox in url-safe base64: what released LiteLLM writes, and every release reads.
    Nacl,
}

impl Format {
    /// The CLI / config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Format::V3 => "v3",
            Format::V2 => "v2",
            Format::Nacl => "nacl",
        }
    }

    /// Parses the CLI / config spelling: `v3`, `v2` or `nacl`.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "v3" => Some(Format::V3),
            "v2" => Some(Format::V2),
            "nacl" => Some(Format::Nacl),
            _ => None,
        }
    }
}

/// Why a stored value could not be decrypted. Never contains key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The value is not valid base64 in the alphabet its format uses.
    #[error("not valid base64")]
    NotBase64,
    /// The decoded value is too short to hold a nonce and a tag.
    #[error("too short to be a LiteLLM ciphertext")]
    TooShort,
    /// A `vN:` prefix this version does not know.
    #[error("unknown format prefix")]
    UnknownPrefix,
    /// Authentication failed: wrong salt key, or the value was altered.
    #[error("authentication failed (wrong salt key or tampered value)")]
    Authentication,
    /// Decrypted, but the plaintext is not UTF-8.
    #[error("plaintext is not UTF-8")]
    NotUtf8,
}

/// The keys derived from a salt key, computed once and reused for every value.
pub struct Keys {
    sha256: Zeroizing<[u8; 32]>,
    hkdf_v3: Zeroizing<[u8; 32]>,
}

impl Keys {
    /// Derives the NaCl/v2 key (SHA-256) and the v3 key (HKDF-SHA256) from `salt_key`.
    #[allow(
        clippy::expect_used,
        reason = "HKDF-SHA256 expands 32 bytes, far under its 255 x 32-byte limit"
    )]
    pub fn derive(salt_key: &Secret) -> Keys {
        let mut sha256 = Zeroizing::new([0u8; 32]);
        sha256.copy_from_slice(&Sha256::digest(salt_key.expose().as_bytes()));
        let mut hkdf_v3 = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, salt_key.expose().as_bytes())
            .expand(V3_HKDF_INFO, hkdf_v3.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Keys { sha256, hkdf_v3 }
    }

    /// The SHA-256 key, for tests against published vectors.
    pub fn sha256_key(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// The HKDF v3 key, for tests against published vectors.
    pub fn hkdf_v3_key(&self) -> &[u8; 32] {
        &self.hkdf_v3
    }
}

/// Decrypts a value in any of the four stored formats.
pub fn decrypt(stored: &str, keys: &Keys) -> Result<Secret, DecryptError> {
    let plaintext = if let Some(body) = stored.strip_prefix(V3_PREFIX) {
        gcm_open(body, &keys.hkdf_v3)?
    } else if let Some(body) = stored.strip_prefix(V2_PREFIX) {
        gcm_open(body, &keys.sha256)?
    } else if stored.contains(':') {
        // Neither base64 alphabet has ':', so this is a version prefix we do not know.
        return Err(DecryptError::UnknownPrefix);
    } else {
        nacl_open(stored, &keys.sha256)?
    };
    Secret::from_utf8(plaintext).map_err(|_| DecryptError::NotUtf8)
}

/// The format of a stored value, by its prefix (NaCl has none).
pub fn format_of(stored: &str) -> Format {
    if stored.starts_with(V3_PREFIX) {
        Format::V3
    } else if stored.starts_with(V2_PREFIX) {
        Format::V2
    } else {
        Format::Nacl
    }
}

/// Encrypts `plaintext` in `format` with a fresh random nonce.
pub fn encrypt(plaintext: &str, format: Format, keys: &Keys) -> String {
    match format {
        Format::V3 => format!("{V3_PREFIX}{}", gcm_seal(plaintext, &keys.hkdf_v3)),
        Format::V2 => format!("{V2_PREFIX}{}", gcm_seal(plaintext, &keys.sha256)),
        Format::Nacl => nacl_seal(plaintext, &keys.sha256),
    }
}

fn gcm_open(body: &str, key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let raw = URL_SAFE_DECODER
        .decode(body)
        .map_err(|_| DecryptError::NotBase64)?;
    if raw.len() < GCM_NONCE_LEN + GCM_TAG_LEN {
        return Err(DecryptError::TooShort);
    }
    let (nonce, rest) = raw.split_at(GCM_NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
    decrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(nonce),
        &[],
        ciphertext,
        tag,
    )
    .map(Zeroizing::new)
    .map_err(|_| DecryptError::Authentication)
}

#[allow(
    clippy::expect_used,
    reason = "BoringSSL's RNG does not fail, and AES-256-GCM takes any key of 32 bytes"
)]
fn gcm_seal(plaintext: &str, key: &[u8; 32]) -> String {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    boring::rand::rand_bytes(&mut nonce).expect("BoringSSL RNG never fails");
    let mut tag = [0u8; GCM_TAG_LEN];
    let ciphertext = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        &[],
        plaintext.as_bytes(),
        &mut tag,
    )
    .expect("AES-256-GCM with a 32-byte key and 12-byte nonce cannot fail");
    let mut out = Vec::with_capacity(GCM_NONCE_LEN + ciphertext.len() + GCM_TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out.extend_from_slice(&tag);
    URL_SAFE_ENCODER.encode(out)
}

#[allow(
    clippy::expect_used,
    reason = "the slice was split at exactly the nonce's length"
)]
fn nacl_open(stored: &str, key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    // LiteLLM's own decoder tries url-safe first, then standard base64.
    let raw = URL_SAFE_DECODER
        .decode(stored)
        .or_else(|_| STANDARD_DECODER.decode(stored))
        .map_err(|_| DecryptError::NotBase64)?;
    if raw.len() < NACL_MIN_LEN {
        return Err(DecryptError::TooShort);
    }
    let (nonce, boxed) = raw.split_at(CRYPTO_SECRETBOX_NONCEBYTES);
    let nonce: &[u8; CRYPTO_SECRETBOX_NONCEBYTES] = nonce
        .try_into()
        .expect("split_at gave exactly the nonce length");
    let mut message = Zeroizing::new(vec![0u8; boxed.len() - CRYPTO_SECRETBOX_MACBYTES]);
    crypto_secretbox_open_easy(&mut message, boxed, nonce, key)
        .map_err(|_| DecryptError::Authentication)?;
    Ok(message)
}

#[allow(
    clippy::expect_used,
    reason = "BoringSSL's RNG does not fail, and the output buffer is sized for the tag and message"
)]
fn nacl_seal(plaintext: &str, key: &[u8; 32]) -> String {
    let mut nonce = [0u8; CRYPTO_SECRETBOX_NONCEBYTES];
    boring::rand::rand_bytes(&mut nonce).expect("BoringSSL RNG never fails");
    let mut boxed = vec![0u8; plaintext.len() + CRYPTO_SECRETBOX_MACBYTES];
    crypto_secretbox_easy(&mut boxed, plaintext.as_bytes(), &nonce, key)
        .expect("the output buffer has room for tag and message");
    let mut out = Vec::with_capacity(nonce.len() + boxed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&boxed);
    URL_SAFE_ENCODER.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(salt: &str) -> Keys {
        Keys::derive(&Secret::new(salt.to_string()))
    }

    #[test]
    fn every_format_round_trips() {
        let keys = keys("sk-1234");
        for format in [Format::V3, Format::V2, Format::Nacl] {
            for plaintext in ["sk-proj-abc", "", "ünïcødé ✓", &"x".repeat(4096)] {
                let stored = encrypt(plaintext, format, &keys);
                let back = decrypt(&stored, &keys).expect("own ciphertext decrypts");
                assert_eq!(back.expose(), plaintext, "{format:?}");
            }
        }
    }

    #[test]
    fn fresh_nonce_every_time() {
        let keys = keys("sk-1234");
        assert_ne!(
            encrypt("same", Format::V3, &keys),
            encrypt("same", Format::V3, &keys)
        );
    }

    #[test]
    fn wrong_key_is_an_authentication_error() {
        let stored = encrypt("secret", Format::V3, &keys("a"));
        assert_eq!(
            decrypt(&stored, &keys("b")).unwrap_err(),
            DecryptError::Authentication
        );
    }

    #[test]
    fn errors_never_echo_input() {
        let err = decrypt(
            "v3:gcm:c2stc2VjcmV0LXZhbHVlLXRoYXQtaXMtbG9uZy1lbm91Z2g",
            &keys("k"),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("c2st"));
    }
}
