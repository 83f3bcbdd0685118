//! Accounts: creation, the login look-up, and password-hash upgrades.
//!
//! Each function is one statement (one round trip), prepared once per connection.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::Database;
use super::events;
use crate::auth::credentials::Email;
use crate::call::Call;
use crate::errors::ApiError;

/// A freshly created account.
pub struct NewUser {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// What login needs to know about an account.
pub struct LoginRecord {
    pub id: Uuid,
    pub email: String,
    pub password_hash: Arc<str>,
    pub is_active: bool,
    /// Read with the hash: what a session or a password change compares-and-sets on.
    pub credential_version: i64,
}

/// Inserts an account and its `signup` event; the unique index on `lower(email)` decides
/// races.
pub async fn insert(
    db: &Database,
    email: &Email,
    password_hash: &str,
    call: &Call,
) -> Result<NewUser, ApiError> {
    db.run(async |client| {
        let sql = format!(
            "WITH u AS (
                 INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id, created_at
             ), e AS (
                 {} SELECT 'signup', NULL, id, NULL, $3, $4, $5 FROM u
             )
             SELECT id, created_at FROM u",
            events::INSERT
        );
        let stmt = client.prepare_cached(&sql).await?;
        match client
            .query_one(
                &stmt,
                &[
                    &email.as_str(),
                    &password_hash,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                ],
            )
            .await
        {
            Ok(row) => Ok(NewUser {
                id: row.get(0),
                created_at: row.get(1),
            }),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(ApiError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

pub async fn find_for_login(db: &Database, email: &Email) -> Result<Option<LoginRecord>, ApiError> {
    db.run(async |client| {
        let stmt = client
            .prepare_cached(
                "SELECT id, email, password_hash, is_active, credential_version
                   FROM users WHERE lower(email) = $1",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&email.as_str()]).await?;
        Ok(row.map(|r| LoginRecord {
            id: r.get(0),
            email: r.get(1),
            password_hash: Arc::from(r.get::<_, &str>(2)),
            is_active: r.get(3),
            credential_version: r.get(4),
        }))
    })
    .await
}

/// Replaces a password hash, but only if it is still `old`: a rehash at a new bcrypt cost
/// must never overwrite a password changed in the meantime.
pub async fn replace_hash(
    db: &Database,
    user_id: Uuid,
    old: &str,
    new: &str,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        let stmt = client
            .prepare_cached(
                "UPDATE users SET password_hash = $3, updated_at = now()
                  WHERE id = $1 AND password_hash = $2",
            )
            .await?;
        Ok(client.execute(&stmt, &[&user_id, &old, &new]).await? == 1)
    })
    .await
}

/// Version-1 password hashes looked at per round trip by [`wrap_legacy_hashes`].
const WRAP_BATCH: i64 = 500;

/// Replaces every version-1 password hash (bare bcrypt, `$2b$…`) by `wrap`'s form of it
/// (`auth::hasher`), a batch at a time, each only if it is still the one read (a login
/// may be replacing it with a version-2 hash meanwhile). Returns how many were replaced.
pub async fn wrap_legacy_hashes(
    db: &Database,
    wrap: impl Fn(&str) -> Option<String>,
) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let (read, replaced) = db
            .run(async |client| {
                let rows = client
                    .query(
                        "SELECT id, password_hash FROM users
                          WHERE password_hash LIKE '$2b$%' LIMIT $1",
                        &[&WRAP_BATCH],
                    )
                    .await?;
                let mut replaced = 0;
                for row in &rows {
                    let (id, old): (Uuid, &str) = (row.get(0), row.get(1));
                    let Some(new) = wrap(old) else { continue };
                    replaced += client
                        .execute(
                            "UPDATE users SET password_hash = $3
                              WHERE id = $1 AND password_hash = $2",
                            &[&id, &old, &new],
                        )
                        .await?;
                }
                Ok((rows.len() as i64, replaced))
            })
            .await?;
        total += replaced;
        // A short batch was the last; one where nothing could be replaced (malformed
        // hashes only) would be read again forever.
        if read < WRAP_BATCH || replaced == 0 {
            return Ok(total);
        }
    }
}

/// Records `fingerprint` as the password pepper's if none is recorded yet, and fails, naming
/// the variable, if another one is.
pub async fn check_pepper(
    client: &tokio_postgres::Client,
    fingerprint: &[u8],
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO key_fingerprints (name, fingerprint) VALUES ('password_pepper', $1)
             ON CONFLICT (name) DO NOTHING",
            &[&fingerprint],
        )
        .await?;
    let recorded: Vec<u8> = client
        .query_one(
            "SELECT fingerprint FROM key_fingerprints WHERE name = 'password_pepper'",
            &[],
        )
        .await?
        .get(0);
    if recorded != fingerprint {
        anyhow::bail!(
            "PASSWORD_PEPPER is not the pepper this database's password hashes were made with \
             (its fingerprint differs from the one recorded in key_fingerprints): every \
             password would be refused. Set the original PASSWORD_PEPPER"
        );
    }
    Ok(())
}
