//! What `APP_ENV=production` changes, seen from outside the binary: no `.env` file is read
//! (and in development only `./.env`), a weak bcrypt cost and a missing `DATABASE_URL` are
//! refused, the documentation pages are off unless asked for, the metrics listener stays on
//! loopback — and `DB_MIGRATIONS=verify`, with which the server runs as a role that may not
//! change the schema.

use std::path::{Path, PathBuf};

use jobpath_tests::process::ServerProcess;

use super::{Database, JWT_SECRET, PEPPER, get, jobpath_in, json_line, output, request, serve};

/// A fresh directory with a `child` directory in it; removed on drop.
struct Dirs(PathBuf);

impl Dirs {
    fn new() -> Dirs {
        let dir = std::env::temp_dir().join(format!("jobpath-env-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("child")).unwrap();
        Dirs(dir)
    }
    fn parent(&self) -> &Path {
        &self.0
    }
    fn child(&self) -> PathBuf {
        self.0.join("child")
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        // Where a zero-configuration start was wrongly attempted, it left a cluster running.
        let cluster = self.child().join(".jobpath").join("postgres");
        if cluster.join("PG_VERSION").exists() {
            jobpath_tests::cluster::stop_data_dir(&cluster);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `check-config` in `dir` with `vars`: the `APP_NAME` it reports.
fn app_name_in(dir: &Path, vars: &[(&str, &str)]) -> String {
    let out = jobpath_in(dir, &["check-config"], vars).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("APP_NAME="))
        .unwrap_or_else(|| panic!("no APP_NAME in\n{stdout}"))
        .to_owned()
}

const PRODUCTION: [(&str, &str); 6] = [
    ("APP_ENV", "production"),
    ("JWT_SECRET_KEY", JWT_SECRET),
    ("PASSWORD_PEPPER", PEPPER),
    ("DATABASE_URL", "postgres://app@db.internal/jobs"),
    ("SMTP_URL", "smtp://mail.internal"),
    ("APP_BASE_URL", "https://app.example.com"),
];

#[test]
fn dot_env_is_read_from_the_working_directory_only_and_never_in_production() {
    let dirs = Dirs::new();
    std::fs::write(
        dirs.parent().join(".env"),
        "APP_NAME=from-a-parent-directory\n",
    )
    .unwrap();
    assert_eq!(
        app_name_in(&dirs.child(), &[]),
        "JobPath API",
        "a parent directory's .env was read"
    );

    std::fs::write(dirs.child().join(".env"), "APP_NAME=from-dot-env\n").unwrap();
    assert_eq!(app_name_in(&dirs.child(), &[]), "from-dot-env");
    assert_eq!(
        app_name_in(&dirs.child(), &PRODUCTION),
        "JobPath API",
        ".env was read in production"
    );
}

#[test]
fn production_refuses_a_bcrypt_cost_below_10() {
    let mut vars = PRODUCTION.to_vec();
    vars.push(("BCRYPT_ROUNDS", "9"));
    let (code, stdout, stderr) = output(&["check-config"], &vars);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("BCRYPT_ROUNDS") && stderr.contains("10"),
        "{stderr}"
    );
    vars.pop();
    vars.push(("BCRYPT_ROUNDS", "10"));
    let (code, stdout, stderr) = output(&["check-config"], &vars);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Development keeps the fast costs the tests use.
    let (code, stdout, stderr) = output(&["check-config"], &[("BCRYPT_ROUNDS", "4")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test]
async fn production_refuses_to_start_without_a_database_url() {
    let dirs = Dirs::new();
    // Were the fallback tried, it would find nothing on PGPORT and start a private cluster
    // in the working directory, never touch the shared PostgreSQL.
    let pgport = jobpath_tests::cluster::free_port().to_string();
    for command in ["check-config", "serve"] {
        let server = ServerProcess::spawn(jobpath_in(
            &dirs.child(),
            &[command],
            &[
                ("APP_ENV", "production"),
                ("JWT_SECRET_KEY", JWT_SECRET),
                ("PASSWORD_PEPPER", PEPPER),
                ("PORT", "0"),
                ("METRICS_PORT", "0"),
                ("PGPORT", &pgport),
            ],
        ));
        let (code, output) = server.exit().await;
        assert_eq!(code, Some(1), "{command}: {output}");
        assert!(
            output.contains("DATABASE_URL") && output.contains("production"),
            "{command}: {output}"
        );
    }
    // No zero-configuration fallback was tried: no private cluster, no .jobpath.
    assert!(!dirs.child().join(".jobpath").exists());
}

#[tokio::test]
async fn in_production_the_docs_are_off_unless_enabled_and_metrics_listen_on_loopback() {
    let db = Database::create().await;
    let server = serve(&db, &[("HOST", "0.0.0.0"), ("LOG_FORMAT", "json")]);
    let startup = json_line(&server.wait_for("listening").await);
    let address = startup["address"].as_str().unwrap();
    assert!(address.starts_with("0.0.0.0:"), "{startup}");
    let metrics = startup["metrics"].as_str().unwrap();
    assert!(
        metrics.starts_with("http://127.0.0.1:"),
        "the metrics listener follows HOST: {startup}"
    );
    let port = address.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    for page in ["/docs", "/redoc", "/docs/assets/jobpath/spec.js"] {
        assert_eq!(get(&local, page, None).0, 404, "{page} in production");
    }
    for spec in ["/openapi.json", "/openapi.yaml"] {
        assert_eq!(get(&local, spec, None).0, 200, "{spec}");
    }
    server.stop().await;

    let server = serve(
        &db,
        &[
            ("LOG_FORMAT", "json"),
            ("DOCS_ENABLED", "true"),
            ("METRICS_HOST", "0.0.0.0"),
        ],
    );
    let startup = json_line(&server.wait_for("listening").await);
    let address = startup["address"].as_str().unwrap();
    assert!(
        startup["metrics"]
            .as_str()
            .unwrap()
            .starts_with("http://0.0.0.0:"),
        "{startup}"
    );
    assert_eq!(get(address, "/docs", None).0, 200);
    server.stop().await;
}

/// A login role with the rights of a running server (read and write rows) and no right to
/// change the schema; dropped on drop, after the databases it has rights in (declare it
/// first).
struct RuntimeRole {
    name: String,
}

impl RuntimeRole {
    async fn create() -> RuntimeRole {
        let name = format!("jobpath_rt_{}", uuid::Uuid::new_v4().simple());
        jobpath_tests::db::admin()
            .await
            .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
            .await
            .unwrap();
        RuntimeRole { name }
    }

    /// Row rights on every table of `db`, which must already have its tables.
    async fn grant_rows(&self, db: &Database) {
        let name = &self.name;
        db.db
            .client()
            .await
            .batch_execute(&format!(
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                 GRANT USAGE ON SCHEMA public TO {name};
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name};
                 GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name};"
            ))
            .await
            .unwrap();
    }

    fn url(&self, db: &Database) -> String {
        format!("postgres://{}@{}/{}", self.name, db.db.server(), db.name())
    }
}

impl Drop for RuntimeRole {
    fn drop(&mut self) {
        let _ =
            jobpath_tests::db::admin_execute_blocking(format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

#[tokio::test]
async fn with_db_migrations_verify_serve_refuses_a_database_that_lacks_migrations_and_needs_no_ddl_rights()
 {
    let role = RuntimeRole::create().await;
    let db = Database::create().await;
    let verify = [("DB_MIGRATIONS", "verify"), ("LOG_FORMAT", "json")];

    let (code, logs) = serve(&db, &verify).exit().await;
    assert_eq!(code, Some(1), "{logs}");
    assert!(
        logs.contains("DB_MIGRATIONS=verify") && logs.contains("jobpath-server migrate"),
        "{logs}"
    );
    // Verifying changed nothing: not even the bookkeeping table exists.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'schema_migrations'")
            .await,
        0
    );

    // `migrate` applies them (as the owner), whatever DB_MIGRATIONS says.
    let (code, stdout, stderr) = output(
        &["migrate"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("DB_MIGRATIONS", "verify"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The runtime role may read and write rows but not create anything: enough to serve.
    role.grant_rows(&db).await;
    let url = role.url(&db);
    let mut vars = verify.to_vec();
    vars.push(("DATABASE_URL", url.as_str()));
    let server = serve(&db, &vars);
    let startup = json_line(&server.wait_for("listening").await);
    let address = startup["address"].as_str().unwrap();
    assert_eq!(get(address, "/health/ready", None).0, 200);
    let credentials =
        r#"{"email":"verify-mode@example.com","password":"correct horse battery staple"}"#;
    let (status, body) = request(address, "POST /auth/signup", None, Some(credentials));
    assert_eq!(status, 201, "{body}");
    server.stop().await;
    drop(db);
    drop(role);
}
