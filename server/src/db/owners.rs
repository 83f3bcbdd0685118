//! Token-owner lookups, batched: the one database read of every bearer-authenticated
//! request (`/auth/me` above all).
//!
//! A request's lookup — the account, and whether the token's session is live — goes into a
//! queue. One task takes whatever has queued up and answers all of it with one execution
//! of one statement (the ids as two arrays), on one of the shared connections
//! ([`super::shared`]), while the previous batch is still running on the other. Under load
//! this is group commit for reads: PostgreSQL parses, plans and answers one message per
//! batch instead of one per request, and one write to its socket wakes one backend for a
//! whole batch. The `/auth/me` profile (`bench/RESULTS.md`) showed both costs — the
//! per-statement work in the backends, and the wake-up paid by every send — to be most of
//! what a lookup cost. When requests come one at a time, each batch holds one lookup and
//! nothing waits.
//!
//! Every lookup still makes exactly one round trip, and each is answered from its own row
//! (rows carry the lookup's position in the batch), so no request can see another's
//! result. A lookup is bounded as before: a request waits at most the pool timeout plus
//! [`UNANSWERED_GRACE`](super::UNANSWERED_GRACE) for its answer (queueing included), and
//! answers 503 otherwise. An error of the batch's statement is every lookup's error, so the
//! check fails closed: no answer, no access.
//!
//! The statement is the server's one named prepared statement (`DB_POOLER=none`, the
//! default): parsed and planned once per connection, which `bench/run` measures to be worth
//! it. Behind a pooler in transaction mode (`DB_POOLER=transaction`) it is sent unnamed like
//! every other ([`super::typed`]). Should a prepared statement vanish anyway — a pooler
//! nobody declared — the error is logged, naming the setting, and the task sends it unnamed
//! from then on.

use super::typed::Typed as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::shared::{SHARED_CONNECTIONS, Shared};
use crate::errors::ApiError;

/// Most lookups answered by one statement: enough to absorb any burst a few cores can
/// produce between two answers, small enough that one batch is a short statement.
const MAX_BATCH: usize = 128;
/// Lookups waiting for a batch before a request waits to enqueue (within its time limit).
const QUEUE: usize = 4096;
/// Batches running at once: one per shared connection, so both are busy while the next
/// batch gathers.
const IN_FLIGHT: usize = SHARED_CONNECTIONS;

/// One statement for a whole batch. A session opened on a password that has since changed
/// (its credential version behind the user's) is not live: the comparison reads rows the
/// lookup reads anyway.
/// `LIMIT 1` keeps the inner query from being flattened
/// into a join, so each lookup stays two primary-key probes, whatever the planner thinks of
/// the arrays' length.
const LOOKUP: &str = "SELECT t.i, o.id, o.email, o.is_active, o.created_at, o.live, o.verified
  FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS t(user_id, session_id, i)
  CROSS JOIN LATERAL (
       SELECT u.id, u.email, u.is_active, u.created_at, u.email_verified_at IS NOT NULL AS verified,
              s.ended_at IS NULL AND s.expires_at > now()
                AND s.credential_version = u.credential_version AS live
         FROM users u JOIN sessions s ON s.user_id = u.id
        WHERE u.id = t.user_id AND s.id = t.session_id
        LIMIT 1) o";

/// The account an access token names, and whether the token's session is still live: what
/// the guard (`auth::guard`) decides on.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub id: Uuid,
    pub email: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub session_live: bool,
    pub email_verified: bool,
}

type Reply = Result<Option<TokenOwner>, ApiError>;

struct Lookup {
    user_id: Uuid,
    session_id: Uuid,
    reply: oneshot::Sender<Reply>,
}

/// The queue of token-owner lookups, and the task that answers it. The task ends when this
/// handle is dropped and the queued lookups are answered.
pub struct OwnerLookups {
    queue: mpsc::Sender<Lookup>,
    limit: Duration,
    stats: Arc<Stats>,
}

/// What the batching has done so far: relaxed counters, one update per batch.
#[derive(Debug, Default)]
struct Stats {
    /// Whether the statement is prepared (named); cleared for good if one vanished.
    prepared: AtomicBool,
    batches: AtomicU64,
    lookups: AtomicU64,
    largest: AtomicU64,
}

/// A reading of [`OwnerLookups::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Statements run.
    pub batches: u64,
    /// Lookups those statements answered.
    pub lookups: u64,
    /// The most lookups one statement answered.
    pub largest: u64,
}

impl OwnerLookups {
    /// Starts the batching task on the current tokio runtime, over `shared`; `prepared`:
    /// send the lookup as a named prepared statement (no transaction-mode pooler between).
    pub fn start(shared: Shared, prepared: bool) -> OwnerLookups {
        let (queue, rx) = mpsc::channel(QUEUE);
        let limit = shared.answer_limit();
        let stats = Arc::new(Stats::default());
        stats.prepared.store(prepared, Ordering::Relaxed);
        tokio::spawn(batches(shared, rx, Arc::clone(&stats)));
        OwnerLookups {
            queue,
            limit,
            stats,
        }
    }

