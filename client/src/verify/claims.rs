//! What a verified access token says, and what introspection answers.
//!
//! [`Claims`] mirrors the auth server's own claims type (`server/src/auth/token.rs`): the
//! same fields, the same defaults for claims older tokens lack. Fields without a default
//! are required, so a token missing one does not verify. Keep the two in step.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The claims of a verified access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who issued it (the auth server's `JWT_ISSUER`).
    pub iss: String,
    /// Who it is for (the auth server's `JWT_AUDIENCE`).
    pub aud: String,
    /// The user id, as a string; the verifier checks it equals `user_id`.
    pub sub: String,
    pub user_id: Uuid,
    pub email: String,
    /// Whether the address was proven when the token was issued.
    #[serde(default)]
    pub email_verified: bool,
    /// The account's roles when the token was issued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Authenticator assurance level: 1 after a password, 2 after a second factor too.
    #[serde(default = "aal1")]
    pub aal: u8,
    /// How the session authenticated (RFC 8176 method names: `pwd`, `otp`, …).
    #[serde(default)]
    pub amr: Vec<String>,
    /// The session has yet to pass its second factor: most operations should refuse it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa_required: bool,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: Uuid,
    /// The session the token belongs to (what a logout ends).
    pub sid: Uuid,
}

fn aal1() -> u8 {
    1
}

/// The auth server's answer about a token (RFC 7662). An inactive token's answer is exactly
/// `{"active": false}`, so every other field is optional.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    pub sub: Option<String>,
    pub sid: Option<Uuid>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub scope: Option<String>,
    pub token_type: Option<String>,
    /// Whatever else the server says, kept so that callers can read newer fields.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
