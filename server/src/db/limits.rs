//! Rate-limit counters and the login throttle, in PostgreSQL so that every instance on one
//! database shares them (see `sql/0004_rate_limits.sql` and `sql/0007_login_throttle_v2.sql`).
//!
//! A limited request costs one statement: an UPSERT of its fixed-window counter. A login or
//! password change costs one more, `login_charge`, which decides and records the attempt
//! against the account's throttle at once (see `sql/0007_login_throttle_v2.sql`); a success
//! clears what it charged, and a successful login remembers its device token.

use super::typed::Typed as _;
use std::time::Duration;

use uuid::Uuid;

use super::Database;
use crate::errors::ApiError;

/// What one counted request learned.
pub struct Hit {
    /// Requests of this scope and key in the current window, this one included.
    pub count: i64,
    /// Seconds until the current window ends.
    pub window_left: f64,
}

/// Counts one request of `scope` from `key` in the current `window`.
pub async fn hit(db: &Database, scope: &str, key: &str, window: Duration) -> Result<Hit, ApiError> {
    db.run(async |client| {
        let row = client.bounded(client
            .one("WITH w AS (
                     SELECT to_timestamp(floor(extract(epoch FROM now())::float8 / $3::float8) * $3::float8) AS start
                 ), hit AS (
                     INSERT INTO rate_limits (scope, key, window_start)
                     SELECT $1, $2, start FROM w
                     ON CONFLICT (scope, key, window_start)
                     DO UPDATE SET count = rate_limits.count + 1
                     RETURNING count, window_start
                 )
                 SELECT hit.count::int8,
                        extract(epoch FROM hit.window_start + make_interval(secs => $3::float8) - now())::float8
                   FROM hit", &[&scope, &key, &window.as_secs_f64()]))
            .await?;
        Ok(Hit {
            count: row.get(0),
            window_left: row.get(1),
        })
    })
    .await
}

/// The account throttle's answer to one attempt (`login_charge` in
/// `sql/0007_login_throttle_v2.sql`).
pub enum Charge {
    /// Counted as a failure in advance: the rows to clear if it succeeds.
    Charged(Vec<String>),
    /// Refused: the current block's length in seconds, and whether this is its first
    /// refusal.
    Blocked { block_seconds: f64, first: bool },
}

/// The throttle's parameters for one attempt.
pub struct Throttle<'a> {
    pub account: &'a str,
    pub network: &'a str,
    pub device_hash: Option<&'a [u8]>,
    pub free: u32,
    pub ceiling: u32,
    pub max_delay: Duration,
}

/// Decides and charges one attempt in one statement: see the migration.
pub async fn charge(db: &Database, t: &Throttle<'_>) -> Result<Charge, ApiError> {
    let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    db.run(async |client| {
        let row = client
            .bounded(client.one(
                "SELECT keys, blocked_for, first_refusal FROM login_charge($1, $2, $3, $4, $5, $6)",
                &[
                    &t.account,
                    &t.network,
                    &t.device_hash,
                    &int(t.free),
                    &int(t.ceiling),
                    &t.max_delay.as_secs_f64(),
                ],
            ))
            .await?;
        Ok(match row.get::<_, Option<f64>>(1) {
            Some(block_seconds) => Charge::Blocked {
                block_seconds,
                first: row.get(2),
            },
            None => Charge::Charged(row.get(0)),
        })
    })
    .await
}

/// A success forgets the failures of the rows its attempt was charged to.
pub async fn refund(db: &Database, account: &str, keys: &[String]) -> Result<(), ApiError> {
    db.run(async |client| {
        client
            .bounded(client.exec("SELECT login_refund($1, $2)", &[&account, &keys]))
            .await?;
        Ok(())
    })
    .await
}

/// Whether `token_hash` is a live device of `user_id`.
pub async fn device_known(
    db: &Database,
    user_id: Uuid,
    token_hash: &[u8],
) -> Result<bool, ApiError> {
    db.run(async |client| {
        Ok(client
            .one(
                "SELECT EXISTS (SELECT 1 FROM login_devices
                                 WHERE token_hash = $1 AND user_id = $2 AND expires_at > now())",
                &[&token_hash, &user_id],
            )
            .await?
            .get(0))
    })
    .await
}

/// Deletes counters of windows that have ended (`longest_window` is the longest configured)
/// throttles quiet for a day, and expired device tokens. Returns how many rows went.
pub async fn prune(db: &Database, longest_window: Duration) -> Result<u64, ApiError> {
    db.run(async |client| {
        let counters = client
            .exec(
                "DELETE FROM rate_limits WHERE window_start < now() - make_interval(secs => $1)",
                &[&longest_window.as_secs_f64()],
            )
            .await?;
        let throttles = client
            .exec(
                // Rows a login holds are skipped, not waited for: locking in scan order
                // while it locks in key order could deadlock, and they are not quiet anyway.
                "DELETE FROM login_throttle t
                  USING (SELECT email, key FROM login_throttle
                          WHERE last_failure_at < now() - interval '1 day'
                            AND (blocked_until IS NULL OR blocked_until < now())
                            FOR UPDATE SKIP LOCKED) AS quiet
                  WHERE t.email = quiet.email AND t.key = quiet.key",
                &[],
            )
            .await?;
        let devices = client
            .exec("DELETE FROM login_devices WHERE expires_at < now()", &[])
            .await?;
        Ok(counters + throttles + devices)
    })
    .await
}
