//! Two-factor authentication: enrolling an authenticator app (`enrol_totp`,
//! `confirm_totp`), stepping a session up to aal2 (`verify_mfa`), recovery codes, and the
//! factor list and removal.
//!
//! Every check of a code goes the same way ([`check_code`]): the attempt is counted
//! against the session and the account first (`db::mfa::count_attempt`, committed before
//! the comparison, so parallel guesses all count), refused outright while the account's
//! second factor is locked; then the code is compared with every candidate factor's codes
//! for the current step and one step each way; a mismatch is recorded (`db::mfa::fail`),
//! which ends the session on its last attempt and locks the account at its limit. A match
//! is only a candidate: the step (or recovery code) is spent by the conditional `UPDATE`
//! of the operation that uses it, and losing that race counts as a wrong code.
//!
//! Which sessions may call what is decided before the handler: the route table lets a
//! session that still owes its second factor call only `get_me`, `logout`, `verify_mfa`,
//! `list_mfa_factors`, `enrol_totp` and `confirm_totp`. Here, on top: enrolling or
//! confirming another factor when one is verified, removing a verified factor and
//! replacing the recovery codes need a session at aal2.

use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::account::recheck_password;
use super::sessions::{Granted, Transport, UserSummary, tokens_response};
use super::{Message, present_string};
use crate::auth::credentials::Password;
use crate::auth::guard::CurrentUser;
use crate::auth::token::Assurance;
use crate::auth::{mfa, passkeys};
use crate::call::Call;
use crate::db;
use crate::db::mfa::{Attempt, Confirmed, Enrolled, Proof, Removed, Stepped, Which};
use crate::errors::ApiError;
use crate::http::body;
use crate::http::response::{self, Response};
use crate::http::router::Params;
use crate::limits;
use crate::state::AppState;

/// Longest factor label, in characters (the spec's `maxLength`).
const MAX_LABEL_CHARS: usize = 64;

#[derive(Deserialize)]
struct EnrolBody {
    password: String,
    label: String,
}

#[derive(Serialize)]
struct Enrolment<'a> {
    factor_id: Uuid,
    otpauth_uri: &'a str,
    secret: &'a str,
    qr_svg: &'a str,
}

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

#[derive(Deserialize)]
struct VerifyBody {
    #[serde(default, deserialize_with = "present_string")]
    code: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    recovery_code: Option<String>,
    /// A passkey assertion: the ceremony `start_mfa_passkey` began, and the credential.
    #[serde(default)]
    ceremony_id: Option<Uuid>,
    #[serde(default)]
    credential: Option<serde_json::Value>,
}

/// `MfaFactor` in the spec.
#[derive(Serialize)]
struct FactorView<'a> {
    id: Uuid,
    kind: &'static str,
    label: &'a str,
    status: &'static str,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a db::mfa::Factor> for FactorView<'a> {
    fn from(f: &'a db::mfa::Factor) -> Self {
        FactorView {
            id: f.id,
            kind: "totp",
            label: &f.label,
            status: if f.verified { "verified" } else { "pending" },
            created_at: f.created_at,
            last_used_at: f.last_used_at,
        }
    }
}

#[derive(Serialize)]
struct Confirmation<'a> {
    factor: FactorView<'a>,
    recovery_codes: &'a [String],
}

#[derive(Serialize)]
struct RecoveryCodes<'a> {
    recovery_codes: &'a [String],
}

#[derive(Serialize)]
struct RecoveryCodesStatus {
    remaining: i64,
}

#[derive(Serialize)]
struct FactorList<'a> {
    factors: Vec<FactorView<'a>>,
}

/// What a caller typed as proof: a TOTP code (6 digits) or a recovery code.
enum Typed<'a> {
    Code(&'a str),
    Recovery(&'a str),
}

/// The 6 digits of a `code` field, or 422 (the spec's pattern).
fn six_digits<'a>(code: &'a str, field: &'static str) -> Result<&'a str, ApiError> {
    match code.len() == mfa::DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        true => Ok(code),
        false => Err(ApiError::validation(
            field,
            "code must be the 6 digits the app shows",
        )),
    }
}

