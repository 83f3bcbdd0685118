//! Pending email changes (`email_changes`, see `sql/0012_email_change.sql`): asking,
//! confirming, cancelling, and pruning what expired.
//!
//! A pending change is its confirmation secret (`one_time_secrets`, purpose
//! `email_change`), its cancel secret (`email_change_cancel`) and one `email_changes` row
//! keyed by the confirmation secret's id holding the new address. It is pending exactly
//! while the confirmation secret is live, so whatever consumes a user's live secrets ends
//! it; the row (the new address) goes with it (`email_changes_erase_consumed`).
//!
//! Each operation is one transaction that first locks the user's row
//! ([`super::sessions::LOCK_USER`]), so it is serialised with logins, password changes and
//! the user's other session changes, and then decides and acts in one statement:
//!
//! - [`request`] replaces any earlier pending change, issues both secrets, stores the new
//!   address, queues the confirmation (only if no account has the address, and the
//!   address is under its per-recipient limit) and the notice to the current address.
//! - [`confirm`] consumes the confirmation secret with one conditional `UPDATE`; in the
//!   same statement the address changes (the unique index on `lower(email)` decides a race
//!   with a signup or another confirmation: [`Confirmed::Taken`]), counts as verified, the
//!   credential version moves (a login that verified the old address cannot open a
//!   session after this), every other session ends, every other secret dies, and both
//!   addresses are notified.
//! - [`cancel`] consumes the cancel secret, kills the change and ends every session.

use super::typed::Typed as _;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::sessions::LOCK_USER;
use super::{Database, events, outbox};
use crate::call::Call;
use crate::errors::ApiError;
use crate::mail::secrets::Issued;

/// The advisory lock class of a new address being asked for (the other argument is the
/// address's hash): distinct from the login throttle's (7) and secret issues' (10).
const NEW_ADDRESS_LOCK_CLASS: i32 = 12;

/// What asking for a change needs.
pub struct Request<'a> {
    pub user_id: Uuid,
    /// The session that asks: the one a confirmation keeps.
    pub session_id: Uuid,
    /// Normalised (`Email::parse`).
    pub new_email: &'a str,
    /// The confirmation secret, emailed to the new address.
    pub confirm: &'a Issued,
    /// The cancel secret, emailed to the current address.
    pub cancel: &'a Issued,
    pub ttl: std::time::Duration,
    /// The per-recipient limit (emails of one kind per hour).
    pub per_hour: u32,
}

/// What a request did. Only [`Requested::CallerEnded`] may be told to the client: the
/// rest all answer the same 202.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Pending; the confirmation is queued to the new address.
    Sent,
    /// Pending, but nothing is sent to the new address: an account has it (or it is over
    /// its limit). The notice to the current address is queued.
    NotSentToNewAddress,
    /// The account is over its per-recipient limit: nothing was issued or queued.
    OverLimit,
    /// The caller's session (or account) ended before the request could commit.
    CallerEnded,
}

