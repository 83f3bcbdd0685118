//! Passkeys and their ceremonies in the database (`passkeys`, `passkey_ceremonies`,
//! `users.passkey_handle` of `sql/0015_passkeys.sql`).
//!
//! Every single-use decision is one statement: a ceremony is consumed by `DELETE …
//! RETURNING` (finished once at most, by whichever request gets there first, on whatever
//! instance), and a use of a passkey advances its counter by a conditional `UPDATE` that
//! only an assertion with a higher counter (or an authenticator without one) passes. Changes
//! of a user's passkeys take the user's lock first ([`LOCK_USER`]), like every other change
//! of the account.

use super::typed::Typed as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::mfa::queue_notice;
use super::sessions::{LOCK_USER, record_in};
use super::{Database, events};
use crate::call::Call;
use crate::errors::ApiError;

/// Passkeys per account.
pub const MAX_PASSKEYS: i64 = 10;

/// What kind of ceremony a row holds (`passkey_ceremonies.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    Registration,
    /// A discoverable sign-in: no user until the assertion names one.
    SignIn,
    /// A second factor for a session that logged in with a password.
    SecondFactor,
}

impl Ceremony {
    fn kind(self) -> &'static str {
        match self {
            Ceremony::Registration => "registration",
            Ceremony::SignIn => "authentication",
            Ceremony::SecondFactor => "mfa",
        }
    }
}

/// A passkey as its owner sees it (never the key).
pub struct Passkey {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub backup_eligible: bool,
    pub backed_up: bool,
}

const COLUMNS: &str = "id, name, created_at, last_used_at, backup_eligible, backed_up";

fn passkey(row: &tokio_postgres::Row) -> Passkey {
    Passkey {
        id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
        last_used_at: row.get(3),
        backup_eligible: row.get(4),
        backed_up: row.get(5),
    }
}

/// The user's passkeys, oldest first.
pub async fn list(db: &Database, user_id: Uuid) -> Result<Vec<Passkey>, ApiError> {
    db.run(async |client| {
        let sql =
            format!("SELECT {COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id");
        Ok(client
            .rows(&sql, &[&user_id])
            .await?
            .iter()
            .map(passkey)
            .collect())
    })
    .await
}

/// What a registration begins with: the account's passkey handle (made now if it has
/// none), its passkeys' credential ids (to exclude), and whether the session's login is
/// within `reauth_window`.
pub struct RegistrationStart {
    pub handle: Uuid,
    pub credential_ids: Vec<Vec<u8>>,
    pub fresh_login: bool,
}

/// Reads (and, the first time, makes) what a registration begins with; `None` if the
/// session has ended.
pub async fn registration_start(
    db: &Database,
    user_id: Uuid,
    session_id: Uuid,
    reauth_window: std::time::Duration,
) -> Result<Option<RegistrationStart>, ApiError> {
    db.run(async |client| {
        let row = client
            .opt(
                "WITH s AS (
                     SELECT authenticated_at > now() - make_interval(secs => $4) AS fresh
                       FROM sessions
                      WHERE id = $2 AND user_id = $1 AND ended_at IS NULL AND expires_at > now()
                 ), u AS (
                     UPDATE users SET passkey_handle = COALESCE(passkey_handle, $3)
                      WHERE id = $1 AND EXISTS (SELECT 1 FROM s)
                     RETURNING passkey_handle
                 )
                 SELECT (SELECT passkey_handle FROM u), (SELECT fresh FROM s),
                        ARRAY(SELECT credential_id FROM passkeys WHERE user_id = $1)
                  WHERE EXISTS (SELECT 1 FROM u)",
                &[
                    &user_id,
                    &session_id,
                    &Uuid::new_v4(),
                    &reauth_window.as_secs_f64(),
                ],
            )
            .await?;
        Ok(row.map(|r| RegistrationStart {
            handle: r.get(0),
            fresh_login: r.get(1),
            credential_ids: r.get(2),
        }))
    })
    .await
}

/// Whether the session's login is within `reauth_window`; `None` if it has ended.
pub async fn fresh_login(
    db: &Database,
    user_id: Uuid,
    session_id: Uuid,
    reauth_window: std::time::Duration,
) -> Result<Option<bool>, ApiError> {
    db.run(async |client| {
        Ok(client
            .opt(
                "SELECT authenticated_at > now() - make_interval(secs => $3)
                   FROM sessions
                  WHERE id = $2 AND user_id = $1 AND ended_at IS NULL AND expires_at > now()",
                &[&user_id, &session_id, &reauth_window.as_secs_f64()],
            )
            .await?
            .map(|r| r.get(0)))
    })
    .await
}

