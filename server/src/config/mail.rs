//! The email settings: which mailer (`MAILER`), the SMTP server (`SMTP_URL`, parsed once into
//! [`SmtpServer`], whose password never shows), the sender (`SMTP_FROM`), where links point
//! (`APP_BASE_URL`), the lifetimes of emailed secrets and the verification policy.
//!
//! Development needs none of it: with no `SMTP_URL` the mailer is `log` (each message is
//! written to the server's log, marked as not sent), and links point at the pages the
//! server serves itself. Production refuses `MAILER=log` and a missing `SMTP_URL` or
//! `APP_BASE_URL`, naming the variable: a deployment must not believe it sends mail that
//! goes nowhere, nor send links to `localhost`.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Secret;

/// Which mailer delivers the outbox (`MAILER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailer {
    /// SMTP, with lettre.
    Smtp(SmtpServer),
    /// Development's: every message is written to the log, whole, and marked as not sent.
    Log,
}

/// How the connection to the SMTP server is protected, from `SMTP_URL`'s scheme and its
/// `tls` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Implicit,
    /// `smtp://`: STARTTLS, required — the mail is never sent in the clear (port 587 by
    /// default).
    StartTls,
    /// `smtp://…?tls=none`: no TLS, for a relay on this host or a test server. Refused with
    /// credentials to any host but a loopback one: they would cross the network in the
    /// clear.
    None,
}

/// `SMTP_URL`, parsed: `smtp://user:pass@host:587` (STARTTLS), `smtps://user:pass@host:465`
/// (implicit TLS), `smtp://host:25?tls=none` (no TLS). The password is a [`Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl SmtpServer {
    pub fn parse(raw: &str) -> anyhow::Result<SmtpServer> {
        let url = url::Url::parse(raw).context("SMTP_URL is not a URL")?;
        let mut tls = match url.scheme() {
            "smtp" => SmtpTls::StartTls,
            "smtps" => SmtpTls::Implicit,
            other => bail!("SMTP_URL must start with smtp:// or smtps://, got '{other}://'"),
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref(), tls) {
                ("tls", "none", SmtpTls::StartTls) => tls = SmtpTls::None,
                ("tls", "starttls" | "required", SmtpTls::StartTls) => {}
                ("tls", value, _) => bail!(
                    "SMTP_URL: tls={value} is not supported (smtp:// takes tls=starttls, the \
                     default, or tls=none; smtps:// is always TLS)"
                ),
                (key, _, _) => bail!("SMTP_URL: unknown parameter '{key}'"),
            }
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .context("SMTP_URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(match tls {
            SmtpTls::Implicit => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        });
        let decode = |s: &str| {
            percent_decode(s).with_context(|| "SMTP_URL: the user or password is badly encoded")
        };
        let username = match url.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        let password = url.password().map(decode).transpose()?.map(Secret::new);
        if password.is_some() && username.is_none() {
            bail!("SMTP_URL has a password but no user");
        }
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if tls == SmtpTls::None && username.is_some() && !loopback {
            bail!(
                "SMTP_URL: tls=none with credentials to {host} would send the password in the \
                 clear; use smtp:// (STARTTLS) or smtps://"
            );
        }
        Ok(SmtpServer {
            host,
            port,
            tls,
            username,
            password,
        })
    }

    /// The URL as `check-config` shows it: the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let scheme = match self.tls {
            SmtpTls::Implicit => "smtps",
            SmtpTls::StartTls | SmtpTls::None => "smtp",
        };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        let query = match self.tls {
            SmtpTls::None => "?tls=none",
            _ => "",
        };
        format!("{scheme}://{user}{host}:{}{query}", self.port)
    }
}

impl fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

/// `EMAIL_VERIFICATION`: what an unverified address may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// No verification email at signup; `email_verified` is still reported.
    Off,
    /// A verification email at signup; login works, and the token says unverified.
    Soft,
    /// Login of an unverified account is refused (403 `email_not_verified`), after a
    /// correct password only.
    Required,
}

