//! Configuration: environment variables (plus a `.env` file, read by `main`) → typed [`Config`].
//!
//! Every variable has a default that works on a developer's machine, so the server starts with
//! no configuration at all. A value that does not parse is a start-up error naming the
//! variable. Outside development (`APP_ENV=production`) the JWT secret must be set, at least
//! 32 bytes, and not a placeholder; in development a missing one is replaced by a random
//! secret with a loud warning. Secrets are wrapped in [`Secret`] so that `Debug` never prints
//! them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

/// Minimum JWT secret length outside development (HS256 keys shorter than the hash are weak).
pub const MIN_SECRET_BYTES: usize = 32;

/// The conventional port of a Prometheus exporter (node_exporter's), so a scrape config
/// that expects one finds it.
pub const DEFAULT_METRICS_PORT: u16 = 9100;

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which browser origins may call the API (`CORS_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (no credentials are used, bearer tokens travel in a header).
    Any,
    /// An explicit list; empty means CORS is off.
    List(Vec<String>),
}

/// As in `CORS_ORIGINS`, for the start-up line and `check-config`.
impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::List(list) if list.is_empty() => f.write_str("<off>"),
            CorsOrigins::List(list) => f.write_str(&list.join(",")),
        }
    }
}

impl CorsOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// The whole configuration of one server process.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_name: String,
    pub app_version: String,
    pub environment: Environment,
    pub debug: bool,
    pub host: IpAddr,
    pub port: u16,
    /// `None`: use (and if needed create) the local development database, see `db::locate`.
    pub database_url: Option<Secret>,
    /// Extra trusted CA certificates (PEM) for TLS to PostgreSQL (`DB_SSL_ROOT_CERT`,
    /// see `db::tls`).
    pub db_ssl_root_cert: Option<std::path::PathBuf>,
    pub jwt_secret: Secret,
    /// True when no secret was configured and a random one was generated for this process.
    pub jwt_secret_generated: bool,
    /// Problems accepted only because this is development; `main` logs them loudly.
    pub warnings: Vec<String>,
    pub access_token_ttl: Duration,
    /// Lifetime of a session, and so of its refresh tokens (`REFRESH_TOKEN_EXPIRE_DAYS`).
    pub refresh_token_ttl: Duration,
    /// How long after a rotation the spent refresh token still yields the same successor
    /// instead of counting as theft (`REFRESH_REUSE_GRACE_SECONDS`).
    pub refresh_reuse_grace: Duration,
    // --- sessions: growth (SESSIONS_PER_USER_MAX, REFRESH_IDLE_TIMEOUT_DAYS) ---
    /// Live sessions a user may hold; a login beyond it ends the least recently used one.
    pub sessions_per_user_max: u32,
    /// A session not refreshed for this long can no longer be refreshed; zero turns the
    /// idle timeout off.
    pub refresh_idle_timeout: Duration,
    /// How recent the caller's login must be to end other sessions (`REAUTH_WINDOW_MINUTES`).
    pub reauth_window: Duration,
    // --- end sessions: growth ---
    pub bcrypt_cost: u32,
    pub hash_threads: usize,
    pub cors_origins: CorsOrigins,
    pub log_level: String,
    pub log_format: LogFormat,
    pub db_pool_size: usize,
    pub db_max_overflow: usize,
    pub db_pool_timeout: Duration,
    /// How long start-up keeps retrying a database that does not answer yet; zero means
    /// one attempt.
    pub db_startup_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers before the connection is
    /// closed (slow or silent clients).
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones get a 503 and are closed.
    pub max_connections: usize,
    /// Rate limits and the per-account login throttle (`RATE_LIMIT_*`).
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<Cidr>,
    /// How long security events are kept (`EVENT_RETENTION_DAYS`).
    pub event_retention: Duration,
    /// Serve `/metrics` on the public port too. Off by default: the numbers describe the
    /// service's load and should reach the operator's Prometheus, not every client.
    pub metrics_public: bool,
    /// The port of the separate metrics listener (on `host`), used unless `metrics_public`.
    pub metrics_port: u16,
}

/// Requests allowed per client IP per window, by operation, and the login throttle per
/// account. A limit of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub window: Duration,
    pub signup_per_ip: u32,
    pub login_per_ip: u32,
    pub refresh_per_ip: u32,
    pub password_change_per_ip: u32,
    /// Failed logins for one account (normalised email) before each further one imposes a
    /// delay, doubling from one second.
    pub login_failures_per_account: u32,
    /// The longest delay the login throttle imposes on an account.
    pub login_max_delay: Duration,
}

/// An address block such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> anyhow::Result<Cidr> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| anyhow!("'{raw}' is not an IP address or CIDR block"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| anyhow!("'{raw}': the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports) as the
/// IPv4 address it is, so that one block matches both spellings.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `lookup`, so tests can supply a map instead of the
    /// process environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let environment = match get("APP_ENV").as_deref().map(str::to_ascii_lowercase) {
            None => Environment::Development,
            Some(v) if v == "development" || v == "dev" => Environment::Development,
            Some(v) if v == "production" || v == "prod" => Environment::Production,
            Some(v) => bail!("APP_ENV must be 'development' or 'production', got '{v}'"),
        };
        let debug = parse_or(&get, "DEBUG", false, parse_bool)?;

        match get("JWT_ALGORITHM") {
            None => {}
            Some(alg) if alg.eq_ignore_ascii_case("HS256") => {}
            Some(other) => bail!("JWT_ALGORITHM: only HS256 is supported, got '{other}'"),
        }
        let mut warnings = Vec::new();
        let (jwt_secret, jwt_secret_generated) =
            jwt_secret(get("JWT_SECRET_KEY"), environment, &mut warnings)?;

        let access_minutes: u64 = parse_or(&get, "ACCESS_TOKEN_EXPIRE_MINUTES", 30, from_str)?;
        if !(1..=24 * 60).contains(&access_minutes) {
            bail!("ACCESS_TOKEN_EXPIRE_MINUTES must be between 1 and 1440, got {access_minutes}");
        }
        let refresh_days: u64 = parse_or(&get, "REFRESH_TOKEN_EXPIRE_DAYS", 30, from_str)?;
        if !(1..=365).contains(&refresh_days) {
            bail!("REFRESH_TOKEN_EXPIRE_DAYS must be between 1 and 365, got {refresh_days}");
        }
        let grace_secs: u64 = parse_or(&get, "REFRESH_REUSE_GRACE_SECONDS", 10, from_str)?;
        if grace_secs > 300 {
            bail!("REFRESH_REUSE_GRACE_SECONDS must be between 0 and 300, got {grace_secs}");
        }
        // --- sessions: growth ---
        let sessions_per_user_max: u32 = parse_or(&get, "SESSIONS_PER_USER_MAX", 50, from_str)?;
        if !(1..=1000).contains(&sessions_per_user_max) {
            bail!("SESSIONS_PER_USER_MAX must be between 1 and 1000, got {sessions_per_user_max}");
        }
        let idle_days: u64 = parse_or(&get, "REFRESH_IDLE_TIMEOUT_DAYS", 14, from_str)?;
        if idle_days > 365 {
            bail!("REFRESH_IDLE_TIMEOUT_DAYS must be between 0 and 365, got {idle_days}");
        }
        let reauth_minutes: u64 = parse_or(&get, "REAUTH_WINDOW_MINUTES", 10, from_str)?;
        if !(1..=1440).contains(&reauth_minutes) {
            bail!("REAUTH_WINDOW_MINUTES must be between 1 and 1440, got {reauth_minutes}");
        }
        // --- end sessions: growth ---
        let bcrypt_cost: u32 = parse_or(&get, "BCRYPT_ROUNDS", 12, from_str)?;
        if !(4..=31).contains(&bcrypt_cost) {
            bail!("BCRYPT_ROUNDS must be between 4 and 31, got {bcrypt_cost}");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let hash_threads: usize = parse_or(&get, "HASH_THREADS", cores, from_str)?;
        if hash_threads == 0 {
            bail!("HASH_THREADS must be at least 1");
        }
        let db_pool_size: usize = parse_or(&get, "DB_POOL_SIZE", 20, from_str)?;
        if db_pool_size == 0 {
            bail!("DB_POOL_SIZE must be at least 1");
        }
        let db_pool_timeout_secs: f64 = parse_or(&get, "DB_POOL_TIMEOUT_SECONDS", 5.0, from_str)?;
        let shutdown_grace_secs: f64 = parse_or(&get, "SHUTDOWN_GRACE_SECONDS", 30.0, from_str)?;
        let header_timeout_secs: f64 =
            parse_or(&get, "HEADER_READ_TIMEOUT_SECONDS", 10.0, from_str)?;
        // Generous by default: an orchestrator may start the database and the server
        // together, and a first-time database initialisation takes a while.
        let db_startup_secs: u64 = parse_or(&get, "DB_STARTUP_TIMEOUT_SECONDS", 60, from_str)?;
        if db_startup_secs > 3600 {
            bail!("DB_STARTUP_TIMEOUT_SECONDS must be between 0 and 3600, got {db_startup_secs}");
        }
        let max_connections: usize = parse_or(&get, "MAX_CONNECTIONS", 1024, from_str)?;
        if !(1..=1_000_000).contains(&max_connections) {
            bail!("MAX_CONNECTIONS must be between 1 and 1000000, got {max_connections}");
        }

        let window_secs: u64 = parse_or(&get, "RATE_LIMIT_WINDOW_SECONDS", 60, from_str)?;
        if !(1..=86_400).contains(&window_secs) {
            bail!("RATE_LIMIT_WINDOW_SECONDS must be between 1 and 86400, got {window_secs}");
        }
        let max_delay_secs: u64 =
            parse_or(&get, "RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS", 900, from_str)?;
        if !(1..=86_400).contains(&max_delay_secs) {
            bail!(
                "RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS must be between 1 and 86400, got {max_delay_secs}"
            );
        }
        let rate_limits = RateLimits {
            window: Duration::from_secs(window_secs),
            signup_per_ip: parse_or(&get, "RATE_LIMIT_SIGNUP_PER_IP", 20, from_str)?,
            login_per_ip: parse_or(&get, "RATE_LIMIT_LOGIN_PER_IP", 60, from_str)?,
            refresh_per_ip: parse_or(&get, "RATE_LIMIT_REFRESH_PER_IP", 120, from_str)?,
            password_change_per_ip: parse_or(
                &get,
                "RATE_LIMIT_PASSWORD_CHANGE_PER_IP",
                20,
                from_str,
            )?,
            login_failures_per_account: parse_or(
                &get,
                "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT",
                5,
                from_str,
            )?,
            login_max_delay: Duration::from_secs(max_delay_secs),
        };
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Cidr::from_str)
                .collect::<anyhow::Result<Vec<_>>>()
                .context("TRUSTED_PROXIES")?,
        };
        let retention_days: u64 = parse_or(&get, "EVENT_RETENTION_DAYS", 90, from_str)?;
        if !(1..=3650).contains(&retention_days) {
            bail!("EVENT_RETENTION_DAYS must be between 1 and 3650, got {retention_days}");
        }
        let port: u16 = parse_or(&get, "PORT", 8000, from_str)?;
        let metrics_public = parse_or(&get, "METRICS_PUBLIC", false, parse_bool)?;
        let metrics_port: u16 = parse_or(&get, "METRICS_PORT", DEFAULT_METRICS_PORT, from_str)?;
        if !metrics_public && metrics_port == port && port != 0 {
            bail!("METRICS_PORT must differ from PORT ({port}), or set METRICS_PUBLIC=true");
        }
        let database_url = get("DATABASE_URL").map(Secret);
        if let Some(url) = &database_url {
            // Checked here so that `check-config` catches it; the parse error never quotes
            // the URL, so the password stays out of the message.
            url.expose()
                .parse::<tokio_postgres::Config>()
                .map_err(|e| anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
        }

        Ok(Config {
            app_name: get("APP_NAME").unwrap_or_else(|| "JobPath API".to_owned()),
            app_version: get("APP_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            environment,
            debug,
            host: parse_or(&get, "HOST", IpAddr::from([0, 0, 0, 0]), from_str)?,
            port,
            database_url,
            db_ssl_root_cert: get("DB_SSL_ROOT_CERT")
                .filter(|v| !v.trim().is_empty())
                .map(std::path::PathBuf::from),
            jwt_secret,
            jwt_secret_generated,
            warnings,
            access_token_ttl: Duration::from_secs(access_minutes * 60),
            refresh_token_ttl: Duration::from_secs(refresh_days * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(grace_secs),
            sessions_per_user_max,
            refresh_idle_timeout: Duration::from_secs(idle_days * 24 * 3600),
            reauth_window: Duration::from_secs(reauth_minutes * 60),
            bcrypt_cost,
            hash_threads,
            cors_origins: parse_cors(get("CORS_ORIGINS"))?,
            log_level: get("LOG_LEVEL")
                .unwrap_or_else(|| if debug { "debug" } else { "info" }.to_owned()),
            log_format: match get("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase) {
                None => LogFormat::Text,
                Some(v) if v == "text" => LogFormat::Text,
                Some(v) if v == "json" => LogFormat::Json,
                Some(v) => bail!("LOG_FORMAT must be 'text' or 'json', got '{v}'"),
            },
            db_pool_size,
            db_max_overflow: parse_or(&get, "DB_MAX_OVERFLOW", 10, from_str)?,
            db_pool_timeout: seconds("DB_POOL_TIMEOUT_SECONDS", db_pool_timeout_secs)?,
            db_startup_timeout: Duration::from_secs(db_startup_secs),
            shutdown_grace: seconds("SHUTDOWN_GRACE_SECONDS", shutdown_grace_secs)?,
            header_read_timeout: seconds("HEADER_READ_TIMEOUT_SECONDS", header_timeout_secs)?,
            max_connections,
            rate_limits,
            trusted_proxies,
            event_retention: Duration::from_secs(retention_days * 24 * 3600),
            metrics_public,
            metrics_port,
        })
    }

    /// Every setting as `(variable, effective value)`, for `jobpath-server check-config`.
    /// Secrets are redacted: the JWT secret is never shown, and neither is the database
    /// password (the rest of the URL is).
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| format!("{}", d.as_secs_f64());
        let jwt = if self.jwt_secret_generated {
            "<unset: a random secret for each process>".to_owned()
        } else {
            "<set, redacted>".to_owned()
        };
        let database = match &self.database_url {
            Some(url) => crate::db::locate::redacted_url(url),
            None => "<unset: the local PostgreSQL, see README>".to_owned(),
        };
        vec![
            ("APP_ENV", format!("{:?}", self.environment).to_lowercase()),
            ("APP_NAME", self.app_name.clone()),
            ("APP_VERSION", self.app_version.clone()),
            ("DEBUG", self.debug.to_string()),
            ("HOST", self.host.to_string()),
            ("PORT", self.port.to_string()),
            ("DATABASE_URL", database),
            (
                "DB_SSL_ROOT_CERT",
                self.db_ssl_root_cert
                    .as_ref()
                    .map_or_else(|| "<unset>".to_owned(), |p| p.display().to_string()),
            ),
            ("JWT_SECRET_KEY", jwt),
            ("JWT_ALGORITHM", "HS256".to_owned()),
            (
                "ACCESS_TOKEN_EXPIRE_MINUTES",
                (self.access_token_ttl.as_secs() / 60).to_string(),
            ),
            ("BCRYPT_ROUNDS", self.bcrypt_cost.to_string()),
            ("HASH_THREADS", self.hash_threads.to_string()),
            ("CORS_ORIGINS", self.cors_origins.to_string()),
            ("LOG_LEVEL", self.log_level.clone()),
            (
                "LOG_FORMAT",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            ("DB_POOL_SIZE", self.db_pool_size.to_string()),
            ("DB_MAX_OVERFLOW", self.db_max_overflow.to_string()),
            ("DB_POOL_TIMEOUT_SECONDS", secs(self.db_pool_timeout)),
            ("SHUTDOWN_GRACE_SECONDS", secs(self.shutdown_grace)),
            (
                "HEADER_READ_TIMEOUT_SECONDS",
                secs(self.header_read_timeout),
            ),
            ("METRICS_PUBLIC", self.metrics_public.to_string()),
            ("METRICS_PORT", self.metrics_port.to_string()),
            (
                "REFRESH_TOKEN_EXPIRE_DAYS",
                (self.refresh_token_ttl.as_secs() / 86_400).to_string(),
            ),
            (
                "REFRESH_REUSE_GRACE_SECONDS",
                secs(self.refresh_reuse_grace),
            ),
            (
                "SESSIONS_PER_USER_MAX",
                self.sessions_per_user_max.to_string(),
            ),
            (
                "REFRESH_IDLE_TIMEOUT_DAYS",
                (self.refresh_idle_timeout.as_secs() / 86_400).to_string(),
            ),
            (
                "REAUTH_WINDOW_MINUTES",
                (self.reauth_window.as_secs() / 60).to_string(),
            ),
            ("DB_STARTUP_TIMEOUT_SECONDS", secs(self.db_startup_timeout)),
            ("MAX_CONNECTIONS", self.max_connections.to_string()),
            ("RATE_LIMIT_WINDOW_SECONDS", secs(self.rate_limits.window)),
            (
                "RATE_LIMIT_SIGNUP_PER_IP",
                self.rate_limits.signup_per_ip.to_string(),
            ),
            (
                "RATE_LIMIT_LOGIN_PER_IP",
                self.rate_limits.login_per_ip.to_string(),
            ),
            (
                "RATE_LIMIT_REFRESH_PER_IP",
                self.rate_limits.refresh_per_ip.to_string(),
            ),
            (
                "RATE_LIMIT_PASSWORD_CHANGE_PER_IP",
                self.rate_limits.password_change_per_ip.to_string(),
            ),
            (
                "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT",
                self.rate_limits.login_failures_per_account.to_string(),
            ),
            (
                "RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS",
                secs(self.rate_limits.login_max_delay),
            ),
            (
                "TRUSTED_PROXIES",
                self.trusted_proxies
                    .iter()
                    .map(Cidr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "EVENT_RETENTION_DAYS",
                (self.event_retention.as_secs() / 86_400).to_string(),
            ),
        ]
    }

    /// The most connections the pool opens: `DB_POOL_SIZE` kept, plus `DB_MAX_OVERFLOW` more
    /// under load (closed again once idle).
    pub fn db_max_connections(&self) -> usize {
        self.db_pool_size + self.db_max_overflow
    }
}

fn parse_or<T>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: T,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match get(key) {
        None => Ok(default),
        Some(raw) => parse(&raw).with_context(|| format!("{key}: invalid value '{raw}'")),
    }
}

fn from_str<T: FromStr>(raw: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(raw.parse::<T>()?)
}

fn parse_bool(raw: &str) -> anyhow::Result<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(anyhow!("expected true or false")),
    }
}

fn seconds(key: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 3600.0) {
        bail!("{key} must be a number of seconds between 0 and 3600, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn parse_cors(raw: Option<String>) -> anyhow::Result<CorsOrigins> {
    let Some(raw) = raw else {
        return Ok(CorsOrigins::List(Vec::new()));
    };
    if raw == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let origin = origin.trim_end_matches('/');
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.contains(char::is_whitespace);
        if !valid {
            bail!("CORS_ORIGINS: '{origin}' is not an origin like https://app.example.com");
        }
        origins.push(origin.to_owned());
    }
    Ok(CorsOrigins::List(origins))
}

/// Words that mark a secret copied from documentation rather than generated.
const PLACEHOLDERS: &[&str] = &["change", "placeholder", "example", "your-secret", "replace"];

fn jwt_secret(
    raw: Option<String>,
    env: Environment,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Secret, bool)> {
    let problem = match &raw {
        None => Some("is not set"),
        Some(s)
            if PLACEHOLDERS
                .iter()
                .any(|p| s.to_ascii_lowercase().contains(p)) =>
        {
            Some("is a placeholder")
        }
        Some(s) if s.len() < MIN_SECRET_BYTES => Some("is shorter than 32 bytes"),
        Some(_) => None,
    };
    match (raw, problem) {
        (Some(s), None) => Ok((Secret(s), false)),
        (_, Some(problem)) if env == Environment::Production => bail!(
            "JWT_SECRET_KEY {problem}; in production it must be a random value of at least \
             {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`)"
        ),
        (Some(s), Some(problem)) => {
            warnings.push(format!(
                "JWT_SECRET_KEY {problem}; accepted only because APP_ENV=development"
            ));
            Ok((Secret(s), false))
        }
        (None, _) => {
            use base64::Engine as _;
            use rand::RngCore as _;
            let mut bytes = [0u8; 48];
            rand::rng().fill_bytes(&mut bytes);
            let secret = base64::engine::general_purpose::STANDARD.encode(bytes);
            Ok((Secret(secret), true))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_configuration_at_all_gives_development_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.port, 8000);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.access_token_ttl, Duration::from_secs(30 * 60));
        assert_eq!(c.bcrypt_cost, 12);
        assert_eq!(c.refresh_token_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.refresh_reuse_grace, Duration::from_secs(10));
        assert_eq!((c.db_pool_size, c.db_max_overflow), (20, 10));
        assert_eq!(c.db_pool_timeout, Duration::from_secs(5));
        assert_eq!(c.db_startup_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.rate_limits.window, Duration::from_secs(60));
        assert_eq!(c.rate_limits.login_per_ip, 60);
        assert_eq!(c.rate_limits.login_failures_per_account, 5);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.event_retention, Duration::from_secs(90 * 24 * 3600));
        assert!(c.jwt_secret_generated);
        assert!(c.jwt_secret.expose().len() >= MIN_SECRET_BYTES);
        assert!(c.database_url.is_none());
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = config(&[("PORT", "eighty")]).unwrap_err();
        assert!(format!("{err:#}").contains("PORT"), "{err:#}");
        let err = config(&[("BCRYPT_ROUNDS", "40")]).unwrap_err();
        assert!(format!("{err:#}").contains("BCRYPT_ROUNDS"), "{err:#}");
        let err = config(&[("CORS_ORIGINS", "not an origin")]).unwrap_err();
        assert!(format!("{err:#}").contains("CORS_ORIGINS"), "{err:#}");
        let err = config(&[("JWT_ALGORITHM", "none")]).unwrap_err();
        assert!(format!("{err:#}").contains("JWT_ALGORITHM"), "{err:#}");
        let err = config(&[("MAX_CONNECTIONS", "0")]).unwrap_err();
        assert!(format!("{err:#}").contains("MAX_CONNECTIONS"), "{err:#}");
        for (var, bad) in [
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.internal"),
            ("RATE_LIMIT_LOGIN_PER_IP", "-1"),
            ("RATE_LIMIT_WINDOW_SECONDS", "0"),
            ("EVENT_RETENTION_DAYS", "0"),
        ] {
            let err = config(&[(var, bad)]).unwrap_err();
            assert!(format!("{err:#}").contains(var), "{err:#}");
        }
        let err = config(&[("DB_STARTUP_TIMEOUT_SECONDS", "-1")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("DB_STARTUP_TIMEOUT_SECONDS"),
            "{err:#}"
        );
    }

    #[test]
    fn production_refuses_missing_placeholder_or_short_secrets() {
        let prod = ("APP_ENV", "production");
        for secret in [
            None,
            Some("change-me-to-a-long-random-value-please!!"),
            Some("short"),
        ] {
            let mut vars = vec![prod];
            if let Some(s) = secret {
                vars.push(("JWT_SECRET_KEY", s));
            }
            let err = config(&vars).unwrap_err();
            assert!(format!("{err:#}").contains("JWT_SECRET_KEY"), "{err:#}");
        }
        let ok = config(&[prod, ("JWT_SECRET_KEY", "k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA")]).unwrap();
        assert!(!ok.jwt_secret_generated);
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = config(&[
            ("JWT_SECRET_KEY", "k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA"),
            ("DATABASE_URL", "postgres://u:hunter2@db/app"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("k3H9x2"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn trusted_proxies_are_cidr_blocks_matching_both_address_spellings() {
        let c = config(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1, fd00::/8")]).unwrap();
        let trusted = |ip: &str| {
            c.trusted_proxies
                .iter()
                .any(|b| b.contains(ip.parse().unwrap()))
        };
        assert!(trusted("10.200.3.4"));
        assert!(trusted("::ffff:10.1.2.3"));
        assert!(trusted("127.0.0.1"));
        assert!(!trusted("127.0.0.2"));
        assert!(trusted("fd12::1"));
        assert!(!trusted("11.0.0.1"));
        assert!(!trusted("2001:db8::1"));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn the_effective_configuration_redacts_both_secrets() {
        let c = config(&[
            ("JWT_SECRET_KEY", "k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA"),
            (
                "DATABASE_URL",
                "postgres://app:hunter2@db.internal:5433/jobs",
            ),
        ])
        .unwrap();
        let shown: Vec<String> = c
            .effective()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let shown = shown.join("\n");
        assert!(!shown.contains("k3H9x2"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("DATABASE_URL=postgres://app:<redacted>@db.internal:5433/jobs"),
            "{shown}"
        );
        assert!(shown.contains("JWT_SECRET_KEY=<set, redacted>"), "{shown}");
        assert!(shown.contains("METRICS_PORT=9100"), "{shown}");
    }

    #[test]
    fn a_database_url_that_does_not_parse_is_refused_without_echoing_it() {
        let err = config(&[("DATABASE_URL", "postgres://app:hunter2@db:notaport/x")]).unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("DATABASE_URL"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_metrics_port_must_not_be_the_api_port_unless_metrics_are_public() {
        let err = config(&[("PORT", "9100")]).unwrap_err();
        assert!(format!("{err:#}").contains("METRICS_PORT"), "{err:#}");
        let c = config(&[("PORT", "9100"), ("METRICS_PUBLIC", "true")]).unwrap();
        assert!(c.metrics_public);
    }

    #[test]
    fn cors_origins_parse_as_a_list_or_any() {
        let c = config(&[(
            "CORS_ORIGINS",
            "http://localhost:3000, https://app.example.com/",
        )])
        .unwrap();
        assert!(c.cors_origins.allows("https://app.example.com"));
        assert!(!c.cors_origins.allows("https://evil.example.com"));
        assert_eq!(
            config(&[("CORS_ORIGINS", "*")]).unwrap().cors_origins,
            CorsOrigins::Any
        );
    }
}
