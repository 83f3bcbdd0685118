//! API keys of the caller: making one (`create_api_key`), the list (`list_api_keys`) and
//! revoking one (`delete_api_key`). How a key authenticates is the guard's
//! (`auth::guard::require_key`); what one looks like is `auth::api_keys`.
//!
//! Making a key needs what registering a passkey needs: the password, or a login of this
//! session within `REAUTH_WINDOW_MINUTES`, and aal2 when the account has a second factor.
//! Only a session makes keys: dispatch refuses an API key here (403 `insufficient_scope`),
//! so a leaked key cannot mint itself successors. The owner is the session's user,
//! always; the body has no field that could name another (unknown fields are refused).

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::account::recheck_password;
use super::present_string;
use crate::auth::api_keys::{self, Scope};
use crate::auth::credentials::Password;
use crate::auth::guard::CurrentUser;
use crate::call::Call;
use crate::db;
use crate::db::api_keys::{Created, NewKey};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::http::router::Params;
use crate::limits;
use crate::state::AppState;

/// Longest key name, in characters (the spec's `maxLength`).
const MAX_NAME_CHARS: usize = 64;
/// Longest life of a key, in days (the spec's `maximum`).
const MAX_DAYS: i32 = 365;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scopes: Vec<String>,
    expires_in_days: i64,
    #[serde(default, deserialize_with = "present_string")]
    password: Option<String>,
}

