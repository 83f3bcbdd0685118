//! A few pooled connections that every request shares, for the hot single-statement reads.
//!
//! A connection taken from the pool serves one request at a time: each query is a round
//! trip that wakes a PostgreSQL backend process and then our worker again. Under load that
//! means as many busy backends as requests in flight, each woken once per query — on two
//! cores the wake-ups, not the queries, were where the time went (see `bench/RESULTS.md`).
//! tokio-postgres pipelines concurrent queries issued on one client: they leave in one write
//! and the backend answers them back to back. So the token-owner lookup of `/auth/me` and
//! the other bearer-authenticated operations runs on [`SHARED_CONNECTIONS`] connections of
//! their own small pool, kept checked out, instead of checking one out of the main pool per
//! request — and [`super::owners`] goes further, answering the lookups that queue up
//! meanwhile with one statement. Being a separate pool, they never take
//! capacity from the other operations: an instance opens at most
//! `DB_POOL_SIZE + DB_MAX_OVERFLOW + 2` connections.
//!
//! Only self-contained statements belong here: no transactions (they would interleave) and
//! nothing slow (it would hold up the queries pipelined behind it). The bounds of
//! [`Database::run`] hold here too: getting a connection waits at most the pool timeout, and
//! if PostgreSQL does not answer a statement within it (plus the grace) the statement is
//! cancelled and the connection retired — taken out of its slot at once and detached from the
//! pool when its last user is done, so a connection with a statement stuck in flight is
//! never handed out again. A connection found closed (a database restart) is replaced.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use deadpool_postgres::Object;

use super::{Database, UNANSWERED_GRACE};
use crate::errors::ApiError;

/// How many connections the hot reads share. Two keep both cores' worth of PostgreSQL busy
/// while batching deeply; more only adds backends to wake (measured in `bench/RESULTS.md`).
pub const SHARED_CONNECTIONS: usize = 2;

/// A pooled connection shared by many requests.
struct SharedConn {
    client: Option<Object>,
    /// For asking PostgreSQL to stop a statement that went unanswered.
    cancel: tokio_postgres::CancelToken,
    /// Set when a statement on it went unanswered: it must not return to the pool.
    retired: AtomicBool,
}

impl Drop for SharedConn {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Relaxed)
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

/// One shared connection's place: the connection, and a lock that lets one request at a
/// time replace it while the others wait for the replacement.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<SharedConn>>>,
    refill: tokio::sync::Mutex<()>,
}

pub struct Shared {
    db: Database,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl Shared {
    /// Connections are taken from the pool lazily, on first use of each slot.
    pub fn new(db: Database, connections: usize) -> Shared {
        Shared {
            db,
            slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The longest a statement on a shared connection may go unanswered before it is given
    /// up and cancelled: the pool timeout, plus the same grace as [`Database::run`]'s.
    pub fn answer_limit(&self) -> std::time::Duration {
        self.db.timeout + UNANSWERED_GRACE
    }

    /// Runs one self-contained statement (or a few) on a shared connection.
    pub async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&Object) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let conn = self.connection(slot).await?;
        let client = conn
            .client
            .as_ref()
            .expect("a live shared connection has its client");
        let limit = self.answer_limit();
        match tokio::time::timeout(limit, work(client)).await {
            Ok(result) => result,
            Err(_) => {
                conn.retired.store(true, Ordering::Relaxed);
                // Nothing on PostgreSQL's side limits a read outside a transaction (the
                // statement timeout is per transaction, see `super`): ask it to stop, as
                // `Database::run` does, so the statement does not run on unbounded.
                let (cancel, tls, bound) =
                    (conn.cancel.clone(), self.db.tls.clone(), self.db.timeout);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(bound, cancel.cancel_query(tls)).await;
                });
                let mut current = lock(&slot.current);
                if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    *current = None;
                }
                Err(ApiError::Unavailable(anyhow!(
                    "the database did not answer within {limit:?}"
                )))
            }
        }
    }

    async fn connection(&self, slot: &Slot) -> Result<Arc<SharedConn>, ApiError> {
        if let Some(conn) = live(slot) {
            return Ok(conn);
        }
        let _refilling = slot.refill.lock().await;
        if let Some(conn) = live(slot) {
            return Ok(conn); // another request replaced it while we waited
        }
        // Let go of the dead connection first: the pool only has room for a replacement
        // once it is back (deadpool then sees it closed and opens a new one).
        *lock(&slot.current) = None;
        let client = match tokio::time::timeout(self.db.timeout, self.db.pool.get()).await {
            Ok(got) => got?,
            Err(_) => {
                return Err(ApiError::Unavailable(anyhow!(
                    "no database connection within {:?}",
                    self.db.timeout
                )));
            }
        };
        let fresh = Arc::new(SharedConn {
            cancel: client.cancel_token(),
            client: Some(client),
            retired: AtomicBool::new(false),
        });
        *lock(&slot.current) = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

fn live(slot: &Slot) -> Option<Arc<SharedConn>> {
    lock(&slot.current)
        .as_ref()
        .filter(|c| is_live(c))
        .map(Arc::clone)
}

fn is_live(conn: &SharedConn) -> bool {
    !conn.retired.load(Ordering::Relaxed) && conn.client.as_ref().is_some_and(|c| !c.is_closed())
}

/// The slot's lock is never held across an await, so poisoning can only come from a bug
/// elsewhere; the slot's content is still valid then.
fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
