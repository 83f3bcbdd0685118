//! A `jobpath-server` process that a test started, and everything it has printed.
//!
//! The binary's own suites run the real process, as an operator or an orchestrator does,
//! to see what an in-process server cannot show: exit codes, start-up lines, signals. The
//! caller builds the [`Command`] — the binary (only the server's own integration tests know
//! its path, `CARGO_BIN_EXE_jobpath-server`), its arguments, environment and working
//! directory — and [`ServerProcess`] runs and watches it. The SMTP server of [`crate::smtp`],
//! a Python process, is run and watched the same way.
//!
//! Output is read by threads of its own, not by the test's runtime: a test may block its
//! runtime (a plain `std::net` request) while the server logs, and a pipe nobody drains
//! would stall the server mid-request. The waits are `async` so that tasks the test spawned
//! (a proxy the server connects through) keep running while it waits.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`ServerProcess::wait_for`] and [`ServerProcess::exit`] wait: far beyond what a
/// healthy start needs, so that only a hung or broken server reaches it.
const PATIENCE: Duration = Duration::from_secs(30);
/// Between two looks at the output or the process; short next to any limit a test sets.
const POLL: Duration = Duration::from_millis(20);
/// After the process has exited, how long its last lines may take to come out of the pipes.
/// A child of the server that inherited them (a private cluster) may keep them open for
/// good, so this is a bound, not a wait for their end.
const DRAIN: Duration = Duration::from_secs(5);

/// What the process has printed, on stdout and stderr, in the order it was read.
#[derive(Default)]
struct Printed {
    lines: Vec<String>,
    /// How many of the two pipes are still open: none means nothing more will come.
    open: usize,
}

/// A running process with its stdout and stderr collected line by line; killed on drop if
/// it is still running.
pub struct ServerProcess {
    child: Child,
    printed: Arc<Mutex<Printed>>,
}

impl ServerProcess {
    /// Starts `cmd` as it is configured, with its stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> ServerProcess {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let printed = Arc::new(Mutex::new(Printed {
            lines: Vec::new(),
            open: 2,
        }));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let printed = Arc::clone(&printed);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    printed.lock().unwrap().lines.push(line);
                }
                printed.lock().unwrap().open -= 1;
            });
        }
        ServerProcess { child, printed }
    }

    /// Everything printed so far, one line per line.
    pub fn output(&self) -> String {
        self.printed.lock().unwrap().lines.join("\n")
    }

    /// Waits (up to 30 s) for a printed line containing `needle`; returns the first one.
    pub async fn wait_for(&self, needle: &str) -> String {
        self.wait_for_within(needle, PATIENCE).await
    }

    /// Waits (up to `limit`) for a printed line containing `needle`; returns the first one.
    /// Fails at once, showing the output, if the process has closed its output without
    /// printing one.
    pub async fn wait_for_within(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            {
                let printed = self.printed.lock().unwrap();
                if let Some(line) = printed.lines.iter().find(|l| l.contains(needle)) {
                    return line.clone();
                }
                let output = || printed.lines.join("\n");
                assert!(
                    printed.open > 0,
                    "the process ended without a line with {needle:?}; its output:\n{}",
                    output()
                );
                assert!(
                    Instant::now() < deadline,
                    "no line with {needle:?} within {limit:?}; output so far:\n{}",
                    output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `address` field of the start-up line (`listening`), waiting up to 30 s for it.
    /// The server must log JSON (`LOG_FORMAT=json`).
    pub async fn address(&self) -> String {
        let line = self.wait_for("listening").await;
        let json: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        json["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in the start-up line: {line}"))
            .to_owned()
    }

    /// Sends SIGTERM, as an orchestrator stops a container.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// SIGKILL, as a crash or the OOM killer ends a process: nothing runs after it.
    pub fn kill(&mut self) {
        self.child.kill().expect("the process can be killed");
        let _ = self.child.wait();
    }

    /// Waits (up to `limit`) for the process to exit, then for its last lines; its status.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}; output so far:\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        };
        let drained = Instant::now() + DRAIN;
        while self.printed.lock().unwrap().open > 0 && Instant::now() < drained {
            tokio::time::sleep(POLL).await;
        }
        status
    }

    /// Waits (up to 30 s) for the process to exit by itself; its exit code (`None` if a
    /// signal ended it) and everything it printed.
    pub async fn exit(mut self) -> (Option<i32>, String) {
        let status = self.exit_within(PATIENCE).await;
        (status.code(), self.output())
    }

    /// SIGTERM, then a clean exit (status 0) within 60 s — twice the default shutdown grace
    /// period, so only a server that ignores it fails; returns everything it printed.
    pub async fn stop(mut self) -> String {
        self.sigterm();
        let exit = self.exit_within(2 * PATIENCE).await;
        let output = self.output();
        assert!(
            exit.success(),
            "the server exits cleanly on SIGTERM: {exit}; output:\n{output}"
        );
        output
    }

    /// Fails, showing the output, if any of `secrets` appears in it.
    pub fn assert_no_secret_printed(&self, secrets: &[&str]) {
        let output = self.output();
        for secret in secrets {
            assert!(!output.contains(secret), "{secret:?} appears in:\n{output}");
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a server behind, holding its port and
        // its database connections.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
