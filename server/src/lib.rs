//! JobPath API: the authentication backend of the JobPath job-search service.
//!
//! A map of the modules, in the order a request meets them:
//!
//! - [`http`]: transport only — accept loop and graceful shutdown (`http::serve`), the
//!   request wrapper that assigns ids, logs, counts and turns errors into JSON
//!   (`http::service`), the route table with each operation's declared security, checked
//!   against `openapi.yaml` (`http::router`), bodies, responses and CORS.
//! - [`call`]: where a request comes from (id, client address, user agent).
//! - [`handlers`]: `dispatch`, the match from route to handler; one function per
//!   `operationId`; the documentation pages, the account pages emailed links open, and the
//!   metrics scrape.
//! - [`auth`]: the guard of every protected operation (`auth::guard`), the login decision,
//!   email/password types, bcrypt on a bounded thread pool, JWTs, refresh tokens.
//! - [`limits`]: per-IP rate limits and the per-account login throttle (shared through
//!   PostgreSQL by every instance).
//! - [`db`]: locating the database (`db::locate`), connecting — one place settles the TLS
//!   mode of every connection, and start-up's first connection retries (`db::connect`) —
//!   migrations, the pool, the SQL.
//! - [`errors`]: [`errors::ApiError`], the one error type of the request path.
//! - [`metrics`]: the Prometheus registry of one server.
//! - [`cli`]: the binary's commands (`serve`, `migrate`, `check-config`, `healthcheck`).
//! - [`mail`]: the email outbox's sender (SMTP or the log), templates, emailed secrets.
//! - [`keyring`]: keeping every instance's signing keys current (`LISTEN`, re-reads), and
//!   `jobpath-server keys …`.
//! - [`maintenance`]: the background chores (idle connections, pruning, the purge of
//!   deleted accounts).
//! - [`config`]: environment → typed `Config`: the one list of variables, range checks,
//!   `DATABASE_URL` parsed once.
//! - [`telemetry`], [`spec`], [`state`]: start-up and shared state.
//!
//! Embedding: [`App::build`] connects and migrates (or verifies, `DB_MIGRATIONS`), [`run`] serves an already-bound
//! listener until a shutdown future completes — so a test binds port 0 in one line. The
//! metrics listener, when there is one, is handed over the same way
//! ([`App::serve_metrics_on`]).

pub mod auth;
pub mod call;
pub mod cli;
pub mod config;
pub mod db;
pub mod errors;
pub mod handlers;
pub mod http;
pub mod keyring;
pub mod limits;
pub mod mail;
pub mod maintenance;
pub mod metrics;
pub mod spec;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::hasher::Hasher;
use crate::auth::refresh::RefreshKeys;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;

/// A server ready to serve: database reachable and migrated, pools started.
pub struct App {
    state: Arc<AppState>,
    database: String,
    metrics_listener: Option<TcpListener>,
    /// The outbox sender's transport and its `LISTEN` connection's target, started by
    /// [`run`].
    sender: (
        mail::transport::Transport,
        db::connect::Target,
        db::tls::Tls,
    ),
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let tls = db::tls::connector(config.db_ssl_root_cert.as_deref())?;
        let listen_tls = tls.clone();
        let located = db::locate::locate(&config, &tls).await?;
        let pepper = auth::hasher::Pepper::new(config.password_pepper.expose().as_bytes());
        prepare_schema(
            &located.direct,
            &tls,
            config.db_startup_timeout,
            config.db_migrations,
            Some(&pepper),
        )
        .await?;
        let shared_pool = db::pool_of(
            &located.target,
            &config,
            db::shared::SHARED_CONNECTIONS,
            tls.clone(),
        )?;
        let pool = db::pool(&located.target, &config, tls)?;
        let metrics = Metrics::new(&config.app_version);
        let hasher = Hasher::start(
            config.hash_threads,
            config.bcrypt_cost,
            pepper,
            config.db_pool_timeout,
            metrics.hash(),
        )?;
        hasher.warm_up();
        let mut tokens = TokenKeys::new(
            config.jwt_secret.expose().as_bytes(),
            &config.jwt_issuer,
            &config.jwt_audience,
            config.access_token_ttl,
        );
        if let Some(previous) = &config.jwt_secret_previous {
            tokens = tokens.with_previous_secret(previous.expose().as_bytes());
        }
        if config.jwt_algorithm.is_some() {
            tokens = tokens.signing_with_keys(config.jwt_accept_hs256_until.map(|t| t.timestamp()));
        }
        let sealer = keyring::sealer(&config);
        keyring::prepare(&pool, &config, &tokens, sealer.as_ref())
            .await
            .map_err(|e| e.context("loading the signing keys"))?;
        let refresh = RefreshKeys::new(config.jwt_secret.expose().as_bytes());
        let devices = auth::device::DeviceKeys::new(config.jwt_secret.expose().as_bytes());
        let api_keys = auth::api_keys::ApiKeyKeys::new(config.jwt_secret.expose().as_bytes());
        let email_secrets = mail::secrets::SecretKeys::new(config.jwt_secret.expose().as_bytes());
        let mfa = auth::mfa::MfaKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.mfa_clock.clone(),
        );
        let transport = mail::transport::Transport::new(&config.mail)?;
        let prepared_lookup = config.db_pooler == config::Pooler::None;
        let passkeys = auth::passkeys::RelyingParty::new(&config.webauthn)?;
        Ok(App {
            state: Arc::new(AppState {
                router: http::router::Router::new(config.metrics_public, config.docs_enabled),
                config,
                owners: db::owners::OwnerLookups::start(
                    db::shared::Shared::new(shared_pool, db::shared::SHARED_CONNECTIONS),
                    prepared_lookup,
                ),
                db: pool,
                hasher,
                tokens,
                sealer,
                refresh,
                devices,
                api_keys,
                email_secrets,
                mfa,
                passkeys,
                metrics,
                observer: std::sync::OnceLock::new(),
            }),
            database: located.description,
            metrics_listener: None,
            sender: (transport, located.direct, listen_tls),
        })
    }

    /// Serves `/metrics` on `listener` (bound to `METRICS_PORT`) alongside the public port,
    /// from [`run`] until its shutdown.
    pub fn serve_metrics_on(&mut self, listener: TcpListener) {
        self.metrics_listener = Some(listener);
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// `host:port/dbname` of the database in use (no credentials).
    pub fn database(&self) -> &str {
        &self.database
    }
}

