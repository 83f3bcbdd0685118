//! One outage of the fault run — PostgreSQL stopped, PgBouncer restarted — as the clients
//! and the balancer saw it: what was answered meanwhile, and how soon the service was back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::Outcome;
use crate::Record;
use crate::report::{Input, column, describe, end_ms, event, ms, secs};

/// How soon after PostgreSQL or PgBouncer accepts connections again the service must be
/// answering again. PgBouncer waits `server_login_retry` (15 s by default) after a failed
/// login to PostgreSQL before it tries again, so through it recovery may take that long.
pub const RECOVERY_WITHIN_MS: i64 = 20_000;

fn is_503(o: Outcome) -> bool {
    matches!(o, Outcome::Status(503) | Outcome::Gateway(503))
}

/// One outage (PostgreSQL stopped, PgBouncer restarted) as the clients and the balancer saw it.
pub struct Outage {
    /// The time from the stop request to the first instance the balancer saw ready again:
    /// the window in which having no instance ready is the outage's doing.
    pub window: (i64, i64),
    /// From accepting connections again to the first success, and to the last 503 before
    /// the next fault.
    pub first_ok: Option<i64>,
    pub last_503: i64,
}

impl Outage {
    pub fn recovered(&self) -> bool {
        self.first_ok.is_some_and(|t| t <= RECOVERY_WITHIN_MS)
            && self.last_503 <= RECOVERY_WITHIN_MS
    }
}

/// The section on one outage, between the events `<name>_stopping` and `<name>_up`.
pub fn section(
    md: &mut String,
    input: &Input<'_>,
    name: &str,
    title: &str,
    what: &str,
) -> Option<Outage> {
    let stop = event(input.events, &format!("{name}_stopping"))?;
    let up = event(input.events, &format!("{name}_up"))?;
    // The next fault bounds what counts as this one's tail.
    let next = input
        .events
        .iter()
        .filter(|e| {
            e.at_ms > up && (e.name.ends_with("_stopping") || e.name.starts_with("instance_b_sig"))
        })
        .map(|e| e.at_ms)
        .min()
        .unwrap_or(i64::MAX);
    let records = input.records;
    let during: Vec<&Record> = records
        .iter()
        .filter(|x| (x.start_ms as i64) >= stop && (x.start_ms as i64) < up)
        .collect();
    let count = |f: &dyn Fn(&Record) -> bool| during.iter().filter(|x| f(x)).count();
    let instance_503 = count(&|x| x.outcome == Outcome::Status(503));
    let with_hint = count(&|x| x.outcome == Outcome::Status(503) && x.retry_after);
    let balancer_503 = count(&|x| x.outcome == Outcome::Gateway(503));
    let mut others: BTreeMap<Outcome, usize> = BTreeMap::new();
    for x in during.iter().filter(|x| !is_503(x.outcome)) {
        *others.entry(x.outcome).or_default() += 1;
    }
    let longest = during.iter().map(|x| x.latency).max().unwrap_or_default();
    let after: Vec<&Record> = records
        .iter()
        .filter(|x| (x.start_ms as i64) >= up && (x.start_ms as i64) < next)
        .collect();
    let first_ok = after
        .iter()
        .filter(|x| column(x.outcome) <= 1)
        .map(|x| end_ms(x) - up)
        .min();
    let last_503 = after
        .iter()
        .filter(|x| is_503(x.outcome))
        .map(|x| end_ms(x) - up)
        .max()
        .unwrap_or(0)
        .max(0);
    // From the start command on, not from `up`: the balancer's health check may see an
    // instance ready a few milliseconds before this script's own check does.
    let starting = event(input.events, &format!("{name}_starting")).unwrap_or(up);
    let ready = input.balancer.first_up_after(starting);

    let _ = writeln!(md, "### {title}\n");
    let _ = writeln!(
        md,
        "- {what} down for {} (stop requested → accepting connections again).",
        secs(up - stop)
    );
    let _ = writeln!(
        md,
        "- {} requests started during it: {instance_503} answered 503 by an instance ({with_hint} \
         of them with `Retry-After`), {balancer_503} answered 503 by the balancer (no instance \
         ready: both failed their health check){}; the longest took **{}**.",
        during.len(),
        if others.is_empty() {
            String::new()
        } else {
            format!(
                ", and {}",
                others
                    .iter()
                    .map(|(o, n)| format!("{n} {}", describe(*o)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        ms(longest)
    );
    let _ = writeln!(
        md,
        "- Recovery once it accepted connections again: the balancer saw an instance ready \
         after {}, the first success came after **{}**, and the last 503 was answered {} \
         after it.\n",
        ready.map_or("—".into(), |t| secs((t - up).max(0))),
        first_ok.map_or("—".into(), |t| secs(t.max(0))),
        secs(last_503)
    );
    Some(Outage {
        window: (stop, ready.unwrap_or(up + RECOVERY_WITHIN_MS)),
        first_ok,
        last_503,
    })
}
