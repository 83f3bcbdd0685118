//! The guard: the only way a handler learns who is calling.
//!
//! [`require_user`] turns a request's `Authorization: Bearer <token>` header into a
//! [`CurrentUser`], or refuses it: the token's signature, algorithm, times and claims are
//! verified ([`super::token::TokenKeys::verify`]), **and** its session must be live and its
//! user active, read from the database in the one (batched) lookup of `db::owners`. A
//! token is only as good as its session: a logged-out, revoked or expired session, or a
//! deactivated account, is refused at once on every instance.
//!
//! Handlers do not call it themselves: the route table declares each operation's
//! [`Security`](crate::http::router::Security), and dispatch (`handlers::dispatch`) runs the
//! guard for every protected operation before the handler, which receives the
//! `CurrentUser`. A handler never verifies a JWT alone.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use uuid::Uuid;

use crate::config::Verification;
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

/// Verifies the bearer token of `headers` and that its session is live and its user active.
pub async fn require_user(state: &AppState, headers: &HeaderMap) -> Result<CurrentUser, ApiError> {
    let claims = state.tokens.verify(bearer_token(headers)?)?;
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