/// Replaces the user's pending change (if any) by a new one; see the module's summary.
pub async fn request(db: &Database, r: Request<'_>, call: &Call) -> Result<Requested, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&r.user_id]).await?;
        // Requests of other accounts for the same new address are serialised here, so the
        // count of its confirmations in the last hour holds them all (taken after the user's
        // row, and by nothing else: no deadlock).
        tx.exec(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&NEW_ADDRESS_LOCK_CLASS, &r.new_email],
        )
        .await?;
        let sql = format!(
            "WITH u AS (
                 SELECT id, email FROM users
                  WHERE id = $1 AND is_active
                    AND EXISTS (SELECT 1 FROM sessions
                                 WHERE id = $2 AND user_id = $1 AND ended_at IS NULL
                                   AND expires_at > now())
             ), allowed AS (
                 SELECT id, email FROM u
                  WHERE (SELECT count(*) FROM email_outbox o
                          WHERE o.user_id = u.id AND o.kind = 'email_change_notice'
                            AND o.created_at > now() - interval '1 hour') < $3
             ), earlier AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE user_id IN (SELECT id FROM allowed) AND consumed_at IS NULL
                    AND purpose IN ('email_change', 'email_change_cancel')
             ), erased AS (
                 DELETE FROM email_changes WHERE user_id IN (SELECT id FROM allowed)
             ), s AS (
                 INSERT INTO one_time_secrets (id, user_id, purpose, token_hash, code_hash, expires_at)
                 SELECT v.id, allowed.id, v.purpose, v.token_hash, v.code_hash,
                        now() + make_interval(secs => $4)
                   FROM allowed,
                        (VALUES ($5::uuid, 'email_change', $6::bytea, $7::bytea),
                                ($8::uuid, 'email_change_cancel', $9::bytea, $10::bytea))
                          AS v(id, purpose, token_hash, code_hash)
                 RETURNING id, expires_at
             ), c AS (
                 INSERT INTO email_changes (secret_id, cancel_secret_id, user_id, new_email, session_id)
                 SELECT $5, $8, id, $11, $2 FROM allowed
             ), free AS (
                 SELECT 1 AS ok
                  WHERE NOT EXISTS (SELECT 1 FROM users WHERE lower(email) = $11)
                    AND (SELECT count(*) FROM email_outbox o
                          WHERE lower(o.recipient) = $11 AND o.kind = 'email_change_confirm'
                            AND o.created_at > now() - interval '1 hour') < $3
             ), o AS (
                 {queue}
                 SELECT $12::uuid, 'email_change_confirm', id, $11, $13::bytea, now() + make_interval(secs => $4)
                   FROM allowed WHERE EXISTS (SELECT 1 FROM free)
                 UNION ALL
                 SELECT $14::uuid, 'email_change_notice', id, email, $15::bytea, now() + make_interval(secs => $4)
                   FROM allowed
                 RETURNING kind
             ), e AS (
                 {event} SELECT 'email_change_requested', NULL, id, $2, $16, $17, $18 FROM allowed
             ), n AS (
                 {notify} FROM o
             )
             SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM allowed),
                    (SELECT count(*) FROM o WHERE kind = 'email_change_confirm'),
                    (SELECT count(*) FROM n), (SELECT count(*) FROM s)",
            queue = outbox::QUEUE,
            event = events::INSERT,
            notify = outbox::NOTIFY,
        );
        let row = tx
            .one(
                &sql,
                &[
                    &r.user_id,
                    &r.session_id,
                    &i64::from(r.per_hour),
                    &r.ttl.as_secs_f64(),
                    &r.confirm.secret_id,
                    &r.confirm.token_hash.as_slice(),
                    &r.confirm.code_hash.as_slice(),
                    &r.cancel.secret_id,
                    &r.cancel.token_hash.as_slice(),
                    &r.cancel.code_hash.as_slice(),
                    &r.new_email,
                    &r.confirm.outbox_id,
                    &r.confirm.seed.as_slice(),
                    &r.cancel.outbox_id,
                    &r.cancel.seed.as_slice(),
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(
            match (row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, i64>(2)) {
                (false, _, _) => Requested::CallerEnded,
                (true, false, _) => Requested::OverLimit,
                (true, true, 0) => Requested::NotSentToNewAddress,
                (true, true, _) => Requested::Sent,
            },
        )
    })
    .await
}

/// What a confirmation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// The address is now `email`; `other_sessions_ended` sessions ended.
    Changed {
        user_id: Uuid,
        email: String,
        other_sessions_ended: i64,
    },
    /// Another account has the new address: nothing changed, the secret is still live.
    Taken { user_id: Uuid },
    /// No live confirmation secret has this token; `user_id` when it names one that is
    /// no longer live (used, replaced, expired).
    Invalid { user_id: Option<Uuid> },
}

/// The owner of the secret of `purpose` whose token hash is `token_hash`, live or not.
async fn owner_of(
    tx: &deadpool_postgres::Transaction<'_>,
    token_hash: &[u8],
    purpose: &str,
) -> Result<Option<Uuid>, ApiError> {
    Ok(tx
        .opt(
            "SELECT user_id FROM one_time_secrets WHERE token_hash = $1 AND purpose = $2",
            &[&token_hash, &purpose],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Confirms the pending change whose confirmation token hashes to `token_hash`; see the
/// module's summary. `notice_ids` are the outbox ids of the notices to the old and the
/// new address.
pub async fn confirm(
    db: &Database,
    token_hash: &[u8],
    notice_ids: (Uuid, Uuid),
    call: &Call,
) -> Result<Confirmed, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        let Some(user_id) = owner_of(&tx, token_hash, "email_change").await? else {
            return Ok(Confirmed::Invalid { user_id: None });
        };
        // After the lock, the statement's snapshot holds every committed change of the
        // user: a confirmation that committed first has consumed the secret.
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "WITH c AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE token_hash = $1 AND purpose = 'email_change' AND user_id = $2
                    AND consumed_at IS NULL AND expires_at > now()
                    AND EXISTS (SELECT 1 FROM users WHERE id = $2 AND is_active)
                 RETURNING id, user_id
             ), p AS (
                 DELETE FROM email_changes WHERE secret_id IN (SELECT id FROM c)
                 RETURNING user_id, new_email, session_id
             ), old AS (
                 SELECT users.id, users.email FROM users JOIN p ON p.user_id = users.id
             ), u AS (
                 UPDATE users
                    SET email = p.new_email, email_verified_at = now(),
                        credential_version = credential_version + 1, updated_at = now()
                   FROM p
                  WHERE users.id = p.user_id
                 RETURNING users.id, users.email, users.credential_version, p.session_id
             ), kept AS (
                 UPDATE sessions SET credential_version = u.credential_version
                   FROM u
                  WHERE sessions.id = u.session_id AND sessions.user_id = u.id
                    AND sessions.ended_at IS NULL
             ), ended AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'email_changed'
                  WHERE user_id IN (SELECT id FROM u) AND ended_at IS NULL
                    AND id IS DISTINCT FROM (SELECT session_id FROM u)
                 RETURNING id
             ), others AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE user_id IN (SELECT id FROM u) AND consumed_at IS NULL
                    AND id NOT IN (SELECT id FROM c)
             ), o AS (
                 {queue}
                 SELECT $3::uuid, 'email_changed', id, email, NULL::bytea,
                        now() + make_interval(hours => {ttl}) FROM old
                 UNION ALL
                 SELECT $4::uuid, 'email_changed', id, email, NULL,
                        now() + make_interval(hours => {ttl}) FROM u
                 RETURNING id
             ), e AS (
                 {event} SELECT 'email_change_confirmed', NULL, id, session_id, $5, $6, $7 FROM u
             ), n AS (
                 {notify} FROM o
             )
             SELECT (SELECT email FROM u), (SELECT count(*) FROM ended), (SELECT count(*) FROM n)",
            queue = outbox::QUEUE,
            event = events::INSERT,
            notify = outbox::NOTIFY,
            ttl = super::secrets::NOTICE_TTL_HOURS as i64,
        );
        let row = match tx
            .one(
                &sql,
                &[
                    &token_hash,
                    &user_id,
                    &notice_ids.0,
                    &notice_ids.1,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await
        {
            Ok(row) => row,
            // The unique index on lower(email): another account has the address now.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Ok(Confirmed::Taken { user_id });
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        Ok(match row.get::<_, Option<String>>(0) {
            Some(email) => Confirmed::Changed {
                user_id,
                email,
                other_sessions_ended: row.get(1),
            },
            None => Confirmed::Invalid {
                user_id: Some(user_id),
            },
        })
    })
    .await
}

