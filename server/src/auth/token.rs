//! Access tokens: JWTs, the algorithm pinned by the key, every claim required.
//!
//! Keys and the validation rules are built once at start-up ([`TokenKeys::new`]) and shared.
//! Two kinds of key sign them:
//!
//! - **HS256** (`JWT_ALGORITHM=HS256`, the default, as the service this one replaces): the
//!   key is derived from the JWT secret for this purpose alone (`auth::keys`), and tokens
//!   carry no `kid`. `JWT_SECRET_KEY_PREVIOUS` keeps the tokens of the previous secret valid
//!   while a secret is rotated.
//! - **ES256 or EdDSA**: the active key of the shared `signing_keys` table
//!   (`auth::signing`), named by the token's `kid`. The set of keys is replaced whole when
//!   the table changes ([`TokenKeys::install`]); a token is verified only with the key its
//!   `kid` names and with that key's algorithm, so an unknown `kid` is refused from memory,
//!   without a database read, and no token can choose its own algorithm. Kid-less HS256
//!   tokens are then accepted only until `JWT_ACCEPT_HS256_UNTIL` (the migration's window).
//!
//! A token is accepted only if its header's algorithm is its key's (so `none`, in any
//! casing, and other algorithms are refused) and `typ` `at+jwt` (RFC 9068, so no other
//! kind of JWT made with the key passes for an access token), its signature matches, `iss`
//! and `aud` are this deployment's (`JWT_ISSUER`, `JWT_AUDIENCE`), `exp`, `nbf`, `iat`,
//! `jti`, `sid`, `sub`, `user_id` and `email` are all present and consistent, and its
//! lifetime (`exp - iat`) is no longer than the configured one. Whether its session is
//! still live is checked against the database by the caller.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::signing::KeySet;
use crate::errors::ApiError;

/// Clock skew tolerated between instances, for `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The JOSE `typ` of an access token (RFC 9068 section 2.1).
pub const TYPE: &str = "at+jwt";

/// The claims of an access token. Non-optional fields make their absence a decode error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who issued it (`JWT_ISSUER`).
    pub iss: String,
    /// Who it is for (`JWT_AUDIENCE`).
    pub aud: String,
    /// The user id, as a string (the registered JWT subject).
    pub sub: String,
    pub user_id: Uuid,
    pub email: String,
    /// Whether the address was proven when the token was issued. Absent from tokens of
    /// before email verification existed, which count as unverified.
    #[serde(default)]
    pub email_verified: bool,
    /// The account's roles when the token was issued (at most [`MAX_ROLES`]). Absent when
    /// there are none, so the tokens of most users are no larger than before roles existed.
    /// Changing an account's roles ends its sessions, so a live token's roles are current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The session's authenticator assurance level when the token was issued: 1 after a
    /// password, 2 after a second factor too. Absent from tokens of before 2FA existed,
    /// which count as 1.
    #[serde(default = "aal1")]
    pub aal: u8,
    /// How the session authenticated (RFC 8176 method names: `pwd`, `otp`, `recovery`).
    #[serde(default)]
    pub amr: Vec<String>,
    /// The session must still pass its second factor: the guard lets such a token call
    /// only the operations the route table allows before it. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa_required: bool,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: Uuid,
    /// The session this token belongs to: ending the session ends the token.
    pub sid: Uuid,
}

fn aal1() -> u8 {
    1
}

/// A session's assurance, as its access tokens carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assurance {
    pub aal: u8,
    pub amr: Vec<String>,
    pub mfa_required: bool,
}

impl Assurance {
    /// A session opened with a password alone, with no second factor to pass.
    pub fn password() -> Assurance {
        Assurance {
            aal: 1,
            amr: vec!["pwd".to_owned()],
            mfa_required: false,
        }
    }
}

/// Most roles an account holds (the `roles` claim's bound; the admin API refuses more).
pub const MAX_ROLES: usize = 16;

