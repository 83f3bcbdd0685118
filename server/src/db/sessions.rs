//! Sessions and refresh tokens.
//!
//! Every state change here is one statement or one transaction, so concurrent requests on
//! any number of instances agree: a rotation locks the presented token's row (two refreshes
//! of one token are serialised and the second sees it spent), and ending sessions locks the
//! caller's session first (two logouts with one token give one success). Each change
//! writes its security event (`db::events`) in the same statement or transaction.
//!
//! Logout, revocation and password change each run in a transaction that first locks the
//! user's row ([`LOCK_USER`]), so the changes of one user's sessions are serialised (and
//! cannot deadlock on each other's session rows), and each then requires the caller's own
//! session to be live in the statement that acts. A session records the credential
//! version its login verified (`sql/0008_session_credentials.sql`): a session opened on a
//! password that has changed since is refused by the token check and by refresh.

use super::typed::Typed as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Database;
use super::events;
use crate::call::Call;
use crate::errors::ApiError;

/// Taken first by every transaction that starts or ends sessions or changes the password:
/// a login waits for a password change in progress and then sees the new credential
/// version, and concurrent logins count the user's sessions against the cap one at a time.
pub(super) const LOCK_USER: &str = "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE";

/// What a password change found.
pub enum PasswordChange {
    /// Stored; this many other sessions were ended.
    Changed { other_sessions_ended: u64 },
    /// The caller's session ended (revoked, logged out) before the change could commit.
    CallerEnded,
    /// Another change committed after this one verified the current password.
    Conflict,
}

/// What a logout found.
pub enum Ending {
    Ended,
    /// The caller's session is live but logged in too long ago to end other sessions.
    ReauthenticationRequired,
    /// The caller's session (or user) was no longer live.
    CallerEnded,
}

/// What a revocation found.
pub enum Revocation {
    Revoked,
    /// Another session, from a session logged in too long ago.
    ReauthenticationRequired,
    /// No such live session of the user.
    NotFound,
    /// The caller's own session ended first.
    CallerEnded,
}

/// Spent refresh tokens kept per session for reuse detection; older ones are deleted at
/// each rotation. A token spent longer ago is then merely unknown (refused, without ending
/// the session): it is also useless to a thief, and the rows of a long-lived session no
/// longer grow with every refresh.
const SPENT_KEPT: i64 = 8;

pub struct NewSession {
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The account's roles, read under the user's lock in the session's transaction: a
    /// role change (which takes that lock, and ends the sessions) either committed before
    /// and is seen here, or waits and ends this session too.
    pub roles: Vec<String>,
    /// Whether the account has a verified second factor (read in the same statement): the
    /// session then starts owing it.
    pub has_factor: bool,
}

/// The result of presenting a refresh token.
pub enum Rotation {
    /// Spent now (or spent moments ago, within the grace window, and its successor still
    /// unspent): `successor` is the live refresh token.
    Rotated {
        successor: String,
        session_id: Uuid,
        user_id: Uuid,
        email: String,
        email_verified: bool,
        roles: Vec<String>,
        expires_at: DateTime<Utc>,
        /// The session's assurance level and methods, which a refresh keeps.
        aal: i16,
        amr: Vec<String>,
        /// Whether the account has a verified second factor.
        has_factor: bool,
    },
    /// Unknown token, or its session has ended or expired, or its user is gone/inactive.
    Refused,
    /// A token spent longer ago than the grace window, or one whose successor has been
    /// spent in turn: the session has now been ended.
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
    pub aal: i16,
    pub amr: Vec<String>,
}

/// Device tokens kept per user: a new one beyond them forgets the oldest, so a client that
/// never keeps its token cannot grow `login_devices` by a row per login for 180 days.
const DEVICES_KEPT: i64 = 20;

/// What a login's session starts with; see [`start`].
pub struct Start<'a> {
    pub user_id: Uuid,
    /// The credential version the login verified.
    pub credential_version: i64,
    pub ttl: Duration,
    /// `SESSIONS_PER_USER_MAX`.
    pub cap: u32,
    /// The hash of the session's first refresh token.
    pub refresh_hash: &'a [u8],
    /// The login throttle's charge to refund (account, keys), if it was charged.
    pub refund: Option<(&'a str, &'a [String])>,
    /// A device token to record (its keyed hash) and how long it is honoured.
    pub new_device: Option<(&'a [u8], Duration)>,
    /// The session's assurance level and methods (RFC 8176): 1 and `pwd` for a password,
    /// 2 and `webauthn` for a passkey.
    pub aal: i16,
    pub amr: &'a [String],
    /// The passkey a passkey sign-in used: it must still be the user's (a removal that
    /// committed first refuses the sign-in), and removing it later ends the session.
    pub passkey_id: Option<Uuid>,
}

