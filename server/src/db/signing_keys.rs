//! The `signing_keys` table (`sql/0016_signing_keys.sql`): reading the keys an instance
//! holds, the first key of an asymmetric deployment, and the moves of `jobpath-server
//! keys …`, each with its security event and a `NOTIFY` that makes every instance re-read
//! the table ([`CHANNEL`]).
//!
//! Every move is one transaction that locks the rows it reads, so two operators (or two
//! instances starting at once) cannot both win: the unique index on the active state is
//! the last word on "exactly one active key".

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Database;
use super::typed::Typed as _;
use crate::auth::signing::{KeyAlgorithm, KeyState, NewKey, Sealer, StoredKey};
use crate::errors::ApiError;

/// The channel instances `LISTEN` on for key changes.
pub const CHANNEL: &str = "signing_keys";

const NOTIFY: &str = "SELECT pg_notify('signing_keys', '')";

/// A security event of a key move: no user, no request; the reason names the key.
const EVENT: &str = "INSERT INTO auth_events (kind, reason) VALUES ($1, $2)";

/// Serialises the moves that change which key is active: the first-key check of instances
/// starting together, and activations (a transaction-level lock: it ends with the
/// transaction, so a pooler can carry it).
const KEYS_LOCK: &str = "SELECT pg_advisory_xact_lock(7305916240113)";

/// Every key not revoked, as the key set is built from them.
pub async fn load(db: &Database) -> Result<Vec<StoredKey>, ApiError> {
    db.run(async |client| {
        let rows = client
            .rows(
                "SELECT kid, algorithm, state, private_key, public_jwk::text, created_at
                 FROM signing_keys WHERE state <> 'revoked'",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let algorithm: &str = row.get(1);
                let state: &str = row.get(2);
                let jwk: &str = row.get(4);
                Ok(StoredKey {
                    kid: row.get(0),
                    algorithm: KeyAlgorithm::parse(algorithm).ok_or_else(|| {
                        ApiError::Internal(anyhow::anyhow!("signing key algorithm {algorithm}"))
                    })?,
                    state: KeyState::parse(state).ok_or_else(|| {
                        ApiError::Internal(anyhow::anyhow!("signing key state {state}"))
                    })?,
                    sealed: row.get(3),
                    public_jwk: serde_json::from_str(jwk)
                        .map_err(|e| ApiError::Internal(e.into()))?,
                    created_at: row.get(5),
                })
            })
            .collect()
    })
    .await
}

/// One key as `keys list` shows it.
pub struct Listed {
    pub kid: String,
    pub algorithm: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Every key, revoked ones too, oldest first.
pub async fn list(db: &Database) -> Result<Vec<Listed>, ApiError> {
    db.run(async |client| {
        let rows = client
            .rows(
                "SELECT kid, algorithm, state, created_at, activated_at, retired_at, revoked_at
                 FROM signing_keys ORDER BY created_at, kid",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Listed {
                kid: row.get(0),
                algorithm: row.get(1),
                state: row.get(2),
                created_at: row.get(3),
                activated_at: row.get(4),
                retired_at: row.get(5),
                revoked_at: row.get(6),
            })
            .collect())
    })
    .await
}

const INSERT: &str =
    "INSERT INTO signing_keys (kid, algorithm, state, private_key, public_jwk, activated_at)
     VALUES ($1, $2, $3, $4, $5::jsonb, CASE WHEN $3 = 'active' THEN now() END)";

/// Adds `key` in standby: published from the next re-read on, signing nothing.
pub async fn create(db: &Database, key: &NewKey) -> Result<(), ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        insert(&tx, key, KeyState::Standby).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

async fn insert(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &NewKey,
    state: KeyState,
) -> Result<(), ApiError> {
    tx.exec(
        INSERT,
        &[
            &key.kid,
            &key.algorithm.as_str(),
            &state.as_str(),
            &key.sealed,
            &key.public_jwk.to_string(),
        ],
    )
    .await?;
    let reason = format!("{} {}", key.kid, key.algorithm.as_str());
    tx.exec(EVENT, &[&"signing_key_created", &reason]).await?;
    if state == KeyState::Active {
        tx.exec(EVENT, &[&"signing_key_activated", &reason]).await?;
    }
    tx.exec(NOTIFY, &[]).await?;
    Ok(())
}

/// What start-up found or did about the active key of an asymmetric deployment.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstKey {
    /// A key is active already.
    Present,
    /// The table was empty: this one was made and activated.
    Created(String),
    /// Keys exist (revoked ones count: verifiers have seen this deployment) but none is
    /// active: an operator must choose (`keys activate`, after `keys create` if need be).
    NoneActive(Vec<String>),
}

/// Makes sure an asymmetric deployment has an active key: the very first start makes one
/// (there is no verifier yet whose cache it could miss, so it is active at once).
pub async fn ensure_first(
    db: &Database,
    algorithm: KeyAlgorithm,
    sealer: &Sealer,
) -> Result<FirstKey, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        tx.exec(KEYS_LOCK, &[]).await?;
        let rows = tx.rows("SELECT kid, state FROM signing_keys", &[]).await?;
        if rows.iter().any(|r| r.get::<_, &str>(1) == "active") {
            return Ok(FirstKey::Present);
        }
        if !rows.is_empty() {
            return Ok(FirstKey::NoneActive(
                rows.iter().map(|r| r.get(0)).collect(),
            ));
        }
        let key = crate::auth::signing::generate(algorithm, sealer);
        insert(&tx, &key, KeyState::Active).await?;
        tx.commit().await?;
        Ok(FirstKey::Created(key.kid))
    })
    .await
}

