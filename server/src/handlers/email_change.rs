//! Changing the account's email address: `request_email_change`, `confirm_email_change`
//! and `cancel_email_change` (the database side is `db::email_change`).
//!
//! - **The password is re-checked** as `change_password` checks the current one: the
//!   per-account throttle is charged before the hash and refunded on success, and a wrong
//!   one is the same 401 `invalid_credentials` with an `email_change_failed` event.
//! - **No enumeration.** Whether the new address is free, or over its per-recipient limit,
//!   is never told: the answer is the same 202 and the `email_change_requested` event (the
//!   caller reads their own events) the same either way. Only the per-IP limit and the
//!   password throttle answer 429; an account over its own per-recipient limit gets the
//!   202 too, with nothing issued.
//! - **One error for every bad token**: [`ApiError::InvalidSecret`], with the reason for
//!   the log and the `email_change_failed` event (for the account, when the token names
//!   one).
//! - **Nothing is consumed on `GET`**: the pages the links open send a `POST` after a click.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Message;
use crate::auth::credentials::{Email, Password};
use crate::auth::guard::CurrentUser;
use crate::call::Call;
use crate::db;
use crate::db::email_change::{Cancelled, Confirmed, Requested};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::limits;
use crate::mail::secrets::MAX_TOKEN_CHARS;
use crate::state::AppState;

/// `EmailChangeRequest` in the spec.
#[derive(Deserialize)]
struct ChangeBody {
    new_email: String,
    password: String,
}

/// `SecretToken` in the spec.
#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

/// `EmailChanged` in the spec.
#[derive(Serialize)]
struct EmailChanged<'a> {
    email: &'a str,
    email_verified: bool,
}

/// The one answer of `request_email_change`, whatever happened.
const REQUEST_ACCEPTED: &str = "Check the new address for a confirmation link";

pub async fn request(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: ChangeBody = body::json(req, state.config.body_read_timeout).await?;
    let new_email = Email::parse(&body.new_email).map_err(|e| match e {
        ApiError::Validation { message, .. } => ApiError::Validation {
            message,
            field: Some("new_email"),
        },
        other => other,
    })?;
    let password = Password::for_login(body.password)
        .map_err(|_| ApiError::validation("password", "password must be 1 to 256 characters"))?;
    super::account::recheck_password(
        state,
        call,
        &user,
        password,
        limits::Action::EmailChange,
        ("email_change_failed", "wrong_password"),
    )
    .await?;
    let mail = &state.config.mail;
    let (confirm, cancel) = (state.email_secrets.issue(), state.email_secrets.issue());
    let outcome = db::email_change::request(
        &state.db,
        db::email_change::Request {
            user_id: user.id,
            session_id: user.session_id,
            new_email: new_email.as_str(),
            confirm: &confirm,
            cancel: &cancel,
            ttl: mail.email_change_ttl,
            per_hour: mail.per_recipient_per_hour,
        },
        call,
    )
    .await?;
    match outcome {
        Requested::CallerEnded => {
            return Err(ApiError::InvalidToken(
                "session ended during the email change request",
            ));
        }
        // For the log only: the answer is the same.
        Requested::Sent => tracing::info!(user_id = %user.id, "email change requested"),
        Requested::NotSentToNewAddress => tracing::info!(
            user_id = %user.id,
            "email change requested; nothing sent to the new address (taken or over its limit)"
        ),
        Requested::OverLimit => tracing::info!(
            user_id = %user.id,
            "email change not issued: the account is over its per-recipient limit"
        ),
    }
    response::json(
        StatusCode::ACCEPTED,
        &Message {
            message: REQUEST_ACCEPTED,
        },
    )
}

pub async fn confirm(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let token = token(req, state).await?;
    limits::check(state, limits::Action::EmailChangeToken, call, None, None).await?;
    let hash = state.email_secrets.token_hash(&token);
    match db::email_change::confirm(&state.db, &hash, (Uuid::new_v4(), Uuid::new_v4()), call)
        .await?
    {
        Confirmed::Changed {
            user_id,
            email,
            other_sessions_ended,
        } => {
            tracing::info!(%user_id, other_sessions_ended, "email address changed");
            response::json(
                StatusCode::OK,
                &EmailChanged {
                    email: &email,
                    email_verified: true,
                },
            )
        }
        Confirmed::Taken { user_id } => {
            failed(state, call, Some(user_id), "address_taken_at_commit").await?;
            Err(ApiError::EmailTaken)
        }
        Confirmed::Invalid { user_id } => {
            let reason = match user_id {
                Some(_) => "spent_or_expired_token",
                None => "unknown_token",
            };
            failed(state, call, user_id, reason).await?;
            Err(ApiError::InvalidSecret(reason))
        }
    }
}

pub async fn cancel(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let token = token(req, state).await?;
    limits::check(state, limits::Action::EmailChangeToken, call, None, None).await?;
    let hash = state.email_secrets.token_hash(&token);
    match db::email_change::cancel(&state.db, &hash, call).await? {
        Cancelled::Cancelled {
            user_id,
            sessions_ended,
        } => {
            tracing::info!(%user_id, sessions_ended, "email change cancelled; every session ended");
            response::json(
                StatusCode::OK,
                &Message {
                    message: "Email change cancelled; every session has ended",
                },
            )
        }
        Cancelled::Invalid { user_id } => {
            let reason = match user_id {
                Some(_) => "cancel_token_not_pending",
                None => "unknown_cancel_token",
            };
            failed(state, call, user_id, reason).await?;
            Err(ApiError::InvalidSecret(reason))
        }
    }
}

/// The token of a `SecretToken` body, held to the spec's length.
async fn token(req: Request<Incoming>, state: &AppState) -> Result<String, ApiError> {
    let body: TokenBody = body::json(req, state.config.body_read_timeout).await?;
    if body.token.is_empty() || body.token.chars().count() > MAX_TOKEN_CHARS {
        return Err(ApiError::validation(
            "token",
            "token must be 1 to 512 characters",
        ));
    }
    Ok(body.token)
}

/// The `email_change_failed` event of a refused confirmation or cancellation.
async fn failed(
    state: &AppState,
    call: &Call,
    user_id: Option<Uuid>,
    reason: &'static str,
) -> Result<(), ApiError> {
    db::events::record(
        &state.db,
        call,
        "email_change_failed",
        Some(reason),
        user_id,
        None,
    )
    .await
}
