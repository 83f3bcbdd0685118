//! Statements that a transaction-mode connection pooler can carry.
//!
//! tokio-postgres's `query`/`execute` and `prepare_cached` use *named* prepared statements:
//! one message prepares `s18` on the server connection, later ones run it. Behind a pooler in
//! transaction mode (PgBouncer, or a managed pooler that behaves like it) the next
//! transaction may run on another server connection, where `s18` does not exist. The
//! `*_typed` calls instead send the statement, its parameters' types, the values and the
//! execution in one go, on the *unnamed* statement, so nothing outlives the round trip.
//! The price is that PostgreSQL parses and plans the statement every time; `bench/RESULTS.md`
//! has what that costs the hot read of `/auth/me` (the batched owner lookup), which for that
//! reason stays a named prepared statement unless `DB_POOLER=transaction` (`super::owners`).
//!
//! Those calls need each parameter's PostgreSQL type. [`Param`] takes it from the Rust type
//! ([`PgType`]), which is the type PostgreSQL inferred before: every `ToSql` used here accepts
//! exactly one PostgreSQL type, except text, which is sent as `text` (a `varchar` column
//! takes it). [`Typed`] gives [`tokio_postgres::Client`] and [`tokio_postgres::Transaction`]
//! the four calls the server uses — [`Typed::rows`], [`Typed::one`], [`Typed::opt`] and
//! [`Typed::exec`] — and this module's test keeps the untyped ones (and session state) out
//! of `server/src`.
//!
//! A result column of a type PostgreSQL does not build in (an enum, a domain, `citext`)
//! would make tokio-postgres look the type up with a *named* statement of its own: every
//! column the server reads is of a built-in type, and must stay so.

use std::future::Future;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};
use uuid::Uuid;

/// A Rust type and the PostgreSQL type it is sent as.
pub trait PgType {
    const TYPE: Type;
}

/// A type whose `Vec` or slice is sent as a PostgreSQL array.
pub trait PgElement {
    const ARRAY: Type;
}

macro_rules! pg_types {
    ($($rust:ty => $pg:ident, $array:ident;)*) => {
        $(
            impl PgType for $rust {
                const TYPE: Type = Type::$pg;
            }
            impl PgElement for $rust {
                const ARRAY: Type = Type::$array;
            }
        )*
    };
}

pg_types! {
    str => TEXT, TEXT_ARRAY;
    String => TEXT, TEXT_ARRAY;
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    Uuid => UUID, UUID_ARRAY;
    DateTime<Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    IpAddr => INET, INET_ARRAY;
    Vec<u8> => BYTEA, BYTEA_ARRAY;
}

impl PgType for [u8] {
    const TYPE: Type = Type::BYTEA;
}

impl<T: PgType + ?Sized> PgType for &T {
    const TYPE: Type = T::TYPE;
}

impl<T: PgElement + ?Sized> PgElement for &T {
    const ARRAY: Type = T::ARRAY;
}

impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl<T: PgElement> PgType for Vec<T> {
    const TYPE: Type = T::ARRAY;
}

impl<T: PgElement> PgType for [T] {
    const TYPE: Type = T::ARRAY;
}

