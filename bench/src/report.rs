//! The fault run's report: Markdown, appended to `bench/FAULTS.md`.
//!
//! The targets first, then the faults' timeline (with the balancer's health-check
//! verdicts), each outage ([`crate::outage`]), the balancer's view ([`crate::balancer`]),
//! the requests by status over time and per operation, and the reconciliation
//! ([`crate::reconcile`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::outage::{self, Outage};
use crate::reconcile::Reconciliation;
use crate::{Op, Outcome, Record, balancer};

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

pub struct Input<'a> {
    pub records: &'a [Record],
    pub events: &'a [Event],
    pub balancer: &'a balancer::Log,
    /// Why broken requests broke ([`Outcome::Broken`]), with their counts.
    pub broken: &'a BTreeMap<String, usize>,
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

/// Columns of the over-time and per-operation tables.
pub(crate) fn column(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Status(s) if (200..300).contains(&s) => 0,
        Outcome::Status(401) => 1,
        Outcome::Status(s) if (400..500).contains(&s) => 2,
        Outcome::Status(503) => 3,
        Outcome::Status(500) => 4,
        Outcome::Status(_) => 5,
        Outcome::Gateway(502) => 6,
        Outcome::Gateway(503) => 7,
        Outcome::Gateway(504) => 8,
        Outcome::Gateway(_) => 5,
        Outcome::Refused => 9,
        Outcome::Hung => 10,
        Outcome::Broken => 11,
    }
}
pub(crate) const COLUMNS: [&str; 12] = [
    "2xx",
    "401",
    "other 4xx",
    "503",
    "500",
    "other 5xx",
    "balancer 502",
    "balancer 503",
    "balancer 504",
    "refused",
    "hung",
    "broken",
];