/// Starts a session with its first refresh token, recording where it was started from
/// (`call`) for the session list and the credential version the login verified. `None` if
/// that version is no longer the user's: the password changed while the login was
/// verifying the old one. Beyond `cap` live sessions, the least recently used ones are
/// ended (`evicted`, with a `session_evicted` event carrying this login's origin) in the
/// same statement. The login's other writes — the throttle refund, a new device token —
/// are in the same transaction: one commit per login instead of three.
pub async fn start(
    db: &Database,
    start: Start<'_>,
    call: &Call,
) -> Result<Option<NewSession>, ApiError> {
    let Start {
        user_id,
        credential_version,
        ttl,
        cap,
        refresh_hash,
        refund,
        new_device,
        aal,
        amr,
        passkey_id,
    } = start;
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        // The password was right: the attempt's charge, and the failures before it on the
        // same rows, go. (Under the account's advisory lock, taken after the user's row
        // lock; nothing takes them in the other order.)
        if let Some((account, keys)) = refund {
            tx.exec("SELECT login_refund($1, $2)", &[&account, &keys])
                .await?;
        }
        // After the lock, this statement's snapshot holds every committed change: the
        // version compared is the current one, and so is the count of live sessions.
        let sql = format!(
            "WITH u AS (
                 SELECT id FROM users WHERE id = $1 AND credential_version = $7 AND is_active
                    AND ($14::uuid IS NULL
                         OR EXISTS (SELECT 1 FROM passkeys WHERE id = $14 AND user_id = $1))
             ), evicted AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'evicted'
                  WHERE id IN (
                        SELECT id FROM sessions
                         WHERE user_id = $1 AND ended_at IS NULL AND expires_at > now()
                           AND EXISTS (SELECT 1 FROM u)
                         ORDER BY last_used_at DESC, created_at DESC
                        OFFSET $8)
                 RETURNING id
             ), evicted_events AS (
                 {insert} SELECT 'session_evicted', NULL, $1, id, $4, $3, $6 FROM evicted
             ), s AS (
                 INSERT INTO sessions (user_id, expires_at, user_agent, ip, credential_version,
                                       aal, amr, passkey_id)
                 SELECT id, now() + make_interval(secs => $2), $3, $4, $7, $12, $13, $14 FROM u
                 RETURNING id, expires_at
             ), t AS (
                 INSERT INTO refresh_tokens (token_hash, session_id) SELECT $5, id FROM s
             ), d AS (
                 INSERT INTO login_devices (token_hash, user_id, expires_at)
                 SELECT $9, id, now() + make_interval(secs => $10::float8) FROM u
                  WHERE $9::bytea IS NOT NULL
             ), forgotten_devices AS (
                 DELETE FROM login_devices
                  WHERE $9::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM u)
                    AND token_hash IN (
                        SELECT token_hash FROM login_devices WHERE user_id = $1
                         ORDER BY created_at DESC, token_hash
                        OFFSET $11)
             ), e AS (
                 {insert} SELECT 'login_succeeded', NULL, $1, id, $4, $3, $6 FROM s
             )
             SELECT id, expires_at,
                    ARRAY(SELECT role FROM user_roles r WHERE r.user_id = $1 ORDER BY role),
                    EXISTS (SELECT 1 FROM mfa_factors f
                             WHERE f.user_id = $1 AND f.status = 'verified')
               FROM s",
            insert = events::INSERT
        );
        let row = tx
            .opt(
                &sql,
                &[
                    &user_id,
                    &ttl.as_secs_f64(),
                    &call.user_agent,
                    &call.ip(),
                    &refresh_hash,
                    &call.request_id(),
                    &credential_version,
                    // The new session is one of the cap.
                    &(i64::from(cap) - 1),
                    &new_device.map(|(hash, _)| hash),
                    &new_device.map_or(0.0, |(_, ttl)| ttl.as_secs_f64()),
                    // The new device is one of them.
                    &(DEVICES_KEPT - 1),
                    &aal,
                    &amr,
                    &passkey_id,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(row.map(|row| NewSession {
            id: row.get(0),
            expires_at: row.get(1),
            roles: row.get(2),
            has_factor: row.get(3),
        }))
    })
    .await
}

