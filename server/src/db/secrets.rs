//! One-time secrets (`one_time_secrets`, see `sql/0010_email.sql`): issuing them with their
//! email, checking and consuming them, and what a reset or a verification changes.
//!
//! Every rule that must hold under concurrency is decided by the database:
//!
//! - **Issue** ([`issue`]): under an advisory lock on the address, the account's earlier
//!   live secrets of the purpose are consumed and the new one is inserted with its outbox
//!   row, its event and the sender's wake-up, in one statement. An unknown, inactive (or,
//!   for verification, already verified) address, or one over its per-recipient limit,
//!   runs the same transaction and changes nothing: the request's timing does not depend
//!   on which.
//! - **Codes** ([`count_code_attempt`]): the attempt is counted by an `UPDATE` that commits
//!   before the code is compared, and only while the secret is under its attempt limit.
//! - **Consume** ([`reset_password`], [`verify_by_token`], [`verify_by_id`]): one
//!   conditional `UPDATE … WHERE consumed_at IS NULL AND expires_at > now()`, in the
//!   statement that makes the change: of two concurrent uses exactly one changes anything.

use super::typed::Typed as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sessions::LOCK_USER;
use super::{Database, events, outbox};
use crate::call::Call;
use crate::errors::ApiError;
use crate::mail::Kind;
use crate::mail::secrets::{Issued, MAX_CODE_ATTEMPTS};

/// The advisory lock class of secret issues (the other argument is the address's hash):
/// distinct from the login throttle's (7).
pub(super) const ISSUE_LOCK_CLASS: i32 = 10;

/// How long a notice may wait in the outbox before it is no longer worth sending.
pub const NOTICE_TTL_HOURS: f64 = 72.0;

/// The purpose a kind of email's secret serves (`one_time_secrets.purpose`), and the event
/// its issue records.
fn purpose(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::VerifyEmail => ("verify_email", "email_verification_sent"),
        Kind::PasswordReset => ("password_reset", "password_reset_requested"),
        // Email changes issue their secrets in `db::email_change`, not here; notices
        // carry none.
        Kind::PasswordChanged
        | Kind::AccountDeleted
        | Kind::EmailChangeConfirm
        | Kind::EmailChangeNotice
        | Kind::EmailChanged
        | Kind::MfaEnrolled
        | Kind::MfaRemoved
        | Kind::MfaLocked
        | Kind::RecoveryCodeUsed
        | Kind::PasskeyAdded
        | Kind::PasskeyRemoved
        | Kind::ApiKeyCreated => unreachable!("not a secret issued here"),
    }
}

/// What issuing a secret needs: the kind of email, the new secret, its lifetime, and the
/// per-recipient limit (emails of this kind per hour).
pub struct Issue<'a> {
    pub kind: Kind,
    pub secret: &'a Issued,
    pub ttl: std::time::Duration,
    pub per_hour: u32,
    /// The admin who asked for it (`admin_send_password_reset`), for the event.
    pub actor: Option<Uuid>,
}

/// Issues a secret for the active account of `email` (normalised) and queues its email;
/// false when nothing was issued (no such active account, already verified, or over the
/// per-recipient limit) — which the caller must not reveal.
pub async fn issue(
    db: &Database,
    email: &str,
    issue: Issue<'_>,
    call: &Call,
) -> Result<bool, ApiError> {
    let (purpose, event) = purpose(issue.kind);
    db.run(async |client| {
        let tx = client.begin().await?;
        // The unknown-address path is read-only and commits without waiting for a WAL
        // flush; the known one writes. Without this, the flush is a timing oracle of which
        // addresses have accounts. Losing a just-queued email in a crash is acceptable: the
        // answer promised nothing.
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        tx.exec(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&ISSUE_LOCK_CLASS, &email],
        )
        .await?;
        // After the lock, this statement's snapshot holds every earlier issue for the
        // address: the secrets it consumes are all the live ones.
        let sql = format!(
            "WITH u AS (
                 SELECT id, email FROM users
                  WHERE lower(email) = $1 AND is_active
                    AND ($2 <> 'verify_email' OR email_verified_at IS NULL)
                    AND (SELECT count(*) FROM email_outbox o
                          WHERE o.user_id = users.id AND o.kind = $2
                            AND o.created_at > now() - interval '1 hour') < $3
             ), earlier AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE user_id IN (SELECT id FROM u) AND purpose = $2 AND consumed_at IS NULL
             ), s AS (
                 INSERT INTO one_time_secrets (id, user_id, purpose, token_hash, code_hash, expires_at)
                 SELECT $4, id, $2, $5, $6, now() + make_interval(secs => $7) FROM u
                 RETURNING user_id, expires_at
             ), o AS (
                 {queue} SELECT $8, $2, u.id, u.email, $9, s.expires_at FROM u JOIN s ON s.user_id = u.id
                 RETURNING id
             ), e AS (
                 {event} SELECT $10, NULL, id, NULL, $11, $12, $13, $14 FROM u
             ), n AS (
                 {notify} FROM o
             )
             SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM n)",
            queue = outbox::QUEUE,
            event = events::INSERT_WITH_ACTOR,
            notify = outbox::NOTIFY,
        );
        let row = tx
            .one(
                &sql,
                &[
                    &email,
                    &purpose,
                    &i64::from(issue.per_hour),
                    &issue.secret.secret_id,
                    &issue.secret.token_hash.as_slice(),
                    &issue.secret.code_hash.as_slice(),
                    &issue.ttl.as_secs_f64(),
                    &issue.secret.outbox_id,
                    &issue.secret.seed.as_slice(),
                    &event,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                    &issue.actor,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(row.get::<_, i64>(0) == 1)
    })
    .await
}

