//! Second factors in the database (`mfa_factors`, `mfa_recovery_codes`, and the sessions'
//! and users' counters of `sql/0014_mfa.sql`): enrolment, confirmation, step-up, attempts,
//! locks, recovery codes and removal.
//!
//! Every single-use decision is one conditional `UPDATE`, so concurrent requests cannot both
//! win: a TOTP step is accepted only if it is later than the factor's `last_used_step`, a
//! recovery code only while its `used_at` is null, a pending factor is confirmed only
//! while it is pending. Attempts are counted by [`count_attempt`], committed before the
//! code is compared, so parallel guesses all count. Changes of a user's factors take the
//! user's lock first ([`super::sessions::LOCK_USER`]), like every other change of the
//! account.

use super::typed::Typed as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sessions::{LOCK_USER, record_in};
use super::{Database, events, outbox};
use crate::call::Call;
use crate::errors::ApiError;

/// Factors per user, pending ones included.
pub const MAX_FACTORS: i64 = 5;
/// Wrong codes a session may send; the last of them ends it.
pub const SESSION_ATTEMPTS: i16 = 5;
/// Consecutive wrong codes on an account, from any session, that lock its second factor.
pub const ACCOUNT_FAILURES: i32 = 10;
/// How long such a lock lasts.
pub const LOCK_MINUTES: i64 = 15;
/// A pending factor never confirmed is forgotten after this long.
const PENDING_HOURS: i64 = 24;

/// A factor as its owner sees it (never the secret).
pub struct Factor {
    pub id: Uuid,
    pub label: String,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const FACTOR_COLUMNS: &str = "id, label, status = 'verified', created_at, last_used_at";

fn factor(row: &tokio_postgres::Row) -> Factor {
    Factor {
        id: row.get(0),
        label: row.get(1),
        verified: row.get(2),
        created_at: row.get(3),
        last_used_at: row.get(4),
    }
}

/// Whether the account has a verified factor.
pub async fn has_verified(db: &Database, user_id: Uuid) -> Result<bool, ApiError> {
    db.run(async |client| {
        Ok(client.one("SELECT EXISTS (SELECT 1 FROM mfa_factors WHERE user_id = $1 AND status = 'verified')", &[&user_id]).await?.get(0))
    })
    .await
}

/// The user's factors, oldest first (pending ones past their day are left out).
pub async fn list(db: &Database, user_id: Uuid) -> Result<Vec<Factor>, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors
              WHERE user_id = $1
                AND (status = 'verified' OR created_at > now() - make_interval(hours => {PENDING_HOURS}))
              ORDER BY created_at, id"
        );
        Ok(client
            .rows(&sql, &[&user_id])
            .await?
            .iter()
            .map(factor)
            .collect())
    })
    .await
}

/// What an enrolment did.
pub enum Enrolled {
    Created,
    /// The account has [`MAX_FACTORS`] already.
    TooMany,
    /// The caller's session ended meanwhile.
    CallerEnded,
}

/// Stores a pending factor with its sealed secret (forgetting the user's stale pending
/// ones), unless the user has [`MAX_FACTORS`] or the session ended.
pub async fn enrol(
    db: &Database,
    user_id: Uuid,
    session_id: Uuid,
    factor_id: Uuid,
    label: &str,
    sealed: &[u8],
) -> Result<Enrolled, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "WITH stale AS (
                 DELETE FROM mfa_factors
                  WHERE user_id = $1 AND status = 'pending'
                    AND created_at <= now() - make_interval(hours => {PENDING_HOURS})
                 RETURNING id
             )
             SELECT EXISTS (SELECT 1 FROM sessions
                             WHERE id = $2 AND user_id = $1 AND ended_at IS NULL
                               AND expires_at > now()),
                    (SELECT count(*) FROM mfa_factors
                      WHERE user_id = $1 AND id NOT IN (SELECT id FROM stale))"
        );
        let row = tx.one(&sql, &[&user_id, &session_id]).await?;
        if !row.get::<_, bool>(0) {
            return Ok(Enrolled::CallerEnded);
        }
        if row.get::<_, i64>(1) >= MAX_FACTORS {
            tx.commit().await?;
            return Ok(Enrolled::TooMany);
        }
        tx.exec(
            "INSERT INTO mfa_factors (id, user_id, label, secret_enc) VALUES ($1, $2, $3, $4)",
            &[&factor_id, &user_id, &label, &sealed],
        )
        .await?;
        tx.commit().await?;
        Ok(Enrolled::Created)
    })
    .await
}