pub struct TokenKeys {
    /// The HS256 key of the current secret.
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The HS256 key of `JWT_SECRET_KEY_PREVIOUS`, tried when the current one fails.
    previous: Option<DecodingKey>,
    header: Header,
    /// The rules for each algorithm; the key decides which applies.
    hs256: Validation,
    es256: Validation,
    eddsa: Validation,
    /// Tokens are signed by the key set's active key, not with HS256.
    asymmetric: bool,
    /// Kid-less HS256 tokens are accepted while the clock is before this (Unix seconds).
    hs256_until: i64,
    /// The asymmetric keys of the moment: replaced whole, read once per token.
    keys: RwLock<Arc<KeySet>>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenKeys {
    /// HS256 keys from the JWT secret, for tokens of `issuer` for `audience` that live
    /// `ttl`, with no asymmetric key yet (see [`TokenKeys::install`]).
    pub fn new(jwt_secret: &[u8], issuer: &str, audience: &str, ttl: Duration) -> TokenKeys {
        let key = super::keys::derive(jwt_secret, super::keys::Purpose::AccessToken);
        let validation = |alg| {
            let mut validation = Validation::new(alg);
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TYPE.to_owned());
        TokenKeys {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            previous: None,
            header,
            hs256: validation(Algorithm::HS256),
            es256: validation(Algorithm::ES256),
            eddsa: validation(Algorithm::EdDSA),
            asymmetric: false,
            hs256_until: i64::MAX,
            keys: RwLock::new(Arc::new(KeySet::empty())),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    /// Also accepts HS256 tokens signed under the previous secret (`JWT_SECRET_KEY_PREVIOUS`).
    pub fn with_previous_secret(mut self, previous: &[u8]) -> TokenKeys {
        let key = super::keys::derive(previous, super::keys::Purpose::AccessToken);
        self.previous = Some(DecodingKey::from_secret(&key));
        self
    }

    /// Signs with the active key of the installed set (`JWT_ALGORITHM` ES256 or EdDSA),
    /// and accepts kid-less HS256 tokens only before `hs256_until` (Unix seconds; `None`:
    /// never).
    pub fn signing_with_keys(mut self, hs256_until: Option<i64>) -> TokenKeys {
        self.asymmetric = true;
        self.hs256_until = hs256_until.unwrap_or(i64::MIN);
        self
    }

    /// Whether tokens are signed with an asymmetric key.
    pub fn asymmetric(&self) -> bool {
        self.asymmetric
    }

    /// Replaces the asymmetric keys: tokens signed from now on, and every verification
    /// that starts after this, use `set`.
    pub fn install(&self, set: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// The asymmetric keys of the moment (the JWKS is theirs).
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for a user; returns it with its claims.
    pub fn issue(
        &self,
        user_id: Uuid,
        email: &str,
        email_verified: bool,
        roles: &[String],
        assurance: &Assurance,
        sid: Uuid,
    ) -> Result<(String, Claims), ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            user_id,
            email: email.to_owned(),
            email_verified,
            roles: roles.to_vec(),
            aal: assurance.aal,
            amr: assurance.amr.clone(),
            mfa_required: assurance.mfa_required,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
            sid,
        };
        self.sign(&claims).map(|token| (token, claims))
    }

    /// Signs arbitrary claims with the server's key and header (tests use it to forge edge
    /// cases).
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        let signed = if self.asymmetric {
            let keys = self.keys();
            let signer = keys.signer.as_ref().ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("no active signing key is installed"))
            })?;
            jsonwebtoken::encode(&signer.header, claims, &signer.key)
        } else {
            jsonwebtoken::encode(&self.header, claims, &self.encoding)
        };
        signed.map_err(|e| ApiError::Internal(e.into()))
    }

    /// Checks signature, algorithm and time claims. Does not check revocation.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| ApiError::InvalidToken("malformed"))?;
        let decoded = match header.kid.as_deref() {
            Some(kid) => {
                // The kid picks the key, the key the algorithm: an unknown kid is refused
                // here, from memory, and a header naming another algorithm than its key's
                // never reaches a verifier.
                let keys = self.keys();
                let key = keys
                    .verifiers
                    .get(kid)
                    .ok_or(ApiError::InvalidToken("unknown key"))?;
                if header.alg != key.algorithm {
                    return Err(ApiError::InvalidToken("algorithm not allowed"));
                }
                let validation = match key.algorithm {
                    Algorithm::ES256 => &self.es256,
                    Algorithm::EdDSA => &self.eddsa,
                    _ => return Err(ApiError::InvalidToken("algorithm not allowed")),
                };
                jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            }
            None => {
                if Utc::now().timestamp() >= self.hs256_until {
                    return Err(ApiError::InvalidToken("HS256 no longer accepted"));
                }
                match (
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.hs256),
                    &self.previous,
                ) {
                    (Err(e), Some(previous)) if *e.kind() == ErrorKind::InvalidSignature => {
                        jsonwebtoken::decode::<Claims>(token, previous, &self.hs256)
                    }
                    (decoded, _) => decoded,
                }
            }
        };
        let data = decoded.map_err(|e| {
            ApiError::InvalidToken(match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not yet valid",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "algorithm not allowed"
                }
                ErrorKind::MissingRequiredClaim(_) => "missing claim",
                ErrorKind::InvalidIssuer => "another issuer",
                ErrorKind::InvalidAudience => "another audience",
                _ => "malformed",
            })
        })?;
        if !data
            .header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(TYPE))
        {
            return Err(ApiError::InvalidToken("not an access token (typ)"));
        }
        let claims = data.claims;
        if claims.sub != claims.user_id.to_string() {
            return Err(ApiError::InvalidToken("sub and user_id disagree"));
        }
        if claims.iat > Utc::now().timestamp() + LEEWAY_SECS as i64 {
            return Err(ApiError::InvalidToken("issued in the future"));
        }
        // A token signed to live longer than this server issues them (a leaked key's
        // forgery, or a configuration that has since been shortened) is not honoured.
        if claims.exp.saturating_sub(claims.iat) > self.ttl.as_secs() as i64 + LEEWAY_SECS as i64 {
            return Err(ApiError::InvalidToken("lifetime longer than configured"));
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
        TokenKeys::new(SECRET, "jobpath-api", "jobpath", Duration::from_secs(1800))
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn an_issued_token_verifies_with_all_claims() {
        let k = keys();
        let id = Uuid::new_v4();
        let (token, claims) = k
            .issue(
                id,
                "ada@example.com",
                false,
                &[],
                &Assurance::password(),
                Uuid::new_v4(),
            )
            .unwrap();
        let back = k.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.exp - back.iat, 1800);
    }

    #[test]
    fn alg_none_in_any_casing_is_refused() {
        let k = keys();
        let (token, _) = k
            .issue(
                Uuid::new_v4(),
                "a@b.co",
                false,
                &[],
                &Assurance::password(),
                Uuid::new_v4(),
            )
            .unwrap();
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
            iss: "jobpath-api".into(),
            aud: "jobpath".into(),
            sub: id.to_string(),
            user_id: id,
            email: "a@b.co".into(),
            email_verified: false,
            roles: Vec::new(),
            aal: 1,
            amr: Vec::new(),
            mfa_required: false,
            iat: now,
            nbf: now,
            exp: now + 60,
            jti: Uuid::new_v4(),
            sid: Uuid::new_v4(),
        };
        let key = crate::auth::keys::derive(SECRET, crate::auth::keys::Purpose::AccessToken);
        let mut hs512 = Header::new(Algorithm::HS512);
        hs512.typ = Some(TYPE.into());
        let hs512 = jsonwebtoken::encode(&hs512, &claims, &EncodingKey::from_secret(&key)).unwrap();
        assert!(k.verify(&hs512).is_err());
        let other = TokenKeys::new(
            b"another-secret-that-is-long-enough-xx",
            "jobpath-api",
            "jobpath",
            Duration::from_secs(60),
        );
        assert!(k.verify(&other.sign(&claims).unwrap()).is_err());
    }

    /// HS256 over `claims` with `key` and header type `typ`, bypassing `TokenKeys`.
    fn raw(claims: &Claims, key: &[u8], typ: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
    }

    #[test]
    fn the_raw_secret_signs_nothing_and_the_derived_key_only_access_tokens() {
        let k = keys();
        let (token, claims) = k
            .issue(
                Uuid::new_v4(),
                "a@b.co",
                false,
                &[],
                &Assurance::password(),
                Uuid::new_v4(),
            )
            .unwrap();
        assert!(k.verify(&token).is_ok());
        assert!(k.verify(&raw(&claims, SECRET, Some(TYPE))).is_err());
        let key = crate::auth::keys::derive(SECRET, crate::auth::keys::Purpose::AccessToken);
        assert!(k.verify(&raw(&claims, &key, Some(TYPE))).is_ok());
        for typ in [None, Some("JWT"), Some("refresh+jwt")] {
            assert!(k.verify(&raw(&claims, &key, typ)).is_err(), "typ {typ:?}");
        }
    }

    #[test]
    fn another_issuer_or_audience_and_missing_ones_are_refused() {
        let k = keys();
        let (_, claims) = k
            .issue(
                Uuid::new_v4(),
                "a@b.co",
                false,
                &[],
                &Assurance::password(),
                Uuid::new_v4(),
            )
            .unwrap();
        for (iss, aud) in [
            ("someone-else", "jobpath"),
            ("jobpath-api", "another-service"),
        ] {
            let forged = Claims {
                iss: iss.into(),
                aud: aud.into(),
                ..claims.clone()
            };
            assert!(k.verify(&k.sign(&forged).unwrap()).is_err(), "{iss} {aud}");
        }
        let key = crate::auth::keys::derive(SECRET, crate::auth::keys::Purpose::AccessToken);
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TYPE.into());
        let mut value = serde_json::to_value(&claims).unwrap();
        for claim in ["iss", "aud"] {
            let mut without = value.clone();
            without.as_object_mut().unwrap().remove(claim);
            let token =
                jsonwebtoken::encode(&header, &without, &EncodingKey::from_secret(&key)).unwrap();
            assert!(k.verify(&token).is_err(), "accepted without {claim}");
        }
        value["aud"] = serde_json::json!(["jobpath"]);
        let listed =
            jsonwebtoken::encode(&header, &value, &EncodingKey::from_secret(&key)).unwrap();
        assert!(k.verify(&listed).is_err(), "aud is a string, not a list");
    }

    #[test]
    fn a_token_living_longer_than_configured_is_refused() {
        let k = keys();
        let (_, mut claims) = k
            .issue(
                Uuid::new_v4(),
                "a@b.co",
                false,
                &[],
                &Assurance::password(),
                Uuid::new_v4(),
            )
            .unwrap();
        claims.exp = claims.iat + 1800 + LEEWAY_SECS as i64;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_ok());
        claims.exp += 1;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_err());
        claims.exp = claims.iat + 365 * 24 * 3600;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_err());
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let k = keys();
        let (_, mut claims) = k
            .issue(
                Uuid::new_v4(),
                "a@b.co",
                false,
                &[],
                &Assurance::password(),
                Uuid::new_v4(),
            )
            .unwrap();
        let now = Utc::now().timestamp();
        claims.exp = now - 120;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_err());
        claims.exp = now + 600;
        claims.nbf = now + 300;
        assert!(k.verify(&k.sign(&claims).unwrap()).is_err());
    }
}
