//! The emailed-secret operations: `forgot_password`, `check_password_reset`,
//! `reset_password`, `verify_email` and `resend_verification`.
//!
//! The rules the spec states, and where each is kept:
//!
//! - **No enumeration.** `forgot_password` and `resend_verification` without a token answer
//!   the same 202 whatever the address; the work is the same too (one transaction, which
//!   issues nothing for an unknown, inactive, verified or over-limit address: see
//!   `db::secrets::issue`), and no email is sent from the request. Only the per-IP limit
//!   answers 429.
//! - **One error for every bad secret**: [`ApiError::InvalidSecret`], with the reason for
//!   the log and the `password_reset_failed` event only.
//! - **A refused password burns nothing**: the policy is checked before the secret is
//!   consumed (and, for a code, before its attempt is counted).
//! - **Nothing is consumed on `GET`**: every operation here is a `POST` a script makes, and
//!   `check_password_reset` never consumes.

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Message, present_string};
use crate::auth::credentials::{Email, Password};
use crate::auth::guard::CurrentUser;
use crate::call::Call;
use crate::db;
use crate::db::secrets::{Issue, Verification};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::limits;
use crate::mail::Kind;
use crate::mail::secrets::{MAX_TOKEN_CHARS, normalise_code};
use crate::state::AppState;

/// `EmailAddress` in the spec.
#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

/// `SecretToken` in the spec.
#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

/// `PasswordReset` in the spec.
#[derive(Deserialize)]
struct ResetBody {
    #[serde(default, deserialize_with = "present_string")]
    token: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    code: Option<String>,
    new_password: String,
}

/// `EmailVerificationRequest` in the spec.
#[derive(Deserialize)]
struct VerifyBody {
    #[serde(default, deserialize_with = "present_string")]
    token: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    code: Option<String>,
}

/// `ResendVerification` in the spec.
#[derive(Deserialize)]
struct ResendBody {
    #[serde(default, deserialize_with = "present_string")]
    email: Option<String>,
}

