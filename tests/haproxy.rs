//! An HAProxy of a test's own: the load balancer in front of several instances.
//!
//! [`HaProxy::start`] runs Debian's HAProxy (installed by `scripts/install-scale-tools.sh`
//! when missing, as root) in the foreground on a free loopback port, with the configuration
//! of `scripts/haproxy.cfg.in` (the one `docs/scaling.md` shows), balancing round robin
//! over the given instances as a deployment would: `option forwardfor` (it appends the
//! client's address to `X-Forwarded-For`, which the instances believe because it is in their
//! `TRUSTED_PROXIES`), a health check on `GET /health/ready` every 500 ms (patient, with 2 s
//! to answer: a loaded test machine must not take a healthy instance out), and a retry on
//! another instance when one refuses the connection (`retries`, `option redispatch`) — the
//! retry a balancer can make without knowing whether a request is idempotent — and, for
//! `GET` and `HEAD` only, when an instance closed the connection without answering
//! (`retry-on empty-response`; a `POST` may have been carried out). The process is killed
//! and its directory removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ServerProcess;

const START_PATIENCE: Duration = Duration::from_secs(30);
const BINARY: &str = "/usr/sbin/haproxy";

pub struct HaProxy {
    dir: PathBuf,
    port: u16,
    _process: ServerProcess,
}

impl HaProxy {
    /// A balancer over `instances` (`host:port` each); `None` (after [`crate::skip::skip`])
    /// when this machine cannot run one.
    pub async fn start(test: &str, instances: &[String]) -> Option<HaProxy> {
        if !crate::pgbouncer::ensure_installed(test, BINARY) {
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("jobpath-haproxy-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = crate::cluster::free_port();
        let servers: String = instances
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("    server i{i} {addr} check\n"))
            .collect();
        let cfg = dir.join("haproxy.cfg");
        let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("scripts")
            .join("haproxy.cfg.in");
        let text = std::fs::read_to_string(&template)
            .unwrap()
            .replace("@BIND@", &format!("127.0.0.1:{port}"))
            .replace("@SERVERS@", servers.trim_end())
            .replace("@LOG_FORMAT@", "")
            .replace("@LOG@", "");
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = Command::new(BINARY);
        // -db: stay in the foreground, so the process is the one to kill.
        cmd.arg("-db").arg("-f").arg(&cfg);
        let process = ServerProcess::spawn(cmd);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < START_PATIENCE,
                "HAProxy did not listen within {START_PATIENCE:?}; it printed:\n{}",
                process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(HaProxy {
            dir,
            port,
            _process: process,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