/// Spends the refresh token whose hash is `presented` and records its successor (made by
/// `successor` from the session's secret: the token and its hash) as the session's live one
/// — or recognises a retry within `grace`, or a reuse. A retry is given the successor again
/// only while that successor is unspent: once it has been spent, presenting its
/// predecessor is reuse, so a thief holding a recently spent token cannot walk forward.
pub async fn rotate(
    db: &Database,
    presented: &[u8],
    successor: impl Fn(&[u8]) -> (String, Vec<u8>),
    grace: Duration,
    idle_timeout: Duration,
    call: &Call,
) -> Result<Rotation, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        // The session's row first: every rotation within one session queues here before it
        // locks any token, so a retry (which also locks its successor's row) and the
        // successor's own rotation cannot each hold a token the other waits for.
        tx.exec(
            "SELECT 1 FROM sessions
              WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)
                FOR UPDATE",
            &[&presented],
        )
        .await?;
        let row = tx
            .opt(
                "SELECT rt.session_id, s.user_id, u.email, s.expires_at,
                        rt.spent_at IS NOT NULL,
                        rt.spent_at > now() - make_interval(secs => $2),
                        s.ended_at IS NULL AND s.expires_at > now() AND u.is_active
                            AND s.credential_version = u.credential_version
                            AND ($3::float8 = 0 OR s.last_used_at > now() - make_interval(secs => $3)),
                        s.refresh_secret, u.email_verified_at IS NOT NULL,
                        ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role),
                        s.aal, s.amr,
                        EXISTS (SELECT 1 FROM mfa_factors f
                                 WHERE f.user_id = u.id AND f.status = 'verified')
                   FROM refresh_tokens rt
                   JOIN sessions s ON s.id = rt.session_id
                   JOIN users u ON u.id = s.user_id
                  WHERE rt.token_hash = $1
                    FOR UPDATE OF rt, s",
                &[
                    &presented,
                    &grace.as_secs_f64(),
                    &idle_timeout.as_secs_f64(),
                ],
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
        let (successor_token, successor) = successor(row.get::<_, &[u8]>(7));
        // A retry within the grace window is one only if nothing has spent the successor
        // since; its row is locked so that the answer holds until commit.
        let successor_spent = match spent && within_grace == Some(true) {
            true => tx
                .opt(
                    "SELECT spent_at IS NOT NULL FROM refresh_tokens
                      WHERE token_hash = $1 AND session_id = $2 FOR UPDATE",
                    &[&successor, &session_id],
                )
                .await?
                .map(|r| r.get::<_, bool>(0)),
            false => Some(true),
        };
        // Within the grace window, a successor that does not exist at all was not made with
        // this server's key: the predecessor was rotated by an instance with another
        // JWT_SECRET_KEY or key derivation (a rolling deploy). That is no sign of theft
        // (a spent successor is; live ones are never deleted), so refuse without ending
        // the session.
        if spent && successor_spent.is_none() {
            return Ok(Rotation::Refused);
        }
        if spent && successor_spent == Some(true) {
            tx.exec(
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
            tx.exec(
                "UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = $1",
                &[&presented],
            )
            .await?;
            tx.exec(
                "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
                &[&successor, &session_id],
            )
            .await?;
            tx.exec(
                "DELETE FROM refresh_tokens
                  WHERE session_id = $1 AND spent_at IS NOT NULL
                    AND token_hash NOT IN (
                        SELECT token_hash FROM refresh_tokens
                         WHERE session_id = $1 AND spent_at IS NOT NULL
                         ORDER BY spent_at DESC, created_at DESC LIMIT $2)",
                &[&session_id, &SPENT_KEPT],
            )
            .await?;
        }
        tx.exec(
            "UPDATE sessions SET last_used_at = now() WHERE id = $1",
            &[&session_id],
        )
        .await?;
        record_in(&tx, call, "refresh", None, user_id, session_id).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            successor: successor_token,
            session_id,
            user_id,
            email: row.get(2),
            email_verified: row.get(8),
            roles: row.get(9),
            expires_at: row.get(3),
            aal: row.get(10),
            amr: row.get(11),
            has_factor: row.get(12),
        })
    })
    .await
}

