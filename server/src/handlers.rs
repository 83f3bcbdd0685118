//! One function per `operationId` of `openapi.yaml`, plus the metrics scrape. Handlers parse
//! input into domain types, call the database and the hashing pool, count what the metrics
//! report (logins, signups, revocations), and return a response or an [`ApiError`]; the
//! wrapper in `http::service` does everything else (ids, logging, error bodies, headers).

use chrono::{DateTime, Utc};
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::credentials::{Email, Password};
use crate::auth::refresh;
use crate::auth::token::Claims;
use crate::db;
use crate::db::sessions::{Origin, Rotation, Scope, TokenOwner};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::http::service::Call;
use crate::limits;
use crate::spec;
use crate::state::AppState;

mod events;
pub use events::list_events;

/// `Credentials` in the spec. Unknown fields are ignored (see the spec's description).
#[derive(Deserialize)]
struct CredentialsBody {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct SignupResponse<'a> {
    id: Uuid,
    email: &'a str,
    created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct UserSummary<'a> {
    id: Uuid,
    email: &'a str,
    is_active: bool,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: &'a str,
    refresh_expires_in: i64,
    session_id: Uuid,
    user: UserSummary<'a>,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
struct PasswordChangeBody {
    current_password: String,
    new_password: String,
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
}

#[derive(Serialize)]
struct SessionList<'a> {
    sessions: Vec<SessionView<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    id: Uuid,
    email: &'a str,
    is_active: bool,
    created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

pub async fn signup(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: CredentialsBody = body::json(req, state.config.body_read_timeout).await?;
    let email = Email::parse(&body.email)?;
    let password = Password::parse_new(body.password, &email, "password")?;
    let ctx = event_context(call);
    limits::check(state, limits::Scope::Signup, &ctx, None, None).await?;
    let hash = state.hasher.hash(password).await?;
    let user = db::users::insert(&state.pool, &email, &hash, &ctx).await?;
    tracing::info!(user_id = %user.id, "account created");
    state.metrics.signup();
    response::json(
        StatusCode::CREATED,
        &SignupResponse {
            id: user.id,
            email: email.as_str(),
            created_at: user.created_at,
        },
    )
}

pub async fn login(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: CredentialsBody = body::json(req, state.config.body_read_timeout).await?;
    let email = Email::normalise_for_lookup(&body.email)?;
    let password = Password::for_login(body.password)?;
    let ctx = event_context(call);
    limits::check(state, limits::Scope::Login, &ctx, Some(&email), None).await?;

    // Every path spends exactly one hash verification, so timing does not reveal whether
    // the account exists.
    let user = match email.could_exist() {
        true => db::users::find_for_login(&state.pool, &email).await?,
        false => None,
    };
    let Some(user) = user else {
        state.hasher.verify_dummy(password).await?;
        return Err(login_refused(state, &ctx, &email, None, "unknown_email").await);
    };
    let rehash_candidate =
        (bcrypt_cost(&user.password_hash) != Some(state.hasher.cost())).then(|| password.clone());
    if !state
        .hasher
        .verify(password, Arc::clone(&user.password_hash))
        .await?
    {
        return Err(login_refused(state, &ctx, &email, Some(user.id), "wrong_password").await);
    }
    if !user.is_active {
        return Err(login_refused(state, &ctx, &email, Some(user.id), "inactive").await);
    }

    limits::login_succeeded(state, &email).await?;
    state.metrics.login_succeeded();
    if let Some(password) = rehash_candidate {
        upgrade_hash(state, user.id, Arc::clone(&user.password_hash), password);
    }

    let refresh_token = state.refresh.fresh();
    let origin = Origin {
        user_agent: call.user_agent.as_deref(),
        ip: Some(ctx.ip.clone()),
    };
    let session = db::sessions::start(
        &state.pool,
        user.id,
        state.config.refresh_token_ttl,
        &origin,
        &refresh::hash(&refresh_token),
        &ctx,
    )
    .await?;
    tracing::info!(user_id = %user.id, session_id = %session.id, "login succeeded");
    tokens_response(
        state,
        user.id,
        &user.email,
        session.id,
        session.expires_at,
        &refresh_token,
    )
}

/// A failed login: one more strike for the account's throttle and a `login_failed` event
/// with the internal `reason`, then the one answer every failure gets. A failure to record
/// is answered as such (503/500) rather than hidden.
async fn login_refused(
    state: &AppState,
    ctx: &db::events::Context,
    email: &Email,
    user_id: Option<Uuid>,
    reason: &'static str,
) -> ApiError {
    tracing::info!(user_id = ?user_id, reason, "login refused");
    state.metrics.login_failed();
    if let Err(e) = limits::login_failed(state, email).await {
        return e;
    }
    match db::events::record(
        &state.pool,
        ctx,
        "login_failed",
        Some(reason),
        user_id,
        None,
    )
    .await
    {
        Ok(()) => ApiError::InvalidCredentials,
        Err(e) => e,
    }
}

/// What the event log records about the request's origin.
fn event_context(call: &Call) -> db::events::Context {
    db::events::Context {
        ip: call.client_ip.to_string(),
        user_agent: call.user_agent.clone(),
        request_id: call.request_id.to_string(),
    }
}

/// The login and refresh answer: a new access token for `session_id`, and its refresh token.
fn tokens_response(
    state: &AppState,
    user_id: Uuid,
    email: &str,
    session_id: Uuid,
    session_expires_at: DateTime<Utc>,
    refresh_token: &str,
) -> Result<Response, ApiError> {
    let (token, _) = state.tokens.issue(user_id, email, session_id)?;
    response::json(
        StatusCode::OK,
        &TokenResponse {
            access_token: &token,
            token_type: "bearer",
            expires_in: state.tokens.ttl().as_secs(),
            refresh_token,
            refresh_expires_in: (session_expires_at - Utc::now()).num_seconds().max(1),
            session_id,
            user: UserSummary {
                id: user_id,
                email,
                is_active: true,
            },
        },
    )
}

/// Re-hashes a password at the configured bcrypt cost after a successful login with an
/// older cost, in the background so the login is not slowed. Skipped if the password has
/// changed meanwhile.
fn upgrade_hash(state: &AppState, user_id: Uuid, old: Arc<str>, password: Password) {
    let hasher = state.hasher.clone();
    let pool = state.pool.clone();
    tokio::spawn(async move {
        let result = async {
            let new = hasher.hash(password).await?;
            db::users::replace_hash(&pool, user_id, &old, &new).await
        };
        match result.await {
            Ok(true) => tracing::info!(%user_id, cost = hasher.cost(), "password hash upgraded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(%user_id, error = %e, "password hash upgrade failed"),
        }
    });
}

/// The cost a bcrypt hash was made with (`$2b$12$…` → 12).
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

pub async fn refresh(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: RefreshBody = body::json(req, state.config.body_read_timeout).await?;
    let presented = body.refresh_token;
    if presented.is_empty() || presented.chars().count() > refresh::MAX_TOKEN_CHARS {
        return Err(ApiError::validation(
            "refresh_token",
            "refresh_token must be 1 to 512 characters",
        ));
    }
    let ctx = event_context(call);
    limits::check(state, limits::Scope::Refresh, &ctx, None, None).await?;
    let successor = state.refresh.successor(&presented);
    let rotation = db::sessions::rotate(
        &state.pool,
        &refresh::hash(&presented),
        &refresh::hash(&successor),
        state.config.refresh_reuse_grace,
        &ctx,
    )
    .await?;
    match rotation {
        Rotation::Rotated {
            session_id,
            user_id,
            email,
            expires_at,
        } => {
            tracing::info!(%user_id, %session_id, "session refreshed");
            tokens_response(state, user_id, &email, session_id, expires_at, &successor)
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

pub async fn get_me(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let (_, owner) = authenticate(state, req.headers()).await?;
    response::json(
        StatusCode::OK,
        &User {
            id: owner.id,
            email: &owner.email,
            is_active: owner.is_active,
            created_at: owner.created_at,
        },
    )
}

pub async fn logout(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let scope = match query_param(req.uri().query(), "scope") {
        None | Some("local") => Scope::This,
        Some("global") => Scope::All,
        Some("others") => Scope::Others,
        Some(_) => {
            return Err(ApiError::validation(
                "scope",
                "scope must be one of: local, global, others",
            ));
        }
    };
    let claims = state.tokens.verify(bearer_token(req.headers())?)?;
    let ctx = event_context(call);
    if !db::sessions::end(&state.pool, claims.user_id, claims.sid, scope, &ctx).await? {
        return Err(ApiError::InvalidToken(
            "session already ended, or user gone",
        ));
    }
    tracing::info!(user_id = %claims.user_id, session_id = %claims.sid, ?scope, "logged out");
    state.metrics.token_revoked();
    response::json(
        StatusCode::OK,
        &Message {
            message: "Logged out successfully",
        },
    )
}

pub async fn change_password(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let (claims, owner) = authenticate(state, req.headers()).await?;
    let body: PasswordChangeBody = body::json(req, state.config.body_read_timeout).await?;
    let current = Password::for_login(body.current_password).map_err(|_| {
        ApiError::validation(
            "current_password",
            "current_password must be 1 to 256 characters",
        )
    })?;
    let email = Email::normalise_for_lookup(&owner.email)?;
    let new = Password::parse_new(body.new_password, &email, "new_password")?;
    let ctx = event_context(call);
    limits::check(
        state,
        limits::Scope::PasswordChange,
        &ctx,
        None,
        Some(owner.id),
    )
    .await?;
    let stored = db::users::find_for_login(&state.pool, &email)
        .await?
        .ok_or(ApiError::InvalidToken("user no longer exists"))?;
    if !state.hasher.verify(current, stored.password_hash).await? {
        tracing::info!(user_id = %owner.id, "password change refused: wrong current password");
        return Err(ApiError::InvalidCredentials);
    }
    let hash = state.hasher.hash(new).await?;
    let ended =
        db::sessions::change_password(&state.pool, owner.id, claims.sid, &hash, &ctx).await?;
    tracing::info!(user_id = %owner.id, other_sessions_ended = ended, "password changed");
    response::json(
        StatusCode::OK,
        &Message {
            message: "Password changed",
        },
    )
}

pub async fn list_sessions(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let (claims, owner) = authenticate(state, req.headers()).await?;
    let sessions = db::sessions::list(&state.pool, owner.id).await?;
    let views = sessions
        .iter()
        .map(|s| SessionView {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent.as_deref(),
            ip: s.ip.as_deref(),
            current: s.id == claims.sid,
        })
        .collect();
    response::json(StatusCode::OK, &SessionList { sessions: views })
}

pub async fn revoke_session(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let (_, owner) = authenticate(state, req.headers()).await?;
    let id = call
        .params
        .get("session_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("session_id", "session_id must be a UUID"))?;
    // Another user's session is indistinguishable from an unknown one.
    if !db::sessions::revoke(&state.pool, owner.id, id, &event_context(call)).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(user_id = %owner.id, session_id = %id, "session revoked");
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// Checks a bearer token: signature and times, then — in one query — that its user exists
/// and is active and that its session is live.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Claims, TokenOwner), ApiError> {
    let claims = state.tokens.verify(bearer_token(headers)?)?;
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
    Ok((claims, owner))
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

pub fn liveness(_state: &AppState) -> Result<Response, ApiError> {
    response::json(StatusCode::OK, &Health { status: "ok" })
}

pub async fn readiness(state: &AppState) -> Result<Response, ApiError> {
    db::ping(&state.pool).await?;
    response::json(StatusCode::OK, &Health { status: "ready" })
}

pub fn openapi_json(_state: &AppState) -> Result<Response, ApiError> {
    let bytes = spec::json().map_err(ApiError::Internal)?;
    Ok(response::bytes_with_type(
        StatusCode::OK,
        bytes,
        "application/json",
    ))
}

pub fn openapi_yaml() -> Result<Response, ApiError> {
    Ok(response::bytes_with_type(
        StatusCode::OK,
        bytes::Bytes::from_static(spec::YAML.as_bytes()),
        "application/yaml",
    ))
}

/// `GET /metrics`, on whichever port serves it (see `http::serve`).
pub fn metrics(state: &AppState) -> Response {
    let mut resp = response::bytes_with_type(
        StatusCode::OK,
        bytes::Bytes::from(state.metrics.render(state.pool.pool())),
        crate::metrics::CONTENT_TYPE,
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
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