    /// How many batches ran and how large they were: whether batching happens at all is
    /// otherwise invisible, since each request gets its own answer either way.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            lookups: self.stats.lookups.load(Ordering::Relaxed),
            largest: self.stats.largest.load(Ordering::Relaxed),
        }
    }

    /// The owner of an access token naming `user_id` and `session_id`, with its session's
    /// state; `None` if the user or the session no longer exists.
    pub async fn find(&self, user_id: Uuid, session_id: Uuid) -> Reply {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            user_id,
            session_id,
            reply,
        };
        let asked = async {
            self.queue
                .send(lookup)
                .await
                .map_err(|_| ApiError::Internal(anyhow!("the lookup task has stopped")))?;
            answer
                .await
                .map_err(|_| ApiError::Internal(anyhow!("the lookup task dropped a lookup")))?
        };
        match tokio::time::timeout(self.limit, asked).await {
            Ok(reply) => reply,
            Err(_) => Err(ApiError::Unavailable(anyhow!(
                "no answer from the database within {:?}",
                self.limit
            ))),
        }
    }
}

/// Gathers queued lookups into batches and runs up to [`IN_FLIGHT`] of them at once.
async fn batches(shared: Shared, mut rx: mpsc::Receiver<Lookup>, stats: Arc<Stats>) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            first = rx.recv(), if open && running.len() < IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(lookup) => batch.push(lookup),
                        Err(_) => break,
                    }
                }
                // A request that gave up (timed out, or its client left) needs no answer.
                batch.retain(|lookup| !lookup.reply.is_closed());
                if !batch.is_empty() {
                    let size = batch.len() as u64;
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats.lookups.fetch_add(size, Ordering::Relaxed);
                    stats.largest.fetch_max(size, Ordering::Relaxed);
                    running.push(answer(&shared, batch, &stats));
                }
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

/// Runs one batch's statement and hands each lookup its row (or the batch's error).
async fn answer(shared: &Shared, batch: Vec<Lookup>, stats: &Stats) {
    let user_ids: Vec<Uuid> = batch.iter().map(|l| l.user_id).collect();
    let session_ids: Vec<Uuid> = batch.iter().map(|l| l.session_id).collect();
    let result = shared
        .run(async |client| {
            if !stats.prepared.load(Ordering::Relaxed) {
                return Ok(client.rows(LOOKUP, &[&user_ids, &session_ids]).await?);
            }
            let stmt = client.prepare_cached(LOOKUP).await?;
            match client.query(&stmt, &[&user_ids, &session_ids]).await {
                Ok(rows) => Ok(rows),
                // 26000 invalid_sql_statement_name: the server connection under this one
                // changed, which only a pooler in transaction mode does.
                Err(e) if e.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME) => {
                    if stats.prepared.swap(false, Ordering::Relaxed) {
                        tracing::error!(
                            "a prepared statement vanished: DATABASE_URL looks like a pooler \
                             in transaction mode; set DB_POOLER=transaction (the token lookup \
                             is sent unnamed from now on)"
                        );
                    }
                    Ok(client.rows(LOOKUP, &[&user_ids, &session_ids]).await?)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await;
    let owners = result.and_then(|rows| owners_by_position(&rows, batch.len()));
    match owners {
        Ok(owners) => {
            for (lookup, owner) in batch.into_iter().zip(owners) {
                let _ = lookup.reply.send(Ok(owner));
            }
        }
        Err(err) => {
            for lookup in batch {
                let _ = lookup.reply.send(Err(same_error(&err)));
            }
        }
    }
}

/// Each lookup's owner, by its position in the batch (`None`: no such user or session).
/// Decoding errors are returned, not panicked on: the task must outlive any one batch.
fn owners_by_position(
    rows: &[tokio_postgres::Row],
    len: usize,
) -> Result<Vec<Option<TokenOwner>>, ApiError> {
    let mut owners: Vec<Option<TokenOwner>> = (0..len).map(|_| None).collect();
    for row in rows {
        let position: i64 = row.try_get(0)?;
        let slot = usize::try_from(position - 1)
            .ok()
            .and_then(|i| owners.get_mut(i))
            .ok_or_else(|| {
                ApiError::Internal(anyhow!("lookup position {position} out of range"))
            })?;
        *slot = Some(TokenOwner {
            id: row.try_get(1)?,
            email: row.try_get(2)?,
            is_active: row.try_get(3)?,
            created_at: row.try_get(4)?,
            session_live: row.try_get(5)?,
            email_verified: row.try_get(6)?,
        });
    }
    Ok(owners)
}

/// The batch's error for one of its lookups: a database outage stays a 503, anything else
/// a 500; the cause text goes along for the log.
fn same_error(err: &ApiError) -> ApiError {
    match err {
        ApiError::Unavailable(cause) => ApiError::Unavailable(anyhow!("{cause:#}")),
        ApiError::Internal(cause) => ApiError::Internal(anyhow!("{cause:#}")),
        other => ApiError::Internal(anyhow!("{other}")),
    }
}
