//! Sessions and refresh tokens.
//!
//! Every state change here is one statement or one transaction, so concurrent requests on
//! any number of instances agree: a rotation locks the presented token's row (two refreshes
//! of one token are serialised and the second sees it spent), and ending sessions locks the
//! caller's session first (two logouts with one token give one success). Each change
//! writes its security event (`db::events`) in the same statement or transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Database;
use super::events;
use crate::call::Call;
use crate::errors::ApiError;

pub struct NewSession {
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// The result of presenting a refresh token.
pub enum Rotation {
    /// Spent now (or spent moments ago, within the grace window): the successor is live.
    Rotated {
        session_id: Uuid,
        user_id: Uuid,
        email: String,
        expires_at: DateTime<Utc>,
    },
    /// Unknown token, or its session has ended or expired, or its user is gone/inactive.
    Refused,
    /// A token spent longer ago than the grace window: the session has now been ended.
    ReuseDetected { session_id: Uuid, user_id: Uuid },
}

/// Which sessions a logout ends: the wire's `scope` (`local`, `global`, `others`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// The caller's session only.
    Local,
    /// Every session of the user, the caller's included.
    Global,
    /// Every session of the user but the caller's.
    Others,
}

impl LogoutScope {
    /// The value of the `scope` query parameter, if it is one.
    pub fn parse(wire: &str) -> Option<LogoutScope> {
        match wire {
            "local" => Some(LogoutScope::Local),
            "global" => Some(LogoutScope::Global),
            "others" => Some(LogoutScope::Others),
            _ => None,
        }
    }

    fn end_reason(self) -> &'static str {
        match self {
            LogoutScope::Local => "logout",
            LogoutScope::Global => "logout_global",
            LogoutScope::Others => "logout_others",
        }
    }
}

pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Starts a session with its first refresh token (stored as `refresh_hash`), recording
/// where it was started from (`call`) for the session list.
pub async fn start(
    db: &Database,
    user_id: Uuid,
    ttl: Duration,
    refresh_hash: &[u8],
    call: &Call,
) -> Result<NewSession, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH s AS (
                 INSERT INTO sessions (user_id, expires_at, user_agent, ip)
                 VALUES ($1, now() + make_interval(secs => $2), $3, $4)
                 RETURNING id, expires_at
             ), t AS (
                 INSERT INTO refresh_tokens (token_hash, session_id) SELECT $5, id FROM s
             ), e AS (
                 {} SELECT 'login_succeeded', NULL, $1, id, $4, $3, $6 FROM s
             )
             SELECT id, expires_at FROM s",
            events::INSERT
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &user_id,
                    &ttl.as_secs_f64(),
                    &call.user_agent,
                    &call.ip(),
                    &refresh_hash,
                    &call.request_id(),
                ],
            )
            .await?;
        Ok(NewSession {
            id: row.get(0),
            expires_at: row.get(1),
        })
    })
    .await
}

/// Spends the refresh token whose hash is `presented` and records `successor` as the
/// session's live one — or recognises a retry within `grace`, or a reuse.
pub async fn rotate(
    db: &Database,
    presented: &[u8],
    successor: &[u8],
    grace: Duration,
    call: &Call,
) -> Result<Rotation, ApiError> {
    db.run(async |client| {
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT rt.session_id, s.user_id, u.email, s.expires_at,
                        rt.spent_at IS NOT NULL,
                        rt.spent_at > now() - make_interval(secs => $2),
                        s.ended_at IS NULL AND s.expires_at > now() AND u.is_active
                   FROM refresh_tokens rt
                   JOIN sessions s ON s.id = rt.session_id
                   JOIN users u ON u.id = s.user_id
                  WHERE rt.token_hash = $1
                    FOR UPDATE OF rt, s",
                &[&presented, &grace.as_secs_f64()],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Rotation::Refused);
        };
        let session_id: Uuid = row.get(0);
        let user_id: Uuid = row.get(1);
        let spent: bool = row.get(4);
        let within_grace: Option<bool> = row.get(5);
        let live: bool = row.get(6);
        if !live {
            return Ok(Rotation::Refused);
        }
        if spent && within_grace != Some(true) {
            tx.execute(
                "UPDATE sessions SET ended_at = now(), end_reason = 'refresh_reuse' WHERE id = $1",
                &[&session_id],
            )
            .await?;
            record_in(
                &tx,
                call,
                "refresh_reuse_detected",
                None,
                user_id,
                session_id,
            )
            .await?;
            tx.commit().await?;
            return Ok(Rotation::ReuseDetected {
                session_id,
                user_id,
            });
        }
        if !spent {
            tx.execute(
                "UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = $1",
                &[&presented],
            )
            .await?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
                &[&successor, &session_id],
            )
            .await?;
        }
        tx.execute(
            "UPDATE sessions SET last_used_at = now() WHERE id = $1",
            &[&session_id],
        )
        .await?;
        record_in(&tx, call, "refresh", None, user_id, session_id).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            session_id,
            user_id,
            email: row.get(2),
            expires_at: row.get(3),
        })
    })
    .await
}

