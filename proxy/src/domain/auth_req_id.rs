use sha2::{Digest, Sha256};

use crate::crypto::{random_token, TokenCipher};

/// CIBA Core §7.3: an opaque, unguessable handle. Ours carries 160 random
/// bits (RFC 6749 §10.10's SHOULD for generated credentials) as base64url,
/// so it only ever uses `A-Za-z0-9-_`. No more: the id is in six Redis
/// keys and members per pending request.
/// Serialized as the plain string; deserializing parses it again, so a
/// background job read back from the store holds a valid id too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuthReqId(String);

const RANDOM_BYTES: usize = 20;
const MAX_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("auth_req_id is malformed")]
pub struct MalformedAuthReqId;

impl AuthReqId {
    pub fn generate() -> Self {
        Self(random_token(RANDOM_BYTES))
    }

    /// Accepts what a client sends back; anything that could not be ours is
    /// rejected before it reaches the store.
    pub fn parse(s: &str) -> Result<Self, MalformedAuthReqId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| Self(s.to_owned())).ok_or(MalformedAuthReqId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable name for the request where the id itself must not appear
    /// (job ids, the decision channel): hex of 128 bits of its SHA-256.
    pub fn digest(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..16])
    }

    /// A bearer reference to this request for a third party (an approval
    /// link, an IdP's ping token): the id and 128 random bits, sealed with
    /// `aad`, so it finds the request without a lookup key, is fresh each
    /// time, and only this proxy can make one.
    pub fn seal_reference(&self, cipher: &TokenCipher, aad: &str) -> String {
        let plain = format!("{}.{}", self.0, random_token(16));
        cipher.seal(plain.as_bytes(), aad)
    }

    /// Like [`Self::seal_reference`], but the same each time for the same
    /// id and `aad` (no random part), for a reference that must be made
    /// again identically, as a sign-in link's callback `state`.
    pub fn seal_stable_reference(&self, cipher: &TokenCipher, aad: &str) -> String {
        cipher.seal_deterministic(format!("{}.", self.0).as_bytes(), aad)
    }

    /// The request a reference from [`Self::seal_reference`] or
    /// [`Self::seal_stable_reference`] names.
    pub fn open_reference(cipher: &TokenCipher, reference: &str, aad: &str) -> Option<Self> {
        const MAX_REFERENCE_LEN: usize = 512;
        if reference.is_empty() || reference.len() > MAX_REFERENCE_LEN {
            return None;
        }
        let plain = String::from_utf8(cipher.open(reference, aad).ok()?).ok()?;
        let (id, _) = plain.split_once('.')?;
        Self::parse(id).ok()
    }
}

impl TryFrom<String> for AuthReqId {
    type Error = MalformedAuthReqId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AuthReqId> for String {
    fn from(id: AuthReqId) -> Self {
        id.0
    }
}

impl std::fmt::Display for AuthReqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_have_at_least_160_bits_and_a_safe_alphabet() {
        let id = AuthReqId::generate();
        // 20 bytes = 160 bits; base64url without padding is 27 characters.
        assert_eq!(id.as_str().len(), 27);
        assert!(AuthReqId::parse(id.as_str()).is_ok());
        assert_ne!(AuthReqId::generate(), id);
    }

    #[test]
    fn rejects_empty_too_long_and_foreign_characters() {
        assert!(AuthReqId::parse("").is_err());
        assert!(AuthReqId::parse(&"a".repeat(257)).is_err());
        assert!(AuthReqId::parse("abc def").is_err());
        assert!(AuthReqId::parse("abc:{x}").is_err());
    }

    #[test]
    fn serde_round_trips_and_refuses_malformed_ids() {
        let id = AuthReqId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<AuthReqId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<AuthReqId>("\"a b\"").is_err());
    }

    #[test]
    fn a_sealed_reference_leads_back_to_its_request_and_nowhere_else() {
        let cipher =
            TokenCipher::from_base64(&"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into())
                .unwrap();
        let id = AuthReqId::generate();
        let reference = id.seal_reference(&cipher, "link");
        assert!(!reference.contains(id.as_str()));
        assert_ne!(
            reference,
            id.seal_reference(&cipher, "link"),
            "fresh each time"
        );
        assert_eq!(
            AuthReqId::open_reference(&cipher, &reference, "link"),
            Some(id)
        );
        assert_eq!(AuthReqId::open_reference(&cipher, &reference, "ping"), None);
        assert_eq!(AuthReqId::open_reference(&cipher, "forged", "link"), None);
        assert_eq!(
            AuthReqId::open_reference(&cipher, &"A".repeat(600), "link"),
            None
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_the_alphabet(s in ".{0,300}") {
            if let Ok(id) = AuthReqId::parse(&s) {
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            }
        }
    }
}