/// Seals the active key `kid` again (after a secret rotation), if its row still holds
/// `old`: two instances with different secrets never undo each other's sealing.
pub async fn reseal(db: &Database, kid: &str, old: &[u8], sealed: &[u8]) -> Result<(), ApiError> {
    db.run(async |client| {
        client
            .bounded(client.exec(
                "UPDATE signing_keys SET private_key = $3
                  WHERE kid = $1 AND state = 'active' AND private_key = $2",
                &[&kid, &old, &sealed],
            ))
            .await?;
        Ok(())
    })
    .await
}

/// The outcome of a key move.
#[derive(Debug, PartialEq, Eq)]
pub enum Move {
    /// Done; for `activate`, the key it retired.
    Done {
        retired: Option<String>,
    },
    NoSuchKey,
    /// The key is in a state this move does not start from.
    WrongState(KeyState),
    /// Its safety window has not passed: allowed from this moment on (or with `--force`).
    TooSoon(DateTime<Utc>),
}

/// Locks `kid`'s row; its state, when it was published and when it was retired.
async fn lock(
    tx: &deadpool_postgres::Transaction<'_>,
    kid: &str,
) -> Result<
    Option<(
        KeyState,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
    )>,
    ApiError,
> {
    let Some(row) = tx
        .opt(
            "SELECT state, created_at, retired_at, now() FROM signing_keys WHERE kid = $1 FOR UPDATE",
            &[&kid],
        )
        .await?
    else {
        return Ok(None);
    };
    let state: &str = row.get(0);
    let state = KeyState::parse(state)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("signing key state {state}")))?;
    Ok(Some((state, row.get(1), row.get(2), row.get(3))))
}

fn after(t: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX)
}

/// Makes the standby key `kid` the active one, retiring the key active until now. Refused
/// before `kid` has been published for `published_for` (verifiers' caches must have it),
/// unless `force`.
pub async fn activate(
    db: &Database,
    kid: &str,
    published_for: Duration,
    force: bool,
) -> Result<Move, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        // Activations one at a time: row locks alone would let two that waited on the
        // same active key both find none once it was retired, and the second would then
        // break the one-active index instead of retiring the first's key.
        tx.exec(KEYS_LOCK, &[]).await?;
        let Some((state, created_at, _, now)) = lock(&tx, kid).await? else {
            return Ok(Move::NoSuchKey);
        };
        if state != KeyState::Standby {
            return Ok(Move::WrongState(state));
        }
        let ready = after(created_at, published_for);
        if now < ready && !force {
            return Ok(Move::TooSoon(ready));
        }
        let retired: Option<String> = tx
            .opt(
                "UPDATE signing_keys SET state = 'retired', retired_at = now()
                 WHERE state = 'active' RETURNING kid",
                &[],
            )
            .await?
            .map(|row| row.get(0));
        tx.exec(
            "UPDATE signing_keys SET state = 'active', activated_at = now() WHERE kid = $1",
            &[&kid],
        )
        .await?;
        let forced = if now < ready { " (forced)" } else { "" };
        tx.exec(
            EVENT,
            &[&"signing_key_activated", &format!("{kid}{forced}")],
        )
        .await?;
        if let Some(old) = &retired {
            tx.exec(
                EVENT,
                &[
                    &"signing_key_retired",
                    &format!("{old} (replaced by {kid})"),
                ],
            )
            .await?;
        }
        tx.exec(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(Move::Done { retired })
    })
    .await
}

/// Retires the standby key `kid` without its ever signing. The active key is retired only
/// by activating its successor, so an asymmetric deployment always has one.
pub async fn retire(db: &Database, kid: &str) -> Result<Move, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        let Some((state, ..)) = lock(&tx, kid).await? else {
            return Ok(Move::NoSuchKey);
        };
        if state != KeyState::Standby {
            return Ok(Move::WrongState(state));
        }
        tx.exec(
            "UPDATE signing_keys SET state = 'retired', retired_at = now() WHERE kid = $1",
            &[&kid],
        )
        .await?;
        tx.exec(EVENT, &[&"signing_key_retired", &kid]).await?;
        tx.exec(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(Move::Done { retired: None })
    })
    .await
}

/// Revokes `kid`: unpublished, and its tokens refused everywhere from the next re-read.
/// A retired key is refused until `tokens_live_for` after its retirement (its tokens could
/// still be valid, or cached keys still in use), unless `force`; a standby key never
/// signed, so it goes at once; the active key never (activate its successor first).
pub async fn revoke(
    db: &Database,
    kid: &str,
    tokens_live_for: Duration,
    force: bool,
) -> Result<Move, ApiError> {
    db.run(async |client| {
        let tx = client.begin().await?;
        let Some((state, _, retired_at, now)) = lock(&tx, kid).await? else {
            return Ok(Move::NoSuchKey);
        };
        let mut forced = "";
        match (state, retired_at) {
            (KeyState::Standby, _) => {}
            (KeyState::Retired, Some(retired_at)) => {
                let ready = after(retired_at, tokens_live_for);
                if now < ready {
                    if !force {
                        return Ok(Move::TooSoon(ready));
                    }
                    forced = " (forced)";
                }
            }
            (state, _) => return Ok(Move::WrongState(state)),
        }
        tx.exec(
            "UPDATE signing_keys SET state = 'revoked', revoked_at = now() WHERE kid = $1",
            &[&kid],
        )
        .await?;
        tx.exec(EVENT, &[&"signing_key_revoked", &format!("{kid}{forced}")])
            .await?;
        tx.exec(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(Move::Done { retired: None })
    })
    .await
}
