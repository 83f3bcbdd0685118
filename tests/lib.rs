//! Test support shared by the workspace's test binaries — the end-to-end suite in `api/`
//! and the binary's own suites in `server/tests/` — so that each thing is made one way:
//!
//! - [`db`]: a database of a test's own on the shared PostgreSQL, dropped at the end.
//! - [`process`]: a `jobpath-server` process a test started, with everything it printed:
//!   waits for a line, SIGTERM, the exit status.
//! - [`cluster`]: a PostgreSQL cluster of a test's own (to stop, restart, or give TLS).
//! - [`certificates`]: CA-signed and self-signed certificates made with `openssl`.
//! - [`smtp`]: a real SMTP server (aiosmtpd) whose messages a test reads, decoded; one to
//!   stop and restart; and a tarpit that accepts connections and never answers.
//! - [`pgbouncer`]: a PgBouncer in transaction mode in front of the shared PostgreSQL.
//! - [`haproxy`]: an HAProxy balancing over several instances, as a deployment's would.
//! - [`skip`]: what a test does when this machine cannot run it: says why, and under `CI`
//!   fails instead of passing silently.
//!
//! The end-to-end suite itself lives in `api/` (one test binary, see `api/main.rs`).

pub mod certificates;
pub mod cluster;
pub mod db;
pub mod haproxy;
pub mod pgbouncer;
pub mod process;
pub mod skip;
pub mod smtp;
