//! `list_events`: the caller's own security events (`db::events`), newest first, paged by
//! an event-id cursor so that pages stay stable while new events arrive.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::Serialize;
use uuid::Uuid;

use super::{page_limit, query_param};
use crate::auth::guard::CurrentUser;
use crate::db;
use crate::errors::ApiError;
use crate::http::response::{self, Response};
use crate::state::AppState;

#[derive(Serialize)]
struct EventView<'a> {
    id: i64,
    kind: &'a str,
    occurred_at: DateTime<Utc>,
    /// Absent rather than null when the event has no session (a signup, a failed login):
    /// a null id would invite clients to build a `/auth/sessions/null` path from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Uuid>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

#[derive(Serialize)]
struct EventList<'a> {
    events: Vec<EventView<'a>>,
    next_before: Option<i64>,
}

const DEFAULT_EVENTS_PAGE: i64 = 20;

pub async fn list(
    state: &AppState,
    user: CurrentUser,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query, DEFAULT_EVENTS_PAGE)?;
    let before =
        match query_param(query, "before") {
            None => None,
            Some(raw) => Some(raw.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::validation("before", "before must be a positive integer")
            })?),
        };
    // One more than the page: whether it exists says whether there is a next page.
    let mut events = db::events::list(&state.db, user.id, before, limit + 1).await?;
    let next_before = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    let views = events
        .iter()
        .map(|e| EventView {
            id: e.id,
            kind: &e.kind,
            occurred_at: e.occurred_at,
            session_id: e.session_id,
            ip: e.ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
        })
        .collect();
    response::json(
        StatusCode::OK,
        &EventList {
            events: views,
            next_before,
        },
    )
}