#[derive(Serialize)]
struct ResetTokenStatus {
    valid: bool,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct EmailVerified {
    email_verified: bool,
}

/// The one answer of `forgot_password`, whatever happened.
const FORGOT_ACCEPTED: &str = "If an account exists for this address, an email is on its way";
/// The one answer of `resend_verification`.
const RESEND_ACCEPTED: &str = "If this address needs verifying, an email is on its way";

/// Where a secret comes from: the link's token, or the typed code with its address.
enum Presented {
    Token(String),
    Code { email: Email, code: String },
}

/// Exactly one of `token`, or `email` and `code`; shapes checked as the spec states them.
fn presented(
    token: Option<String>,
    email: Option<String>,
    code: Option<String>,
) -> Result<Presented, ApiError> {
    match (token, email, code) {
        // The spec's rule: with a token, the address and code are ignored.
        (Some(token), _, _) => {
            if token.is_empty() || token.chars().count() > MAX_TOKEN_CHARS {
                return Err(ApiError::validation(
                    "token",
                    "token must be 1 to 512 characters",
                ));
            }
            Ok(Presented::Token(token))
        }
        (None, Some(email), Some(code)) => {
            let email = Email::normalise_for_lookup(&email)?;
            if !(8..=32).contains(&code.chars().count()) {
                return Err(ApiError::validation(
                    "code",
                    "code must be 8 to 32 characters",
                ));
            }
            let code = normalise_code(&code)
                .ok_or_else(|| ApiError::validation("code", "code must be the 8 digits emailed"))?;
            Ok(Presented::Code { email, code })
        }
        _ => Err(ApiError::Validation {
            message: "Give token, or email and code".into(),
            field: None,
        }),
    }
}

/// Issues a secret of `kind` for the address (if it has an account that may have one) and
/// queues its email. Silent either way.
async fn issue(state: &AppState, call: &Call, email: &Email, kind: Kind) -> Result<(), ApiError> {
    issue_for(state, call, email, kind, None).await.map(|_| ())
}

/// [`issue`], for an admin (`actor`) too; whether an email was queued.
pub(super) async fn issue_for(
    state: &AppState,
    call: &Call,
    email: &Email,
    kind: Kind,
    actor: Option<Uuid>,
) -> Result<bool, ApiError> {
    // An address no account can have (control characters, say) costs no query; every
    // other one costs the same transaction, account or not.
    if !email.could_exist() {
        return Ok(false);
    }
    let mail = &state.config.mail;
    let ttl = match kind {
        Kind::PasswordReset => mail.password_reset_ttl,
        _ => mail.verification_ttl,
    };
    let secret = state.email_secrets.issue();
    db::secrets::issue(
        &state.db,
        email.as_str(),
        Issue {
            kind,
            secret: &secret,
            ttl,
            per_hour: mail.per_recipient_per_hour,
            actor,
        },
        call,
    )
    .await
}

pub async fn forgot_password(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: EmailBody = body::json(req, state.config.body_read_timeout).await?;
    let email = Email::normalise_for_lookup(&body.email)?;
    limits::check(state, limits::Action::Forgot, call, None, None).await?;
    issue(state, call, &email, Kind::PasswordReset).await?;
    response::json(
        StatusCode::ACCEPTED,
        &Message {
            message: FORGOT_ACCEPTED,
        },
    )
}

pub async fn check_password_reset(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: TokenBody = body::json(req, state.config.body_read_timeout).await?;
    let Presented::Token(token) = presented(Some(body.token), None, None)? else {
        unreachable!("a token alone is a token");
    };
    limits::check(state, limits::Action::Reset, call, None, None).await?;
    let target = db::secrets::find_reset(&state.db, &state.email_secrets.token_hash(&token))
        .await?
        .ok_or(ApiError::InvalidSecret(
            "unknown, expired or spent reset token",
        ))?;
    response::json(
        StatusCode::OK,
        &ResetTokenStatus {
            valid: true,
            expires_at: target.expires_at,
        },
    )
}

pub async fn reset_password(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: ResetBody = body::json(req, state.config.body_read_timeout).await?;
    let presented = presented(body.token, body.email, body.code)?;
    limits::check(state, limits::Action::Reset, call, None, None).await?;
    let secrets = &state.email_secrets;
    let (secret_id, user_id, password) = match presented {
        Presented::Token(token) => {
            let Some(target) =
                db::secrets::find_reset(&state.db, &secrets.token_hash(&token)).await?
            else {
                return Err(
                    reset_failed(state, call, None, None, "unknown_or_expired_token").await,
                );
            };
            let email = Email::normalise_for_lookup(&target.email)?;
            // Before anything is consumed: a refused password leaves the link usable.
            let password = Password::parse_new(body.new_password, &email, "new_password")?;
            (target.secret_id, target.user_id, password)
        }
        Presented::Code { email, code } => {
            let password = Password::parse_new(body.new_password, &email, "new_password")?;
            let attempt = match email.could_exist() {
                true => {
                    db::secrets::count_code_attempt(&state.db, email.as_str(), Kind::PasswordReset)
                        .await?
                }
                false => None,
            };
            let Some(attempt) = attempt else {
                return Err(reset_failed(
                    state,
                    call,
                    None,
                    Some(&email),
                    "no_live_secret_for_code",
                )
                .await);
            };
            if !secrets.code_matches(attempt.secret_id, &code, &attempt.code_hash) {
                return Err(
                    reset_failed(state, call, Some(attempt.user_id), None, "wrong_code").await,
                );
            }
            (attempt.secret_id, attempt.user_id, password)
        }
    };
    let hash = state.hasher.hash(password).await?;
    if !db::secrets::reset_password(
        &state.db,
        secret_id,
        user_id,
        &hash,
        uuid::Uuid::new_v4(),
        state.config.api_keys_revoke_on_password_reset,
        call,
    )
    .await?
    {
        return Err(reset_failed(state, call, Some(user_id), None, "spent_during_reset").await);
    }
    tracing::info!(%user_id, "password reset: every session ended");
    response::json(
        StatusCode::OK,
        &Message {
            message: "Password changed; log in with the new password",
        },
    )
}

/// A refused reset: the `password_reset_failed` event (for the account, when it is known),
/// then the one answer every bad secret gets.
async fn reset_failed(
    state: &AppState,
    call: &Call,
    user_id: Option<uuid::Uuid>,
    email: Option<&Email>,
    reason: &'static str,
) -> ApiError {
    let email = email.filter(|e| e.could_exist()).map(Email::as_str);
    match db::events::record(
        &state.db,
        call,
        "password_reset_failed",
        Some(reason),
        user_id,
        email,
    )
    .await
    {
        Ok(()) => ApiError::InvalidSecret(reason),
        Err(e) => e,
    }
}

pub async fn verify_email(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: VerifyBody = body::json(req, state.config.body_read_timeout).await?;
    let presented = presented(body.token, body.email, body.code)?;
    limits::check(state, limits::Action::Verify, call, None, None).await?;
    let outcome = match presented {
        Presented::Token(token) => {
            let hash = state.email_secrets.token_hash(&token);
            db::secrets::verify_by_token(&state.db, &hash, call).await?
        }
        Presented::Code { email, code } => {
            let attempt = match email.could_exist() {
                true => {
                    db::secrets::count_code_attempt(&state.db, email.as_str(), Kind::VerifyEmail)
                        .await?
                }
                false => None,
            };
            match attempt {
                Some(a)
                    if state
                        .email_secrets
                        .code_matches(a.secret_id, &code, &a.code_hash) =>
                {
                    db::secrets::verify_by_id(&state.db, a.secret_id, call).await?
                }
                _ => Verification::Invalid,
            }
        }
    };
    match outcome {
        Verification::Verified | Verification::AlreadyVerified => response::json(
            StatusCode::OK,
            &EmailVerified {
                email_verified: true,
            },
        ),
        Verification::Invalid => Err(ApiError::InvalidSecret(
            "unknown, expired or spent verification secret",
        )),
    }
}

pub async fn resend_verification(
    state: &AppState,
    call: &Call,
    user: Option<CurrentUser>,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: ResendBody = body::json(req, state.config.body_read_timeout).await?;
    // A given address is held to the schema even when the token decides.
    let given = body
        .email
        .as_deref()
        .map(Email::normalise_for_lookup)
        .transpose()?;
    let email = match (&user, given) {
        (Some(user), _) => Email::normalise_for_lookup(&user.email)?,
        (None, Some(email)) => email,
        // Nobody named: the caller must say who, with a token (or an address).
        (None, None) => return Err(ApiError::MissingToken),
    };
    limits::check(
        state,
        limits::Action::Resend,
        call,
        None,
        user.as_ref().map(|u| u.id),
    )
    .await?;
    issue(state, call, &email, Kind::VerifyEmail).await?;
    response::json(
        StatusCode::ACCEPTED,
        &Message {
            message: RESEND_ACCEPTED,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_a_token_or_an_address_with_a_code_never_both() {
        let s = |v: &str| Some(v.to_owned());
        assert!(matches!(
            presented(s("abc"), None, None),
            Ok(Presented::Token(_))
        ));
        assert!(matches!(
            presented(None, s("ada@example.com"), s("1234 5678")),
            Ok(Presented::Code { .. })
        ));
        assert!(matches!(
            presented(s("abc"), s("ada@example.com"), None),
            Ok(Presented::Token(_))
        ));
        for (t, e, c) in [
            (None, s("ada@example.com"), None),
            (None, None, s("12345678")),
            (None, None, None),
        ] {
            assert!(matches!(
                presented(t, e, c),
                Err(ApiError::Validation { .. })
            ));
        }
        assert!(presented(None, s("ada@example.com"), s("123")).is_err());
        assert!(presented(s(""), None, None).is_err());
    }
}
