//! Configuration: environment variables (plus a `.env` file, read by `main`) → typed [`Config`].
//!
//! Every variable has a default that works on a developer's machine, so the server starts with
//! no configuration at all. A value that does not parse, or lies outside its range, is a
//! start-up error naming the variable.
//!
//! Production (`APP_ENV=production`) is stricter, so that a development default can never
//! reach a deployment unnoticed: the JWT secret must be set, at least 32 bytes, and not a
//! placeholder (in development a missing one is replaced by a random secret with a loud
//! warning), and so must the password pepper, which must differ from it (development
//! falls back to a public one); `DATABASE_URL` must be set (no zero-configuration fallback); `BCRYPT_ROUNDS` is
//! at least [`MIN_PRODUCTION_BCRYPT_COST`]; the documentation pages are off unless
//! `DOCS_ENABLED=true`; and no `.env` file is read ([`dotenv`]).
//!
//! [`VARIABLES`] is the one list of the variables read here; a test holds it equal to what
//! `check-config` prints, to `.env.example` and to the table of `docs/configuration.md`.
//!
//! - [`read`]: reading one variable — parsed, range-checked, errors naming it.
//! - [`database_url`]: `DATABASE_URL`, parsed once into a [`DatabaseUrl`] that hides its
//!   password.
//! - [`secret`]: [`Secret`] (never in `Debug`) and the JWT key's rules.
//! - [`network`]: CORS origins and trusted proxies.
//! - [`dotenv`]: the `.env` file of development.
//! - [`mail`]: the mailer, `SMTP_URL` (password hidden), links, emailed secrets' lifetimes.
//! - [`webauthn`]: the passkeys' relying party (`WEBAUTHN_RP_*`), checked for consistency.

pub mod database_url;
pub mod dotenv;
pub mod mail;
pub mod network;
pub mod read;
pub mod secret;
pub mod webauthn;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};

pub use self::database_url::{DatabaseUrl, describe};
pub use self::mail::{MailConfig, Mailer, SmtpServer, SmtpTls, Verification};
pub use self::network::{Cidr, CorsOrigins, ProxyHeader, canonical};
use self::read::Vars;
pub use self::secret::{MIN_SECRET_BYTES, Secret};
pub use self::webauthn::WebauthnConfig;

/// The lowest bcrypt cost production accepts: each step halves the work of guessing
/// passwords from a stolen hash, and below 10 a hash costs an attacker well under 100 ms.
/// Development keeps 4 and up, so tests stay fast.
pub const MIN_PRODUCTION_BCRYPT_COST: u32 = 10;

/// The conventional port of a Prometheus exporter (node_exporter's), so a scrape config
/// that expects one finds it.
pub const DEFAULT_METRICS_PORT: u16 = 9100;

/// `iss` of access tokens unless `JWT_ISSUER` says otherwise.
pub const DEFAULT_JWT_ISSUER: &str = "jobpath-api";
/// `aud` of access tokens unless `JWT_AUDIENCE` says otherwise.
pub const DEFAULT_JWT_AUDIENCE: &str = "jobpath";

/// `JWT_ISSUER` or `JWT_AUDIENCE`: 1–256 printable ASCII characters, no spaces (a URL or
/// a name), so that it compares exactly and shows plainly in a decoded token.
fn token_name(value: Option<String>, key: &str, default: &str) -> anyhow::Result<String> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if value.is_empty() || value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{key} must be 1-256 printable ASCII characters without spaces, got '{value}'");
    }
    Ok(value)
}

/// Every variable the configuration reads, in the order `check-config` prints them and the
/// documentation lists them.
pub const VARIABLES: &[&str] = &[
    "APP_ENV",
    "APP_NAME",
    "APP_VERSION",
    "DEBUG",
    "HOST",
    "PORT",
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "PGPORT",
    "DB_SSL_ROOT_CERT",
    "DB_MIGRATIONS",
    "DB_POOLER",
    "JWT_SECRET_KEY",
    "JWT_ALGORITHM",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_SECRET_KEY_PREVIOUS",
    "JWT_ACCEPT_HS256_UNTIL",
    "JWKS_MAX_AGE_SECONDS",
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "REFRESH_TOKEN_EXPIRE_DAYS",
    "REFRESH_REUSE_GRACE_SECONDS",
    "SESSIONS_PER_USER_MAX",
    "REFRESH_IDLE_TIMEOUT_DAYS",
    "REAUTH_WINDOW_MINUTES",
    "API_KEYS_REVOKE_ON_PASSWORD_RESET",
    "PASSWORD_PEPPER",
    "MFA_REQUIRED_FOR_ROLES",
    "BCRYPT_ROUNDS",
    "HASH_THREADS",
    "CORS_ORIGINS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_POOL_TIMEOUT_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "HEADER_READ_TIMEOUT_SECONDS",
    "BODY_READ_TIMEOUT_SECONDS",
    "DB_STARTUP_TIMEOUT_SECONDS",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_CLIENT",
    "WRITE_TIMEOUT_SECONDS",
    "RATE_LIMIT_WINDOW_SECONDS",
    "RATE_LIMIT_SIGNUP_PER_IP",
    "RATE_LIMIT_LOGIN_PER_IP",
    "RATE_LIMIT_REFRESH_PER_IP",
    "RATE_LIMIT_PASSWORD_CHANGE_PER_IP",
    "RATE_LIMIT_FORGOT_PER_IP",
    "RATE_LIMIT_RESET_PER_IP",
    "RATE_LIMIT_VERIFY_PER_IP",
    "RATE_LIMIT_RESEND_PER_IP",
    "RATE_LIMIT_INTROSPECT_PER_KEY",
    "RATE_LIMIT_EMAILS_PER_RECIPIENT_PER_HOUR",
    "RATE_LIMIT_IPV6_PREFIX",
    "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT",
    "RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS",
    "RATE_LIMIT_LOGIN_ACCOUNT_CEILING",
    "TRUSTED_PROXIES",
    "TRUSTED_PROXY_HEADER",
    "EVENT_RETENTION_DAYS",
    "ACCOUNT_PURGE_DAYS",
    "MAILER",
    "SMTP_URL",
    "SMTP_FROM",
    "SMTP_TIMEOUT_SECONDS",
    "APP_BASE_URL",
    "PASSWORD_RESET_TTL_MINUTES",
    "EMAIL_VERIFICATION",
    "EMAIL_VERIFICATION_TTL_HOURS",
    "EMAIL_CHANGE_TTL_MINUTES",
    "WEBAUTHN_RP_ID",
    "WEBAUTHN_RP_ORIGINS",
    "WEBAUTHN_RP_NAME",
    "DOCS_ENABLED",
    "METRICS_PUBLIC",
    "METRICS_HOST",
    "METRICS_PORT",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    /// `APP_ENV`: unset is development; `development`/`dev`, `production`/`prod`, any case.
    pub fn parse(raw: Option<&str>) -> anyhow::Result<Environment> {
        match raw.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "development" | "dev") => Ok(Environment::Development),
            Some("production" | "prod") => Ok(Environment::Production),
            Some(v) => bail!("APP_ENV must be 'development' or 'production', got '{v}'"),
        }
    }
}

