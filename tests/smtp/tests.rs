//! The harness's own tests of its SMTP server and tarpit: real messages over real SMTP
//! (lettre, and a session driven by hand where the exact replies matter).

use super::*;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{self, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(10);

fn transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn note(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("no-reply@jobpath.test".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!("{subject}\n"))
        .unwrap()
}

/// A hand-driven SMTP session, to see the server's exact replies.
struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Session {
    /// Connects and returns the session with the server's greeting.
    async fn open(port: u16) -> (Session, String) {
        let (read, writer) = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap()
            .into_split();
        let mut session = Session {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = session.reply().await;
        (session, greeting)
    }

    /// The last line of the next reply (`250-` lines continue it).
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            assert!(!line.is_empty(), "the SMTP server closed the connection");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    async fn say(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn a_multipart_message_arrives_with_its_envelope_and_both_parts_decoded() {
    let server = MailServer::start().await;
    let text = "Bonjour Ada,\n\nréinitialisez votre mot de passe : \
                https://jobpath.test/reset?token=abc123&x=y — ce lien expire dans une heure.\n";
    let html = "<p>Bonjour Ada,</p><p><a href=\"https://jobpath.test/reset?token=abc123&amp;x=y\">\
                Réinitialiser</a></p>";
    let message = Message::builder()
        .from("JobPath <no-reply@jobpath.test>".parse().unwrap())
        .to(Mailbox::new(
            Some("Ada Lovelace".into()),
            "Ada@Example.com".parse().unwrap(),
        ))
        .bcc("audit@example.com".parse().unwrap())
        .subject("Réinitialiser votre mot de passe")
        // lettre adds no Message-ID of its own accord.
        .message_id(None)
        .multipart(MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))
        .unwrap();
    let sent = message.formatted();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
        .credentials(authentication::Credentials::new(
            "jobpath".into(),
            "s3cret".into(),
        ))
        .authentication(vec![Mechanism::Plain])
        .build();
    transport.send(message).await.unwrap();

    let mail = server
        .wait_for_to("ada@example.com", 1, WITHIN)
        .await
        .remove(0);
    assert_eq!(mail.envelope_from, "no-reply@jobpath.test");
    assert_eq!(mail.envelope_to, ["Ada@Example.com", "audit@example.com"]);
    assert_eq!(
        mail.auth,
        Some(Credentials {
            mechanism: "PLAIN".into(),
            login: "jobpath".into(),
            password: "s3cret".into(),
        })
    );
    // Stored byte for byte: the envelope went to the sidecar, not into the headers. One
    // empty line more arrives than lettre formatted: it ends DATA with CRLF.CRLF even
    // after a message that ends with CRLF.
    let mut arrived = sent.clone();
    arrived.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&mail.raw),
        String::from_utf8_lossy(&arrived)
    );
    assert_eq!(
        mail.header("subject").as_deref(),
        Some("Réinitialiser votre mot de passe")
    );
    assert_eq!(
        mail.header("To").as_deref(),
        Some("\"Ada Lovelace\" <Ada@Example.com>")
    );
    assert_eq!(mail.header("Bcc"), None);
    let id = mail.message_id().unwrap();
    assert_eq!(mail.header("message-id"), Some(format!("<{id}>")));
    assert_eq!(mail.text().unwrap().replace("\r\n", "\n"), text);
    assert_eq!(mail.html().unwrap(), html);
}

#[tokio::test]
async fn tempfail_and_reject_recipients_are_refused_at_rcpt_and_the_others_accepted() {
    let server = MailServer::start().await;
    let (mut smtp, greeting) = Session::open(server.port()).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(smtp.say("EHLO client.test").await.starts_with("250 "));
    assert!(
        smtp.say("MAIL FROM:<a@jobpath.test>")
            .await
            .starts_with("250 ")
    );
    assert_eq!(
        smtp.say("RCPT TO:<TempFail.1@example.com>").await,
        "451 4.3.0 try again later"
    );
    assert_eq!(
        smtp.say("RCPT TO:<reject-me@example.com>").await,
        "550 5.1.1 no such user"
    );
    assert!(
        smtp.say("RCPT TO:<ada@example.com>")
            .await
            .starts_with("250 ")
    );
    assert!(smtp.say("DATA").await.starts_with("354 "));
    assert!(
        smtp.say("Subject: hi\r\n\r\nbody\r\n.")
            .await
            .starts_with("250 ")
    );
    assert!(smtp.say("QUIT").await.starts_with("221 "));
    let stored = server.wait_for(1, WITHIN).await;
    assert_eq!(stored[0].envelope_to, ["ada@example.com"]);
    assert_eq!(stored[0].auth, None);

    // What a client library makes of them: lettre's own classification.
    let transport = transport(server.port());
    let error = transport
        .send(note("tempfail@example.com", "later"))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    let error = transport
        .send(note("reject@example.com", "never"))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_stopped_server_refuses_connections_and_a_restarted_one_keeps_port_and_messages() {
    let mut server = MailServer::start().await;
    let port = server.port();
    let transport = transport(port);
    transport
        .send(note("ada@example.com", "first"))
        .await
        .unwrap();
    server.wait_for(1, WITHIN).await;

    server.stop().await;
    let refused = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        transport
            .send(note("ada@example.com", "lost"))
            .await
            .is_err()
    );
    // Still readable while stopped.
    assert_eq!(server.messages().len(), 1);

    server.restart().await;
    assert_eq!(server.port(), port);
    assert_eq!(server.url(), format!("smtp://127.0.0.1:{port}?tls=none"));
    transport
        .send(note("bob@example.com", "second"))
        .await
        .unwrap();
    let stored = server.wait_for(2, WITHIN).await;
    let subjects: Vec<_> = stored.iter().map(|m| m.header("Subject")).collect();
    assert_eq!(subjects, [Some("first".into()), Some("second".into())]);
    assert_eq!(
        server.wait_for_to("BOB@example.com", 1, WITHIN).await.len(),
        1
    );
}

#[tokio::test]
#[should_panic(expected = "expected 1 message(s) to carol@example.com within 300ms, 0 arrived")]
async fn waiting_for_a_message_that_never_comes_fails_and_says_what_did() {
    let server = MailServer::start().await;
    transport(server.port())
        .send(note("ada@example.com", "not for carol"))
        .await
        .unwrap();
    server.wait_for(1, WITHIN).await;
    server
        .wait_for_to("carol@example.com", 1, Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn the_tarpit_accepts_connections_and_never_greets() {
    let tarpit = Tarpit::start().await;
    assert_eq!(
        tarpit.url(),
        format!("smtp://127.0.0.1:{}?tls=none", tarpit.port())
    );
    let mut stream = TcpStream::connect(("127.0.0.1", tarpit.port()))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await;
    assert!(read.is_err(), "the tarpit answered: {read:?}");
}
