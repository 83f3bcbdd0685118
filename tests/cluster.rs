//! A PostgreSQL cluster of a test's own, that the test may stop, start, and give TLS.
//!
//! The shared PostgreSQL of the other tests must never be stopped or reconfigured, so a test
//! that does either gets its own cluster: `initdb` into a temporary directory, on a free
//! port, loopback only, run as the `postgres` user when the tests run as root (PostgreSQL
//! refuses root). The cluster is stopped and its directory removed on drop. Where no
//! PostgreSQL binaries exist, [`PgCluster::start`] skips the test by the rule of
//! [`crate::skip`] (a failure under CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL cluster of the test's own.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_root: bool,
}

impl PgCluster {
    /// Creates and starts a cluster; `None` (after [`crate::skip::skip`]) where that is
    /// impossible here.
    pub async fn start(test: &str) -> Option<PgCluster> {
        let (bin, as_root) = pg_tools(test)?;
        let dir =
            std::env::temp_dir().join(format!("jobpath-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = PgCluster {
            bin,
            port: free_port(),
            dir,
            as_root,
        };
        tokio::task::spawn_blocking({
            let (bin, dir, as_root) = (cluster.bin.clone(), cluster.dir.clone(), as_root);
            move || {
                if as_root {
                    must(
                        Command::new("chown")
                            .args(["-R", "postgres:postgres"])
                            .arg(&dir),
                    );
                }
                must(
                    pg(&bin.join("initdb"), as_root)
                        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                        .arg("-D")
                        .arg(dir.join("data")),
                );
            }
        })
        .await
        .unwrap();
        cluster.start_again().await;
        Some(cluster)
    }

    /// `postgres://` URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub async fn start_again(&self) {
        // Durability is not under test: fsync off keeps the suite fast. Prepared
        // transactions let a test hold a lock that outlives every session (and a shutdown).
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=60 \
             -c max_prepared_transactions=4",
            self.port,
            self.dir.display()
        );
        let mut cmd = self.pg_ctl();
        cmd.args(["start", "-w", "-t", "60", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &options]);
        tokio::task::spawn_blocking(move || must(&mut cmd))
            .await
            .unwrap();
    }

    /// Stops the cluster the way an operator's restart does (`-m fast`: sessions are
    /// terminated, running statements rolled back) and waits until it is down.
    pub async fn stop(&self) {
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-w", "-t", "60", "-m", "fast", "-D"])
            .arg(self.dir.join("data"));
        tokio::task::spawn_blocking(move || must(&mut cmd))
            .await
            .unwrap();
    }

    /// Turns TLS on with `cert_pem` and `key_pem` (the server's certificate chain and key),
    /// as `server.crt` / `server.key` in the data directory, where PostgreSQL looks for
    /// them by default; the settings are reloaded, not restarted.
    pub async fn enable_tls(&self, cert_pem: &Path, key_pem: &Path) {
        let data = self.dir.join("data");
        for (from, to) in [(cert_pem, "server.crt"), (key_pem, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to).unwrap();
            // PostgreSQL refuses a key that others can read, or that is not its own.
            must(Command::new("chmod").arg("600").arg(&to));
            if self.as_root {
                must(Command::new("chown").arg("postgres:postgres").arg(&to));
            }
        }
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("ALTER SYSTEM SET ssl = on")
            .await
            .unwrap();
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        eventually("TLS switched on", Duration::from_secs(10), || async {
            let row = client.query_one("SHOW ssl", &[]).await.unwrap();
            row.get::<_, String>(0) == "on"
        })
        .await;
    }

    fn pg_ctl(&self) -> Command {
        pg(&self.bin.join("pg_ctl"), self.as_root)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PostgreSQL server binaries and whether they must run as the `postgres` user, or
/// `None` (after [`crate::skip::skip`]) when this machine cannot run a private cluster.
pub fn pg_tools(test: &str) -> Option<(PathBuf, bool)> {
    let Some(bin) = pg_bin() else {
        crate::skip::skip(
            test,
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in \
             /usr/lib/postgresql/*/bin; install postgresql to run it",
        );
        return None;
    };
    let as_root = run_ok(Command::new("id").arg("-u")).is_some_and(|out| out.trim() == "0");
    if as_root && run_ok(Command::new("id").arg("postgres")).is_none() {
        crate::skip::skip(
            test,
            "running as root and there is no `postgres` user to run a private PostgreSQL as",
        );
        return None;
    }
    Some((bin, as_root))
}

/// Stops, without waiting for sessions, a cluster that something else started in `data`
/// (the server's own private cluster); for a test's clean-up, so errors are ignored.
pub fn stop_data_dir(data: &Path) {
    let Some(bin) = pg_bin() else { return };
    let as_root = run_ok(Command::new("id").arg("-u")).is_some_and(|out| out.trim() == "0");
    let _ = pg(&bin.join("pg_ctl"), as_root)
        .args(["stop", "-w", "-m", "immediate", "-D"])
        .arg(data)
        .output();
}

/// A port nothing listens on right now (bound and released: good enough on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg(program: &Path, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn must(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(paths) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&paths).find(|d| has(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Waits, bounded, for `probe` to hold; for states the test causes but cannot await
/// directly (a statement blocked on a lock, a closed connection noticed by the server).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
