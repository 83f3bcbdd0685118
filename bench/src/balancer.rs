//! What the balancer saw: HAProxy's log of the fault run, read back for the report.
//!
//! The driver only knows what each client was told. Which instance a request went to,
//! whether HAProxy retried it on another one after a refused connection, and why a request
//! failed at the balancer (the instance died with it, no instance was ready) are in
//! HAProxy's log, which `bench/faults` configures for this module:
//!
//! ```text
//! log stdout format iso local0
//! log-format "hap %Ts%ms %Th %Ti %Ta %s %ST %ts %rc %HM %HP"
//! ```
//!
//! so that every request is one line (`<iso time> hap <accept epoch ms> <handshake ms>
//! <idle ms> <active ms> <server> <status> <termination state> <retries> <method> <path>`),
//! and every health-check verdict is a line `<iso time> Server instances/<name> is UP|DOWN, …`.
//! The termination state is HAProxy's two-letter code: `--` for a normal end, otherwise who
//! ended the request (`S` the server, `s` a server timeout, `C` the client…) and in which
//! phase (`C` connecting, `H` waiting for the response headers, `D` in the body…).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;

use crate::report::Event;

/// One request as HAProxy logged it; times in milliseconds since the load started.
pub struct Request {
    /// When the request's first byte arrived.
    pub start_ms: i64,
    /// When the last byte of the answer left.
    pub end_ms: i64,
    /// The instance that answered (`a`, `b`), or `<NOSRV>` when none was tried.
    pub server: String,
    pub status: u16,
    pub term: String,
    /// Connection attempts that failed before the one that counted.
    pub retries: u32,
    /// A retry went to another instance than the first choice.
    pub redispatched: bool,
    pub method: String,
    pub path: String,
}

impl Request {
    /// The balancer ended it, not the instance: any termination state but `--`.
    pub fn failed_at_balancer(&self) -> bool {
        !self.term.starts_with('-')
    }

    fn in_flight_at(&self, at: i64) -> bool {
        self.start_ms <= at && self.end_ms >= at
    }
}

/// A health-check verdict: the balancer took an instance out (`up == false`) or back in.
pub struct Change {
    pub at_ms: i64,
    pub server: String,
    pub up: bool,
}

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Request>,
    pub changes: Vec<Change>,
}

impl Log {
    /// When the balancer next marked an instance up, after `at`.
    pub fn first_up_after(&self, at: i64) -> Option<i64> {
        self.changes
            .iter()
            .filter(|c| c.up && c.at_ms >= at)
            .map(|c| c.at_ms)
            .min()
    }

    fn first_change(&self, server: &str, up: bool, after: i64) -> Option<i64> {
        self.changes
            .iter()
            .filter(|c| c.server == server && c.up == up && c.at_ms >= after)
            .map(|c| c.at_ms)
            .min()
    }
}