/// What start-up does about the schema (`DB_MIGRATIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations (the role needs the right to change the schema).
    Apply,
    /// Only check that every migration is applied, and refuse to start otherwise: the
    /// runtime role then needs no DDL rights; `jobpath-server migrate` applies them.
    Verify,
}

/// What is between the pools and PostgreSQL (`DB_POOLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    /// Nothing (or a pooler in session mode): the one hot statement, the token-owner lookup
    /// of `/auth/me`, is a named prepared statement, parsed and planned once per connection.
    None,
    /// A pooler in transaction mode: every statement is unnamed (`db::typed`).
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    pub database_url: Option<DatabaseUrl>,
    /// `DATABASE_DIRECT_URL`: the same database without a pooler in between, for what needs
    /// a session of its own (migrations, the outbox's `LISTEN`). `None`: `DATABASE_URL`.
    pub database_direct_url: Option<DatabaseUrl>,
    /// The port of the machine's own PostgreSQL, which the zero-configuration start probes
    /// (`PGPORT`, the variable psql and libpq read; default 5432). Unused with a
    /// `DATABASE_URL`.
    pub local_postgres_port: u16,
    /// Extra trusted CA certificates (PEM) for TLS to PostgreSQL (`DB_SSL_ROOT_CERT`,
    /// see `db::tls`).
    pub db_ssl_root_cert: Option<std::path::PathBuf>,
    /// Whether `serve` applies pending migrations or only verifies them (`DB_MIGRATIONS`).
    pub db_migrations: Migrations,
    /// `DB_POOLER`: whether a transaction-mode pooler is in between (see [`Pooler`]).
    pub db_pooler: Pooler,
    pub jwt_secret: Secret,
    /// `iss` of every access token, required on verification (`JWT_ISSUER`).
    pub jwt_issuer: String,
    /// `aud` of every access token, required on verification (`JWT_AUDIENCE`).
    pub jwt_audience: String,
    /// True when no secret was configured and a random one was generated for this process.
    pub jwt_secret_generated: bool,
    /// `JWT_ALGORITHM`: `None` for HS256 (the default), or the algorithm of the first
    /// signing key (`auth::signing`), whose active key then signs.
    pub jwt_algorithm: Option<crate::auth::signing::KeyAlgorithm>,
    /// `JWT_SECRET_KEY_PREVIOUS`: the secret being rotated out. HS256 tokens it signed
    /// still verify, and signing keys sealed under it still open (and are sealed again).
    pub jwt_secret_previous: Option<Secret>,
    /// `JWT_ACCEPT_HS256_UNTIL`: with an asymmetric algorithm, kid-less HS256 tokens are
    /// accepted until this moment (the HS256 → ES256 migration); never when unset.
    pub jwt_accept_hs256_until: Option<chrono::DateTime<chrono::Utc>>,
    /// `Cache-Control: max-age` of the JWKS (`JWKS_MAX_AGE_SECONDS`), and so part of the
    /// safety windows of `keys activate` and `keys revoke`.
    pub jwks_max_age: Duration,
    /// The key of the password pre-hash (`auth::hasher`), never derived from the JWT secret.
    pub password_pepper: Secret,
    /// True when `PASSWORD_PEPPER` is unset and development's public pepper is used.
    pub password_pepper_default: bool,
    /// Problems worth a warning at start-up (most accepted only because this is
    /// development); `main` logs them loudly and `check-config` prints them.
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
    /// Whether a password reset revokes the account's API keys
    /// (`API_KEYS_REVOKE_ON_PASSWORD_RESET`, on by default: a reset is account recovery,
    /// and a key someone else made must not outlive it).
    pub api_keys_revoke_on_password_reset: bool,
    /// Roles whose holders must pass a second factor before any other operation
    /// (`MFA_REQUIRED_FOR_ROLES`, comma-separated; none by default).
    pub mfa_required_for_roles: Vec<String>,
    /// Where TOTP checks read the time: the system clock; tests set their own. Not read
    /// from the environment.
    pub mfa_clock: crate::auth::mfa::Clock,
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
    /// How long a client may take to send a request body, once its headers are in, before
    /// it gets a 408 (`BODY_READ_TIMEOUT_SECONDS`).
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones get a 503 and are closed.
    pub max_connections: usize,
    /// Connections served at once to one client address (`MAX_CONNECTIONS_PER_CLIENT`,
    /// see `http::client_slots`); 0 turns the cap off. Trusted proxies are exempt.
    pub max_connections_per_client: usize,
    /// How long a response may make no progress — the client's socket accepting not one
    /// byte — before its connection is closed (`WRITE_TIMEOUT_SECONDS`, see
    /// `http::write_deadline`).
    pub write_timeout: Duration,
    /// Rate limits and the per-account login throttle (`RATE_LIMIT_*`).
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<Cidr>,
    /// The one header the trusted proxies write the client's address to
    /// (`TRUSTED_PROXY_HEADER`); the other is ignored.
    pub trusted_proxy_header: ProxyHeader,
    /// How long security events are kept (`EVENT_RETENTION_DAYS`).
    pub event_retention: Duration,
    /// How long after its deletion a deleted account's row is purged
    /// (`ACCOUNT_PURGE_DAYS`; zero: at the next maintenance pass, `db::accounts::purge`).
    pub account_purge: Duration,
    /// The mailer, links and emailed secrets (`MAILER`, `SMTP_*`, `APP_BASE_URL`, …).
    pub mail: MailConfig,
    /// The passkeys' relying party (`WEBAUTHN_RP_ID`, `WEBAUTHN_RP_ORIGINS`,
    /// `WEBAUTHN_RP_NAME`).
    pub webauthn: WebauthnConfig,
    /// Serve Swagger UI (`/docs`), ReDoc (`/redoc`) and their assets (`DOCS_ENABLED`; on in
    /// development, off in production). The spec itself (`/openapi.json`, `.yaml`) is
    /// always served: it is part of the API.
    pub docs_enabled: bool,
    /// Serve `/metrics` on the public port too. Off by default: the numbers describe the
    /// service's load and should reach the operator's Prometheus, not every client.
    pub metrics_public: bool,
    /// The address of the separate metrics listener (`METRICS_HOST`, loopback by default:
    /// a scraper on the same host or a sidecar reaches it, the network does not).
    pub metrics_host: IpAddr,
    /// The port of the separate metrics listener, used unless `metrics_public`.
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
    /// `forgot_password`, `reset_password` (and `check_password_reset`), `verify_email`,
    /// `resend_verification`.
    pub forgot_per_ip: u32,
    pub reset_per_ip: u32,
    pub verify_per_ip: u32,
    pub resend_per_ip: u32,
    /// `introspect_token` calls per calling API key (not per IP: services call it from a
    /// few addresses, and each key is one caller).
    pub introspect_per_key: u32,
    /// Failed logins for one account (normalised email) before each further one imposes a
    /// delay, doubling from one second.
    pub login_failures_per_account: u32,
    /// The longest delay the login throttle imposes on an account.
    pub login_max_delay: Duration,
    /// Leading bits of an IPv6 address that make one client for the per-IP limits and the
    /// login throttle: one subscriber gets a whole /64 (or more) to rotate through.
    pub ipv6_prefix: u8,
    /// Failed attempts at one account from all client networks together before each
    /// further one blocks the account (except for known devices); 0 turns it off.
    pub login_account_ceiling: u32,
}

