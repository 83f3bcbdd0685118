//! The fault run's reconciliation and report.
//!
//! Reconciliation compares what clients were told with the truth afterwards: every signup
//! answered 201 must exist in the database (else it was lost), none answered with an error
//! may exist (else it is a phantom), and every token whose logout answered 200 must be
//! refused by both instances. The report is Markdown, appended to `bench/FAULTS.md`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;

use crate::{Ledger, Op, Outcome, Record};

/// One line of the events file that `bench/faults` writes: `<epoch ms> <name> [detail]`.
pub struct Event {
    pub at_ms: i64,
    pub name: String,
    pub detail: String,
}

pub fn read_events(path: &str, started_epoch: u64) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ' ');
        let at: i64 = parts.next().unwrap_or_default().parse()?;
        events.push(Event {
            at_ms: at - started_epoch as i64,
            name: parts.next().unwrap_or_default().to_owned(),
            detail: parts.next().unwrap_or_default().to_owned(),
        });
    }
    Ok(events)
}

#[derive(Default)]
pub struct Reconciliation {
    pub signups_created: usize,
    pub signups_errored: usize,
    pub signups_unknown: usize,
    pub unknown_that_exist: usize,
    pub lost: Vec<String>,
    pub phantom: Vec<String>,
    pub revoked_checked: usize,
    /// (status or failure, count) of `GET /auth/me` with each revoked token, per instance.
    pub revoked_answers: BTreeMap<(usize, Outcome), usize>,
}

impl Reconciliation {
    pub fn revoked_accepted(&self) -> usize {
        self.revoked_answers
            .iter()
            .filter(|((_, o), _)| *o == Outcome::Status(200))
            .map(|(_, n)| n)
            .sum()
    }
}

pub async fn reconcile(
    ledger: &Ledger,
    instances: &[String],
    database_url: &str,
    run_id: u64,
) -> anyhow::Result<Reconciliation> {
    let (db, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let stored: HashSet<String> = db
        .query(
            "SELECT email FROM users WHERE email LIKE $1",
            &[&format!("faults-{run_id}-%")],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut r = Reconciliation::default();
    for (email, outcome) in &ledger.signups {
        let exists = stored.contains(email);
        match outcome {
            Outcome::Status(201) => {
                r.signups_created += 1;
                if !exists {
                    r.lost.push(email.clone());
                }
            }
            Outcome::Status(_) => {
                r.signups_errored += 1;
                if exists {
                    r.phantom.push(email.clone());
                }
            }
            Outcome::Refused | Outcome::Hung | Outcome::Broken => {
                r.signups_unknown += 1;
                r.unknown_that_exist += usize::from(exists);
            }
        }
    }

    // Every revoked token, on every instance, after the run.
    let checks = ledger
        .revoked
        .iter()
        .flat_map(|t| (0..instances.len()).map(move |i| (i, t)))
        .map(|(i, token)| async move {
            let client = jobpath_client::authenticated(&instances[i], token)?;
            let result = client.get_me().send().await;
            anyhow::Ok((i, crate::outcome(&result)))
        });
    let mut answers = futures::stream::iter(checks).buffer_unordered(16);
    while let Some(answer) = answers.next().await {
        let key = answer?;
        *r.revoked_answers.entry(key).or_default() += 1;
    }
    r.revoked_checked = ledger.revoked.len();
    Ok(r)
}

pub struct Input<'a> {
    pub records: &'a [Record],
    pub events: &'a [Event],
    pub reconciliation: &'a Reconciliation,
    pub ended_ms: u64,
    pub workers: usize,
    pub pace: Duration,
    pub bcrypt_rounds: &'a str,
    pub hung_after: Duration,
}

pub struct Rendered {
    pub markdown: String,
    pub summary: String,
    pub target_met: bool,
}

const BUCKET_MS: u64 = 2000;

/// Columns of the over-time table.
fn column(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Status(s) if (200..300).contains(&s) => 0,
        Outcome::Status(401) => 1,
        Outcome::Status(s) if (400..500).contains(&s) => 2,
        Outcome::Status(503) => 3,
        Outcome::Status(500) => 4,
        Outcome::Status(_) => 5,
        Outcome::Refused => 6,
        Outcome::Hung => 7,
        Outcome::Broken => 8,
    }
}
const COLUMNS: [&str; 9] = [
    "2xx",
    "401",
    "other 4xx",
    "503",
    "500",
    "other 5xx",
    "refused",
    "hung",
    "broken",
];

