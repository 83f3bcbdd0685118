//! Prometheus metrics: what an operator graphs and alerts on.
//!
//! Each [`App`](crate::App) owns its own [`Metrics`] (a `prometheus_client` registry, not a
//! process-global recorder), so two servers in one process — as in the test suite — never
//! count each other's requests. The request wrapper counts requests per operation and status
//! class; the accept loop counts the connections it turns away and those it closes at the
//! write timeout; handlers count logins and revocations; the hashing pool reports its queue and
//! timings through [`HashMetrics`]; the database pool is read at scrape time.
//!
//! Labels hold only bounded, non-personal values (an `operationId`, a status class, an
//! outcome): never a path, a user id or an email.

use std::fmt::Write as _;

use deadpool_postgres::Pool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The media type of [`Metrics::render`]'s output: the OpenMetrics text format, which
/// Prometheus asks for first when it scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request latency buckets, in seconds: from a cached 404 to a login at a high bcrypt cost.
const REQUEST_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// bcrypt buckets, in seconds: cost 4 takes about a millisecond, cost 12 about 0.3 s.
const HASH_BUCKETS: [f64; 10] = [0.001, 0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The `operationId`, a non-API page's name, `cors_preflight`, or `unmatched`.
    pub operation: &'static str,
    /// `2xx` … `5xx`.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EmailLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EmailFailureLabels {
    kind: &'static str,
    /// `transient` (retried), `permanent`, `attempts` (too many), `expired`.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RequestLabels>,
    in_flight: Gauge,
    connections_refused: Family<ReasonLabels, Counter>,
    write_timeouts: Counter,
    pool_max: Gauge,
    pool_size: Gauge,
    pool_in_use: Gauge,
    pool_waiting: Gauge,
    logins: Family<OutcomeLabels, Counter>,
    signups: Counter,
    tokens_revoked: Counter,
    owner_lookups: Counter,
    emails_sent: Family<EmailLabels, Counter>,
    email_failures: Family<EmailFailureLabels, Counter>,
    outbox_depth: Gauge,
    outbox_oldest_due: Gauge<f64, std::sync::atomic::AtomicU64>,
    hash: HashMetrics,
}