/// Which factors' sealed secrets to read.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// This factor, while pending (and not stale).
    Pending(Uuid),
    /// This factor, if verified.
    Verified(Uuid),
    /// Every verified factor of the user.
    AllVerified,
}

/// `(factor id, sealed secret)` of the user's factors that `which` names.
pub async fn sealed_secrets(
    db: &Database,
    user_id: Uuid,
    which: Which,
) -> Result<Vec<(Uuid, Vec<u8>)>, ApiError> {
    db.run(async |client| {
        let (filter, id) = match which {
            Which::Pending(id) => (
                format!(
                    "status = 'pending' AND id = $2
                     AND created_at > now() - make_interval(hours => {PENDING_HOURS})"
                ),
                Some(id),
            ),
            Which::Verified(id) => ("status = 'verified' AND id = $2".to_owned(), Some(id)),
            Which::AllVerified => ("status = 'verified' AND $2::uuid IS NULL".to_owned(), None),
        };
        let sql = format!(
            "SELECT id, secret_enc FROM mfa_factors WHERE user_id = $1 AND {filter} ORDER BY created_at"
        );
        Ok(client
            .rows(&sql, &[&user_id, &id])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    })
    .await
}

/// Whether an attempt may be compared, decided (and counted) before the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted; compare. `session_attempts` is this session's count including this one.
    Go { session_attempts: i16 },
    /// The account's second factor is locked for this many more seconds; not counted.
    Locked { retry_after: u64 },
    /// The session has ended (or already used up its attempts).
    SessionEnded,
}

/// Counts one second-factor attempt against the account and the session, committed before
/// the code is compared, unless the account is locked or the session is out of attempts.
///
/// The account's row is locked first, so concurrent attempts are counted one at a time: at
/// most [`ACCOUNT_FAILURES`] are ever counted without a correct code between them, however
/// many sessions send them at once. An attempt that finds the account's count already at
/// the limit (the attempts that reached it are still being compared, or were abandoned)
/// locks the second factor itself, as the last wrong one would have.
pub async fn count_attempt(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    notice_id: Uuid,
) -> Result<Attempt, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        let Some(account) = tx
            .opt(
                "SELECT mfa_failed_count,
                        CASE WHEN mfa_locked_until > now()
                             THEN ceil(extract(epoch FROM mfa_locked_until - now()))::bigint END
                   FROM users WHERE id = $1 FOR NO KEY UPDATE",
                &[&user_id],
            )
            .await?
        else {
            return Ok(Attempt::SessionEnded);
        };
        if let Some(secs) = account.get::<_, Option<i64>>(1) {
            return Ok(Attempt::Locked {
                retry_after: secs.max(1) as u64,
            });
        }
        if account.get::<_, i32>(0) >= ACCOUNT_FAILURES {
            lock_in(&tx, call, user_id, session_id, notice_id).await?;
            tx.commit().await?;
            return Ok(Attempt::Locked {
                retry_after: (LOCK_MINUTES * 60) as u64,
            });
        }
        let Some(session) = tx
            .opt(
                "UPDATE sessions SET mfa_attempts = mfa_attempts + 1
                  WHERE id = $2 AND user_id = $1 AND ended_at IS NULL
                    AND expires_at > now() AND mfa_attempts < $3
                 RETURNING mfa_attempts",
                &[&user_id, &session_id, &SESSION_ATTEMPTS],
            )
            .await?
        else {
            return Ok(Attempt::SessionEnded);
        };
        tx.exec(
            "UPDATE users SET mfa_failed_count = mfa_failed_count + 1 WHERE id = $1",
            &[&user_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Attempt::Go {
            session_attempts: session.get(0),
        })
    })
    .await
}