/// `ApiKey` in the spec.
#[derive(Serialize)]
struct KeyView<'a> {
    id: Uuid,
    name: &'a str,
    prefix: &'a str,
    scopes: Vec<&'static str>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a db::api_keys::ApiKey> for KeyView<'a> {
    fn from(k: &'a db::api_keys::ApiKey) -> Self {
        KeyView {
            id: k.id,
            name: &k.name,
            prefix: &k.prefix,
            scopes: k.scopes.iter().map(|s| s.as_str()).collect(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// `ApiKeyCreated` in the spec: the key's view and the key, this once.
#[derive(Serialize)]
struct CreatedView<'a> {
    #[serde(flatten)]
    view: KeyView<'a>,
    key: &'a str,
}

#[derive(Serialize)]
struct KeyList<'a> {
    api_keys: Vec<KeyView<'a>>,
}

/// A key's name as given: 1 to 64 characters, a NUL kept visible (PostgreSQL's text cannot
/// hold one).
fn name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().replace('\0', "\u{FFFD}");
    match !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS {
        true => Ok(name),
        false => Err(ApiError::validation(
            "name",
            "name must be 1 to 64 characters",
        )),
    }
}

/// The scopes asked for: at least one, each known, none twice.
fn scopes(raw: &[String]) -> Result<Vec<Scope>, ApiError> {
    let mut scopes = Vec::with_capacity(raw.len());
    for name in raw {
        let scope = Scope::parse(name).ok_or_else(|| {
            ApiError::validation("scopes", "scopes must be among account:read and introspect")
        })?;
        if scopes.contains(&scope) {
            return Err(ApiError::validation("scopes", "scopes must not repeat"));
        }
        scopes.push(scope);
    }
    match scopes.is_empty() {
        true => Err(ApiError::validation("scopes", "name at least one scope")),
        false => Ok(scopes),
    }
}

fn expires_in_days(raw: i64) -> Result<i32, ApiError> {
    i32::try_from(raw)
        .ok()
        .filter(|d| (1..=MAX_DAYS).contains(d))
        .ok_or_else(|| {
            ApiError::validation(
                "expires_in_days",
                "expires_in_days must be an integer from 1 to 365",
            )
        })
}

fn key_id(params: &Params) -> Result<Uuid, ApiError> {
    params
        .get("key_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("key_id", "key_id must be a UUID"))
}

pub async fn create(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: CreateBody = body::json(req, state.config.body_read_timeout).await?;
    let name = name(&body.name)?;
    let scopes = scopes(&body.scopes)?;
    let days = expires_in_days(body.expires_in_days)?;
    let password = body.password.map(Password::for_login).transpose()?;
    match password {
        Some(password) => {
            // Also holds an aal1 session of an account with a second factor to 403, and
            // counts against the per-IP limit of `action`.
            recheck_password(
                state,
                call,
                &user,
                password,
                limits::Action::ApiKeyCreate,
                ("api_key_refused", "wrong_password"),
            )
            .await?;
        }
        None => {
            limits::check(
                state,
                limits::Action::ApiKeyCreate,
                call,
                None,
                Some(user.id),
            )
            .await?;
            if user.aal < 2 && db::mfa::has_verified(&state.db, user.id).await? {
                return Err(ApiError::MfaRequired);
            }
            let fresh = db::passkeys::fresh_login(
                &state.db,
                user.id,
                user.session_id,
                state.config.reauth_window,
            )
            .await?
            .ok_or(ApiError::InvalidToken("session ended"))?;
            if !fresh {
                return Err(ApiError::ReauthenticationRequired);
            }
        }
    }
    let key = state.api_keys.fresh();
    let parsed = api_keys::parse(&key)
        .map_err(|m| ApiError::Internal(anyhow::anyhow!("a fresh key: {}", m.reason())))?;
    let created = db::api_keys::create(
        &state.db,
        call,
        user.id,
        user.session_id,
        NewKey {
            id: Uuid::new_v4(),
            name: &name,
            prefix: parsed.prefix(),
            hash: &state.api_keys.hash(parsed),
            scopes: &scopes,
            expires_in_days: days,
            notice_id: Uuid::new_v4(),
        },
    )
    .await?;
    match created {
        Created::Created(made) => {
            tracing::info!(user_id = %user.id, key_id = %made.id, prefix = %made.prefix, "api key created");
            response::json(
                StatusCode::CREATED,
                &CreatedView {
                    view: KeyView::from(&made),
                    key: &key,
                },
            )
        }
        Created::TooMany => Err(ApiError::TooManyApiKeys),
        Created::CallerEnded => Err(ApiError::InvalidToken("session ended")),
    }
}

pub async fn list(state: &AppState, user: CurrentUser) -> Result<Response, ApiError> {
    let keys = db::api_keys::list(&state.db, user.id).await?;
    response::json(
        StatusCode::OK,
        &KeyList {
            api_keys: keys.iter().map(KeyView::from).collect(),
        },
    )
}

pub async fn delete(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let id = key_id(params)?;
    match db::api_keys::revoke(&state.db, call, user.id, user.session_id, id).await? {
        true => {
            tracing::info!(user_id = %user.id, key_id = %id, "api key revoked");
            Ok(response::empty(StatusCode::NO_CONTENT))
        }
        false => Err(ApiError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_known_distinct_and_at_least_one() {
        let s = |v: &[&str]| scopes(&v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            s(&["introspect", "account:read"]).unwrap(),
            [Scope::Introspect, Scope::AccountRead]
        );
        for bad in [
            &[][..],
            &["admin"],
            &["introspect", "introspect"],
            &["Introspect"],
        ] {
            assert!(
                matches!(
                    s(bad),
                    Err(ApiError::Validation {
                        field: Some("scopes"),
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_lives_one_to_365_days() {
        assert_eq!(expires_in_days(1).unwrap(), 1);
        assert_eq!(expires_in_days(365).unwrap(), 365);
        for bad in [0, -1, 366, i64::MAX] {
            assert!(expires_in_days(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_body_names_no_owner_and_refuses_unknown_fields() {
        let ok = br#"{"name":"ci","scopes":["introspect"],"expires_in_days":30}"#;
        assert!(body::parse::<CreateBody>(ok).is_ok());
        let with_owner =
            br#"{"name":"ci","scopes":["introspect"],"expires_in_days":30,"user_id":"x"}"#;
        assert!(matches!(
            body::parse::<CreateBody>(with_owner),
            Err(ApiError::Validation { .. })
        ));
    }
}
