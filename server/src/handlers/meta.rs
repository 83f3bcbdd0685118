//! The service about itself: `liveness`, `readiness`, the contract (`get_openapi_json`,
//! `get_openapi_yaml`), and the Prometheus scrape (a page, not an operation).

use bytes::Bytes;
use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde::Serialize;

use crate::db;
use crate::errors::ApiError;
use crate::http::response::{self, Response};
use crate::spec;
use crate::state::AppState;

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// Alive: answers without the database, so a database outage never restarts the server.
pub fn liveness() -> Result<Response, ApiError> {
    response::json(StatusCode::OK, &Health { status: "ok" })
}

pub async fn readiness(state: &AppState) -> Result<Response, ApiError> {
    db::ping(&state.db).await?;
    response::json(StatusCode::OK, &Health { status: "ready" })
}

pub fn openapi_json() -> Response {
    response::bytes_with_type(StatusCode::OK, spec::json(), "application/json")
}

pub fn openapi_yaml() -> Response {
    response::bytes_with_type(
        StatusCode::OK,
        Bytes::from_static(spec::YAML.as_bytes()),
        "application/yaml",
    )
}

/// `GET /metrics`, on whichever port serves it (see `http::serve`).
pub fn metrics(state: &AppState) -> Response {
    let mut resp = response::bytes_with_type(
        StatusCode::OK,
        Bytes::from(state.metrics.render(state.db.deadpool())),
        crate::metrics::CONTENT_TYPE,
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
