//! The account itself: `signup` (which queues the verification email), `get_me` (the
//! caller's account) and `change_password` (which queues the "password changed" notice).

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Message;
use crate::auth::credentials::{Email, Password};
use crate::auth::guard::CurrentUser;
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

/// The guard has read the account already: no more to ask the database.
pub fn get_me(user: CurrentUser) -> Result<Response, ApiError> {
    response::json(
        StatusCode::OK,
        &User {
            id: user.id,
            email: &user.email,
            // The guard refuses inactive accounts.
            is_active: true,
            email_verified: user.email_verified,
            created_at: user.created_at,
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
    limits::check(
        state,
        limits::Action::PasswordChange,
        call,
        None,
        Some(user.id),
    )
    .await?;
    // A stolen access token must not buy unlimited guesses at the password: the same
    // per-account throttle as login, charged before the hash and refunded on success.
    let attempt = limits::charge(state, call, &email, None, Some(user.id)).await?;
    let stored = db::users::find_for_login(&state.db, &email)
        .await?
        .ok_or(ApiError::InvalidToken("user no longer exists"))?;
    if !state.hasher.verify(current, stored.password_hash).await? {
        db::events::record(
            &state.db,
            call,
            "password_change_failed",
            Some("wrong_current_password"),
            Some(user.id),
            None,
        )
        .await?;
        return Err(ApiError::InvalidCredentials("wrong current password"));
    }
    limits::refund(state, attempt).await?;
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