/// A live password-reset secret, found by its token.
pub struct ResetTarget {
    pub secret_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub expires_at: DateTime<Utc>,
}

/// The live reset secret of `token_hash`, of an active account; consumes nothing.
pub async fn find_reset(db: &Database, token_hash: &[u8]) -> Result<Option<ResetTarget>, ApiError> {
    db.run(async |client| {
        // No attempt limit here: wrong codes (which anyone knowing the address can type)
        // spend the code, never the 256-bit link.
        let row = client
            .opt(
                "SELECT s.id, s.user_id, u.email, s.expires_at
                   FROM one_time_secrets s JOIN users u ON u.id = s.user_id
                  WHERE s.token_hash = $1 AND s.purpose = 'password_reset'
                    AND s.consumed_at IS NULL AND s.expires_at > now() AND u.is_active",
                &[&token_hash],
            )
            .await?;
        Ok(row.map(|r| ResetTarget {
            secret_id: r.get(0),
            user_id: r.get(1),
            email: r.get(2),
            expires_at: r.get(3),
        }))
    })
    .await
}

/// The live secret of `kind` of the active account of `email` that a typed code is being
/// tried against, after counting the attempt (committed before the caller compares).
pub struct CodeAttempt {
    pub secret_id: Uuid,
    pub user_id: Uuid,
    pub code_hash: Vec<u8>,
}

/// Counts one attempt at a code against the account's live secret of `kind`, if it has one
/// under its attempt limit, and returns what to compare the code with.
pub async fn count_code_attempt(
    db: &Database,
    email: &str,
    kind: Kind,
) -> Result<Option<CodeAttempt>, ApiError> {
    let (purpose, _) = purpose(kind);
    db.run(async |client| {
        // Asynchronous commit, as in `issue`: an address with a live secret must not cost a
        // WAL flush more than one without (the attempt is still counted before comparing;
        // a crash can at worst forget the last attempts).
        let tx = client.begin().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        let client = &tx;
        let row = client
            .opt(
                "UPDATE one_time_secrets s SET attempts = attempts + 1
                   FROM users u
                  WHERE u.id = s.user_id AND lower(u.email) = $1 AND u.is_active
                    AND s.purpose = $2 AND s.consumed_at IS NULL AND s.expires_at > now()
                    AND s.attempts < $3
                RETURNING s.id, s.user_id, s.code_hash",
                &[&email, &purpose, &MAX_CODE_ATTEMPTS],
            )
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| CodeAttempt {
            secret_id: r.get(0),
            user_id: r.get(1),
            code_hash: r.get(2),
        }))
    })
    .await
}