/// Locks the account's second factor if its count reached [`ACCOUNT_FAILURES`] (restarting
/// the count), with an `mfa_locked` event and a notice (outbox row `notice_id`), in `tx`,
/// which holds the user's row; whether it did.
async fn lock_in(
    tx: &deadpool_postgres::Transaction<'_>,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    notice_id: Uuid,
) -> Result<bool, ApiError> {
    let sql = format!(
        "WITH locked AS (
             UPDATE users
                SET mfa_locked_until = now() + make_interval(mins => {LOCK_MINUTES}),
                    mfa_failed_count = 0
              WHERE id = $1 AND mfa_failed_count >= $3
             RETURNING id, email
         ), e AS (
             {event} SELECT 'mfa_locked', NULL, id, $2, $4, $5, $6 FROM locked
         ), o AS (
             {queue} SELECT $7, 'mfa_locked', id, email, NULL,
                            now() + make_interval(hours => {ttl}) FROM locked
             RETURNING id
         ), n AS (
             {notify} FROM o
         )
         SELECT EXISTS (SELECT 1 FROM locked), (SELECT count(*) FROM n)",
        event = events::INSERT,
        queue = outbox::QUEUE,
        notify = outbox::NOTIFY,
        ttl = super::secrets::NOTICE_TTL_HOURS as i64,
    );
    let row = tx
        .one(
            &sql,
            &[
                &user_id,
                &session_id,
                &ACCOUNT_FAILURES,
                &call.ip(),
                &call.user_agent,
                &call.request_id(),
                &notice_id,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// What recording a wrong code did besides the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failed {
    /// The session used its last attempt and has ended.
    pub session_ended: bool,
    /// The account reached [`ACCOUNT_FAILURES`]: its second factor is now locked for
    /// [`LOCK_MINUTES`] (and its owner notified).
    pub locked: bool,
}

/// Records a wrong (or replayed) code: an `mfa_failed` event with `reason`; ends the
/// session if that was its last attempt; locks the account's second factor (with an
/// `mfa_locked` event and a notice, outbox row `notice_id`) if it reached the account's
/// limit. Only the request whose count reached the limit locks: the count restarts then.
pub async fn fail(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    reason: &str,
    notice_id: Uuid,
) -> Result<Failed, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        // The user's row first, as in every other change of the account's second factor.
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let ended = tx
            .exec(
                "UPDATE sessions SET ended_at = now(), end_reason = 'mfa_failed'
                  WHERE id = $2 AND user_id = $1 AND ended_at IS NULL AND mfa_attempts >= $3",
                &[&user_id, &session_id, &SESSION_ATTEMPTS],
            )
            .await?;
        let locked = lock_in(&tx, call, user_id, session_id, notice_id).await?;
        record_in(&tx, call, "mfa_failed", Some(reason), user_id, session_id).await?;
        tx.commit().await?;
        Ok(Failed {
            session_ended: ended > 0,
            locked,
        })
    })
    .await
}

/// The proof a step-up (or a factor's removal) spends.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A code of this verified factor, for this time step.
    Totp { factor_id: Uuid, step: i64 },
    /// A recovery code, by its stored hash.
    Recovery { hash: Vec<u8> },
    /// An assertion of this passkey with this counter (and the passkey as the library
    /// updated it, when it changed): spent by advancing the stored counter.
    Passkey {
        passkey_id: Uuid,
        sign_count: i64,
        updated_json: Option<String>,
        backed_up: bool,
        backup_eligible: bool,
    },
}

impl Proof {
    /// The RFC 8176 method name a session that used it records.
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Totp { .. } => "otp",
            Proof::Recovery { .. } => "recovery",
            Proof::Passkey { .. } => "webauthn",
        }
    }
}

/// Spends `proof` if it is unspent, in `tx`: the one conditional `UPDATE` that makes each
/// step of a factor, and each recovery code, work once. For a recovery code, also returns
/// how many remain.
async fn spend(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    proof: &Proof,
) -> Result<Option<Option<i64>>, ApiError> {
    Ok(match proof {
        Proof::Totp { factor_id, step } => tx
            .opt(
                "UPDATE mfa_factors SET last_used_step = $3, last_used_at = now()
                  WHERE id = $1 AND user_id = $2 AND status = 'verified'
                    AND (last_used_step IS NULL OR last_used_step < $3)
                 RETURNING id",
                &[factor_id, &user_id, step],
            )
            .await?
            .map(|_| None),
        Proof::Recovery { hash } => tx
            .opt(
                "WITH used AS (
                     UPDATE mfa_recovery_codes SET used_at = now()
                      WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
                     RETURNING code_hash
                 )
                 SELECT (SELECT count(*) FROM mfa_recovery_codes
                          WHERE user_id = $1 AND used_at IS NULL) - 1
                   FROM used",
                &[&user_id, hash],
            )
            .await?
            .map(|r| Some(r.get::<_, i64>(0))),
        // As `db::passkeys::used`: only a higher counter (or 0 after 0) passes.
        Proof::Passkey {
            passkey_id,
            sign_count,
            updated_json,
            backed_up,
            backup_eligible,
        } => tx
            .opt(
                "UPDATE passkeys
                    SET sign_count = $3, last_used_at = now(),
                        passkey = COALESCE($4::text::jsonb, passkey),
                        backed_up = $5, backup_eligible = backup_eligible OR $6
                  WHERE id = $1 AND user_id = $2
                    AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))
                 RETURNING id",
                &[
                    passkey_id,
                    &user_id,
                    sign_count,
                    updated_json,
                    backed_up,
                    backup_eligible,
                ],
            )
            .await?
            .map(|_| None),
    })
}

