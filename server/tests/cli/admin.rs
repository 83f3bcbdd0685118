//! `jobpath-server admin grant|revoke|list`: the only way to make the first admin, run as
//! an operator runs it — the production configuration `serve` uses, the real binary, its
//! output and exit codes, and the events it leaves.

use super::{Database, JWT_SECRET, PEPPER, output};

fn admin(db: &Database, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    output(
        &all,
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("APP_ENV", "production"),
            ("JWT_SECRET_KEY", JWT_SECRET),
            ("PASSWORD_PEPPER", PEPPER),
            ("SMTP_URL", "smtp://127.0.0.1:9?tls=none"),
            ("APP_BASE_URL", "https://app.example.com"),
            ("CORS_ORIGINS", "https://app.example.com"),
        ],
    )
}

#[tokio::test]
async fn admin_grant_revoke_and_list_bootstrap_the_first_admin_with_clear_exit_codes() {
    let db = Database::create().await;
    // On a new database: the command migrates it as `serve` would, and there is no admin.
    let (code, out, err) = admin(&db, &["list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no account has the admin role"), "{out}");

    let (code, _, err) = admin(&db, &["grant", "ops@example.com"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no account has the address ops@example.com"),
        "{err}"
    );
    let (code, _, err) = admin(&db, &["grant", ""]);
    assert_eq!(code, 1);
    assert!(err.contains("is not an email address"), "{err}");

    let client = db.db.client().await;
    client
        .execute(
            "INSERT INTO users (email, password_hash) VALUES ('ops@example.com', 'x')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO sessions (user_id, expires_at)
             SELECT id, now() + interval '1 day' FROM users WHERE email = 'ops@example.com'",
            &[],
        )
        .await
        .unwrap();

    // The address is normalised as login does.
    let (code, out, err) = admin(&db, &["grant", "  Ops@Example.COM "]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ops@example.com is now an admin"), "{out}");
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE ended_at IS NULL")
            .await,
        0,
        "the grant ended the account's sessions"
    );
    let (code, out, _) = admin(&db, &["grant", "ops@example.com"]);
    assert_eq!(code, 0);
    assert!(out.contains("already an admin"), "{out}");

    let (code, out, _) = admin(&db, &["list"]);
    assert_eq!(code, 0);
    // Standard output is the answer alone (the log goes to standard error).
    assert!(out.starts_with("EMAIL\tGRANTED AT\tGRANTED BY\n"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ops@example.com\t"))
        .expect(&out);
    assert!(line.ends_with("(command line)"), "{line}");

    let (code, out, _) = admin(&db, &["revoke", "ops@example.com"]);
    assert_eq!(code, 0);
    assert!(out.contains("is no longer an admin"), "{out}");
    assert!(
        out.contains("warning: no account has the admin role now"),
        "{out}"
    );
    let (code, out, _) = admin(&db, &["revoke", "ops@example.com"]);
    assert_eq!(code, 0);
    assert!(out.contains("is not an admin"), "{out}");

    // Each change is an event, marked as the command line's, with no actor and no address.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM auth_events
              WHERE kind IN ('role_granted', 'role_revoked') AND reason = 'admin'
                AND actor_id IS NULL AND ip IS NULL
                AND user_agent = 'jobpath-server admin (command line)'"
        )
        .await,
        2
    );

    // Usage errors are exit status 2, with the usage.
    for args in [
        &[][..],
        &["grant"],
        &["promote", "ops@example.com"],
        &["list", "x"],
    ] {
        let (code, _, err) = admin(&db, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("Usage:"), "{err}");
    }
}

#[tokio::test]
async fn admin_commands_fail_with_exit_1_when_the_database_is_unreachable() {
    let (code, _, err) = output(
        &["admin", "list"],
        &[
            ("DATABASE_URL", "postgresql://postgres@127.0.0.1:9/nothing"),
            ("DB_STARTUP_TIMEOUT_SECONDS", "1"),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("127.0.0.1:9"),
        "the error names the database it tried: {err}"
    );
}
