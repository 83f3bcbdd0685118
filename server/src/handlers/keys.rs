//! What other services verify tokens with: `get_jwks` (the public keys, RFC 7517) and
//! `get_openid_configuration` (where they are, for libraries that discover keys from an
//! issuer).
//!
//! Both are served from memory: the set and its ETag are rendered when the keys change
//! (`auth::signing::KeySet`), so a verifier fleet polling the JWKS costs no database read.
//! The set is cacheable (`public, max-age`), unlike the `/auth/` responses.

use http::StatusCode;
use http::header::{CACHE_CONTROL, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH};
use serde::Serialize;

use crate::errors::ApiError;
use crate::http::response::{self, Response};
use crate::state::AppState;

/// `GET /.well-known/jwks.json`: 304 when `If-None-Match` names the current set.
pub fn jwks(state: &AppState, headers: &HeaderMap) -> Response {
    let keys = state.tokens.keys();
    let cache = HeaderValue::from_str(&format!(
        "public, max-age={}, must-revalidate",
        state.config.jwks_max_age.as_secs()
    ))
    .expect("digits and ASCII");
    let etag = HeaderValue::from_str(&keys.etag).expect("a quoted base64url string");
    // RFC 9110 section 13.1.2: a list of tags, or `*`; weak comparison.
    let current = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == keys.etag);
    let mut resp = if current {
        response::empty(StatusCode::NOT_MODIFIED)
    } else {
        response::bytes_with_type(StatusCode::OK, keys.jwks.clone(), "application/json")
    };
    resp.headers_mut().insert(CACHE_CONTROL, cache);
    resp.headers_mut().insert(ETAG, etag);
    resp
}

#[derive(Serialize)]
struct Discovery<'a> {
    issuer: &'a str,
    jwks_uri: String,
}

/// `GET /.well-known/openid-configuration`: only when `JWT_ISSUER` is this server's URL.
pub fn discovery(state: &AppState) -> Result<Response, ApiError> {
    let issuer = state.config.jwt_issuer.as_str();
    // Discovery finds the document under the issuer's URL and the keys beside it. An issuer
    // that is a plain name (the default) says nowhere where this server is, and no other
    // setting does reliably (APP_BASE_URL is the front end's): a guessed address would
    // send verifiers for their keys to a host this server does not serve, so there is none.
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        return Err(ApiError::NotFound);
    }
    let base = issuer.trim_end_matches('/');
    let mut resp = response::json(
        StatusCode::OK,
        &Discovery {
            issuer,
            jwks_uri: format!("{base}/.well-known/jwks.json"),
        },
    )?;
    resp.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_str(&format!(
            "public, max-age={}",
            state.config.jwks_max_age.as_secs()
        ))
        .expect("digits and ASCII"),
    );
    Ok(resp)
}
