//! Keeping every instance's signing keys current, and `jobpath-server keys …`.
//!
//! An instance builds its [`KeySet`] from the `signing_keys` table at start-up, and again
//! whenever a key command `NOTIFY`s [`CHANNEL`] and every [`RELOAD_EVERY`] in case a
//! notification was lost (the `LISTEN` connection dropped, a pooler in between): a key
//! change reaches every instance within seconds, and within [`RELOAD_EVERY`] at worst.
//! A re-read that fails (the database is away, a key no longer opens) keeps the set it had:
//! tokens keep verifying through a database outage.
//!
//! The key commands' safety windows come from the configuration, so the command is run
//! with the servers' own `JWKS_MAX_AGE_SECONDS` and `ACCESS_TOKEN_EXPIRE_MINUTES`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::auth::signing::{self, KeyAlgorithm, KeySet, Sealer};
use crate::auth::token::TokenKeys;
use crate::cli::KeysCommand;
use crate::config::Config;
use crate::db::signing_keys::{self as keys, CHANNEL, FirstKey, Move};
use crate::db::{self, Database};
use crate::state::AppState;

/// The longest a key change can go unnoticed when notifications are lost.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// How long after a key is published `keys activate` waits on top of the JWKS's max-age:
/// a verifier that fetched the set just before the key appeared has refetched by then.
pub const PUBLISH_MARGIN: Duration = Duration::from_secs(600);

/// The sealer of this configuration's signing keys: only a server that signs with them
/// (an asymmetric `JWT_ALGORITHM`) opens them.
pub fn sealer(config: &Config) -> Option<Sealer> {
    config.jwt_algorithm.map(|_| opener(config))
}

/// What opens (and seals) keys under this configuration's secrets, whatever it signs with.
fn opener(config: &Config) -> Sealer {
    Sealer::new(
        config.jwt_secret.expose().as_bytes(),
        config
            .jwt_secret_previous
            .as_ref()
            .map(|p| p.expose().as_bytes()),
    )
}

/// Start-up: the first key of an asymmetric deployment if it has none, then the set.
pub async fn prepare(
    db: &Database,
    config: &Config,
    tokens: &TokenKeys,
    sealer: Option<&Sealer>,
) -> anyhow::Result<()> {
    if let (Some(algorithm), Some(sealer)) = (config.jwt_algorithm, sealer) {
        match keys::ensure_first(db, algorithm, sealer).await? {
            FirstKey::Present => {}
            FirstKey::Created(kid) => {
                tracing::info!(%kid, algorithm = algorithm.as_str(), "created the first signing key");
            }
            FirstKey::NoneActive(kids) => bail!(
                "JWT_ALGORITHM={}: no signing key is active (the table has {}); make one with \
                 `jobpath-server keys create` if need be, and activate it with \
                 `jobpath-server keys activate KID`",
                algorithm.as_str(),
                kids.join(", ")
            ),
        }
    }
    reload(db, tokens, sealer).await
}

/// Builds the set from the table and installs it; seals the active key again if it was
/// sealed under `JWT_SECRET_KEY_PREVIOUS`.
pub async fn reload(
    db: &Database,
    tokens: &TokenKeys,
    sealer: Option<&Sealer>,
) -> anyhow::Result<()> {
    let rows = keys::load(db).await?;
    let (set, reseal) = match KeySet::build(&rows, sealer) {
        Ok(built) => built,
        // The active key does not open here (sealed under a secret this instance lacks):
        // the published and verifying keys must still follow the table — a revocation
        // must never wait for this to be mended — and the key held keeps signing only
        // while the table still says it is the active one.
        Err(e) if sealer.is_some() => {
            let held = tokens.keys().signer.clone();
            let still_active = held.as_ref().is_some_and(|held| {
                rows.iter()
                    .any(|r| r.kid == held.kid && r.state == signing::KeyState::Active)
            });
            let (set, _) = KeySet::build(&rows, None)?;
            tokens.install(set.with_signer(if still_active { held } else { None }));
            return Err(e.context("opening the active signing key"));
        }
        Err(e) => return Err(e),
    };
    if tokens.asymmetric() && set.signer.is_none() {
        bail!("no signing key is active; activate one with `jobpath-server keys activate KID`");
    }
    let changed = tokens.keys().etag != set.etag;
    tokens.install(set);
    if changed {
        tracing::info!(keys = rows.len(), "signing keys loaded");
    }
    if let (Some((kid, secret)), Some(sealer)) = (reseal, sealer) {
        let old = rows
            .iter()
            .find(|r| r.kid == kid)
            .map(|r| r.sealed.clone())
            .unwrap_or_default();
        keys::reseal(db, &kid, &old, &sealer.seal(&kid, &secret)).await?;
        tracing::info!(%kid, "sealed the active signing key under the current JWT_SECRET_KEY");
    }
    Ok(())
}

