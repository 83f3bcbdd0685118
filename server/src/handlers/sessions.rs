//! Sessions: `login` opens one, `refresh` rotates its refresh token, `logout` ends it (or
//! the user's others, or all), `list_sessions` and `revoke_session` manage them.
//!
//! Login, refresh and logout also speak cookie mode, for browsers: the refresh token in an
//! HttpOnly cookie instead of the body (`http::refresh_cookie` says how it is set and which
//! origins may use it).

use chrono::{DateTime, Utc};
use http::header::SET_COOKIE;
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Message, page_limit, present_string, query_param};
use crate::auth::credentials::{Email, Password};
use crate::auth::guard::CurrentUser;
use crate::auth::token::Assurance;
use crate::auth::{device, login as login_decision, refresh as refresh_token};
use crate::call::Call;
use crate::config::Verification;
use crate::db;
use crate::db::sessions::{Ending, LogoutScope, Revocation, Rotation};
use crate::errors::ApiError;
use crate::http::response::{self, Response};
use crate::http::router::Params;
use crate::http::{body, refresh_cookie};
use crate::limits;
use crate::state::AppState;

#[derive(Serialize)]
pub(super) struct UserSummary<'a> {
    id: Uuid,
    email: &'a str,
    is_active: bool,
    email_verified: bool,
}

impl<'a> UserSummary<'a> {
    /// A session is only ever opened or renewed for an active account.
    pub(super) fn active(id: Uuid, email: &'a str, email_verified: bool) -> Self {
        UserSummary {
            id,
            email,
            is_active: true,
            email_verified,
        }
    }
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    /// Absent in cookie mode: the cookie carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    refresh_expires_in: i64,
    session_id: Uuid,
    user: UserSummary<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mfa_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_token: Option<&'a str>,
}

/// `LoginRequest` in the spec: `Credentials` and an optional `device_token`, which, when
/// present, must be a string (not `null`).
#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
    #[serde(default, deserialize_with = "present_string")]
    device_token: Option<String>,
    #[serde(default)]
    refresh_token_transport: Transport,
}

/// Where the refresh token travels (`refresh_token_transport`).
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Transport {
    #[default]
    Body,
    Cookie,
}

/// `RefreshRequest`: no `refresh_token` means the cookie's.
#[derive(Deserialize)]
struct RefreshBody {
    #[serde(default, deserialize_with = "present_string")]
    refresh_token: Option<String>,
}

#[derive(Serialize)]
struct SessionView<'a> {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    user_agent: Option<&'a str>,
    ip: Option<&'a str>,
    current: bool,
    aal: i16,
    amr: &'a [String],
}

#[derive(Serialize)]
struct SessionList<'a> {
    sessions: Vec<SessionView<'a>>,
    next_before: Option<Uuid>,
}

/// Sessions per page unless `limit` says otherwise: the default `SESSIONS_PER_USER_MAX`,
/// so that with the default cap one page holds them all.
const DEFAULT_SESSIONS_PAGE: i64 = 50;