/// Serves `listener` (and the metrics listener, if any) until `shutdown` completes, then
/// finishes in-flight requests (within `SHUTDOWN_GRACE_SECONDS`) and returns.
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let App {
        state,
        metrics_listener,
        sender: (transport, listen_target, listen_tls),
        ..
    } = app;
    let maintenance = tokio::spawn(maintenance::run(Arc::clone(&state)));
    let keys = tokio::spawn(keyring::watch(
        Arc::clone(&state),
        listen_target.clone(),
        listen_tls.clone(),
    ));
    let (stop_sender, sender_stop) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(mail::sender::run(
        Arc::clone(&state),
        transport,
        Some((listen_target, listen_tls)),
        sender_stop,
    ));
    let sender_grace = state.config.mail.smtp_timeout * 2 + Duration::from_secs(1);
    let (stop_metrics, metrics_stop) = tokio::sync::oneshot::channel::<()>();
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(http::serve(
            l,
            Arc::clone(&state),
            http::Port::Metrics,
            handlers::dispatch,
            async {
                let _ = metrics_stop.await;
            },
        ))
    });
    http::serve(
        listener,
        state,
        http::Port::Public,
        handlers::dispatch,
        shutdown,
    )
    .await;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics {
        let _ = task.await;
    }
    // The sender finishes the messages it is sending (each is bounded by twice
    // SMTP_TIMEOUT_SECONDS), so none is left claimed after it was delivered.
    let _ = stop_sender.send(true);
    let abort = sender.abort_handle();
    if tokio::time::timeout(sender_grace, sender).await.is_err() {
        abort.abort();
    }
    maintenance.abort();
    keys.abort();
}

/// `jobpath-server keys …`: with the configuration `serve` uses (its safety windows come
/// from it), against the same database. Returns what to print.
pub async fn keys(config: &Config, command: &cli::KeysCommand) -> anyhow::Result<String> {
    let tls = db::tls::connector(config.db_ssl_root_cert.as_deref())?;
    let located = db::locate::locate(config, &tls).await?;
    prepare_schema(
        &located.direct,
        &tls,
        config.db_startup_timeout,
        config.db_migrations,
        None,
    )
    .await?;
    let db = db::pool_of(&located.target, config, 1, tls)?;
    keyring::command(&db, config, command).await
}

