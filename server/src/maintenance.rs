//! Background chores of a running server, on one timer: closing idle overflow connections
//! of the pool, pruning what has outlived its use — ended sessions, security events past
//! `EVENT_RETENTION_DAYS`, rate-limit counters of ended windows, delivered emails, used
//! one-time secrets, the new addresses of ended email changes, accounts deleted more than
//! `ACCOUNT_PURGE_DAYS` ago — and wrapping password
//! hashes of before the pepper (`auth::hasher`) at start-up and hourly. Every instance runs
//! them; each change is idempotent or compare-and-set, so instances sharing a database need
//! no coordination.

use std::sync::Arc;
use std::time::Duration;

use crate::db;
use crate::state::AppState;

/// How long delivered and abandoned emails stay in the outbox, for investigation (their
/// secrets are erased at once; the per-recipient limit counts the last hour).
const OUTBOX_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often idle overflow connections are closed, and old sessions pruned (every 20th).
const EVERY: Duration = Duration::from_secs(30);

/// Runs the chores, every [`EVERY`], until the task is aborted (at shutdown).
pub async fn run(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(EVERY);
    for n in 0u64.. {
        tick.tick().await;
        db::trim_overflow(&state.db, state.config.db_pool_size, EVERY);
        // The first tick is at once: a database of before the pepper is wrapped at the
        // first start, not at its owners' logins. Then hourly, for hashes that instances
        // of an older version make during a rolling deploy.
        if n % 120 == 0 {
            match db::users::wrap_legacy_hashes(&state.db, |h| state.hasher.wrap_v1(h)).await {
                Ok(0) => {}
                Ok(wrapped) => {
                    tracing::info!(wrapped, "wrapped password hashes of before the pepper")
                }
                Err(e) => tracing::warn!(
                    error = %e.internal_reason(),
                    "wrapping password hashes of before the pepper failed"
                ),
            }
        }
        if n % 20 == 0 {
            match db::sessions::prune(&state.db).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned ended sessions"),
                Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
            }
            match db::events::prune(&state.db, state.config.event_retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old security events"),
                Err(e) => tracing::warn!(error = %e, "pruning security events failed"),
            }
            match db::outbox::prune(&state.db, OUTBOX_KEPT).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned delivered emails and used secrets"),
                Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
            }
            // Before the secrets' own prune would cascade to them a day later: the new
            // address of an expired change is erased within minutes.
            match db::email_change::prune(&state.db).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "erased the addresses of ended email changes"),
                Err(e) => tracing::warn!(error = %e, "pruning ended email changes failed"),
            }
            // Instances purging together split the rows (`db::accounts::purge`).
            match db::accounts::purge(&state.db, state.config.account_purge).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged deleted accounts"),
                Err(e) => tracing::warn!(error = %e, "purging deleted accounts failed"),
            }
        }
        // Counters of ended windows are dead weight: drop them about once a minute, and
        // the passkey ceremonies nobody finished with them (sign-in options are public:
        // their rows are bounded by the per-IP limit and by this).
        if n % 2 == 0 {
            match db::passkeys::prune(&state.db).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned expired passkey ceremonies"),
                Err(e) => tracing::warn!(error = %e, "pruning passkey ceremonies failed"),
            }
            let window = state.config.rate_limits.window;
            if let Err(e) = db::limits::prune(&state.db, window).await {
                tracing::warn!(error = %e, "pruning rate-limit counters failed");
            }
        }
    }
}
