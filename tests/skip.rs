//! The one rule for a test that cannot run on this machine (no `initdb`, no `openssl`, no
//! `postgres` user to run a private cluster as): it says why on stderr
//! (`SKIPPED <test>: <reason>`, shown by `cargo test -- --nocapture`) and returns.

/// Reports that `test` cannot run because of `reason`; the caller returns without testing
/// anything.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
}
