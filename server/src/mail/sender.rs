//! The sender: one task per instance that drains the outbox.
//!
//! It claims up to [`BATCH`] due rows (`db::outbox::claim`: `FOR UPDATE SKIP LOCKED` and a
//! lease, so instances sharing a database never take the same row and a crashed instance's
//! rows are taken over once their lease ends), writes and sends them concurrently, and
//! records each outcome:
//!
//! - accepted by the server (any 2xx) → `sent`, never sent again;
//! - a temporary failure (4xx, network, timeout) → queued again after an exponential
//!   backoff with jitter ([`backoff`]), until [`MAX_ATTEMPTS`];
//! - a permanent failure (5xx), too many attempts, or a link that has expired → abandoned.
//!
//! Sent and abandoned rows lose their seed, so no secret outlives the delivery. A
//! notification on the outbox's channel (`db::outbox::listen`, sent by every transaction
//! that queues a message) wakes the task at once; otherwise it looks every [`POLL`].
//!
//! An outcome that cannot be recorded (the database went away just after the SMTP server
//! accepted the message) leaves the row claimed: once its lease ends it is sent again,
//! with the same `Message-ID`. That is the one case of a duplicate, and it needs the
//! database to fail between two statements; the "sent" record is retried a few times
//! first.
//!
//! Logs name a message by its outbox id and kind, never by its address or content.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::Notify;

use super::templates::{self, Context};
use super::transport::{Failure, Outgoing, Transport};
use crate::db;
use crate::db::outbox::Claimed;
use crate::state::AppState;

