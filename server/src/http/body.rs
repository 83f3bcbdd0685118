//! Reading a JSON request body: media type, size cap, then parsing. Also the one
//! form-encoded body of the API (`introspect_token`, as RFC 7662 has it): [`form`].
//!
//! The body is capped (`http_body_util::Limited`) before it is collected, so an oversized or
//! endless body costs at most [`MAX_BODY_BYTES`] of memory. Parse failures are split the way
//! the contract documents: not JSON at all → 400 `invalid_json`; JSON of the wrong shape →
//! 422 `validation_error`, naming the field when serde knows it.
//!
//! The whole body must arrive within `BODY_READ_TIMEOUT_SECONDS` (408 `request_timeout`), so
//! a client that trickles or stalls its body cannot hold a connection and a task forever.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt as _, Limited};
use hyper::Request;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::errors::ApiError;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads and parses the JSON body of `req`, which must arrive within `timeout`
/// (`Config::body_read_timeout`), counted once the headers are in.
pub async fn json<T: DeserializeOwned>(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<T, ApiError> {
    let bytes = read(req, timeout, "application/json").await?;
    parse(&bytes)
}

/// Reads an `application/x-www-form-urlencoded` body under the same rules (media type,
/// size cap, timeout), decoded into its (name, value) pairs in order.
pub async fn form(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = read(req, timeout, "application/x-www-form-urlencoded").await?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

async fn read(
    req: Request<Incoming>,
    timeout: Duration,
    media_type: &str,
) -> Result<Bytes, ApiError> {
    let headers = req.headers();
    let matches = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(media_type));
    if !matches {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let collect = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
        Ok(Err(_)) => Err(ApiError::InvalidJson("the body could not be read".into())),
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson("the body is empty".into()));
    }
    if too_deep(bytes) {
        return Err(ApiError::InvalidJson(format!(
            "nesting deeper than {MAX_DEPTH} levels"
        )));
    }
    // Parsing into a `Value` first checks the syntax of the whole body (otherwise serde
    // stops at the first type mismatch and a truncated document looks like a shape error),
    // and lets us insist on an object: serde would also accept a struct written as an array.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::Validation {
            message: "Request body must be a JSON object".into(),
            field: None,
        });
    }
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        let field = missing_field(&message);
        ApiError::Validation {
            message: message.into(),
            field,
        }
    })
}

/// No request of this API nests more than a couple of levels; deeper documents are refused
/// before any parsing (serde skips ignored values without a depth limit).
pub const MAX_DEPTH: usize = 32;

/// Whether brackets outside strings nest deeper than [`MAX_DEPTH`].
fn too_deep(bytes: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// serde reports a missing field as "missing field `name` at …"; the request types only
/// have these fields, so the name can be returned as a `&'static str`.
fn missing_field(message: &str) -> Option<&'static str> {
    const FIELDS: &[&str] = &["email", "password"];
    let rest = message.strip_prefix("missing field `")?;
    let name = rest.split('`').next()?;
    FIELDS.iter().copied().find(|f| *f == name)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Creds {
        email: String,
        password: String,
    }

    fn status(body: &str) -> (u16, Option<&'static str>) {
        let e = parse::<Creds>(body.as_bytes()).unwrap_err();
        (e.status().as_u16(), e.field())
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_are_422() {
        assert_eq!(status("{").0, 400);
        assert_eq!(status("").0, 400);
        assert_eq!(status("not json").0, 400);
        assert_eq!(status(&"[".repeat(10_000)).0, 400);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(status(&deep).0, 400);
        let deep_in_ignored_field = format!(r#"{{"x": {}{}}}"#, "[".repeat(500), "]".repeat(500));
        assert_eq!(status(&deep_in_ignored_field).0, 400);
        let brackets_in_a_string = format!(r#"{{"email": "{}", "password": 1}}"#, "[".repeat(100));
        assert_eq!(status(&brackets_in_a_string).0, 422);
        assert_eq!(status("[]").0, 422);
        assert_eq!(status(r#"["a@b.co", "12345678"]"#).0, 422);
        assert_eq!(status("\"a string\"").0, 422);
        assert_eq!(status("42").0, 422);
        assert_eq!(status(r#"{"email": 5, "password": "x"}"#).0, 422);
        assert_eq!(status(r#"{"password": "xxxxxxxx"}"#), (422, Some("email")));
    }

    #[test]
    fn invalid_utf8_is_a_syntax_error() {
        let e = parse::<Creds>(b"{\"email\": \"\xff\xfe\", \"password\": \"x\"}").unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let c: Creds =
            parse(br#"{"email":"a@b.co","password":"p","confirm_password":"p"}"#).unwrap();
        assert_eq!(c.email, "a@b.co");
    }
}
