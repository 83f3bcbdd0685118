//! A database of a test's own on the shared PostgreSQL, dropped when the test ends.
//!
//! Every suite's tests run against one shared server (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, an account that may create databases), so
//! a test isolates itself with a fresh, uniquely named database ([`TestDb`]). The database
//! is dropped `WITH (FORCE)` on drop, whether the test passed or panicked: a server the test
//! left running, or a pool not yet closed, must not keep it alive.

use tokio_postgres::Config;
use tokio_postgres::config::Host;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The shared server's administrative URL: `TEST_DATABASE_URL`, or the local default.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `admin_url` with its database name replaced. Done on the text, not through `Config`, so
/// that whatever else the URL carries (`?sslmode=…`) reaches the server under test as the
/// developer wrote it.
fn url_for(db_name: &str) -> String {
    let admin = admin_url();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let (server, _) = base
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL must be a postgres:// URL");
    format!("{server}/{db_name}{query}")
}

async fn try_connect(config: &Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn connect(config: &Config) -> tokio_postgres::Client {
    try_connect(config)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL ({e}); is it running?"))
}

fn admin_config() -> Config {
    admin_url()
        .parse()
        .expect("TEST_DATABASE_URL must be a postgres:// URL")
}

/// A connection to the shared server's administrative database, for what lives outside any
/// one database (roles).
pub async fn admin() -> tokio_postgres::Client {
    connect(&admin_config()).await
}

/// Runs `sql` on the administrative database from synchronous code, such as a `Drop`.
///
/// A `Drop` runs inside the test's runtime, which cannot be blocked on, so the work is done
/// on a thread with a runtime of its own. The error is returned as text for a warning: by
/// then there is nobody left to hand it to.
pub fn admin_execute_blocking(sql: String) -> Result<(), String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(async move {
                let admin = try_connect(&admin_config()).await?;
                admin.batch_execute(&sql).await
            })
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the thread running it panicked".to_owned()))
}

/// A fresh database on the shared server, named `<prefix>_<uuid>`; dropped on drop.
pub struct TestDb {
    pub name: String,
    /// Its URL: `TEST_DATABASE_URL` with this database, the rest as written.
    pub url: String,
    /// The same, parsed: for reading its parts (user, password, host).
    pub config: Config,
}

impl TestDb {
    /// A database named `jobpath_test_<uuid>`.
    pub async fn create() -> TestDb {
        TestDb::with_prefix("jobpath_test").await
    }

    /// A database named `<prefix>_<uuid>`: a suite's prefix says, in `\l`, whose a database
    /// left behind is. `prefix` must be a plain lower-case SQL identifier.
    pub async fn with_prefix(prefix: &str) -> TestDb {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the test database");
        let url = url_for(&name);
        let config = url.parse().expect("the test database's URL parses");
        TestDb { name, url, config }
    }

    /// A direct connection, for checking what was (not) written and for arranging states
    /// the API cannot produce (an inactive or deleted user).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config).await
    }

    /// The single `bigint` that `sql` selects in this database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.count_with(sql, &[]).await
    }

    /// The single `bigint` that `sql`, with `params`, selects in this database.
    pub async fn count_with(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        self.client()
            .await
            .query_one(sql, params)
            .await
            .unwrap()
            .get(0)
    }

    /// `host:port` of the PostgreSQL server, for a test that puts something (a proxy, a
    /// port where nothing listens yet) between the server under test and the database.
    pub fn server(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            other => panic!("these tests need a TCP TEST_DATABASE_URL, got {other:?}"),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// A URL for this database through `host_port`, carrying `password` (trust
    /// authentication ignores it; the tests check it never reaches a log).
    pub fn url_via(&self, host_port: &str, password: &str) -> String {
        format!(
            "postgres://{}:{password}@{host_port}/{}",
            self.config.get_user().unwrap_or("postgres"),
            self.name
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin_execute_blocking(sql) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}
