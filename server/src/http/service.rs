//! The outer request wrapper: the only place that turns errors into responses.
//!
//! For every request it assigns a request id (a sane incoming `X-Request-Id` is kept),
//! opens a tracing span, answers CORS preflights, dispatches to the handler by an exhaustive
//! `match` on the [`Target`], converts any [`ApiError`] — or a panic — into the standard
//! JSON error, adds the headers every response carries, logs one line with status and
//! latency, and counts the request in the metrics. Handlers just use `?`. Nothing from the
//! request's headers or body is logged.
//!
//! The request id is a field of the request's span, so every log line written while the
//! request is handled carries it, whatever module writes it.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt as _;
use http::header::{CACHE_CONTROL, HeaderValue, ORIGIN, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderName, Request};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::Instrument as _;

use super::response::{self, Response};
use super::router::{Page, Params, Resolved, Route, Target};
use super::{cors, docs};
use crate::errors::ApiError;
use crate::handlers;
use crate::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits on a request head, answered with a JSON 431. Real clients send a few hundred
/// bytes; these leave room for large cookies and tracing headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
/// Longest user agent kept (sessions, events); the database checks the same bound.
pub const USER_AGENT_MAX_CHARS: usize = 512;

pub async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    respond(state, peer, req, |state, target, call, req| async move {
        dispatch(&state, target, call, req).await
    })
    .await
}

/// [`handle`] with the dispatch step passed in, so that a test can make it fail in ways the
/// real handlers do not (a panic).
pub(crate) async fn respond<B, F, Fut>(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<B>,
    dispatch: F,
) -> hyper::Response<Full<Bytes>>
where
    F: FnOnce(Arc<AppState>, Option<Target>, Call, Request<B>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let started = Instant::now();
    // Shared with the handler's `Call` without copying.
    let request_id: Arc<str> = request_id(&req).into();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = req.headers().get(ORIGIN).cloned();
    let span = tracing::info_span!("request", id = %request_id, %method, %path, %peer);

    async move {
        let _in_flight = state.metrics.request_started();
        let (target, params) = match state.router.resolve(&method, &path) {
            Resolved::Found(target, params) => (Some(target), params),
            _ => (None, Params::default()),
        };
        let preflight = cors::is_preflight(&method, req.headers());
        let outcome = if head_too_large(&req) {
            Err(ApiError::HeadersTooLarge)
        } else if preflight {
            Ok(cors::preflight(&state.config.cors_origins, origin.as_ref()))
        } else {
            let call = Call {
                peer,
                client_ip: super::client_ip::client_ip(
                    peer.ip(),
                    req.headers(),
                    &state.config.trusted_proxies,
                ),
                user_agent: req
                    .headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(USER_AGENT_MAX_CHARS).collect()),
                params,
                request_id: Arc::clone(&request_id),
            };
            AssertUnwindSafe(dispatch(Arc::clone(&state), target, call, req))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(ApiError::Internal(anyhow::anyhow!(
                    "handler panicked: {}",
                    panic_message(panic.as_ref())
                ))))
        };

        let (mut resp, error_code) = match outcome {
            Ok(resp) => (resp, None),
            Err(err) => {
                // The cause chain goes to the log only; the client sees a generic message. An
                // outage is expected operation (WARN); anything else answered 5xx is a bug.
                match &err {
                    ApiError::Unavailable(_) => {
                        tracing::warn!(error = %err.code(), cause = ?anyhow_chain(&err), "request failed");
                    }
                    _ if err.status().is_server_error() => {
                        tracing::error!(error = %err.code(), cause = ?anyhow_chain(&err), "request failed");
                    }
                    _ => {}
                }
                (response::error(&err, &request_id), Some(err.code()))
            }
        };

        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(X_REQUEST_ID.clone(), v);
        }
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if path.starts_with("/auth/") {
            // Responses carry tokens or account data: no cache may keep them.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        cors::decorate(&state.config.cors_origins, origin.as_ref(), headers);

        let status = resp.status().as_u16();
        let elapsed = started.elapsed().as_secs_f64();
        let latency_ms = elapsed * 1000.0;
        match error_code {
            Some(code) => tracing::info!(status, latency_ms, error = code, "request"),
            None => tracing::info!(status, latency_ms, "request"),
        }
        let operation = match target {
            _ if preflight => "cors_preflight",
            Some(Target::Api(route)) => route.spec().2,
            Some(Target::Page(page)) => page.name(),
            None => "unmatched",
        };
        state.metrics.request_finished(operation, status, elapsed);
        if let Some(observe) = state.observer.get() {
            observe(&crate::state::Observed {
                target,
                method: &method,
                path: &path,
                response: &resp,
            });
        }
        resp.map(Full::new)
    }
    .instrument(span)
    .await
}

