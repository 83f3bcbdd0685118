//! Administration: roles, accounts as an admin sees them, deactivation, ending another
//! account's sessions, and the security log across accounts.
//!
//! **Every change is one transaction with its event**, which carries the acting admin's id
//! (`auth_events.actor_id`). The command line's changes have no actor; their events carry
//! the user agent [`CLI_USER_AGENT`] and no address.
//!
//! **Every admin change re-checks the admin at commit.** The guard accepted the admin's
//! token when the request arrived; by the time its change runs, another admin may have
//! removed the role or deactivated the account. So each change first takes one advisory
//! lock shared by all admin changes (they are rare; serialising them costs nothing), then
//! checks that the actor still holds `admin`, is active and has a live session. Two admins
//! demoting or deactivating each other at once therefore cannot both succeed: the second
//! finds it is no longer an admin (403) — the service never loses its last admin to a race.
//! The command line takes the same lock.
//!
//! **A role change ends the account's sessions** (`end_reason = 'role_changed'`): the
//! `roles` claim of a token whose session is live is the account's current roles, so the
//! guard checks the claim with no read beyond the session lookup it makes anyway. (A
//! login reads the roles it signs in the session's own transaction, under the user lock
//! that `set_roles` also takes: `db::sessions::start`.)

use super::typed::Param;
use super::typed::Typed as _;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::Database;
use super::events;
use crate::auth::guard::CurrentUser;
use crate::auth::token::MAX_ROLES;
use crate::call::Call;
use crate::errors::ApiError;
use crate::http::router::ADMIN_ROLE;

/// The advisory lock every admin change holds until it commits (an arbitrary constant;
/// the migration lock uses another).
const ADMIN_LOCK: i64 = 0x4a50_4144_4d49_4e00; // "JPADMIN\0"

/// An account as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub is_active: bool,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub live_sessions: i64,
    pub last_login_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub deactivation_reason: Option<String>,
}

/// The columns of [`Account`], for `FROM users u`. Live sessions are counted as the guard
/// decides liveness (not ended, not expired, opened on the current password).
const ACCOUNT_COLUMNS: &str = "u.id, u.email, u.created_at, u.is_active,
       u.email_verified_at IS NOT NULL,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role),
       (SELECT count(*) FROM sessions s
         WHERE s.user_id = u.id AND s.ended_at IS NULL AND s.expires_at > now()
           AND s.credential_version = u.credential_version),
       (SELECT e.occurred_at FROM auth_events e
         WHERE e.user_id = u.id AND e.kind = 'login_succeeded' ORDER BY e.id DESC LIMIT 1),
       u.deactivated_at, u.deactivation_reason";

fn account(r: &Row) -> Account {
    Account {
        id: r.get(0),
        email: r.get(1),
        created_at: r.get(2),
        is_active: r.get(3),
        email_verified: r.get(4),
        roles: r.get(5),
        live_sessions: r.get(6),
        last_login_at: r.get(7),
        deactivated_at: r.get(8),
        deactivation_reason: r.get(9),
    }
}

/// What the admin list keeps.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    /// An address prefix, lower-case.
    pub prefix: Option<&'a str>,
    pub active: Option<bool>,
    pub verified: Option<bool>,
    /// Only addresses after this one (the previous page's last).
    pub after: Option<&'a str>,
}