pub async fn login(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let body: LoginBody = body::json(req, state.config.body_read_timeout).await?;
    let transport = body.refresh_token_transport;
    // Before the password is checked: a forged login must not cost a hash or a throttle step.
    if transport == Transport::Cookie {
        refresh_cookie::check_origin(&state.config.cors_origins, &headers)?;
    }
    let email = Email::normalise_for_lookup(&body.email)?;
    let password = Password::for_login(body.password)?;
    let presented = body.device_token.as_deref();
    if presented.is_some_and(|t| t.is_empty() || t.chars().count() > MAX_DEVICE_TOKEN_CHARS) {
        return Err(ApiError::validation(
            "device_token",
            "device_token must be 1 to 512 characters",
        ));
    }
    let user = login_decision::verify(state, call, &email, password, presented).await?;
    // Only now, after a correct password: the refusal tells nothing to someone without it.
    if state.config.mail.verification == Verification::Required && !user.email_verified {
        limits::refund(state, user.attempt).await?;
        db::events::record(
            &state.db,
            call,
            "login_failed",
            Some("email_not_verified"),
            Some(user.id),
            None,
        )
        .await?;
        return Err(ApiError::EmailNotVerified);
    }
    let (device_token, new_device) = device_token(state, user.id, presented).await?;

    let refresh = state.refresh.fresh();
    let session = db::sessions::start(
        &state.db,
        db::sessions::Start {
            user_id: user.id,
            credential_version: user.credential_version,
            ttl: state.config.refresh_token_ttl,
            cap: state.config.sessions_per_user_max,
            refresh_hash: &refresh_token::hash(&refresh),
            refund: user.attempt.as_ref().map(|a| a.refund_args()),
            new_device: new_device.as_deref().map(|hash| (hash, device::TTL)),
            aal: 1,
            amr: &Assurance::password().amr,
            passkey_id: None,
        },
        call,
    )
    .await?
    .ok_or(ApiError::InvalidCredentials(
        "password changed or account deactivated during the login",
    ))?;
    tracing::info!(user_id = %user.id, session_id = %session.id, "login succeeded");
    let assurance = Assurance {
        mfa_required: mfa_owed(state, 1, session.has_factor, &session.roles),
        ..Assurance::password()
    };
    tokens_response(
        state,
        UserSummary::active(user.id, &user.email, user.email_verified),
        &session.roles,
        &assurance,
        Granted {
            session_id: session.id,
            expires_at: session.expires_at,
            refresh_token: Some(&refresh),
            device_token: Some(&device_token),
            transport,
        },
    )
}

/// Longest `device_token` accepted (ours are 43 characters), as the spec says.
const MAX_DEVICE_TOKEN_CHARS: usize = 512;

/// The device token a successful login answers with: the one presented, if it is a live
/// token of this account, or else a new one, with the hash the session's transaction
/// records for it.
async fn device_token(
    state: &AppState,
    user_id: Uuid,
    presented: Option<&str>,
) -> Result<(String, Option<Vec<u8>>), ApiError> {
    if let Some(token) = presented
        && db::limits::device_known(&state.db, user_id, &state.devices.hash(token)).await?
    {
        return Ok((token.to_owned(), None));
    }
    let token = state.devices.fresh();
    let hash = state.devices.hash(&token);
    Ok((token, Some(hash)))
}

/// Whether a session at `aal` still owes a second factor: its account has one, or holds a
/// role that `MFA_REQUIRED_FOR_ROLES` names, and the session has not passed one.
pub(super) fn mfa_owed(state: &AppState, aal: i16, has_factor: bool, roles: &[String]) -> bool {
    aal < 2
        && (has_factor
            || roles
                .iter()
                .any(|r| state.config.mfa_required_for_roles.contains(r)))
}

/// The session a token response is for, and the tokens it hands out besides the access
/// token.
pub(super) struct Granted<'a> {
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The session's new refresh token; `None` when it keeps the one it has (a step-up).
    pub refresh_token: Option<&'a str>,
    pub device_token: Option<&'a str>,
    /// Where the refresh token goes: the body, or the cookie of cookie mode.
    pub transport: Transport,
}

/// The login, refresh and step-up answer: a new access token for the session, and its
/// refresh token, in the body or (cookie mode) as the cookie.
pub(super) fn tokens_response(
    state: &AppState,
    user: UserSummary<'_>,
    roles: &[String],
    assurance: &Assurance,
    granted: Granted<'_>,
) -> Result<Response, ApiError> {
    let Granted {
        session_id,
        expires_at: session_expires_at,
        refresh_token,
        device_token,
        transport,
    } = granted;
    let (token, _) = state.tokens.issue(
        user.id,
        user.email,
        user.email_verified,
        roles,
        assurance,
        session_id,
    )?;
    let refresh_expires_in = (session_expires_at - Utc::now()).num_seconds().max(1);
    let mut resp = response::json(
        StatusCode::OK,
        &TokenResponse {
            access_token: &token,
            token_type: "bearer",
            expires_in: state.tokens.ttl().as_secs(),
            refresh_token: refresh_token.filter(|_| transport == Transport::Body),
            refresh_expires_in,
            session_id,
            user,
            mfa_required: assurance.mfa_required,
            device_token,
        },
    )?;
    if let (Transport::Cookie, Some(refresh_token)) = (transport, refresh_token) {
        resp.headers_mut().insert(
            SET_COOKIE,
            refresh_cookie::set(refresh_token, refresh_expires_in),
        );
    }
    Ok(resp)
}

