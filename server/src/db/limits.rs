//! Rate-limit counters and the login throttle, in PostgreSQL so that every instance on one
//! database shares them (see `sql/0004_rate_limits.sql`).
//!
//! A limited request costs one statement: an UPSERT of its fixed-window counter, which also
//! reads the account's throttle at login. Only a failed login writes again.

use std::time::Duration;

use super::Database;
use crate::errors::ApiError;

/// What one counted request learned.
pub struct Hit {
    /// Requests of this scope and key in the current window, this one included.
    pub count: i64,
    /// Seconds until the current window ends.
    pub window_left: f64,
    /// Seconds until the account may try to log in again, if it is blocked now.
    pub account_blocked_for: Option<f64>,
}

/// Counts one request of `scope` from `key` in the current `window`, and reads the login
/// throttle of `account` if one is given.
pub async fn hit(
    db: &Database,
    scope: &str,
    key: &str,
    window: Duration,
    account: Option<&str>,
) -> Result<Hit, ApiError> {
    db.run(async |client| {
        let stmt = client
            .prepare_cached(
                "WITH w AS (
                     SELECT to_timestamp(floor(extract(epoch FROM now())::float8 / $3::float8) * $3::float8) AS start
                 ), hit AS (
                     INSERT INTO rate_limits (scope, key, window_start)
                     SELECT $1, $2, start FROM w
                     ON CONFLICT (scope, key, window_start)
                     DO UPDATE SET count = rate_limits.count + 1
                     RETURNING count, window_start
                 )
                 SELECT hit.count::int8,
                        extract(epoch FROM hit.window_start + make_interval(secs => $3::float8) - now())::float8,
                        (SELECT extract(epoch FROM blocked_until - now())::float8
                           FROM login_throttle
                          WHERE $4::text IS NOT NULL AND email = $4 AND blocked_until > now())
                   FROM hit",
            )
            .await?;
        let row = client
            .query_one(&stmt, &[&scope, &key, &window.as_secs_f64(), &account])
            .await?;
        Ok(Hit {
            count: row.get(0),
            window_left: row.get(1),
            account_blocked_for: row.get(2),
        })
    })
    .await
}

/// Records a failed login for `account`. Past `free` failures, each further one blocks the
/// account for 1, 2, 4 … seconds, at most `max_delay`.
pub async fn login_failed(
    db: &Database,
    account: &str,
    free: u32,
    max_delay: Duration,
) -> Result<(), ApiError> {
    db.run(async |client| {
        let stmt = client
            .prepare_cached(
                "INSERT INTO login_throttle AS t (email, failures, blocked_until)
                 VALUES ($1, 1, CASE WHEN 1 > $2::int4 THEN now() + make_interval(secs => least($3::float8, 1.0::float8)) END)
                 ON CONFLICT (email) DO UPDATE
                    SET failures = t.failures + 1,
                        last_failure_at = now(),
                        blocked_until = CASE WHEN t.failures + 1 > $2::int4
                            THEN now() + make_interval(secs => least($3::float8, power(2.0::float8, (t.failures - $2::int4)::float8)))
                        END",
            )
            .await?;
        client
            .execute(&stmt, &[&account, &i32::try_from(free).unwrap_or(i32::MAX), &max_delay.as_secs_f64()])
            .await?;
        Ok(())
    })
    .await
}

/// A successful login forgets the account's failures.
pub async fn login_succeeded(db: &Database, account: &str) -> Result<(), ApiError> {
    db.run(async |client| {
        let stmt = client
            .prepare_cached("DELETE FROM login_throttle WHERE email = $1")
            .await?;
        client.execute(&stmt, &[&account]).await?;
        Ok(())
    })
    .await
}

/// Deletes counters of windows that have ended (`longest_window` is the longest configured)
/// and throttles quiet for a day. Returns how many rows went.
pub async fn prune(db: &Database, longest_window: Duration) -> Result<u64, ApiError> {
    db.run(async |client| {
        let counters = client
            .execute(
                "DELETE FROM rate_limits WHERE window_start < now() - make_interval(secs => $1)",
                &[&longest_window.as_secs_f64()],
            )
            .await?;
        let throttles = client
            .execute(
                "DELETE FROM login_throttle
                  WHERE last_failure_at < now() - interval '1 day'
                    AND (blocked_until IS NULL OR blocked_until < now())",
                &[],
            )
            .await?;
        Ok(counters + throttles)
    })
    .await
}