/// Accounts in address order (byte order: the "C" collation of the index), at most `limit`.
///
/// The statement is built from the filters given, rather than one statement with
/// `$n IS NULL OR …` for each: a plan PostgreSQL reuses for every value cannot use the
/// address index for a prefix that may be absent. A prefix is the range
/// `[prefix, prefix || U+10FFFF)`, which is exactly the addresses that start with it in byte
/// order, and needs no escaping of `LIKE`'s wildcards.
pub async fn list(
    db: &Database,
    filter: &Filter<'_>,
    limit: i64,
) -> Result<Vec<Account>, ApiError> {
    // A deleted account is gone from the admin API: only its scrubbed row waits for the
    // purge, and its events stay in the log.
    let mut conditions: Vec<String> = vec!["u.deleted_at IS NULL".to_owned()];
    let mut params: Vec<&dyn Param> = Vec::new();
    let prefix_upper = filter.prefix.map(|p| format!("{p}\u{10FFFF}"));
    if let (Some(prefix), Some(upper)) = (&filter.prefix, &prefix_upper) {
        params.push(prefix);
        conditions.push(format!("u.email COLLATE \"C\" >= ${}", params.len()));
        params.push(upper);
        conditions.push(format!("u.email COLLATE \"C\" < ${}", params.len()));
    }
    if let Some(active) = &filter.active {
        params.push(active);
        conditions.push(format!("u.is_active = ${}", params.len()));
    }
    if let Some(verified) = &filter.verified {
        params.push(verified);
        conditions.push(format!(
            "(u.email_verified_at IS NOT NULL) = ${}",
            params.len()
        ));
    }
    if let Some(after) = &filter.after {
        params.push(after);
        conditions.push(format!("u.email COLLATE \"C\" > ${}", params.len()));
    }
    params.push(&limit);
    let limit_param = params.len();
    let filter_sql = format!("WHERE {}", conditions.join(" AND "));
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM users u {filter_sql}
          ORDER BY u.email COLLATE \"C\" LIMIT ${limit_param}"
    );
    db.run(async |client| {
        let rows = client.rows(&sql, &params).await?;
        Ok(rows.iter().map(account).collect())
    })
    .await
}

/// One account.
pub async fn get(db: &Database, user_id: Uuid) -> Result<Option<Account>, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL"
        );
        Ok(client.opt(&sql, &[&user_id]).await?.map(|r| account(&r)))
    })
    .await
}

/// Who is acting: an admin of the API (checked again at commit), or the command line.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    Admin { id: Uuid, session_id: Uuid },
    Cli,
}

impl Actor {
    pub fn admin(user: &CurrentUser) -> Actor {
        Actor::Admin {
            id: user.id,
            session_id: user.session_id,
        }
    }

    fn id(self) -> Option<Uuid> {
        match self {
            Actor::Admin { id, .. } => Some(id),
            Actor::Cli => None,
        }
    }
}

/// The `user_agent` of the events of `jobpath-server admin …`.
pub const CLI_USER_AGENT: &str = "jobpath-server admin (command line)";

/// Takes the admin lock and re-checks the actor (see the module documentation).
pub(super) async fn begin(
    tx: &deadpool_postgres::Transaction<'_>,
    actor: Actor,
) -> Result<(), ApiError> {
    tx.exec("SELECT pg_advisory_xact_lock($1)", &[&ADMIN_LOCK])
        .await?;
    let Actor::Admin { id, session_id } = actor else {
        return Ok(());
    };
    let row = tx
        .opt(
            "SELECT s.ended_at IS NULL AND s.expires_at > now()
                    AND s.credential_version = u.credential_version AND u.is_active,
                    EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role = $3)
               FROM users u JOIN sessions s ON s.user_id = u.id
              WHERE u.id = $1 AND s.id = $2",
            &[&id, &session_id, &ADMIN_ROLE],
        )
        .await?;
    match row.map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1))) {
        None | Some((false, _)) => Err(ApiError::InvalidToken("admin's session ended")),
        Some((true, false)) => Err(ApiError::Forbidden(ADMIN_ROLE)),
        Some((true, true)) => Ok(()),
    }
}

