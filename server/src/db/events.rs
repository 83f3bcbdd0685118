//! The security event log (`auth_events`, see `sql/0005_auth_events.sql`): writing events
//! that record no other change, and reading a user's own events.
//!
//! Events that record a change (signup, login, refresh, logout, password change, session
//! revocation) are written by the statement or transaction that makes the change, in
//! [`super::users`] and [`super::sessions`], with [`INSERT`]: an event exists exactly when
//! its change was committed.

use super::typed::Typed as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Database;
use crate::call::Call;
use crate::errors::ApiError;

/// The columns every event insert fills, in this order after `kind`, `reason`, `user_id`
/// and `session_id`: `ip`, `user_agent`, `request_id`.
pub const INSERT: &str =
    "INSERT INTO auth_events (kind, reason, user_id, session_id, ip, user_agent, request_id)";

/// [`INSERT`] with the acting admin's id as an eighth column (`db::admin`).
pub const INSERT_WITH_ACTOR: &str = "INSERT INTO auth_events (kind, reason, user_id, session_id, ip, user_agent, request_id, actor_id)";

/// One event as the owner sees it: an admin's action on the account shows neither the
/// admin's address nor their user agent.
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Records an event that goes with no other write (a failed login, a refused request).
/// Without `user_id`, `email` names the account if there is one.
pub async fn record(
    db: &Database,
    call: &Call,
    kind: &str,
    reason: Option<&str>,
    user_id: Option<Uuid>,
    email: Option<&str>,
) -> Result<(), ApiError> {
    db.run(async |client| {
        let sql = format!(
            "{INSERT} VALUES ($1, $2,
                 coalesce($3, (SELECT id FROM users WHERE $4::text IS NOT NULL AND lower(email) = $4
                                                 AND deleted_at IS NULL)),
                 NULL, $5, $6, $7)"
        );
        client
            .bounded(client.exec(
                &sql,
                &[
                    &kind,
                    &reason,
                    &user_id,
                    &email,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            ))
            .await?;
        Ok(())
    })
    .await
}

/// The user's events, newest first: at most `limit`, all older than event `before` if
/// given.
pub async fn list(
    db: &Database,
    user_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Event>, ApiError> {
    db.run(async |client| {
        let rows = client
            .rows(
                "SELECT id, kind, occurred_at, session_id,
                        CASE WHEN actor_id IS NULL THEN ip END,
                        CASE WHEN actor_id IS NULL THEN user_agent END
                   FROM auth_events
                  WHERE user_id = $1 AND ($2::int8 IS NULL OR id < $2)
                  ORDER BY id DESC
                  LIMIT $3",
                &[&user_id, &before, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Event {
                id: r.get(0),
                kind: r.get(1),
                occurred_at: r.get(2),
                session_id: r.get(3),
                ip: r.get(4),
                user_agent: r.get(5),
            })
            .collect())
    })
    .await
}

/// Deletes events older than `retention`.
pub async fn prune(db: &Database, retention: std::time::Duration) -> Result<u64, ApiError> {
    db.run(async |client| {
        Ok(client
            .exec(
                "DELETE FROM auth_events WHERE occurred_at < now() - make_interval(secs => $1::float8)",
                &[&retention.as_secs_f64()],
            )
            .await?)
    })
    .await
}