/// Whether the account of the session whose refresh token hashes to `presented` has a
/// verified address; `None` for an unknown token.
pub async fn owner_verified(db: &Database, presented: &[u8]) -> Result<Option<bool>, ApiError> {
    db.run(async |client| {
        Ok(client
            .opt(
                "SELECT u.email_verified_at IS NOT NULL
                   FROM refresh_tokens rt
                   JOIN sessions s ON s.id = rt.session_id
                   JOIN users u ON u.id = s.user_id
                  WHERE rt.token_hash = $1",
                &[&presented],
            )
            .await?
            .map(|r| r.get(0)))
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
    reauth_window: Duration,
    call: &Call,
) -> Result<Ending, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "WITH me AS (
                     SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id
                      WHERE s.id = $1 AND s.user_id = $2 AND u.is_active
                        AND s.ended_at IS NULL AND s.expires_at > now()
                        AND ($3::text = 'logout'
                             OR s.authenticated_at > now() - make_interval(secs => $7))
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
                 SELECT EXISTS (SELECT 1 FROM me), (SELECT count(*) FROM ended),
                        EXISTS (SELECT 1 FROM sessions
                                 WHERE id = $1 AND user_id = $2 AND ended_at IS NULL
                                   AND expires_at > now())",
            events::INSERT
        );
        let row = tx
            .one(
                &sql,
                &[
                    &session_id,
                    &user_id,
                    &scope.end_reason(),
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                    &reauth_window.as_secs_f64(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(match (row.get::<_, bool>(0), row.get::<_, bool>(2)) {
            (true, _) => Ending::Ended,
            (false, true) => Ending::ReauthenticationRequired,
            (false, false) => Ending::CallerEnded,
        })
    })
    .await
}

/// Ends one of the user's live sessions, through the caller's session `by`, which must
/// still be live.
pub async fn revoke(
    db: &Database,
    user_id: Uuid,
    session_id: Uuid,
    by: Uuid,
    reauth_window: Duration,
    call: &Call,
) -> Result<Revocation, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "WITH me AS (
                 SELECT id, $1::uuid = $6::uuid
                            OR authenticated_at > now() - make_interval(secs => $7) AS fresh
                   FROM sessions
                  WHERE id = $6 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()
             ), r AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'revoked'
                  WHERE id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()
                    AND EXISTS (SELECT 1 FROM me WHERE fresh)
                 RETURNING id
             ), e AS (
                 {} SELECT 'session_revoked', NULL, $2, id, $3, $4, $5 FROM r
             )
             SELECT EXISTS (SELECT 1 FROM me), (SELECT count(*) FROM r),
                    coalesce((SELECT fresh FROM me), false)",
            events::INSERT
        );
        let row = tx
            .one(
                &sql,
                &[
                    &session_id,
                    &user_id,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                    &by,
                    &reauth_window.as_secs_f64(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(
            match (row.get::<_, bool>(0), row.get::<_, i64>(1), row.get(2)) {
                (false, _, _) => Revocation::CallerEnded,
                (true, 1, _) => Revocation::Revoked,
                (true, _, false) => Revocation::ReauthenticationRequired,
                (true, _, true) => Revocation::NotFound,
            },
        )
    })
    .await
}

/// Up to `limit` of the user's live sessions, newest first (by start, then id: an order
/// that using a session does not change, so pages neither repeat nor skip one), started
/// before the session `before` if given. A `before` that is not one of the user's sessions
/// (ended ones still count, until they are pruned) matches nothing. A session unused for
/// `idle_timeout` (if not zero) is not listed: refresh refuses it, and its access tokens
/// expired long before.
pub async fn list(
    db: &Database,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
    idle_timeout: Duration,
) -> Result<Vec<SessionInfo>, ApiError> {
    db.run(async |client| {
        let rows = client
            .rows(
                "SELECT id, created_at, last_used_at, expires_at, user_agent, ip, aal, amr
                   FROM sessions
                  WHERE user_id = $1 AND ended_at IS NULL AND expires_at > now()
                    AND ($4::float8 = 0 OR last_used_at > now() - make_interval(secs => $4))
                    AND ($2::uuid IS NULL OR (created_at, id) < (
                            SELECT created_at, id FROM sessions
                             WHERE id = $2 AND user_id = $1))
                  ORDER BY created_at DESC, id DESC
                  LIMIT $3",
                &[&user_id, &before, &limit, &idle_timeout.as_secs_f64()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SessionInfo {
                id: r.get(0),
                created_at: r.get(1),
                last_used_at: r.get(2),
                expires_at: r.get(3),
                user_agent: r.get(4),
                ip: r.get(5),
                aal: r.get(6),
                amr: r.get(7),
            })
            .collect())
    })
    .await
}