fn factor_id(params: &Params) -> Result<Uuid, ApiError> {
    params
        .get("factor_id")
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .ok_or_else(|| ApiError::validation("factor_id", "factor_id must be a UUID"))
}

/// Refuses a session below aal2 (403 `mfa_required`).
fn require_aal2(user: &CurrentUser) -> Result<(), ApiError> {
    match user.aal >= 2 {
        true => Ok(()),
        false => Err(ApiError::MfaRequired),
    }
}

pub async fn enrol_totp(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: EnrolBody = body::json(req, state.config.body_read_timeout).await?;
    // PostgreSQL's text cannot hold a NUL; the label is for people, so it is kept visible.
    let label = body.label.replace('\0', "\u{FFFD}");
    if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::validation(
            "label",
            "label must be 1 to 64 characters",
        ));
    }
    let password = Password::for_login(body.password)?;
    // The re-check also holds a session below aal2 of an account that already has a
    // verified factor to 403 `mfa_required`: a password alone never adds a factor to it.
    recheck_password(
        state,
        call,
        &user,
        password,
        limits::Action::Mfa,
        ("mfa_failed", "wrong_password"),
    )
    .await?;
    let factor_id = Uuid::new_v4();
    let secret = mfa::fresh_secret();
    let sealed = state.mfa.seal(factor_id, &secret);
    match db::mfa::enrol(
        &state.db,
        user.id,
        user.session_id,
        factor_id,
        &label,
        &sealed,
    )
    .await?
    {
        Enrolled::Created => {}
        Enrolled::TooMany => return Err(ApiError::TooManyFactors),
        Enrolled::CallerEnded => return Err(ApiError::InvalidToken("session ended")),
    }
    let uri = mfa::otpauth_uri(&state.config.app_name, &user.email, &secret);
    let qr = mfa::qr_svg(&uri).map_err(ApiError::Internal)?;
    tracing::info!(user_id = %user.id, %factor_id, "TOTP factor enrolment started");
    response::json(
        StatusCode::CREATED,
        &Enrolment {
            factor_id,
            otpauth_uri: &uri,
            secret: &mfa::secret_base32(&secret),
            qr_svg: &qr,
        },
    )
}

pub async fn confirm_totp(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    params: &Params,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let id = factor_id(params)?;
    let body: CodeBody = body::json(req, state.config.body_read_timeout).await?;
    let code = six_digits(&body.code, "code")?;
    limits::check(state, limits::Action::Mfa, call, None, Some(user.id)).await?;
    if user.aal < 2 && db::mfa::has_verified(&state.db, user.id).await? {
        return Err(ApiError::MfaRequired);
    }
    let candidates = db::mfa::sealed_secrets(&state.db, user.id, Which::Pending(id)).await?;
    if candidates.is_empty() {
        return Err(ApiError::NotFound);
    }
    let Proof::Totp { step, .. } =
        check_code(state, call, &user, Typed::Code(code), candidates).await?
    else {
        unreachable!("a TOTP code proves with a step");
    };
    let (codes, hashes) = recovery_set(state);
    match db::mfa::confirm(
        &state.db,
        call,
        user.id,
        user.session_id,
        db::mfa::Confirmation {
            factor_id: id,
            step,
            recovery_hashes: &hashes,
            notice_id: Uuid::new_v4(),
        },
    )
    .await?
    {
        Confirmed::Done {
            factor,
            other_sessions_ended,
        } => {
            tracing::info!(user_id = %user.id, factor_id = %id, other_sessions_ended, "TOTP factor verified");
            response::json(
                StatusCode::OK,
                &Confirmation {
                    factor: FactorView::from(&factor),
                    recovery_codes: &codes,
                },
            )
        }
        Confirmed::NotPending => Err(ApiError::NotFound),
        Confirmed::CallerEnded => Err(ApiError::InvalidToken("session ended")),
    }
}