/// What a step-up did.
pub enum Stepped {
    /// The session is at aal2 now (its refresh token unchanged: refresh renews it at aal2).
    Up(SteppedUp),
    /// The proof was already spent (a replayed code, a used recovery code).
    Spent,
    /// The session ended meanwhile; nothing was spent.
    SessionEnded,
}

/// The session after a step-up, for its new tokens.
pub struct SteppedUp {
    pub expires_at: DateTime<Utc>,
    pub email: String,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub amr: Vec<String>,
    /// Recovery codes left, when one was spent.
    pub recovery_left: Option<i64>,
}

/// Raises the session to aal2 with `proof`, in one transaction: spends the proof, resets
/// the account's failure count and the session's attempts, records `mfa_verified` (and,
/// for a recovery code, `recovery_code_used` with a notice, outbox row `notice_id`).
pub async fn step_up(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    proof: &Proof,
    notice_id: Uuid,
) -> Result<Stepped, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        // The user's row first, as count_attempt and fail take it: one order, no deadlock.
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let Some(recovery_left) = spend(&tx, user_id, proof).await? else {
            return Ok(Stepped::Spent);
        };
        let Some(session) = tx
            .opt(
                "UPDATE sessions
                    SET aal = 2, mfa_attempts = 0, last_used_at = now(),
                        amr = CASE WHEN $3 = ANY (amr) THEN amr ELSE amr || $3 END
                  WHERE id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()
                 RETURNING expires_at, amr",
                &[&session_id, &user_id, &proof.method()],
            )
            .await?
        else {
            return Ok(Stepped::SessionEnded);
        };
        // Removing this passkey later ends the session it raised.
        if let Proof::Passkey { passkey_id, .. } = proof {
            tx.exec(
                "UPDATE sessions SET passkey_id = $2 WHERE id = $1",
                &[&session_id, passkey_id],
            )
            .await?;
        }
        let user = tx
            .one(
                "UPDATE users SET mfa_failed_count = 0 WHERE id = $1
                 RETURNING email, email_verified_at IS NOT NULL,
                           ARRAY(SELECT role FROM user_roles r WHERE r.user_id = $1 ORDER BY role)",
                &[&user_id],
            )
            .await?;
        record_in(
            &tx,
            call,
            "mfa_verified",
            Some(proof.method()),
            user_id,
            session_id,
        )
        .await?;
        if let Some(left) = recovery_left {
            recovery_code_used(&tx, call, user_id, session_id, left, notice_id).await?;
        }
        tx.commit().await?;
        Ok(Stepped::Up(SteppedUp {
            expires_at: session.get(0),
            amr: session.get(1),
            email: user.get(0),
            email_verified: user.get(1),
            roles: user.get(2),
            recovery_left,
        }))
    })
    .await
}

/// Records a spent recovery code (`recovery_code_used`, with how many are `left`) and
/// queues its notice (outbox row `notice_id`).
async fn recovery_code_used(
    tx: &deadpool_postgres::Transaction<'_>,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    left: i64,
    notice_id: Uuid,
) -> Result<(), ApiError> {
    let left = left.to_string();
    record_in(
        tx,
        call,
        "recovery_code_used",
        Some(&left),
        user_id,
        session_id,
    )
    .await?;
    queue_notice(tx, notice_id, "recovery_code_used", user_id, Some(&left)).await
}

/// Queues a notice of `kind` to the user's current address, waking the senders at commit.
pub(super) async fn queue_notice(
    tx: &deadpool_postgres::Transaction<'_>,
    notice_id: Uuid,
    kind: &str,
    user_id: Uuid,
    detail: Option<&str>,
) -> Result<(), ApiError> {
    let sql = format!(
        "WITH o AS (
             INSERT INTO email_outbox (id, kind, user_id, recipient, secret_seed, expires_at, detail)
             SELECT $1, $2, id, email, NULL, now() + make_interval(hours => {ttl}), $4
               FROM users WHERE id = $3 AND is_active
             RETURNING id
         )
         {notify} FROM o",
        ttl = super::secrets::NOTICE_TTL_HOURS as i64,
        notify = outbox::NOTIFY,
    );
    tx.exec(&sql, &[&notice_id, &kind, &user_id, &detail])
        .await?;
    Ok(())
}

