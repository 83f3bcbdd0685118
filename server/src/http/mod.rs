//! Transport: the accept loop, connections, and the request wrapper. Nothing here names a
//! handler: [`serve`] is given the dispatch step (`handlers::dispatch`) and hands it every
//! matched request.
//!
//! - [`service`]: the one infallible wrapper every request goes through.
//! - [`router`]: the route table, checked against `openapi.yaml`, with each operation's
//!   declared security.
//! - [`body`], [`response`], [`cors`]: request bodies in, responses out.
//! - [`refresh_cookie`]: the refresh token's cookie for browsers, and the origin check
//!   that keeps other sites from using it.
//! - [`client_ip`]: the client's address, through trusted proxies only.
//! - [`client_slots`]: the per-client connection cap.
//! - [`write_deadline`]: the write timeout.
//!
//! Connections are HTTP/1.1 (`http1::Builder`, whose header read timeout works, unlike
//! `auto::Builder` while it sniffs for HTTP/2). The header read timeout also closes idle
//! keep-alive connections. Shutdown stops accepting, lets in-flight requests finish within
//! the grace period, and closes idle keep-alive connections.
//!
//! At most `MAX_CONNECTIONS` connections are served at once, and at most
//! `MAX_CONNECTIONS_PER_CLIENT` of them to one client address. One more is not left waiting
//! in the kernel's backlog: it gets a 503 `service_unavailable` with `Retry-After` and is
//! closed, and the log says which limit it was over. Answering takes reading its request
//! head, so those refusals are themselves capped ([`MAX_REFUSING`]); past that a connection
//! is closed without an answer. A slot is held until the connection ends, so a connection
//! whose client stops reading is closed after `WRITE_TIMEOUT_SECONDS` without progress.

pub mod body;
pub mod client_ip;
pub mod client_slots;
pub mod cors;
pub mod refresh_cookie;
pub mod response;
pub mod router;
pub mod service;
pub mod write_deadline;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use self::client_slots::ClientSlots;
use self::response::Response;
use self::router::{Params, Target};
use self::write_deadline::{WriteDeadline, WriteStalled};
use crate::call::Call;
use crate::errors::ApiError;
use crate::state::AppState;

/// hyper's own limits on a request head. They sit above the limits the request wrapper
/// enforces (`service::MAX_HEAD_BYTES`, `service::MAX_HEADERS`), so that an oversized head
/// gets the documented JSON 431; only heads past these get hyper's bare 431 and a closed
/// connection. The field limit is hyper's default of 100: with it hyper parses headers
/// into arrays on the stack, while any other limit costs two heap allocations (~28 KiB
/// with a limit of 500) per request — the profile in `bench/RESULTS.md` showed them.
const PARSER_MAX_BUF: usize = 256 * 1024;
/// Connections over the limit that are being answered 503 at once.
const MAX_REFUSING: usize = 64;
/// How long an over-the-limit connection may take to send the request head we answer.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Which limit a connection turned away at accept was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `MAX_CONNECTIONS`.
    ServerLimit,
    /// `MAX_CONNECTIONS_PER_CLIENT`.
    ClientLimit,
}

impl Refusal {
    /// The reason in the log and in `jobpath_connections_refused_total`.
    fn reason(self) -> &'static str {
        match self {
            Refusal::ServerLimit => "server_limit",
            Refusal::ClientLimit => "client_limit",
        }
    }

    /// The internal message of the 503.
    fn message(self) -> &'static str {
        match self {
            Refusal::ServerLimit => "connection limit reached",
            Refusal::ClientLimit => "connection limit of this client address reached",
        }
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The API, the documentation pages, and `/metrics` if `METRICS_PUBLIC=true`.
    Public,
    /// Only `/metrics` (`METRICS_PORT`).
    Metrics,
}

/// Serves `listener` until `shutdown` completes, then drains in-flight requests. Every
/// matched request goes to `dispatch`.
pub async fn serve<D, Fut>(
    listener: TcpListener,
    state: Arc<AppState>,
    port: Port,
    dispatch: D,
    shutdown: impl Future<Output = ()>,
) where
    D: Fn(Arc<AppState>, Target, Call, Params, Request<Incoming>) -> Fut
        + Copy
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    let client_slots = ClientSlots::new(&state.config);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The client's own cap first: a client over it is told so even when the
                // server is full as well.
                let admitted = match client_slots.try_acquire(peer.ip()) {
                    None => Err(Refusal::ClientLimit),
                    Some(client_slot) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => Ok((slot, client_slot)),
                        Err(_) => Err(Refusal::ServerLimit),
                    },
                };
                let held = match admitted {
                    Ok(held) => held,
                    Err(refusal) => {
                        state.metrics.connection_refused(refusal.reason());
                        match Arc::clone(&refusals).try_acquire_owned() {
                            Ok(permit) => {
                                tokio::spawn(async move {
                                    refuse(stream, peer, refusal).await;
                                    drop(permit);
                                });
                            }
                            Err(_) => tracing::warn!(
                                %peer,
                                reason = refusal.reason(),
                                "{}; closing", refusal.message()
                            ),
                        }
                        continue;
                    }
                };
                let header_read_timeout = state.config.header_read_timeout;
                let write_timeout = state.config.write_timeout;
                let io = TokioIo::new(WriteDeadline::new(stream, write_timeout));
                let owner = Arc::clone(&state);
                let state = Arc::clone(&state);
                let svc = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move {
                        Ok::<_, Infallible>(match port {
                            Port::Public => service::respond(state, peer, req, dispatch).await,
                            Port::Metrics => {
                                service::respond_metrics(state, peer, req, dispatch).await
                            }
                        })
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .max_buf_size(PARSER_MAX_BUF)
                    .serve_connection(io, svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    match conn.await {
                        Err(e) if WriteStalled::caused(&e) => {
                            owner.metrics.write_timed_out();
                            tracing::warn!(
                                %peer,
                                timeout = ?write_timeout,
                                "client accepted no bytes within the write timeout; connection closed"
                            );
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                        Ok(()) => {}
                    }
                    drop(held);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = state.config.shutdown_grace;
    tracing::info!(
        ?port,
        in_flight_connections = graceful.count(),
        ?grace,
        "shutting down"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; dropping remaining connections"),
    }
}

/// Answers one request on a connection over a limit with the standard 503, then closes.
async fn refuse(stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
    tracing::warn!(
        %peer,
        reason = refusal.reason(),
        "{}; answering 503", refusal.message()
    );
    let svc = service_fn(move |_req| async move {
        let request_id = service::new_request_id();
        let err = ApiError::Unavailable(anyhow::anyhow!(refusal.message()));
        Ok::<_, Infallible>(response::into_hyper(response::finish(
            response::error(&err, &request_id),
            &request_id,
        )))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_READ_TIMEOUT)
        .max_buf_size(PARSER_MAX_BUF)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    // The request head is read, its body is not: bound the whole exchange.
    let _ = tokio::time::timeout(REFUSAL_READ_TIMEOUT * 2, conn).await;
}

#[cfg(test)]
mod panic_tests;
