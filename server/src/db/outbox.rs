//! The outbox (`email_outbox`, see `sql/0010_email.sql`) as the sender sees it: claiming
//! due rows, recording outcomes, its depth, pruning, and the `LISTEN` connection that wakes
//! the sender.
//!
//! Rows are queued by the transactions that cause them (`db::secrets`, `db::users`,
//! `db::sessions`), with [`QUEUE`] and [`NOTIFY`].
//!
//! **Claims.** [`claim`] takes due rows with `FOR UPDATE SKIP LOCKED` — instances draining
//! one outbox never take the same row — and leases them: `lease_until` is both the lease
//! and the claim's identity. A claimed row whose lease runs out (its instance crashed
//! mid-send) is due again and taken over. Outcomes of a failed attempt are recorded only
//! while the claim is still the current one; "sent" is recorded whatever the claim, because
//! the message was delivered and must never be retried.

use super::typed::Typed as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tokio::sync::Notify;
use uuid::Uuid;

use super::Database;
use super::connect::Target;
use super::tls::Tls;
use crate::errors::ApiError;
use crate::mail::Kind;

/// The columns every outbox insert fills, in this order: `id`, `kind`, `user_id`,
/// `recipient`, `secret_seed`, `expires_at`.
pub const QUEUE: &str =
    "INSERT INTO email_outbox (id, kind, user_id, recipient, secret_seed, expires_at)";

/// Wakes every instance's sender when the transaction that runs it commits.
pub const NOTIFY: &str = "SELECT pg_notify('email_outbox', '')";

/// A row claimed for one attempt.
pub struct Claimed {
    pub id: Uuid,
    pub kind: Option<Kind>,
    pub recipient: String,
    pub seed: Option<Vec<u8>>,
    /// The notice's one non-secret value (how many recovery codes are left).
    pub detail: Option<String>,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// The message's link would already be dead (or a notice is too old to matter).
    pub expired: bool,
    /// The lease, which identifies this claim.
    pub lease_until: DateTime<Utc>,
}

/// Claims up to `limit` due rows for `lease`.
pub async fn claim(db: &Database, limit: i64, lease: Duration) -> Result<Vec<Claimed>, ApiError> {
    db.run(async |client| {
        let rows = client
            .bounded(client.rows(
                "UPDATE email_outbox
                    SET status = 'sending', attempts = attempts + 1,
                        lease_until = now() + make_interval(secs => $2)
                  WHERE id IN (
                        SELECT id FROM email_outbox
                         WHERE status IN ('queued', 'sending') AND next_attempt_at <= now()
                           AND (lease_until IS NULL OR lease_until < now())
                         ORDER BY next_attempt_at
                         LIMIT $1
                           FOR UPDATE SKIP LOCKED)
                RETURNING id, kind, recipient, secret_seed, attempts, expires_at < now(),
                          lease_until, detail",
                &[&limit, &lease.as_secs_f64()],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                kind: Kind::parse(r.get(1)),
                recipient: r.get(2),
                seed: r.get(3),
                attempt: r.get(4),
                expired: r.get(5),
                lease_until: r.get(6),
                detail: r.get(7),
            })
            .collect())
    })
    .await
}

/// Records delivery: the row is sent and its seed erased, whoever holds the claim now.
/// False if it was already terminal (another instance finished it first).
pub async fn sent(db: &Database, id: Uuid) -> Result<bool, ApiError> {
    db.run(async |client| {
        Ok(client
            .bounded(client.exec(
                "UPDATE email_outbox
                    SET status = 'sent', sent_at = now(), secret_seed = NULL,
                        lease_until = NULL, last_error = NULL
                  WHERE id = $1 AND status IN ('queued', 'sending')",
                &[&id],
            ))
            .await?
            == 1)
    })
    .await
}

/// Puts a claimed row back in the queue, due after `delay`, if the claim is still current.
pub async fn retry(
    db: &Database,
    claim: &Claimed,
    delay: Duration,
    error: &str,
) -> Result<bool, ApiError> {
    db.run(async |client| {
        Ok(client
            .bounded(client.exec(
                "UPDATE email_outbox
                    SET status = 'queued', lease_until = NULL, last_error = left($4, 500),
                        next_attempt_at = now() + make_interval(secs => $3)
                  WHERE id = $1 AND lease_until = $2 AND status = 'sending'",
                &[&claim.id, &claim.lease_until, &delay.as_secs_f64(), &error],
            ))
            .await?
            == 1)
    })
    .await
}

/// Ends a claimed row without delivery (permanent failure, too many attempts, expired),
/// erasing its seed, if the claim is still current.
pub async fn abandon(db: &Database, claim: &Claimed, error: &str) -> Result<bool, ApiError> {
    db.run(async |client| {
        Ok(client
            .bounded(client.exec(
                "UPDATE email_outbox
                    SET status = 'abandoned', secret_seed = NULL, lease_until = NULL,
                        last_error = left($3, 500)
                  WHERE id = $1 AND lease_until = $2 AND status = 'sending'",
                &[&claim.id, &claim.lease_until, &error],
            ))
            .await?
            == 1)
    })
    .await
}

/// Rows waiting for delivery (queued or being sent), and how long the oldest due one has
/// been due, in seconds (0 when none is).
pub async fn depth(db: &Database) -> Result<(i64, f64), ApiError> {
    db.run(async |client| {
        let row = client
            .one(
                "SELECT count(*),
                        coalesce(extract(epoch FROM now() - min(next_attempt_at)
                                 FILTER (WHERE next_attempt_at <= now()))::float8, 0)
                   FROM email_outbox WHERE status IN ('queued', 'sending')",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    })
    .await
}

/// Deletes finished rows older than `keep` (the per-recipient limit counts the last hour),
/// and one-time secrets a day past their use or expiry.
pub async fn prune(db: &Database, keep: Duration) -> Result<u64, ApiError> {
    db.run(async |client| {
        let messages = client
            .exec(
                "DELETE FROM email_outbox
                  WHERE status IN ('sent', 'abandoned')
                    AND created_at < now() - make_interval(secs => $1)",
                &[&keep.as_secs_f64()],
            )
            .await?;
        let secrets = client
            .exec(
                "DELETE FROM one_time_secrets
                  WHERE consumed_at < now() - interval '1 day'
                     OR expires_at < now() - interval '1 day'",
                &[],
            )
            .await?;
        Ok(messages + secrets)
    })
    .await
}

/// Holds a connection that `LISTEN`s on `channel` (the outbox's, `mail::CHANNEL`, or the
/// signing keys', `db::signing_keys::CHANNEL`) and wakes `wake` on every
/// notification, reconnecting (with a pause) whenever the connection fails; also wakes
/// after each reconnection, since notifications sent meanwhile were lost. Runs until the
/// task is aborted.
pub async fn listen(target: Target, tls: Tls, channel: &'static str, wake: std::sync::Arc<Notify>) {
    let mut pause = Duration::from_millis(500);
    loop {
        match target.pg().connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection must be driven for the LISTEN to be answered, so both run
                // together: the statement, then the stream until it ends.
                let listening = async { client.batch_execute(&format!("LISTEN {channel}")).await };
                let mut listening = std::pin::pin!(listening);
                let mut subscribed = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !subscribed => {
                            if let Err(e) = done {
                                tracing::warn!(error = %e, channel, "LISTEN failed");
                                break;
                            }
                            subscribed = true;
                            pause = Duration::from_millis(500);
                            wake.notify_one();
                        }
                        message = messages.next() => match message {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                                wake.notify_one();
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, channel, "a LISTEN connection failed");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, channel, "cannot open a LISTEN connection yet");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}