const MINUTE: u64 = 60;
const DAY: u64 = 24 * 3600;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `lookup`, so tests can supply a map instead of the
    /// process environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let vars = Vars::new(lookup);

        let environment = Environment::parse(vars.get("APP_ENV").as_deref())?;
        let production = environment == Environment::Production;
        let debug = vars.flag("DEBUG", false)?;

        let jwt_algorithm = match vars.get("JWT_ALGORITHM") {
            None => None,
            Some(alg) if alg.eq_ignore_ascii_case("HS256") => None,
            Some(alg) if alg.eq_ignore_ascii_case("ES256") => {
                Some(crate::auth::signing::KeyAlgorithm::Es256)
            }
            Some(alg) if alg.eq_ignore_ascii_case("EdDSA") => {
                Some(crate::auth::signing::KeyAlgorithm::EdDsa)
            }
            Some(other) => {
                bail!("JWT_ALGORITHM: one of HS256, ES256 or EdDSA, got '{other}'")
            }
        };
        let jwt_issuer = token_name(vars.get("JWT_ISSUER"), "JWT_ISSUER", DEFAULT_JWT_ISSUER)?;
        let jwt_audience = token_name(
            vars.get("JWT_AUDIENCE"),
            "JWT_AUDIENCE",
            DEFAULT_JWT_AUDIENCE,
        )?;
        let mut warnings = Vec::new();
        let (jwt_secret, jwt_secret_generated) =
            secret::jwt_secret(vars.get("JWT_SECRET_KEY"), environment, &mut warnings)?;
        if jwt_algorithm.is_some() && jwt_secret_generated {
            bail!(
                "JWT_ALGORITHM={}: set JWT_SECRET_KEY too; the signing keys are sealed with a \
                 key derived from it, and a random secret per process could not open them again",
                vars.get("JWT_ALGORITHM").unwrap_or_default()
            );
        }
        let jwt_secret_previous = secret::previous_secret(
            vars.get("JWT_SECRET_KEY_PREVIOUS"),
            environment,
            &mut warnings,
        )?;
        if jwt_secret_previous
            .as_ref()
            .is_some_and(|p| p.expose() == jwt_secret.expose())
        {
            bail!(
                "JWT_SECRET_KEY_PREVIOUS: the same as JWT_SECRET_KEY; unset it or give the old one"
            );
        }
        let jwt_accept_hs256_until = vars
            .get("JWT_ACCEPT_HS256_UNTIL")
            .map(|raw| {
                chrono::DateTime::parse_from_rfc3339(&raw)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "JWT_ACCEPT_HS256_UNTIL: an RFC 3339 time such as \
                             2026-12-01T12:00:00Z, got '{raw}'"
                        )
                    })
            })
            .transpose()?;
        if jwt_accept_hs256_until.is_some() && jwt_algorithm.is_none() {
            warnings.push(
                "JWT_ACCEPT_HS256_UNTIL is set but JWT_ALGORITHM is HS256: HS256 tokens are \
                 accepted anyway"
                    .to_owned(),
            );
        }
        let (password_pepper, password_pepper_default) = secret::password_pepper(
            vars.get("PASSWORD_PEPPER"),
            environment,
            &jwt_secret,
            &mut warnings,
        )?;

        let database_url = vars
            .get("DATABASE_URL")
            .map(|raw| raw.parse::<DatabaseUrl>())
            .transpose()?;
        let database_direct_url = vars
            .get("DATABASE_DIRECT_URL")
            .map(|raw| DatabaseUrl::parse_var("DATABASE_DIRECT_URL", &raw))
            .transpose()?;
        if database_direct_url.is_some() && database_url.is_none() {
            bail!(
                "DATABASE_DIRECT_URL is set but DATABASE_URL is not; the direct URL is the \
                 pooled database's own, without the pooler (see docs/scaling.md)"
            );
        }
        if production && database_url.is_none() {
            // The fallback creates databases and starts clusters on the local machine: a
            // deployment that forgot its URL must stop, not quietly use something else.
            bail!(
                "DATABASE_URL is not set; in production it is required (the local \
                 zero-configuration database is for development only)"
            );
        }
        let bcrypt_cost = vars.range("BCRYPT_ROUNDS", 12, 4..=31)?;
        if production && bcrypt_cost < MIN_PRODUCTION_BCRYPT_COST {
            bail!(
                "BCRYPT_ROUNDS must be at least {MIN_PRODUCTION_BCRYPT_COST} in production, \
                 got {bcrypt_cost}"
            );
        }
        let db_migrations = match vars
            .get("DB_MIGRATIONS")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => Migrations::Apply,
            Some(v) if v == "apply" => Migrations::Apply,
            Some(v) if v == "verify" => Migrations::Verify,
            Some(v) => bail!("DB_MIGRATIONS must be 'apply' or 'verify', got '{v}'"),
        };
        let db_pooler = match vars
            .get("DB_POOLER")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => Pooler::None,
            Some(v) if v == "none" => Pooler::None,
            Some(v) if v == "transaction" => Pooler::Transaction,
            Some(v) => bail!("DB_POOLER must be 'none' or 'transaction', got '{v}'"),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let port: u16 = vars.parse("PORT", 8000)?;
        let metrics_public = vars.flag("METRICS_PUBLIC", false)?;
        let metrics_port: u16 = vars.parse("METRICS_PORT", DEFAULT_METRICS_PORT)?;
        if !metrics_public && metrics_port == port && port != 0 {
            bail!("METRICS_PORT must differ from PORT ({port}), or set METRICS_PUBLIC=true");
        }
        let trusted_proxies = match vars.get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::parse::<Cidr>)
                .collect::<anyhow::Result<Vec<_>>>()
                .context("TRUSTED_PROXIES")?,
        };
        let max_connections = vars.range("MAX_CONNECTIONS", 1024, 1..=1_000_000)?;
        let rate_limits = RateLimits {
            window: Duration::from_secs(vars.range("RATE_LIMIT_WINDOW_SECONDS", 60, 1..=DAY)?),
            signup_per_ip: vars.parse("RATE_LIMIT_SIGNUP_PER_IP", 20)?,
            login_per_ip: vars.parse("RATE_LIMIT_LOGIN_PER_IP", 60)?,
            refresh_per_ip: vars.parse("RATE_LIMIT_REFRESH_PER_IP", 120)?,
            password_change_per_ip: vars.parse("RATE_LIMIT_PASSWORD_CHANGE_PER_IP", 20)?,
            forgot_per_ip: vars.parse("RATE_LIMIT_FORGOT_PER_IP", 10)?,
            reset_per_ip: vars.parse("RATE_LIMIT_RESET_PER_IP", 20)?,
            verify_per_ip: vars.parse("RATE_LIMIT_VERIFY_PER_IP", 20)?,
            resend_per_ip: vars.parse("RATE_LIMIT_RESEND_PER_IP", 10)?,
            introspect_per_key: vars.parse("RATE_LIMIT_INTROSPECT_PER_KEY", 600)?,
            login_failures_per_account: vars.parse("RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT", 5)?,
            login_max_delay: Duration::from_secs(vars.range(
                "RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS",
                900,
                1..=DAY,
            )?),
            ipv6_prefix: vars.range("RATE_LIMIT_IPV6_PREFIX", 64, 16..=128)?,
            login_account_ceiling: vars.parse("RATE_LIMIT_LOGIN_ACCOUNT_CEILING", 100)?,
        };
        let mail = read_mail(&vars, production, port)?;
        let app_name = vars
            .get("APP_NAME")
            .unwrap_or_else(|| "JobPath API".to_owned());
        let webauthn = webauthn::read(
            vars.get("WEBAUTHN_RP_ID"),
            vars.get("WEBAUTHN_RP_ORIGINS"),
            vars.get("WEBAUTHN_RP_NAME"),
            &mail.app_base_url,
            &app_name,
        )?;

        Ok(Config {
            mail,
            webauthn,
            app_name,
            app_version: vars
                .get("APP_VERSION")
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            environment,
            debug,
            host: vars.parse("HOST", IpAddr::from([0, 0, 0, 0]))?,
            port,
            database_url,
            database_direct_url,
            local_postgres_port: vars.parse("PGPORT", 5432)?,
            db_ssl_root_cert: vars.get("DB_SSL_ROOT_CERT").map(std::path::PathBuf::from),
            db_migrations,
            db_pooler,
            jwt_secret,
            jwt_issuer,
            jwt_audience,
            jwt_secret_generated,
            jwt_algorithm,
            jwt_secret_previous,
            jwt_accept_hs256_until,
            jwks_max_age: Duration::from_secs(vars.range(
                "JWKS_MAX_AGE_SECONDS",
                300,
                1..=86_400,
            )?),
            password_pepper,
            password_pepper_default,
            warnings,
            access_token_ttl: Duration::from_secs(
                MINUTE * vars.range("ACCESS_TOKEN_EXPIRE_MINUTES", 30, 1..=DAY / MINUTE)?,
            ),
            refresh_token_ttl: Duration::from_secs(
                DAY * vars.range("REFRESH_TOKEN_EXPIRE_DAYS", 30, 1..=365)?,
            ),
            refresh_reuse_grace: Duration::from_secs(vars.range(
                "REFRESH_REUSE_GRACE_SECONDS",
                10,
                0..=300,
            )?),
            sessions_per_user_max: vars.range("SESSIONS_PER_USER_MAX", 50, 1..=1000)?,
            refresh_idle_timeout: Duration::from_secs(
                DAY * vars.range("REFRESH_IDLE_TIMEOUT_DAYS", 14, 0..=365)?,
            ),
            reauth_window: Duration::from_secs(
                MINUTE * vars.range("REAUTH_WINDOW_MINUTES", 10, 1..=DAY / MINUTE)?,
            ),
            api_keys_revoke_on_password_reset: vars
                .flag("API_KEYS_REVOKE_ON_PASSWORD_RESET", true)?,
            mfa_required_for_roles: vars.parse_with(
                "MFA_REQUIRED_FOR_ROLES",
                Vec::new(),
                parse_roles,
            )?,
            mfa_clock: crate::auth::mfa::Clock::default(),
            bcrypt_cost,
            hash_threads: vars.range("HASH_THREADS", cores, 1..)?,
            cors_origins: CorsOrigins::parse(vars.get("CORS_ORIGINS"))?,
            log_level: vars
                .get("LOG_LEVEL")
                .unwrap_or_else(|| if debug { "debug" } else { "info" }.to_owned()),
            log_format: match vars
                .get("LOG_FORMAT")
                .as_deref()
                .map(str::to_ascii_lowercase)
            {
                None => LogFormat::Text,
                Some(v) if v == "text" => LogFormat::Text,
                Some(v) if v == "json" => LogFormat::Json,
                Some(v) => bail!("LOG_FORMAT must be 'text' or 'json', got '{v}'"),
            },
            db_pool_size: vars.range("DB_POOL_SIZE", 20, 1..)?,
            db_max_overflow: vars.parse("DB_MAX_OVERFLOW", 10)?,
            db_pool_timeout: vars.seconds("DB_POOL_TIMEOUT_SECONDS", 5.0)?,
            // Generous by default: an orchestrator may start the database and the server
            // together, and a first-time database initialisation takes a while.
            db_startup_timeout: Duration::from_secs(vars.range(
                "DB_STARTUP_TIMEOUT_SECONDS",
                60,
                0..=3600,
            )?),
            shutdown_grace: vars.seconds("SHUTDOWN_GRACE_SECONDS", 30.0)?,
            header_read_timeout: vars.seconds("HEADER_READ_TIMEOUT_SECONDS", 10.0)?,
            // As long as the headers get: 64 KiB in 10 s is a very slow client still.
            body_read_timeout: vars.seconds("BODY_READ_TIMEOUT_SECONDS", 10.0)?,
            max_connections,
            // A quarter of the server by default: one address cannot take it all, and it
            // takes four to fill it, while a browser's handful of connections, or a load
            // test's 64, are far below.
            max_connections_per_client: vars.range(
                "MAX_CONNECTIONS_PER_CLIENT",
                (max_connections / 4).max(1),
                0..=1_000_000,
            )?,
            // Long enough for a slow mobile link to take a window of data, short enough
            // that a client that stopped reading gives its slot back soon.
            write_timeout: vars.seconds("WRITE_TIMEOUT_SECONDS", 30.0)?,
            rate_limits,
            trusted_proxies,
            trusted_proxy_header: vars.parse_with(
                "TRUSTED_PROXY_HEADER",
                ProxyHeader::XForwardedFor,
                ProxyHeader::parse,
            )?,
            event_retention: Duration::from_secs(
                DAY * vars.range("EVENT_RETENTION_DAYS", 90, 1..=3650)?,
            ),
            account_purge: Duration::from_secs(
                DAY * vars.range("ACCOUNT_PURGE_DAYS", 30, 0..=3650)?,
            ),
            docs_enabled: vars.flag("DOCS_ENABLED", !production)?,
            metrics_public,
            metrics_host: vars.parse("METRICS_HOST", IpAddr::from([127, 0, 0, 1]))?,
            metrics_port,
        })
    }

    /// Every setting as `(variable, effective value)`, in the order of [`VARIABLES`], for
    /// `jobpath-server check-config`. Secrets are redacted: the JWT secret is never shown,
    /// and neither is the database password (the rest of the URL is).
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| format!("{}", d.as_secs_f64());
        let days = |d: Duration| (d.as_secs() / DAY).to_string();
        let jwt = if self.jwt_secret_generated {
            "<unset: a random secret for each process>".to_owned()
        } else {
            "<set, redacted>".to_owned()
        };
        let database = match &self.database_url {
            Some(url) => url.to_string(),
            None => "<unset: the local PostgreSQL, see docs/configuration.md>".to_owned(),
        };
        let limits = &self.rate_limits;
        vec![
            ("APP_ENV", format!("{:?}", self.environment).to_lowercase()),
            ("APP_NAME", self.app_name.clone()),
            ("APP_VERSION", self.app_version.clone()),
            ("DEBUG", self.debug.to_string()),
            ("HOST", self.host.to_string()),
            ("PORT", self.port.to_string()),
            ("DATABASE_URL", database),
            (
                "DATABASE_DIRECT_URL",
                match &self.database_direct_url {
                    Some(url) => url.to_string(),
                    None => "<unset: DATABASE_URL>".to_owned(),
                },
            ),
            ("PGPORT", self.local_postgres_port.to_string()),
            (
                "DB_SSL_ROOT_CERT",
                self.db_ssl_root_cert
                    .as_ref()
                    .map_or_else(|| "<unset>".to_owned(), |p| p.display().to_string()),
            ),
            (
                "DB_MIGRATIONS",
                format!("{:?}", self.db_migrations).to_lowercase(),
            ),
            ("DB_POOLER", format!("{:?}", self.db_pooler).to_lowercase()),
            ("JWT_SECRET_KEY", jwt),
            (
                "JWT_ALGORITHM",
                self.jwt_algorithm
                    .map_or("HS256", |a| a.as_str())
                    .to_owned(),
            ),
            ("JWT_ISSUER", self.jwt_issuer.clone()),
            ("JWT_AUDIENCE", self.jwt_audience.clone()),
            (
                "JWT_SECRET_KEY_PREVIOUS",
                match self.jwt_secret_previous {
                    Some(_) => "<set, redacted>".to_owned(),
                    None => "<unset>".to_owned(),
                },
            ),
            (
                "JWT_ACCEPT_HS256_UNTIL",
                match self.jwt_accept_hs256_until {
                    Some(t) => t.to_rfc3339(),
                    None => "<unset>".to_owned(),
                },
            ),
            (
                "JWKS_MAX_AGE_SECONDS",
                self.jwks_max_age.as_secs().to_string(),
            ),
            (
                "ACCESS_TOKEN_EXPIRE_MINUTES",
                (self.access_token_ttl.as_secs() / MINUTE).to_string(),
            ),
            ("REFRESH_TOKEN_EXPIRE_DAYS", days(self.refresh_token_ttl)),
            (
                "REFRESH_REUSE_GRACE_SECONDS",
                secs(self.refresh_reuse_grace),
            ),
            (
                "SESSIONS_PER_USER_MAX",
                self.sessions_per_user_max.to_string(),
            ),
            ("REFRESH_IDLE_TIMEOUT_DAYS", days(self.refresh_idle_timeout)),
            (
                "REAUTH_WINDOW_MINUTES",
                (self.reauth_window.as_secs() / MINUTE).to_string(),
            ),
            (
                "API_KEYS_REVOKE_ON_PASSWORD_RESET",
                self.api_keys_revoke_on_password_reset.to_string(),
            ),
            (
                "PASSWORD_PEPPER",
                match self.password_pepper_default {
                    true => "<unset: development's public pepper>".to_owned(),
                    false => "<set, redacted>".to_owned(),
                },
            ),
            (
                "MFA_REQUIRED_FOR_ROLES",
                self.mfa_required_for_roles.join(","),
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
            ("BODY_READ_TIMEOUT_SECONDS", secs(self.body_read_timeout)),
            ("DB_STARTUP_TIMEOUT_SECONDS", secs(self.db_startup_timeout)),
            ("MAX_CONNECTIONS", self.max_connections.to_string()),
            (
                "MAX_CONNECTIONS_PER_CLIENT",
                self.max_connections_per_client.to_string(),
            ),
            ("WRITE_TIMEOUT_SECONDS", secs(self.write_timeout)),
            ("RATE_LIMIT_WINDOW_SECONDS", secs(limits.window)),
            ("RATE_LIMIT_SIGNUP_PER_IP", limits.signup_per_ip.to_string()),
            ("RATE_LIMIT_LOGIN_PER_IP", limits.login_per_ip.to_string()),
            (
                "RATE_LIMIT_REFRESH_PER_IP",
                limits.refresh_per_ip.to_string(),
            ),
            (
                "RATE_LIMIT_PASSWORD_CHANGE_PER_IP",
                limits.password_change_per_ip.to_string(),
            ),
            ("RATE_LIMIT_FORGOT_PER_IP", limits.forgot_per_ip.to_string()),
            ("RATE_LIMIT_RESET_PER_IP", limits.reset_per_ip.to_string()),
            ("RATE_LIMIT_VERIFY_PER_IP", limits.verify_per_ip.to_string()),
            ("RATE_LIMIT_RESEND_PER_IP", limits.resend_per_ip.to_string()),
            (
                "RATE_LIMIT_INTROSPECT_PER_KEY",
                limits.introspect_per_key.to_string(),
            ),
            (
                "RATE_LIMIT_EMAILS_PER_RECIPIENT_PER_HOUR",
                self.mail.per_recipient_per_hour.to_string(),
            ),
            (
                "RATE_LIMIT_IPV6_PREFIX",
                self.rate_limits.ipv6_prefix.to_string(),
            ),
            (
                "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT",
                limits.login_failures_per_account.to_string(),
            ),
            (
                "RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS",
                secs(limits.login_max_delay),
            ),
            (
                "RATE_LIMIT_LOGIN_ACCOUNT_CEILING",
                self.rate_limits.login_account_ceiling.to_string(),
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
                "TRUSTED_PROXY_HEADER",
                self.trusted_proxy_header.name().to_owned(),
            ),
            ("EVENT_RETENTION_DAYS", days(self.event_retention)),
            ("ACCOUNT_PURGE_DAYS", days(self.account_purge)),
            (
                "MAILER",
                match self.mail.mailer {
                    Mailer::Smtp(_) => "smtp".to_owned(),
                    Mailer::Log => "log".to_owned(),
                },
            ),
            (
                "SMTP_URL",
                match &self.mail.mailer {
                    Mailer::Smtp(server) => server.redacted(),
                    Mailer::Log => "<unset>".to_owned(),
                },
            ),
            ("SMTP_FROM", self.mail.from.clone()),
            ("SMTP_TIMEOUT_SECONDS", secs(self.mail.smtp_timeout)),
            (
                "APP_BASE_URL",
                match self.mail.app_base_url_default {
                    true => format!("{} (this server's own pages)", self.mail.app_base_url),
                    false => self.mail.app_base_url.clone(),
                },
            ),
            (
                "PASSWORD_RESET_TTL_MINUTES",
                (self.mail.password_reset_ttl.as_secs() / MINUTE).to_string(),
            ),
            (
                "EMAIL_VERIFICATION",
                self.mail.verification.name().to_owned(),
            ),
            (
                "EMAIL_VERIFICATION_TTL_HOURS",
                (self.mail.verification_ttl.as_secs() / 3600).to_string(),
            ),
            (
                "EMAIL_CHANGE_TTL_MINUTES",
                (self.mail.email_change_ttl.as_secs() / MINUTE).to_string(),
            ),
            (
                "WEBAUTHN_RP_ID",
                match self.webauthn.defaulted {
                    true => format!("{} (from APP_BASE_URL)", self.webauthn.rp_id),
                    false => self.webauthn.rp_id.clone(),
                },
            ),
            (
                "WEBAUTHN_RP_ORIGINS",
                match self.webauthn.any_port {
                    true => "http://localhost (any port)".to_owned(),
                    false => self
                        .webauthn
                        .origins
                        .iter()
                        .map(|o| o.origin().ascii_serialization())
                        .collect::<Vec<_>>()
                        .join(","),
                },
            ),
            ("WEBAUTHN_RP_NAME", self.webauthn.rp_name.clone()),
            ("DOCS_ENABLED", self.docs_enabled.to_string()),
            ("METRICS_PUBLIC", self.metrics_public.to_string()),
            ("METRICS_HOST", self.metrics_host.to_string()),
            ("METRICS_PORT", self.metrics_port.to_string()),
        ]
    }

    /// The most connections the pool opens: `DB_POOL_SIZE` kept, plus `DB_MAX_OVERFLOW` more
    /// under load (closed again once idle).
    pub fn db_max_connections(&self) -> usize {
        self.db_pool_size + self.db_max_overflow
    }
}

