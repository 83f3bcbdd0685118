//! The guard: the only way a handler learns who is calling.
//!
//! [`require_caller`] (with [`session_of`] for an access token) turns a request's
//! `Authorization: Bearer <token>` header into a [`CurrentUser`], or refuses it: the
//! token's signature, algorithm, times and claims are verified
//! ([`super::token::TokenKeys::verify`]), **and** its session must be live and its user
//! active, read from the database in the one (batched) lookup of `db::owners`. A
//! token is only as good as its session: a logged-out, revoked or expired session, or a
//! deactivated account, is refused at once on every instance.
//!
//! Handlers do not call it themselves: the route table declares each operation's
//! [`Security`](crate::http::router::Security), and dispatch (`handlers::dispatch`) runs the
//! guard for every protected operation before the handler, which receives the
//! `CurrentUser`. A handler never verifies a JWT alone.
//!
//! **API keys.** [`require_caller`] tells an API key (`jp_pat_…`) from an access token by
//! its prefix, before any JWT work; an access token then costs exactly what it did before
//! keys existed (one prefix comparison more). A key's form and checksum are checked before
//! any read ([`crate::auth::api_keys::parse`]), then its hash is looked up with its owner
//! in one statement ([`require_key`]): a revoked or expired key, or one of an inactive or
//! deleted account, is 401 `invalid_token`, like a dead access token. A live key is
//! accepted only by a route that names one of its scopes (`Route::api_key_scope`);
//! anywhere else it is 403 `insufficient_scope`. Refusals of a stored key are recorded as
//! `api_key_refused` with the key's prefix, never the key.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use uuid::Uuid;

use super::api_keys::{self, Scope};
use crate::call::Call;
use crate::config::Verification;
use crate::db;
use crate::errors::ApiError;
use crate::state::AppState;

/// The caller of a protected operation, as the guard established it.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    /// The session the access token belongs to.
    pub session_id: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub email_verified: bool,
    /// The token's `roles` claim: current, because changing roles ends the sessions.
    pub roles: Vec<String>,
    /// The token's assurance level (`aal` claim): 2 once the session passed a second
    /// factor. A session only ever rises, so a token's level is never above its session's.
    pub aal: u8,
    /// The token's `mfa_required` claim: the session must still pass its second factor.
    pub mfa_required: bool,
}

impl CurrentUser {
    /// Refuses a caller whose token does not carry `role` (403 `forbidden`). Dispatch calls
    /// it for every route that declares a role, after the token and session were accepted:
    /// an unauthenticated request is 401, an authenticated one without the role 403.
    pub fn require_role(&self, role: &'static str) -> Result<(), ApiError> {
        match self.roles.iter().any(|r| r == role) {
            true => Ok(()),
            false => Err(ApiError::Forbidden(role)),
        }
    }

    /// Refuses a session that must still pass its second factor (403 `mfa_required`).
    /// Dispatch calls it for every route not declared `x-allowed-before-mfa`.
    pub fn require_mfa_passed(&self) -> Result<(), ApiError> {
        match self.mfa_required {
            true => Err(ApiError::MfaRequired),
            false => Ok(()),
        }
    }
}

/// A program calling with one of its owner's API keys, as the guard established it.
#[derive(Debug, Clone)]
pub struct KeyCaller {
    pub key_id: Uuid,
    /// The key's first characters, which name it in events and logs.
    pub prefix: String,
    /// The key's owner, active (the guard refuses the keys of other accounts).
    pub user_id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub scopes: Vec<Scope>,
}

/// Who called a protected operation.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An access token of a live session.
    Session(CurrentUser),
    /// An API key holding the scope the route names.
    Key(KeyCaller),
}

/// The guard of a protected route. `scope`: the scope an API key must hold to call it
/// (`None`: the route takes no API key). `sessions`: whether it takes an access token (an
/// access token on a route that takes only API keys is verified, then refused 403).
pub async fn require_caller(
    state: &AppState,
    call: &Call,
    headers: &HeaderMap,
    scope: Option<Scope>,
    sessions: bool,
) -> Result<Caller, ApiError> {
    let token = bearer_token(headers)?;
    if api_keys::looks_like_key(token) {
        let key = require_key(state, call, token).await?;
        return match scope {
            Some(scope) if key.scopes.contains(&scope) => Ok(Caller::Key(key)),
            _ => {
                db::events::record(
                    &state.db,
                    call,
                    "api_key_refused",
                    Some(&format!("scope {}", key.prefix)),
                    Some(key.user_id),
                    None,
                )
                .await?;
                Err(ApiError::InsufficientScope(scope.map(Scope::as_str)))
            }
        };
    }
    let user = session_of(state, token).await?;
    match sessions {
        true => Ok(Caller::Session(user)),
        false => Err(ApiError::InsufficientScope(scope.map(Scope::as_str))),
    }
}