pub fn read_log(path: &str, started_epoch: u64) -> anyhow::Result<Log> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let started = started_epoch as i64;
    let mut log = Log::default();
    for line in text.lines() {
        let Some((stamp, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some(fields) = rest.strip_prefix("hap ") {
            let request = parse_request(fields, started)
                .with_context(|| format!("a request line of {path}: {line}"))?;
            log.requests.push(request);
        } else if let Some(state) = rest.strip_prefix("Server instances/") {
            let (server, verdict) = state.split_once(" is ").unwrap_or_default();
            let up = verdict.starts_with("UP");
            if up || verdict.starts_with("DOWN") {
                log.changes.push(Change {
                    at_ms: iso_epoch_ms(stamp).with_context(|| format!("the time of {line}"))?
                        - started,
                    server: server.to_owned(),
                    up,
                });
            }
        }
    }
    Ok(log)
}

fn parse_request(fields: &str, started: i64) -> anyhow::Result<Request> {
    let f: Vec<&str> = fields.split(' ').collect();
    anyhow::ensure!(f.len() >= 10, "expected 10 fields");
    let num = |i: usize| -> anyhow::Result<i64> { Ok(f[i].parse::<i64>()?.max(0)) };
    let start_ms = num(0)? + num(1)? + num(2)? - started;
    let retries = f[7].trim_start_matches('+');
    Ok(Request {
        start_ms,
        end_ms: start_ms + num(3)?,
        server: f[4].to_owned(),
        status: f[5].parse()?,
        term: f[6].to_owned(),
        retries: retries.parse()?,
        redispatched: f[7].starts_with('+'),
        method: f[8].to_owned(),
        path: f[9].to_owned(),
    })
}

/// `2026-12-03T11:23:39.351463+00:00` → milliseconds since the epoch.
fn iso_epoch_ms(stamp: &str) -> anyhow::Result<i64> {
    let (date, time) = stamp.split_once('T').context("no T")?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        anyhow::bail!("bad date");
    };
    let split = time.rfind(['+', '-']).context("no offset")?;
    let (clock, offset) = time.split_at(split);
    let mut c = clock.split(':');
    let (Some(h), Some(min), Some(sec)) = (c.next(), c.next(), c.next()) else {
        anyhow::bail!("bad time");
    };
    let seconds: f64 = sec.parse()?;
    let (oh, om) = offset[1..].split_once(':').context("bad offset")?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let offset_min = sign * (oh.parse::<i64>()? * 60 + om.parse::<i64>()?);
    // Days from 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let minutes = days * 1440 + h.parse::<i64>()? * 60 + min.parse::<i64>()? - offset_min;
    Ok(minutes * 60_000 + (seconds * 1000.0).round() as i64)
}

/// What a termination state says, in words.
fn explain(term: &str) -> String {
    let mut chars = term.chars();
    let who = match chars.next() {
        Some('S') => "the instance broke the connection or refused it",
        Some('s') => "the instance did not answer in time",
        Some('C') => "the client closed the connection",
        Some('c') => "the client was too slow",
        Some('P') | Some('L') => "the balancer answered itself",
        Some('R') => "the balancer ran out of a resource",
        Some('D') => "the instance was marked down",
        _ => "unknown",
    };
    let when = match chars.next() {
        Some('C') => "while connecting",
        Some('H') => "before the response headers",
        Some('D') => "during the response body",
        Some('Q') => "while queued for an instance",
        Some('R') => "while the request was read",
        _ => "",
    };
    format!("{who} {when}").trim_end().to_owned()
}

