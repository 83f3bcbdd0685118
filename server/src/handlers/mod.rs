//! One function per `operationId` of `openapi.yaml`, the documentation pages, and
//! [`dispatch`], the exhaustive `match` from a resolved [`Target`] to its handler, which the
//! transport (`http::serve`) is given and calls for every matched request.
//!
//! Handlers parse input into domain types, call the database and the hashing pool, count
//! what the metrics report, and return a response or an [`ApiError`]; the wrapper in
//! `http::service` does everything else (ids, logging, error bodies, headers).
//!
//! - [`account`]: signup, the caller's account, password change.
//! - [`deletion`]: the caller deleting their account.
//! - [`sessions`]: login, refresh, logout, the session list and revocation.
//! - [`events`]: the caller's security events.
//! - [`email`]: password reset and email verification (emailed token or code).
//! - [`email_change`]: changing the address (request, confirm, cancel).
//! - [`meta`]: health, the contract, the metrics scrape.
//! - [`keys`]: the public signing keys (JWKS) and the discovery document.
//! - [`docs`]: Swagger UI and ReDoc, their assets embedded in the binary.
//! - [`mfa`]: two-factor authentication: TOTP enrolment, step-up, recovery codes.
//! - [`passkeys`]: passkeys: registration, sign-in without an email, the list.
//! - [`api_keys`]: the caller's API keys: making one, the list, revoking one.
//! - [`introspection`]: whether a token is live now (RFC 7662), for API keys.
//! - [`admin`]: the admin API (role `admin`).
//! - [`account_pages`]: the reset-password, verify-email and email-change pages emailed
//!   links open, and the passkeys page.
//!
//! **Protected operations.** The route table declares each operation's
//! [`Security`](crate::http::router::Security). For every route declared `Bearer`,
//! [`dispatch`] runs the guard (`auth::guard::require_caller`) before the handler, and the
//! handler receives the [`guard::CurrentUser`]; a handler never reads the `Authorization` header.
//! Then, from the same table, a session that must still pass its second factor is refused
//! every route not allowed before it (403 `mfa_required`), and a route that names a role
//! is refused to a token without it (403 `forbidden`). An API key is accepted only by a
//! route that names a scope it holds (`Route::api_key_scope`), and its handler receives a
//! [`guard::KeyCaller`] (or the [`guard::Caller`] where a session may call too).

pub mod account;
pub mod account_pages;
pub mod admin;
pub mod api_keys;
pub mod deletion;
pub mod docs;
pub mod email;
pub mod email_change;
pub mod events;
pub mod introspection;
pub mod keys;
pub mod meta;
pub mod mfa;
pub mod passkeys;
pub mod sessions;

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use serde::Serialize;

use crate::auth::guard::{self, Caller};
use crate::call::Call;
use crate::errors::ApiError;
use crate::http::response::Response;
use crate::http::router::{Page, Params, Route, Security, Target};
use crate::state::AppState;