/// A statement parameter: a value and, from its Rust type, its PostgreSQL type.
pub trait Param: ToSql + Sync {
    fn pg_type(&self) -> Type;
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

impl<T: PgType + ToSql + Sync> Param for T {
    fn pg_type(&self) -> Type {
        T::TYPE
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

fn typed<'a>(params: &[&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p.as_sql(), p.pg_type())).collect()
}

/// The statement calls of the server: each one round trip on the unnamed statement.
pub trait Typed {
    /// Every row `sql` returns.
    fn rows(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;
    /// The one row `sql` returns; an error for none or several.
    fn one(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Row, Error>> + Send;
    /// The row `sql` returns, if any; an error for several.
    fn opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;
    /// How many rows `sql` changed.
    fn exec(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

macro_rules! typed_calls {
    ($($client:ty),*) => {
        $(
            impl Typed for $client {
                async fn rows(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, Error> {
                    self.query_typed(sql, &typed(params)).await
                }
                async fn one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, Error> {
                    self.query_typed_one(sql, &typed(params)).await
                }
                async fn opt(
                    &self,
                    sql: &str,
                    params: &[&dyn Param],
                ) -> Result<Option<Row>, Error> {
                    self.query_typed_opt(sql, &typed(params)).await
                }
                async fn exec(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, Error> {
                    self.execute_typed(sql, &typed(params)).await
                }
            }
        )*
    };
}

typed_calls!(tokio_postgres::Client, tokio_postgres::Transaction<'_>);

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Calls that would prepare a named statement (or start a transaction without its
    /// `SET LOCAL statement_timeout`), and the files allowed to make them.
    const FORBIDDEN: &[(&str, &[&str])] = &[
        (".prepare(", &[]),
        // The one named statement, `DB_POOLER=none`'s token lookup.
        (".prepare_cached(", &["db/owners.rs"]),
        (".prepare_typed(", &[]),
        (".prepare_typed_cached(", &[]),
        (".query(", &["db/owners.rs"]),
        (".query_one(", &[]),
        (".query_opt(", &[]),
        (".query_raw(", &[]),
        (".query_scalar(", &[]),
        (".query_one_scalar(", &[]),
        (".query_opt_scalar(", &[]),
        (".execute(", &[]),
        (".execute_raw(", &[]),
        (".bind(", &[]),
        (".bind_raw(", &[]),
        (".copy_in(", &[]),
        (".copy_out(", &[]),
        ("::query(", &[]),
        ("::execute(", &[]),
        (".build_transaction(", &[]),
        // Session state would stay on a server connection that a pooler hands on.
        ("\"SET ", &[]),
        ("\"LISTEN", &["db/outbox.rs"]),
        ("pg_advisory_lock", &[]),
        // The migrations run on a direct connection of their own, without a time limit.
        (".transaction()", &["db/mod.rs", "db/migrate.rs"]),
    ];

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn the_server_sends_no_statement_a_transaction_mode_pooler_cannot_carry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(files.len() > 20, "found only {} sources", files.len());
        let mut found = Vec::new();
        for file in files {
            let name = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                // Whole-line comments only: `//` also starts the `://` of a URL in a string.
                if line.trim_start().starts_with("//") {
                    continue;
                }
                let code = line;
                for (call, allowed) in FORBIDDEN {
                    let Some(at) = code.find(call) else { continue };
                    // `uri.query()` is a URL's query string, not a statement.
                    let rest = &code[at + call.len()..];
                    if *call == ".query(" && rest.starts_with(')') {
                        continue;
                    }
                    // `SET LOCAL` ends with its transaction.
                    if *call == "\"SET " && rest.starts_with("LOCAL ") {
                        continue;
                    }
                    if !allowed.contains(&name.as_str()) && name != "db/typed.rs" {
                        found.push(format!("{name}:{}: {}", number + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "untyped statement calls:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn a_parameter_is_sent_as_the_type_its_rust_type_names() {
        use super::Param as _;
        use tokio_postgres::types::Type;
        assert_eq!("x".pg_type(), Type::TEXT);
        assert_eq!(Some(3_i64).pg_type(), Type::INT8);
        assert_eq!(None::<uuid::Uuid>.pg_type(), Type::UUID);
        assert_eq!(vec![uuid::Uuid::nil()].pg_type(), Type::UUID_ARRAY);
        assert_eq!(vec![b"x".to_vec()].pg_type(), Type::BYTEA_ARRAY);
        assert_eq!((&b"x"[..]).pg_type(), Type::BYTEA);
        assert_eq!(chrono::Utc::now().pg_type(), Type::TIMESTAMPTZ);
    }
}
