//! Sealing tokens at rest, random identifiers and webhook signatures.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::configuration::ConfigError;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[error("sealed value is malformed or was not sealed with this key for this request")]
pub struct OpenError;

/// AES-256-GCM with a random nonce per value. The associated data binds a
/// ciphertext to the request it belongs to, so sealed values cannot be
/// swapped between requests in the store. It also derives keyed digests
/// (HMAC-SHA256 under a subkey of the same key), for values that must be
/// stable per input yet unpredictable without the key.
#[derive(Clone)]
pub struct TokenCipher(Aes256Gcm, [u8; 32]);

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher(..)")
    }
}

impl TokenCipher {
    /// `key` is base64 (standard or URL-safe) of exactly 32 bytes.
    pub fn from_base64(key: &SecretString) -> Result<Self, ConfigError> {
        let text = key.expose_secret().trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| ConfigError::new("ciba.token_encryption_key", "is not valid base64"))?;
        if bytes.len() != 32 {
            return Err(ConfigError::new(
                "ciba.token_encryption_key",
                format!("must decode to 32 bytes, got {}", bytes.len()),
            ));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| ConfigError::new("ciba.token_encryption_key", "invalid key"))?;
        // A separate subkey, so a digest never uses the AES key itself.
        let mut subkey = Sha256::new();
        subkey.update(b"ciba-proxy keyed digest\0");
        subkey.update(&bytes);
        Ok(Self(cipher, subkey.finalize().into()))
    }

    /// HMAC-SHA256 of `input` under the key, separated by `label`: the same
    /// for the same input on every instance, unguessable without the key.
    pub fn keyed_digest(&self, label: &str, input: &[u8]) -> [u8; 32] {
        // RFC 2104: a key shorter than the block is zero-padded to it.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.1);
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(input);
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        self.seal_with(nonce, plaintext, aad)
    }

    /// Seals so that the same `plaintext` and `aad` always give the same
    /// value (the nonce is a keyed digest of both), for a value that must
    /// be made again identically, as a sign-in link's `state`. It reveals
    /// only that two values are equal; [`Self::open`] opens it.
    pub fn seal_deterministic(&self, plaintext: &[u8], aad: &str) -> String {
        let mut input = aad.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(plaintext);
        let digest = self.keyed_digest("deterministic nonce", &input);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        self.seal_with(nonce, plaintext, aad)
    }

    fn seal_with(&self, nonce: [u8; NONCE_LEN], plaintext: &[u8], aad: &str) -> String {
        let payload = Payload {
            msg: plaintext,
            aad: aad.as_bytes(),
        };
        // Encryption with a valid key and a 12-byte nonce cannot fail.
        let ciphertext = self
            .0
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, OpenError> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| OpenError)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError)
    }
}

/// `bytes` random bytes as unpadded base64url (`A-Za-z0-9-_`).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `hex(HMAC-SHA256(secret, body))`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A short, non-reversible tag for log lines: identifiers that act as
/// bearer secrets (auth_req_id, state) never reach the log themselves.
pub fn log_tag(value: &str) -> String {
    hex::encode(&Sha256::digest(value.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> TokenCipher {
        TokenCipher::from_base64(&SecretString::from(STANDARD.encode([7u8; 32]))).unwrap()
    }

    #[test]
    fn sealed_value_opens_only_with_the_same_aad() {
        let c = cipher();
        let sealed = c.seal(b"access-token", "req-1");
        assert!(!sealed.contains("access-token"));
        assert_eq!(c.open(&sealed, "req-1").unwrap(), b"access-token");
        assert!(c.open(&sealed, "req-2").is_err());
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let c = cipher();
        assert_ne!(c.seal(b"x", "a"), c.seal(b"x", "a"));
    }

    #[test]
    fn deterministic_sealing_repeats_only_for_the_same_input_and_opens() {
        let c = cipher();
        let sealed = c.seal_deterministic(b"id-1", "state");
        assert_eq!(sealed, c.seal_deterministic(b"id-1", "state"));
        assert_ne!(sealed, c.seal_deterministic(b"id-2", "state"));
        assert_ne!(sealed, c.seal_deterministic(b"id-1", "other"));
        assert!(!sealed.contains("id-1"));
        assert_eq!(c.open(&sealed, "state").unwrap(), b"id-1");
        assert!(c.open(&sealed, "other").is_err());
    }

    #[test]
    fn tampered_or_garbage_input_is_rejected_not_panicking() {
        let c = cipher();
        let mut sealed = c.seal(b"x", "a").into_bytes();
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        assert!(c.open(std::str::from_utf8(&sealed).unwrap(), "a").is_err());
        assert!(c.open("", "a").is_err());
        assert!(c.open("!!!", "a").is_err());
    }

    #[test]
    fn key_of_wrong_length_is_a_config_error_naming_the_key() {
        let e =
            TokenCipher::from_base64(&SecretString::from(STANDARD.encode([1u8; 16]))).unwrap_err();
        assert_eq!(e.key, "ciba.token_encryption_key");
        assert!(e.message.contains("32"));
    }

    #[test]
    fn keyed_digests_are_stable_per_input_and_depend_on_key_and_label() {
        let c = cipher();
        let other =
            TokenCipher::from_base64(&SecretString::from(STANDARD.encode([8u8; 32]))).unwrap();
        assert_eq!(c.keyed_digest("l", b"x"), c.keyed_digest("l", b"x"));
        assert_ne!(c.keyed_digest("l", b"x"), c.keyed_digest("l", b"y"));
        assert_ne!(c.keyed_digest("l", b"x"), c.keyed_digest("m", b"x"));
        assert_ne!(c.keyed_digest("l", b"x"), other.keyed_digest("l", b"x"));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
