//! A real SMTP server for the tests of the server's mail (password reset, verification),
//! and a [`Tarpit`] for its timeouts.
//!
//! [`MailServer`] runs `tests/mail/smtp_server.py` (aiosmtpd, in a virtualenv of its own:
//! `smtp/venv.rs`) on a free loopback port, with a fresh directory where it stores every
//! message it accepts. A real server, rather than a mock transport in the server, keeps the
//! whole path under test — the server's SMTP dialogue, MIME encoding, timeouts — and a
//! separate process can be stopped and restarted under a running server, as a provider's
//! outage does. Recipients steer failures: a local part starting with `tempfail` is refused
//! with a 451 at `RCPT`, one starting with `reject` with a 550.
//!
//! The store is read from disk, not through the process, so [`MailServer::messages`] works
//! while it is stopped, and a message is never lost to a pipe. Messages come back as [`Mail`]
//! with their envelope, their exact bytes and decoded headers and bodies.

mod mail;
mod tarpit;
mod venv;

pub use mail::{Credentials, Mail};
pub use tarpit::Tarpit;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ServerProcess;

/// How long the server may take to print `listening on`: far beyond a healthy start
/// (well under a second), so that only a broken one reaches it.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// Between two looks at the store; short next to any wait a test sets.
const POLL: Duration = Duration::from_millis(20);

/// A running (or stopped) SMTP server with its message store; the process is killed and
/// the store removed on drop.
pub struct MailServer {
    python: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `None` while stopped.
    process: Option<ServerProcess>,
}

/// What the server writes beside each message (`envelopes/<key>.json`).
#[derive(serde::Deserialize)]
struct Envelope {
    /// Arrival number, from 1, continued across restarts.
    seq: u64,
    /// The message file, relative to the store.
    path: String,
    mail_from: String,
    rcpt_to: Vec<String>,
    auth: Option<Credentials>,
}

impl MailServer {
    /// Installs the server's venv if needed, then starts it on a free port with a new,
    /// empty store; returns once it accepts connections.
    pub async fn start() -> MailServer {
        let python = venv::python().await;
        let dir =
            std::env::temp_dir().join(format!("jobpath-smtp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (process, port) = launch(&python, &dir, 0).await;
        MailServer {
            python,
            dir,
            port,
            process: Some(process),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address, for the mail sender's configuration.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// SIGTERM, then waits for a clean exit: from then on the port refuses connections.
    /// Stopping a stopped server does nothing.
    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same port with the same
    /// store (the messages it holds are kept).
    pub async fn restart(&mut self) {
        self.stop().await;
        let (process, port) = launch(&self.python, &self.dir, self.port).await;
        assert_eq!(
            port, self.port,
            "the restarted SMTP server took another port"
        );
        self.process = Some(process);
    }

    /// Every message stored so far, in the order of arrival.
    pub fn messages(&self) -> Vec<Mail> {
        let envelopes = self.dir.join("envelopes");
        let entries = std::fs::read_dir(&envelopes)
            .unwrap_or_else(|e| panic!("reading {}: {e}", envelopes.display()));
        let mut stored: Vec<(u64, Mail)> = entries
            .map(|entry| entry.unwrap().path())
            // The server's temporary files start with a dot and end otherwise.
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                !name.starts_with('.') && name.ends_with(".json")
            })
            .map(|path| self.read(&path))
            .collect();
        stored.sort_by_key(|(seq, _)| *seq);
        stored.into_iter().map(|(_, mail)| mail).collect()
    }

    /// Waits up to `within` for at least `n` messages; returns all of them. Panics, listing
    /// what did arrive, if fewer came.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        self.wait_until(&format!("{n} message(s)"), n, within, |_| true)
            .await
    }

    /// Waits up to `within` for at least `n` messages whose envelope has `recipient`
    /// (case-insensitive) among its `RCPT TO`; returns all of those.
    pub async fn wait_for_to(&self, recipient: &str, n: usize, within: Duration) -> Vec<Mail> {
        let what = format!("{n} message(s) to {recipient}");
        self.wait_until(&what, n, within, |mail| {
            mail.envelope_to
                .iter()
                .any(|to| to.eq_ignore_ascii_case(recipient))
        })
        .await
    }

    async fn wait_until(
        &self,
        what: &str,
        n: usize,
        within: Duration,
        wanted: impl Fn(&Mail) -> bool,
    ) -> Vec<Mail> {
        let deadline = Instant::now() + within;
        loop {
            let all = self.messages();
            let matching: Vec<Mail> = all.iter().filter(|m| wanted(m)).cloned().collect();
            if matching.len() >= n {
                return matching;
            }
            if Instant::now() >= deadline {
                let arrived: Vec<String> = all.iter().map(summary).collect();
                let output = self
                    .process
                    .as_ref()
                    .map_or_else(|| "(stopped)".to_owned(), ServerProcess::output);
                panic!(
                    "expected {what} within {within:?}, {} arrived; all {} stored:\n{}\n\
                     SMTP server output:\n{output}",
                    matching.len(),
                    all.len(),
                    arrived.join("\n"),
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One stored message from its envelope file.
    fn read(&self, envelope: &Path) -> (u64, Mail) {
        let json = std::fs::read(envelope)
            .unwrap_or_else(|e| panic!("reading {}: {e}", envelope.display()));
        let envelope: Envelope = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{}: not an envelope: {e}", envelope.display()));
        let message = self.dir.join(&envelope.path);
        let raw = std::fs::read(&message)
            .unwrap_or_else(|e| panic!("reading {}: {e}", message.display()));
        let mail = Mail {
            envelope_from: envelope.mail_from,
            envelope_to: envelope.rcpt_to,
            auth: envelope.auth,
            raw,
        };
        (envelope.seq, mail)
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        // The process first: it writes into the store.
        self.process = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the server on `port` (0: a free one) with the store `dir`; the process and the
/// port it listens on, once it does.
async fn launch(python: &Path, dir: &Path, port: u16) -> (ServerProcess, u16) {
    let mut cmd = Command::new(python);
    cmd.arg(venv::server_script())
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir);
    let process = ServerProcess::spawn(cmd);
    let line = process
        .wait_for_within("listening on", START_PATIENCE)
        .await;
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not a start-up line of the SMTP server: {line:?}"));
    (process, port)
}

/// One line about a message, for a failure's report.
fn summary(mail: &Mail) -> String {
    format!(
        "  from {:?} to {:?}: {:?}",
        mail.envelope_from,
        mail.envelope_to,
        mail.header("Subject").unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
