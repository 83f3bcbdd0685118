//! Deleting an account, and purging deleted accounts (see `sql/0013_account_deletion.sql`
//! and `docs/administration.md#deleting-an-account`).
//!
//! [`delete`] is the one way an account is deleted — by its owner (`POST /auth/me/delete`,
//! after the password was checked) or by an admin — and does everything in one transaction
//! that first locks the user's row, so it is serialised with logins, password changes,
//! resets and every other change of the account: the row is scrubbed (inactive, the address
//! rewritten to a placeholder that frees it, the password hash destroyed, no longer
//! verified, the credential version bumped so that a login that verified the old password
//! cannot open a session afterwards), every session ends, every live one-time secret is
//! consumed (pending email changes die with theirs), the account's unsent emails are
//! abandoned with their seeds erased, its device tokens and the login throttle of its
//! address are deleted, the final notice is queued to the old address, and the
//! `account_deleted` event is written. Of two concurrent deletions exactly one does it.
//!
//! [`purge`] deletes the rows of accounts deleted more than `ACCOUNT_PURGE_DAYS` ago whose
//! final notice has left the outbox, a batch per statement: their events are anonymised,
//! their emails deleted, and the row goes (sessions, refresh tokens and one-time secrets by
//! cascade). `FOR UPDATE SKIP LOCKED` lets instances purging together split the work, and a
//! row can be deleted only once.

use super::typed::Typed as _;
use std::time::Duration;

use uuid::Uuid;

use super::{Database, events, outbox};
use crate::call::Call;
use crate::errors::ApiError;

/// The advisory lock class of the login throttle's per-address lock (`login_charge` in
/// `sql/0007_login_throttle_v2.sql`), taken before its rows are deleted so that the deletion
/// cannot deadlock with a concurrent login attempt's row locks.
const THROTTLE_LOCK_CLASS: i32 = 7;

/// Accounts purged per statement: small enough to hold few locks for long, and a backlog
/// is worked through in one maintenance pass.
pub const PURGE_BATCH: i64 = 100;

/// Who is deleting the account.
#[derive(Debug, Clone, Copy)]
pub enum DeletedBy {
    /// The owner, through their session `session_id`, having just verified the password of
    /// credential version `verified`. The deletion commits only while that session is live
    /// and that version is still the account's.
    Owner { session_id: Uuid, verified: i64 },
    /// An admin (`DELETE /admin/users/{user_id}`) through their session `session_id`: no
    /// session or password of the account is involved, and the admin is re-checked at
    /// commit as every admin change is (`db::admin`).
    Admin { actor_id: Uuid, session_id: Uuid },
}

impl DeletedBy {
    /// The `account_deleted` event's reason.
    fn reason(self) -> &'static str {
        match self {
            DeletedBy::Owner { .. } => "self",
            DeletedBy::Admin { .. } => "admin",
        }
    }

    fn session_id(self) -> Option<Uuid> {
        match self {
            DeletedBy::Owner { session_id, .. } => Some(session_id),
            DeletedBy::Admin { .. } => None,
        }
    }

    fn actor_id(self) -> Option<Uuid> {
        match self {
            DeletedBy::Owner { .. } => None,
            DeletedBy::Admin { actor_id, .. } => Some(actor_id),
        }
    }
}

/// What a deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Deleted now.
    Deleted {
        sessions_ended: u64,
        secrets_consumed: u64,
        emails_abandoned: u64,
    },
    /// Deleted already (earlier, or by a concurrent deletion that committed first); nothing
    /// changed.
    AlreadyDeleted,
    /// No such account (never existed, or purged).
    NotFound,
    /// [`DeletedBy::Owner`] only: the owner's session ended before the deletion could
    /// commit (logged out, revoked, a password change elsewhere); nothing changed.
    CallerEnded,
    /// [`DeletedBy::Owner`] only: the password changed after the one the owner proved was
    /// read; nothing changed.
    Conflict,
}

