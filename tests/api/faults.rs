//! Fault-injection helpers: a private PostgreSQL cluster that a test may stop and start, and
//! a TCP proxy that can stop forwarding (a database that no longer answers).
//!
//! The shared PostgreSQL of the other tests must never be stopped, so a test that takes the
//! database away gets its own cluster: `initdb` into a temporary directory, on a free port,
//! loopback only, run as the `postgres` user when the tests run as root (PostgreSQL refuses
//! root). The cluster is stopped and its directory removed on drop. Where no PostgreSQL
//! binaries exist, [`PgCluster::start`] prints why and returns `None`, and the test skips.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jobpath_server::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::helpers::{HIGH_LIMITS, TEST_SECRET};

/// A test configuration for a database given by URL, with `extra` variables on top.
pub fn config_for(url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url.to_owned()),
        ("JWT_SECRET_KEY", TEST_SECRET.to_owned()),
        ("BCRYPT_ROUNDS", "4".to_owned()),
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("HASH_THREADS", "2".to_owned()),
        // Small, like `test_config`: the shared PostgreSQL's connections serve every test.
        ("DB_POOL_SIZE", "4".to_owned()),
        ("DB_MAX_OVERFLOW", "4".to_owned()),
        ("SHUTDOWN_GRACE_SECONDS", "5".to_owned()),
        ("DB_STARTUP_TIMEOUT_SECONDS", "10".to_owned()),
    ]);
    vars.extend(HIGH_LIMITS.iter().map(|(k, v)| (*k, (*v).to_owned())));
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Config::from_lookup(|k| vars.get(k).cloned()).expect("test configuration is valid")
}

/// A PostgreSQL cluster of the test's own.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_root: bool,
}

impl PgCluster {
    /// Creates and starts a cluster; `None` (with a message) where that is impossible here.
    pub async fn start(test: &str) -> Option<PgCluster> {
        let Some(bin) = pg_bin() else {
            eprintln!(
                "SKIPPED {test}: no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in \
                 /usr/lib/postgresql/*/bin; install postgresql to run it"
            );
            return None;
        };
        let as_root = run_ok(Command::new("id").arg("-u")).is_some_and(|out| out.trim() == "0");
        if as_root && run_ok(Command::new("id").arg("postgres")).is_none() {
            eprintln!(
                "SKIPPED {test}: running as root and there is no `postgres` user to run a \
                 private PostgreSQL as"
            );
            return None;
        }
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

/// A TCP forwarder to a PostgreSQL server that can be frozen: while frozen it accepts
/// connections and reads, but forwards nothing, in either direction — a database that
/// stopped answering (hung, or the network gone) rather than one that refuses.
pub struct FreezingProxy {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    thawed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    pub async fn start(target: String) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let thawed = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (frozen, thawed) = (Arc::clone(&frozen), Arc::clone(&thawed));
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (frozen, thawed, target) =
                        (Arc::clone(&frozen), Arc::clone(&thawed), target.clone());
                    tokio::spawn(async move {
                        wait_thawed(&frozen, &thawed).await;
                        let Ok(server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(
                            pump(cr, sw, &frozen, &thawed),
                            pump(sr, cw, &frozen, &thawed)
                        );
                    });
                }
            }
        });
        FreezingProxy {
            port,
            frozen,
            thawed,
            task,
        }
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.thawed.notify_waiters();
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_thawed(frozen: &AtomicBool, thawed: &Notify) {
    while frozen.load(Ordering::SeqCst) {
        let notified = thawed.notified();
        if !frozen.load(Ordering::SeqCst) {
            break;
        }
        notified.await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: &AtomicBool,
    thawed: &Notify,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_thawed(frozen, thawed).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
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
