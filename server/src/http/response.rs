//! Building responses: JSON bodies, the standard error body, and the headers every response
//! of a kind must carry (`WWW-Authenticate` on 401 — and the cleared refresh cookie on a
//! refused cookie refresh —, `Allow` on 405, `Retry-After` on 429 and 503,
//! `Connection: close` on 408), and [`finish`], which every response of every listener goes
//! through last.

use bytes::Bytes;
use http::StatusCode;
use http::header::{
    ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE,
    X_CONTENT_TYPE_OPTIONS,
};
use http_body_util::Full;
use serde::Serialize;

use crate::errors::ApiError;

/// Responses keep their body as plain bytes until the wrapper hands them to hyper, so the
/// wrapper (and a response observer) can see exactly what is sent.
pub type Response = http::Response<Bytes>;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "2";

/// Adds the headers every response carries — its `X-Request-Id` and
/// `X-Content-Type-Options: nosniff`. The API's wrapper, the metrics listener and the
/// over-the-limit refusal all finish their responses here; [`into_hyper`] then sends them.
pub fn finish(mut resp: Response, request_id: &str) -> Response {
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(super::service::X_REQUEST_ID.clone(), v);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// A finished response as hyper sends it.
pub fn into_hyper(resp: Response) -> hyper::Response<Full<Bytes>> {
    resp.map(Full::new)
}

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(bytes_with_type(
        status,
        Bytes::from(bytes),
        "application/json",
    ))
}

pub fn bytes_with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn empty(status: StatusCode) -> Response {
    let mut resp = http::Response::new(Bytes::new());
    *resp.status_mut() = status;
    resp
}

/// The `Error` body of the contract, with the headers its status calls for.
pub fn error(err: &ApiError, request_id: &str) -> Response {
    let body = serde_json::to_vec(&err.body(request_id))
        .unwrap_or_else(|_| br#"{"error":"internal_error","detail":{"message":"An unexpected error occurred"},"status_code":500}"#.to_vec());
    let mut resp = bytes_with_type(err.status(), Bytes::from(body), "application/json");
    let headers = resp.headers_mut();
    match err {
        ApiError::InvalidCredentials(_) | ApiError::PasskeyRefused(_) | ApiError::MissingToken => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        ApiError::InvalidToken(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        // RFC 6750 section 3.1: the credential is good, this operation wants another.
        ApiError::InsufficientScope(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="insufficient_scope""#),
            );
        }
        ApiError::InvalidRefreshCookie(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
            headers.insert(SET_COOKIE, super::refresh_cookie::clear());
        }
        ApiError::MethodNotAllowed { allow } => {
            if let Ok(v) = HeaderValue::from_str(allow) {
                headers.insert(ALLOW, v);
            }
        }
        ApiError::Unavailable(_) => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        ApiError::TooManyRequests { retry_after, .. } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        ApiError::RequestTimeout => {
            // The rest of the body may still be on its way: the connection cannot carry
            // another request.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}
