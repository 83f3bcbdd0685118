//! A "jobs" service that accepts JobPath access tokens: how another service uses
//! [`jobpath_client::verify::Verifier`].
//!
//! ```text
//! cargo run -p jobpath-client --features verify --example resource_server
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:8100/jobs/mine
//! ```
//!
//! - `GET /jobs/mine` verifies the token locally (published keys, no call to the auth server);
//! - `GET /jobs/strict` also asks the auth server, so a logout takes effect at once
//!   (needs `JOBPATH_INTROSPECTION_KEY`, an API key with the `introspect` scope).
//!
//! Settings (env): `JOBPATH_AUTH_URL` (default `http://127.0.0.1:8000`), `JOBPATH_ISSUER`
//! and `JOBPATH_AUDIENCE` (the auth server's defaults `jobpath-api` and `jobpath`),
//! `RESOURCE_ADDR` (default `127.0.0.1:8100`; port 0 picks a free one), and optionally
//! `JOBPATH_INTROSPECTION_KEY`. Once bound it prints `listening on ADDR` on stdout, the line
//! a test waits for to learn the port.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jobpath_client::verify::Verifier;
use serde_json::json;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let mut verifier = Verifier::builder(
        env("JOBPATH_AUTH_URL", "http://127.0.0.1:8000"),
        env("JOBPATH_ISSUER", "jobpath-api"),
        env("JOBPATH_AUDIENCE", "jobpath"),
    );
    if let Ok(key) = std::env::var("JOBPATH_INTROSPECTION_KEY") {
        verifier = verifier.introspection_key(key);
    }
    let verifier = verifier.build()?;

    let listener = TcpListener::bind(env("RESOURCE_ADDR", "127.0.0.1:8100")).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: keep serving the others.
                Err(e) => { eprintln!("accept: {e}"); continue; }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let verifier = verifier.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(verifier.clone(), request));
            let io = TokioIo::new(stream);
            if let Err(e) = http1::Builder::new().serve_connection(io, service).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// Infallible: every refusal is an answer, hyper never sees an error.
async fn handle(
    verifier: Verifier,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let strict = match (request.method(), path.as_str()) {
        (&Method::GET, "/jobs/mine") => false,
        (&Method::GET, "/jobs/strict") => true,
        (_, "/jobs/mine" | "/jobs/strict") => {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return Ok(response);
        }
        _ => return Ok(error(StatusCode::NOT_FOUND, "not_found")),
    };
    let Some(token) = bearer(&request) else {
        return Ok(error(StatusCode::UNAUTHORIZED, "missing_token"));
    };
    let checked = if strict {
        verifier.verify_active(token).await
    } else {
        verifier.verify(token).await
    };
    Ok(match checked {
        Ok(claims) => reply(
            StatusCode::OK,
            json!({"user_id": claims.user_id, "email": claims.email, "strict": strict}),
        ),
        // The reason goes to our log only (it never contains the token); the caller learns
        // just that the token was refused, or that we could not check it.
        Err(e) if e.is_refusal() => {
            eprintln!("GET {path}: 401: {e}");
            error(StatusCode::UNAUTHORIZED, "invalid_token")
        }
        Err(e) => {
            eprintln!("GET {path}: 503: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
        }
    })
}

fn bearer(request: &Request<Incoming>) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The auth server's error shape (`Error` in openapi.yaml), so clients parse one format.
fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "error": code,
        "detail": {"message": status.canonical_reason(), "request_id": uuid::Uuid::new_v4()},
        "status_code": status.as_u16(),
    });
    let mut response = reply(status, body);
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750 section 3: a 401 for a bearer-protected resource says so.
        let challenge = if code == "missing_token" {
            "Bearer"
        } else {
            "Bearer error=\"invalid_token\""
        };
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
