//! The one error type of the request path, and how it becomes an HTTP response.
//!
//! Which type to use where:
//! - Handlers and everything they call return [`ApiError`] and propagate it with `?`. Each
//!   variant has exactly one HTTP status ([`ApiError::status`]) and one stable code
//!   ([`ApiError::code`]); the set of codes is part of the OpenAPI contract (`Error.error`).
//! - Failures the client must not see the details of (database errors, panics, bugs) become
//!   [`ApiError::Internal`] or [`ApiError::Unavailable`]: the cause chain is logged by the
//!   request wrapper, the client gets a generic message.
//! - Start-up code (config, migrations, binding) uses `anyhow`: those errors go to an operator,
//!   not to an HTTP client.

use std::borrow::Cow;

use http::StatusCode;
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not well-formed JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Well-formed JSON that breaks the schema or a constraint.
    #[error("validation failed: {message}")]
    Validation {
        message: Cow<'static, str>,
        field: Option<&'static str>,
    },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The client did not send its whole body within the body read timeout.
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("email already registered")]
    EmailTaken,
    /// A new password that meets the length rules but not the password policy; the reason
    /// is shown to the client (it is about their own input).
    #[error("weak password: {0}")]
    WeakPassword(&'static str),
    /// Unknown email, wrong password or inactive account: deliberately indistinguishable to
    /// the client; the internal reason (`unknown_email`, …) is for the log.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    #[error("missing bearer token")]
    MissingToken,
    /// Malformed, badly signed, expired, not yet valid or revoked token, or its user is gone.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// [`ApiError::InvalidToken`] for the refresh cookie of cookie mode: the same answer,
    /// which also deletes the cookie.
    #[error("invalid refresh cookie: {0}")]
    InvalidRefreshCookie(&'static str),
    /// Over a rate limit or the login throttle (`reason` names which, for the log); retry
    /// after this many seconds.
    #[error("rate limited ({reason}) for {retry_after} s")]
    TooManyRequests {
        retry_after: u64,
        reason: &'static str,
    },
    /// Ending other sessions needs a login within the re-authentication window.
    #[error("reauthentication required")]
    ReauthenticationRequired,
    /// An emailed token or code that is wrong, expired or spent — never said which to the
    /// client; `reason` is for the log.
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    /// `EMAIL_VERIFICATION=required` and the (correct) password's account is unverified.
    #[error("email not verified")]
    EmailNotVerified,
    /// A valid token without the role the operation needs (the role's name).
    #[error("forbidden: needs role {0}")]
    Forbidden(&'static str),
    /// A live API key on an operation that takes none (`None`), or without the scope the
    /// operation names; or an access token on an operation that takes only API keys
    /// (the scope the operation needs).
    #[error("insufficient scope: needs {0:?}")]
    InsufficientScope(Option<&'static str>),
    /// The account has the most live API keys it may have.
    #[error("too many api keys")]
    TooManyApiKeys,
    /// Cookie mode of login or refresh from a request whose `Origin` is missing or not
    /// allowed: a possible cross-site request forgery (the check that failed, for the log).
    #[error("origin not allowed: {0}")]
    OriginNotAllowed(&'static str),
    /// The session has not passed the second factor this operation needs.
    #[error("second factor required")]
    MfaRequired,
    /// A TOTP or recovery code that is wrong, spent or too old — never said which to the
    /// client; `reason` is for the log.
    #[error("invalid second-factor code: {0}")]
    InvalidMfaCode(&'static str),
    /// The operation needs a verified second factor and the account has none.
    #[error("no second factor")]
    NoFactor,
    /// The account has the most second factors it may have.
    #[error("too many factors")]
    TooManyFactors,
    /// The account has the most passkeys it may have.
    #[error("too many passkeys")]
    TooManyPasskeys,
    /// The credential is registered already (to this account or another).
    #[error("passkey already registered")]
    PasskeyTaken,
    /// A passkey second factor was asked for and the account has no passkey.
    #[error("no passkey")]
    NoPasskey,
    /// A passkey sign-in refused: unknown ceremony or credential, a bad signature, a
    /// replayed counter, an inactive owner — never said which to the client; `reason` is
    /// for the log.
    #[error("passkey refused: {0}")]
    PasskeyRefused(&'static str),
    /// A registration or second-factor ceremony that is unknown, expired, finished, or
    /// another session's (`reason` for the log).
    #[error("invalid ceremony: {0}")]
    InvalidCeremony(&'static str),
    /// An admin's change that would lock the admin out (what it was, for the message).
    #[error("self lockout: {0}")]
    SelfLockout(&'static str),
    /// The operation needs an active account (an admin sending a reset email).
    #[error("account inactive")]
    AccountInactive,
    #[error("not found")]
    NotFound,
    /// The change lost a race with another change of the same state (`reason` names it,
    /// for the log); the client may re-read and retry.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    /// A dependency (database, hashing pool) could not serve in time; worth retrying.
    #[error("service unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn validation(field: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field: Some(field),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::EmailTaken => StatusCode::CONFLICT,
            ApiError::WeakPassword(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidCredentials(_)
            | ApiError::MissingToken
            | ApiError::InvalidToken(_)
            | ApiError::InvalidRefreshCookie(_)
            | ApiError::PasskeyRefused(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ReauthenticationRequired
            | ApiError::EmailNotVerified
            | ApiError::InvalidSecret(_)
            | ApiError::Forbidden(_)
            | ApiError::InsufficientScope(_)
            | ApiError::OriginNotAllowed(_)
            | ApiError::MfaRequired
            | ApiError::InvalidCeremony(_)
            | ApiError::InvalidMfaCode(_) => StatusCode::FORBIDDEN,
            ApiError::SelfLockout(_)
            | ApiError::AccountInactive
            | ApiError::TooManyFactors
            | ApiError::TooManyPasskeys
            | ApiError::TooManyApiKeys
            | ApiError::PasskeyTaken
            | ApiError::NoPasskey
            | ApiError::NoFactor => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Validation { .. } => "validation_error",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::EmailTaken => "email_already_registered",
            ApiError::WeakPassword(_) => "weak_password",
            ApiError::InvalidCredentials(_) | ApiError::PasskeyRefused(_) => "invalid_credentials",
            ApiError::MissingToken => "missing_token",
            ApiError::InvalidToken(_) | ApiError::InvalidRefreshCookie(_) => "invalid_token",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::ReauthenticationRequired => "reauthentication_required",
            ApiError::InvalidSecret(_) | ApiError::InvalidCeremony(_) => "invalid_secret",
            ApiError::EmailNotVerified => "email_not_verified",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::SelfLockout(_) => "self_lockout",
            ApiError::OriginNotAllowed(_) => "origin_not_allowed",
            ApiError::MfaRequired => "mfa_required",
            ApiError::InvalidMfaCode(_) => "invalid_mfa_code",
            ApiError::AccountInactive
            | ApiError::TooManyFactors
            | ApiError::NoFactor
            | ApiError::TooManyPasskeys
            | ApiError::TooManyApiKeys
            | ApiError::PasskeyTaken
            | ApiError::NoPasskey => "conflict",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The message shown to the client. Never contains causes of internal failures.
    pub fn public_message(&self) -> Cow<'static, str> {
        match self {
            ApiError::InvalidJson(reason) => {
                Cow::Owned(format!("Request body is not valid JSON: {reason}"))
            }
            ApiError::Validation { message, .. } => message.clone(),
            ApiError::UnsupportedMediaType => {
                "Request body must be sent with Content-Type: application/json \
                 (application/x-www-form-urlencoded for introspect_token)"
                    .into()
            }
            ApiError::PayloadTooLarge => "Request body is larger than the 64 KiB limit".into(),
            ApiError::HeadersTooLarge => "Request headers exceed 16 KiB or 64 fields".into(),
            ApiError::RequestTimeout => "The request body was not received in time".into(),
            ApiError::EmailTaken => "An account with this email already exists".into(),
            ApiError::WeakPassword(reason) => (*reason).into(),
            ApiError::InvalidCredentials(_) => "Incorrect email or password".into(),
            ApiError::MissingToken => "Expected an 'Authorization: Bearer <token>' header".into(),
            // The reason is logged; telling an attacker which check failed helps only them.
            ApiError::InvalidToken(_) => "The access token is invalid, expired or revoked".into(),
            ApiError::InvalidRefreshCookie(_) => {
                "The refresh token is invalid, expired or revoked; log in again".into()
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                Cow::Owned(format!("Too many attempts; retry in {retry_after} seconds"))
            }
            ApiError::ReauthenticationRequired => {
                "This operation needs a recent login; log in again and retry".into()
            }
            ApiError::InvalidSecret(_) => {
                "This link or code is invalid or has expired; ask for a new one".into()
            }
            ApiError::EmailNotVerified => {
                "Verify your email address first; check your inbox or ask for a new email".into()
            }
            ApiError::Forbidden(role) => {
                Cow::Owned(format!("This operation needs the {role} role"))
            }
            ApiError::InsufficientScope(Some(scope)) => Cow::Owned(format!(
                "This operation needs an API key with the {scope} scope"
            )),
            ApiError::InsufficientScope(None) => {
                "This operation does not accept API keys; use an access token".into()
            }
            ApiError::TooManyApiKeys => {
                "The account has the most live API keys it may have (20); revoke one first".into()
            }
            ApiError::MfaRequired => {
                "This operation needs a second factor; verify a code at /auth/mfa/verify first"
                    .into()
            }
            ApiError::InvalidMfaCode(_) => "The code is wrong or was already used".into(),
            ApiError::NoFactor => "The account has no verified second factor".into(),
            ApiError::TooManyFactors => {
                "The account has the most second factors it may have (5); remove one first".into()
            }
            ApiError::TooManyPasskeys => {
                "The account has the most passkeys it may have (10); remove one first".into()
            }
            ApiError::PasskeyTaken => "This passkey is registered already".into(),
            ApiError::NoPasskey => "The account has no passkey".into(),
            ApiError::PasskeyRefused(_) => {
                "The passkey was not accepted; try again, or sign in another way".into()
            }
            ApiError::InvalidCeremony(_) => {
                "This passkey request is invalid, finished or expired; start again".into()
            }
            ApiError::SelfLockout(what) => Cow::Owned(format!(
                "An admin cannot {what} their own account; ask another admin"
            )),
            ApiError::OriginNotAllowed(_) => {
                "The refresh cookie is only used for requests from an allowed origin".into()
            }
            ApiError::AccountInactive => "The account is deactivated; reactivate it first".into(),
            ApiError::NotFound => "No such resource".into(),
            ApiError::Conflict(_) => {
                "A concurrent request changed this first; nothing was changed".into()
            }
            ApiError::MethodNotAllowed { allow } => {
                Cow::Owned(format!("Method not allowed; allowed: {allow}"))
            }
            ApiError::Unavailable(_) => {
                "The service is temporarily unavailable; retry shortly".into()
            }
            ApiError::Internal(_) => "An unexpected error occurred".into(),
        }
    }

    /// Why the request was refused, for the request's completion line only: the check that
    /// failed, the limit that refused, the cause chain of a 5xx. Never a token, a password,
    /// an email or a database error's `DETAIL` (which holds row values): validation messages
    /// built from the client's input (serde's, which may quote a value) are left out, and
    /// database errors are reduced to their code, message and constraint.
    pub fn internal_reason(&self) -> Cow<'static, str> {
        match self {
            ApiError::InvalidJson(reason) => Cow::Owned(reason.clone()),
            ApiError::Validation { message, field } => {
                let field = field.unwrap_or("body");
                match message {
                    Cow::Borrowed(text) => Cow::Owned(format!("{field}: {text}")),
                    Cow::Owned(_) => Cow::Owned(format!("{field}: does not match the schema")),
                }
            }
            ApiError::InvalidCredentials(reason)
            | ApiError::InvalidToken(reason)
            | ApiError::InvalidRefreshCookie(reason)
            | ApiError::InvalidSecret(reason)
            | ApiError::OriginNotAllowed(reason)
            | ApiError::InvalidMfaCode(reason)
            | ApiError::PasskeyRefused(reason)
            | ApiError::InvalidCeremony(reason)
            | ApiError::Conflict(reason) => Cow::Borrowed(reason),
            ApiError::WeakPassword(reason) => Cow::Borrowed(reason),
            ApiError::TooManyRequests { reason, .. } => Cow::Borrowed(reason),
            ApiError::Internal(cause) | ApiError::Unavailable(cause) => {
                Cow::Owned(redacted_chain(cause))
            }
            other => Cow::Owned(other.to_string()),
        }
    }

    pub fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::Validation { field, .. } => *field,
            _ => None,
        }
    }

    /// The body defined by the `Error` schema of `openapi.yaml`.
    pub fn body<'a>(&self, request_id: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            error: self.code(),
            detail: ErrorDetail {
                message: self.public_message(),
                field: self.field(),
                request_id,
            },
            status_code: self.status().as_u16(),
        }
    }
}

/// Wire form of an error (`components.schemas.Error`).
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'static str,
    pub detail: ErrorDetail<'a>,
    pub status_code: u16,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    pub request_id: &'a str,
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        // Every pool failure (wait timeout, connect refused, connect timeout) means the
        // database cannot be reached in time: retryable, not a bug.
        ApiError::Unavailable(err.into())
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        if err.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
            return check_violation(err.as_db_error().and_then(|db| db.constraint()));
        }
        if is_transient(&err) {
            ApiError::Unavailable(err.into())
        } else {
            ApiError::Internal(err.into())
        }
    }
}

/// A row the database refused (`23514 check_violation`): the client's value broke a
/// constraint the server's own checks did not foresee, so a 422, not a 500. The field is
/// named when the constraint's name says which (`users_email_length` → `email`). Only the
/// constraint's name is logged: the error's `DETAIL` quotes the whole row.
fn check_violation(constraint: Option<&str>) -> ApiError {
    tracing::warn!(
        constraint = constraint.unwrap_or("<unnamed>"),
        "a check constraint refused the request"
    );
    match constraint {
        Some(name) if name.starts_with("users_email_") => ApiError::validation(
            "email",
            "Email cannot be stored: it is too long or not in normal form",
        ),
        _ => ApiError::Validation {
            message: "The request contains a value that cannot be stored".into(),
            field: None,
        },
    }
}

/// Whether `err` says the database is (for now) out of reach rather than that the statement
/// is wrong: worth a 503 and a retry, not a 500.
///
/// Besides a closed or broken connection, PostgreSQL itself reports outages as errors with
/// an SQLSTATE: a restart terminates sessions with `57P01 admin_shutdown` (also sent to a
/// statement still running), a starting or stopping server refuses with `57P03`, and the
/// statement timeout cancels with `57014`. Classes 08 (connection), 53 (resources, e.g. too
/// many connections) and 57 (operator intervention) are all of that kind; so are a failover
/// to a read-only server and the serialization failures that ask to be retried.
pub fn is_transient(err: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => {
            matches!(code.code().get(..2), Some("08" | "53" | "57"))
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        }
        None => is_io(err),
    }
}