/// Records an admin's (or the command line's) change, in its transaction.
async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    call: Option<&Call>,
    kind: &str,
    reason: Option<&str>,
    user_id: Uuid,
    actor: Actor,
) -> Result<(), ApiError> {
    let (ip, user_agent, request_id) = match call {
        Some(call) => (
            Some(call.ip()),
            call.user_agent.clone(),
            Some(call.request_id()),
        ),
        None => (None, Some(CLI_USER_AGENT.to_owned()), None),
    };
    let sql = format!(
        "{} VALUES ($1, $2, $3, NULL, $4, $5, $6, $7)",
        events::INSERT_WITH_ACTOR
    );
    let params: [&dyn Param; 7] = [
        &kind,
        &reason,
        &user_id,
        &ip,
        &user_agent,
        &request_id,
        &actor.id(),
    ];
    tx.exec(&sql, &params).await?;
    Ok(())
}

/// Ends every live session of `user_id` with `reason`; how many ended.
async fn end_all_sessions(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    reason: &str,
) -> Result<u64, ApiError> {
    Ok(tx
        .exec(
            "UPDATE sessions SET ended_at = now(), end_reason = $2
              WHERE user_id = $1 AND ended_at IS NULL",
            &[&user_id, &reason],
        )
        .await?)
}

/// Locks the account's row; false if there is none (or it is deleted: a deleted account
/// is changed by nothing but the purge).
async fn lock_user(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
) -> Result<bool, ApiError> {
    Ok(tx
        .opt(
            "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            &[&user_id],
        )
        .await?
        .is_some())
}

/// Deactivates the account: sessions end, live one-time secrets die, queued emails that
/// carry a link are abandoned (their seeds erased). An inactive account is left as it is.
/// `None`: no such account.
pub async fn deactivate(
    db: &Database,
    call: &Call,
    actor: Actor,
    user_id: Uuid,
    reason: &str,
) -> Result<Option<Account>, ApiError> {
    let changed = db
        .run(async |client| {
            let tx = client.begin().await?;
            begin(&tx, actor).await?;
            let Some(row) = tx
                .opt(
                    "SELECT is_active FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                    &[&user_id],
                )
                .await?
            else {
                return Ok(None);
            };
            if !row.get::<_, bool>(0) {
                return Ok(Some(false));
            }
            tx.exec(
                "UPDATE users SET is_active = false, deactivated_at = now(),
                        deactivation_reason = $2
                  WHERE id = $1",
                &[&user_id, &reason],
            )
            .await?;
            end_all_sessions(&tx, user_id, "deactivated").await?;
            // Reactivation does not bring them back: the owner makes new ones.
            tx.exec(super::api_keys::REVOKE_ALL, &[&user_id, &"deactivated"])
                .await?;
            tx.exec(
                "UPDATE one_time_secrets SET consumed_at = now()
                  WHERE user_id = $1 AND consumed_at IS NULL",
                &[&user_id],
            )
            .await?;
            tx.exec(
                "UPDATE email_outbox
                    SET status = 'abandoned', secret_seed = NULL,
                        last_error = 'account deactivated before sending'
                  WHERE user_id = $1 AND status = 'queued' AND secret_seed IS NOT NULL",
                &[&user_id],
            )
            .await?;
            record(
                &tx,
                Some(call),
                "account_deactivated",
                Some(reason),
                user_id,
                actor,
            )
            .await?;
            tx.commit().await?;
            Ok(Some(true))
        })
        .await?;
    match changed {
        None => Ok(None),
        Some(_) => get(db, user_id).await,
    }
}

