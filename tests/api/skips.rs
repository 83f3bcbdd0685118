//! A test that cannot run here (no `openssl`, no `initdb`) says why, and under CI fails
//! instead of passing silently (`jobpath_tests::skip`). Checked on a real test of this
//! suite, run as a child process of this very binary with a `PATH` that has no `openssl`.

use std::process::Command;

/// The TLS test that needs `openssl` before anything else.
const NEEDS_OPENSSL: &str = "tls::a_certificate_from_another_ca_is_refused_at_start_up_at_once";

/// Runs [`NEEDS_OPENSSL`] alone, with an empty `PATH` and `CI` as given: (passed, output).
fn run_without_openssl(ci: Option<&str>) -> (bool, String) {
    let empty = std::env::temp_dir().join(format!("jobpath-empty-path-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([NEEDS_OPENSSL, "--exact", "--nocapture", "--test-threads=1"])
        .env("PATH", &empty)
        .env_remove("CI");
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&empty);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 passed") || text.contains("1 failed"),
        "ran nothing:\n{text}"
    );
    (out.status.success(), text)
}

#[test]
fn a_test_missing_openssl_says_why_and_fails_under_ci() {
    let (passed, text) = run_without_openssl(None);
    assert!(passed, "without CI a missing openssl is a skip:\n{text}");
    let name = NEEDS_OPENSSL.rsplit("::").next().unwrap();
    assert!(
        text.contains(&format!("SKIPPED {name}")) && text.contains("openssl"),
        "the skip says why:\n{text}"
    );

    let (passed, text) = run_without_openssl(Some("true"));
    assert!(!passed, "under CI a missing openssl is a failure:\n{text}");
    assert!(text.contains("openssl") && text.contains("CI"), "{text}");

    // An empty CI is no CI.
    let (passed, text) = run_without_openssl(Some(""));
    assert!(passed, "{text}");
}