/// What a confirmation did.
pub enum Confirmed {
    /// Verified; the session is at aal2; this many other sessions below aal2 ended.
    Done {
        factor: Factor,
        other_sessions_ended: u64,
    },
    /// No such pending factor of the user (or another request confirmed it first).
    NotPending,
    /// The caller's session ended meanwhile; nothing changed.
    CallerEnded,
}

/// What confirming a factor stores.
pub struct Confirmation<'a> {
    pub factor_id: Uuid,
    /// The step the confirming code matched: spent at once.
    pub step: i64,
    /// The new recovery codes' hashes.
    pub recovery_hashes: &'a [Vec<u8>],
    /// The outbox row of the notice.
    pub notice_id: Uuid,
}

/// Confirms a pending factor with the step its code matched: in one transaction, the
/// factor is verified with that step spent, the recovery codes are replaced by
/// `recovery_hashes`, this session rises to aal2, the account's other sessions below aal2
/// end, and `mfa_enrolled` is recorded and noticed (outbox row `notice_id`).
pub async fn confirm(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    confirmation: Confirmation<'_>,
) -> Result<Confirmed, ApiError> {
    let Confirmation {
        factor_id,
        step,
        recovery_hashes,
        notice_id,
    } = confirmation;
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "UPDATE mfa_factors
                SET status = 'verified', verified_at = now(), last_used_step = $3,
                    last_used_at = now()
              WHERE id = $1 AND user_id = $2 AND status = 'pending'
                AND created_at > now() - make_interval(hours => {PENDING_HOURS})
             RETURNING {FACTOR_COLUMNS}"
        );
        let Some(row) = tx.opt(&sql, &[&factor_id, &user_id, &step]).await? else {
            return Ok(Confirmed::NotPending);
        };
        let raised = tx
            .exec(
                "UPDATE sessions
                    SET aal = 2, mfa_attempts = 0,
                        amr = CASE WHEN 'otp' = ANY (amr) THEN amr ELSE amr || 'otp'::text END
                  WHERE id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()",
                &[&session_id, &user_id],
            )
            .await?;
        if raised == 0 {
            return Ok(Confirmed::CallerEnded);
        }
        let ended = tx
            .exec(
                "UPDATE sessions SET ended_at = now(), end_reason = 'mfa_enrolled'
                  WHERE user_id = $1 AND id <> $2 AND ended_at IS NULL AND aal < 2",
                &[&user_id, &session_id],
            )
            .await?;
        replace_codes(&tx, user_id, recovery_hashes).await?;
        tx.exec(
            "UPDATE users SET mfa_failed_count = 0 WHERE id = $1",
            &[&user_id],
        )
        .await?;
        record_in(&tx, call, "mfa_enrolled", Some("totp"), user_id, session_id).await?;
        queue_notice(&tx, notice_id, "mfa_enrolled", user_id, None).await?;
        tx.commit().await?;
        Ok(Confirmed::Done {
            factor: factor(&row),
            other_sessions_ended: ended,
        })
    })
    .await
}

async fn replace_codes(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    hashes: &[Vec<u8>],
) -> Result<(), ApiError> {
    tx.exec(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    tx.exec(
        "INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::bytea[])",
        &[&user_id, &hashes],
    )
    .await?;
    Ok(())
}

/// Replaces the user's recovery codes with `hashes` (recording
/// `recovery_codes_regenerated`); false if the user has no verified factor.
pub async fn regenerate_codes(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    hashes: &[Vec<u8>],
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let has: bool = tx
            .one(
                "SELECT EXISTS (SELECT 1 FROM mfa_factors WHERE user_id = $1 AND status = 'verified')",
                &[&user_id],
            )
            .await?
            .get(0);
        if !has {
            return Ok(false);
        }
        replace_codes(&tx, user_id, hashes).await?;
        record_in(
            &tx,
            call,
            "recovery_codes_regenerated",
            None,
            user_id,
            session_id,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    })
    .await
}

/// How many unused recovery codes the user has.
pub async fn codes_left(db: &Database, user_id: Uuid) -> Result<i64, ApiError> {
    db.run(async |client| {
        Ok(client
            .one(
                "SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                &[&user_id],
            )
            .await?
            .get(0))
    })
    .await
}