/// Makes a deactivated account active again. `None`: no such account.
pub async fn reactivate(
    db: &Database,
    call: &Call,
    actor: Actor,
    user_id: Uuid,
) -> Result<Option<Account>, ApiError> {
    let found = db
        .run(async |client| {
            let tx = client.begin().await?;
            begin(&tx, actor).await?;
            let Some(row) = tx
                .opt(
                    "SELECT is_active FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                    &[&user_id],
                )
                .await?
            else {
                return Ok(false);
            };
            if !row.get::<_, bool>(0) {
                tx.exec(
                    "UPDATE users SET is_active = true, deactivated_at = NULL,
                            deactivation_reason = NULL
                      WHERE id = $1",
                    &[&user_id],
                )
                .await?;
                record(&tx, Some(call), "account_reactivated", None, user_id, actor).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await?;
    match found {
        false => Ok(None),
        true => get(db, user_id).await,
    }
}

/// What a role change did.
#[derive(Debug, PartialEq, Eq)]
pub enum RoleChange {
    /// Whether anything changed.
    Done {
        changed: bool,
    },
    NoSuchUser,
    /// The actor would remove their own `admin` role.
    SelfLockout,
    /// More than [`MAX_ROLES`]: the `roles` claim is bounded.
    TooMany,
}

/// Makes the account hold the roles `new` makes of the roles it holds (read under the
/// lock, so a grant from the command line cannot undo a concurrent change; the result
/// already validated: names, count, no duplicates). A change ends the account's sessions;
/// each role granted or removed is an event.
pub async fn set_roles(
    db: &Database,
    call: Option<&Call>,
    actor: Actor,
    user_id: Uuid,
    new: impl FnOnce(&[String]) -> Vec<String>,
) -> Result<RoleChange, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        begin(&tx, actor).await?;
        if !lock_user(&tx, user_id).await? {
            return Ok(RoleChange::NoSuchUser);
        }
        let held: Vec<String> = tx
            .rows(
                "SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role",
                &[&user_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let roles = new(&held);
        if roles.len() > MAX_ROLES {
            return Ok(RoleChange::TooMany);
        }
        let removed: Vec<&String> = held.iter().filter(|r| !roles.contains(r)).collect();
        let added: Vec<&String> = roles.iter().filter(|r| !held.contains(r)).collect();
        if actor.id() == Some(user_id) && removed.iter().any(|r| *r == ADMIN_ROLE) {
            return Ok(RoleChange::SelfLockout);
        }
        for role in &removed {
            tx.exec(
                "DELETE FROM user_roles WHERE user_id = $1 AND role = $2",
                &[&user_id, role],
            )
            .await?;
            record(&tx, call, "role_revoked", Some(role), user_id, actor).await?;
        }
        for role in &added {
            tx.exec(
                "INSERT INTO user_roles (user_id, role, granted_by) VALUES ($1, $2, $3)",
                &[&user_id, role, &actor.id()],
            )
            .await?;
            record(&tx, call, "role_granted", Some(role), user_id, actor).await?;
        }
        let changed = !removed.is_empty() || !added.is_empty();
        if changed {
            end_all_sessions(&tx, user_id, "role_changed").await?;
        }
        tx.commit().await?;
        Ok(RoleChange::Done { changed })
    })
    .await
}

/// The id of the account with this (normalised) address.
pub async fn find_by_email(db: &Database, email: &str) -> Result<Option<Uuid>, ApiError> {
    db.run(async |client| {
        let row = client
            .opt("SELECT id FROM users WHERE lower(email) = $1", &[&email])
            .await?;
        Ok(row.map(|r| r.get(0)))
    })
    .await
}

/// Every holder of `role`: (address, granted at, granted by whom's address).
pub async fn holders(
    db: &Database,
    role: &str,
) -> Result<Vec<(String, DateTime<Utc>, Option<String>)>, ApiError> {
    db.run(async |client| {
        let rows = client
            .rows(
                "SELECT u.email || CASE WHEN u.is_active THEN '' ELSE ' (deactivated)' END,
                        r.granted_at, g.email
                   FROM user_roles r JOIN users u ON u.id = r.user_id
                   LEFT JOIN users g ON g.id = r.granted_by
                  WHERE r.role = $1
                  ORDER BY u.email COLLATE \"C\"",
                &[&role],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    })
    .await
}

/// Ends every live session of the account. `None`: no such account.
pub async fn end_sessions(
    db: &Database,
    call: &Call,
    actor: Actor,
    user_id: Uuid,
) -> Result<Option<u64>, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        begin(&tx, actor).await?;
        if !lock_user(&tx, user_id).await? {
            return Ok(None);
        }
        let ended = end_all_sessions(&tx, user_id, "admin_revoked").await?;
        let count = ended.to_string();
        record(
            &tx,
            Some(call),
            "sessions_revoked",
            Some(&count),
            user_id,
            actor,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(ended))
    })
    .await
}