pub async fn verify(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let body: VerifyBody = body::json(req, state.config.body_read_timeout).await?;
    let typed = match (&body.code, &body.recovery_code, &body.credential) {
        (Some(code), None, None) => Typed::Code(six_digits(code, "code")?),
        (None, Some(recovery), None) => Typed::Recovery(recovery),
        (None, None, Some(_)) => {
            let (Some(ceremony_id), Some(credential)) = (body.ceremony_id, body.credential) else {
                return Err(ApiError::validation(
                    "ceremony_id",
                    "a passkey assertion needs its ceremony_id",
                ));
            };
            return verify_passkey(state, call, user, ceremony_id, credential).await;
        }
        _ => {
            return Err(ApiError::validation(
                "code",
                "send exactly one of code, recovery_code and credential",
            ));
        }
    };
    if let Typed::Recovery(raw) = typed
        && (raw.is_empty() || raw.chars().count() > 64)
    {
        return Err(ApiError::validation(
            "recovery_code",
            "recovery_code must be 1 to 64 characters",
        ));
    }
    limits::check(state, limits::Action::Mfa, call, None, Some(user.id)).await?;
    let candidates = db::mfa::sealed_secrets(&state.db, user.id, Which::AllVerified).await?;
    if candidates.is_empty() {
        return Err(ApiError::NoFactor);
    }
    let proof = check_code(state, call, &user, typed, candidates).await?;
    step_up(state, call, user, proof).await
}

/// Spends `proof` and raises the session to aal2: its new access token.
async fn step_up(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    proof: Proof,
) -> Result<Response, ApiError> {
    match db::mfa::step_up(
        &state.db,
        call,
        user.id,
        user.session_id,
        &proof,
        Uuid::new_v4(),
    )
    .await?
    {
        Stepped::Up(up) => {
            tracing::info!(user_id = %user.id, session_id = %user.session_id, method = proof.method(), "session stepped up to aal2");
            tokens_response(
                state,
                UserSummary::active(user.id, &up.email, up.email_verified),
                &up.roles,
                &Assurance {
                    aal: 2,
                    amr: up.amr,
                    mfa_required: false,
                },
                Granted {
                    session_id: user.session_id,
                    expires_at: up.expires_at,
                    // The session keeps its refresh token, in the body or the cookie
                    // (cookie mode) as it was: a refresh now renews it at aal2.
                    refresh_token: None,
                    device_token: None,
                    transport: Transport::Body,
                },
            )
        }
        Stepped::Spent => Err(failed(state, call, &user, spent_reason(&proof)).await),
        Stepped::SessionEnded => Err(ApiError::InvalidToken("session ended")),
    }
}

pub async fn list_factors(state: &AppState, user: CurrentUser) -> Result<Response, ApiError> {
    let factors = db::mfa::list(&state.db, user.id).await?;
    response::json(
        StatusCode::OK,
        &FactorList {
            factors: factors.iter().map(FactorView::from).collect(),
        },
    )
}

/// The header that carries the proof for removing a verified factor.
const CODE_HEADER: &str = "x-mfa-code";

pub async fn remove_factor(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    params: &Params,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let id = factor_id(params)?;
    let typed = match req.headers().get(CODE_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.chars().count() <= 64)
                .ok_or_else(|| {
                    ApiError::validation("X-MFA-Code", "X-MFA-Code must be 1 to 64 characters")
                })?
                .trim()
                .to_owned(),
        ),
    };
    let candidates = db::mfa::sealed_secrets(&state.db, user.id, Which::Verified(id)).await?;
    let proof = match candidates.is_empty() {
        // Pending (or unknown: the removal says which).
        true => None,
        false => {
            require_aal2(&user)?;
            limits::check(state, limits::Action::Mfa, call, None, Some(user.id)).await?;
            let Some(typed) = typed.as_deref() else {
                return Err(ApiError::InvalidMfaCode("no X-MFA-Code"));
            };
            let typed =
                match typed.len() == mfa::DIGITS && typed.bytes().all(|b| b.is_ascii_digit()) {
                    true => Typed::Code(typed),
                    false => Typed::Recovery(typed),
                };
            Some(check_code(state, call, &user, typed, candidates).await?)
        }
    };
    match db::mfa::remove(
        &state.db,
        call,
        user.id,
        user.session_id,
        id,
        proof.as_ref(),
        Uuid::new_v4(),
    )
    .await?
    {
        Removed::Removed { verified, last } => {
            tracing::info!(user_id = %user.id, factor_id = %id, verified, last, "second factor removed");
            response::json(
                StatusCode::OK,
                &Message {
                    message: "Factor removed",
                },
            )
        }
        Removed::NotFound => Err(ApiError::NotFound),
        Removed::Spent => {
            let reason = proof.as_ref().map_or("no proof", spent_reason);
            Err(failed(state, call, &user, reason).await)
        }
    }
}