pub async fn refresh(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let body: RefreshBody = body::json(req, state.config.body_read_timeout).await?;
    let Some(presented) = body.refresh_token else {
        return refresh_by_cookie(state, call, &headers).await;
    };
    rotate(state, call, presented, Transport::Body).await
}

/// Cookie mode: the cookie's token, from an allowed origin only. A refusal of the token
/// clears the cookie, so the page knows at once that it must log in again; a 429 or a 503
/// leaves it, as the token is still good for a retry, and so does a refused origin, which
/// is not the front end's request.
async fn refresh_by_cookie(
    state: &AppState,
    call: &Call,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    refresh_cookie::check_origin(&state.config.cors_origins, headers)?;
    let Some(presented) = refresh_cookie::read(headers) else {
        return Err(ApiError::InvalidToken(
            "no refresh token in the body or cookie",
        ));
    };
    match rotate(state, call, presented, Transport::Cookie).await {
        Err(ApiError::InvalidToken(reason)) => Err(ApiError::InvalidRefreshCookie(reason)),
        other => other,
    }
}

/// Spends `presented` and answers with its successor, by `transport`.
async fn rotate(
    state: &AppState,
    call: &Call,
    presented: String,
    transport: Transport,
) -> Result<Response, ApiError> {
    if presented.is_empty() || presented.chars().count() > refresh_token::MAX_TOKEN_CHARS {
        return Err(ApiError::validation(
            "refresh_token",
            "refresh_token must be 1 to 512 characters",
        ));
    }
    limits::check(state, limits::Action::Refresh, call, None, None).await?;
    let hash = refresh_token::hash(&presented);
    // Under `required`, a session an unverified account opened before the switch is not
    // renewed — checked before the rotation, so the token stays unspent for later.
    if state.config.mail.verification == Verification::Required
        && db::sessions::owner_verified(&state.db, &hash).await? == Some(false)
    {
        return Err(ApiError::InvalidToken("email not verified"));
    }
    let rotation = db::sessions::rotate(
        &state.db,
        &hash,
        |session_secret| {
            let successor = state.refresh.successor(session_secret, &presented);
            let hash = refresh_token::hash(&successor);
            (successor, hash)
        },
        state.config.refresh_reuse_grace,
        state.config.refresh_idle_timeout,
        call,
    )
    .await?;
    match rotation {
        Rotation::Rotated {
            successor,
            session_id,
            user_id,
            email,
            email_verified,
            roles,
            expires_at,
            aal,
            amr,
            has_factor,
        } => {
            tracing::info!(%user_id, %session_id, "session refreshed");
            let assurance = Assurance {
                aal: aal as u8,
                amr,
                mfa_required: mfa_owed(state, aal, has_factor, &roles),
            };
            tokens_response(
                state,
                UserSummary::active(user_id, &email, email_verified),
                &roles,
                &assurance,
                Granted {
                    session_id,
                    expires_at,
                    refresh_token: Some(&successor),
                    device_token: None,
                    transport,
                },
            )
        }
        Rotation::Refused => Err(ApiError::InvalidToken(
            "unknown refresh token or ended session",
        )),
        Rotation::ReuseDetected {
            session_id,
            user_id,
        } => {
            tracing::warn!(%user_id, %session_id, "refresh token reused: session ended");
            Err(ApiError::InvalidToken("refresh token reuse"))
        }
    }
}