/// Rows claimed (and sent concurrently) at once.
pub const BATCH: i64 = 16;
/// Attempts before a message is abandoned; with [`backoff`] they span about 45 minutes,
/// longer than a reset link lives.
pub const MAX_ATTEMPTS: i32 = 10;
/// How often the outbox is looked at without a notification.
pub const POLL: Duration = Duration::from_secs(5);
/// How often the outbox's depth is read for the metrics.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// Runs the sender until `stop` says so; then it finishes the attempts in flight (so a
/// graceful shutdown never leaves a sent message to be sent again) and returns. `listen`
/// is where the `LISTEN` connection goes; `None` polls only.
pub async fn run(
    state: Arc<AppState>,
    transport: Transport,
    listen: Option<(db::connect::Target, db::tls::Tls)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let wake = Arc::new(Notify::new());
    let listener = listen.map(|(target, tls)| {
        tokio::spawn(db::outbox::listen(
            target,
            tls,
            crate::mail::CHANNEL,
            Arc::clone(&wake),
        ))
    });
    let _stop_listener = AbortOnDrop(listener);
    let lease = lease(&state);
    let mut last_depth = tokio::time::Instant::now() - DEPTH_EVERY;
    while !*stop.borrow() {
        let claimed = match db::outbox::claim(&state.db, BATCH, lease).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e.internal_reason(), "claiming outbox messages failed");
                Vec::new()
            }
        };
        let full = claimed.len() as i64 == BATCH;
        futures::future::join_all(claimed.into_iter().map(|c| deliver(&state, &transport, c)))
            .await;
        if last_depth.elapsed() >= DEPTH_EVERY {
            last_depth = tokio::time::Instant::now();
            if let Ok((depth, oldest)) = db::outbox::depth(&state.db).await {
                state.metrics.outbox_depth(depth, oldest);
            }
        }
        if full {
            continue; // more may be due: no waiting
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The lease of a claim: longer than the slowest attempt (a whole message may take twice
/// `SMTP_TIMEOUT_SECONDS`) plus the database writes around it.
pub fn lease(state: &AppState) -> Duration {
    state.config.mail.smtp_timeout * 3 + Duration::from_secs(10)
}

/// The pause before attempt `attempt + 1` after a temporary failure of attempt `attempt`:
/// 5 s doubling to at most 10 minutes, each drawn from 75–125 % of that, so that
/// messages that failed together do not all retry together.
pub fn backoff(attempt: i32) -> Duration {
    let base = 5.0 * 2f64.powi(attempt.clamp(1, 20) - 1);
    let capped = base.min(600.0);
    Duration::from_secs_f64(capped * rand::rng().random_range(0.75..1.25))
}

async fn deliver(state: &AppState, transport: &Transport, claim: Claimed) {
    let Some(kind) = claim.kind else {
        record_abandon(state, &claim, "unknown kind").await;
        return;
    };
    let label = kind.as_str();
    if claim.expired {
        state.metrics.email_failed(label, "expired");
        tracing::info!(outbox_id = %claim.id, kind = label, "email abandoned: expired before delivery");
        record_abandon(state, &claim, "expired before delivery").await;
        return;
    }
    let mail = &state.config.mail;
    let secrets = &state.email_secrets;
    let link_and_code = match (kind.page(), claim.seed.as_deref()) {
        (Some(page), Some(seed)) => Some((
            format!("{}/{page}#token={}", mail.app_base_url, secrets.token(seed)),
            secrets.code(seed),
        )),
        (Some(_), None) => {
            record_abandon(state, &claim, "secret missing").await;
            return;
        }
        (None, _) => None,
    };
    let valid_for = match kind {
        super::Kind::PasswordReset => minutes(mail.password_reset_ttl),
        super::Kind::VerifyEmail => minutes(mail.verification_ttl),
        super::Kind::EmailChangeConfirm | super::Kind::EmailChangeNotice => {
            minutes(mail.email_change_ttl)
        }
        super::Kind::PasswordChanged
        | super::Kind::EmailChanged
        | super::Kind::AccountDeleted
        | super::Kind::MfaEnrolled
        | super::Kind::MfaRemoved
        | super::Kind::MfaLocked
        | super::Kind::RecoveryCodeUsed
        | super::Kind::PasskeyAdded
        | super::Kind::PasskeyRemoved
        | super::Kind::ApiKeyCreated => String::new(),
    };
    let rendered = templates::render(
        kind,
        &Context {
            app_name: &state.config.app_name,
            secret: link_and_code
                .as_ref()
                .map(|(link, code)| (link.as_str(), code.as_str())),
            valid_for: &valid_for,
            detail: claim.detail.as_deref(),
        },
    );
    let outgoing = Outgoing {
        message_id: format!("{}@{}", claim.id, mail.from_domain()),
        to: &claim.recipient,
        rendered: &rendered,
    };
    match transport.send(&outgoing).await {
        Ok(()) => {
            state.metrics.email_sent(label);
            match transport {
                Transport::Smtp { .. } => {
                    tracing::info!(outbox_id = %claim.id, kind = label, attempt = claim.attempt, "email sent")
                }
                // Done as far as the outbox is concerned, but nothing left the machine.
                Transport::Log { .. } => {
                    tracing::info!(outbox_id = %claim.id, kind = label, "email written to the log, not sent")
                }
            }
            record_sent(state, &claim).await;
        }
        Err(Failure::Permanent(why)) => {
            state.metrics.email_failed(label, "permanent");
            tracing::warn!(outbox_id = %claim.id, kind = label, error = %why, "email refused for good: abandoned");
            record_abandon(state, &claim, &why).await;
        }
        Err(Failure::Transient(why)) if claim.attempt >= MAX_ATTEMPTS => {
            state.metrics.email_failed(label, "attempts");
            tracing::warn!(outbox_id = %claim.id, kind = label, error = %why, attempts = claim.attempt, "email abandoned after too many attempts");
            record_abandon(state, &claim, &why).await;
        }
        Err(Failure::Transient(why)) => {
            state.metrics.email_failed(label, "transient");
            let delay = backoff(claim.attempt);
            tracing::info!(outbox_id = %claim.id, kind = label, error = %why, retry_in_s = delay.as_secs(), "email not sent yet: will retry");
            if let Err(e) = db::outbox::retry(&state.db, &claim, delay, &why).await {
                // The lease ends and the row is taken again: a retry, just a later one.
                tracing::warn!(outbox_id = %claim.id, error = %e.internal_reason(), "recording an email retry failed");
            }
        }
    }
}

/// The "sent" record, retried: a delivered message whose record is lost is sent again.
async fn record_sent(state: &AppState, claim: &Claimed) {
    for pause in [0u64, 200, 1000, 3000] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match db::outbox::sent(&state.db, claim.id).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(outbox_id = %claim.id, error = %e.internal_reason(), "recording a sent email failed")
            }
        }
    }
}

async fn record_abandon(state: &AppState, claim: &Claimed, why: &str) {
    if let Err(e) = db::outbox::abandon(&state.db, claim, why).await {
        tracing::warn!(outbox_id = %claim.id, error = %e.internal_reason(), "recording an abandoned email failed");
    }
}

/// A lifetime in words: "30 minutes", "24 hours".
fn minutes(d: Duration) -> String {
    let m = d.as_secs() / 60;
    match m {
        m if m >= 120 && m % 60 == 0 => format!("{} hours", m / 60),
        1 => "1 minute".to_owned(),
        m => format!("{m} minutes"),
    }
}

/// Aborts the listener task when the sender ends (it is aborted at shutdown).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_ten_minutes_with_jitter() {
        for (attempt, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0), (30, 600.0)] {
            for _ in 0..50 {
                let d = backoff(attempt).as_secs_f64();
                assert!((base * 0.75..base * 1.25).contains(&d), "{attempt}: {d} s");
            }
        }
    }

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(minutes(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(minutes(Duration::from_secs(24 * 3600)), "24 hours");
        assert_eq!(minutes(Duration::from_secs(90 * 60)), "90 minutes");
    }
}