/// What a cancellation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The change is dead and `sessions_ended` sessions ended.
    Cancelled { user_id: Uuid, sessions_ended: i64 },
    /// No live cancel secret of a pending change has this token.
    Invalid { user_id: Option<Uuid> },
}

/// Cancels the pending change whose cancel token hashes to `token_hash` and ends every
/// session of the account, with the `email_change_cancelled` event.
pub async fn cancel(db: &Database, token_hash: &[u8], call: &Call) -> Result<Cancelled, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        let Some(user_id) = owner_of(&tx, token_hash, "email_change_cancel").await? else {
            return Ok(Cancelled::Invalid { user_id: None });
        };
        tx.exec(LOCK_USER, &[&user_id]).await?;
        // Only while the change is pending: its confirmation secret is live too.
        let sql = format!(
            "WITH c AS (
                 UPDATE one_time_secrets t SET consumed_at = now()
                  WHERE t.token_hash = $1 AND t.purpose = 'email_change_cancel' AND t.user_id = $2
                    AND t.consumed_at IS NULL AND t.expires_at > now()
                    AND EXISTS (SELECT 1 FROM users WHERE id = $2 AND is_active)
                    AND EXISTS (SELECT 1 FROM email_changes ec
                                  JOIN one_time_secrets s ON s.id = ec.secret_id
                                 WHERE ec.cancel_secret_id = t.id
                                   AND s.consumed_at IS NULL AND s.expires_at > now())
                 RETURNING t.id, t.user_id
             ), p AS (
                 DELETE FROM email_changes WHERE cancel_secret_id IN (SELECT id FROM c)
                 RETURNING secret_id
             ), killed AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE id IN (SELECT secret_id FROM p) AND consumed_at IS NULL
             ), u AS (
                 UPDATE users SET credential_version = credential_version + 1, updated_at = now()
                  WHERE id IN (SELECT user_id FROM c)
                 RETURNING id
             ), ended AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'email_change_cancelled'
                  WHERE user_id IN (SELECT id FROM u) AND ended_at IS NULL
                 RETURNING id
             ), e AS (
                 {event} SELECT 'email_change_cancelled', NULL, id, NULL, $3, $4, $5 FROM u
             )
             SELECT EXISTS (SELECT 1 FROM u), (SELECT count(*) FROM ended)",
            event = events::INSERT,
        );
        let row = tx
            .one(
                &sql,
                &[
                    &token_hash,
                    &user_id,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(match row.get::<_, bool>(0) {
            true => Cancelled::Cancelled {
                user_id,
                sessions_ended: row.get(1),
            },
            false => Cancelled::Invalid {
                user_id: Some(user_id),
            },
        })
    })
    .await
}

/// Erases the new address of every change that is no longer pending: its confirmation
/// secret expired (consumption erases it at once). Returns how many were erased.
pub async fn prune(db: &Database) -> Result<u64, ApiError> {
    db.run(async |client| {
        Ok(client
            .exec(
                "DELETE FROM email_changes ec USING one_time_secrets s
                  WHERE s.id = ec.secret_id
                    AND (s.consumed_at IS NOT NULL OR s.expires_at <= now())",
                &[],
            )
            .await?)
    })
    .await
}