pub async fn recovery_codes_status(
    state: &AppState,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    let remaining = db::mfa::codes_left(&state.db, user.id).await?;
    response::json(StatusCode::OK, &RecoveryCodesStatus { remaining })
}

pub async fn regenerate_recovery_codes(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    require_aal2(&user)?;
    let (codes, hashes) = recovery_set(state);
    if !db::mfa::regenerate_codes(&state.db, call, user.id, user.session_id, &hashes).await? {
        return Err(ApiError::NoFactor);
    }
    tracing::info!(user_id = %user.id, "recovery codes replaced");
    response::json(
        StatusCode::OK,
        &RecoveryCodes {
            recovery_codes: &codes,
        },
    )
}

/// A new set of recovery codes, as shown once, and their stored hashes.
fn recovery_set(state: &AppState) -> (Vec<String>, Vec<Vec<u8>>) {
    let codes = mfa::fresh_recovery_codes();
    let hashes = codes
        .iter()
        .map(|c| {
            state
                .mfa
                .recovery_hash(&mfa::normalise_recovery_code(c).expect("ours"))
        })
        .collect();
    (codes, hashes)
}

/// Counts the attempt, then compares `typed` with the `candidates` (factor id, sealed
/// secret): the proof to spend, or the recorded failure. A recovery code is compared by
/// spending it (its hash is the lookup), so here it only has to look like one.
async fn check_code(
    state: &AppState,
    call: &Call,
    user: &CurrentUser,
    typed: Typed<'_>,
    candidates: Vec<(Uuid, Vec<u8>)>,
) -> Result<Proof, ApiError> {
    count_attempt(state, call, user).await?;
    let proof = match typed {
        Typed::Code(code) => {
            let now = state.mfa.clock.now();
            let mut found = None;
            for (id, sealed) in &candidates {
                let secret = state.mfa.open(*id, sealed).map_err(ApiError::Internal)?;
                if let Some(step) = mfa::matching_step(&secret, code, now)
                    && found.is_none()
                {
                    found = Some(Proof::Totp {
                        factor_id: *id,
                        step,
                    });
                }
            }
            found
        }
        Typed::Recovery(raw) => mfa::normalise_recovery_code(raw).map(|code| Proof::Recovery {
            hash: state.mfa.recovery_hash(&code),
        }),
    };
    match proof {
        Some(proof) => Ok(proof),
        None => Err(failed(state, call, user, "wrong_code").await),
    }
}

/// Counts a second-factor attempt before its proof is compared (`db::mfa::count_attempt`),
/// or refuses it: the account's second factor is locked, or the session is out of attempts.
async fn count_attempt(state: &AppState, call: &Call, user: &CurrentUser) -> Result<(), ApiError> {
    match db::mfa::count_attempt(&state.db, call, user.id, user.session_id, Uuid::new_v4()).await? {
        Attempt::Go { .. } => Ok(()),
        Attempt::Locked { retry_after } => Err(ApiError::TooManyRequests {
            retry_after,
            reason: "second factor locked",
        }),
        Attempt::SessionEnded => Err(ApiError::InvalidToken(
            "session ended, or out of second-factor attempts",
        )),
    }
}

