//! API keys in the database (`api_keys` of `sql/0017_api_keys.sql`).
//!
//! The cap of live keys per account is decided where the key is written: [`create`] takes
//! the user's lock ([`LOCK_USER`]) and counts in the same transaction, so concurrent
//! creations are serialised and the twenty-first finds twenty. A key's use is one
//! statement ([`authenticate`]): the lookup by hash, the owner's state, and the write of
//! `last_used_at`, which a conditional `UPDATE` makes at most once a minute per key, however
//! many requests use it at once. Revocations by deactivation, password reset and deletion
//! are written by those changes' own transactions (`db::admin`, `db::secrets`,
//! `db::accounts`), with [`REVOKE_ALL`].

use super::typed::Typed as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::mfa::queue_notice;
use super::sessions::{LOCK_USER, record_in};
use super::{Database, events};
use crate::auth::api_keys::Scope;
use crate::call::Call;
use crate::errors::ApiError;

/// Live (neither revoked nor expired) keys per account.
pub const MAX_LIVE_KEYS: i64 = 20;

/// How often `last_used_at` is written at most, per key.
const LAST_USED_EVERY_SECS: f64 = 60.0;

/// Revokes every live key of the user `$1` with the reason `$2` (`deactivated`,
/// `password_reset`) and records an `api_key_revoked` event for each (the reason and the
/// key's prefix), inside the transaction of the change that calls for it.
pub(super) const REVOKE_ALL: &str = "WITH k AS (
      UPDATE api_keys SET revoked_at = now(), revoke_reason = $2
       WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
      RETURNING user_id, prefix
  )
  INSERT INTO auth_events (kind, reason, user_id)
  SELECT 'api_key_revoked', $2 || ' ' || prefix, user_id FROM k";

/// A key as its owner sees it (never the key nor its hash).
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, prefix, scopes, created_at, expires_at, last_used_at";

fn scopes(raw: Vec<String>) -> Vec<Scope> {
    // The table's CHECK allows only known names; an unknown one is skipped, never granted.
    raw.iter().filter_map(|s| Scope::parse(s)).collect()
}

fn api_key(row: &tokio_postgres::Row) -> ApiKey {
    ApiKey {
        id: row.get(0),
        name: row.get(1),
        prefix: row.get(2),
        scopes: scopes(row.get(3)),
        created_at: row.get(4),
        expires_at: row.get(5),
        last_used_at: row.get(6),
    }
}

/// The user's live keys, newest first.
pub async fn list(db: &Database, user_id: Uuid) -> Result<Vec<ApiKey>, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys
              WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
              ORDER BY created_at DESC, id"
        );
        Ok(client
            .rows(&sql, &[&user_id])
            .await?
            .iter()
            .map(api_key)
            .collect())
    })
    .await
}

/// A key to store.
pub struct NewKey<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub prefix: &'a str,
    pub hash: &'a [u8],
    pub scopes: &'a [Scope],
    pub expires_in_days: i32,
    /// The outbox row of the notice.
    pub notice_id: Uuid,
}

/// What making a key did.
pub enum Created {
    Created(ApiKey),
    /// The account has [`MAX_LIVE_KEYS`] live keys already.
    TooMany,
    /// The caller's session ended meanwhile.
    CallerEnded,
}

/// Stores a key for the user, unless the session ended or the account has
/// [`MAX_LIVE_KEYS`] live keys; records `api_key_created` and queues its notice.
pub async fn create(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    new: NewKey<'_>,
) -> Result<Created, ApiError> {
    let scope_names: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
    db.run(async |client| {
        let tx = client.begin().await?;
        // Serialises the account's creations: the count below sees every key committed
        // before, so no number of concurrent requests passes the cap.
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let row = tx
            .one(
                "SELECT EXISTS (SELECT 1 FROM sessions
                                 WHERE id = $2 AND user_id = $1 AND ended_at IS NULL
                                   AND expires_at > now()),
                        (SELECT count(*) FROM api_keys
                          WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now())",
                &[&user_id, &session_id],
            )
            .await?;
        if !row.get::<_, bool>(0) {
            return Ok(Created::CallerEnded);
        }
        if row.get::<_, i64>(1) >= MAX_LIVE_KEYS {
            return Ok(Created::TooMany);
        }
        let sql = format!(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(days => $7))
             RETURNING {COLUMNS}"
        );
        let row = tx
            .one(
                &sql,
                &[
                    &new.id,
                    &user_id,
                    &new.name,
                    &new.prefix,
                    &new.hash,
                    &scope_names,
                    &new.expires_in_days,
                ],
            )
            .await?;
        // The prefix names the key in the log; the key itself is nowhere but the answer.
        record_in(
            &tx,
            call,
            "api_key_created",
            Some(new.prefix),
            user_id,
            session_id,
        )
        .await?;
        queue_notice(
            &tx,
            new.notice_id,
            "api_key_created",
            user_id,
            Some(new.prefix),
        )
        .await?;
        tx.commit().await?;
        Ok(Created::Created(api_key(&row)))
    })
    .await
}

