//! Applies the numbered SQL files of `sql/` (embedded at build time by `build.rs`).
//!
//! All pending migrations run in one transaction that first takes a PostgreSQL advisory
//! lock, so instances starting together apply each file exactly once and a failure leaves
//! nothing half-applied. Each applied file's SHA-256 is recorded; a file edited after it was
//! applied is a start-up error (add a new migration instead).

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
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
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
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let mut done = Vec::new();
    for m in MIGRATIONS {
        let checksum = checksum(m.sql);
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, recorded)) if *recorded == checksum => continue,
            Some(_) => bail!(
                "migration {:04}_{}.sql was changed after it was applied; add a new migration instead",
                m.version,
                m.name
            ),
            None => {
                tx.batch_execute(m.sql)
                    .await
                    .with_context(|| format!("applying {:04}_{}.sql", m.version, m.name))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &checksum],
                )
                .await?;
                done.push(m.version);
            }
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
    tx.commit().await.context("committing migrations")?;
    Ok(done)
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
    fn migrations_are_embedded_in_order() {
        assert!(!MIGRATIONS.is_empty());
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }
}
