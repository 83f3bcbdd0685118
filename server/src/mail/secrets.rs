//! Emailed secrets: the token of a link and the code to type, made from a seed.
//!
//! A request that issues a secret draws a random 256-bit seed. The token (256 bits,
//! base64url, 43 characters) and the 8-digit code are HMAC-SHA256 of the seed under a key
//! derived from the server's secret (`auth::keys`), so:
//!
//! - the outbox row keeps only the seed, which the sender turns back into the link and the
//!   code when it writes the message, and which is erased when the row reaches a terminal
//!   state; without the server's secret the seed gives neither;
//! - `one_time_secrets` keeps only keyed hashes: of the token, and of the code bound to the
//!   secret's own id, so that a code is compared only with its own account's secret and a
//!   copy of the table proves nothing.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use uuid::Uuid;

use crate::auth::keys::{self, Purpose};

type HmacSha256 = Hmac<Sha256>;

/// Digits of an emailed code: 10^8 values, against at most [`MAX_CODE_ATTEMPTS`] guesses
/// per secret.
pub const CODE_DIGITS: usize = 8;
/// Wrong codes a secret survives; the attempt that reaches it spends the secret.
pub const MAX_CODE_ATTEMPTS: i32 = 5;
/// The longest token accepted: ours are 43 characters, and the spec allows 512.
pub const MAX_TOKEN_CHARS: usize = 512;

/// What a new secret is made of: the ids of its row and of its email's outbox row, the seed
/// the email keeps, and the hashes the secret's row keeps.
pub struct Issued {
    pub secret_id: Uuid,
    pub outbox_id: Uuid,
    pub seed: [u8; 32],
    pub token_hash: [u8; 32],
    pub code_hash: [u8; 32],
}

/// The keys of emailed secrets, derived from `JWT_SECRET_KEY`.
pub struct SecretKeys {
    from_seed: [u8; 32],
    hash: [u8; 32],
}

impl SecretKeys {
    pub fn new(jwt_secret: &[u8]) -> SecretKeys {
        SecretKeys {
            from_seed: keys::derive(jwt_secret, Purpose::EmailSecret),
            hash: keys::derive(jwt_secret, Purpose::EmailSecretHash),
        }
    }

    /// A new secret: fresh ids and seed, and its hashes.
    pub fn issue(&self) -> Issued {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let secret_id = Uuid::new_v4();
        Issued {
            secret_id,
            outbox_id: Uuid::new_v4(),
            token_hash: self.token_hash(&self.token(&seed)),
            code_hash: self.code_hash(secret_id, &self.code(&seed)),
            seed,
        }
    }

    /// The link's token made from `seed`.
    pub fn token(&self, seed: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(
            &self.from_seed,
            b"token",
            seed,
        ))
    }

    /// The code made from `seed`: [`CODE_DIGITS`] decimal digits. The 64 bits reduced
    /// modulo 10^8 are uniform to within 10^-11.
    pub fn code(&self, seed: &[u8]) -> String {
        let mac = self.mac(&self.from_seed, b"code", seed);
        let n = u64::from_be_bytes(mac[..8].try_into().expect("8 bytes")) % 100_000_000;
        format!("{n:0width$}", width = CODE_DIGITS)
    }

    /// What `one_time_secrets.token_hash` holds for `token`.
    pub fn token_hash(&self, token: &str) -> [u8; 32] {
        self.mac(&self.hash, b"token", token.as_bytes())
    }

    /// What `one_time_secrets.code_hash` holds for `code` of the secret `secret_id`.
    pub fn code_hash(&self, secret_id: Uuid, code: &str) -> [u8; 32] {
        let mut input = secret_id.as_bytes().to_vec();
        input.extend_from_slice(code.as_bytes());
        self.mac(&self.hash, b"code", &input)
    }

    /// Whether `code` is the code of `secret_id` whose stored hash is `stored`, compared in
    /// constant time.
    pub fn code_matches(&self, secret_id: Uuid, code: &str, stored: &[u8]) -> bool {
        let mut mac = HmacSha256::new_from_slice(&self.hash).expect("32-byte key");
        mac.update(b"code");
        mac.update(secret_id.as_bytes());
        mac.update(code.as_bytes());
        mac.verify_slice(stored).is_ok()
    }

    fn mac(&self, key: &[u8; 32], label: &[u8], input: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(key).expect("32-byte key");
        mac.update(label);
        mac.update(input);
        mac.finalize().into_bytes().into()
    }
}

/// A typed code as the user may write it (`1234 5678`, `1234-5678`), reduced to its digits;
/// `None` unless exactly [`CODE_DIGITS`] digits remain.
pub fn normalise_code(typed: &str) -> Option<String> {
    let digits: String = typed.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (digits.len() == CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_token_and_one_code_and_their_hashes_match() {
        let keys = SecretKeys::new(b"a configured secret of thirty-two bytes");
        let issued = keys.issue();
        let token = keys.token(&issued.seed);
        let code = keys.code(&issued.seed);
        assert_eq!(token.len(), 43);
        assert_eq!(code.len(), CODE_DIGITS);
        assert_eq!(keys.token_hash(&token), issued.token_hash);
        assert!(keys.code_matches(issued.secret_id, &code, &issued.code_hash));
        assert!(!keys.code_matches(Uuid::new_v4(), &code, &issued.code_hash));
        let other = keys.issue();
        assert_ne!(keys.token(&other.seed), token);
    }

    #[test]
    fn another_server_secret_gives_other_secrets_from_the_same_seed() {
        let a = SecretKeys::new(b"a configured secret of thirty-two bytes");
        let b = SecretKeys::new(b"another configured secret, also 32+ bytes");
        let seed = [7u8; 32];
        assert_ne!(a.token(&seed), b.token(&seed));
    }

    #[test]
    fn typed_codes_lose_their_spaces_and_dashes() {
        assert_eq!(normalise_code("1234 5678").as_deref(), Some("12345678"));
        assert_eq!(normalise_code("1234-5678").as_deref(), Some("12345678"));
        assert_eq!(normalise_code("1234567"), None);
        assert_eq!(normalise_code("1234567a"), None);
        assert_eq!(normalise_code("１２３４５６７８"), None);
    }
}