/// Answers a request the router matched to `target`.
pub async fn dispatch(
    state: Arc<AppState>,
    target: Target,
    call: Call,
    params: Params,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let state = &*state;
    let route = match target {
        Target::Api(route) => route,
        Target::Page(Page::Docs) => return Ok(docs::swagger_ui()),
        Target::Page(Page::Redoc) => return Ok(docs::redoc()),
        Target::Page(Page::DocsAsset) => return docs::asset(req.uri().path()),
        Target::Page(Page::ResetPassword) => return Ok(account_pages::reset_password()),
        Target::Page(Page::VerifyEmail) => return Ok(account_pages::verify_email()),
        Target::Page(Page::ConfirmEmailChange) => {
            return Ok(account_pages::confirm_email_change());
        }
        Target::Page(Page::CancelEmailChange) => return Ok(account_pages::cancel_email_change()),
        Target::Page(Page::Passkeys) => return Ok(account_pages::passkeys()),
        Target::Page(Page::AccountAsset) => return account_pages::asset(req.uri().path()),
        Target::Page(Page::Metrics) => return Ok(meta::metrics(state)),
    };
    // The declaration decides: the guard runs for every route declared `Bearer` or
    // `ApiKey`, before its handler, and only those handlers can be given a caller. An API
    // key gets past it only to a route that names one of its scopes.
    let scope = route.api_key_scope();
    let mut guarded = match route.security() {
        Security::Bearer => {
            Some(guard::require_caller(state, &call, req.headers(), scope, true).await?)
        }
        Security::ApiKey => {
            Some(guard::require_caller(state, &call, req.headers(), scope, false).await?)
        }
        Security::Optional if req.headers().contains_key(http::header::AUTHORIZATION) => {
            Some(guard::require_caller(state, &call, req.headers(), scope, true).await?)
        }
        Security::Optional | Security::Public => None,
    };
    // A session still owing its second factor is held to the few routes that let it pass
    // one (checked before the role: such an admin's answer is "step up", not "no role").
    if let Some(Caller::Session(caller)) = &guarded {
        if !route.allowed_before_mfa() {
            caller.require_mfa_passed()?;
        }
        if let Some(role) = route.required_role() {
            caller.require_role(role)?;
        }
    }
    // No role is ever granted to a key; the route table keeps keys off these routes anyway.
    if let Some(Caller::Key(_)) = &guarded
        && route.required_role().is_some()
    {
        return Err(ApiError::InsufficientScope(None));
    }
    let mut caller = || {
        guarded.take().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "{route:?} needs the caller but is declared public"
            ))
        })
    };
    // What a handler that takes only a session is given. The route table lets an API key
    // reach only the routes whose arms below take a `Caller` or a `KeyCaller`.
    let mut user = || match caller()? {
        Caller::Session(user) => Ok(user),
        Caller::Key(_) => Err(ApiError::Internal(anyhow::anyhow!(
            "{route:?} takes a session, and an API key was let through"
        ))),
    };
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    match route {
        Route::Signup => account::signup(state, &call, req).await,
        Route::GetMe => account::get_me(caller()?),
        Route::DeleteMe => deletion::delete_me(state, &call, user()?, req).await,
        Route::ChangePassword => account::change_password(state, &call, user()?, req).await,
        Route::Login => sessions::login(state, &call, req).await,
        Route::Refresh => sessions::refresh(state, &call, req).await,
        Route::Logout => sessions::logout(state, &call, user()?, query).await,
        Route::ListSessions => sessions::list(state, user()?, query).await,
        Route::RevokeSession => sessions::revoke(state, &call, user()?, &params).await,
        Route::ListEvents => events::list(state, user()?, query).await,
        Route::ForgotPassword => email::forgot_password(state, &call, req).await,
        Route::CheckPasswordReset => email::check_password_reset(state, &call, req).await,
        Route::ResetPassword => email::reset_password(state, &call, req).await,
        Route::VerifyEmail => email::verify_email(state, &call, req).await,
        Route::ResendVerification => {
            email::resend_verification(state, &call, user().ok(), req).await
        }
        Route::AdminListUsers => admin::list_users(state, query).await,
        Route::AdminGetUser => admin::get_user(state, &params).await,
        Route::AdminDeactivateUser => admin::deactivate(state, &call, user()?, &params, req).await,
        Route::AdminReactivateUser => admin::reactivate(state, &call, user()?, &params).await,
        Route::AdminListSessions => admin::list_sessions(state, user()?, &params, query).await,
        Route::AdminEndSessions => admin::end_sessions(state, &call, user()?, &params).await,
        Route::AdminEndSession => admin::end_session(state, &call, user()?, &params).await,
        Route::AdminSetRoles => admin::set_roles(state, &call, user()?, &params, req).await,
        Route::AdminSendPasswordReset => {
            admin::send_password_reset(state, &call, user()?, &params).await
        }
        Route::AdminListUserEvents => admin::list_user_events(state, &params, query).await,
        Route::AdminListEvents => admin::list_events(state, query).await,
        Route::AdminDeleteUser => admin::delete_user(state, &call, user()?, &params).await,
        Route::RequestEmailChange => email_change::request(state, &call, user()?, req).await,
        Route::ConfirmEmailChange => email_change::confirm(state, &call, req).await,
        Route::CancelEmailChange => email_change::cancel(state, &call, req).await,
        Route::EnrolTotp => mfa::enrol_totp(state, &call, user()?, req).await,
        Route::ConfirmTotp => mfa::confirm_totp(state, &call, user()?, &params, req).await,
        Route::VerifyMfa => mfa::verify(state, &call, user()?, req).await,
        Route::ListMfaFactors => mfa::list_factors(state, user()?).await,
        Route::RemoveMfaFactor => mfa::remove_factor(state, &call, user()?, &params, req).await,
        Route::GetRecoveryCodesStatus => mfa::recovery_codes_status(state, user()?).await,
        Route::RegenerateRecoveryCodes => {
            mfa::regenerate_recovery_codes(state, &call, user()?).await
        }
        Route::AdminResetMfa => admin::reset_mfa(state, &call, user()?, &params).await,
        Route::StartPasskeyRegistration => {
            passkeys::start_registration(state, &call, user()?, req).await
        }
        Route::FinishPasskeyRegistration => {
            passkeys::finish_registration(state, &call, user()?, req).await
        }
        Route::StartPasskeyAuthentication => passkeys::start_sign_in(state, &call).await,
        Route::FinishPasskeyAuthentication => passkeys::finish_sign_in(state, &call, req).await,
        Route::ListPasskeys => passkeys::list(state, user()?).await,
        Route::RenamePasskey => passkeys::rename(state, &call, user()?, &params, req).await,
        Route::RemovePasskey => passkeys::remove(state, &call, user()?, &params).await,
        Route::StartMfaPasskey => mfa::start_passkey(state, &call, user()?).await,
        Route::ListApiKeys => api_keys::list(state, user()?).await,
        Route::CreateApiKey => api_keys::create(state, &call, user()?, req).await,
        Route::DeleteApiKey => api_keys::delete(state, &call, user()?, &params).await,
        Route::IntrospectToken => match caller()? {
            Caller::Key(key) => introspection::introspect(state, &call, key, req).await,
            Caller::Session(_) => Err(ApiError::Internal(anyhow::anyhow!(
                "{route:?} takes an API key, and a session was let through"
            ))),
        },
        Route::Liveness => meta::liveness(),
        Route::Readiness => meta::readiness(state).await,
        Route::OpenApiJson => Ok(meta::openapi_json()),
        Route::OpenApiYaml => Ok(meta::openapi_yaml()),
        Route::GetJwks => Ok(keys::jwks(state, req.headers())),
        Route::GetOpenIdConfiguration => keys::discovery(state),
    }
}

/// A field that, when present, must be a string (not `null`), as the spec's
/// non-nullable optional fields are.
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::Deserialize as _;
    String::deserialize(d).map(Some)
}

/// `MessageResponse` in the spec.
#[derive(Serialize)]
struct Message {
    message: &'static str,
}

/// The largest page a list operation (`list_events`, `list_sessions`) returns.
const MAX_PAGE: i64 = 100;

/// The `limit` query parameter of a list operation: 1 to [`MAX_PAGE`], `default` if absent.
fn page_limit(query: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match query_param(query, "limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::validation("limit", "limit must be an integer from 1 to 100")),
    }
}

/// The first value of `name` in a query string. Values are compared raw: the parameters of
/// this API are plain words, so an encoded one is simply not one of them.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_parameters_are_found_by_name_and_first_wins() {
        assert_eq!(
            query_param(Some("a=1&scope=global"), "scope"),
            Some("global")
        );
        assert_eq!(query_param(Some("scope=a&scope=b"), "scope"), Some("a"));
        assert_eq!(query_param(Some("scope"), "scope"), Some(""));
        assert_eq!(query_param(Some("x=1"), "scope"), None);
        assert_eq!(query_param(None, "scope"), None);
    }
}
