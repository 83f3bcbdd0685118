//! The one rule for a test that cannot run on this machine (no `initdb`, no `openssl`, no
//! `postgres` user to run a private cluster as).
//!
//! Everywhere, the test says why on stderr (`SKIPPED <test>: <reason>`, shown by
//! `cargo test -- --nocapture` and in the output of a failing run). Under CI (`CI` set to
//! anything non-empty, as CI services do and `.ci/run` does) it fails instead: a test that
//! skips shows as passed, and a green CI run must mean that every test ran.

use std::ffi::OsStr;

/// Whether a missing prerequisite fails the test: `CI` is set and not empty.
pub fn fails_instead_of_skipping(ci: Option<&OsStr>) -> bool {
    ci.is_some_and(|value| !value.is_empty())
}

/// Reports that `test` cannot run because of `reason`: panics under CI, otherwise prints
/// the reason and returns, and the caller returns without testing anything.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    if fails_instead_of_skipping(std::env::var_os("CI").as_deref()) {
        panic!("{test} cannot run: {reason} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_empty_ci_variable_turns_a_skip_into_a_failure() {
        assert!(!fails_instead_of_skipping(None));
        assert!(!fails_instead_of_skipping(Some(OsStr::new(""))));
        assert!(fails_instead_of_skipping(Some(OsStr::new("true"))));
        assert!(fails_instead_of_skipping(Some(OsStr::new("1"))));
        // Whatever the value: CI services set "true", some "1", some a name.
        assert!(fails_instead_of_skipping(Some(OsStr::new("false"))));
    }
}