/// Keeps a ceremony's state for `ttl`, for the user and session it belongs to (none for a
/// sign-in), replacing that session's live ceremony of the same kind. A sign-in ceremony
/// is public: its rows are bounded by the per-IP limit and pruned once expired.
pub async fn begin(
    db: &Database,
    id: Uuid,
    ceremony: Ceremony,
    owner: Option<(Uuid, Uuid)>,
    state: &serde_json::Value,
    ttl: std::time::Duration,
) -> Result<(), ApiError> {
    let state = state.to_string();
    let (user_id, session_id) = owner.unzip();
    db.run(async |client| {
        // One live ceremony per session and kind: beginning another replaces it, so a
        // session cannot pile them up.
        client
            .bounded(client.exec(
                "WITH replaced AS (
                     DELETE FROM passkey_ceremonies
                      WHERE $4::uuid IS NOT NULL AND session_id = $4 AND kind = $2
                 )
                 INSERT INTO passkey_ceremonies (id, kind, user_id, session_id, state, expires_at)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, now() + make_interval(secs => $6))",
                &[
                    &id,
                    &ceremony.kind(),
                    &user_id,
                    &session_id,
                    &state,
                    &ttl.as_secs_f64(),
                ],
            ))
            .await?;
        Ok(())
    })
    .await
}

/// Consumes a live ceremony of this kind (and, for a registration or a second factor, of
/// this user and session): its state, once. A ceremony of another user or session is left
/// alone, so a stranger cannot spend someone's ceremony.
pub async fn consume(
    db: &Database,
    id: Uuid,
    ceremony: Ceremony,
    owner: Option<(Uuid, Uuid)>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let (user_id, session_id) = owner.unzip();
    db.run(async |client| {
        let row = client
            .bounded(client.opt(
                "DELETE FROM passkey_ceremonies
                  WHERE id = $1 AND kind = $2 AND expires_at > now()
                    AND user_id IS NOT DISTINCT FROM $3 AND session_id IS NOT DISTINCT FROM $4
                 RETURNING state::text",
                &[&id, &ceremony.kind(), &user_id, &session_id],
            ))
            .await?;
        row.map(|r| {
            serde_json::from_str(r.get::<_, &str>(0))
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored ceremony: {e}")))
        })
        .transpose()
    })
    .await
}

/// A new passkey to store.
pub struct NewPasskey<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub stored: &'a crate::auth::passkeys::Stored,
    pub backup_eligible: bool,
    pub backed_up: bool,
    /// The outbox row of the notice.
    pub notice_id: Uuid,
}

/// What adding a passkey did.
pub enum Added {
    Added(Passkey),
    /// The account has [`MAX_PASSKEYS`] already.
    TooMany,
    /// The credential is registered already (this account's or another's).
    Taken,
    /// The caller's session ended meanwhile.
    CallerEnded,
}

/// Stores a passkey for the user, unless the session ended, the account has
/// [`MAX_PASSKEYS`], or the credential is someone's already; records `passkey_added` and
/// queues its notice.
pub async fn add(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    new: NewPasskey<'_>,
) -> Result<Added, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let row = tx
            .one(
                "SELECT EXISTS (SELECT 1 FROM sessions
                                 WHERE id = $2 AND user_id = $1 AND ended_at IS NULL
                                   AND expires_at > now()),
                        (SELECT count(*) FROM passkeys WHERE user_id = $1)",
                &[&user_id, &session_id],
            )
            .await?;
        if !row.get::<_, bool>(0) {
            return Ok(Added::CallerEnded);
        }
        if row.get::<_, i64>(1) >= MAX_PASSKEYS {
            return Ok(Added::TooMany);
        }
        let sql = format!(
            "INSERT INTO passkeys (id, user_id, credential_id, passkey, name, sign_count,
                                   backup_eligible, backed_up)
             VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8)
             ON CONFLICT (credential_id) DO NOTHING
             RETURNING {COLUMNS}"
        );
        let Some(row) = tx
            .opt(
                &sql,
                &[
                    &new.id,
                    &user_id,
                    &new.stored.credential_id,
                    &new.stored.json,
                    &new.name,
                    &new.stored.sign_count,
                    &new.backup_eligible,
                    &new.backed_up,
                ],
            )
            .await?
        else {
            return Ok(Added::Taken);
        };
        record_in(&tx, call, "passkey_added", None, user_id, session_id).await?;
        queue_notice(&tx, new.notice_id, "passkey_added", user_id, None).await?;
        tx.commit().await?;
        Ok(Added::Added(passkey(&row)))
    })
    .await
}

/// The owner of a credential, for a sign-in.
pub struct Owner {
    pub passkey_id: Uuid,
    pub passkey_json: String,
    pub user_id: Uuid,
    pub handle: Option<Uuid>,
    pub email: String,
    pub email_verified: bool,
    pub is_active: bool,
    pub credential_version: i64,
}

