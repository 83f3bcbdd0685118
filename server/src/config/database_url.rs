//! [`DatabaseUrl`]: `DATABASE_URL`, parsed once at start-up into the connection settings it
//! names, and from then on carried as that type.
//!
//! Parsing at the edge means a malformed URL stops `check-config` and start-up with an error
//! naming the variable — and never quoting it, since it holds the password — and nothing
//! after that handles the raw string. The type shows itself (`Display`, `Debug`) as the URL
//! with the password replaced, rebuilt from the parsed settings, so no spelling of the
//! password (in the URL, a `password=` pair, a query parameter) can slip through.

use std::fmt;
use std::str::FromStr;

use anyhow::anyhow;

/// A valid PostgreSQL connection URL (or `key=value` string), password kept out of sight.
#[derive(Clone)]
pub struct DatabaseUrl {
    pg: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// The connection settings, TLS mode as written (see `db::connect::Target`).
    pub fn pg(&self) -> &tokio_postgres::Config {
        &self.pg
    }
}

impl DatabaseUrl {
    /// Parses the value of the variable `name`; an error names the variable, never the value.
    pub fn parse_var(name: &str, raw: &str) -> anyhow::Result<DatabaseUrl> {
        // tokio-postgres's parse errors name the bad part, never the input.
        let pg = raw
            .parse::<tokio_postgres::Config>()
            .map_err(|e| anyhow!("{name} is not a valid PostgreSQL URL: {e}"))?;
        Ok(DatabaseUrl { pg })
    }
}

impl FromStr for DatabaseUrl {
    type Err = anyhow::Error;

    fn from_str(raw: &str) -> anyhow::Result<DatabaseUrl> {
        DatabaseUrl::parse_var("DATABASE_URL", raw)
    }
}

/// `postgres://user:<redacted>@host:port/dbname`: what `check-config` shows.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match (self.pg.get_user(), self.pg.get_password().is_some()) {
            (Some(user), true) => format!("{user}:<redacted>@"),
            (Some(user), false) => format!("{user}@"),
            (None, true) => ":<redacted>@".to_owned(),
            (None, false) => String::new(),
        };
        write!(f, "postgres://{auth}{}", describe(&self.pg))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `host:port/dbname` of a connection configuration, never the password; for the start-up
/// line and error messages.
pub fn describe(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", pg.get_dbname().unwrap_or("(default)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> DatabaseUrl {
        raw.parse().unwrap()
    }

    #[test]
    fn shown_it_keeps_everything_but_the_password() {
        for raw in [
            "postgres://app:hunter2@db:5433/jobs",
            "postgres://app@db:5433/jobs?password=hunter2",
            "host=db port=5433 user=app password=hunter2 dbname=jobs",
        ] {
            let parsed = url(raw);
            assert_eq!(
                parsed.to_string(),
                "postgres://app:<redacted>@db:5433/jobs",
                "{raw}"
            );
            let debug = format!("{parsed:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("<redacted>"), "{debug}");
        }
        assert_eq!(
            url("postgres://app@db/jobs").to_string(),
            "postgres://app@db:5432/jobs"
        );
    }

    #[test]
    fn a_url_that_does_not_parse_is_refused_without_echoing_it() {
        let err = "postgres://app:hunter2@db:notaport/x"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("DATABASE_URL"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