fn event(events: &[Event], name: &str) -> Option<i64> {
    events.iter().find(|e| e.name == name).map(|e| e.at_ms)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn secs(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub fn render(input: &Input<'_>) -> Rendered {
    let records = input.records;
    let r = input.reconciliation;
    let mut md = String::new();
    let total = records.len();
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|x| f(x)).count();
    let five_hundreds = count(&|x| matches!(x.outcome, Outcome::Status(s) if s >= 500 && s != 503));
    let hung = count(&|x| x.outcome == Outcome::Hung);
    let broken = count(&|x| x.outcome == Outcome::Broken);
    let accepted_during = count(&|x| x.op == Op::MeRevoked && x.outcome == Outcome::Status(200));
    let revoked_accepted = r.revoked_accepted() + accepted_during;
    let exit = input
        .events
        .iter()
        .find(|e| e.name == "instance_b_exited")
        .map(|e| e.detail.clone())
        .unwrap_or_else(|| "not recorded".into());
    let target_met = five_hundreds == 0
        && hung == 0
        && r.lost.is_empty()
        && r.phantom.is_empty()
        && revoked_accepted == 0
        && exit == "0";

    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "Load: {} workers, one step every {} ms each, for {}; BCRYPT_ROUNDS={}; a request \
         without an answer after {} counts as hung. {total} requests in all.\n",
        input.workers,
        input.pace.as_millis(),
        secs(input.ended_ms as i64),
        input.bcrypt_rounds,
        ms(input.hung_after),
    );

    let _ = writeln!(md, "| target | result |\n|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "**MISSED**" };
    let _ = writeln!(
        md,
        "| zero 500s (any 5xx but 503) | {five_hundreds} — {} |",
        verdict(five_hundreds == 0)
    );
    let _ = writeln!(
        md,
        "| zero hung requests | {hung} — {} |",
        verdict(hung == 0)
    );
    let _ = writeln!(
        md,
        "| zero lost accounts (201 but absent) | {} of {} — {} |",
        r.lost.len(),
        r.signups_created,
        verdict(r.lost.is_empty())
    );
    let _ = writeln!(
        md,
        "| zero phantom accounts (error but present) | {} of {} — {} |",
        r.phantom.len(),
        r.signups_errored,
        verdict(r.phantom.is_empty())
    );
    let _ = writeln!(
        md,
        "| zero revoked tokens accepted | {revoked_accepted} ({accepted_during} during the run, \
         {} in the final check of {} tokens × 2 instances) — {} |",
        r.revoked_accepted(),
        r.revoked_checked,
        verdict(revoked_accepted == 0)
    );
    let _ = writeln!(
        md,
        "| restarted instance exits 0 on SIGTERM | exit code {exit} — {} |\n",
        verdict(exit == "0")
    );

    // Timeline of the faults.
    let _ = writeln!(md, "### Faults, as injected\n");
    let _ = writeln!(md, "| at | event |\n|---|---|");
    for e in input.events {
        let detail = if e.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", e.detail)
        };
        let _ = writeln!(md, "| {} | {}{detail} |", secs(e.at_ms), e.name);
    }
    md.push('\n');

    // The outage.
    let stop = event(input.events, "db_stopping");
    let up = event(input.events, "db_up");
    if let (Some(stop), Some(up)) = (stop, up) {
        let during: Vec<&Record> = records
            .iter()
            .filter(|x| (x.start_ms as i64) >= stop && (x.start_ms as i64) < up)
            .collect();
        let longest = during.iter().map(|x| x.latency).max().unwrap_or_default();
        let outage_503 = during
            .iter()
            .filter(|x| x.outcome == Outcome::Status(503))
            .count();
        let end = |x: &Record| x.start_ms as i64 + x.latency.as_millis() as i64;
        let first_ok = records
            .iter()
            .filter(|x| (x.start_ms as i64) >= up && column(x.outcome) <= 1)
            .map(|x| end(x) - up)
            .min();
        let last_503 = records
            .iter()
            .filter(|x| x.outcome == Outcome::Status(503))
            .map(|x| end(x) - up)
            .max()
            .unwrap_or(0)
            .max(0);
        let _ = writeln!(md, "### The database outage\n");
        let _ = writeln!(
            md,
            "- PostgreSQL down for {} (stop requested → accepting again).",
            secs(up - stop)
        );
        let _ = writeln!(
            md,
            "- {} requests started during it; {outage_503} of them answered 503; the longest \
             took **{}**.",
            during.len(),
            ms(longest)
        );
        let _ = writeln!(
            md,
            "- Recovery after PostgreSQL accepted connections again: first success after \
             **{}**; the last 503 was answered {} after it ({}).",
            first_ok.map_or("—".into(), |t| ms(Duration::from_millis(t.max(0) as u64))),
            ms(Duration::from_millis(last_503 as u64)),
            if last_503 == 0 {
                "none after"
            } else {
                "requests already in flight or queued when it came back"
            }
        );
        let _ = writeln!(
            md,
            "- Longest response of the whole run: {}.\n",
            ms(records.iter().map(|x| x.latency).max().unwrap_or_default())
        );
    }

    // Requests by status over time.
    let _ = writeln!(
        md,
        "### Requests by status over time ({} s buckets)\n",
        BUCKET_MS / 1000
    );
    let _ = writeln!(md, "| t (s) | {} | events |", COLUMNS.join(" | "));
    let _ = writeln!(md, "|---|{}---|", "---:|".repeat(COLUMNS.len()));
    let buckets = input.ended_ms.div_ceil(BUCKET_MS).max(1);
    for b in 0..buckets {
        let (lo, hi) = (b * BUCKET_MS, (b + 1) * BUCKET_MS);
        let mut row = [0usize; COLUMNS.len()];
        for x in records
            .iter()
            .filter(|x| x.start_ms >= lo && x.start_ms < hi)
        {
            row[column(x.outcome)] += 1;
        }
        let marks: Vec<&str> = input
            .events
            .iter()
            .filter(|e| e.at_ms >= lo as i64 && e.at_ms < hi as i64)
            .map(|e| e.name.as_str())
            .collect();
        let cells: Vec<String> = row.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            md,
            "| {}–{} | {} | {} |",
            lo / 1000,
            hi / 1000,
            cells.join(" | "),
            marks.join(", ")
        );
    }
    md.push('\n');

    if let (Some(term), Some(exited)) = (
        event(input.events, "instance_b_sigterm"),
        event(input.events, "instance_b_exited"),
    ) {
        let in_flight = records
            .iter()
            .filter(|x| x.instance == 1 && (x.start_ms as i64) < term)
            .filter(|x| x.start_ms as i64 + x.latency.as_millis() as i64 >= term)
            .collect::<Vec<_>>();
        let finished = in_flight
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Status(_)))
            .count();
        let _ = writeln!(
            md,
            "### The instance restart
"
        );
        let _ = writeln!(
            md,
            "- Instance B exited {} after SIGTERM, with code {exit}. Of the {} requests it \
             had in flight at the signal, {finished} got their answer.\n",
            secs(exited - term),
            in_flight.len()
        );
    }

    // Totals per operation.
    let _ = writeln!(md, "### Totals per operation\n");
    let _ = writeln!(md, "| operation | {} |", COLUMNS.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(COLUMNS.len()));
    for op in [Op::Signup, Op::Login, Op::Me, Op::Logout, Op::MeRevoked] {
        let mut row = [0usize; COLUMNS.len()];
        for x in records.iter().filter(|x| x.op == op) {
            row[column(x.outcome)] += 1;
        }
        let cells: Vec<String> = row.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(md, "| {} | {} |", op.name(), cells.join(" | "));
    }
    md.push('\n');
    let refused_b = count(&|x| x.outcome == Outcome::Refused);
    let _ = writeln!(
        md,
        "\"refused\" are connections refused while an instance restarted; each was retried \
         once on the other instance (as a load balancer would) and that retry is counted in \
         its own column. \"broken\": {broken} (a connection failing mid-request). Refused: \
         {refused_b}.\n"
    );

    // Reconciliation.
    let _ = writeln!(md, "### Reconciliation\n");
    let _ = writeln!(
        md,
        "- Signups answered 201: {}; all present in the database: {}.",
        r.signups_created,
        if r.lost.is_empty() { "yes" } else { "**no**" }
    );
    let _ = writeln!(
        md,
        "- Signups answered with an error: {}; present in the database: {}.",
        r.signups_errored,
        r.phantom.len()
    );
    let _ = writeln!(
        md,
        "- Signups without an answer (refused twice, hung or broken): {}; present: {}.",
        r.signups_unknown, r.unknown_that_exist
    );
    let answers: Vec<String> = r
        .revoked_answers
        .iter()
        .map(|((i, o), n)| {
            let instance = if *i == 0 { "A" } else { "B" };
            format!("{instance} {}: {n}", describe(*o))
        })
        .collect();
    let _ = writeln!(
        md,
        "- Tokens whose logout answered 200: {}; `GET /auth/me` with each on both instances \
         afterwards: {}.",
        r.revoked_checked,
        answers.join(", ")
    );
    for (what, list) in [("lost", &r.lost), ("phantom", &r.phantom)] {
        if !list.is_empty() {
            let _ = writeln!(md, "- {what}: {}", list.join(", "));
        }
    }
    md.push('\n');

    let summary = format!(
        "{total} requests; 500s {five_hundreds}; hung {hung}; broken {broken}; lost {}; \
         phantom {}; revoked accepted {revoked_accepted}; instance B exit {exit}; target {}",
        r.lost.len(),
        r.phantom.len(),
        if target_met { "met" } else { "MISSED" }
    );
    Rendered {
        markdown: md,
        summary,
        target_met,
    }
}

fn describe(o: Outcome) -> String {
    match o {
        Outcome::Status(s) => s.to_string(),
        Outcome::Refused => "refused".into(),
        Outcome::Hung => "hung".into(),
        Outcome::Broken => "broken".into(),
    }
}