/// Re-reads the keys on every notification and every [`RELOAD_EVERY`], until aborted.
pub async fn watch(state: Arc<AppState>, target: db::connect::Target, tls: db::tls::Tls) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let listener = tokio::spawn(db::outbox::listen(target, tls, CHANNEL, Arc::clone(&wake)));
    let _stop_listening = AbortOnDrop(listener);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(RELOAD_EVERY) => {}
        }
        if let Err(e) = reload(&state.db, &state.tokens, state.sealer.as_ref()).await {
            tracing::warn!(error = %format!("{e:#}"), "re-reading the signing keys failed; keeping the ones held");
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a retired key's tokens may still be presented and its public half still be
/// cached: one access-token lifetime, one JWKS max-age, the longest an instance that
/// missed the notification signs on with it ([`RELOAD_EVERY`]), and the clock skew
/// tolerated on both ends of a token's life.
pub fn tokens_live_for(config: &Config) -> Duration {
    config.access_token_ttl
        + config.jwks_max_age
        + RELOAD_EVERY
        + 2 * Duration::from_secs(crate::auth::token::LEEWAY_SECS)
}

/// How long a key must have been published before `keys activate` takes it.
pub fn publish_for(config: &Config) -> Duration {
    config.jwks_max_age + PUBLISH_MARGIN
}

/// Runs `jobpath-server keys …` against `db`; returns what to print.
pub async fn command(
    db: &Database,
    config: &Config,
    command: &KeysCommand,
) -> anyhow::Result<String> {
    let explain = |kid: &str, outcome: Move, done: String| -> anyhow::Result<String> {
        match outcome {
            Move::Done { .. } => Ok(done),
            Move::NoSuchKey => bail!("no signing key has the kid {kid}"),
            Move::WrongState(state) => bail!(
                "signing key {kid} is {}: {}",
                state.as_str(),
                match command {
                    KeysCommand::Activate { .. } => "only a standby key can be activated",
                    KeysCommand::Retire(_) => {
                        "only a standby key can be retired; the active key is retired by \
                         activating its successor"
                    }
                    _ => {
                        "only a standby or retired key can be revoked; activate a successor \
                         first"
                    }
                }
            ),
            Move::TooSoon(at) => bail!(
                "signing key {kid} cannot be {} before {} (verifiers may still {}); wait, or \
                 pass --force for an incident",
                match command {
                    KeysCommand::Activate { .. } => "activated",
                    _ => "revoked",
                },
                at.to_rfc3339(),
                match command {
                    KeysCommand::Activate { .. } => "hold a JWKS without it",
                    _ => "be shown live tokens it signed",
                }
            ),
        }
    };
    match command {
        KeysCommand::List => {
            let listed = keys::list(db).await?;
            if listed.is_empty() {
                return Ok(format!(
                    "no signing keys (JWT_ALGORITHM={}); create one with `jobpath-server keys create`",
                    config.jwt_algorithm.map_or("HS256", |a| a.as_str())
                ));
            }
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                )
            };
            let mut out =
                String::from("KID\tALGORITHM\tSTATE\tCREATED\tACTIVATED\tRETIRED\tREVOKED\n");
            for k in listed {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                    k.kid,
                    k.algorithm,
                    k.state,
                    time(Some(k.created_at)),
                    time(k.activated_at),
                    time(k.retired_at),
                    time(k.revoked_at)
                ));
            }
            Ok(out.trim_end().to_owned())
        }
        KeysCommand::Create { algorithm } => {
            let algorithm = algorithm
                .or(config.jwt_algorithm)
                .unwrap_or(KeyAlgorithm::Es256);
            if config.jwt_secret_generated {
                bail!("set JWT_SECRET_KEY first: the new key is sealed with a key derived from it");
            }
            // Sealed under the current secret: `seal` never uses the previous one.
            let key = signing::generate(algorithm, &opener(config));
            keys::create(db, &key).await.context("storing the key")?;
            let wait = publish_for(config);
            Ok(format!(
                "{}\tcreated ({}, standby): published now, activate it after {} minutes with \
                 `jobpath-server keys activate {}`",
                key.kid,
                algorithm.as_str(),
                wait.as_secs().div_ceil(60),
                key.kid
            ))
        }
        KeysCommand::Activate { kid, force } => {
            // A key these servers cannot open would leave them signing with the old one:
            // refuse it here (created from a shell with another JWT_SECRET_KEY, say).
            if let Some(row) = keys::load(db).await?.iter().find(|r| &r.kid == kid) {
                opener(config)
                    .open(kid, &row.sealed)
                    .context("refusing to activate a key this configuration cannot open")?;
            }
            let outcome = keys::activate(db, kid, publish_for(config), *force).await?;
            let done = match &outcome {
                Move::Done { retired: Some(old) } => format!(
                    "{kid}\tactive: it signs from now on (every instance within seconds); {old} \
                     is retired and still verifies"
                ),
                _ => format!("{kid}\tactive: it signs from now on (every instance within seconds)"),
            };
            explain(kid, outcome, done)
        }
        KeysCommand::Retire(kid) => {
            let outcome = keys::retire(db, kid).await?;
            explain(
                kid,
                outcome,
                format!("{kid}\tretired: published, verifies, never signs"),
            )
        }
        KeysCommand::Revoke { kid, force } => {
            let outcome = keys::revoke(db, kid, tokens_live_for(config), *force).await?;
            explain(
                kid,
                outcome,
                format!(
                    "{kid}\trevoked: unpublished; its tokens are refused everywhere within seconds"
                ),
            )
        }
    }
}
