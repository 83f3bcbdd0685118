//! Background chores of a running server, on one timer: closing idle overflow connections
//! of the pool, and pruning what has outlived its use — ended sessions, security events past
//! `EVENT_RETENTION_DAYS`, rate-limit counters of ended windows. Every instance runs them;
//! the deletes are idempotent, so instances sharing a database need no coordination.

use std::sync::Arc;
use std::time::Duration;

use crate::db;
use crate::state::AppState;

/// How often idle overflow connections are closed, and old sessions pruned (every 20th).
const EVERY: Duration = Duration::from_secs(30);

/// Runs the chores, every [`EVERY`], until the task is aborted (at shutdown).
pub async fn run(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(EVERY);
    for n in 0u64.. {
        tick.tick().await;
        db::trim_overflow(&state.db, state.config.db_pool_size, EVERY);
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
        }
        // Counters of ended windows are dead weight: drop them about once a minute.
        if n % 2 == 0 {
            let window = state.config.rate_limits.window;
            if let Err(e) = db::limits::prune(&state.db, window).await {
                tracing::warn!(error = %e, "pruning rate-limit counters failed");
            }
        }
    }
}
