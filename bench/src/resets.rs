//! The mail side of the fault run: clients asking for password resets while the SMTP
//! server goes away and comes back, and the reconciliation of what was queued with what
//! the SMTP server received.
//!
//! `faults-driver resets --target URL --seconds N --workers W --pace-ms P
//! --accounts N --database-url URL --maildir DIR --events FILE --drain-seconds S --out FILE`
//!
//! It makes N accounts of its own (straight into `users`: they never log in), then each
//! worker asks `POST /auth/password/forgot` for one account after another, through the
//! balancer (`--target`), a step every `--pace-ms`. When the load ends it waits for the
//! outbox to empty, at most until `--drain-seconds` after the SMTP server's restart
//! (`smtp_up` in the events file), then counts, per outbox row, the copies in the SMTP
//! server's Maildir (by `Message-ID`, which is `<outbox id@domain>`). The report goes to
//! `--out`, for `bench/faults` to append; the exit status says whether the targets were met.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jobpath_client::{Client, types};
use uuid::Uuid;

use crate::{HUNG_AFTER, Outcome, epoch_ms, outcome};

/// The slowest answer a reset request may take: it only writes rows, whatever the SMTP
/// server is doing.
const FAST: Duration = Duration::from_secs(1);

struct Sample {
    /// Epoch milliseconds, to place it against the events.
    start_ms: i64,
    latency: Duration,
    outcome: Outcome,
}

/// One outbox row as the reconciliation sees it.
struct Row {
    status: String,
    attempts: i32,
    created_ms: i64,
    sent_ms: Option<i64>,
}

pub async fn run(args: HashMap<String, String>) -> anyhow::Result<()> {
    let get = |k: &str| args.get(k).with_context(|| format!("--{k} is required"));
    let target = get("target")?.to_owned();
    let seconds: u64 = get("seconds")?.parse()?;
    let workers: usize = get("workers")?.parse()?;
    let pace = Duration::from_millis(get("pace-ms")?.parse()?);
    let accounts: i64 = get("accounts")?.parse()?;
    let drain = Duration::from_secs(get("drain-seconds")?.parse()?);
    let prefix = format!("resets-{}-", epoch_ms());

    let (db, conn) = tokio_postgres::connect(get("database-url")?, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    db.execute(
        "INSERT INTO users (email, password_hash)
         SELECT $1 || g || '@example.com', 'never used: these accounts only ask for resets'
           FROM generate_series(1, $2::bigint) AS g",
        &[&prefix, &accounts],
    )
    .await
    .context("making the reset accounts")?;

    let http = reqwest::Client::builder()
        .timeout(HUNG_AFTER)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let client = Arc::new(Client::new_with_client(&target, http));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, samples, prefix) = (client.clone(), samples.clone(), prefix.clone());
            tokio::spawn(async move {
                let mut next = Instant::now();
                let mut n = 0usize;
                while Instant::now() < until {
                    let account = (w + n * workers) as i64 % accounts + 1;
                    let email = format!("{prefix}{account}@example.com");
                    let start_ms = epoch_ms() as i64;
                    let started = Instant::now();
                    let result = client
                        .forgot_password()
                        .body(types::EmailAddress::builder().email(email.as_str()))
                        .send()
                        .await;
                    samples.lock().unwrap().push(Sample {
                        start_ms,
                        latency: started.elapsed(),
                        outcome: outcome(&result),
                    });
                    n += 1;
                    next += pace;
                    tokio::time::sleep_until(next.into()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let samples = Arc::into_inner(samples).context("workers finished")?;
    let samples = samples.into_inner().unwrap();
    eprintln!(
        "faults-driver resets: {} requests; waiting for the outbox",
        samples.len()
    );

    // The bounded wait: the backoff after a failed attempt is 5, 10, 20 s … ±25 %, so
    // every message that failed during the outage has its next attempt within that.
    let events = read_events(get("events")?)?;
    let smtp_up = events.get("smtp_up").copied();
    let deadline = smtp_up.unwrap_or(epoch_ms() as i64) + drain.as_millis() as i64;
    let like = format!("{prefix}%");
    loop {
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM email_outbox
                  WHERE recipient LIKE $1 AND status IN ('queued', 'sending')",
                &[&like],
            )
            .await?
            .get(0);
        if pending == 0 || epoch_ms() as i64 >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let rows: HashMap<Uuid, Row> = db
        .query(
            "SELECT id, status, attempts,
                    (extract(epoch FROM created_at) * 1000)::bigint,
                    (extract(epoch FROM sent_at) * 1000)::bigint
               FROM email_outbox WHERE recipient LIKE $1",
            &[&like],
        )
        .await?
        .iter()
        .map(|r| {
            let row = Row {
                status: r.get(1),
                attempts: r.get(2),
                created_ms: r.get(3),
                sent_ms: r.get(4),
            };
            (r.get(0), row)
        })
        .collect();
    let received = received(Path::new(get("maildir")?))?;
    let report = render(&samples, &rows, &received, &events, drain);
    std::fs::write(get("out")?, &report.markdown)?;
    println!("{}", report.summary);
    anyhow::ensure!(report.target_met, "the reset run missed its target");
    Ok(())
}

/// Event name → epoch milliseconds, from the file `bench/faults` writes.
fn read_events(path: &str) -> anyhow::Result<HashMap<String, i64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut events = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(at), Some(name)) = (parts.next(), parts.next()) {
            events.insert(name.to_owned(), at.parse()?);
        }
    }
    Ok(events)
}

/// Copies received per `Message-ID` (its outbox id), over every message in `DIR/new`. Only
/// the header block is read.
fn received(maildir: &Path) -> anyhow::Result<HashMap<Uuid, usize>> {
    let mut counts = HashMap::new();
    let dir = maildir.join("new");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let text = std::fs::read_to_string(entry?.path())?;
        let id = text
            .lines()
            .take_while(|l| !l.trim_end_matches('\r').is_empty())
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("message-id").then_some(value)
            })
            .and_then(|v| v.trim().strip_prefix('<')?.split_once('@'))
            .and_then(|(id, _)| id.parse().ok());
        if let Some(id) = id {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts)
}

