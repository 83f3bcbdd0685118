//! Applies the numbered SQL files of `sql/` (embedded at build time by `build.rs`).
//!
//! All pending migrations run in one transaction that first takes a PostgreSQL advisory
//! lock, so instances starting together apply each file exactly once and a failure leaves
//! nothing half-applied. Each applied file's SHA-256 is recorded; a file edited after it was
//! applied is a start-up error (add a new migration instead).
//!
//! [`verify`] is the read-only alternative for `DB_MIGRATIONS=verify`: the same checks, no
//! lock and no DDL, and any pending migration is an error — so the role the server runs as
//! needs no right to change the schema, and `jobpath-server migrate` (run as a role that
//! has it) is the one thing that does.

use super::typed::Typed as _;
use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

/// One embedded `sql/NNNN_name.sql` file.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Arbitrary but fixed: the key every instance locks on ("jobpath" in ASCII).
const LOCK_KEY: i64 = 0x006a_6f62_7061_7468;

/// Applies what is pending; returns the versions applied by this call.
pub async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<i64>> {
    let tx = client.transaction().await?;
    tx.exec("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint      NOT NULL PRIMARY KEY,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<(i64, String)> = tx
        .rows("SELECT version, checksum FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let mut done = Vec::new();
    for m in pending(&applied)? {
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("applying {:04}_{}.sql", m.version, m.name))?;
        tx.exec(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        done.push(m.version);
    }
    tx.commit().await.context("committing migrations")?;
    Ok(done)
}

/// Checks, without changing anything, that every migration of this build is applied
/// (unchanged) and no unknown one is.
pub async fn verify(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let recorded: bool = client
        .one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let applied: Vec<(i64, String)> = match recorded {
        false => Vec::new(),
        true => client
            .rows("SELECT version, checksum FROM schema_migrations", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    };
    let missing: Vec<String> = pending(&applied)
        .context("DB_MIGRATIONS=verify")?
        .iter()
        .map(|m| format!("{:04}_{}.sql", m.version, m.name))
        .collect();
    if !missing.is_empty() {
        bail!(
            "DB_MIGRATIONS=verify: the database lacks {}; apply them with `jobpath-server \
             migrate` (as a role that may change the schema), or set DB_MIGRATIONS=apply",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The migrations of this build not yet in `applied` (version, checksum), in order. An
/// applied file that has changed since, or a version this build does not know, is an error.
fn pending(applied: &[(i64, String)]) -> anyhow::Result<Vec<&'static Migration>> {
    let mut todo = Vec::new();
    for m in MIGRATIONS {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, recorded)) if *recorded == checksum(m.sql) => {}
            Some(_) => bail!(
                "migration {:04}_{}.sql was changed after it was applied; add a new migration instead",
                m.version,
                m.name
            ),
            None => todo.push(m),
        }
    }
    if let Some((v, _)) = applied
        .iter()
        .find(|(v, _)| MIGRATIONS.iter().all(|m| m.version != *v))
    {
        bail!(
            "the database has migration {v}, which this build does not know: it is older than the schema"
        );
    }
    Ok(todo)
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_lists_what_is_missing_and_refuses_changed_or_unknown_migrations() {
        assert_eq!(pending(&[]).unwrap().len(), MIGRATIONS.len());
        let all: Vec<(i64, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.version, checksum(m.sql)))
            .collect();
        assert!(pending(&all).unwrap().is_empty());
        assert_eq!(
            pending(&all[..1]).unwrap().first().map(|m| m.version),
            MIGRATIONS.get(1).map(|m| m.version)
        );
        let mut changed = all.clone();
        changed[0].1 = "edited".into();
        assert!(format!("{:#}", pending(&changed).unwrap_err()).contains("changed"));
        let mut unknown = all;
        unknown.push((9999, "x".into()));
        assert!(format!("{:#}", pending(&unknown).unwrap_err()).contains("9999"));
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        assert!(!MIGRATIONS.is_empty());
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }
}