/// `POST /auth/mfa/passkey`: begins a second-factor assertion by one of the account's
/// passkeys, for this session (409 `conflict` when it has none).
pub async fn start_passkey(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    limits::check(state, limits::Action::Mfa, call, None, Some(user.id)).await?;
    let stored = db::passkeys::stored_of(&state.db, user.id).await?;
    if stored.is_empty() {
        return Err(ApiError::NoPasskey);
    }
    let passkeys = stored
        .iter()
        .map(|(_, json)| passkeys::parse_stored(json))
        .collect::<Result<Vec<_>, _>>()?;
    let begun = state.passkeys.start_second_factor(&passkeys)?;
    super::passkeys::answer_begun(
        state,
        db::passkeys::Ceremony::SecondFactor,
        Some((user.id, user.session_id)),
        begun,
    )
    .await
}

/// `verify_mfa` with a passkey assertion: the ceremony is consumed (403 `invalid_secret` if
/// it is not this session's live one, nothing counted), the attempt counted, the assertion
/// checked (a refusal is a wrong code), and the passkey's counter advanced as the step-up's
/// spend.
async fn verify_passkey(
    state: &AppState,
    call: &Call,
    user: CurrentUser,
    ceremony_id: Uuid,
    credential: serde_json::Value,
) -> Result<Response, ApiError> {
    let credential: webauthn_rs::prelude::PublicKeyCredential = passkeys::credential(credential)?;
    limits::check(state, limits::Action::Mfa, call, None, Some(user.id)).await?;
    let Some(ceremony) = db::passkeys::consume(
        &state.db,
        ceremony_id,
        db::passkeys::Ceremony::SecondFactor,
        Some((user.id, user.session_id)),
    )
    .await?
    else {
        return Err(ApiError::InvalidCeremony(
            "no such live second-factor ceremony of this session",
        ));
    };
    count_attempt(state, call, &user).await?;
    let result = match state.passkeys.finish_second_factor(&credential, ceremony) {
        Ok(result) => result,
        Err(refused) => {
            tracing::info!(user_id = %user.id, reason = %refused.0, "passkey second factor refused");
            return Err(failed(state, call, &user, "passkey_refused").await);
        }
    };
    let stored = db::passkeys::stored_of(&state.db, user.id).await?;
    let mut found = None;
    for (id, json) in &stored {
        let mut passkey = passkeys::parse_stored(json)?;
        if let Some(changed) = passkey.update_credential(&result) {
            let updated = match changed {
                true => Some(
                    serde_json::to_string(&passkey).map_err(|e| ApiError::Internal(e.into()))?,
                ),
                false => None,
            };
            found = Some((*id, updated));
        }
    }
    // Removed between the options and now.
    let Some((passkey_id, updated_json)) = found else {
        return Err(failed(state, call, &user, "passkey_removed").await);
    };
    let proof = Proof::Passkey {
        passkey_id,
        sign_count: i64::from(result.counter()),
        updated_json,
        backed_up: result.backup_state(),
        backup_eligible: result.backup_eligible(),
    };
    step_up(state, call, user, proof).await
}

/// Why a matching proof could not be spent, for the event.
fn spent_reason(proof: &Proof) -> &'static str {
    match proof {
        Proof::Totp { .. } => "code_already_used",
        Proof::Recovery { .. } => "wrong_or_used_recovery_code",
        Proof::Passkey { .. } => "passkey_counter_not_advanced",
    }
}

/// Records a wrong code (`db::mfa::fail`) and answers it: 403 `invalid_mfa_code`, or 401
/// when that was the session's last attempt (it has ended: log in again). A failure to
/// record is answered as such.
async fn failed(
    state: &AppState,
    call: &Call,
    user: &CurrentUser,
    reason: &'static str,
) -> ApiError {
    match db::mfa::fail(
        &state.db,
        call,
        user.id,
        user.session_id,
        reason,
        Uuid::new_v4(),
    )
    .await
    {
        Ok(outcome) => {
            if outcome.locked {
                tracing::warn!(user_id = %user.id, "second factor locked after repeated wrong codes");
            }
            match outcome.session_ended {
                true => ApiError::InvalidToken("too many wrong second-factor codes: session ended"),
                false => ApiError::InvalidMfaCode(reason),
            }
        }
        Err(e) => e,
    }
}