struct Rendered {
    markdown: String,
    summary: String,
    target_met: bool,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// p50, p99 and the maximum of some latencies.
fn spread(mut latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "—".into();
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {}, p99 {}, max {}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    )
}

fn render(
    samples: &[Sample],
    rows: &HashMap<Uuid, Row>,
    received: &HashMap<Uuid, usize>,
    events: &HashMap<String, i64>,
    drain: Duration,
) -> Rendered {
    let answered: Vec<&Sample> = samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Status(_)))
        .collect();
    let accepted = answered
        .iter()
        .filter(|s| s.outcome == Outcome::Status(202))
        .count();
    // Answers the balancer made itself, and requests with no answer at all.
    let gateway = samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Gateway(_)))
        .count();
    let unanswered = samples
        .iter()
        .filter(|s| {
            matches!(
                s.outcome,
                Outcome::Refused | Outcome::Hung | Outcome::Broken
            )
        })
        .count();
    let slowest = answered.iter().map(|s| s.latency).max().unwrap_or_default();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for s in &answered {
        if let Outcome::Status(code) = s.outcome {
            *statuses.entry(code.to_string()).or_default() += 1;
        }
    }

    let copies = |id: &Uuid| received.get(id).copied().unwrap_or(0);
    let delivered = rows.keys().filter(|id| copies(id) >= 1).count();
    let duplicated = rows.keys().filter(|id| copies(id) > 1).count();
    let lost = rows.len() - delivered;
    let strangers = received.keys().filter(|id| !rows.contains_key(id)).count();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows.values() {
        *by_status.entry(row.status.as_str()).or_default() += 1;
    }
    let retried = rows.values().filter(|r| r.attempts > 1).count();
    let most_attempts = rows.values().map(|r| r.attempts).max().unwrap_or(0);

    let (stop, up) = (events.get("smtp_stopping"), events.get("smtp_up"));
    let during = |at: i64| matches!((stop, up), (Some(&a), Some(&b)) if at >= a && at < b);
    let outage_latencies: Vec<Duration> = answered
        .iter()
        .filter(|s| during(s.start_ms))
        .map(|s| s.latency)
        .collect();
    let other_latencies: Vec<Duration> = answered
        .iter()
        .filter(|s| !during(s.start_ms))
        .map(|s| s.latency)
        .collect();
    let queued_during = rows.values().filter(|r| during(r.created_ms)).count();
    let last_sent_after_up = match (up, rows.values().filter_map(|r| r.sent_ms).max()) {
        (Some(&up), Some(last)) => format!("{:.1} s", (last - up) as f64 / 1000.0),
        _ => "—".into(),
    };
    let longest_wait = rows
        .values()
        .filter_map(|r| Some(r.sent_ms? - r.created_ms))
        .max()
        .map_or("—".into(), |d| format!("{:.1} s", d as f64 / 1000.0));

    let all_202 = accepted == answered.len() && gateway == 0 && unanswered == 0;
    let fast = slowest <= FAST;
    let target_met = all_202 && fast && duplicated == 0 && lost == 0 && strangers == 0;
    let verdict = |ok: bool| if ok { "met" } else { "**MISSED**" };

    let mut md = String::new();
    let _ = writeln!(md, "### The SMTP outage\n");
    let _ = writeln!(
        md,
        "Clients kept asking for password resets (`POST /auth/password/forgot`, {} requests \
         through the balancer, from after the database, PgBouncer and SIGKILL faults to the end \
         of the load) for accounts that exist, \
         while the SMTP server was stopped for {} and started again. The report waited for \
         the outbox to empty, at most {} s after the restart.\n",
        samples.len(),
        match (stop, up) {
            (Some(a), Some(b)) => format!("{:.1} s", (b - a) as f64 / 1000.0),
            _ => "—".into(),
        },
        drain.as_secs()
    );
    let _ = writeln!(md, "| target | result |\n|---|---|");
    let _ = writeln!(
        md,
        "| every reset request answered 202 | {accepted} of {} answered 202 by an instance \
         ({}); {gateway} answered by the balancer itself; {unanswered} without an answer — {} |",
        answered.len(),
        statuses
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict(all_202)
    );
    let _ = writeln!(
        md,
        "| and fast (≤ {}) | slowest {} — {} |",
        ms(FAST),
        ms(slowest),
        verdict(fast)
    );
    let _ = writeln!(
        md,
        "| zero duplicated messages (received more than once) | {duplicated} — {} |",
        verdict(duplicated == 0)
    );
    let _ = writeln!(
        md,
        "| zero lost messages (queued, never received) | {lost} of {} — {} |",
        rows.len(),
        verdict(lost == 0)
    );
    let _ = writeln!(
        md,
        "| zero messages received that were never queued | {strangers} — {} |\n",
        verdict(strangers == 0)
    );
    let _ = writeln!(
        md,
        "- Messages queued (rows in `email_outbox`): {}, {queued_during} of them while the \
         SMTP server was down; delivered (distinct `Message-ID`s received): {delivered}; \
         duplicated: {duplicated}; lost: {lost}.",
        rows.len()
    );
    let _ = writeln!(
        md,
        "- Rows by status at the end: {}; {retried} needed more than one attempt (at most \
         {most_attempts}).",
        by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "- Last delivery {last_sent_after_up} after the SMTP server was back; the longest a \
         message waited from queued to sent: {longest_wait}."
    );
    let _ = writeln!(
        md,
        "- Reset requests while the SMTP server was down: {} ({}); at other times: {} ({}).\n",
        outage_latencies.len(),
        spread(outage_latencies.clone()),
        other_latencies.len(),
        spread(other_latencies.clone())
    );
    let summary = format!(
        "resets: {} requests, {accepted} answered 202, slowest {}; mail queued {}, delivered \
         {delivered}, duplicated {duplicated}, lost {lost}; target {}",
        samples.len(),
        ms(slowest),
        rows.len(),
        if target_met { "met" } else { "MISSED" }
    );
    Rendered {
        markdown: md,
        summary,
        target_met,
    }
}