/// The passkey with this credential id, and its owner.
pub async fn owner_of(db: &Database, credential_id: &[u8]) -> Result<Option<Owner>, ApiError> {
    db.run(async |client| {
        let row = client
            .opt(
                "SELECT p.id, p.passkey::text, u.id, u.passkey_handle, u.email,
                        u.email_verified_at IS NOT NULL, u.is_active, u.credential_version
                   FROM passkeys p JOIN users u ON u.id = p.user_id
                  WHERE p.credential_id = $1",
                &[&credential_id],
            )
            .await?;
        Ok(row.map(|r| Owner {
            passkey_id: r.get(0),
            passkey_json: r.get(1),
            user_id: r.get(2),
            handle: r.get(3),
            email: r.get(4),
            email_verified: r.get(5),
            is_active: r.get(6),
            credential_version: r.get(7),
        }))
    })
    .await
}

/// `(id, stored passkey as JSON)` of every passkey of the user.
pub async fn stored_of(db: &Database, user_id: Uuid) -> Result<Vec<(Uuid, String)>, ApiError> {
    db.run(async |client| {
        Ok(client
            .rows(
                "SELECT id, passkey::text FROM passkeys WHERE user_id = $1 ORDER BY created_at",
                &[&user_id],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    })
    .await
}

/// A use of a passkey, as its assertion reported it.
pub struct Use<'a> {
    pub passkey_id: Uuid,
    pub sign_count: i64,
    /// The passkey as the library updated it (counter, backup flags), when it changed.
    pub updated_json: Option<&'a str>,
    pub backed_up: bool,
    pub backup_eligible: bool,
}

/// Records a use of a passkey: advances its counter and flags, by the conditional
/// `UPDATE` that only a higher counter passes (0 after 0 too: authenticators without a
/// counter), and records `passkey_used` (`how`: `sign_in`; a second factor's use is the
/// step-up's spend, `db::mfa`). False, changing
/// nothing, when the counter is not above the stored one: a replay, a clone, or a second
/// request racing the first.
pub async fn used(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Option<Uuid>,
    usage: &Use<'_>,
    how: &str,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        let updated = tx
            .exec(
                "UPDATE passkeys
                    SET sign_count = $3, last_used_at = now(),
                        passkey = COALESCE($4::text::jsonb, passkey),
                        backed_up = $5, backup_eligible = backup_eligible OR $6
                  WHERE id = $1 AND user_id = $2
                    AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))",
                &[
                    &usage.passkey_id,
                    &user_id,
                    &usage.sign_count,
                    &usage.updated_json,
                    &usage.backed_up,
                    &usage.backup_eligible,
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        let sql = format!("{} VALUES ($1, $2, $3, $4, $5, $6, $7)", events::INSERT);
        tx.exec(
            &sql,
            &[
                &"passkey_used",
                &how,
                &user_id,
                &session_id,
                &call.ip(),
                &call.user_agent,
                &call.request_id(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    })
    .await
}

/// Renames one of the user's passkeys (recording `passkey_renamed`); `None` if it is not
/// theirs.
pub async fn rename(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    id: Uuid,
    name: &str,
) -> Result<Option<Passkey>, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
        );
        let Some(row) = tx.opt(&sql, &[&id, &user_id, &name]).await? else {
            return Ok(None);
        };
        record_in(&tx, call, "passkey_renamed", None, user_id, session_id).await?;
        tx.commit().await?;
        Ok(Some(passkey(&row)))
    })
    .await
}

/// Removes one of the user's passkeys, ending the sessions it signed in or stepped up
/// (recording `passkey_removed` and queueing its notice); `None` if it is not theirs, else
/// how many sessions ended.
pub async fn remove(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    id: Uuid,
    notice_id: Uuid,
) -> Result<Option<u64>, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let ended = tx
            .exec(
                "UPDATE sessions SET ended_at = now(), end_reason = 'passkey_removed'
                  WHERE passkey_id = $1 AND user_id = $2 AND ended_at IS NULL
                    AND EXISTS (SELECT 1 FROM passkeys WHERE id = $1 AND user_id = $2)",
                &[&id, &user_id],
            )
            .await?;
        let removed = tx
            .exec(
                "DELETE FROM passkeys WHERE id = $1 AND user_id = $2",
                &[&id, &user_id],
            )
            .await?;
        if removed == 0 {
            return Ok(None);
        }
        record_in(&tx, call, "passkey_removed", None, user_id, session_id).await?;
        queue_notice(&tx, notice_id, "passkey_removed", user_id, None).await?;
        tx.commit().await?;
        Ok(Some(ended))
    })
    .await
}

/// Deletes expired ceremonies (the maintenance task's), at most this many per call: a
/// backlog shrinks over a few passes instead of one statement outrunning its timeout.
const PRUNE_BATCH: i64 = 10_000;

pub async fn prune(db: &Database) -> Result<u64, ApiError> {
    db.run(async |client| {
        Ok(client
            .bounded(client.exec(
                "DELETE FROM passkey_ceremonies
                  WHERE id IN (SELECT id FROM passkey_ceremonies
                                WHERE expires_at <= now() LIMIT $1)",
                &[&PRUNE_BATCH],
            ))
            .await?)
    })
    .await
}
