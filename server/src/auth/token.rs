//! Access tokens: HS256 JWTs, algorithm pinned, every claim required.
//!
//! Keys and the validation rules are built once at start-up ([`TokenKeys::new`]) and shared.
//! A token is accepted only if its header says HS256 (so `none`, in any casing, and other
//! HMAC algorithms are refused), its signature matches, and `exp`, `nbf`, `iat`, `jti`,
//! `sid`, `sub`, `user_id` and `email` are all present and consistent. Whether its session
//! is still live is checked against the database by the caller.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::errors::ApiError;

/// Clock skew tolerated between instances, for `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of an access token. Non-optional fields make their absence a decode error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as a string (the registered JWT subject).
    pub sub: String,
    pub user_id: Uuid,
    pub email: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: Uuid,
    /// The session this token belongs to: ending the session ends the token.
    pub sid: Uuid,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for a user; returns it with its claims.
    pub fn issue(
        &self,
        user_id: Uuid,
        email: &str,
        sid: Uuid,
    ) -> Result<(String, Claims), ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            user_id,
            email: email.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
            sid,
        };
        self.sign(&claims).map(|token| (token, claims))
    }

    /// Signs arbitrary claims with the server's key (tests use it to forge edge cases).
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&self.header, claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Checks signature, algorithm and time claims. Does not check revocation.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                ApiError::InvalidToken(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not yet valid",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "algorithm not allowed"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "missing claim",
                    _ => "malformed",
                })
            })?;
        let claims = data.claims;
        if claims.sub != claims.user_id.to_string() {
            return Err(ApiError::InvalidToken("sub and user_id disagree"));
        }
        if claims.iat > Utc::now().timestamp() + LEEWAY_SECS as i64 {
            return Err(ApiError::InvalidToken("issued in the future"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const SECRET: &[u8] = b"an-adequately-long-test-secret-of-32+-bytes";

    fn keys() -> TokenKeys {
        TokenKeys::new(SECRET, Duration::from_secs(1800))
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn an_issued_token_verifies_with_all_claims() {
        let k = keys();
        let id = Uuid::new_v4();
        let (token, claims) = k.issue(id, "ada@example.com", Uuid::new_v4()).unwrap();
        let back = k.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.exp - back.iat, 1800);
    }

    #[test]
    fn alg_none_in_any_casing_is_refused() {
        let k = keys();
        let (token, _) = k.issue(Uuid::new_v4(), "a@b.co", Uuid::new_v4()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
            for forged in [
                format!("{header}.{payload}."),
                format!("{header}.{payload}"),
            ] {
                assert!(k.verify(&forged).is_err(), "accepted alg {alg}");
            }
        }
    }

    #[test]
    fn other_hmac_algorithms_and_other_keys_are_refused() {
        let k = keys();
        let now = Utc::now().timestamp();
        let id = Uuid::new_v4();
        let claims = Claims {
            sub: id.to_string(),
            user_id: id,
            email: "a@b.co".into(),
            iat: now,
            nbf: now,
            exp: now + 60,
            jti: Uuid::new_v4(),
            sid: Uuid::new_v4(),
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(k.verify(&hs512).is_err());
        let other = TokenKeys::new(
            b"another-secret-that-is-long-enough-xx",
            Duration::from_secs(60),
        );
        assert!(k.verify(&other.sign(&claims).unwrap()).is_err());
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let k = keys();
        let (_, mut claims) = k.issue(Uuid::new_v4(), "a@b.co", Uuid::new_v4()).unwrap();
        let now = Utc::now().timestamp();
        claims.exp = now - 120;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_err());
        claims.exp = now + 600;
        claims.nbf = now + 300;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_err());
    }
}
