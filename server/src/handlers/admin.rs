//! The admin API (`/admin/…`, role `admin`): accounts, their sessions, roles, password
//! reset emails and the security log across accounts.
//!
//! Dispatch has already checked the caller's token and its `admin` role (the route table
//! declares it); every change is re-checked at commit by `db::admin` (the admin may have
//! lost the role since) and recorded as an event carrying the admin's id. An admin cannot
//! lock themselves out: deactivating or deleting their own account, or removing their own
//! `admin` role, is 409 `self_lockout`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Message, page_limit};
use crate::auth::credentials::{self, Email};
use crate::auth::guard::CurrentUser;
use crate::auth::token::MAX_ROLES;
use crate::call::Call;
use crate::db;
use crate::db::accounts::{DeletedBy, Deletion};
use crate::db::admin::{Account, Actor, Filter, RoleChange};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::http::router::Params;
use crate::mail::Kind;
use crate::state::AppState;

/// `AdminUser` in the spec.
#[derive(Serialize)]
struct AdminUser<'a> {
    id: Uuid,
    email: &'a str,
    created_at: DateTime<Utc>,
    is_active: bool,
    email_verified: bool,
    roles: &'a [String],
    live_sessions: i64,
    last_login_at: Option<DateTime<Utc>>,
    deactivated_at: Option<DateTime<Utc>>,
    deactivation_reason: Option<&'a str>,
}

impl<'a> From<&'a Account> for AdminUser<'a> {
    fn from(a: &'a Account) -> Self {
        AdminUser {
            id: a.id,
            email: &a.email,
            created_at: a.created_at,
            is_active: a.is_active,
            email_verified: a.email_verified,
            roles: &a.roles,
            live_sessions: a.live_sessions,
            last_login_at: a.last_login_at,
            deactivated_at: a.deactivated_at,
            deactivation_reason: a.deactivation_reason.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct AdminUserList<'a> {
    users: Vec<AdminUser<'a>>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct DeactivationBody {
    reason: String,
}

#[derive(Deserialize)]
struct RoleSetBody {
    roles: Vec<String>,
}

#[derive(Serialize)]
struct SessionsEnded {
    ended: u64,
}

#[derive(Serialize)]
struct AdminEventView<'a> {
    id: i64,
    kind: &'a str,
    occurred_at: DateTime<Utc>,
    /// Ids are absent rather than null when there is none: a null id invites a client (or
    /// a tool following links) to build `/admin/users/null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_id: Option<Uuid>,
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Uuid>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

#[derive(Serialize)]
struct AdminEventList<'a> {
    events: Vec<AdminEventView<'a>>,
    next_before: Option<i64>,
}

const DEFAULT_USERS_PAGE: i64 = 50;
const DEFAULT_EVENTS_PAGE: i64 = 20;
/// The longest `q` and `reason` the spec allows.
const MAX_PREFIX_CHARS: usize = 254;
const MAX_REASON_CHARS: usize = 500;
const MAX_CURSOR_CHARS: usize = 512;

/// The decoded value of query parameter `name`: the admin API's parameters carry addresses
/// (`@` arrives as `%40`), unlike the plain words of the rest of the API.
fn decoded<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn flag(query: Option<&str>, name: &'static str) -> Result<Option<bool>, ApiError> {
    match decoded(query, name).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::validation(name, "must be true or false")),
    }
}