/// Revokes the user's live key `key_id`; false if the user has no such live key (another
/// user's key is not found either).
pub async fn revoke(
    db: &Database,
    call: &Call,
    user_id: Uuid,
    session_id: Uuid,
    key_id: Uuid,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH k AS (
                 UPDATE api_keys SET revoked_at = now(), revoke_reason = 'revoked'
                  WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
                 RETURNING user_id, prefix
             ), e AS (
                 {insert} SELECT 'api_key_revoked', prefix, user_id, $3, $4, $5, $6 FROM k
             )
             SELECT count(*) FROM k",
            insert = events::INSERT,
        );
        let row = client
            .bounded(client.one(
                &sql,
                &[
                    &key_id,
                    &user_id,
                    &session_id,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            ))
            .await?;
        Ok(row.get::<_, i64>(0) == 1)
    })
    .await
}

/// A stored key found by its hash, and its owner, as the guard and introspection decide on.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Neither revoked nor expired.
    pub live: bool,
    /// Why not, when it is not (`revoked`, `expired`), for the log and the event.
    pub revoked: bool,
    pub user_id: Uuid,
    pub email: String,
    /// Active and not deleted.
    pub user_active: bool,
    pub email_verified: bool,
    pub user_created_at: DateTime<Utc>,
}

/// The key with this hash and its owner; with `touch`, a live key of an active account
/// also has its `last_used_at` set to now, unless it was set less than a minute ago. One
/// statement either way.
pub async fn authenticate(
    db: &Database,
    hash: &[u8],
    touch: bool,
) -> Result<Option<KeyOwner>, ApiError> {
    let params: [&dyn super::typed::Param; 3] = [&hash, &touch, &LAST_USED_EVERY_SECS];
    db.run(async |client| {
        let statement = client.opt(
            "WITH k AS (
                 SELECT k.id, k.prefix, k.scopes, k.created_at, k.expires_at,
                        k.revoked_at IS NULL AND k.expires_at > now() AS live,
                        k.revoked_at IS NOT NULL AS revoked,
                        u.id AS user_id, u.email, u.is_active AND u.deleted_at IS NULL AS active,
                        u.email_verified_at IS NOT NULL AS verified, u.created_at AS user_created
                   FROM api_keys k JOIN users u ON u.id = k.user_id
                  WHERE k.key_hash = $1
             ), touched AS (
                 -- Decided and written in one statement: concurrent uses of a key re-check
                 -- the condition against the first one's write, so one minute sees one write.
                 UPDATE api_keys SET last_used_at = now()
                  WHERE $2 AND id = (SELECT id FROM k WHERE live AND active)
                    AND (last_used_at IS NULL
                         OR last_used_at <= now() - make_interval(secs => $3))
             )
             SELECT id, prefix, scopes, created_at, expires_at, live, revoked, user_id, email,
                    active, verified, user_created
               FROM k",
            &params,
        );
        // A write only when `touch`: then bounded like every write, so a timeout rolls it
        // back; introspection's look-up is a plain read.
        let row = match touch {
            true => client.bounded(statement).await?,
            false => statement.await?,
        };
        Ok(row.map(|r| KeyOwner {
            key_id: r.get(0),
            prefix: r.get(1),
            scopes: scopes(r.get(2)),
            created_at: r.get(3),
            expires_at: r.get(4),
            live: r.get(5),
            revoked: r.get(6),
            user_id: r.get(7),
            email: r.get(8),
            user_active: r.get(9),
            email_verified: r.get(10),
            user_created_at: r.get(11),
        }))
    })
    .await
}

/// Records that a stored key was refused (`reason`: revoked, expired, inactive owner, a
/// scope it lacks); the prefix names the key, never the key itself.
pub async fn refused(
    db: &Database,
    call: &Call,
    owner: &KeyOwner,
    reason: &'static str,
) -> Result<(), ApiError> {
    let detail = format!("{reason} {}", owner.prefix);
    events::record(
        db,
        call,
        "api_key_refused",
        Some(&detail),
        Some(owner.user_id),
        None,
    )
    .await
}
