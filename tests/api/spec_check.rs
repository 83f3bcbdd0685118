//! Checks responses against `openapi.yaml`, so that a drift between server and contract
//! fails `cargo test`, not just the schemathesis run.
//!
//! Every test server gets an observer (see `helpers::TestServer::start`) that hands each
//! response, exactly as sent, to [`SpecCheck::check`]: the status must be documented for
//! the operation, the content type must match, documented headers must be present (unless
//! marked `required: false`), and a
//! JSON body must validate against the schema for that status. Responses to paths or
//! methods outside the contract must be the standard `Error` body. Violations are collected
//! and fail the test when its server is dropped.
//!
//! The server's non-API pages (`/docs`, `/redoc`, the `/account/…` pages, their assets,
//! `/metrics`; see `http::router::Page`) are outside the contract on purpose, so they are
//! held to their own rule instead of being waved through: a success is exactly 200, with
//! the content type that page serves and a `Cache-Control` header, and a failure is the
//! standard `Error` body.

use std::sync::{Arc, LazyLock, Mutex};

use jobpath_server::http::router::{Page, Target};
use jobpath_server::state::Observed;
use serde_json::Value;

pub struct SpecCheck {
    spec: Value,
    error_schema: jsonschema::Validator,
}

pub static SPEC: LazyLock<SpecCheck> = LazyLock::new(|| {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let spec: Value = serde_yaml::from_str(&text).unwrap();
    let error = inline_refs(
        &spec,
        &serde_json::json!({"$ref": "#/components/schemas/Error"}),
    );
    SpecCheck {
        error_schema: validator(&error),
        spec,
    }
});

impl SpecCheck {
    /// `openapi.yaml`, parsed once for the whole test binary.
    pub fn spec(&self) -> &Value {
        &self.spec
    }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(schema)
        .expect("a valid JSON Schema in openapi.yaml")
}

/// Replaces `{"$ref": "#/..."}` with the referenced value (the spec has no cycles).
fn inline_refs(spec: &Value, node: &Value) -> Value {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let target = spec
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                return inline_refs(spec, target);
            }
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), inline_refs(spec, v)))
                .collect();
            // OpenAPI 3.0's `nullable` is not JSON Schema: spell it as a type union.
            if out.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline_refs(spec, v)).collect()),
        other => other.clone(),
    }
}

impl SpecCheck {
    /// Returns a description of every way `seen` departs from the contract.
    pub fn check(&self, seen: &Observed<'_>) -> Vec<String> {
        let resp = seen.response;
        let status = resp.status().as_u16();
        let what = format!("{} {} -> {status}", seen.method, seen.path);
        let mut problems = Vec::new();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");

        for always in ["x-request-id", "x-content-type-options"] {
            if !resp.headers().contains_key(always) {
                problems.push(format!("{what}: header {always} is missing"));
            }
        }

        let route = match seen.target {
            Some(Target::Api(route)) => route,
            Some(Target::Page(page)) if status < 400 => {
                check_page(&what, page, status, content_type, resp, &mut problems);
                return problems;
            }
            _ => {
                // Outside the contract's operations: 404, 405, CORS preflights, and pages
                // that failed.
                if status >= 400 {
                    self.check_error_body(&what, content_type, resp.body(), &mut problems);
                } else if status != 204 {
                    problems.push(format!("{what}: unexpected success outside the contract"));
                }
                return problems;
            }
        };

        let (method, path, operation_id) = route.spec();
        let operation = &self.spec["paths"][path][method.as_str().to_lowercase()];
        if operation["operationId"] != operation_id {
            problems.push(format!(
                "{what}: operation {operation_id} not found in the spec"
            ));
            return problems;
        }
        let documented = inline_refs(&self.spec, &operation["responses"][status.to_string()]);
        if documented.is_null() {
            problems.push(format!(
                "{what}: status {status} is not documented for {operation_id}"
            ));
            return problems;
        }
        for (name, header) in documented["headers"].as_object().into_iter().flatten() {
            // A header the spec marks `required: false` is sent only in some answers (the
            // refresh cookie of cookie mode); every other documented header always is.
            let optional = header["required"] == false;
            if !optional && !resp.headers().contains_key(name.to_lowercase().as_str()) {
                problems.push(format!("{what}: documented header {name} is missing"));
            }
        }
        let Some(content) = documented["content"].as_object() else {
            if !resp.body().is_empty() {
                problems.push(format!("{what}: a body where the spec documents none"));
            }
            return problems;
        };
        let Some((media_type, media)) = content.iter().next() else {
            return problems;
        };
        if content_type.split(';').next().unwrap_or("").trim() != media_type {
            problems.push(format!(
                "{what}: content type {content_type:?}, documented {media_type}"
            ));
            return problems;
        }
        if media_type == "application/json" {
            match serde_json::from_slice::<Value>(resp.body()) {
                Err(e) => problems.push(format!("{what}: body is not JSON: {e}")),
                Ok(body) => {
                    let schema = validator(&media["schema"]);
                    for error in schema.iter_errors(&body) {
                        problems.push(format!("{what}: {error} at {}", error.instance_path()));
                    }
                }
            }
        }
        problems
    }