/// The `user_id` of the path.
fn user_id(params: &Params) -> Result<Uuid, ApiError> {
    params
        .get("user_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("user_id", "user_id must be a UUID"))
}

fn user_response(status: StatusCode, account: &Account) -> Result<Response, ApiError> {
    response::json(status, &AdminUser::from(account))
}

pub async fn list_users(state: &AppState, query: Option<&str>) -> Result<Response, ApiError> {
    let limit = page_limit(query, DEFAULT_USERS_PAGE)?;
    let q = decoded(query, "q");
    // The spec's bound is on what was sent; lower-casing may lengthen it.
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > MAX_PREFIX_CHARS)
    {
        return Err(ApiError::validation(
            "q",
            "q must be at most 254 characters",
        ));
    }
    let prefix = q.map(|q| credentials::normalise_prefix(&q));
    // Every parameter is checked before any answer, the empty one below included.
    let active = flag(query, "active")?;
    let verified = flag(query, "verified")?;
    let after = match decoded(query, "cursor") {
        None => None,
        Some(raw) if raw.chars().count() > MAX_CURSOR_CHARS => {
            return Err(ApiError::validation("cursor", "cursor is too long"));
        }
        // A position in byte order: what follows a NUL cannot change it (no address holds
        // one), and PostgreSQL's text cannot carry it.
        Some(raw) => Some(raw.split('\0').next().unwrap_or_default().to_owned()),
    };
    // No stored address holds a NUL (PostgreSQL's text cannot), so such a prefix matches
    // nothing; and it cannot be sent as a parameter.
    if prefix.as_ref().is_some_and(|p| p.contains('\0')) {
        return response::json(
            StatusCode::OK,
            &AdminUserList {
                users: Vec::new(),
                next_cursor: None,
            },
        );
    }
    let filter = Filter {
        prefix: prefix.as_deref().filter(|p| !p.is_empty()),
        active,
        verified,
        after: after.as_deref(),
    };
    // One more than the page: whether it exists says whether there is a next page.
    let mut accounts = db::admin::list(&state.db, &filter, limit + 1).await?;
    let next_cursor = if accounts.len() as i64 > limit {
        accounts.truncate(limit as usize);
        // The last address: any string is a position in the order, so a cursor can never
        // be invalid, only past the end.
        accounts.last().map(|a| a.email.clone())
    } else {
        None
    };
    response::json(
        StatusCode::OK,
        &AdminUserList {
            users: accounts.iter().map(AdminUser::from).collect(),
            next_cursor,
        },
    )
}

pub async fn get_user(state: &AppState, params: &Params) -> Result<Response, ApiError> {
    let account = db::admin::get(&state.db, user_id(params)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    user_response(StatusCode::OK, &account)
}

pub async fn deactivate(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let body: DeactivationBody = body::json(req, state.config.body_read_timeout).await?;
    if body.reason.is_empty() || body.reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::validation(
            "reason",
            "reason must be 1 to 500 characters",
        ));
    }
    if target == admin.id {
        return Err(ApiError::SelfLockout("deactivate"));
    }
    // PostgreSQL's text cannot hold a NUL; the reason is for people, so it is shown as
    // the replacement character rather than refused.
    let reason = body.reason.replace('\0', "\u{FFFD}");
    let account = db::admin::deactivate(&state.db, call, Actor::admin(&admin), target, &reason)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(admin_id = %admin.id, user_id = %target, "account deactivated");
    user_response(StatusCode::OK, &account)
}

pub async fn delete_user(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    if target == admin.id {
        return Err(ApiError::SelfLockout("delete"));
    }
    let by = DeletedBy::Admin {
        actor_id: admin.id,
        session_id: admin.session_id,
    };
    match db::accounts::delete(&state.db, call, target, by).await? {
        Deletion::Deleted { .. } => {}
        Deletion::AlreadyDeleted | Deletion::NotFound => return Err(ApiError::NotFound),
        // Only an owner's deletion checks the owner's session and password.
        Deletion::CallerEnded | Deletion::Conflict => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "an admin's deletion answered as an owner's"
            )));
        }
    }
    tracing::info!(admin_id = %admin.id, user_id = %target, "account deleted by an admin");
    Ok(response::empty(StatusCode::NO_CONTENT))
}

pub async fn reactivate(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let account = db::admin::reactivate(&state.db, call, Actor::admin(&admin), target)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(admin_id = %admin.id, user_id = %target, "account reactivated");
    user_response(StatusCode::OK, &account)
}

pub async fn list_sessions(
    state: &AppState,
    admin: CurrentUser,
    params: &Params,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    // An unknown account is 404, not an empty list: the admin mistyped an id.
    if db::admin::get(&state.db, target).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    super::sessions::page(state, target, admin.session_id, query).await
}