/// Verifies an API key: its form and checksum (no I/O), then its hash, its state and its
/// owner's, in one statement that also notes its use (at most once a minute).
pub async fn require_key(
    state: &AppState,
    call: &Call,
    token: &str,
) -> Result<KeyCaller, ApiError> {
    let parsed = api_keys::parse(token).map_err(|m| ApiError::InvalidToken(m.reason()))?;
    let owner = db::api_keys::authenticate(&state.db, &state.api_keys.hash(parsed), true)
        .await?
        .ok_or(ApiError::InvalidToken("unknown api key"))?;
    if let Some(reason) = key_refusal(state, &owner) {
        db::api_keys::refused(&state.db, call, &owner, reason).await?;
        return Err(ApiError::InvalidToken(reason));
    }
    Ok(KeyCaller {
        key_id: owner.key_id,
        prefix: owner.prefix,
        user_id: owner.user_id,
        email: owner.email,
        email_verified: owner.email_verified,
        created_at: owner.user_created_at,
        scopes: owner.scopes,
    })
}

/// Why a stored key authenticates nothing now, if it does not: the rule of the guard and
/// of introspection alike.
pub fn key_refusal(state: &AppState, owner: &db::api_keys::KeyOwner) -> Option<&'static str> {
    if owner.revoked {
        Some("api key revoked")
    } else if !owner.live {
        Some("api key expired")
    } else if !owner.user_active {
        Some("api key owner inactive")
    } else if !owner.email_verified && state.config.mail.verification == Verification::Required {
        Some("email not verified")
    } else {
        None
    }
}

/// Verifies an access token and that its session is live and its user active: the guard's
/// rule for a session, also what introspection answers by.
pub async fn session_of(state: &AppState, token: &str) -> Result<CurrentUser, ApiError> {
    let claims = state.tokens.verify(token)?;
    let owner = live_owner(state, &claims).await?;
    Ok(CurrentUser {
        id: owner.id,
        email: owner.email,
        session_id: claims.sid,
        created_at: owner.created_at,
        email_verified: owner.email_verified,
        roles: claims.roles,
        aal: claims.aal,
        mfa_required: claims.mfa_required,
    })
}

/// The owner of verified `claims`, if its session is live and the account active (and
/// verified, when verification is required): the database half of [`session_of`].
pub async fn live_owner(
    state: &AppState,
    claims: &super::token::Claims,
) -> Result<db::owners::TokenOwner, ApiError> {
    state.metrics.owner_lookup();
    let owner = state
        .owners
        .find(claims.user_id, claims.sid)
        .await?
        .ok_or(ApiError::InvalidToken("user or session no longer exists"))?;
    if !owner.session_live {
        return Err(ApiError::InvalidToken("session ended"));
    }
    if !owner.is_active {
        return Err(ApiError::InvalidToken("user inactive"));
    }
    // A session an unverified account opened before EMAIL_VERIFICATION became `required`
    // is held to the rule login now applies (the lookup reads the flag anyway).
    if !owner.email_verified && state.config.mail.verification == Verification::Required {
        return Err(ApiError::InvalidToken("email not verified"));
    }
    Ok(owner)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::MissingToken)?
        .to_str()
        .map_err(|_| ApiError::InvalidToken("header is not ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::MissingToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_tokens_are_read_whatever_the_scheme_case_and_spacing() {
        assert_eq!(bearer_token(&with("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&with("bearer   abc ")).unwrap(), "abc");
        assert_eq!(bearer_token(&with("BEARER abc")).unwrap(), "abc");
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_a_missing_token() {
        for value in ["Basic abc", "Bearer", "Bearer    ", "abc"] {
            assert!(
                matches!(bearer_token(&with(value)), Err(ApiError::MissingToken)),
                "{value}"
            );
        }
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(ApiError::MissingToken)
        ));
    }
}