    fn check_error_body(
        &self,
        what: &str,
        content_type: &str,
        body: &[u8],
        problems: &mut Vec<String>,
    ) {
        if content_type != "application/json" {
            problems.push(format!("{what}: error with content type {content_type:?}"));
            return;
        }
        match serde_json::from_slice::<Value>(body) {
            Err(e) => problems.push(format!("{what}: error body is not JSON: {e}")),
            Ok(body) => {
                for error in self.error_schema.iter_errors(&body) {
                    problems.push(format!("{what}: {error}"));
                }
            }
        }
    }
}

/// The media types each page may be served as.
fn page_types(page: Page) -> &'static [&'static str] {
    match page {
        Page::Docs
        | Page::Redoc
        | Page::ResetPassword
        | Page::VerifyEmail
        | Page::ConfirmEmailChange
        | Page::CancelEmailChange
        | Page::Passkeys => &["text/html; charset=utf-8"],
        Page::DocsAsset | Page::AccountAsset => {
            &["text/javascript; charset=utf-8", "text/css; charset=utf-8"]
        }
        Page::Metrics => &[jobpath_server::metrics::CONTENT_TYPE],
    }
}

fn check_page(
    what: &str,
    page: Page,
    status: u16,
    content_type: &str,
    resp: &http::Response<bytes::Bytes>,
    problems: &mut Vec<String>,
) {
    if status != 200 {
        problems.push(format!(
            "{what}: a page answers 200 or an error, not {status}"
        ));
    }
    if !page_types(page).contains(&content_type) {
        problems.push(format!(
            "{what}: content type {content_type:?}, expected one of {:?}",
            page_types(page)
        ));
    }
    if !resp.headers().contains_key(http::header::CACHE_CONTROL) {
        problems.push(format!("{what}: a page without Cache-Control"));
    }
    if resp.body().is_empty() {
        problems.push(format!("{what}: an empty page"));
    }
}

/// Collected violations of one server; shared with its observer.
pub type Violations = Arc<Mutex<Vec<String>>>;

#[test]
fn the_checker_catches_undocumented_statuses_and_bad_bodies() {
    use jobpath_server::http::router::Route;
    let method = http::Method::GET;
    let mut resp = http::Response::new(bytes::Bytes::from_static(br#"{"id": "not-a-uuid"}"#));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    let seen = Observed {
        target: Some(Target::Api(Route::GetMe)),
        method: &method,
        path: "/auth/me",
        response: &resp,
    };
    let problems = SPEC.check(&seen);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("\"email\" is a required property")),
        "{problems:?}"
    );
    *resp.status_mut() = http::StatusCode::IM_A_TEAPOT;
    let seen = Observed {
        target: Some(Target::Api(Route::GetMe)),
        method: &method,
        path: "/auth/me",
        response: &resp,
    };
    assert!(
        SPEC.check(&seen)
            .iter()
            .any(|p| p.contains("not documented"))
    );
}

#[test]
fn the_checker_holds_pages_to_their_content_type_and_caching() {
    let method = http::Method::GET;
    let mut resp = http::Response::new(bytes::Bytes::from_static(b"<!doctype html>"));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    let seen = Observed {
        target: Some(Target::Page(Page::Docs)),
        method: &method,
        path: "/docs",
        response: &resp,
    };
    let problems = SPEC.check(&seen);
    assert!(
        problems.iter().any(|p| p.contains("content type")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("Cache-Control")),
        "{problems:?}"
    );
}