/// Stores a new password hash and ends every other session of the user, atomically —
/// provided the caller's session `keep_session` is still live and the credential version
/// is still `verified`, the one read with the hash the current password was checked
/// against. The caller's session moves to the new version; every other one is ended; the
/// "password changed" notice (outbox row `notice_id`) is queued.
pub async fn change_password(
    db: &Database,
    user_id: Uuid,
    keep_session: Uuid,
    verified: i64,
    new_hash: &str,
    notice_id: Uuid,
    call: &Call,
) -> Result<PasswordChange, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(LOCK_USER, &[&user_id]).await?;
        let sql = format!(
            "WITH me AS (
                 SELECT id FROM sessions
                  WHERE id = $2 AND user_id = $1 AND ended_at IS NULL AND expires_at > now()
             ), u AS (
                 UPDATE users
                    SET password_hash = $3, credential_version = credential_version + 1,
                        updated_at = now()
                  WHERE id = $1 AND credential_version = $7 AND EXISTS (SELECT 1 FROM me)
                 RETURNING id, email, credential_version
             ), kept AS (
                 UPDATE sessions SET credential_version = u.credential_version
                   FROM u WHERE sessions.id = $2
             ), ended AS (
                 UPDATE sessions SET ended_at = now(), end_reason = 'password_changed'
                  WHERE user_id = $1 AND id <> $2 AND ended_at IS NULL
                    AND EXISTS (SELECT 1 FROM u)
                 RETURNING id
             ), e AS (
                 {event} SELECT 'password_changed', NULL, id, $2, $4, $5, $6 FROM u
             ), o AS (
                 {queue} SELECT $8, 'password_changed', id, email, NULL,
                                now() + make_interval(hours => {ttl}) FROM u
                 RETURNING id
             ), n AS (
                 {notify} FROM o
             )
             SELECT EXISTS (SELECT 1 FROM me), EXISTS (SELECT 1 FROM u),
                    (SELECT count(*) FROM ended), (SELECT count(*) FROM n)",
            event = events::INSERT,
            queue = super::outbox::QUEUE,
            notify = super::outbox::NOTIFY,
            ttl = super::secrets::NOTICE_TTL_HOURS as i64,
        );
        let row = tx
            .one(
                &sql,
                &[
                    &user_id,
                    &keep_session,
                    &new_hash,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                    &verified,
                    &notice_id,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
            (false, _) => PasswordChange::CallerEnded,
            (true, false) => PasswordChange::Conflict,
            (true, true) => PasswordChange::Changed {
                other_sessions_ended: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            },
        })
    })
    .await
}

/// Deletes sessions (and, by cascade, their refresh tokens) that ended or expired more
/// than a day ago. A deleted session's tokens are refused like an ended one's, so nothing
/// depends on keeping them; the day keeps recent history for investigation.
pub async fn prune(db: &Database) -> Result<u64, ApiError> {
    db.run(async |client| {
        Ok(client
            .exec(
                "DELETE FROM sessions
                  WHERE ended_at < now() - interval '1 day' OR expires_at < now() - interval '1 day'",
                &[],
            )
            .await?)
    })
    .await
}

/// Writes an event inside a transaction that makes the change it records.
pub(super) async fn record_in(
    tx: &deadpool_postgres::Transaction<'_>,
    call: &Call,
    kind: &str,
    reason: Option<&str>,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<(), ApiError> {
    let sql = format!("{} VALUES ($1, $2, $3, $4, $5, $6, $7)", events::INSERT);
    tx.exec(
        &sql,
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
