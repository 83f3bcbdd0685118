//! CORS for browser front ends, per `CORS_ORIGINS`.
//!
//! Only listed origins get `Access-Control-Allow-*` headers (echoing the origin, with
//! `Vary: Origin` so caches keep answers apart). Listed origins also get
//! `Access-Control-Allow-Credentials: true`, so that a front end in cookie mode can send the
//! refresh cookie (`http::refresh_cookie`) and store the one login and refresh set. `*`
//! never does: browsers refuse credentials with a wildcard, and any site would be allowed.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderValue, ORIGIN, VARY,
};
use http::{Method, StatusCode};

use super::response::{Response, empty};
use crate::config::CorsOrigins;

/// A browser's preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Answers a preflight for a path whose methods are `allow` (the router's `Allow`): 204,
/// with permissions only if the origin is allowed.
pub fn preflight(origins: &CorsOrigins, origin: Option<&HeaderValue>, allow: &str) -> Response {
    let mut resp = empty(StatusCode::NO_CONTENT);
    if allow_origin(origins, origin, resp.headers_mut()) {
        let h = resp.headers_mut();
        if let Ok(methods) = HeaderValue::from_str(allow) {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-request-id, x-mfa-code"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    resp
}

/// Adds the CORS headers of an actual (non-preflight) response.
pub fn decorate(origins: &CorsOrigins, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    if allow_origin(origins, origin, headers) {
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, retry-after, www-authenticate"),
        );
    }
}

fn allow_origin(
    origins: &CorsOrigins,
    origin: Option<&HeaderValue>,
    headers: &mut HeaderMap,
) -> bool {
    let Some(origin) = origin else { return false };
    if matches!(origins, CorsOrigins::List(list) if list.is_empty()) {
        return false;
    }
    headers.append(VARY, HeaderValue::from_static("origin"));
    let allowed = origin.to_str().is_ok_and(|o| origins.allows(o));
    if allowed {
        let value = match origins {
            CorsOrigins::Any => HeaderValue::from_static("*"),
            CorsOrigins::List(_) => {
                headers.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                origin.clone()
            }
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    allowed
}