/// Consumes the reset secret `secret_id` and, in the same transaction, sets the new
/// password hash and ends every session of the account, consumes its other live secrets,
/// clears the login throttle of its address, marks the address verified, queues the
/// "password changed" notice and records `password_reset_completed`; with
/// `revoke_api_keys`, revokes the account's API keys. False when the secret
/// was no longer live (used, expired, spent) or the account inactive: nothing changed.
pub async fn reset_password(
    db: &Database,
    secret_id: Uuid,
    user_id: Uuid,
    new_hash: &str,
    notice_id: Uuid,
    revoke_api_keys: bool,
    call: &Call,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        // Serialised with logins' session starts and password changes of the user: a login
        // that verified the old password cannot open a session after this commits (its
        // credential version is behind), and every session this ends stays ended.
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "WITH c AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE id = $1 AND user_id = $2 AND purpose = 'password_reset'
                    AND consumed_at IS NULL AND expires_at > now()
                    AND EXISTS (SELECT 1 FROM users WHERE id = $2 AND is_active)
                 RETURNING user_id
             ), u AS (
                 UPDATE users
                    SET password_hash = $3, credential_version = credential_version + 1,
                        email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
                  WHERE id IN (SELECT user_id FROM c)
                 RETURNING id, email
             ), ended AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'password_reset'
                  WHERE user_id IN (SELECT id FROM u) AND ended_at IS NULL
             ), others AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE user_id IN (SELECT id FROM u) AND consumed_at IS NULL AND id <> $1
             ), passkeys AS (
                 -- Account recovery: a passkey someone else added must not outlive it.
                 DELETE FROM passkeys WHERE user_id IN (SELECT id FROM u)
             ), throttle AS (
                 DELETE FROM login_throttle WHERE email IN (SELECT email FROM u)
             ), o AS (
                 {queue} SELECT $4, 'password_changed', id, email, NULL,
                                now() + make_interval(hours => {ttl}) FROM u
                 RETURNING id
             ), e AS (
                 {event} SELECT 'password_reset_completed', NULL, id, NULL, $5, $6, $7 FROM u
             ), n AS (
                 {notify} FROM o
             )
             SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)",
            queue = outbox::QUEUE,
            event = events::INSERT,
            notify = outbox::NOTIFY,
            ttl = NOTICE_TTL_HOURS as i64,
        );
        let row = tx
            .one(
                &sql,
                &[
                    &secret_id,
                    &user_id,
                    &new_hash,
                    &notice_id,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await?;
        let reset = row.get::<_, i64>(0) == 1;
        // `API_KEYS_REVOKE_ON_PASSWORD_RESET`: a reset is account recovery, and a key made
        // by whoever held the account before must not outlive it.
        if reset && revoke_api_keys {
            tx.exec(super::api_keys::REVOKE_ALL, &[&user_id, &"password_reset"])
                .await?;
        }
        tx.commit().await?;
        Ok(reset)
    })
    .await
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The address is now verified.
    Verified,
    /// The secret was no longer live, but the address it was sent to is verified: a
    /// second click on the link.
    AlreadyVerified,
    /// Unknown, expired or spent, and the address not verified.
    Invalid,
}

/// Verifies the address of the verification secret whose token hash is `token_hash`.
pub async fn verify_by_token(
    db: &Database,
    token_hash: &[u8],
    call: &Call,
) -> Result<Verification, ApiError> {
    verify(db, "token_hash = $1", &token_hash, call).await
}

/// Verifies the address of the verification secret `secret_id` (its code matched).
pub async fn verify_by_id(
    db: &Database,
    secret_id: Uuid,
    call: &Call,
) -> Result<Verification, ApiError> {
    verify(db, "id = $1", &secret_id, call).await
}

async fn verify(
    db: &Database,
    by: &'static str,
    key: &dyn super::typed::Param,
    call: &Call,
) -> Result<Verification, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH t AS (
                 SELECT id, user_id, consumed_at IS NULL AND expires_at > now() AS live
                   FROM one_time_secrets WHERE {by} AND purpose = 'verify_email'
             ), c AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE id IN (SELECT id FROM t WHERE live) AND consumed_at IS NULL
                 RETURNING user_id
             ), u AS (
                 UPDATE users SET email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
                  WHERE id IN (SELECT user_id FROM c) AND is_active
                 RETURNING id
             ), e AS (
                 {event} SELECT 'email_verified', NULL, id, NULL, $2, $3, $4 FROM u
             )
             SELECT (SELECT count(*) FROM u),
                    EXISTS (SELECT 1 FROM t JOIN users ON users.id = t.user_id
                             WHERE users.email_verified_at IS NOT NULL AND users.is_active),
                    (SELECT user_id FROM t)",
            event = events::INSERT,
        );
        let row = client.bounded(client
            .one(
                &sql,
                &[key, &call.ip(), &call.user_agent, &call.request_id()],
            ))
            .await?;
        Ok(match (row.get::<_, i64>(0), row.get::<_, bool>(1)) {
            (1, _) => Verification::Verified,
            (_, true) => Verification::AlreadyVerified,
            _ => match row.get::<_, Option<uuid::Uuid>>(2) {
                // The secret exists but a concurrent use consumed it first: that statement's
                // snapshot predates the winner's commit. A new statement sees it.
                Some(user_id) => {
                    let verified = client
                        .one(
                            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1
                                              AND email_verified_at IS NOT NULL AND is_active)",
                            &[&user_id],
                        )
                        .await?;
                    match verified.get::<_, bool>(0) {
                        true => Verification::AlreadyVerified,
                        false => Verification::Invalid,
                    }
                }
                None => Verification::Invalid,
            },
        })
    })
    .await
}
