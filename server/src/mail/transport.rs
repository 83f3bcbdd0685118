//! Delivering one message: over SMTP with lettre, or — development's default — into the
//! server's log.
//!
//! A message is multipart/alternative (text, then HTML) with a stable `Message-ID`
//! (`<outbox row id@SMTP_FROM's domain>`: every attempt of one row carries the same one, so
//! a retry after an unknown outcome is recognisable as the same message), a `Date`, and
//! the headers of transactional mail: `Auto-Submitted: auto-generated` (RFC 3834: no
//! auto-replies, no vacation notices) and `X-Auto-Response-Suppress: All` (the same for
//! Exchange).
//!
//! SMTP outcomes are classified as the outbox needs them: any positive completion (2xx) is
//! sent; a 5xx reply is [`Failure::Permanent`]; everything else — a 4xx reply, a refused or
//! dropped connection, a timeout, a TLS failure — is [`Failure::Transient`] and retried.
//! Each SMTP command waits at most `SMTP_TIMEOUT_SECONDS`, and a whole message twice that.

use std::time::Duration;

use anyhow::Context as _;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::templates::Rendered;
use crate::config::{MailConfig, Mailer, SmtpServer, SmtpTls};

/// One message, ready to go.
pub struct Outgoing<'a> {
    /// The `Message-ID` without its angle brackets.
    pub message_id: String,
    pub to: &'a str,
    pub rendered: &'a Rendered,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying later (4xx, network, timeout).
    Transient(String),
    /// Will never succeed (5xx, an address SMTP cannot carry).
    Permanent(String),
}

/// How the outbox's messages leave this instance.
pub enum Transport {
    Smtp {
        smtp: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        /// The limit on one whole message.
        deadline: Duration,
    },
    /// Development: the message goes to the log, whole, marked as not sent.
    Log { from: Mailbox },
}

impl Transport {
    /// The transport `config` describes. Fails (at start-up) on a `SMTP_FROM` that is no
    /// mailbox, or TLS parameters lettre refuses.
    pub fn new(config: &MailConfig) -> anyhow::Result<Transport> {
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("SMTP_FROM '{}' is not a mailbox", config.from))?;
        Ok(match &config.mailer {
            Mailer::Log => Transport::Log { from },
            Mailer::Smtp(server) => Transport::Smtp {
                smtp: smtp_transport(server, config.smtp_timeout)?,
                from,
                deadline: config.smtp_timeout * 2,
            },
        })
    }

    /// Delivers `msg`; `Ok` once the server accepted it.
    pub async fn send(&self, msg: &Outgoing<'_>) -> Result<(), Failure> {
        let from = match self {
            Transport::Smtp { from, .. } | Transport::Log { from } => from,
        };
        let message = build(from, msg)?;
        match self {
            Transport::Log { .. } => {
                log_unsent(msg);
                Ok(())
            }
            Transport::Smtp { smtp, deadline, .. } => {
                match tokio::time::timeout(*deadline, smtp.send(message)).await {
                    Ok(Ok(_positive)) => Ok(()),
                    // SMTP replies often quote the recipient ("550 5.1.1 <ada@…>: Recipient
                    // address rejected"): the text goes to the log and to last_error.
                    Ok(Err(e)) if e.is_permanent() => {
                        Err(Failure::Permanent(redact(&describe(&e), msg.to)))
                    }
                    Ok(Err(e)) => Err(Failure::Transient(redact(&describe(&e), msg.to))),
                    Err(_) => Err(Failure::Transient(format!(
                        "no answer from the SMTP server within {deadline:?}"
                    ))),
                }
            }
        }
    }
}

