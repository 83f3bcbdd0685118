//! One key per purpose, derived from `JWT_SECRET_KEY` with HKDF-SHA256 (RFC 5869).
//!
//! The configured secret is never used as a key itself. Each use has its own label, so a
//! value made for one purpose (an access token's signature, a refresh-token successor, a
//! device token's stored hash) is never valid for another, and learning one derived key
//! (say, from a leak of one subsystem) reveals neither the secret nor the other keys.
//! Changing a label, like changing the secret, invalidates what was made with its key.

use hkdf::Hkdf;
use sha2::Sha256;

/// The purposes keys are derived for; the label is HKDF's `info`.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// HS256 signatures of access tokens (`auth::token`).
    AccessToken,
    /// Refresh-token successors (`auth::refresh`).
    RefreshSuccessor,
    /// Stored hashes of device tokens (`auth::device`).
    DeviceToken,
    /// The token and code of an email, from the seed its outbox row keeps (`mail::secrets`).
    EmailSecret,
    /// Stored hashes of emailed tokens and codes (`mail::secrets`).
    EmailSecretHash,
    /// AES-256-GCM sealing of TOTP secrets at rest (`auth::mfa`).
    TotpSecret,
    /// Stored hashes of recovery codes (`auth::mfa`).
    RecoveryCodeHash,
    /// AES-256-GCM sealing of the private halves of signing keys (`auth::signing`).
    SigningKeySeal,
    /// Stored hashes of API keys (`auth::api_keys`).
    ApiKeyHash,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::AccessToken => b"jobpath access-token signing v1",
            Purpose::RefreshSuccessor => b"jobpath refresh-token successor v1",
            Purpose::DeviceToken => b"jobpath device-token hash v1",
            Purpose::EmailSecret => b"jobpath email secret from seed v1",
            Purpose::EmailSecretHash => b"jobpath email secret hash v1",
            Purpose::TotpSecret => b"jobpath totp secret sealing v1",
            Purpose::RecoveryCodeHash => b"jobpath recovery code hash v1",
            Purpose::SigningKeySeal => b"jobpath signing key sealing v1",
            Purpose::ApiKeyHash => b"jobpath api key hash v1",
        }
    }
}

/// HKDF's salt: fixed, as RFC 5869 allows when the input is already a secret; it only
/// keeps these keys apart from any other HKDF use of the same secret.
const SALT: &[u8] = b"jobpath-api";

/// The 256-bit key for `purpose` from the configured secret.
pub fn derive(secret: &[u8], purpose: Purpose) -> [u8; 32] {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(SALT), secret)
        .expand(purpose.label(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_has_its_own_key_and_none_is_the_secret() {
        let secret = b"a configured secret of thirty-two bytes";
        let keys = [
            derive(secret, Purpose::AccessToken),
            derive(secret, Purpose::RefreshSuccessor),
            derive(secret, Purpose::DeviceToken),
            derive(secret, Purpose::EmailSecret),
            derive(secret, Purpose::EmailSecretHash),
            derive(secret, Purpose::TotpSecret),
            derive(secret, Purpose::RecoveryCodeHash),
            derive(secret, Purpose::SigningKeySeal),
            derive(secret, Purpose::ApiKeyHash),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(keys.iter().all(|k| !secret.starts_with(&k[..8])));
        assert_eq!(
            derive(secret, Purpose::AccessToken),
            keys[0],
            "deterministic"
        );
        assert_ne!(
            derive(b"another secret, also long enough", Purpose::AccessToken),
            keys[0]
        );
    }
}
