//! The pages emailed links open when there is no front end of one's own (`APP_BASE_URL`
//! unset, or pointed at this server's `/account`): `/account/reset-password`,
//! `/account/verify-email`, `/account/confirm-email-change` and
//! `/account/cancel-email-change`; and `/account/passkeys`, where a person signs in (with a
//! password or a passkey) and adds a passkey, the reference a front end copies for the
//! WebAuthn calls. Their scripts and style are under `/account/assets/`.
//!
//! They are part of the product, not of the documentation, so they are served whatever
//! `DOCS_ENABLED` says. Every file is embedded in the binary (`server/assets/account/`):
//! static HTML, one shared script, one per page, one stylesheet; no framework and nothing
//! from another origin. The emailed pages' script reads the token from the link's fragment
//! (which no server log or `Referer` ever sees) and calls the API's own operations; the
//! passkeys page keeps its access token in memory only.
//!
//! Headers: a Content-Security-Policy as strict as the documentation's and stricter (no
//! inline script or style at all, no other origin, no framing, no form submission but by the
//! script), `Referrer-Policy: no-referrer` so nothing about the page leaks to anything it
//! links to, and `Cache-Control: no-store` on the pages, which hold a secret while open.

use bytes::Bytes;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderValue, REFERRER_POLICY};

use crate::errors::ApiError;
use crate::http::response::{Response, bytes_with_type};

/// Where the assets are served; each [`Asset::file`] is relative to it.
pub const ASSETS_PREFIX: &str = "/account/assets/";

/// Only this server, for scripts, styles and requests; `data:` images for the empty icon
/// that saves a `/favicon.ico` request. No `'unsafe-inline'` anywhere: the HTML has no
/// inline script, handler or style attribute.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The pages hold a secret while open; the assets are revalidated on every load, so a new
/// build's are seen at once.
const NO_STORE: &str = "no-store";
const REVALIDATE: &str = "no-cache";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub struct Asset {
    /// The path below [`ASSETS_PREFIX`].
    pub file: &'static str,
    pub content_type: &'static str,
    body: &'static str,
}

pub const ASSETS: [Asset; 7] = [
    Asset {
        file: "account.css",
        content_type: CSS,
        body: include_str!("../../assets/account/account.css"),
    },
    Asset {
        file: "account.js",
        content_type: JS,
        body: include_str!("../../assets/account/account.js"),
    },
    Asset {
        file: "reset-password.js",
        content_type: JS,
        body: include_str!("../../assets/account/reset-password.js"),
    },
    Asset {
        file: "verify-email.js",
        content_type: JS,
        body: include_str!("../../assets/account/verify-email.js"),
    },
    Asset {
        file: "confirm-email-change.js",
        content_type: JS,
        body: include_str!("../../assets/account/confirm-email-change.js"),
    },
    Asset {
        file: "cancel-email-change.js",
        content_type: JS,
        body: include_str!("../../assets/account/cancel-email-change.js"),
    },
    Asset {
        file: "passkeys.js",
        content_type: JS,
        body: include_str!("../../assets/account/passkeys.js"),
    },
];

const RESET_PASSWORD: &str = include_str!("../../assets/account/reset-password.html");
const VERIFY_EMAIL: &str = include_str!("../../assets/account/verify-email.html");
const CONFIRM_EMAIL_CHANGE: &str = include_str!("../../assets/account/confirm-email-change.html");
const CANCEL_EMAIL_CHANGE: &str = include_str!("../../assets/account/cancel-email-change.html");
const PASSKEYS: &str = include_str!("../../assets/account/passkeys.html");

/// `GET /account/reset-password`.
pub fn reset_password() -> Response {
    page(RESET_PASSWORD)
}

/// `GET /account/verify-email`.
pub fn verify_email() -> Response {
    page(VERIFY_EMAIL)
}

/// `GET /account/confirm-email-change`.
pub fn confirm_email_change() -> Response {
    page(CONFIRM_EMAIL_CHANGE)
}

/// `GET /account/cancel-email-change`.
pub fn cancel_email_change() -> Response {
    page(CANCEL_EMAIL_CHANGE)
}

/// `GET /account/passkeys`.
pub fn passkeys() -> Response {
    page(PASSKEYS)
}

/// `GET /account/assets/{*file}`.
pub fn asset(path: &str) -> Result<Response, ApiError> {
    let file = path.strip_prefix(ASSETS_PREFIX).ok_or(ApiError::NotFound)?;
    let asset = ASSETS
        .iter()
        .find(|a| a.file == file)
        .ok_or(ApiError::NotFound)?;
    let mut resp = bytes_with_type(
        StatusCode::OK,
        Bytes::from_static(asset.body.as_bytes()),
        asset.content_type,
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    Ok(resp)
}

fn page(html: &'static str) -> Response {
    let mut resp = bytes_with_type(StatusCode::OK, Bytes::from_static(html.as_bytes()), HTML);
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script and stylesheet a page names is one the server has; nothing is inline
    /// (the CSP would refuse it) and nothing comes from another origin.
    #[test]
    fn every_page_loads_only_embedded_assets_and_nothing_inline() {
        for html in [
            RESET_PASSWORD,
            VERIFY_EMAIL,
            CONFIRM_EMAIL_CHANGE,
            CANCEL_EMAIL_CHANGE,
            PASSKEYS,
        ] {
            let links: Vec<&str> = html
                .split('"')
                .filter(|s| s.starts_with("assets/"))
                .collect();
            assert_eq!(links.len(), 3, "a stylesheet and two scripts in\n{html}");
            for link in links {
                let served = asset(&format!("/account/{link}")).expect(link);
                assert_eq!(served.status(), StatusCode::OK);
            }
            assert!(!html.contains("//"), "an absolute URL in\n{html}");
            assert!(!html.contains("<script>"), "an inline script in\n{html}");
            assert!(!html.contains("<style"), "an inline style in\n{html}");
            assert!(!html.contains("style="), "a style attribute in\n{html}");
            let attributes = html
                .split('<')
                .filter_map(|tag| tag.split_once('>'))
                .flat_map(|(tag, _)| tag.split_whitespace().skip(1));
            for attribute in attributes {
                assert!(
                    !attribute.starts_with("on"),
                    "an inline handler: {attribute}"
                );
            }
        }
    }

    #[test]
    fn pages_are_never_stored_and_assets_have_their_types_and_unknown_ones_are_404() {
        for resp in [
            reset_password(),
            verify_email(),
            confirm_email_change(),
            cancel_email_change(),
            passkeys(),
        ] {
            assert_eq!(resp.headers()["cache-control"], NO_STORE);
            assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
            assert_eq!(resp.headers()["content-security-policy"], CSP);
        }
        let css = asset("/account/assets/account.css").unwrap();
        assert_eq!(css.headers()["content-type"], CSS);
        let js = asset("/account/assets/account.js").unwrap();
        assert_eq!(js.headers()["content-type"], JS);
        for missing in [
            "/account/assets/nope.js",
            "/account/assets/../reset-password.html",
            "/docs/assets/account.js",
        ] {
            assert!(
                matches!(asset(missing), Err(ApiError::NotFound)),
                "{missing}"
            );
        }
    }
}
