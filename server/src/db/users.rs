//! Accounts: creation, the login look-up, and password-hash upgrades.
//!
//! Each function is one statement (one round trip, on the unnamed statement: `super::typed`).

use super::typed::Typed as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{Database, events, outbox};
use crate::auth::credentials::Email;
use crate::call::Call;
use crate::errors::ApiError;
use crate::mail::secrets::Issued;

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
    pub email_verified: bool,
}

/// Inserts an account and its `signup` event — and, with `verification` (the secret and
/// its lifetime), its verification secret, the email that carries it, the
/// `email_verification_sent` event and the sender's wake-up — in one statement; the unique
/// index on `lower(email)` decides races.
pub async fn insert(
    db: &Database,
    email: &Email,
    password_hash: &str,
    verification: Option<(&Issued, std::time::Duration)>,
    call: &Call,
) -> Result<NewUser, ApiError> {
    let secret = verification.map(|(issued, _)| issued);
    db.run(async |client| {
        let sql = format!(
            "WITH u AS (
                 INSERT INTO users (email, password_hash) VALUES ($1, $2)
                 RETURNING id, email, created_at
             ), e AS (
                 -- In this order, so the events' ids are: the signup, then the email.
                 {event} SELECT kind, NULL, id, NULL, $3, $4, $5
                   FROM u, (VALUES (1, 'signup'), (2, 'email_verification_sent')) AS k(n, kind)
                  WHERE n = 1 OR $6::uuid IS NOT NULL
                  ORDER BY n
             ), s AS (
                 INSERT INTO one_time_secrets (id, user_id, purpose, token_hash, code_hash, expires_at)
                 SELECT $6, id, 'verify_email', $7, $8, now() + make_interval(secs => $9) FROM u
                  WHERE $6::uuid IS NOT NULL
                 RETURNING expires_at
             ), o AS (
                 {queue} SELECT $10, 'verify_email', u.id, u.email, $11, s.expires_at FROM u, s
                 RETURNING id
             ), n AS (
                 {notify} FROM o
             )
             SELECT id, created_at, (SELECT count(*) FROM n) FROM u",
            event = events::INSERT,
            queue = outbox::QUEUE,
            notify = outbox::NOTIFY,
        );
        match client.bounded(client
            .one(
                &sql,
                &[
                    &email.as_str(),
                    &password_hash,
                    &call.ip(),
                    &call.user_agent,
                    &call.request_id(),
                    &secret.map(|s| s.secret_id),
                    &secret.map(|s| s.token_hash.as_slice()),
                    &secret.map(|s| s.code_hash.as_slice()),
                    &verification.map_or(0.0, |(_, ttl)| ttl.as_secs_f64()),
                    &secret.map(|s| s.outbox_id),
                    &secret.map(|s| s.seed.as_slice()),
                ],
            ))
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

/// The account of `email`, if it has one; a deleted account has none (its address is a
/// placeholder no one can log in with, and it is refused exactly as an unknown one).
pub async fn find_for_login(db: &Database, email: &Email) -> Result<Option<LoginRecord>, ApiError> {
    db.run(async |client| {
        let row = client
            .opt(
                "SELECT id, email, password_hash, is_active, credential_version,
                        email_verified_at IS NOT NULL
                   FROM users WHERE lower(email) = $1 AND deleted_at IS NULL",
                &[&email.as_str()],
            )
            .await?;
        Ok(row.map(|r| LoginRecord {
            id: r.get(0),
            email: r.get(1),
            password_hash: Arc::from(r.get::<_, &str>(2)),
            is_active: r.get(3),
            credential_version: r.get(4),
            email_verified: r.get(5),
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
        Ok(client
            .bounded(client.exec(
                "UPDATE users SET password_hash = $3, updated_at = now()
                  WHERE id = $1 AND password_hash = $2",
                &[&user_id, &old, &new],
            ))
            .await?
            == 1)
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
                    .rows(
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
                        .exec(
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
        .exec(
            "INSERT INTO key_fingerprints (name, fingerprint) VALUES ('password_pepper', $1)
             ON CONFLICT (name) DO NOTHING",
            &[&fingerprint],
        )
        .await?;
    let recorded: Vec<u8> = client
        .one(
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
