//! The passkeys' relying party: `WEBAUTHN_RP_ID`, `WEBAUTHN_RP_ORIGINS`, `WEBAUTHN_RP_NAME`.
//!
//! A passkey is bound to its relying party id (a domain) for good: changing it later
//! orphans every passkey registered under the old one. So the set is checked at start-up
//! and an inconsistent one refuses to start, naming the variable: the id must be a domain
//! name (browsers refuse IP addresses), every origin must be that domain or a subdomain of
//! it, over `https` unless it is `localhost`.
//!
//! Defaults, so that development works with nothing set: the id is the host of
//! `APP_BASE_URL` when that is a domain name, else `localhost`; the origins are
//! `APP_BASE_URL`'s own origin, or, for `localhost`, `http://localhost` on any port (a
//! developer's front end and this server's own pages each have their own port).

use anyhow::{Context as _, bail};
use url::Url;

/// The relying party, as read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnConfig {
    /// `WEBAUTHN_RP_ID`: the domain passkeys are bound to.
    pub rp_id: String,
    /// `WEBAUTHN_RP_ORIGINS`: the pages allowed to run the ceremonies.
    pub origins: Vec<Url>,
    /// Whether any port of `origins` is accepted: only for the `localhost` default.
    pub any_port: bool,
    /// `WEBAUTHN_RP_NAME`: what the browser shows ("Sign in to …").
    pub rp_name: String,
    /// Whether the id and origins are the development defaults (for `check-config`).
    pub defaulted: bool,
}

/// Reads the relying party from the three variables' raw values, `app_base_url` (for
/// the defaults) and `app_name` (the default name).
pub fn read(
    rp_id: Option<String>,
    origins: Option<String>,
    rp_name: Option<String>,
    app_base_url: &str,
    app_name: &str,
) -> anyhow::Result<WebauthnConfig> {
    let base = Url::parse(app_base_url).context("APP_BASE_URL")?;
    let base_domain = base.domain().map(str::to_ascii_lowercase);
    let defaulted = rp_id.is_none() && origins.is_none();
    let rp_id = match rp_id {
        Some(id) => {
            check_rp_id(&id).with_context(|| format!("WEBAUTHN_RP_ID: invalid value '{id}'"))?;
            id
        }
        None => base_domain
            .clone()
            .unwrap_or_else(|| "localhost".to_owned()),
    };
    let (origins, any_port) = match origins {
        Some(raw) => {
            let mut parsed = Vec::new();
            for one in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                parsed.push(origin(one, &rp_id).with_context(|| {
                    format!(
                        "WEBAUTHN_RP_ORIGINS: invalid origin '{one}' for WEBAUTHN_RP_ID '{rp_id}'"
                    )
                })?);
            }
            if parsed.is_empty() {
                bail!("WEBAUTHN_RP_ORIGINS: no origin in '{raw}'");
            }
            (parsed, false)
        }
        None if rp_id == "localhost" => {
            (vec![Url::parse("http://localhost").expect("valid")], true)
        }
        None if base_domain.as_deref() == Some(rp_id.as_str())
            || base_domain
                .as_deref()
                .is_some_and(|d| d.ends_with(&format!(".{rp_id}"))) =>
        {
            let own = origin(&base.origin().ascii_serialization(), &rp_id).context(
                "WEBAUTHN_RP_ORIGINS: unset, and APP_BASE_URL's origin cannot be the default",
            )?;
            (vec![own], false)
        }
        None => bail!(
            "WEBAUTHN_RP_ORIGINS must be set: WEBAUTHN_RP_ID '{rp_id}' is not APP_BASE_URL's domain, \
             so there is no default origin"
        ),
    };
    let rp_name = rp_name.unwrap_or_else(|| app_name.to_owned());
    if rp_name.is_empty() || rp_name.chars().count() > 64 || rp_name.chars().any(char::is_control) {
        bail!("WEBAUTHN_RP_NAME must be 1-64 printable characters, got '{rp_name}'");
    }
    Ok(WebauthnConfig {
        rp_id,
        origins,
        any_port,
        rp_name,
        defaulted,
    })
}

