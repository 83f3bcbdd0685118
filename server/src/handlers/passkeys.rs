//! Passkeys: registering one (`start_passkey_registration`, `finish_passkey_registration`),
//! signing in with one without typing an email (`start_passkey_authentication`,
//! `finish_passkey_authentication`), and the list, rename and removal. The second-factor
//! use of a passkey is in `handlers::mfa` (`start_mfa_passkey`, and `verify_mfa`).
//!
//! A registration needs proof that the owner is at the keyboard: the password, or a login
//! of this session within `REAUTH_WINDOW_MINUTES`; and, when the account has an
//! authenticator app, a session that passed it (aal2). A removal needs the recent login
//! (and aal2 likewise). Every ceremony is single use and lives 5 minutes
//! (`auth::passkeys::CEREMONY_TTL`); a registration's belongs to the session that began it.
//!
//! A sign-in refusal says nothing of why (unknown credential, bad signature, replayed
//! counter, inactive account): 401 `invalid_credentials`, as a wrong password; the reason
//! is logged and, when the credential names an account, recorded as `passkey_failed`.

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::account::recheck_password;
use super::sessions::{Granted, Transport, UserSummary, mfa_owed, tokens_response};
use super::{Message, present_string};
use crate::auth::credentials::Password;
use crate::auth::guard::CurrentUser;
use crate::auth::passkeys::{self, Begun, CEREMONY_TTL, Stored};
use crate::auth::refresh as refresh_token;
use crate::auth::token::Assurance;
use crate::call::Call;
use crate::config::Verification;
use crate::db;
use crate::db::passkeys::{Added, Ceremony, MAX_PASSKEYS};
use crate::errors::ApiError;
use crate::http::response::{self, Response};
use crate::http::router::Params;
use crate::http::{body, refresh_cookie};
use crate::limits;
use crate::state::AppState;

/// Longest passkey name, in characters (the spec's `maxLength`).
const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize)]
struct RegistrationStartBody {
    #[serde(default, deserialize_with = "present_string")]
    password: Option<String>,
}

#[derive(Deserialize)]
struct RegistrationFinishBody {
    ceremony_id: Uuid,
    name: String,
    credential: Value,
}

#[derive(Deserialize)]
struct SignInBody {
    ceremony_id: Uuid,
    credential: Value,
    #[serde(default)]
    refresh_token_transport: Transport,
}

#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

/// `PasskeyCeremony` in the spec.
#[derive(Serialize)]
pub(super) struct CeremonyView<'a> {
    ceremony_id: Uuid,
    expires_in: u64,
    options: &'a Value,
}

/// `Passkey` in the spec.
#[derive(Serialize)]
struct PasskeyView<'a> {
    id: Uuid,
    name: &'a str,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<DateTime<Utc>>,
    backup_eligible: bool,
    backed_up: bool,
}

impl<'a> From<&'a db::passkeys::Passkey> for PasskeyView<'a> {
    fn from(p: &'a db::passkeys::Passkey) -> Self {
        PasskeyView {
            id: p.id,
            name: &p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
            backup_eligible: p.backup_eligible,
            backed_up: p.backed_up,
        }
    }
}

#[derive(Serialize)]
struct PasskeyList<'a> {
    passkeys: Vec<PasskeyView<'a>>,
}

/// A passkey's name as given: 1 to 64 characters, a NUL kept visible (PostgreSQL's text
/// cannot hold one).
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

