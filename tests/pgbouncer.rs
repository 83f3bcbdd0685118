//! A PgBouncer of a test's own, in transaction mode, in front of the shared PostgreSQL.
//!
//! [`PgBouncer::start`] runs Debian's PgBouncer (installed by
//! `scripts/install-scale-tools.sh` when missing, as root) on a free loopback port with a
//! configuration of its own in a fresh directory: every database of the shared server
//! (`* = host=… port=…`), trust authentication, `pool_mode = transaction` and nothing else
//! that a deployment would have to know about — in particular no `ignore_startup_parameters`
//! — so that what passes here passes behind a stock PgBouncer. `default_pool_size` is small
//! and `server_round_robin` on (PgBouncer otherwise hands a client the server connection
//! released last, often its own previous one), so that consecutive transactions of one
//! client land on different server connections, as they do under load: that is where state
//! that outlives a transaction (a named prepared statement, a session `SET`) shows. Those
//! two make the failure certain in a test; the server needs neither. `admin_users` lets a
//! test read `SHOW STATS`.
//!
//! PgBouncer refuses to run as root; as root it is started with `-u postgres`, its directory
//! given to that user. The process is killed and the directory removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ServerProcess;

/// How long PgBouncer may take to accept connections: far beyond a healthy start.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Where Debian puts the binary.
const BINARY: &str = "/usr/sbin/pgbouncer";

pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    upstream: String,
    pool_size: u32,
    process: Option<ServerProcess>,
}

impl PgBouncer {
    /// A PgBouncer in front of `upstream` (`host:port`) with `pool_size` server connections
    /// per database; `None` (after [`crate::skip::skip`]) when this machine cannot run one.
    pub async fn start(test: &str, upstream: &str, pool_size: u32) -> Option<PgBouncer> {
        if !ensure_installed(test, BINARY) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "jobpath-pgbouncer-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bouncer = PgBouncer {
            dir,
            port: crate::cluster::free_port(),
            upstream: upstream.to_owned(),
            pool_size,
            process: None,
        };
        bouncer.launch().await;
        Some(bouncer)
    }

    /// `127.0.0.1:<port>`, where it listens.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL of database `db_name` through it, as user `postgres` (trust: no password).
    pub fn url_for(&self, db_name: &str) -> String {
        format!("postgres://postgres@{}/{db_name}", self.address())
    }

    /// Kills it (SIGKILL): every client and server connection is cut at once.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port, after [`PgBouncer::kill`].
    pub async fn start_again(&mut self) {
        assert!(self.process.is_none(), "PgBouncer is still running");
        self.launch().await;
    }

    /// How many databases named `<prefix>…` it has carried transactions for (its admin
    /// console's `SHOW STATS`): what proves that a run went through it.
    pub async fn databases_used(&self, prefix: &str) -> usize {
        let (admin, conn) = tokio_postgres::connect(
            &format!("postgres://postgres@{}/pgbouncer", self.address()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("PgBouncer's admin console");
        tokio::spawn(conn);
        let rows = admin.simple_query("SHOW STATS").await.unwrap();
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .filter(|r| {
                r.get("database").is_some_and(|d| d.starts_with(prefix))
                    && r.get("total_xact_count")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
            })
            .count()
    }

    /// What it has printed (its log goes to stderr).
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.output())
            .unwrap_or_default()
    }

    async fn launch(&mut self) {
        let (host, port) = self
            .upstream
            .rsplit_once(':')
            .expect("upstream is host:port");
        let userlist = self.dir.join("userlist.txt");
        std::fs::write(&userlist, "\"postgres\" \"\"\n").unwrap();
        let ini = self.dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {listen}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {userlist}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool}\n\
                 server_round_robin = 1\n\
                 admin_users = postgres\n\
                 max_client_conn = 1000\n",
                listen = self.port,
                userlist = userlist.display(),
                pool = self.pool_size,
            ),
        )
        .unwrap();
        let mut cmd = Command::new(BINARY);
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir)
                .status()
                .expect("running chown");
            assert!(chown.success(), "chown of {} failed", self.dir.display());
            cmd.args(["-u", "postgres"]);
        }
        cmd.arg(&ini);
        let process = ServerProcess::spawn(cmd);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < START_PATIENCE,
                "PgBouncer did not listen within {START_PATIENCE:?}; it printed:\n{}",
                process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.process = Some(process);
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Makes sure `binary` (PgBouncer's or HAProxy's) is there, running
/// `scripts/install-scale-tools.sh` if not; false (after a skip) when it cannot be had.
pub fn ensure_installed(test: &str, binary: &str) -> bool {
    if std::path::Path::new(binary).exists() {
        return true;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("install-scale-tools.sh");
    let ok = Command::new("bash")
        .arg(&script)
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !std::path::Path::new(binary).exists() {
        crate::skip::skip(
            test,
            &format!(
                "no {binary}, and scripts/install-scale-tools.sh could not install it (run \
                 it as root, or apt-get install pgbouncer haproxy)"
            ),
        );
        return false;
    }
    true
}
