//! Token introspection (`introspect_token`, RFC 7662): whether a token is live now, for a
//! service that must see a logout or a revocation at once rather than at the token's
//! expiry.
//!
//! The caller is an API key with the `introspect` scope (dispatch's guard). The token is
//! judged by the same rules as the guard's own: an access token by
//! [`TokenKeys::verify`](crate::auth::token::TokenKeys::verify) and then its session and
//! account ([`guard::live_owner`]); an API key by its form, its hash and its owner
//! ([`guard::key_refusal`]), without counting as a use of that key. Anything else is
//! exactly `{"active": false}`: the caller learns that the token grants nothing, never
//! why (the reason is on the request's log line).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::api_keys;
use crate::auth::guard::{self, KeyCaller};
use crate::call::Call;
use crate::db;
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::limits;
use crate::state::AppState;

/// Longest `token` accepted (the spec's `maxLength`): far above any access token.
const MAX_TOKEN_CHARS: usize = 4096;
/// Longest `token_type_hint` accepted (the spec's `maxLength`).
const MAX_HINT_CHARS: usize = 64;

/// `IntrospectionResponse` in the spec: only what is true of an active token.
#[derive(Serialize, Default)]
struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aal: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
}

/// The `token` of the form (the first one), checked against the spec's bounds.
fn token_of(pairs: &[(String, String)]) -> Result<&str, ApiError> {
    if let Some((_, hint)) = pairs.iter().find(|(k, _)| k == "token_type_hint")
        && hint.chars().count() > MAX_HINT_CHARS
    {
        return Err(ApiError::validation(
            "token_type_hint",
            "token_type_hint must be at most 64 characters",
        ));
    }
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::validation("token", "token is required"))?;
    match !token.is_empty() && token.chars().count() <= MAX_TOKEN_CHARS {
        true => Ok(token),
        false => Err(ApiError::validation(
            "token",
            "token must be 1 to 4096 characters",
        )),
    }
}

pub async fn introspect(
    state: &AppState,
    call: &Call,
    caller: KeyCaller,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    limits::check_key(
        state,
        limits::Action::Introspect,
        call,
        caller.key_id,
        caller.user_id,
    )
    .await?;
    let pairs = body::form(req, state.config.body_read_timeout).await?;
    let token = token_of(&pairs)?;
    let answer = match api_keys::looks_like_key(token) {
        true => of_key(state, token).await?,
        false => of_access_token(state, token).await?,
    };
    let answer = answer.unwrap_or_else(|reason| {
        tracing::info!(caller_key = %caller.key_id, reason, "introspected token not active");
        Introspection::default()
    });
    response::json(StatusCode::OK, &answer)
}

/// An access token's answer, or why it is not active. Errors are only the database's.
async fn of_access_token(
    state: &AppState,
    token: &str,
) -> Result<Result<Introspection, &'static str>, ApiError> {
    let claims = match state.tokens.verify(token) {
        Ok(claims) => claims,
        Err(ApiError::InvalidToken(reason)) => return Ok(Err(reason)),
        Err(other) => return Err(other),
    };
    let owner = match guard::live_owner(state, &claims).await {
        Ok(owner) => owner,
        Err(ApiError::InvalidToken(reason)) => return Ok(Err(reason)),
        Err(other) => return Err(other),
    };
    // Such a session can call nothing but this server's step-up: to a resource server it
    // grants nothing yet.
    if claims.mfa_required {
        return Ok(Err("session owes its second factor"));
    }
    Ok(Ok(Introspection {
        active: true,
        token_type: Some("access_token"),
        sub: Some(owner.id),
        iss: Some(claims.iss),
        aud: Some(claims.aud),
        iat: Some(claims.iat),
        nbf: Some(claims.nbf),
        exp: Some(claims.exp),
        jti: Some(claims.jti),
        sid: Some(claims.sid),
        aal: Some(claims.aal),
        amr: Some(claims.amr),
        roles: (!claims.roles.is_empty()).then_some(claims.roles),
        email_verified: Some(owner.email_verified),
        ..Introspection::default()
    }))
}

/// An API key's answer, or why it is not active. Looking a key up here is not a use of it:
/// its `last_used_at` stays.
async fn of_key(
    state: &AppState,
    token: &str,
) -> Result<Result<Introspection, &'static str>, ApiError> {
    let parsed = match api_keys::parse(token) {
        Ok(parsed) => parsed,
        Err(malformed) => return Ok(Err(malformed.reason())),
    };
    let Some(owner) =
        db::api_keys::authenticate(&state.db, &state.api_keys.hash(parsed), false).await?
    else {
        return Ok(Err("unknown api key"));
    };
    if let Some(reason) = guard::key_refusal(state, &owner) {
        return Ok(Err(reason));
    }
    let scope: Vec<&str> = owner.scopes.iter().map(|s| s.as_str()).collect();
    Ok(Ok(Introspection {
        active: true,
        token_type: Some("api_key"),
        sub: Some(owner.user_id),
        iss: Some(state.config.jwt_issuer.clone()),
        iat: Some(owner.created_at.timestamp()),
        exp: Some(owner.expires_at.timestamp()),
        scope: Some(scope.join(" ")),
        client_id: Some(owner.key_id),
        email_verified: Some(owner.email_verified),
        ..Introspection::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_token_is_required_bounded_and_the_first_one_wins() {
        assert_eq!(
            token_of(&pairs(&[("token", "a"), ("token", "b")])).unwrap(),
            "a"
        );
        for bad in [
            pairs(&[]),
            pairs(&[("token", "")]),
            pairs(&[("token_type_hint", "access_token")]),
            pairs(&[("token", &"x".repeat(4097))]),
            pairs(&[("token", "a"), ("token_type_hint", &"h".repeat(65))]),
        ] {
            assert!(
                matches!(token_of(&bad), Err(ApiError::Validation { .. })),
                "{bad:?}"
            );
        }
        assert!(token_of(&pairs(&[("token", "a"), ("token_type_hint", "anything")])).is_ok());
    }

    #[test]
    fn an_inactive_answer_is_exactly_active_false() {
        let body = serde_json::to_string(&Introspection::default()).unwrap();
        assert_eq!(body, r#"{"active":false}"#);
    }
}