/// Removes every second factor and recovery code of the account (and unlocks its second
/// factor), ends its sessions when it had a factor, records `mfa_removed` with the actor,
/// and notices the owner (outbox row `notice_id`). `None` if there is no such account;
/// otherwise how many verified factors there were (0: nothing else happened).
pub async fn reset_mfa(
    db: &Database,
    call: &Call,
    actor: Actor,
    user_id: Uuid,
    notice_id: Uuid,
) -> Result<Option<u64>, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        begin(&tx, actor).await?;
        if !lock_user(&tx, user_id).await? {
            return Ok(None);
        }
        let removed = super::mfa::remove_all_in(&tx, user_id, notice_id).await?;
        if removed > 0 {
            end_all_sessions(&tx, user_id, "mfa_reset").await?;
            record(
                &tx,
                Some(call),
                "mfa_removed",
                Some("admin"),
                user_id,
                actor,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(removed))
    })
    .await
}

/// Ends one live session of the account; false if the account has no such live session.
pub async fn end_session(
    db: &Database,
    call: &Call,
    actor: Actor,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        begin(&tx, actor).await?;
        let ended = tx
            .exec(
                "UPDATE sessions SET ended_at = now(), end_reason = 'admin_revoked'
                  WHERE id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > now()",
                &[&session_id, &user_id],
            )
            .await?;
        if ended == 0 {
            return Ok(false);
        }
        let sql = format!(
            "{} VALUES ('session_revoked', NULL, $1, $2, $3, $4, $5, $6)",
            events::INSERT_WITH_ACTOR
        );
        tx.exec(
            &sql,
            &[
                &user_id,
                &session_id,
                &call.ip(),
                &call.user_agent,
                &call.request_id(),
                &actor.id(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    })
    .await
}

/// One event as an admin sees it.
pub struct AdminEvent {
    pub id: i64,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub user_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Events newest first: of one account (`user_id`) or of all, of one `kind` or all, older
/// than `before`, at most `limit`. Built from the filters given, so that each form walks
/// its own index (`(user_id, id)`, `(kind, id)`, or the primary key) in order.
pub async fn events(
    db: &Database,
    user_id: Option<Uuid>,
    kind: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AdminEvent>, ApiError> {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<&dyn Param> = Vec::new();
    if let Some(user_id) = &user_id {
        params.push(user_id);
        conditions.push(format!("user_id = ${}", params.len()));
    }
    if let Some(kind) = &kind {
        params.push(kind);
        conditions.push(format!("kind = ${}", params.len()));
    }
    if let Some(before) = &before {
        params.push(before);
        conditions.push(format!("id < ${}", params.len()));
    }
    params.push(&limit);
    let limit_param = params.len();
    let filter_sql = match conditions.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conditions.join(" AND ")),
    };
    let sql = format!(
        "SELECT id, kind, occurred_at, user_id, actor_id, reason, session_id, ip, user_agent
           FROM auth_events {filter_sql}
          ORDER BY id DESC LIMIT ${limit_param}"
    );
    db.run(async |client| {
        let rows = client.rows(&sql, &params).await?;
        Ok(rows
            .iter()
            .map(|r| AdminEvent {
                id: r.get(0),
                kind: r.get(1),
                occurred_at: r.get(2),
                user_id: r.get(3),
                actor_id: r.get(4),
                reason: r.get(5),
                session_id: r.get(6),
                ip: r.get(7),
                user_agent: r.get(8),
            })
            .collect())
    })
    .await
}
