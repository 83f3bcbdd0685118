//! The account itself: `signup` (which queues the verification email), `get_me` (the
//! caller's account) and `change_password` (which queues the "password changed" notice).

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Message;
use crate::auth::credentials::{Email, Password};
use crate::auth::guard::{Caller, CurrentUser};
use crate::call::Call;
use crate::config::Verification;
use crate::db;
use crate::db::sessions::PasswordChange;
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::limits;
use crate::state::AppState;

/// `Credentials` in the spec. Unknown fields are ignored (see the spec's description).
#[derive(Deserialize)]
pub(super) struct CredentialsBody {
    pub(super) email: String,
    pub(super) password: String,
}

#[derive(Serialize)]
struct SignupResponse<'a> {
    id: Uuid,
    email: &'a str,
    created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct User<'a> {
    id: Uuid,
    email: &'a str,
    is_active: bool,
    email_verified: bool,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct PasswordChangeBody {
    current_password: String,
    new_password: String,
}

pub async fn signup(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: CredentialsBody = body::json(req, state.config.body_read_timeout).await?;
    let email = Email::parse(&body.email)?;
    let password = Password::parse_new(body.password, &email, "password")?;
    limits::check(state, limits::Action::Signup, call, None, None).await?;
    let hash = state.hasher.hash(password).await?;
    let mail = &state.config.mail;
    let verification = (mail.verification != Verification::Off)
        .then(|| (state.email_secrets.issue(), mail.verification_ttl));
    let user = db::users::insert(
        &state.db,
        &email,
        &hash,
        verification.as_ref().map(|(s, ttl)| (s, *ttl)),
        call,
    )
    .await?;
    tracing::info!(user_id = %user.id, "account created");
    state.metrics.signup();
    response::json(
        StatusCode::CREATED,
        &SignupResponse {
            id: user.id,
            email: email.as_str(),
            created_at: user.created_at,
        },
    )
}

/// The guard has read the account already (a session's or an API key's owner): no more to
/// ask the database.
pub fn get_me(caller: Caller) -> Result<Response, ApiError> {
    let (id, email, email_verified, created_at) = match &caller {
        Caller::Session(user) => (user.id, &user.email, user.email_verified, user.created_at),
        Caller::Key(key) => (key.user_id, &key.email, key.email_verified, key.created_at),
    };
    response::json(
        StatusCode::OK,
        &User {
            id,
            email,
            // The guard refuses inactive accounts.
            is_active: true,
            email_verified,
            created_at,
        },
    )
}

pub async fn change_password(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: PasswordChangeBody = body::json(req, state.config.body_read_timeout).await?;
    let current = Password::for_login(body.current_password).map_err(|_| {
        ApiError::validation(
            "current_password",
            "current_password must be 1 to 256 characters",
        )
    })?;
    let email = Email::normalise_for_lookup(&user.email)?;
    let new = Password::parse_new(body.new_password, &email, "new_password")?;
    let stored = recheck_password(
        state,
        call,
        &user,
        current,
        limits::Action::PasswordChange,
        ("password_change_failed", "wrong_current_password"),
    )
    .await?;
    let hash = state.hasher.hash(new).await?;
    let ended = match db::sessions::change_password(
        &state.db,
        user.id,
        user.session_id,
        stored.credential_version,
        &hash,
        Uuid::new_v4(),
        call,
    )
    .await?
    {
        PasswordChange::Changed {
            other_sessions_ended,
        } => other_sessions_ended,
        PasswordChange::CallerEnded => {
            return Err(ApiError::InvalidToken(
                "session ended during the password change",
            ));
        }
        PasswordChange::Conflict => {
            return Err(ApiError::Conflict(
                "password changed concurrently after verification",
            ));
        }
    };
    tracing::info!(user_id = %user.id, other_sessions_ended = ended, "password changed");
    response::json(
        StatusCode::OK,
        &Message {
            message: "Password changed",
        },
    )
}

/// Re-checks the caller's password before an operation that needs more than a token
/// (password change, email change, deletion, enrolling a second factor): first, for an
/// account with a verified second factor, a session at aal2 (403 `mfa_required`
/// otherwise); then the operation's per-IP `action` limit, then
/// the login throttle of the account — a stolen access token must not buy unlimited
/// guesses — charged before the hash and refunded on success. A wrong password is the
/// `failure` event (kind, reason) and 401 `invalid_credentials`. The account is read by
/// address, as login reads it, and must still be the caller's: a new account that took
/// the address of this one (deleted meanwhile) never stands in for it.
pub(super) async fn recheck_password(
    state: &AppState,
    call: &Call,
    user: &CurrentUser,
    password: Password,
    action: limits::Action,
    failure: (&'static str, &'static str),
) -> Result<db::users::LoginRecord, ApiError> {
    let email = Email::normalise_for_lookup(&user.email)?;
    // An account with a verified second factor is changed only from a session that passed
    // it: a password alone (a phished one, say) changes nothing of such an account.
    if user.aal < 2 && db::mfa::has_verified(&state.db, user.id).await? {
        return Err(ApiError::MfaRequired);
    }
    limits::check(state, action, call, None, Some(user.id)).await?;
    let attempt = limits::charge(state, call, &email, None, Some(user.id)).await?;
    let stored = db::users::find_for_login(&state.db, &email)
        .await?
        .filter(|stored| stored.id == user.id)
        .ok_or(ApiError::InvalidToken("user no longer exists"))?;
    if !state
        .hasher
        .verify(password, std::sync::Arc::clone(&stored.password_hash))
        .await?
    {
        let (kind, reason) = failure;
        db::events::record(&state.db, call, kind, Some(reason), Some(user.id), None).await?;
        return Err(ApiError::InvalidCredentials(reason));
    }
    limits::refund(state, attempt).await?;
    Ok(stored)
}