impl Metrics {
    pub fn new(version: &str) -> Metrics {
        let mut m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            in_flight: Gauge::default(),
            connections_refused: Family::default(),
            write_timeouts: Counter::default(),
            pool_max: Gauge::default(),
            pool_size: Gauge::default(),
            pool_in_use: Gauge::default(),
            pool_waiting: Gauge::default(),
            logins: Family::default(),
            signups: Counter::default(),
            tokens_revoked: Counter::default(),
            owner_lookups: Counter::default(),
            emails_sent: Family::default(),
            email_failures: Family::default(),
            outbox_depth: Gauge::default(),
            outbox_oldest_due: Gauge::default(),
            hash: HashMetrics::new(),
            registry: Registry::with_prefix("jobpath"),
        };
        let registry = &mut m.registry;
        registry.register(
            "build",
            "The running version",
            Info::new(vec![("version".to_owned(), version.to_owned())]),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by operation and status class",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from receiving a request's head to having its response ready",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being handled right now",
            m.in_flight.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections turned away at accept, by the limit they were over \
             (server_limit: MAX_CONNECTIONS, client_limit: MAX_CONNECTIONS_PER_CLIENT)",
            m.connections_refused.clone(),
        );
        registry.register(
            "connection_write_timeouts",
            "Connections closed because their client accepted no bytes for WRITE_TIMEOUT_SECONDS",
            m.write_timeouts.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Most connections the pool may open (DB_POOL_SIZE + DB_MAX_OVERFLOW)",
            m.pool_max.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Connections the pool holds open",
            m.pool_size.clone(),
        );
        registry.register(
            "db_pool_connections_in_use",
            "Connections lent to a request right now",
            m.pool_in_use.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a connection",
            m.pool_waiting.clone(),
        );
        registry.register(
            "password_hash_queue_depth",
            "Password-hashing jobs waiting for a hashing thread",
            m.hash.queue_depth.clone(),
        );
        registry.register_with_unit(
            "password_hash_duration",
            "Time one bcrypt hash or verification takes on a hashing thread",
            Unit::Seconds,
            m.hash.duration.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by outcome (failed: wrong email, password or inactive account)",
            m.logins.clone(),
        );
        registry.register("signups", "Accounts created", m.signups.clone());
        registry.register(
            "token_owner_lookups",
            "Database reads of a bearer token's session and user (one per token that verified)",
            m.owner_lookups.clone(),
        );
        registry.register(
            "tokens_revoked",
            "Access tokens revoked by logout",
            m.tokens_revoked.clone(),
        );
        registry.register(
            "emails_sent",
            "Emails the SMTP server accepted (or the log mailer wrote), by kind",
            m.emails_sent.clone(),
        );
        registry.register(
            "email_failures",
            "Failed email attempts by kind and class (transient: retried; permanent, \
             attempts, expired: abandoned)",
            m.email_failures.clone(),
        );
        registry.register(
            "email_outbox_depth",
            "Emails waiting for delivery (queued or being sent), all instances together",
            m.outbox_depth.clone(),
        );
        registry.register_with_unit(
            "email_outbox_oldest_due_age",
            "How long the oldest due email has been waiting",
            Unit::Seconds,
            m.outbox_oldest_due.clone(),
        );
        m
    }

    pub fn email_sent(&self, kind: &'static str) {
        self.emails_sent.get_or_create(&EmailLabels { kind }).inc();
    }

    pub fn email_failed(&self, kind: &'static str, class: &'static str) {
        self.email_failures
            .get_or_create(&EmailFailureLabels { kind, class })
            .inc();
    }

    /// The outbox as the sender last read it.
    pub fn outbox_depth(&self, depth: i64, oldest_due_seconds: f64) {
        self.outbox_depth.set(depth);
        self.outbox_oldest_due.set(oldest_due_seconds);
    }

    /// The handle the hashing pool reports through.
    pub fn hash(&self) -> HashMetrics {
        self.hash.clone()
    }

    /// Counts a request as in flight until the returned guard is dropped — also when the
    /// client goes away and hyper drops the request's future.
    pub fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn request_finished(&self, operation: &'static str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            operation,
            status_class: status_class(status),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A connection turned away; `reason` is `server_limit` or `client_limit`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn write_timed_out(&self) {
        self.write_timeouts.inc();
    }

    pub fn login_succeeded(&self) {
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: "succeeded",
            })
            .inc();
    }

    pub fn login_failed(&self) {
        self.logins
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc();
    }

    pub fn signup(&self) {
        self.signups.inc();
    }

    pub fn token_revoked(&self) {
        self.tokens_revoked.inc();
    }

    /// A verified bearer token's session and user are about to be read.
    pub fn owner_lookup(&self) {
        self.owner_lookups.inc();
    }

    /// The exposition, with the pool's gauges read now.
    pub fn render(&self, pool: &Pool) -> String {
        let status = pool.status();
        self.pool_max.set(gauge(status.max_size));
        self.pool_size.set(gauge(status.size));
        self.pool_in_use
            .set(gauge(status.size.saturating_sub(status.available)));
        self.pool_waiting.set(gauge(status.waiting));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; keep the scrape alive regardless.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the hashing pool reports: jobs waiting for a thread, and time per bcrypt call.
/// Cheap to clone; clones share their values. Unregistered instances (unit tests) work the
/// same, they are just never scraped.
#[derive(Clone)]
pub struct HashMetrics {
    queue_depth: Gauge,
    duration: HistogramFamily<HashLabels>,
}

impl HashMetrics {
    pub fn new() -> HashMetrics {
        HashMetrics {
            queue_depth: Gauge::default(),
            duration: Family::new_with_constructor(|| Histogram::new(HASH_BUCKETS)),
        }
    }

    pub fn enqueued(&self) {
        self.queue_depth.inc();
    }

    pub fn dequeued(&self) {
        self.queue_depth.dec();
    }

    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    /// `operation` is `hash` or `verify`.
    pub fn observe(&self, operation: &'static str, seconds: f64) {
        self.duration
            .get_or_create(&HashLabels { operation })
            .observe(seconds);
    }
}

impl Default for HashMetrics {
    fn default() -> Self {
        HashMetrics::new()
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        let pg: tokio_postgres::Config = "host=127.0.0.1 user=postgres".parse().unwrap();
        let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
        Pool::builder(manager).max_size(3).build().unwrap()
    }

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let m = Metrics::new("9.9.9");
        m.request_finished("signup", 201, 0.004);
        m.request_finished("signup", 409, 0.003);
        m.login_failed();
        m.token_revoked();
        m.connection_refused("client_limit");
        m.write_timed_out();
        m.hash().observe("hash", 0.3);
        let text = m.render(&pool());
        for line in [
            r#"jobpath_build_info{version="9.9.9"} 1"#,
            r#"jobpath_http_requests_total{operation="signup",status_class="2xx"} 1"#,
            r#"jobpath_http_requests_total{operation="signup",status_class="4xx"} 1"#,
            r#"jobpath_http_request_duration_seconds_count{operation="signup",status_class="2xx"} 1"#,
            r#"jobpath_http_request_duration_seconds_bucket{le="0.005",operation="signup",status_class="2xx"} 1"#,
            "jobpath_http_requests_in_flight 0",
            r#"jobpath_connections_refused_total{reason="client_limit"} 1"#,
            "jobpath_connection_write_timeouts_total 1",
            "jobpath_db_pool_max_connections 3",
            "jobpath_db_pool_connections 0",
            "jobpath_db_pool_connections_in_use 0",
            "jobpath_db_pool_waiting 0",
            "jobpath_password_hash_queue_depth 0",
            r#"jobpath_password_hash_duration_seconds_count{operation="hash"} 1"#,
            r#"jobpath_logins_total{outcome="failed"} 1"#,
            "jobpath_tokens_revoked_total 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn the_in_flight_gauge_follows_its_guards() {
        let m = Metrics::new("0");
        let a = m.request_started();
        let b = m.request_started();
        assert_eq!(m.in_flight.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.in_flight.get(), 0);
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(401), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
