//! Cookie mode of the refresh token, for browser front ends: the cookie the refresh token
//! travels in, and the origin check that keeps other sites from using it.
//!
//! A page's scripts never see the cookie (`HttpOnly`), so a script injected into the page
//! cannot steal the 30-day token; it can only be spent by a request to [`PATH`] that the
//! browser attaches it to. What such a request may do is decided here:
//!
//! - The cookie is `Secure; HttpOnly; SameSite=Strict; Path=/auth/refresh`. `SameSite=Strict`
//!   keeps browsers from attaching it to requests started by another site. The name has
//!   the `__Secure-` prefix, so that browsers refuse it unless it was set `Secure` over a
//!   secure connection; `__Host-` (which also forbids `Domain`) would require `Path=/`,
//!   and the path scope is worth more: no other request carries the token. Browsers treat
//!   `http://localhost` (and `127.0.0.1`) as a secure context, so local development over
//!   plain HTTP works too.
//! - A request that sets or reads the cookie must come from an allowed origin
//!   ([`check_origin`]): its `Origin` is listed in `CORS_ORIGINS` (`*` does not count: any
//!   site could be a page of `*`), or it is the API's own (`Origin` names the `Host` the
//!   request was sent to). Browsers always send `Origin` with a `POST`, so a missing one is
//!   refused too. The body must also be `application/json` (`http::body` insists), which a
//!   page can only send to another origin after a preflight the CORS rules answer.
//!
//! Logout clears the cookie with a `Set-Cookie` of the same name and path, which needs no
//! cookie sent with it.

use http::HeaderMap;
use http::header::{COOKIE, HOST, HeaderValue, ORIGIN};

use crate::config::CorsOrigins;
use crate::errors::ApiError;

/// The cookie's name.
pub const NAME: &str = "__Secure-jobpath_refresh";
/// The cookie's path: the one request that reads it.
pub const PATH: &str = "/auth/refresh";

/// The `Set-Cookie` value that stores `token` for `max_age_secs` (the session's lifetime).
pub fn set(token: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{NAME}={token}; Path={PATH}; Max-Age={max_age_secs}; Secure; HttpOnly; SameSite=Strict"
    ))
    .expect("a refresh token is base64url")
}

/// The `Set-Cookie` value that deletes the cookie.
pub fn clear() -> HeaderValue {
    HeaderValue::from_static(
        "__Secure-jobpath_refresh=; Path=/auth/refresh; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
    )
}

/// The refresh token of the request's cookie, if it has one. Browsers send the cookie of
/// the most specific path first, so the first one wins.
pub fn read(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Whether a request may set or read the refresh cookie: its `Origin` is listed in
/// `CORS_ORIGINS`, or it is the API's own. The error's reason says which check failed,
/// for the log.
pub fn check_origin(origins: &CorsOrigins, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers
        .get(ORIGIN)
        .ok_or(ApiError::OriginNotAllowed("no Origin header"))?
        .to_str()
        .map_err(|_| ApiError::OriginNotAllowed("Origin is not text"))?;
    let listed = matches!(origins, CorsOrigins::List(_)) && origins.allows(origin);
    if listed || same_origin(origin, headers.get(HOST)) {
        Ok(())
    } else {
        Err(ApiError::OriginNotAllowed(
            "Origin neither in CORS_ORIGINS nor the API's own",
        ))
    }
}

/// `Origin` (`scheme://host[:port]`) names the authority the request was sent to. The
/// scheme is not compared: behind a proxy that ends TLS the server cannot know it, and
/// only the API itself can serve pages on its own host.
fn same_origin(origin: &str, host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_is_read_by_name_among_others() {
        let h = headers(&[("cookie", "a=1; __Secure-jobpath_refresh=tok; b=2")]);
        assert_eq!(read(&h).as_deref(), Some("tok"));
        assert_eq!(read(&headers(&[("cookie", "jobpath_refresh=tok")])), None);
        assert_eq!(
            read(&headers(&[("cookie", "__Secure-jobpath_refresh=")])),
            None
        );
        assert_eq!(read(&HeaderMap::new()), None);
    }

    #[test]
    fn only_listed_or_same_origins_pass_and_a_wildcard_is_not_a_list() {
        let listed = CorsOrigins::List(vec!["https://app.example.com".into()]);
        let ok = |o: &CorsOrigins, pairs: &[(&'static str, &str)]| {
            check_origin(o, &headers(pairs)).is_ok()
        };
        assert!(ok(&listed, &[("origin", "https://app.example.com")]));
        assert!(!ok(&listed, &[("origin", "https://evil.example.com")]));
        assert!(!ok(&listed, &[]), "no Origin");
        assert!(!ok(&listed, &[("origin", "null")]));
        assert!(ok(
            &listed,
            &[
                ("origin", "http://api.example.com"),
                ("host", "api.example.com")
            ]
        ));
        assert!(!ok(
            &listed,
            &[
                ("origin", "http://api.example.com.evil.net"),
                ("host", "api.example.com")
            ]
        ));
        assert!(!ok(
            &CorsOrigins::Any,
            &[("origin", "https://evil.example.com")]
        ));
        assert!(ok(
            &CorsOrigins::Any,
            &[
                ("origin", "http://127.0.0.1:8000"),
                ("host", "127.0.0.1:8000")
            ]
        ));
    }
}