/// `jobpath-server admin grant|revoke|list`: with the configuration `serve` uses (and its
/// migration setting), against the same database. Returns what to print; an error (no such
/// account, no database) is the command's failure. Granting or revoking ends the account's
/// sessions, like a role change through the API, and is a security event.
pub async fn admin(config: &Config, command: &cli::AdminCommand) -> anyhow::Result<String> {
    use anyhow::bail;
    use db::admin::{Actor, RoleChange};
    use http::router::ADMIN_ROLE;

    let tls = db::tls::connector(config.db_ssl_root_cert.as_deref())?;
    let located = db::locate::locate(config, &tls).await?;
    prepare_schema(
        &located.direct,
        &tls,
        config.db_startup_timeout,
        config.db_migrations,
        None,
    )
    .await?;
    let db = db::pool_of(&located.target, config, 1, tls)?;
    let (email, grant) = match command {
        cli::AdminCommand::List => {
            let admins = db::admin::holders(&db, ADMIN_ROLE).await?;
            if admins.is_empty() {
                return Ok(
                    "no account has the admin role; grant it with `jobpath-server admin grant EMAIL`"
                        .to_owned(),
                );
            }
            let mut out = String::from(
                "EMAIL	GRANTED AT	GRANTED BY
",
            );
            for (email, at, by) in admins {
                let by = by.as_deref().unwrap_or("(command line)");
                out.push_str(&format!(
                    "{email}	{}	{by}
",
                    at.to_rfc3339()
                ));
            }
            return Ok(out.trim_end().to_owned());
        }
        cli::AdminCommand::Grant(email) => (email, true),
        cli::AdminCommand::Revoke(email) => (email, false),
    };
    let normalised = match auth::credentials::Email::normalise_for_lookup(email) {
        Ok(email) => email,
        Err(_) => bail!("'{email}' is not an email address"),
    };
    let Some(user_id) = db::admin::find_by_email(&db, normalised.as_str()).await? else {
        bail!("no account has the address {}", normalised.as_str());
    };
    let change = db::admin::set_roles(&db, None, Actor::Cli, user_id, |held| {
        let mut roles: Vec<String> = held.iter().filter(|r| *r != ADMIN_ROLE).cloned().collect();
        if grant {
            roles.push(ADMIN_ROLE.to_owned());
        }
        roles
    })
    .await?;
    let address = normalised.as_str();
    Ok(match (change, grant) {
        (RoleChange::Done { changed: true }, true) => {
            format!("{address} is now an admin (their sessions ended: log in again)")
        }
        (RoleChange::Done { changed: false }, true) => format!("{address} is already an admin"),
        (RoleChange::Done { changed: true }, false) => {
            let left = db::admin::holders(&db, ADMIN_ROLE).await?.len();
            let mut out = format!("{address} is no longer an admin (their sessions ended)");
            if left == 0 {
                out.push_str(
                    "
warning: no account has the admin role now",
                );
            }
            out
        }
        (RoleChange::Done { changed: false }, false) => format!("{address} is not an admin"),
        (RoleChange::NoSuchUser, _) => bail!("no account has the address {address}"),
        (RoleChange::SelfLockout, _) => unreachable!("the command line is no account"),
        (RoleChange::TooMany, _) => bail!(
            "{address} already holds {} roles, the most an account can hold",
            crate::auth::token::MAX_ROLES
        ),
    })
}

/// Locates the database and applies pending migrations; the `migrate` command.
pub async fn migrate(config: &Config) -> anyhow::Result<Vec<i64>> {
    let tls = db::tls::connector(config.db_ssl_root_cert.as_deref())?;
    let located = db::locate::locate(config, &tls).await?;
    // Whatever DB_MIGRATIONS says: applying is what this command is for.
    prepare_schema(
        &located.direct,
        &tls,
        config.db_startup_timeout,
        config::Migrations::Apply,
        // Migrations may run with a deployment step's own configuration: the pepper is
        // checked (and first recorded) by the servers that use it.
        None,
    )
    .await
}

/// Applies pending migrations, or with [`config::Migrations::Verify`] only checks that none
/// is pending (changing nothing); then checks `pepper` against the one recorded
/// (`db::users::check_pepper`). Returns the versions applied.
async fn prepare_schema(
    pg: &db::connect::Target,
    tls: &db::tls::Tls,
    wait: Duration,
    mode: config::Migrations,
    pepper: Option<&auth::hasher::Pepper>,
) -> anyhow::Result<Vec<i64>> {
    let mut client = db::connect::with_retry(pg, tls, wait).await?;
    let applied = match mode {
        config::Migrations::Apply => {
            let applied = db::migrate::run(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied migrations");
            }
            Ok(applied)
        }
        config::Migrations::Verify => {
            db::migrate::verify(&client).await?;
            Ok(Vec::new())
        }
    };
    if let Some(pepper) = pepper {
        db::users::check_pepper(&client, &pepper.fingerprint()).await?;
    }
    applied
}
