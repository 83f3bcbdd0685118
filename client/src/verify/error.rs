//! Why a token was refused, or why the verifier could not decide.
//!
//! The variants are the distinctions a resource server acts on: most are "this token is not
//! acceptable" (answer 401), [`Error::JwksUnavailable`] and the introspection failures are
//! "we could not check" (answer 503, or 401 if you prefer to fail closed). None of them
//! carries the token or the API key, so they are safe to log.

use jsonwebtoken::Algorithm;

/// A refusal or failure of [`Verifier`](super::Verifier).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a JWT (three base64url parts, JSON header and claims), or its claims are not
    /// those of an access token (a required claim is missing or has the wrong type).
    #[error("malformed token")]
    Malformed,
    /// A JWT, but its `typ` is not `at+jwt` (RFC 9068): some other kind of token.
    #[error("not an access token (typ is not at+jwt)")]
    NotAnAccessToken,
    /// The header names no key (`kid`): HS256 tokens are like this, and only the auth server
    /// itself can check them.
    #[error("the token names no signing key (kid)")]
    NoKeyId,
    /// The header's algorithm is not one a published public key can verify.
    #[error("algorithm {0:?} is not accepted")]
    AlgorithmNotAllowed(Algorithm),
    /// The header's algorithm is not the algorithm of the key its `kid` names.
    #[error("the token's algorithm {token:?} is not its key's ({key:?})")]
    AlgorithmMismatch { token: Algorithm, key: Algorithm },
    /// No usable published key has the token's `kid` (even after a refresh, when one was
    /// allowed).
    #[error("no published key has the token's kid")]
    UnknownKey,
    /// The signature does not verify with the key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("issued by another issuer")]
    WrongIssuer,
    /// `aud` is not the expected audience.
    #[error("meant for another audience")]
    WrongAudience,
    /// `sub` and `user_id` disagree.
    #[error("sub and user_id disagree")]
    SubjectMismatch,
    /// No key set could be fetched yet, so nothing can be verified.
    #[error("the signing keys are unavailable: {0}")]
    JwksUnavailable(String),
    /// Introspection asked for, but the verifier has no API key for it.
    #[error("introspection is not configured (no API key)")]
    IntrospectionNotConfigured,
    /// The introspection endpoint could not be asked or gave an unusable answer.
    #[error("introspection failed: {0}")]
    IntrospectionFailed(String),
    /// The auth server says the token is no longer active (its session ended).
    #[error("the token is no longer active")]
    Inactive,
    /// The verifier could not be built.
    #[error("invalid verifier configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether the token itself was refused (as opposed to: we could not check it).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            Error::JwksUnavailable(_)
                | Error::IntrospectionNotConfigured
                | Error::IntrospectionFailed(_)
                | Error::Config(_)
        )
    }

    pub(crate) fn from_jwt(e: jsonwebtoken::errors::Error) -> Error {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey => Error::BadSignature,
            ErrorKind::ExpiredSignature => Error::Expired,
            ErrorKind::ImmatureSignature => Error::NotYetValid,
            ErrorKind::InvalidIssuer => Error::WrongIssuer,
            ErrorKind::InvalidAudience => Error::WrongAudience,
            _ => Error::Malformed,
        }
    }
}
