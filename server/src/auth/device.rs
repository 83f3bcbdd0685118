//! Device tokens: what a successful login hands the client as proof of itself, so that its
//! later logins of the same account are held to their own allowance rather than to the
//! (possibly attacked) client network's (OWASP's "device cookies").
//!
//! A token is 256 random bits. The database keeps only an HMAC-SHA256 of it under a key
//! derived from the JWT secret (`auth::keys`), so a copy of the `login_devices` table
//! proves nothing.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a device token is honoured after the login that issued it.
pub const TTL: Duration = Duration::from_secs(180 * 24 * 3600);

pub struct DeviceKeys {
    key: [u8; 32],
}

impl DeviceKeys {
    pub fn new(jwt_secret: &[u8]) -> DeviceKeys {
        DeviceKeys {
            key: super::keys::derive(jwt_secret, super::keys::Purpose::DeviceToken),
        }
    }

    /// A new device token.
    pub fn fresh(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What the database stores in place of `token`.
    pub fn hash(&self, token: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("32-byte key");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}
