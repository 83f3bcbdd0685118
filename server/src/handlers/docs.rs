//! Interactive documentation: Swagger UI at `/docs` and ReDoc at `/redoc`, both rendering
//! the server's own `/openapi.json`.
//!
//! Every file the pages load is embedded in the binary (`include_bytes!`): the bundles come
//! from the official npm packages at pinned versions (`server/assets/fetch.sh`); three small
//! scripts are ours (`server/assets/pages/`: `spec.js` loads the contract for this server,
//! `swagger-init.js` and `redoc-init.js` hand it to their bundle). Nothing is fetched from elsewhere, so the pages work on a
//! network with no way out, and the pages' Content-Security-Policy makes the browser refuse
//! any other origin should a bundle ever try.
//!
//! Caching: bundle URLs carry the bundle's version, so they are cached for a year as
//! immutable; the HTML and our scripts are small and revalidated on every load, so a new
//! build's pages are seen at once.

use bytes::Bytes;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderValue};

use crate::errors::ApiError;
use crate::http::response::{Response, bytes_with_type};

/// Where the assets are served; each [`Asset::file`] is relative to it.
pub const ASSETS_PREFIX: &str = "/docs/assets/";

const SWAGGER_UI_DIR: &str = concat!("swagger-ui-", env!("SWAGGER_UI_VERSION"));
const REDOC_DIR: &str = concat!("redoc-", env!("REDOC_VERSION"));

/// No other origin for anything; inline styles because both bundles set `style`
/// attributes; `data:` images for Swagger UI's icons; `blob:` workers for ReDoc's search.
/// This is also what keeps ReDoc 2's one hard-coded outside URL (its vendor's logo at the
/// foot of the menu) from being fetched: the browser refuses it and the image hides itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   worker-src blob:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub struct Asset {
    /// The path below [`ASSETS_PREFIX`].
    pub file: &'static str,
    pub content_type: &'static str,
    cache: &'static str,
    body: &'static [u8],
}

pub const ASSETS: [Asset; 6] = [
    Asset {
        file: concat!(
            "swagger-ui-",
            env!("SWAGGER_UI_VERSION"),
            "/swagger-ui-bundle.js"
        ),
        content_type: JS,
        cache: IMMUTABLE,
        body: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        file: concat!("swagger-ui-", env!("SWAGGER_UI_VERSION"), "/swagger-ui.css"),
        content_type: CSS,
        cache: IMMUTABLE,
        body: include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    },
    Asset {
        file: concat!("redoc-", env!("REDOC_VERSION"), "/redoc.standalone.js"),
        content_type: JS,
        cache: IMMUTABLE,
        body: include_bytes!("../../assets/redoc/redoc.standalone.js"),
    },
    Asset {
        file: "jobpath/spec.js",
        content_type: JS,
        cache: REVALIDATE,
        body: include_bytes!("../../assets/pages/spec.js"),
    },
    Asset {
        file: "jobpath/swagger-init.js",
        content_type: JS,
        cache: REVALIDATE,
        body: include_bytes!("../../assets/pages/swagger-init.js"),
    },
    Asset {
        file: "jobpath/redoc-init.js",
        content_type: JS,
        cache: REVALIDATE,
        body: include_bytes!("../../assets/pages/redoc-init.js"),
    },
];

/// `GET /docs`.
pub fn swagger_ui() -> Response {
    page(
        "Swagger UI",
        &[format!("{SWAGGER_UI_DIR}/swagger-ui.css")],
        "swagger-ui",
        &[
            format!("{SWAGGER_UI_DIR}/swagger-ui-bundle.js"),
            "jobpath/spec.js".to_owned(),
            "jobpath/swagger-init.js".to_owned(),
        ],
    )
}

/// `GET /redoc`.
pub fn redoc() -> Response {
    page(
        "ReDoc",
        &[],
        "redoc",
        &[
            format!("{REDOC_DIR}/redoc.standalone.js"),
            "jobpath/spec.js".to_owned(),
            "jobpath/redoc-init.js".to_owned(),
        ],
    )
}

/// `GET /docs/assets/{*file}`.
pub fn asset(path: &str) -> Result<Response, ApiError> {
    let file = path.strip_prefix(ASSETS_PREFIX).ok_or(ApiError::NotFound)?;
    let asset = ASSETS
        .iter()
        .find(|a| a.file == file)
        .ok_or(ApiError::NotFound)?;
    let mut resp = bytes_with_type(
        StatusCode::OK,
        Bytes::from_static(asset.body),
        asset.content_type,
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(asset.cache));
    Ok(resp)
}

/// An HTML page that loads `styles` and then `scripts` (paths below [`ASSETS_PREFIX`]) into
/// an element with id `root`. Links are relative, so the page also works behind a proxy that
/// mounts the server under a path prefix. The empty `data:` icon saves every visit a
/// `/favicon.ico` 404.
fn page(title: &str, styles: &[String], root: &str, scripts: &[String]) -> Response {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>JobPath API · {title}</title>\n"
    );
    for style in styles {
        html.push_str(&format!(
            "<link rel=\"stylesheet\" href=\"docs/assets/{style}\">\n"
        ));
    }
    html.push_str(&format!("</head>\n<body>\n<div id=\"{root}\"></div>\n"));
    for script in scripts {
        html.push_str(&format!("<script src=\"docs/assets/{script}\"></script>\n"));
    }
    html.push_str("</body>\n</html>\n");

    let mut resp = bytes_with_type(StatusCode::OK, Bytes::from(html), HTML);
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(resp: &Response) -> &str {
        std::str::from_utf8(resp.body()).unwrap()
    }

    /// Every script and stylesheet a page names is one the server has, and nothing is
    /// loaded from another origin.
    #[test]
    fn both_pages_load_only_embedded_assets() {
        for resp in [swagger_ui(), redoc()] {
            let html = body(&resp);
            let links: Vec<&str> = html
                .split(['"', '\''])
                .filter(|s| s.starts_with("docs/assets/"))
                .collect();
            assert!(links.len() >= 2, "{html}");
            for link in links {
                let served = asset(&format!("/{link}")).expect(link);
                assert_eq!(served.status(), StatusCode::OK);
            }
            assert!(!html.contains("//"), "an absolute URL in\n{html}");
        }
    }

    #[test]
    fn assets_have_their_types_and_unknown_ones_are_404() {
        let css = asset(&format!("{ASSETS_PREFIX}{SWAGGER_UI_DIR}/swagger-ui.css")).unwrap();
        assert_eq!(css.headers()["content-type"], CSS);
        assert_eq!(css.headers()["cache-control"], IMMUTABLE);
        assert!(matches!(
            asset("/docs/assets/../Cargo.toml"),
            Err(ApiError::NotFound)
        ));
    }
}