/// The email settings; see [`mail`]. `port` is the public port, which the built-in pages'
/// default address names.
fn read_mail<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    production: bool,
    port: u16,
) -> anyhow::Result<MailConfig> {
    let smtp = vars
        .get("SMTP_URL")
        .map(|raw| SmtpServer::parse(&raw))
        .transpose()?;
    let mailer = match (vars.get("MAILER").map(|m| m.to_ascii_lowercase()), smtp) {
        (Some(m), _) if m == "log" && production => bail!(
            "MAILER=log in production: no email would ever be sent; set MAILER=smtp and SMTP_URL"
        ),
        (Some(m), _) if m == "log" => Mailer::Log,
        (Some(m), Some(server)) if m == "smtp" => Mailer::Smtp(server),
        (None, Some(server)) => Mailer::Smtp(server),
        (Some(m), None) if m == "smtp" => bail!("MAILER=smtp needs SMTP_URL"),
        (None, None) if production => bail!(
            "SMTP_URL is not set; in production it is required (password reset and              verification emails must be delivered)"
        ),
        (None, None) => Mailer::Log,
        (Some(other), _) => bail!("MAILER must be 'smtp' or 'log', got '{other}'"),
    };
    let (app_base_url, app_base_url_default) = match vars.get("APP_BASE_URL") {
        Some(raw) => (mail::base_url(&raw).context("APP_BASE_URL")?, false),
        None if production => bail!(
            "APP_BASE_URL is not set; in production it is required (the address of the pages              emailed links open, e.g. https://app.example.com, or this server's own              https://api.example.com/account)"
        ),
        None => (format!("http://localhost:{port}/account"), true),
    };
    let from = match vars.get("SMTP_FROM") {
        Some(raw) => mail::from_address(&raw).context("SMTP_FROM")?,
        None => "JobPath <no-reply@localhost>".to_owned(),
    };
    Ok(MailConfig {
        mailer,
        from,
        smtp_timeout: vars.seconds("SMTP_TIMEOUT_SECONDS", 10.0)?,
        app_base_url,
        app_base_url_default,
        password_reset_ttl: Duration::from_secs(
            MINUTE * vars.range("PASSWORD_RESET_TTL_MINUTES", 30, 1..=DAY / MINUTE)?,
        ),
        verification: vars.parse_with("EMAIL_VERIFICATION", Verification::Soft, |raw| {
            Verification::parse(raw)
        })?,
        verification_ttl: Duration::from_secs(
            3600 * vars.range("EMAIL_VERIFICATION_TTL_HOURS", 24, 1..=24 * 30)?,
        ),
        per_recipient_per_hour: vars.parse("RATE_LIMIT_EMAILS_PER_RECIPIENT_PER_HOUR", 5)?,
        email_change_ttl: Duration::from_secs(
            MINUTE * vars.range("EMAIL_CHANGE_TTL_MINUTES", 60, 1..=DAY / MINUTE)?,
        ),
    })
}

