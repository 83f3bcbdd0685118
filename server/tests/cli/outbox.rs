//! The outbox across a crash: an instance killed (SIGKILL) after claiming a message and
//! before sending it leaves the row leased; once the lease ends another instance takes the
//! row over and delivers it, exactly once. A graceful stop, by contrast, finishes the sends
//! in flight (`mail::sender`), so this needs a real process to kill.

use std::time::{Duration, Instant};

use jobpath_tests::smtp::{MailServer, Tarpit};

use super::{Database, request, serve};

fn post(addr: &str, path: &str, body: &str) -> u16 {
    request(addr, &format!("POST {path}"), None, Some(body)).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_claimed_by_an_instance_that_died_is_delivered_by_another_after_its_lease() {
    let db = Database::create().await;
    let tarpit = Tarpit::start().await;
    let mail = MailServer::start().await;
    // A's SMTP server accepts the connection and never answers: A holds the claim.
    let mut a = serve(
        &db,
        &[
            ("SMTP_URL", &tarpit.url()),
            ("SMTP_TIMEOUT_SECONDS", "1"),
            ("EMAIL_VERIFICATION", "off"),
            ("LOG_FORMAT", "json"),
        ],
    );
    let addr = a.address().await;
    let email = "crash-test@example.com";
    let credentials = format!(r#"{{"email":"{email}","password":"a long enough passphrase"}}"#);
    assert_eq!(post(&addr, "/auth/signup", &credentials), 201);
    assert_eq!(
        post(
            &addr,
            "/auth/password/forgot",
            &format!(r#"{{"email":"{email}"}}"#)
        ),
        202
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .count("SELECT count(*) FROM email_outbox WHERE status = 'sending'")
        .await
        != 1
    {
        assert!(Instant::now() < deadline, "A never claimed the message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();

    let b = serve(
        &db,
        &[
            ("SMTP_URL", &mail.url()),
            ("SMTP_TIMEOUT_SECONDS", "1"),
            ("EMAIL_VERIFICATION", "off"),
            ("LOG_FORMAT", "json"),
        ],
    );
    b.address().await;
    // The lease is 3 × SMTP_TIMEOUT_SECONDS + 10 s; then B's next look (every 5 s) takes it.
    let delivered = mail.wait_for(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail.messages().len(), 1, "delivered exactly once");
    assert_eq!(delivered[0].envelope_to, vec![email.to_owned()]);
    let id = db
        .count("SELECT count(*) FROM email_outbox WHERE status = 'sent' AND attempts = 2 AND secret_seed IS NULL")
        .await;
    assert_eq!(id, 1, "sent at the second attempt, its secret erased");
    b.stop().await;
}