fn passkey_id(params: &Params) -> Result<Uuid, ApiError> {
    params
        .get("passkey_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("passkey_id", "passkey_id must be a UUID"))
}

/// Stores a ceremony begun and answers its options.
pub(super) async fn answer_begun(
    state: &AppState,
    ceremony: Ceremony,
    owner: Option<(Uuid, Uuid)>,
    begun: Begun,
) -> Result<Response, ApiError> {
    let ceremony_id = Uuid::new_v4();
    db::passkeys::begin(
        &state.db,
        ceremony_id,
        ceremony,
        owner,
        &begun.state,
        CEREMONY_TTL,
    )
    .await?;
    response::json(
        StatusCode::OK,
        &CeremonyView {
            ceremony_id,
            expires_in: CEREMONY_TTL.as_secs(),
            options: &begun.options,
        },
    )
}

/// Refuses a session below aal2 of an account with an authenticator app (403
/// `mfa_required`): a password alone never changes how such an account signs in.
async fn require_aal2_if_mfa(state: &AppState, user: &CurrentUser) -> Result<(), ApiError> {
    if user.aal < 2 && db::mfa::has_verified(&state.db, user.id).await? {
        return Err(ApiError::MfaRequired);
    }
    Ok(())
}

pub async fn start_registration(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: RegistrationStartBody = body::json(req, state.config.body_read_timeout).await?;
    let password = body.password.map(Password::for_login).transpose()?;
    // Each call stores a ceremony: counted per IP, as the second-factor operations are
    // (the password re-check counts again, as it does for them).
    if password.is_none() {
        limits::check(state, limits::Action::Mfa, call, None, Some(user.id)).await?;
    }
    let start = db::passkeys::registration_start(
        &state.db,
        user.id,
        user.session_id,
        state.config.reauth_window,
    )
    .await?
    .ok_or(ApiError::InvalidToken("session ended"))?;
    match password {
        Some(password) => {
            // Also holds an aal1 session of an account with an authenticator app to 403.
            recheck_password(
                state,
                call,
                &user,
                password,
                limits::Action::Mfa,
                ("passkey_failed", "wrong_password"),
            )
            .await?;
        }
        None => {
            require_aal2_if_mfa(state, &user).await?;
            if !start.fresh_login {
                return Err(ApiError::ReauthenticationRequired);
            }
        }
    }
    if start.credential_ids.len() as i64 >= MAX_PASSKEYS {
        return Err(ApiError::TooManyPasskeys);
    }
    let exclude = start.credential_ids;
    let begun = state
        .passkeys
        .start_registration(start.handle, &user.email, exclude)?;
    answer_begun(
        state,
        Ceremony::Registration,
        Some((user.id, user.session_id)),
        begun,
    )
    .await
}

pub async fn finish_registration(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: RegistrationFinishBody = body::json(req, state.config.body_read_timeout).await?;
    let name = name(&body.name)?;
    let credential: RegisterPublicKeyCredential = passkeys::credential(body.credential)?;
    let owner = Some((user.id, user.session_id));
    let Some(ceremony) =
        db::passkeys::consume(&state.db, body.ceremony_id, Ceremony::Registration, owner).await?
    else {
        return Err(ApiError::InvalidCeremony(
            "no such live registration of this session",
        ));
    };
    let passkey = match state.passkeys.finish_registration(&credential, ceremony) {
        Ok(passkey) => passkey,
        Err(refused) => {
            tracing::info!(user_id = %user.id, reason = %refused.0, "passkey registration refused");
            db::events::record(
                &state.db,
                call,
                "passkey_failed",
                Some("registration_refused"),
                Some(user.id),
                None,
            )
            .await?;
            return Err(ApiError::validation(
                "credential",
                "The authenticator's answer was not accepted (another origin, an old \
                 challenge, or no user verification); start again",
            ));
        }
    };
    let stored = Stored::of(&passkey)?;
    let (backup_eligible, backed_up) = passkeys::backup_flags(&passkey);
    match db::passkeys::add(
        &state.db,
        call,
        user.id,
        user.session_id,
        db::passkeys::NewPasskey {
            id: Uuid::new_v4(),
            name: &name,
            stored: &stored,
            backup_eligible,
            backed_up,
            notice_id: Uuid::new_v4(),
        },
    )
    .await?
    {
        Added::Added(added) => {
            tracing::info!(user_id = %user.id, passkey_id = %added.id, "passkey added");
            response::json(StatusCode::CREATED, &PasskeyView::from(&added))
        }
        Added::TooMany => Err(ApiError::TooManyPasskeys),
        Added::Taken => Err(ApiError::PasskeyTaken),
        Added::CallerEnded => Err(ApiError::InvalidToken("session ended")),
    }
}

pub async fn start_sign_in(state: &AppState, call: &Call) -> Result<Response, ApiError> {
    limits::check(state, limits::Action::PasskeySignIn, call, None, None).await?;
    let begun = state.passkeys.start_sign_in()?;
    answer_begun(state, Ceremony::SignIn, None, begun).await
}

pub async fn finish_sign_in(
    state: &AppState,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let body: SignInBody = body::json(req, state.config.body_read_timeout).await?;
    let transport = body.refresh_token_transport;
    if transport == Transport::Cookie {
        refresh_cookie::check_origin(&state.config.cors_origins, &headers)?;
    }
    let credential: PublicKeyCredential = passkeys::credential(body.credential)?;
    let Some(ceremony) =
        db::passkeys::consume(&state.db, body.ceremony_id, Ceremony::SignIn, None).await?
    else {
        return Err(ApiError::PasskeyRefused("no such live sign-in ceremony"));
    };
    let Some(owner) = db::passkeys::owner_of(&state.db, &credential.raw_id).await? else {
        return Err(ApiError::PasskeyRefused("unknown credential"));
    };
    let refuse = async |reason: &'static str| -> ApiError {
        if let Err(e) = db::events::record(
            &state.db,
            call,
            "passkey_failed",
            Some(reason),
            Some(owner.user_id),
            None,
        )
        .await
        {
            return e;
        }
        ApiError::PasskeyRefused(reason)
    };
    // A discoverable credential names its user: it must be the credential's owner.
    if let Some(handle) = credential.response.user_handle.as_deref()
        && Uuid::from_slice(handle).ok() != owner.handle
    {
        return Err(refuse("user_handle_mismatch").await);
    }
    let mut passkey = passkeys::parse_stored(&owner.passkey_json)?;
    let result = match state
        .passkeys
        .finish_sign_in(&credential, ceremony, &passkey)
    {
        Ok(result) => result,
        Err(refused) => {
            tracing::info!(user_id = %owner.user_id, reason = %refused.0, "passkey sign-in refused");
            return Err(refuse("assertion_refused").await);
        }
    };
    if !owner.is_active {
        return Err(refuse("account_inactive").await);
    }
    if state.config.mail.verification == Verification::Required && !owner.email_verified {
        db::events::record(
            &state.db,
            call,
            "login_failed",
            Some("email_not_verified"),
            Some(owner.user_id),
            None,
        )
        .await?;
        return Err(ApiError::EmailNotVerified);
    }
    let updated = match passkey.update_credential(&result) {
        Some(true) => {
            Some(serde_json::to_string(&passkey).map_err(|e| ApiError::Internal(e.into()))?)
        }
        _ => None,
    };
    let usage = db::passkeys::Use {
        passkey_id: owner.passkey_id,
        sign_count: i64::from(result.counter()),
        updated_json: updated.as_deref(),
        backed_up: result.backup_state(),
        backup_eligible: result.backup_eligible(),
    };
    if !db::passkeys::used(&state.db, call, owner.user_id, None, &usage, "sign_in").await? {
        return Err(refuse("counter_not_advanced").await);
    }
    let assurance = Assurance {
        aal: if result.user_verified() { 2 } else { 1 },
        amr: vec!["webauthn".to_owned()],
        mfa_required: false,
    };
    let refresh = state.refresh.fresh();
    let session = db::sessions::start(
        &state.db,
        db::sessions::Start {
            user_id: owner.user_id,
            credential_version: owner.credential_version,
            ttl: state.config.refresh_token_ttl,
            cap: state.config.sessions_per_user_max,
            refresh_hash: &refresh_token::hash(&refresh),
            refund: None,
            new_device: None,
            aal: i16::from(assurance.aal),
            amr: &assurance.amr,
            passkey_id: Some(owner.passkey_id),
        },
        call,
    )
    .await?
    .ok_or(ApiError::PasskeyRefused(
        "passkey removed, password reset or account deactivated during the sign-in",
    ))?;
    tracing::info!(user_id = %owner.user_id, session_id = %session.id, "passkey sign-in succeeded");
    let assurance = Assurance {
        mfa_required: mfa_owed(
            state,
            i16::from(assurance.aal),
            session.has_factor,
            &session.roles,
        ),
        ..assurance
    };
    tokens_response(
        state,
        UserSummary::active(owner.user_id, &owner.email, owner.email_verified),
        &session.roles,
        &assurance,
        Granted {
            session_id: session.id,
            expires_at: session.expires_at,
            refresh_token: Some(&refresh),
            device_token: None,
            transport,
        },
    )
}