/// `MFA_REQUIRED_FOR_ROLES`: role names (as the admin API accepts them), comma-separated.
fn parse_roles(raw: &str) -> anyhow::Result<Vec<String>> {
    let mut roles: Vec<String> = Vec::new();
    for role in raw.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let valid = role.len() <= 32
            && role.starts_with(|c: char| c.is_ascii_lowercase())
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        anyhow::ensure!(valid, "'{role}' is not a role name (a-z, 0-9, _; 1 to 32)");
        if !roles.iter().any(|r| r == role) {
            roles.push(role.to_owned());
        }
    }
    Ok(roles)
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
        assert_eq!(c.max_connections_per_client, 256);
        assert_eq!(c.write_timeout, Duration::from_secs(30));
        assert_eq!(c.rate_limits.window, Duration::from_secs(60));
        assert_eq!(c.rate_limits.login_per_ip, 60);
        assert_eq!(c.rate_limits.login_failures_per_account, 5);
        assert_eq!(c.rate_limits.ipv6_prefix, 64);
        assert_eq!(c.rate_limits.login_account_ceiling, 100);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.trusted_proxy_header, ProxyHeader::XForwardedFor);
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
        for (var, bad) in [("JWT_ISSUER", "two words"), ("JWT_AUDIENCE", "caf\u{e9}")] {
            let err = config(&[(var, bad)]).unwrap_err();
            assert!(format!("{err:#}").starts_with(var), "{err:#}");
        }
        let c = config(&[("JWT_ISSUER", "https://auth.example.com")]).unwrap();
        assert_eq!(c.jwt_issuer, "https://auth.example.com");
        assert_eq!(c.jwt_audience, DEFAULT_JWT_AUDIENCE);
        let err = config(&[("MAX_CONNECTIONS", "0")]).unwrap_err();
        assert!(format!("{err:#}").contains("MAX_CONNECTIONS"), "{err:#}");
        for (var, bad) in [
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.internal"),
            ("TRUSTED_PROXY_HEADER", "x-real-ip"),
            ("RATE_LIMIT_LOGIN_PER_IP", "-1"),
            ("RATE_LIMIT_WINDOW_SECONDS", "0"),
            ("RATE_LIMIT_IPV6_PREFIX", "15"),
            ("RATE_LIMIT_IPV6_PREFIX", "129"),
            ("EVENT_RETENTION_DAYS", "0"),
            ("MAX_CONNECTIONS_PER_CLIENT", "-1"),
            ("WRITE_TIMEOUT_SECONDS", "0"),
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
        let ok = config(&PRODUCTION).unwrap();
        assert!(!ok.jwt_secret_generated);
    }

    #[test]
    fn the_signing_settings_are_checked_naming_their_variable() {
        // The previous secret is held to the current one's rules: a weak one would let
        // anyone sign HS256 tokens while it is set.
        for weak in ["short", "change-me-to-a-long-random-value-please!!"] {
            let mut vars = PRODUCTION.to_vec();
            vars.push(("JWT_SECRET_KEY_PREVIOUS", weak));
            let err = format!("{:#}", config(&vars).unwrap_err());
            assert!(err.starts_with("JWT_SECRET_KEY_PREVIOUS"), "{err}");
        }
        let mut vars = PRODUCTION.to_vec();
        vars.push((
            "JWT_SECRET_KEY_PREVIOUS",
            "k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA",
        ));
        let err = format!("{:#}", config(&vars).unwrap_err());
        assert!(err.contains("the same as JWT_SECRET_KEY"), "{err}");
        let dev = config(&[("JWT_SECRET_KEY_PREVIOUS", "short")]).unwrap();
        assert!(
            dev.warnings
                .iter()
                .any(|w| w.starts_with("JWT_SECRET_KEY_PREVIOUS"))
        );
        // Asymmetric keys are sealed with the secret: a random one per process would lose them.
        let err = format!("{:#}", config(&[("JWT_ALGORITHM", "ES256")]).unwrap_err());
        assert!(err.contains("set JWT_SECRET_KEY"), "{err}");
        for (alg, expected) in [
            ("es256", Some(crate::auth::signing::KeyAlgorithm::Es256)),
            ("EdDSA", Some(crate::auth::signing::KeyAlgorithm::EdDsa)),
            ("HS256", None),
        ] {
            let mut vars = PRODUCTION.to_vec();
            vars.push(("JWT_ALGORITHM", alg));
            assert_eq!(config(&vars).unwrap().jwt_algorithm, expected, "{alg}");
        }
        for (var, bad) in [
            ("JWT_ALGORITHM", "RS256"),
            ("JWT_ACCEPT_HS256_UNTIL", "tomorrow"),
            ("JWKS_MAX_AGE_SECONDS", "0"),
        ] {
            let err = format!("{:#}", config(&[(var, bad)]).unwrap_err());
            assert!(err.contains(var), "{var}: {err}");
        }
        let until = config(&[
            ("JWT_SECRET_KEY", "k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA"),
            ("JWT_ALGORITHM", "ES256"),
            ("JWT_ACCEPT_HS256_UNTIL", "2026-12-01T12:30:00Z"),
        ])
        .unwrap();
        assert_eq!(
            until.jwt_accept_hs256_until.unwrap().to_rfc3339(),
            "2026-12-01T12:30:00+00:00"
        );
    }

    const PRODUCTION: [(&str, &str); 6] = [
        ("APP_ENV", "production"),
        ("JWT_SECRET_KEY", "k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA"),
        ("PASSWORD_PEPPER", "Qm7rT2vX9kL4pW8nZ1cF6hJ3sD5gB0yE"),
        ("DATABASE_URL", "postgres://app@db/jobs"),
        ("SMTP_URL", "smtp://mailer:s3cret-pw@mail.example.com"),
        ("APP_BASE_URL", "https://app.example.com"),
    ];

    #[test]
    fn development_logs_mail_and_production_must_send_it_to_a_real_address() {
        let dev = config(&[]).unwrap();
        assert_eq!(dev.mail.mailer, Mailer::Log);
        assert_eq!(dev.mail.app_base_url, "http://localhost:8000/account");
        assert_eq!(dev.mail.verification, Verification::Soft);
        assert_eq!(dev.mail.password_reset_ttl, Duration::from_secs(30 * 60));
        let prod = config(&PRODUCTION).unwrap();
        assert!(matches!(prod.mail.mailer, Mailer::Smtp(_)));
        assert_eq!(prod.mail.app_base_url, "https://app.example.com");
        let shown: Vec<_> = prod.effective();
        let smtp = &shown.iter().find(|(k, _)| *k == "SMTP_URL").unwrap().1;
        assert_eq!(smtp, "smtp://mailer:***@mail.example.com:587");
        assert!(!format!("{prod:?}").contains("s3cret-pw"));
        for (drop, add, named) in [
            ("SMTP_URL", None, "SMTP_URL"),
            ("APP_BASE_URL", None, "APP_BASE_URL"),
            ("APP_ENV", Some(("MAILER", "log")), "MAILER"),
        ] {
            let mut vars: Vec<_> = PRODUCTION.into_iter().filter(|(k, _)| *k != drop).collect();
            if drop == "APP_ENV" {
                vars.push(("APP_ENV", "production"));
            }
            vars.extend(add);
            let err = format!("{:#}", config(&vars).unwrap_err());
            assert!(err.starts_with(named), "{err}");
        }
        let err = format!(
            "{:#}",
            config(&[("EMAIL_VERIFICATION", "maybe")]).unwrap_err()
        );
        assert!(err.contains("EMAIL_VERIFICATION"), "{err}");
        let err = format!("{:#}", config(&[("MAILER", "smtp")]).unwrap_err());
        assert!(err.contains("SMTP_URL"), "{err}");
    }

    #[test]
    fn production_refuses_a_missing_weak_or_reused_pepper_and_development_has_a_fixed_one() {
        for pepper in [
            None,
            Some("replace-with-a-long-random-pepper-value"),
            Some("short"),
            // The JWT secret itself: rotating it would then break every password.
            Some("k3H9x2LqP0vZt8WmN4rB7yC1sD6fG5jA"),
        ] {
            let mut vars: Vec<_> = PRODUCTION
                .into_iter()
                .filter(|(k, _)| *k != "PASSWORD_PEPPER")
                .collect();
            if let Some(p) = pepper {
                vars.push(("PASSWORD_PEPPER", p));
            }
            let err = format!("{:#}", config(&vars).unwrap_err());
            assert!(err.starts_with("PASSWORD_PEPPER"), "{err}");
        }
        let dev = config(&[]).unwrap();
        assert!(dev.password_pepper_default);
        assert_eq!(dev.password_pepper.expose(), secret::DEVELOPMENT_PEPPER);
        let weak = config(&[("PASSWORD_PEPPER", "short")]).unwrap();
        assert_eq!(weak.password_pepper.expose(), "short");
        assert!(
            weak.warnings
                .iter()
                .any(|w| w.starts_with("PASSWORD_PEPPER"))
        );
        let shown = format!("{:?}", config(&PRODUCTION).unwrap());
        assert!(!shown.contains("Qm7rT2"), "{shown}");
    }

    #[test]
    fn production_defaults_turn_the_docs_off_and_keep_metrics_on_loopback() {
        let prod = config(&PRODUCTION).unwrap();
        assert!(!prod.docs_enabled);
        assert_eq!(prod.metrics_host.to_string(), "127.0.0.1");
        assert_eq!(prod.db_migrations, Migrations::Apply);
        let dev = config(&[]).unwrap();
        assert!(dev.docs_enabled);
        assert_eq!(dev.metrics_host.to_string(), "127.0.0.1");

        let mut vars = PRODUCTION.to_vec();
        vars.extend([
            ("DOCS_ENABLED", "true"),
            ("METRICS_HOST", "0.0.0.0"),
            ("DB_MIGRATIONS", "Verify"),
        ]);
        let chosen = config(&vars).unwrap();
        assert!(chosen.docs_enabled);
        assert_eq!(chosen.metrics_host.to_string(), "0.0.0.0");
        assert_eq!(chosen.db_migrations, Migrations::Verify);
        assert!(!config(&[("DOCS_ENABLED", "false")]).unwrap().docs_enabled);
        let err = config(&[("DB_MIGRATIONS", "skip")]).unwrap_err();
        assert!(format!("{err:#}").contains("DB_MIGRATIONS"), "{err:#}");
    }

    #[test]
    fn production_refuses_a_weak_bcrypt_cost_and_a_missing_database_url() {
        let mut vars = PRODUCTION.to_vec();
        vars.push(("BCRYPT_ROUNDS", "9"));
        let err = format!("{:#}", config(&vars).unwrap_err());
        assert_eq!(
            err,
            "BCRYPT_ROUNDS must be at least 10 in production, got 9"
        );
        vars.pop();
        vars.push(("BCRYPT_ROUNDS", "10"));
        assert_eq!(config(&vars).unwrap().bcrypt_cost, 10);
        assert_eq!(config(&[("BCRYPT_ROUNDS", "4")]).unwrap().bcrypt_cost, 4);

        let without_url: Vec<_> = PRODUCTION
            .into_iter()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .collect();
        let err = format!("{:#}", config(&without_url).unwrap_err());
        assert!(err.starts_with("DATABASE_URL is not set"), "{err}");
        assert!(config(&[]).unwrap().database_url.is_none());
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
    fn the_per_client_connection_cap_defaults_to_a_quarter_of_the_global_one() {
        let c = config(&[("MAX_CONNECTIONS", "100")]).unwrap();
        assert_eq!(c.max_connections_per_client, 25);
        let c = config(&[("MAX_CONNECTIONS", "2")]).unwrap();
        assert_eq!(c.max_connections_per_client, 1);
        let c = config(&[("MAX_CONNECTIONS_PER_CLIENT", "0")]).unwrap();
        assert_eq!(c.max_connections_per_client, 0);
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

    #[test]
    fn deleted_accounts_are_purged_after_30_days_or_as_configured_down_to_at_once() {
        assert_eq!(
            config(&[]).unwrap().account_purge,
            Duration::from_secs(30 * 24 * 3600)
        );
        let c = config(&[("ACCOUNT_PURGE_DAYS", "0")]).unwrap();
        assert_eq!(c.account_purge, Duration::ZERO);
        let err = config(&[("ACCOUNT_PURGE_DAYS", "3651")]).unwrap_err();
        assert!(format!("{err:#}").contains("ACCOUNT_PURGE_DAYS"), "{err:#}");
    }
}