/// Deletes the account `user_id`; see the module documentation.
pub async fn delete(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    by: DeletedBy,
) -> Result<Deletion, ApiError> {
    let notice_id = Uuid::new_v4();
    db.run(async |client| {
        let tx = client.begin().await?;
        if let DeletedBy::Admin {
            actor_id,
            session_id,
        } = by
        {
            super::admin::begin(
                &tx,
                super::admin::Actor::Admin {
                    id: actor_id,
                    session_id,
                },
            )
            .await?;
        }
        // The lock every change of the account takes first (`sessions::LOCK_USER`), with
        // what the decision needs.
        let Some(row) = tx
            .opt(
                "SELECT email, deleted_at IS NOT NULL, credential_version
                   FROM users WHERE id = $1 FOR NO KEY UPDATE",
                &[&user_id],
            )
            .await?
        else {
            return Ok(Deletion::NotFound);
        };
        let (email, deleted, version): (String, bool, i64) = (row.get(0), row.get(1), row.get(2));
        if deleted {
            return Ok(Deletion::AlreadyDeleted);
        }
        if let DeletedBy::Owner {
            session_id,
            verified,
        } = by
        {
            let live = tx
                .opt(
                    "SELECT 1 FROM sessions
                      WHERE id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()",
                    &[&session_id, &user_id],
                )
                .await?
                .is_some();
            if !live {
                return Ok(Deletion::CallerEnded);
            }
            if version != verified {
                return Ok(Deletion::Conflict);
            }
        }
        // An email issued for the address (forgot password, resend) holds this lock from
        // before it reads the account to its commit: one that started first is committed
        // now, and its secret and message are among those consumed and abandoned below;
        // one that starts later finds no account at the old address.
        tx.exec(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&super::secrets::ISSUE_LOCK_CLASS, &email],
        )
        .await?;
        tx.exec(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&THROTTLE_LOCK_CLASS, &email],
        )
        .await?;
        // One snapshot for every part: the notice queued here is not among the messages
        // abandoned here.
        let sql = format!(
            "WITH u AS (
                 UPDATE users
                    SET is_active = false, deleted_at = now(),
                        email = 'deleted+' || id::text || '@invalid', password_hash = '!',
                        email_verified_at = NULL, credential_version = credential_version + 1,
                        updated_at = now()
                  WHERE id = $1
                 RETURNING id
             ), ended AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'account_deleted'
                  WHERE user_id = $1 AND ended_at IS NULL
                 RETURNING id
             ), secrets AS (
                 UPDATE one_time_secrets SET consumed_at = now()
                  WHERE user_id = $1 AND consumed_at IS NULL
                 RETURNING id
             ), mail AS (
                 UPDATE email_outbox
                    SET status = 'abandoned', secret_seed = NULL, lease_until = NULL,
                        last_error = 'account deleted'
                  WHERE user_id = $1 AND status IN ('queued', 'sending')
                 RETURNING id
             ), devices AS (
                 DELETE FROM login_devices WHERE user_id = $1
             ), throttle AS (
                 DELETE FROM login_throttle WHERE email = $2
             ), roles AS (
                 DELETE FROM user_roles WHERE user_id = $1
             ), factors AS (
                 DELETE FROM mfa_factors WHERE user_id = $1
             ), recovery AS (
                 DELETE FROM mfa_recovery_codes WHERE user_id = $1
             ), passkeys AS (
                 DELETE FROM passkeys WHERE user_id = $1
             ), ceremonies AS (
                 DELETE FROM passkey_ceremonies WHERE user_id = $1
             ), keys AS (
                 -- Gone with the account: nothing of it is kept but the anonymised events.
                 DELETE FROM api_keys WHERE user_id = $1
             ), o AS (
                 {queue} SELECT $3, 'account_deleted', id, $2, NULL,
                                now() + make_interval(hours => {ttl}) FROM u
                 RETURNING id
             ), e AS (
                 {event} SELECT 'account_deleted', $4, id, $5, $6, $7, $8, $9 FROM u
             ), n AS (
                 {notify} FROM o
             )
             SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM secrets),
                    (SELECT count(*) FROM mail), (SELECT count(*) FROM n)",
            queue = outbox::QUEUE,
            event = events::INSERT_WITH_ACTOR,
            notify = outbox::NOTIFY,
            ttl = super::secrets::NOTICE_TTL_HOURS as i64,
        );
        let row = tx
            .one(
                &sql,
                &[
                    &user_id,
                    &email,
                    &notice_id,
                    &by.reason(),
                    &by.session_id(),
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                    &by.actor_id(),
                ],
            )
            .await?;
        tx.commit().await?;
        let count = |i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(Deletion::Deleted {
            sessions_ended: count(0),
            secrets_consumed: count(1),
            emails_abandoned: count(2),
        })
    })
    .await
}

/// Purges accounts deleted more than `after` ago whose emails have all left the outbox
/// (sent or abandoned: the final notice is never purged unsent), at most [`PURGE_BATCH`]
/// per statement, until none is left. Returns how many rows were deleted by this call.
pub async fn purge(db: &Database, after: Duration) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let purged = purge_batch(db, after, PURGE_BATCH).await?;
        total += purged;
        if purged < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// One batch of [`purge`], of at most `limit` accounts, in one statement (so one
/// transaction): an instance that finds rows another is purging skips them, and a row is
/// deleted once.
pub async fn purge_batch(db: &Database, after: Duration, limit: i64) -> Result<u64, ApiError> {
    db.run(async |client| {
        let row = client
            .one(
                "WITH doomed AS (
                     SELECT id FROM users
                      WHERE deleted_at < now() - make_interval(secs => $1)
                        AND NOT EXISTS (
                            SELECT 1 FROM email_outbox o
                             WHERE o.user_id = users.id AND o.status IN ('queued', 'sending'))
                      ORDER BY deleted_at
                      LIMIT $2
                        FOR UPDATE SKIP LOCKED
                 ), anonymised AS (
                     -- The account's own events lose every link to a person; an admin's
                     -- free-text reason for a deactivation may name one, so it goes too.
                     -- Events of other accounts that this one did as an admin keep
                     -- everything but the actor.
                     UPDATE auth_events
                        SET user_id = CASE WHEN mine THEN NULL ELSE user_id END,
                            session_id = CASE WHEN mine THEN NULL ELSE session_id END,
                            ip = CASE WHEN mine THEN NULL ELSE ip END,
                            user_agent = CASE WHEN mine THEN NULL ELSE user_agent END,
                            request_id = CASE WHEN mine THEN NULL ELSE request_id END,
                            reason = CASE WHEN mine AND kind = 'account_deactivated' THEN NULL
                                          ELSE reason END,
                            actor_id = CASE WHEN actor_id IN (SELECT id FROM doomed) THEN NULL
                                            ELSE actor_id END,
                            anonymised_at = CASE WHEN mine THEN now() ELSE anonymised_at END
                       FROM (SELECT e.id AS event_id, e.user_id IN (SELECT id FROM doomed) AS mine
                               FROM auth_events e
                              WHERE e.user_id IN (SELECT id FROM doomed)
                                 OR e.actor_id IN (SELECT id FROM doomed)) t
                      WHERE auth_events.id = t.event_id
                 ), mail AS (
                     DELETE FROM email_outbox WHERE user_id IN (SELECT id FROM doomed)
                 ), gone AS (
                     DELETE FROM users WHERE id IN (SELECT id FROM doomed)
                     RETURNING id
                 )
                 SELECT count(*) FROM gone",
                &[&after.as_secs_f64(), &limit],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    })
    .await
}
