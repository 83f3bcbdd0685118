//! The outer request wrapper: the only place that turns errors into responses.
//!
//! For every request it assigns a request id (a sane incoming `X-Request-Id` is kept when
//! a trusted proxy sent it),
//! opens a tracing span, resolves the route once, answers `OPTIONS` (a CORS preflight, or a
//! bare `OPTIONS` with `Allow`), 404 and 405 itself, hands a matched request to the
//! dispatch step it was given (`handlers::dispatch`: transport never names a handler),
//! converts any [`ApiError`] — or a panic — into the standard JSON error, finishes the
//! response ([`response::finish`]), logs one completion line with status, latency and, for
//! an error, its code and internal reason, and counts the request in the metrics. Handlers
//! just use `?`. Nothing from the request's headers or body is logged.
//!
//! The request id is a field of the request's span, so every log line written while the
//! request is handled carries it, whatever module writes it.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt as _;
use http::header::{ALLOW, CACHE_CONTROL, HeaderValue, ORIGIN, USER_AGENT};
use http::{HeaderName, Method, Request, StatusCode};
use http_body_util::Full;
use tracing::Instrument as _;

use super::cors;
use super::response::{self, Response};
use super::router::{Page, Params, Resolved, Target};
use crate::call::{self, Call};
use crate::config::Cidr;
use crate::errors::ApiError;
use crate::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits on a request head, answered with a JSON 431. Real clients send a few hundred
/// bytes; these leave room for large cookies and tracing headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;

/// Serves one request of the public port.
pub async fn respond<B, D, Fut>(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<B>,
    dispatch: D,
) -> hyper::Response<Full<Bytes>>
where
    D: FnOnce(Arc<AppState>, Target, Call, Params, Request<B>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let started = Instant::now();
    // Shared with the handler's `Call` without copying.
    let request_id: Arc<str> = request_id(&req, peer, &state.config.trusted_proxies).into();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = req.headers().get(ORIGIN).cloned();
    let span = tracing::info_span!("request", id = %request_id, %method, %path, %peer);

    async move {
        let _in_flight = state.metrics.request_started();
        let resolved = state.router.resolve(&method, &path);
        let target = resolved.target();
        let preflight = cors::is_preflight(&method, req.headers());
        let outcome = if head_too_large(&req) {
            Err(ApiError::HeadersTooLarge)
        } else if method == Method::OPTIONS && target.is_none() {
            match resolved.allow() {
                None => Err(ApiError::NotFound),
                Some(allow) if preflight => Ok(cors::preflight(
                    &state.config.cors_origins,
                    origin.as_ref(),
                    allow,
                )),
                Some(allow) => Ok(options(allow)),
            }
        } else {
            match resolved {
                Resolved::Found { target, params, .. } => {
                    let call = Call {
                        peer,
                        client_ip: super::client_ip::client_ip(
                            peer.ip(),
                            req.headers(),
                            &state.config.trusted_proxies,
                            state.config.trusted_proxy_header,
                        ),
                        user_agent: call::user_agent(req.headers().get(USER_AGENT)),
                        request_id: Arc::clone(&request_id),
                    };
                    AssertUnwindSafe(dispatch(Arc::clone(&state), target, call, params, req))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(ApiError::Internal(anyhow::anyhow!(
                                "handler panicked: {}",
                                panic_message(panic.as_ref())
                            )))
                        })
                }
                Resolved::MethodNotAllowed { allow } => Err(ApiError::MethodNotAllowed {
                    allow: allow.to_owned(),
                }),
                Resolved::NotFound => Err(ApiError::NotFound),
            }
        };

        let (mut resp, error) = match outcome {
            Ok(resp) => (resp, None),
            Err(err) => {
                let resp = response::error(&err, &request_id);
                (resp, Some((err.code(), err.internal_reason(), err)))
            }
        };

        let headers = resp.headers_mut();
        if path.starts_with("/auth/") {
            // Responses carry tokens or account data: no cache may keep them.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        cors::decorate(&state.config.cors_origins, origin.as_ref(), headers);

        let status = resp.status().as_u16();
        let elapsed = started.elapsed().as_secs_f64();
        let latency_ms = elapsed * 1000.0;
        match &error {
            // An outage is expected operation (WARN); anything else answered 5xx is a bug.
            Some((code, reason, ApiError::Unavailable(_))) => {
                tracing::warn!(status, latency_ms, error = code, %reason, "request");
            }
            Some((code, reason, err)) if err.status().is_server_error() => {
                tracing::error!(status, latency_ms, error = code, %reason, "request");
            }
            Some((code, reason, _)) => {
                tracing::info!(status, latency_ms, error = code, %reason, "request");
            }
            None => tracing::info!(status, latency_ms, "request"),
        }
        let operation = match target {
            _ if preflight => "cors_preflight",
            _ if method == Method::OPTIONS => "options",
            Some(Target::Api(route)) => route.spec().2,
            Some(Target::Page(page)) => page.name(),
            None => "unmatched",
        };
        state.metrics.request_finished(operation, status, elapsed);
        let resp = response::finish(resp, &request_id);
        if let Some(observe) = state.observer.get() {
            observe(&crate::state::Observed {
                target,
                method: &method,
                path: &path,
                response: &resp,
            });
        }
        response::into_hyper(resp)
    }
    .instrument(span)
    .await
}

