//! A message the SMTP server accepted: its envelope as the client gave it, its bytes as
//! they arrived, and the parts a test asserts on, decoded by `mail-parser`.
//!
//! Nothing is parsed when the message is read from disk: a test that only counts messages
//! pays nothing, and a message the parser cannot read still shows up, with its bytes. Each
//! accessor parses the raw message again; test messages are a few kilobytes.

use mail_parser::parsers::MessageStream;
use mail_parser::{MessageParser, MessagePart, MimeHeaders as _, PartType};

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The `MAIL FROM` address (empty for a null reverse-path).
    pub envelope_from: String,
    /// The `RCPT TO` addresses the server accepted, in the order given.
    pub envelope_to: Vec<String>,
    /// The credentials of the session's `AUTH`, if the client authenticated.
    pub auth: Option<Credentials>,
    /// The message exactly as it arrived (dot-stuffing removed, CRLF line ends kept).
    pub raw: Vec<u8>,
}

/// What a client sent with `AUTH` (the server accepts any credentials).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Credentials {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    pub login: String,
    pub password: String,
}

impl Mail {
    /// The first header called `name` (case-insensitive), unfolded and with RFC 2047
    /// encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Every header of the message (not of its parts), in order, as [`Mail::header`]
    /// decodes them.
    pub fn headers(&self) -> Vec<(String, String)> {
        let Some(message) = MessageParser::default().parse(&self.raw) else {
            return Vec::new();
        };
        message
            .headers()
            .iter()
            .map(|header| {
                let value = self
                    .raw
                    .get(header.offset_start as usize..header.offset_end as usize)
                    .unwrap_or_default();
                // Decoded as unstructured text whatever the field: the parser's structured
                // forms (addresses, dates) would each need their own way back to a string,
                // and a test wants to see the value as a reader would.
                let value = MessageStream::new(value).parse_unstructured();
                let value = value.as_text().unwrap_or_default().trim().to_owned();
                (header.name.as_str().to_owned(), value)
            })
            .collect()
    }

    /// The `text/plain` body, decoded from its transfer encoding and charset.
    pub fn text(&self) -> Option<String> {
        self.body("plain")
    }

    /// The `text/html` body, decoded from its transfer encoding and charset.
    pub fn html(&self) -> Option<String> {
        self.body("html")
    }

    /// The `Message-ID`, without its angle brackets.
    pub fn message_id(&self) -> Option<String> {
        let message = MessageParser::default().parse(&self.raw)?;
        message.message_id().map(str::to_owned)
    }

    /// The first body part of type `text/{subtype}` that is not an attachment. The
    /// parser's own `body_text`/`body_html` are not used: they convert the one into the
    /// other when a message lacks it, and a test must see that a part is missing.
    fn body(&self, subtype: &str) -> Option<String> {
        let message = MessageParser::default().parse(&self.raw)?;
        let is_wanted = |part: &MessagePart<'_>| {
            let (ctype, sub) = part
                .content_type()
                .map_or(("text", Some("plain")), |t| (t.ctype(), t.subtype()));
            let attachment = part
                .content_disposition()
                .is_some_and(|d| d.is_attachment());
            ctype.eq_ignore_ascii_case("text")
                && sub.is_some_and(|s| s.eq_ignore_ascii_case(subtype))
                && !attachment
                && matches!(part.body, PartType::Text(_) | PartType::Html(_))
        };
        let part = message.parts.iter().find(|part| is_wanted(part))?;
        part.text_contents().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(raw: &str) -> Mail {
        Mail {
            envelope_from: "sender@example.com".into(),
            envelope_to: vec!["ada@example.com".into()],
            auth: None,
            raw: raw.replace('\n', "\r\n").into_bytes(),
        }
    }

    const MULTIPART: &str = "\
From: =?utf-8?q?Jobpath_=C3=A9quipe?= <no-reply@example.com>
To: ada@example.com
Subject: =?utf-8?b?UsOpaW5pdGlhbGlzZXIgdm90cmUgbW90IGRlIHBhc3Nl?=
X-Folded: one
 two
Message-ID: <abc.123@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"b1\"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Bonjour, cliquez ici : https://example.com/reset?token=3Dabc=
def=C3=A9
--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

PHA+Qm9uam91ciDDqTwvcD4=
--b1--
";

    #[test]
    fn headers_are_found_whatever_the_case_and_decoded() {
        let mail = mail(MULTIPART);
        assert_eq!(
            mail.header("subject").as_deref(),
            Some("Réinitialiser votre mot de passe")
        );
        assert_eq!(
            mail.header("FROM").as_deref(),
            Some("Jobpath équipe <no-reply@example.com>")
        );
        assert_eq!(mail.header("x-folded").as_deref(), Some("one two"));
        assert_eq!(mail.header("Reply-To"), None);
        let names: Vec<String> = mail.headers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "From",
                "To",
                "Subject",
                "X-Folded",
                "Message-ID",
                "MIME-Version",
                "Content-Type"
            ]
        );
        assert_eq!(mail.message_id().as_deref(), Some("abc.123@example.com"));
    }

    #[test]
    fn both_bodies_are_decoded_from_their_transfer_encoding() {
        let mail = mail(MULTIPART);
        assert_eq!(
            mail.text().unwrap().trim_end(),
            "Bonjour, cliquez ici : https://example.com/reset?token=abcdefé"
        );
        assert_eq!(mail.html().as_deref(), Some("<p>Bonjour é</p>"));
    }

    #[test]
    fn a_missing_part_is_missing_not_converted_from_the_other() {
        let plain = mail("Subject: hi\n\nonly text\n");
        assert_eq!(plain.text().as_deref(), Some("only text\r\n"));
        assert_eq!(plain.html(), None);
        let html = mail("Subject: hi\nContent-Type: text/html\n\n<p>only html</p>\n");
        assert_eq!(html.text(), None);
        assert_eq!(html.message_id(), None);
    }

    #[test]
    fn an_attached_text_file_is_not_the_text_body() {
        let mail = mail(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/html\n\n\
             <p>body</p>\n--b\nContent-Type: text/plain\n\
             Content-Disposition: attachment; filename=a.txt\n\nattached\n--b--\n",
        );
        assert_eq!(mail.text(), None);
        assert_eq!(mail.html().as_deref(), Some("<p>body</p>"));
    }
}