pub async fn end_sessions(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let ended = db::admin::end_sessions(&state.db, call, Actor::admin(&admin), target)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(admin_id = %admin.id, user_id = %target, ended, "sessions ended by an admin");
    response::json(StatusCode::OK, &SessionsEnded { ended })
}

/// `MfaReset` in the spec.
#[derive(Serialize)]
struct MfaReset {
    factors_removed: u64,
}

pub async fn reset_mfa(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let removed = db::admin::reset_mfa(
        &state.db,
        call,
        Actor::admin(&admin),
        target,
        Uuid::new_v4(),
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    tracing::info!(admin_id = %admin.id, user_id = %target, removed, "second factors reset by an admin");
    response::json(
        StatusCode::OK,
        &MfaReset {
            factors_removed: removed,
        },
    )
}

pub async fn end_session(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let session = params
        .get("session_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("session_id", "session_id must be a UUID"))?;
    if !db::admin::end_session(&state.db, call, Actor::admin(&admin), target, session).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(admin_id = %admin.id, user_id = %target, session_id = %session, "session ended by an admin");
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// Checks a role set as the spec states it: names, count, no duplicates.
fn role_set(roles: Vec<String>) -> Result<Vec<String>, ApiError> {
    if roles.len() > MAX_ROLES {
        return Err(ApiError::validation("roles", "at most 16 roles"));
    }
    for role in &roles {
        let mut chars = role.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && role.len() <= 32
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(ApiError::validation(
                "roles",
                "a role is a lower-case letter then up to 31 lower-case letters, digits or _",
            ));
        }
    }
    let mut sorted = roles.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != roles.len() {
        return Err(ApiError::validation("roles", "roles must not repeat"));
    }
    Ok(sorted)
}

pub async fn set_roles(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let body: RoleSetBody = body::json(req, state.config.body_read_timeout).await?;
    let roles = role_set(body.roles)?;
    let wanted = roles.clone();
    match db::admin::set_roles(&state.db, Some(call), Actor::admin(&admin), target, |_| {
        wanted
    })
    .await?
    {
        RoleChange::Done { changed, .. } => {
            if changed {
                tracing::info!(admin_id = %admin.id, user_id = %target, ?roles, "roles changed");
            }
        }
        RoleChange::NoSuchUser => return Err(ApiError::NotFound),
        RoleChange::SelfLockout => return Err(ApiError::SelfLockout("remove the admin role of")),
        RoleChange::TooMany => return Err(ApiError::validation("roles", "at most 16 roles")),
    }
    let account = db::admin::get(&state.db, target)
        .await?
        .ok_or(ApiError::NotFound)?;
    user_response(StatusCode::OK, &account)
}

pub async fn send_password_reset(
    state: &AppState,
    call: &Call,
    admin: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let account = db::admin::get(&state.db, target)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !account.is_active {
        return Err(ApiError::AccountInactive);
    }
    let email = Email::normalise_for_lookup(&account.email)?;
    let queued =
        super::email::issue_for(state, call, &email, Kind::PasswordReset, Some(admin.id)).await?;
    if !queued {
        // Active a moment ago: deactivated meanwhile, or over the per-recipient limit.
        let now = db::admin::get(&state.db, target).await?;
        return Err(match now {
            Some(a) if a.is_active => ApiError::TooManyRequests {
                retry_after: 3600,
                reason: "emails per recipient per hour",
            },
            Some(_) => ApiError::AccountInactive,
            None => ApiError::NotFound,
        });
    }
    tracing::info!(admin_id = %admin.id, user_id = %target, "password reset email queued by an admin");
    response::json(
        StatusCode::ACCEPTED,
        &Message {
            message: "The password reset email is queued",
        },
    )
}

fn events_response(events: Vec<db::admin::AdminEvent>, limit: i64) -> Result<Response, ApiError> {
    let mut events = events;
    let next_before = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    let views = events
        .iter()
        .map(|e| AdminEventView {
            id: e.id,
            kind: &e.kind,
            occurred_at: e.occurred_at,
            user_id: e.user_id,
            actor_id: e.actor_id,
            reason: e.reason.as_deref(),
            session_id: e.session_id,
            ip: e.ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
        })
        .collect();
    response::json(
        StatusCode::OK,
        &AdminEventList {
            events: views,
            next_before,
        },
    )
}

fn before(query: Option<&str>) -> Result<Option<i64>, ApiError> {
    match decoded(query, "before") {
        None => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| ApiError::validation("before", "before must be a positive integer")),
    }
}

pub async fn list_user_events(
    state: &AppState,
    params: &Params,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let target = user_id(params)?;
    let limit = page_limit(query, DEFAULT_EVENTS_PAGE)?;
    let before = before(query)?;
    if db::admin::get(&state.db, target).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let events = db::admin::events(&state.db, Some(target), None, before, limit + 1).await?;
    events_response(events, limit)
}

/// The event kinds `kind` may name: the spec's `EventKind`, as the database allows them.
const EVENT_KINDS: &[&str] = &[
    "signup",
    "login_succeeded",
    "login_failed",
    "logout",
    "refresh",
    "refresh_reuse_detected",
    "password_changed",
    "password_change_failed",
    "session_revoked",
    "session_evicted",
    "rate_limited",
    "password_reset_requested",
    "password_reset_completed",
    "password_reset_failed",
    "email_verification_sent",
    "email_verified",
    "role_granted",
    "role_revoked",
    "account_deactivated",
    "account_reactivated",
    "sessions_revoked",
    "email_change_requested",
    "email_change_confirmed",
    "email_change_cancelled",
    "email_change_failed",
    "account_deleted",
    "account_deletion_failed",
    "mfa_enrolled",
    "mfa_removed",
    "mfa_verified",
    "mfa_failed",
    "mfa_locked",
    "recovery_code_used",
    "recovery_codes_regenerated",
    "passkey_added",
    "passkey_removed",
    "passkey_renamed",
    "passkey_used",
    "passkey_failed",
    "api_key_created",
    "api_key_revoked",
    "api_key_refused",
    "signing_key_created",
    "signing_key_activated",
    "signing_key_retired",
    "signing_key_revoked",
];

pub async fn list_events(state: &AppState, query: Option<&str>) -> Result<Response, ApiError> {
    let limit = page_limit(query, DEFAULT_EVENTS_PAGE)?;
    let before = before(query)?;
    let kind = match decoded(query, "kind") {
        None => None,
        Some(kind) => Some(
            EVENT_KINDS
                .iter()
                .find(|k| **k == kind)
                .copied()
                .ok_or_else(|| ApiError::validation("kind", "kind must be an event kind"))?,
        ),
    };
    let events = db::admin::events(&state.db, None, kind, before, limit + 1).await?;
    events_response(events, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_sets_are_checked_and_sorted() {
        let ok = role_set(vec!["support".into(), "admin".into()]).unwrap();
        assert_eq!(ok, ["admin", "support"]);
        for bad in [
            vec!["Admin".to_owned()],
            vec!["1x".to_owned()],
            vec!["a-b".to_owned()],
            vec![String::new()],
            vec!["a".repeat(33)],
            vec!["admin".to_owned(), "admin".to_owned()],
            (0..17).map(|i| format!("r{i}")).collect(),
        ] {
            assert!(role_set(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(role_set(vec!["a".repeat(32)]).is_ok());
        assert!(role_set(Vec::new()).unwrap().is_empty());
    }

    /// `kind` accepts exactly the spec's `EventKind`.
    #[test]
    fn the_event_kinds_are_the_specs() {
        let spec: serde_json::Value = serde_json::from_slice(crate::spec::JSON).unwrap();
        let kinds: Vec<&str> = spec["components"]["schemas"]["EventKind"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(kinds, EVENT_KINDS);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            decoded(Some("q=ada%40ex&limit=2"), "q").as_deref(),
            Some("ada@ex")
        );
        assert_eq!(decoded(Some("q=a+b"), "q").as_deref(), Some("a b"));
        assert_eq!(decoded(Some("limit=2"), "q"), None);
    }
}
