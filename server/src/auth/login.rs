//! The login decision: may these credentials, from this client, open a session?
//!
//! In order: the per-IP limit and the account's throttle (`limits`; the attempt is charged
//! before the hash is verified and refunded on success), the account looked up,
//! then exactly one bcrypt verification on every path — against the account's hash, or a
//! dummy hash when there is no such account — so that the answer's timing does not reveal
//! whether an account exists. Unknown email, wrong password and inactive account all end in
//! the same [`ApiError::InvalidCredentials`]; the internal reason goes to the log and to the
//! `login_failed` event. A success hands the attempt's charge on for refunding and, when
//! the stored hash is of an older version or was made at another bcrypt cost
//! (`auth::hasher`), re-hashes the password in the background.
//!
//! Opening the session (which refunds the charge and records a new device token in the
//! same transaction) and minting the tokens is the handler's part (`handlers::sessions`).

use std::sync::Arc;

use uuid::Uuid;

use super::credentials::{Email, Password};
use crate::call::Call;
use crate::db;
use crate::errors::ApiError;
use crate::limits;
use crate::state::AppState;

/// An account whose password was just verified.
pub struct Verified {
    pub id: Uuid,
    pub email: String,
    /// The credential version the verified hash belongs to; the session records it.
    pub credential_version: i64,
    pub email_verified: bool,
    /// The attempt's charge to the throttle, not yet refunded: the transaction that opens
    /// the session refunds it (`db::sessions::start`), saving a commit per login.
    pub attempt: Option<limits::Attempt>,
}

/// Decides a login attempt; see the module documentation.
pub async fn verify(
    state: &AppState,
    call: &Call,
    email: &Email,
    password: Password,
    device_token: Option<&str>,
) -> Result<Verified, ApiError> {
    limits::check(state, limits::Action::Login, call, Some(email), None).await?;
    // Counted as a failure before the hash is verified, so that concurrent guesses cannot
    // all pass the throttle; a success refunds it.
    let attempt = limits::charge(state, call, email, device_token, None).await?;

    let user = match email.could_exist() {
        true => db::users::find_for_login(&state.db, email).await?,
        false => None,
    };
    let Some(user) = user else {
        state.hasher.verify_dummy(password).await?;
        return Err(refused(state, call, None, "unknown_email").await);
    };
    let rehash_candidate = state
        .hasher
        .needs_rehash(&user.password_hash)
        .then(|| password.clone());
    if !state
        .hasher
        .verify(password, Arc::clone(&user.password_hash))
        .await?
    {
        return Err(refused(state, call, Some(user.id), "wrong_password").await);
    }
    if !user.is_active {
        return Err(refused(state, call, Some(user.id), "inactive").await);
    }

    state.metrics.login_succeeded();
    if let Some(password) = rehash_candidate {
        upgrade_hash(state, user.id, Arc::clone(&user.password_hash), password);
    }
    Ok(Verified {
        id: user.id,
        email: user.email,
        credential_version: user.credential_version,
        email_verified: user.email_verified,
        attempt,
    })
}

/// A failed login (already charged to the throttle): a `login_failed` event
/// with the internal `reason`, then the one answer every failure gets. A failure to record
/// is answered as such (503/500) rather than hidden.
async fn refused(
    state: &AppState,
    call: &Call,
    user_id: Option<Uuid>,
    reason: &'static str,
) -> ApiError {
    state.metrics.login_failed();
    match db::events::record(&state.db, call, "login_failed", Some(reason), user_id, None).await {
        Ok(()) => ApiError::InvalidCredentials(reason),
        Err(e) => e,
    }
}

/// Re-hashes a password as a current hash (version, pepper, cost) after a successful login
/// against an older one, in the background so the login is not slowed. Skipped if the password has
/// changed meanwhile.
fn upgrade_hash(state: &AppState, user_id: Uuid, old: Arc<str>, password: Password) {
    let hasher = state.hasher.clone();
    let pool = state.db.clone();
    tokio::spawn(async move {
        let result = async {
            let new = hasher.hash(password).await?;
            db::users::replace_hash(&pool, user_id, &old, &new).await
        };
        match result.await {
            Ok(true) => tracing::info!(%user_id, cost = hasher.cost(), "password hash upgraded"),
            Ok(false) => {}
            // The internal reason, whose database errors are redacted (no DETAIL: it can
            // quote the row, hash included).
            Err(e) => tracing::warn!(
                %user_id,
                error = %e.internal_reason(),
                "password hash upgrade failed"
            ),
        }
    });
}