/// An error's cause chain as one line, with every PostgreSQL error reduced to its SQLSTATE,
/// message and constraint: its `DETAIL` and `HINT` (which `Display` includes) can quote the
/// row — a password hash, an email — and must never reach a log.
pub fn redacted_chain(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(db) = cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
        {
            let mut part = format!("db error {}: {}", db.code().code(), db.message());
            if let Some(constraint) = db.constraint() {
                part.push_str(&format!(" (constraint {constraint})"));
            }
            parts.push(part);
            // Its sources repeat it.
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

fn is_io(err: &tokio_postgres::Error) -> bool {
    std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_snake_case_code_and_an_error_status() {
        let all = [
            ApiError::InvalidJson("x".into()),
            ApiError::validation("email", "bad"),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge,
            ApiError::HeadersTooLarge,
            ApiError::RequestTimeout,
            ApiError::EmailTaken,
            ApiError::WeakPassword("common"),
            ApiError::InvalidCredentials("wrong_password"),
            ApiError::MissingToken,
            ApiError::InvalidToken("expired"),
            ApiError::InvalidRefreshCookie("reuse"),
            ApiError::TooManyRequests {
                retry_after: 3,
                reason: "login",
            },
            ApiError::NotFound,
            ApiError::Forbidden("admin"),
            ApiError::InsufficientScope(Some("introspect")),
            ApiError::InsufficientScope(None),
            ApiError::TooManyApiKeys,
            ApiError::SelfLockout("deactivate"),
            ApiError::OriginNotAllowed("no origin"),
            ApiError::MfaRequired,
            ApiError::InvalidMfaCode("replayed"),
            ApiError::TooManyFactors,
            ApiError::NoFactor,
            ApiError::TooManyPasskeys,
            ApiError::PasskeyTaken,
            ApiError::NoPasskey,
            ApiError::PasskeyRefused("replayed"),
            ApiError::InvalidCeremony("expired"),
            ApiError::AccountInactive,
            ApiError::ReauthenticationRequired,
            ApiError::Conflict("password changed concurrently"),
            ApiError::MethodNotAllowed {
                allow: "GET".into(),
            },
            ApiError::Unavailable(anyhow::anyhow!("db down")),
            ApiError::Internal(anyhow::anyhow!("bug")),
        ];
        for err in all {
            let code = err.code();
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(err.status().is_client_error() || err.status().is_server_error());
        }
    }

    #[test]
    fn internal_causes_never_reach_the_public_message() {
        let err = ApiError::Internal(anyhow::anyhow!("relation \"users\" does not exist"));
        assert!(!err.public_message().contains("users"));
        let err = ApiError::Unavailable(anyhow::anyhow!("password=hunter2 refused"));
        assert!(!err.public_message().contains("hunter2"));
    }
}