/// What removing a factor did.
pub enum Removed {
    /// Removed; `last` when it was the last verified one (the recovery codes went too).
    Removed { verified: bool, last: bool },
    /// No such factor of the user.
    NotFound,
    /// The proof was already spent.
    Spent,
}

/// Removes a factor: for a verified one, `proof` (a code of it or a recovery code) is spent
/// in the same transaction, and being correct it restarts the counts of wrong codes; the
/// last verified factor takes the recovery codes with it, and ends the sessions still
/// owing it. Records `mfa_removed` and, for a verified factor, notices the owner
/// (`notice_id`); a recovery code spent is recorded and noticed as used.
pub async fn remove(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    factor_id: Uuid,
    proof: Option<&Proof>,
    notice_id: Uuid,
) -> Result<Removed, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let Some(status) = tx
            .opt(
                "SELECT status = 'verified' FROM mfa_factors WHERE id = $1 AND user_id = $2",
                &[&factor_id, &user_id],
            )
            .await?
            .map(|r| r.get::<_, bool>(0))
        else {
            return Ok(Removed::NotFound);
        };
        let mut recovery_used = None;
        if status {
            let Some(proof) = proof else {
                return Ok(Removed::Spent);
            };
            let Some(recovery_left) = spend(&tx, user_id, proof).await? else {
                return Ok(Removed::Spent);
            };
            // A correct code: the counts of wrong ones restart, as after a step-up.
            tx.exec(
                "UPDATE sessions SET mfa_attempts = 0 WHERE id = $1 AND user_id = $2",
                &[&session_id, &user_id],
            )
            .await?;
            tx.exec(
                "UPDATE users SET mfa_failed_count = 0 WHERE id = $1",
                &[&user_id],
            )
            .await?;
            recovery_used = recovery_left;
        }
        tx.exec(
            "DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2",
            &[&factor_id, &user_id],
        )
        .await?;
        let last = status
            && !tx
                .one(
                    "SELECT EXISTS (SELECT 1 FROM mfa_factors WHERE user_id = $1 AND status = 'verified')",
                    &[&user_id],
                )
                .await?
                .get::<_, bool>(0);
        if last {
            tx.exec(
                "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
            // Sessions still owing the factor (opened with the password alone) would
            // otherwise become full sessions at their next refresh: they end instead.
            tx.exec(
                "UPDATE sessions SET ended_at = now(), end_reason = 'mfa_reset'
                  WHERE user_id = $1 AND id <> $2 AND ended_at IS NULL AND aal < 2",
                &[&user_id, &session_id],
            )
            .await?;
        }
        // A recovery code spent here is one used, as at a step-up (none are left when this
        // was the last factor: they went with it).
        if let Some(left) = recovery_used {
            let left = if last { 0 } else { left };
            recovery_code_used(&tx, call, user_id, session_id, left, Uuid::new_v4()).await?;
        }
        let reason = if status { "verified" } else { "pending" };
        record_in(&tx, call, "mfa_removed", Some(reason), user_id, session_id).await?;
        if status {
            queue_notice(&tx, notice_id, "mfa_removed", user_id, None).await?;
        }
        tx.commit().await?;
        Ok(Removed::Removed {
            verified: status,
            last,
        })
    })
    .await
}

/// Removes every factor and recovery code of the user inside an admin's transaction
/// (`db::admin::reset_mfa`), and every passkey, queuing the owner's notice; how many
/// verified factors and passkeys there were.
pub(super) async fn remove_all_in(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    notice_id: Uuid,
) -> Result<u64, ApiError> {
    let removed = tx
        .exec(
            "DELETE FROM mfa_factors WHERE user_id = $1 AND status = 'verified'",
            &[&user_id],
        )
        .await?;
    tx.exec("DELETE FROM mfa_factors WHERE user_id = $1", &[&user_id])
        .await?;
    // Passkeys too: support's reset is for an owner who lost their factors, or an account
    // someone else added theirs to; the owner adds them again.
    let removed = removed
        + tx.exec("DELETE FROM passkeys WHERE user_id = $1", &[&user_id])
            .await?;
    tx.exec(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    tx.exec(
        "UPDATE users SET mfa_failed_count = 0, mfa_locked_until = NULL WHERE id = $1",
        &[&user_id],
    )
    .await?;
    if removed > 0 {
        queue_notice(tx, notice_id, "mfa_removed", user_id, Some("admin")).await?;
    }
    Ok(removed)
}
