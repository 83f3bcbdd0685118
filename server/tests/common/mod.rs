//! What the binary's test suites (`cli`, `process`) share: a database of the test's own on
//! the shared PostgreSQL (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped at the end.

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub async fn connect(pg: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL ({e:?}); is it running?"));
    tokio::spawn(conn);
    client
}

/// A fresh database named `<prefix>_<uuid>`, dropped when the value is dropped.
pub struct TempDb {
    pub name: String,
    /// How to reach it (the admin URL with this database).
    pub pg: tokio_postgres::Config,
}

impl TempDb {
    pub async fn create(prefix: &str) -> TempDb {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut pg: tokio_postgres::Config = admin_url().parse().unwrap();
        connect(&pg)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        pg.dbname(&name);
        TempDb { name, pg }
    }

    /// `host:port` of the PostgreSQL server.
    pub fn server(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            other => panic!("these tests need a TCP TEST_DATABASE_URL, got {other:?}"),
        };
        format!(
            "{host}:{}",
            self.pg.get_ports().first().copied().unwrap_or(5432)
        )
    }

    /// A URL for this database through `host_port`, carrying `password` (trust
    /// authentication ignores it; the tests check it never reaches a log).
    pub fn url_via(&self, host_port: &str, password: &str) -> String {
        format!(
            "postgres://{}:{password}@{host_port}/{}",
            self.pg.get_user().unwrap_or("postgres"),
            self.name
        )
    }

    /// The single `bigint` `sql` (with `params`) selects in this database.
    pub async fn count(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        connect(&self.pg)
            .await
            .query_one(sql, params)
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let admin = connect(&admin_url().parse().unwrap()).await;
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                })
        })
        .join();
    }
}
