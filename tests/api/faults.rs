//! Fault-injection helpers: a private PostgreSQL cluster that a test may stop and start
//! (`jobpath_tests::cluster`, shared with the binary's own suites), and a TCP proxy that can
//! stop forwarding (a database that no longer answers).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jobpath_server::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub use jobpath_tests::cluster::{PgCluster, eventually};

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