fn secs(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn event(events: &[Event], name: &str) -> Option<i64> {
    events.iter().find(|e| e.name == name).map(|e| e.at_ms)
}

/// From instance B's SIGKILL to shortly after the balancer took it out: the requests the
/// clients lost without an answer in it are the kill's doing. Half a second after the
/// balancer's verdict covers the answers already on their way; without a verdict, 2 s.
pub fn kill_window(log: &Log, events: &[Event]) -> Option<(i64, i64)> {
    let kill = event(events, "instance_b_sigkill")?;
    let out = log.first_change("b", false, kill).unwrap_or(kill + 1500);
    Some((kill, out + 500))
}

/// The balancer's own findings, for the report's targets.
pub struct Verdict {
    /// Requests HAProxy retried after a failed connection whose final answer was still the
    /// balancer's failure: a request it could retry, lost.
    pub retried_lost: usize,
    /// Failures at the balancer explained neither by instance B's death (in flight on it at
    /// the SIGKILL) nor by an outage that left no instance ready.
    pub unexplained: usize,
}

/// Appends the balancer's sections to `md`. `outages` are the windows in which every
/// instance may rightly report itself unready (a database or PgBouncer outage, to the
/// first instance the balancer saw ready again).
///
/// `closed_at_kill` counts, by operation, the requests whose clients saw their connection to
/// the balancer closed without an answer in the [`kill_window`]: HAProxy logs nothing for
/// them (see the kill section's text), so only the clients can say.
pub fn render(
    md: &mut String,
    log: &Log,
    events: &[Event],
    outages: &[(i64, i64)],
    closed_at_kill: &BTreeMap<&str, usize>,
) -> Verdict {
    let kill = event(events, "instance_b_sigkill");
    let term = event(events, "instance_b_sigterm");
    let in_outage = |r: &Request| {
        outages
            .iter()
            .any(|&(a, b)| r.start_ms >= a && r.start_ms <= b)
    };
    // A request on B still open when it died: the kill's event is written just before the
    // signal is sent, so what B failed between it and the balancer's verdict counts.
    let window = kill_window(log, events);
    let on_b_at_kill = |r: &Request| {
        r.server == "b" && window.is_some_and(|(a, b)| r.end_ms >= a && r.start_ms <= b)
    };
    let died_with_b = |r: &Request| on_b_at_kill(r) && r.failed_at_balancer();
    let explained = |r: &Request| died_with_b(r) || (r.server == "<NOSRV>" && in_outage(r));

    let _ = writeln!(md, "### The balancer\n");
    let mut by_server: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &log.requests {
        *by_server.entry(r.server.as_str()).or_default() += 1;
    }
    let retried: Vec<&Request> = log.requests.iter().filter(|r| r.retries > 0).collect();
    let retried_lost = retried.iter().filter(|r| r.failed_at_balancer()).count();
    let failed: Vec<&Request> = log
        .requests
        .iter()
        .filter(|r| r.failed_at_balancer())
        .collect();
    let unexplained = failed.iter().filter(|r| !explained(r)).count();
    let _ = writeln!(
        md,
        "- HAProxy logged {} requests (the main load and the resets): {}.",
        log.requests.len(),
        by_server
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "- Retried after a failed connection to an instance: {} ({} of them on the other \
         instance); {} of them still failed at the balancer.",
        retried.len(),
        retried.iter().filter(|r| r.redispatched).count(),
        retried_lost
    );
    let _ = writeln!(
        md,
        "- Ended by the balancer rather than answered by an instance: {} — {} in flight on \
         instance B when it was killed, {} refused with no instance ready during an outage, \
         **{unexplained} otherwise**.\n",
        failed.len(),
        failed.iter().filter(|r| died_with_b(r)).count(),
        failed
            .iter()
            .filter(|r| !died_with_b(r) && explained(r))
            .count(),
    );
    if !failed.is_empty() {
        let mut groups: BTreeMap<(u16, &str, &str, bool), usize> = BTreeMap::new();
        for r in &failed {
            *groups
                .entry((r.status, r.term.as_str(), r.server.as_str(), explained(r)))
                .or_default() += 1;
        }
        let _ = writeln!(
            md,
            "| status | state | instance | what happened | requests | explained by |\n\
             |---:|---|---|---|---:|---|"
        );
        for ((status, term, server, ok), n) in groups {
            let why = if !ok {
                "**nothing**"
            } else if server == "b" {
                "instance B's SIGKILL"
            } else {
                "an outage"
            };
            let what = if server == "<NOSRV>" {
                "no instance was ready: the balancer answered itself".to_owned()
            } else {
                explain(term)
            };
            let _ = writeln!(
                md,
                "| {status} | `{term}` | {server} | {what} | {n} | {why} |"
            );
        }
        md.push('\n');
    }

    if let Some(k) = kill {
        let back = event(events, "instance_b_back");
        // Answered by B after the kill's event (before the signal landed) or cut by it.
        let with_b: Vec<&Request> = log
            .requests
            .iter()
            .filter(|r| r.server == "b" && r.end_ms >= k && (r.start_ms <= k || died_with_b(r)))
            .collect();
        let mut ops: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &with_b {
            let e = ops.entry(format!("{} {}", r.method, r.path)).or_default();
            if r.failed_at_balancer() {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        let window_retried = log
            .requests
            .iter()
            .filter(|r| r.retries > 0 && r.start_ms >= k && back.is_none_or(|b| r.start_ms <= b))
            .count();
        let _ = writeln!(md, "### Instance B killed (SIGKILL)\n");
        let _ = writeln!(
            md,
            "- HAProxy's log has {} requests in flight on B at the signal{}. A failed one is \
             a 502 (`SH`: B's connection closed before its response headers) on a connection \
             opened for the request; it cannot be retried, since B may have acted on it. \
             HAProxy logs those, not the ones of the next point.",
            with_b.len(),
            if ops.is_empty() {
                String::new()
            } else {
                format!(
                    " (answered / failed at the balancer): {}",
                    ops.iter()
                        .map(|(op, (ok, bad))| format!("`{op}` {ok} / {bad}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let closed: usize = closed_at_kill.values().sum();
        let _ = writeln!(
            md,
            "- {closed} requests had their connection to the balancer closed without an answer \
             at the kill{}: HAProxy had sent them to B over a kept-alive connection, and B died \
             before answering. For a request on a reused connection HAProxy answers no 502: it \
             closes the client's connection so that the client may retry (what its default \
             `http-reuse safe` relies on), and logs nothing. Neither the balancer nor the \
             driver retries them — a request that reached an instance may have been carried \
             out — so they count as \"broken\", and a signup among them as unknown: the \
             reconciliation below says how many of those exist.",
            if closed_at_kill.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    closed_at_kill
                        .iter()
                        .map(|(op, n)| format!("{op} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let _ = writeln!(
            md,
            "- The balancer marked B down {} after the kill and up again {} after it was \
             restarted; meanwhile {window_retried} requests found B's port closed and were \
             retried on A, none of them lost.\n",
            log.first_change("b", false, k)
                .map_or("—".into(), |t| secs(t - k)),
            match (back, event(events, "instance_b_starting")) {
                (Some(_), Some(s)) => log
                    .first_change("b", true, s)
                    .map_or("—".into(), |t| secs(t - s)),
                _ => "—".into(),
            }
        );
    }

    if let Some(t) = term {
        let with_b: Vec<&Request> = log
            .requests
            .iter()
            .filter(|r| r.server == "b" && r.in_flight_at(t))
            .collect();
        let answered = with_b.iter().filter(|r| !r.failed_at_balancer()).count();
        let exited = event(events, "instance_b_exited");
        let retried = log
            .requests
            .iter()
            .filter(|r| {
                r.retries > 0 && r.start_ms >= t && exited.is_none_or(|e| r.start_ms <= e + 2000)
            })
            .count();
        let _ = writeln!(md, "### Instance B restarted (SIGTERM)\n");
        let _ = writeln!(
            md,
            "- Of the {} requests B had in flight at the signal, {answered} were answered by \
             it; {retried} requests found its port closed and were retried on A.\n",
            with_b.len()
        );
    }
    Verdict {
        retried_lost,
        unexplained,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_become_epoch_milliseconds() {
        assert_eq!(iso_epoch_ms("1970-01-01T00:00:01.5+00:00").unwrap(), 1500);
        assert_eq!(
            iso_epoch_ms("2026-12-03T11:23:40.235104+00:00").unwrap(),
            1_796_297_020_235
        );
        assert_eq!(
            iso_epoch_ms("2026-12-03T12:23:40.235104+01:00").unwrap(),
            1_796_297_020_235
        );
    }

    #[test]
    fn a_request_line_is_read_with_its_retries() {
        let r = parse_request("1000 0 5 20 a 201 -- +1 POST /auth/signup", 0).unwrap();
        assert_eq!((r.start_ms, r.end_ms), (1005, 1025));
        assert_eq!((r.retries, r.redispatched), (1, true));
        assert!(!r.failed_at_balancer());
        let r = parse_request("1000 0 0 3 <NOSRV> 503 SC 0 GET /auth/me", 0).unwrap();
        assert!(r.failed_at_balancer());
    }
}
