//! Opaque pagination cursors: versioned, bound to their query, and signed.
//!
//! Layout before base64url (no padding): `version(1) sort(1) fingerprint(8) key(8, BE i64)
//! id(8, BE u64)` followed by the first 16 bytes of HMAC-SHA256 over those 26 bytes. The secret is
//! shared configuration, so every instance accepts every other instance's cursors. The fingerprint
//! binds a cursor to the sort and filters it was issued for.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::domain::{Position, Sort};

const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 26;
const TAG_LEN: usize = 16;
const CURSOR_LEN: usize = PAYLOAD_LEN + TAG_LEN;

/// The key cursors are signed with; built once from the configured secret.
#[derive(Clone)]
pub struct CursorKey {
    mac: Hmac<Sha256>,
}

/// What is wrong with a cursor; the client sees only that it is invalid and why in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("is not a cursor issued by this service")]
    Malformed,
    #[error("was issued by an incompatible version of this service")]
    UnknownVersion,
    #[error("has been tampered with")]
    BadSignature,
    #[error("was issued for a different sort or different filters")]
    QueryMismatch,
}

/// A digest of the canonical sort and filters; equal queries share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    #[must_use]
    pub fn of(canonical_query: &str) -> Self {
        let digest = Sha256::digest(canonical_query.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        Fingerprint(bytes)
    }
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey([redacted])")
    }
}

impl CursorKey {
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        CursorKey {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// A short public id of the secret (12 hex digits of a MAC of a constant): cached pages carry
    /// cursors signed with it, so their shared keys carry this id, and an instance with another
    /// secret (a rotation under way, a misconfiguration) never serves them: its clients would get
    /// 400 for every next page.
    #[must_use]
    pub fn signer_id(&self) -> String {
        hex::encode(&self.tag(b"product-api cached pages")[..6])
    }

    /// Encodes the position after which the next page of `sort`/`fingerprint` starts.
    #[must_use]
    pub fn encode(&self, sort: Sort, fingerprint: Fingerprint, position: Position) -> String {
        let mut bytes = [0u8; CURSOR_LEN];
        bytes[0] = VERSION;
        bytes[1] = sort.code();
        bytes[2..10].copy_from_slice(&fingerprint.0);
        bytes[10..18].copy_from_slice(&position.key.to_be_bytes());
        bytes[18..26].copy_from_slice(&position.id.to_be_bytes());
        let tag = self.tag(&bytes[..PAYLOAD_LEN]);
        bytes[PAYLOAD_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks the signature (in constant time), then that the cursor belongs to this query.
    pub fn decode(
        &self,
        text: &str,
        sort: Sort,
        fingerprint: Fingerprint,
    ) -> Result<Position, CursorError> {
        let mut bytes = [0u8; CURSOR_LEN];
        let decoded_len = URL_SAFE_NO_PAD
            .decode_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| CursorError::Malformed)?;
        if text.len() != URL_SAFE_NO_PAD.encode(bytes).len() || decoded_len != CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let mut mac = self.mac.clone();
        mac.update(&bytes[..PAYLOAD_LEN]);
        mac.verify_truncated_left(&bytes[PAYLOAD_LEN..])
            .map_err(|_| CursorError::BadSignature)?;
        if bytes[0] != VERSION {
            return Err(CursorError::UnknownVersion);
        }
        if bytes[1] != sort.code() || bytes[2..10] != fingerprint.0 {
            return Err(CursorError::QueryMismatch);
        }
        Ok(Position {
            key: i64::from_be_bytes(bytes[10..18].try_into().expect("8 bytes")),
            id: u64::from_be_bytes(bytes[18..26].try_into().expect("8 bytes")),
        })
    }

    fn tag(&self, payload: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> CursorKey {
        CursorKey::new(b"test secret of enough length 0123456789")
    }

    #[test]
    fn rejects_every_kind_of_bad_cursor() {
        let fp = Fingerprint::of("sort=price");
        let good = key().encode(Sort::PriceAsc, fp, Position { key: 1250, id: 7 });
        let mut flipped = good.clone().into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases = [
            ("", CursorError::Malformed),
            ("not base64!", CursorError::Malformed),
            (&good[..good.len() - 1], CursorError::Malformed),
            (&flipped, CursorError::BadSignature),
        ];
        for (text, expected) in cases {
            assert_eq!(
                key().decode(text, Sort::PriceAsc, fp),
                Err(expected),
                "{text}"
            );
        }
        let other_key = CursorKey::new(b"another secret");
        assert_eq!(
            other_key.decode(&good, Sort::PriceAsc, fp),
            Err(CursorError::BadSignature)
        );
        assert_eq!(
            key().decode(&good, Sort::PriceDesc, fp),
            Err(CursorError::QueryMismatch)
        );
        let other_fp = Fingerprint::of("sort=price&category=tops");
        assert_eq!(
            key().decode(&good, Sort::PriceAsc, other_fp),
            Err(CursorError::QueryMismatch)
        );
    }

    #[test]
    fn the_signer_id_names_the_secret_without_revealing_it() {
        let id = key().signer_id();
        assert_eq!(id, key().signer_id());
        assert_eq!(id.len(), 12);
        assert_ne!(id, CursorKey::new(b"another secret").signer_id());
    }

    proptest! {
        #[test]
        fn round_trips(sort_code in 0u8..4, key_value: i64, id: u64, query in "\\PC{0,30}") {
            let sort = Sort::from_code(sort_code).unwrap();
            let fp = Fingerprint::of(&query);
            let position = Position { key: key_value, id };
            let text = key().encode(sort, fp, position);
            prop_assert_eq!(key().decode(&text, sort, fp), Ok(position));
        }
    }
}