/// What a handler may need to know about the request besides the request itself.
pub struct Call {
    pub peer: SocketAddr,
    /// The client's address: the peer, or what trusted proxies say (`http::client_ip`).
    pub client_ip: std::net::IpAddr,
    /// The `User-Agent`, cut to [`USER_AGENT_MAX_CHARS`], for sessions and the event log.
    pub user_agent: Option<String>,
    pub params: Params,
    pub request_id: Arc<str>,
}

/// The separate metrics listener (`METRICS_PORT`): `GET /metrics` and nothing else. Scrapes
/// are neither logged nor counted: one every few seconds would drown both.
pub async fn handle_metrics_port(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let resp = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/metrics") => handlers::metrics(&state),
        (_, "/metrics") => response::error(
            &ApiError::MethodNotAllowed {
                allow: "GET".to_owned(),
            },
            &request_id(&req),
        ),
        _ => response::error(&ApiError::NotFound, &request_id(&req)),
    };
    resp.map(Full::new)
}

pub(crate) async fn dispatch(
    state: &AppState,
    target: Option<Target>,
    call: Call,
    req: Request<Incoming>,
) -> Result<Response, ApiError> {
    let Some(target) = target else {
        return Err(match state.router.resolve(req.method(), req.uri().path()) {
            Resolved::MethodNotAllowed { allow } => ApiError::MethodNotAllowed {
                allow: allow.to_owned(),
            },
            Resolved::Found(..) | Resolved::NotFound => ApiError::NotFound,
        });
    };
    match target {
        Target::Api(Route::Signup) => handlers::signup(state, &call, req).await,
        Target::Api(Route::Login) => handlers::login(state, &call, req).await,
        Target::Api(Route::GetMe) => handlers::get_me(state, req).await,
        Target::Api(Route::Logout) => handlers::logout(state, &call, req).await,
        Target::Api(Route::Refresh) => handlers::refresh(state, &call, req).await,
        Target::Api(Route::ChangePassword) => handlers::change_password(state, &call, req).await,
        Target::Api(Route::ListSessions) => handlers::list_sessions(state, req).await,
        Target::Api(Route::RevokeSession) => handlers::revoke_session(state, &call, req).await,
        Target::Api(Route::ListEvents) => handlers::list_events(state, req).await,
        Target::Api(Route::Liveness) => handlers::liveness(state),
        Target::Api(Route::Readiness) => handlers::readiness(state).await,
        Target::Api(Route::OpenApiJson) => handlers::openapi_json(state),
        Target::Api(Route::OpenApiYaml) => handlers::openapi_yaml(),
        Target::Page(Page::Docs) => Ok(docs::swagger_ui()),
        Target::Page(Page::Redoc) => Ok(docs::redoc()),
        Target::Page(Page::DocsAsset) => docs::asset(req.uri().path()),
        Target::Page(Page::Metrics) => Ok(handlers::metrics(state)),
    }
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

/// Keeps a client's `X-Request-Id` when it is short and plain, so ids can be followed across
/// services; otherwise (absent, or something that could forge log lines) makes a new one.
fn request_id<B>(req: &Request<B>) -> String {
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

fn anyhow_chain(err: &ApiError) -> String {
    match err {
        ApiError::Internal(e) | ApiError::Unavailable(e) => format!("{e:#}"),
        other => other.to_string(),
    }
}
