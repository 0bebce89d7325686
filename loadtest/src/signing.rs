//! Standard Webhooks v1 signing, as a sender does it: `v1,` + base64 of
//! HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the secret's decoded bytes.
//! Written here rather than shared with the service so the load test checks the
//! service against the specification, not against its own code.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signing key, from `WEBHOOK_SECRET` (`whsec_` + base64, or bare base64).
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

/// Why a `WEBHOOK_SECRET` cannot be used. Says nothing about the secret's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    NotBase64,
    Empty,
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretError::NotBase64 => "the webhook secret is not whsec_ followed by base64",
            SecretError::Empty => "the webhook secret is empty",
        })
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    pub fn parse(secret: &str) -> Result<Signer, SecretError> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SecretError::Empty)?;
        Ok(Signer { mac })
    }

    /// The `webhook-signature` header value for one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference
    /// libraries' tests).
    #[test]
    fn matches_the_specification_example() {
        let signer = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn prefix_is_optional_and_any_change_changes_the_signature() {
        let with = Signer::parse("whsec_c2VjcmV0").unwrap();
        let without = Signer::parse("c2VjcmV0").unwrap();
        let base = with.sign("evt_1", 1, b"{}");
        assert_eq!(base, without.sign("evt_1", 1, b"{}"));
        assert_ne!(base, with.sign("evt_2", 1, b"{}"));
        assert_ne!(base, with.sign("evt_1", 2, b"{}"));
        assert_ne!(base, with.sign("evt_1", 1, b"{ }"));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(Signer::parse("whsec_").unwrap_err(), SecretError::Empty);
        assert_eq!(
            Signer::parse("whsec_not base64!").unwrap_err(),
            SecretError::NotBase64
        );
    }
}