pub async fn logout(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let scope = match query_param(query, "scope") {
        None => LogoutScope::Local,
        Some(wire) => LogoutScope::parse(wire).ok_or_else(|| {
            ApiError::validation("scope", "scope must be one of: local, global, others")
        })?,
    };
    // Ending other sessions is for a session that passed its second factor: a password
    // alone must not sign the owner out everywhere (revoke_session is refused it too).
    if scope != LogoutScope::Local {
        user.require_mfa_passed()?;
    }
    // The guard found the session live; ending it checks again in the same statement, so
    // of two concurrent logouts with one token only one succeeds.
    match db::sessions::end(
        &state.db,
        user.id,
        user.session_id,
        scope,
        state.config.reauth_window,
        call,
    )
    .await?
    {
        Ending::Ended => {}
        Ending::ReauthenticationRequired => return Err(ApiError::ReauthenticationRequired),
        Ending::CallerEnded => {
            return Err(ApiError::InvalidToken(
                "session already ended, or user gone",
            ));
        }
    }
    tracing::info!(user_id = %user.id, session_id = %user.session_id, ?scope, "logged out");
    state.metrics.token_revoked();
    let mut resp = response::json(
        StatusCode::OK,
        &Message {
            message: "Logged out successfully",
        },
    )?;
    // The caller's session ended: so did the refresh token of its cookie, if it is in
    // cookie mode (a body-mode client simply has no such cookie). `others` keeps the
    // caller's session, and so its cookie.
    if scope != LogoutScope::Others {
        resp.headers_mut()
            .insert(SET_COOKIE, refresh_cookie::clear());
    }
    Ok(resp)
}

pub async fn list(
    state: &AppState,
    user: CurrentUser,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    page(state, user.id, user.session_id, query).await
}

/// A page of the live sessions of `user_id` (the caller's, or for an admin anyone's);
/// `current` marks the caller's own session.
pub(super) async fn page(
    state: &AppState,
    user_id: Uuid,
    current: Uuid,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query, DEFAULT_SESSIONS_PAGE)?;
    let before =
        match query_param(query, "before") {
            None => None,
            Some(raw) => Some(Uuid::parse_str(raw).map_err(|_| {
                ApiError::validation("before", "before must be a session id (a UUID)")
            })?),
        };
    // One more than the page: whether it exists says whether there is a next page.
    let mut sessions = db::sessions::list(
        &state.db,
        user_id,
        before,
        limit + 1,
        state.config.refresh_idle_timeout,
    )
    .await?;
    let next_before = if sessions.len() as i64 > limit {
        sessions.truncate(limit as usize);
        sessions.last().map(|s| s.id)
    } else {
        None
    };
    let views = sessions
        .iter()
        .map(|s| SessionView {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent.as_deref(),
            ip: s.ip.as_deref(),
            current: s.id == current,
            aal: s.aal,
            amr: &s.amr,
        })
        .collect();
    response::json(
        StatusCode::OK,
        &SessionList {
            sessions: views,
            next_before,
        },
    )
}

pub async fn revoke(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let id = params
        .get("session_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("session_id", "session_id must be a UUID"))?;
    // Another user's session is indistinguishable from an unknown one.
    match db::sessions::revoke(
        &state.db,
        user.id,
        id,
        user.session_id,
        state.config.reauth_window,
        call,
    )
    .await?
    {
        Revocation::Revoked => {}
        Revocation::ReauthenticationRequired => return Err(ApiError::ReauthenticationRequired),
        Revocation::NotFound => return Err(ApiError::NotFound),
        Revocation::CallerEnded => return Err(ApiError::InvalidToken("session ended")),
    }
    tracing::info!(user_id = %user.id, session_id = %id, "session revoked");
    Ok(response::empty(StatusCode::NO_CONTENT))
}
