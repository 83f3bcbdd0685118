//! [`Call`]: where a request comes from — its id, the client's address, its user agent —
//! made once by the request wrapper and handed to the handler, and from there to whatever
//! records the request's origin (sessions, the security event log). It is the one type for
//! that fact: handlers and SQL functions take `&Call`, never a copy of its fields.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Longest user agent kept (sessions, events); the database checks the same bound.
pub const USER_AGENT_MAX_CHARS: usize = 512;

/// The origin of one request.
#[derive(Debug, Clone)]
pub struct Call {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client's address: the peer, or what trusted proxies say (`http::client_ip`).
    pub client_ip: IpAddr,
    /// The `User-Agent`, cut to [`USER_AGENT_MAX_CHARS`]: client-supplied text.
    pub user_agent: Option<String>,
    /// The request's id, as in its `X-Request-Id` response header.
    pub request_id: Arc<str>,
}

impl Call {
    /// The client's address as stored in the `ip` columns (text).
    pub fn ip(&self) -> String {
        self.client_ip.to_string()
    }

    /// The user agent as stored.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    /// The request id as stored.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

/// A `User-Agent` header value as kept: at most [`USER_AGENT_MAX_CHARS`] characters.
pub fn user_agent(value: Option<&http::HeaderValue>) -> Option<String> {
    value
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(USER_AGENT_MAX_CHARS).collect())
}