pub async fn list(state: &AppState, user: CurrentUser) -> Result<Response, ApiError> {
    let passkeys = db::passkeys::list(&state.db, user.id).await?;
    response::json(
        StatusCode::OK,
        &PasskeyList {
            passkeys: passkeys.iter().map(PasskeyView::from).collect(),
        },
    )
}

pub async fn rename(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    params: &Params,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let id = passkey_id(params)?;
    let body: RenameBody = body::json(req, state.config.body_read_timeout).await?;
    let name = name(&body.name)?;
    match db::passkeys::rename(&state.db, call, user.id, user.session_id, id, &name).await? {
        Some(renamed) => response::json(StatusCode::OK, &PasskeyView::from(&renamed)),
        None => Err(ApiError::NotFound),
    }
}

pub async fn remove(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    params: &Params,
) -> Result<Response, ApiError> {
    let id = passkey_id(params)?;
    require_aal2_if_mfa(state, &user).await?;
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
    match db::passkeys::remove(
        &state.db,
        call,
        user.id,
        user.session_id,
        id,
        Uuid::new_v4(),
    )
    .await?
    {
        Some(sessions_ended) => {
            tracing::info!(user_id = %user.id, passkey_id = %id, sessions_ended, "passkey removed");
            response::json(
                StatusCode::OK,
                &Message {
                    message: "Passkey removed",
                },
            )
        }
        None => Err(ApiError::NotFound),
    }
}