/// A relying party id: a lowercase domain name, no port, no IP address.
fn check_rp_id(id: &str) -> anyhow::Result<()> {
    let labels_ok = id.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if id.len() > 253 || !labels_ok {
        bail!(
            "must be a lowercase domain name such as 'jobpath.example' (no scheme, port or path)"
        );
    }
    if id.parse::<std::net::IpAddr>().is_ok() || id.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        bail!("must be a domain name: browsers refuse passkeys for an IP address");
    }
    Ok(())
}

/// One allowed origin: `scheme://host[:port]`, the host `rp_id` or a subdomain of it,
/// `https` unless the host is `localhost`.
fn origin(raw: &str, rp_id: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).context("not an absolute URL")?;
    let host = url
        .domain()
        .context("must have a domain name as its host")?;
    if !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
        bail!("its host must be WEBAUTHN_RP_ID or a subdomain of it");
    }
    let local = host == "localhost" || host.ends_with(".localhost");
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        _ => bail!("must be https:// (http:// only for localhost)"),
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!("must be an origin only: no path, query or fragment");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: Option<&str>, origins: Option<&str>, base: &str) -> anyhow::Result<WebauthnConfig> {
        read(
            id.map(str::to_owned),
            origins.map(str::to_owned),
            None,
            base,
            "JobPath API",
        )
    }

    #[test]
    fn development_defaults_accept_localhost_on_any_port() {
        let c = with(None, None, "http://localhost:8000/account").unwrap();
        assert_eq!(c.rp_id, "localhost");
        assert!(c.any_port);
        assert_eq!(c.origins[0].as_str(), "http://localhost/");
        assert_eq!(c.rp_name, "JobPath API");
        // An IP address in APP_BASE_URL cannot be a relying party: localhost it is.
        assert_eq!(
            with(None, None, "http://127.0.0.1:9/account")
                .unwrap()
                .rp_id,
            "localhost"
        );
    }

    #[test]
    fn the_front_ends_domain_is_the_default_relying_party() {
        let c = with(None, None, "https://app.jobpath.example/").unwrap();
        assert_eq!(c.rp_id, "app.jobpath.example");
        assert_eq!(c.origins[0].as_str(), "https://app.jobpath.example/");
        assert!(!c.any_port);
    }

    #[test]
    fn inconsistent_sets_are_refused_naming_the_variable() {
        for (id, origins, base, names) in [
            (
                Some("127.0.0.1"),
                None,
                "http://localhost/",
                "WEBAUTHN_RP_ID",
            ),
            (
                Some("JobPath.example"),
                None,
                "http://localhost/",
                "WEBAUTHN_RP_ID",
            ),
            (
                Some("jobpath.example:443"),
                None,
                "http://localhost/",
                "WEBAUTHN_RP_ID",
            ),
            (
                Some("jobpath.example"),
                Some("https://evil.example"),
                "http://localhost/",
                "WEBAUTHN_RP_ORIGINS",
            ),
            (
                Some("jobpath.example"),
                Some("http://app.jobpath.example"),
                "http://localhost/",
                "WEBAUTHN_RP_ORIGINS",
            ),
            (
                Some("jobpath.example"),
                Some("https://jobpath.example/login"),
                "http://localhost/",
                "WEBAUTHN_RP_ORIGINS",
            ),
            (
                Some("jobpath.example"),
                None,
                "https://other.example/",
                "WEBAUTHN_RP_ORIGINS",
            ),
            (
                Some("jobpath.example"),
                Some(" , "),
                "http://localhost/",
                "WEBAUTHN_RP_ORIGINS",
            ),
        ] {
            let e = format!("{:#}", with(id, origins, base).unwrap_err());
            assert!(e.contains(names), "{id:?} {origins:?}: {e}");
        }
    }

    #[test]
    fn explicit_origins_may_be_subdomains_and_localhost_may_be_plain_http() {
        let c = with(
            Some("jobpath.example"),
            Some("https://jobpath.example, https://app.jobpath.example:8443"),
            "http://localhost/",
        )
        .unwrap();
        assert_eq!(c.origins.len(), 2);
        assert!(!c.any_port);
        let local = with(
            Some("localhost"),
            Some("http://localhost:5173"),
            "http://localhost/",
        )
        .unwrap();
        assert!(!local.any_port, "an explicit list is exact");
    }
}