pub(crate) fn event(events: &[Event], name: &str) -> Option<i64> {
    events.iter().find(|e| e.name == name).map(|e| e.at_ms)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn secs(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub(crate) fn describe(o: Outcome) -> String {
    match o {
        Outcome::Status(s) => s.to_string(),
        Outcome::Gateway(s) => format!("balancer {s}"),
        Outcome::Refused => "refused".into(),
        Outcome::Hung => "hung".into(),
        Outcome::Broken => "broken".into(),
    }
}

pub(crate) fn end_ms(x: &Record) -> i64 {
    x.start_ms as i64 + x.latency.as_millis() as i64
}

pub fn render(input: &Input<'_>) -> Rendered {
    let records = input.records;
    let r = input.reconciliation;
    let mut md = String::new();
    let total = records.len();
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|x| f(x)).count();
    let five_hundreds = count(&|x| matches!(x.outcome, Outcome::Status(s) if s >= 500 && s != 503));
    let instance_503 = count(&|x| x.outcome == Outcome::Status(503));
    let bare_503 = count(&|x| x.outcome == Outcome::Status(503) && !x.retry_after);
    let gateway = count(&|x| matches!(x.outcome, Outcome::Gateway(_)));
    let hung = count(&|x| x.outcome == Outcome::Hung);
    let broken = count(&|x| x.outcome == Outcome::Broken);
    let refused = count(&|x| x.outcome == Outcome::Refused);
    let accepted_during = count(&|x| x.op == Op::MeRevoked && x.outcome == Outcome::Status(200));
    let revoked_accepted = r.revoked_accepted() + accepted_during;
    let exit = input
        .events
        .iter()
        .find(|e| e.name == "instance_b_exited")
        .map(|e| e.detail.clone())
        .unwrap_or_else(|| "not recorded".into());

    // The sections that need the rest of the report's figures come first, in a buffer.
    let mut outages_md = String::new();
    let db = outage::section(
        &mut outages_md,
        input,
        "db",
        "The database outage",
        "PostgreSQL",
    );
    let bouncer = outage::section(
        &mut outages_md,
        input,
        "bouncer",
        "The PgBouncer restart",
        "PgBouncer",
    );
    let windows: Vec<(i64, i64)> = db.iter().chain(bouncer.iter()).map(|o| o.window).collect();
    // The clients' side of what failed at the balancer: a connection closed without an
    // answer, a 502 or 504. Only instance B's SIGKILL explains them, and only just after it.
    // A refused connection (the balancer not listening) nothing explains.
    let kill = balancer::kill_window(input.balancer, input.events);
    let lost_in_transit = |o: Outcome| {
        matches!(
            o,
            Outcome::Broken | Outcome::Gateway(502) | Outcome::Gateway(504)
        )
    };
    let at_kill = |x: &Record| kill.is_some_and(|(a, b)| end_ms(x) >= a && end_ms(x) <= b);
    let mut closed_at_kill: BTreeMap<&str, usize> = BTreeMap::new();
    for x in records
        .iter()
        .filter(|x| x.outcome == Outcome::Broken && at_kill(x))
    {
        *closed_at_kill.entry(x.op.name()).or_default() += 1;
    }
    let lost_elsewhere = count(&|x| lost_in_transit(x.outcome) && !at_kill(x)) + refused;
    let mut balancer_md = String::new();
    let verdict = balancer::render(
        &mut balancer_md,
        input.balancer,
        input.events,
        &windows,
        &closed_at_kill,
    );
    let unexplained = verdict.unexplained + lost_elsewhere;
    let recovered = |o: &Option<Outage>| o.as_ref().is_some_and(Outage::recovered);

    let target_met = five_hundreds == 0
        && hung == 0
        && r.lost.is_empty()
        && r.phantom.is_empty()
        && revoked_accepted == 0
        && exit == "0"
        && bare_503 == 0
        && verdict.retried_lost == 0
        && unexplained == 0
        && recovered(&db)
        && recovered(&bouncer);

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
    let verdict_word = |ok: bool| if ok { "met" } else { "**MISSED**" };
    let _ = writeln!(
        md,
        "| zero 500s (any 5xx of an instance but 503) | {five_hundreds} — {} |",
        verdict_word(five_hundreds == 0)
    );
    let _ = writeln!(
        md,
        "| zero hung requests | {hung} — {} |",
        verdict_word(hung == 0)
    );
    let _ = writeln!(
        md,
        "| zero lost accounts (201 but absent) | {} of {} — {} |",
        r.lost.len(),
        r.signups_created,
        verdict_word(r.lost.is_empty())
    );
    let _ = writeln!(
        md,
        "| zero phantom accounts (certainly refused but present) | {} of {} — {} |",
        r.phantom.len(),
        r.signups_errored,
        verdict_word(r.phantom.is_empty())
    );
    let _ = writeln!(
        md,
        "| zero revoked tokens accepted | {revoked_accepted} ({accepted_during} during the run, \
         {} in the final check of {} tokens × 2 instances) — {} |",
        r.revoked_accepted(),
        r.revoked_checked,
        verdict_word(revoked_accepted == 0)
    );
    let _ = writeln!(
        md,
        "| restarted instance exits 0 on SIGTERM | exit code {exit} — {} |",
        verdict_word(exit == "0")
    );
    let _ = writeln!(
        md,
        "| every 503 of an instance carries `Retry-After` | {} of {instance_503} — {} |",
        instance_503 - bare_503,
        verdict_word(bare_503 == 0)
    );
    let _ = writeln!(
        md,
        "| nothing lost that the balancer could retry (refused connections) | {} lost — {} |",
        verdict.retried_lost,
        verdict_word(verdict.retried_lost == 0)
    );
    let _ = writeln!(
        md,
        "| no request failed at the balancer but with the killed instance or, with no \
         instance ready, during an outage | {unexplained} otherwise ({} in HAProxy's log, \
         {lost_elsewhere} more seen by the clients) — {} |",
        verdict.unexplained,
        verdict_word(unexplained == 0)
    );
    for (what, o) in [("PostgreSQL", &db), ("PgBouncer", &bouncer)] {
        let _ = writeln!(
            md,
            "| recovery by itself within {} of {what} accepting connections again | {} — {} |",
            secs(outage::RECOVERY_WITHIN_MS),
            match o {
                Some(o) => format!(
                    "first success after {}, last 503 after {}",
                    o.first_ok.map_or("—".into(), |t| secs(t.max(0))),
                    secs(o.last_503)
                ),
                None => "not run".into(),
            },
            verdict_word(recovered(o))
        );
    }
    md.push('\n');

    // Timeline of the faults, and of the balancer's verdicts on the instances.
    let _ = writeln!(
        md,
        "### Faults, as injected, and the balancer's health checks\n"
    );
    let _ = writeln!(md, "| at | event |\n|---|---|");
    let mut timeline: Vec<(i64, String)> = input
        .events
        .iter()
        .map(|e| {
            let detail = if e.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.detail)
            };
            (e.at_ms, format!("{}{detail}", e.name))
        })
        .collect();
    timeline.extend(input.balancer.changes.iter().map(|c| {
        let verdict = if c.up { "up" } else { "down" };
        (c.at_ms, format!("*balancer: {} {verdict}*", c.server))
    }));
    timeline.sort_by_key(|(at, _)| *at);
    for (at, what) in &timeline {
        let _ = writeln!(md, "| {} | {what} |", secs(*at));
    }
    md.push('\n');

    md.push_str(&outages_md);
    let _ = writeln!(
        md,
        "- Longest response of the whole run: {}.\n",
        ms(records.iter().map(|x| x.latency).max().unwrap_or_default())
    );
    md.push_str(&balancer_md);

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
    let _ = writeln!(
        md,
        "The 503, 500 and other 5xx columns are the instances' answers; \"balancer 502/503/504\" \
         are the balancer's own ({gateway} in all): 503 when no instance was ready, 502 when the \
         instance's connection broke before it answered. The driver retries nothing itself: \
         the balancer retries a request whose connection to an instance was refused (see \
         above). \"refused\" ({refused}) would be the balancer itself not listening; \
         \"broken\" ({broken}) a connection failing mid-request{}.\n",
        if input.broken.is_empty() {
            String::new()
        } else {
            format!(
                " — {}",
                input
                    .broken
                    .iter()
                    .map(|(why, n)| format!("{n} × {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
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
        "- Signups certainly refused (a 4xx or 503 of an instance, a 503 of the balancer): {}; \
         present in the database: {}.",
        r.signups_errored,
        r.phantom.len()
    );
    let _ = writeln!(
        md,
        "- Signups whose fate the client could not know (a 502 of the balancer, hung, broken): \
         {}; present: {}.",
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
         (directly, not through the balancer) afterwards: {}.",
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
        "{total} requests; 500s {five_hundreds}; 503s without Retry-After {bare_503}; balancer \
         answers {gateway} (unexplained failures {unexplained}, retried but lost {}); hung {hung}; \
         broken {broken}; lost {}; phantom {}; revoked accepted {revoked_accepted}; instance B \
         exit {exit}; recovered after PostgreSQL {}, after PgBouncer {}; target {}",
        verdict.retried_lost,
        r.lost.len(),
        r.phantom.len(),
        recovered(&db),
        recovered(&bouncer),
        if target_met { "met" } else { "MISSED" }
    );
    Rendered {
        markdown: md,
        summary,
        target_met,
    }
}