impl Verification {
    pub fn parse(raw: &str) -> anyhow::Result<Verification> {
        match raw.to_ascii_lowercase().as_str() {
            "off" => Ok(Verification::Off),
            "soft" => Ok(Verification::Soft),
            "required" => Ok(Verification::Required),
            other => bail!("must be off, soft or required, got '{other}'"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verification::Off => "off",
            Verification::Soft => "soft",
            Verification::Required => "required",
        }
    }
}

/// Everything about email, read by [`super::Config::from_lookup`].
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub mailer: Mailer,
    /// `SMTP_FROM`: the `From` of every message, `Name <address>` or a bare address.
    pub from: String,
    /// `SMTP_TIMEOUT_SECONDS`: each SMTP command's limit; a whole message gets twice it.
    pub smtp_timeout: Duration,
    /// `APP_BASE_URL` without a trailing slash: links are `{base}/reset-password#token=…`
    /// and `{base}/verify-email#token=…`. Default: this server's own pages,
    /// `http://localhost:{PORT}/account`.
    pub app_base_url: String,
    /// Whether `APP_BASE_URL` was unset (links point at the built-in pages).
    pub app_base_url_default: bool,
    pub password_reset_ttl: Duration,
    pub verification: Verification,
    pub verification_ttl: Duration,
    /// Emails of one kind one account is sent per hour, at most; more are silently not
    /// sent (`RATE_LIMIT_EMAILS_PER_RECIPIENT_PER_HOUR`).
    pub per_recipient_per_hour: u32,
    /// `EMAIL_CHANGE_TTL_MINUTES`: how long a pending email change (its confirmation and
    /// cancel links) lives.
    pub email_change_ttl: Duration,
}

impl MailConfig {
    /// The domain of `SMTP_FROM`'s address, for `Message-ID`s.
    pub fn from_domain(&self) -> &str {
        let address = self
            .from
            .rsplit_once('<')
            .map_or(self.from.as_str(), |(_, a)| a.trim_end_matches('>'));
        address
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d.trim())
    }
}

/// `APP_BASE_URL`: an absolute `http(s)` URL, stored without a trailing slash.
pub fn base_url(raw: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(raw).context("not an absolute URL")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("must be an http:// or https:// URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("must have no query or fragment: links append a path and #token=…");
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// `SMTP_FROM`: `Name <address>` or `address`, one `@`, no line breaks.
pub fn from_address(raw: &str) -> anyhow::Result<String> {
    if raw.contains(['\r', '\n']) {
        bail!("must be one line");
    }
    let address = raw
        .rsplit_once('<')
        .map_or(raw, |(_, a)| a.trim_end_matches('>'));
    if address.matches('@').count() != 1 || address.starts_with('@') || address.ends_with('@') {
        bail!("must be an address such as 'JobPath <no-reply@jobpath.example>'");
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_choose_their_tls_and_default_port() {
        let s = SmtpServer::parse("smtp://mailer:p%40ss@mail.example.com").unwrap();
        assert_eq!(
            (s.tls, s.port, s.username.as_deref()),
            (SmtpTls::StartTls, 587, Some("mailer"))
        );
        assert_eq!(s.password.unwrap().expose(), "p@ss");
        let s = SmtpServer::parse("smtps://u:p@mail.example.com").unwrap();
        assert_eq!((s.tls, s.port), (SmtpTls::Implicit, 465));
        let s = SmtpServer::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (s.tls, s.port, s.host.as_str()),
            (SmtpTls::None, 2525, "127.0.0.1")
        );
    }

    #[test]
    fn bad_smtp_urls_are_refused_saying_why() {
        for (raw, why) in [
            ("http://mail.example.com", "smtp:// or smtps://"),
            ("smtp://u:p@mail.example.com?tls=none", "in the clear"),
            ("smtps://mail.example.com?tls=none", "not supported"),
            ("smtp://mail.example.com?foo=1", "unknown parameter"),
            ("smtp://:p@mail.example.com", "no user"),
        ] {
            let err = format!("{:#}", SmtpServer::parse(raw).unwrap_err());
            assert!(err.contains(why), "{raw}: {err}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let s = SmtpServer::parse("smtp://mailer:hunter2-secret@mail.example.com:2587").unwrap();
        assert_eq!(s.redacted(), "smtp://mailer:***@mail.example.com:2587");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn base_urls_and_from_addresses() {
        assert_eq!(
            base_url("https://app.example.com/").unwrap(),
            "https://app.example.com"
        );
        assert!(base_url("app.example.com").is_err());
        assert!(base_url("https://app.example.com/?x=1").is_err());
        assert!(from_address("JobPath <no-reply@jobpath.example>").is_ok());
        assert!(from_address("no-reply@jobpath.example").is_ok());
        assert!(from_address("nobody").is_err());
        assert!(from_address("a@b\r\nBcc: x@y").is_err());
    }
}
