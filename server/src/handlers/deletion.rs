//! `delete_me`: the caller deletes their own account, proving the password first.
//!
//! The password is checked as `change_password` checks the current one — the per-IP limit,
//! then the per-account throttle charged before the hash is verified and refunded on
//! success, the same 401 `invalid_credentials` and an `account_deletion_failed` event for a
//! wrong one — and the deletion itself is `db::accounts::delete`, the transaction the
//! admin's deletion runs too, as a compare-and-set on this session and on the credential
//! version the password was checked against.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::Message;
use crate::auth::credentials::Password;
use crate::auth::guard::CurrentUser;
use crate::call::Call;
use crate::db;
use crate::db::accounts::{DeletedBy, Deletion};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::limits;
use crate::state::AppState;

/// `AccountDeletion` in the spec.
#[derive(Deserialize)]
struct AccountDeletionBody {
    password: String,
}

pub async fn delete_me(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: AccountDeletionBody = body::json(req, state.config.body_read_timeout).await?;
    let password = Password::for_login(body.password)
        .map_err(|_| ApiError::validation("password", "password must be 1 to 256 characters"))?;
    // Re-checking a password from a session is what a password change does: one limit.
    let stored = super::account::recheck_password(
        state,
        call,
        &user,
        password,
        limits::Action::PasswordChange,
        ("account_deletion_failed", "wrong_password"),
    )
    .await?;
    let by = DeletedBy::Owner {
        session_id: user.session_id,
        verified: stored.credential_version,
    };
    match db::accounts::delete(&state.db, call, user.id, by).await? {
        Deletion::Deleted {
            sessions_ended,
            secrets_consumed,
            emails_abandoned,
        } => {
            tracing::info!(
                user_id = %user.id,
                sessions_ended,
                secrets_consumed,
                emails_abandoned,
                "account deleted by its owner"
            );
            response::json(
                StatusCode::OK,
                &Message {
                    message: "Account deleted",
                },
            )
        }
        // A concurrent deletion won: this session ended with it.
        Deletion::AlreadyDeleted | Deletion::NotFound => {
            Err(ApiError::InvalidToken("account deleted during the request"))
        }
        Deletion::CallerEnded => Err(ApiError::InvalidToken(
            "session ended during the account deletion",
        )),
        Deletion::Conflict => Err(ApiError::Conflict(
            "password changed concurrently after verification",
        )),
    }
}