/// Ends the sessions `scope` names, provided the caller's own session is still live and
/// the user active. Returns false otherwise (a concurrent or repeated logout, say).
pub async fn end(
    db: &Database,
    user_id: Uuid,
    session_id: Uuid,
    scope: LogoutScope,
    call: &Call,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH me AS (
                     SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id
                      WHERE s.id = $1 AND s.user_id = $2 AND u.is_active
                        AND s.ended_at IS NULL AND s.expires_at > now()
                        FOR UPDATE OF s
                 ), ended AS (
                     UPDATE sessions SET ended_at = now(), end_reason = $3
                      WHERE user_id = $2 AND ended_at IS NULL AND EXISTS (SELECT 1 FROM me)
                        AND CASE $3 WHEN 'logout' THEN id = $1
                                    WHEN 'logout_others' THEN id <> $1
                                    ELSE true END
                     RETURNING id
                 ), e AS (
                     {} SELECT 'logout', $3, $2, $1, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM me)
                 )
                 SELECT EXISTS (SELECT 1 FROM me), (SELECT count(*) FROM ended)",
            events::INSERT
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &session_id,
                    &user_id,
                    &scope.end_reason(),
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await?;
        Ok(row.get(0))
    })
    .await
}

/// Ends one of the user's live sessions. False if there is no such live session.
pub async fn revoke(
    db: &Database,
    user_id: Uuid,
    session_id: Uuid,
    call: &Call,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH r AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'revoked'
                  WHERE id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()
                 RETURNING id
             ), e AS (
                 {} SELECT 'session_revoked', NULL, $2, id, $3, $4, $5 FROM r
             )
             SELECT count(*) FROM r",
            events::INSERT
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &session_id,
                    &user_id,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await?;
        Ok(row.get::<_, i64>(0) == 1)
    })
    .await
}

/// The user's live sessions, most recently used first.
pub async fn list(db: &Database, user_id: Uuid) -> Result<Vec<SessionInfo>, ApiError> {
    db.run(async |client| {
        let stmt = client
            .prepare_cached(
                "SELECT id, created_at, last_used_at, expires_at, user_agent, ip
                   FROM sessions
                  WHERE user_id = $1 AND ended_at IS NULL AND expires_at > now()
                  ORDER BY last_used_at DESC, created_at DESC",
            )
            .await?;
        let rows = client.query(&stmt, &[&user_id]).await?;
        Ok(rows
            .iter()
            .map(|r| SessionInfo {
                id: r.get(0),
                created_at: r.get(1),
                last_used_at: r.get(2),
                expires_at: r.get(3),
                user_agent: r.get(4),
                ip: r.get(5),
            })
            .collect())
    })
    .await
}

/// Stores a new password hash and ends every other session of the user, atomically.
pub async fn change_password(
    db: &Database,
    user_id: Uuid,
    keep_session: Uuid,
    new_hash: &str,
    call: &Call,
) -> Result<u64, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH u AS (
                 UPDATE users SET password_hash = $3, updated_at = now() WHERE id = $1 RETURNING id
             ), e AS (
                 {} SELECT 'password_changed', NULL, id, $2, $4, $5, $6 FROM u
             )
             UPDATE sessions SET ended_at = now(), end_reason = 'password_changed'
              WHERE user_id = $1 AND id <> $2 AND ended_at IS NULL AND EXISTS (SELECT 1 FROM u)",
            events::INSERT
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .execute(
                &stmt,
                &[
                    &user_id,
                    &keep_session,
                    &new_hash,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await?)
    })
    .await
}

/// Deletes sessions (and, by cascade, their refresh tokens) that ended or expired more
/// than a day ago. A deleted session's tokens are refused like an ended one's, so nothing
/// depends on keeping them; the day keeps recent history for investigation.
pub async fn prune(db: &Database) -> Result<u64, ApiError> {
    db.run(async |client| {
        Ok(client
            .execute(
                "DELETE FROM sessions
                  WHERE ended_at < now() - interval '1 day' OR expires_at < now() - interval '1 day'",
                &[],
            )
            .await?)
    })
    .await
}

/// Writes an event inside a transaction that makes the change it records.
async fn record_in(
    tx: &deadpool_postgres::Transaction<'_>,
    call: &Call,
    kind: &str,
    reason: Option<&str>,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<(), ApiError> {
    let sql = format!("{} VALUES ($1, $2, $3, $4, $5, $6, $7)", events::INSERT);
    let stmt = tx.prepare_cached(&sql).await?;
    tx.execute(
        &stmt,
        &[
            &kind,
            &reason,
            &user_id,
            &session_id,
            &call.ip(),
            &call.user_agent,
            &call.request_id(),
        ],
    )
    .await?;
    Ok(())
}