fn smtp_transport(
    server: &SmtpServer,
    timeout: Duration,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_parameters =
        || TlsParameters::new(server.host.clone()).context("SMTP_URL: TLS parameters for the host");
    let tls = match server.tls {
        SmtpTls::Implicit => Tls::Wrapper(tls_parameters()?),
        SmtpTls::StartTls => Tls::Required(tls_parameters()?),
        SmtpTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.clone())
        .port(server.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(user) = &server.username {
        let password = server
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// The MIME message. An address the builder refuses can never be sent: permanent.
fn build(from: &Mailbox, msg: &Outgoing<'_>) -> Result<Message, Failure> {
    let to: Mailbox = msg
        .to
        .parse()
        .map_err(|e| Failure::Permanent(format!("the recipient is not a mailbox: {e}")))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(msg.rendered.subject.clone())
        .message_id(Some(format!("<{}>", msg.message_id)))
        .date_now()
        .header(AutoSubmitted)
        .header(AutoResponseSuppress)
        .multipart(MultiPart::alternative_plain_html(
            msg.rendered.text.clone(),
            msg.rendered.html.clone(),
        ))
        .map_err(|e| Failure::Permanent(format!("building the message: {e}")))
}

/// The error's own text and its sources, without the message (lettre's errors carry no
/// address or body, only the server's reply and the I/O cause).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(500).collect()
}

/// `text` with every occurrence of `address` (ASCII case-insensitively) masked.
fn redact(text: &str, address: &str) -> String {
    if address.is_empty() {
        return text.to_owned();
    }
    let (hay, needle) = (text.to_ascii_lowercase(), address.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = hay[at..].find(&needle) {
        out.push_str(&text[at..at + found]);
        out.push_str(&mask(address));
        at += found + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

/// The log mailer's output: the whole message, readable, between markers that say it was
/// not sent — but for the recipient, whose address is masked, since no log line holds a
/// full address. Development only (production refuses `MAILER=log`), so the link and code
/// it shows reach only the developer's own terminal.
fn log_unsent(msg: &Outgoing<'_>) {
    let r = msg.rendered;
    tracing::warn!(
        message_id = %msg.message_id,
        "email NOT SENT (MAILER=log: written here instead)\n\
         ----- begin email (not sent) -----\n\
         To: {} (masked in the log)\nSubject: {}\nMessage-ID: <{}>\n\n{}\n----- HTML part -----\n{}\
         ----- end email (not sent) -----",
        mask(msg.to),
        r.subject,
        msg.message_id,
        r.text,
        r.html
    );
}

/// `ada@example.com` as `a…@example.com`: enough to tell messages apart, not the address.
fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".to_owned(),
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// `X-Auto-Response-Suppress: All`: Exchange's out-of-office and read receipts stay quiet.
#[derive(Clone)]
struct AutoResponseSuppress;

impl header::Header for AutoResponseSuppress {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoResponseSuppress)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "All".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_both_parts_a_stable_id_and_the_transactional_headers() {
        let rendered = Rendered {
            subject: "Reset".into(),
            text: "text part".into(),
            html: "<p>html part</p>".into(),
        };
        let from: Mailbox = "JobPath <no-reply@localhost>".parse().unwrap();
        let msg = Outgoing {
            message_id: "0f9c@jobpath.example".into(),
            to: "ada@example.com",
            rendered: &rendered,
        };
        let formatted = String::from_utf8(build(&from, &msg).unwrap().formatted()).unwrap();
        assert!(formatted.contains("Message-ID: <0f9c@jobpath.example>"));
        assert!(formatted.contains("Auto-Submitted: auto-generated"));
        assert!(formatted.contains("multipart/alternative"));
        assert!(formatted.contains("text/plain") && formatted.contains("text/html"));
    }

    #[test]
    fn smtp_replies_lose_the_recipients_address() {
        assert_eq!(
            redact(
                "550 5.1.1 <Ada@Example.com>: Recipient address rejected",
                "ada@example.com"
            ),
            "550 5.1.1 <a…@example.com>: Recipient address rejected"
        );
        assert_eq!(redact("451 try later", "ada@example.com"), "451 try later");
    }

    #[test]
    fn the_log_shows_no_whole_address() {
        assert_eq!(mask("ada@example.com"), "a…@example.com");
        assert_eq!(mask("nobody"), "…");
    }

    #[test]
    fn an_address_smtp_cannot_carry_is_a_permanent_failure() {
        let rendered = Rendered {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        };
        let from: Mailbox = "no-reply@localhost".parse().unwrap();
        let msg = Outgoing {
            message_id: "x@y".into(),
            to: "not an address",
            rendered: &rendered,
        };
        assert!(matches!(build(&from, &msg), Err(Failure::Permanent(_))));
    }
}