/// A bare `OPTIONS` (no CORS preflight): the methods of the path, as `Allow` says on a 405.
fn options(allow: &str) -> Response {
    let mut resp = response::empty(StatusCode::NO_CONTENT);
    if let Ok(v) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(ALLOW, v);
    }
    resp
}

/// The separate metrics listener (`METRICS_PORT`): `GET /metrics` and nothing else, through
/// the same dispatch step. Scrapes are neither logged nor counted: one every few seconds
/// would drown both.
pub async fn respond_metrics<B, D, Fut>(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<B>,
    dispatch: D,
) -> hyper::Response<Full<Bytes>>
where
    D: FnOnce(Arc<AppState>, Target, Call, Params, Request<B>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let request_id: Arc<str> = request_id(&req, peer, &state.config.trusted_proxies).into();
    let outcome = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let call = Call {
                peer,
                client_ip: peer.ip(),
                user_agent: None,
                request_id: Arc::clone(&request_id),
            };
            let target = Target::Page(Page::Metrics);
            dispatch(state, target, call, Params::default(), req).await
        }
        (_, "/metrics") => Err(ApiError::MethodNotAllowed {
            allow: "GET".to_owned(),
        }),
        _ => Err(ApiError::NotFound),
    };
    let resp = outcome.unwrap_or_else(|err| response::error(&err, &request_id));
    response::into_hyper(response::finish(resp, &request_id))
}

fn head_too_large<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    // Path and query lengths, not `uri().to_string()`: this runs on every request.
    let uri = req.uri();
    let bytes: usize = uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    headers.len() > MAX_HEADERS || bytes > MAX_HEAD_BYTES
}

/// Keeps the `X-Request-Id` of a trusted proxy (`TRUSTED_PROXIES`) when it is short and
/// plain, so ids can be followed across services; otherwise (absent, from anyone else, or
/// something that could forge log lines) makes a new one. Ids end up in the event log, and
/// one a client chose could pin its requests on another's or hide them among repeats.
fn request_id<B>(req: &Request<B>, peer: SocketAddr, trusted: &[Cidr]) -> String {
    if !trusted.iter().any(|block| block.contains(peer.ip())) {
        return new_request_id();
    }
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A random UUID v4 from the thread-local CSPRNG: `Uuid::new_v4` makes a `getrandom` system
/// call each time, which the profile showed once per request (`bench/RESULTS.md`).
pub fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .simple()
        .to_string()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
