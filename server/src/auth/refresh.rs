//! Refresh tokens: opaque, single-use, rotated on every refresh.
//!
//! A session's first refresh token is 256 random bits. Each successor is derived from its
//! predecessor and the session's own secret (`sessions.refresh_secret`, random, never sent
//! to anyone) with HMAC-SHA256 under a key derived from the JWT secret (`auth::keys`), so a
//! client that refreshes twice in a race (two tabs, a retried request) is given the *same*
//! successor — the server recomputes it — without any token ever being stored in plaintext.
//! The database keeps only SHA-256 hashes: the tokens are high-entropy, so a fast hash is
//! enough and look-ups stay one index probe. The session secret means that the key and a
//! token alone do not give the next token: the database row is needed too.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Longest refresh token accepted as input (ours are 43 characters).
pub const MAX_TOKEN_CHARS: usize = 512;

pub struct RefreshKeys {
    successor_key: [u8; 32],
}

impl RefreshKeys {
    pub fn new(jwt_secret: &[u8]) -> RefreshKeys {
        RefreshKeys {
            successor_key: super::keys::derive(jwt_secret, super::keys::Purpose::RefreshSuccessor),
        }
    }

    /// A new session's first refresh token.
    pub fn fresh(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        encode(&bytes)
    }

    /// The token that replaces `token` when it is spent, in the session whose secret is
    /// `session_secret` (fixed-length, so the concatenation is unambiguous).
    pub fn successor(&self, session_secret: &[u8], token: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.successor_key).expect("32-byte key");
        mac.update(session_secret);
        mac.update(token.as_bytes());
        encode(&mac.finalize().into_bytes())
    }
}

/// What the database stores in place of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_are_deterministic_distinct_and_keyed() {
        let keys = RefreshKeys::new(b"secret one, long enough for a test");
        let first = keys.fresh();
        assert_ne!(first, keys.fresh(), "fresh tokens are random");
        let secret = [7u8; 32];
        let next = keys.successor(&secret, &first);
        assert_eq!(
            next,
            keys.successor(&secret, &first),
            "a race gets the same successor"
        );
        assert_ne!(next, first);
        assert_ne!(keys.successor(&secret, &next), next);
        let other = RefreshKeys::new(b"secret two, long enough for a test");
        assert_ne!(other.successor(&secret, &first), next, "the key matters");
        assert_ne!(
            keys.successor(&[8u8; 32], &first),
            next,
            "the session's secret matters"
        );
        assert_eq!(hash(&first).len(), 32);
        assert_eq!(first.len(), 43);
    }
}
