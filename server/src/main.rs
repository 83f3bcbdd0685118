//! `jobpath-server`: reads the configuration, sets up logging, and runs a command —
//! `serve` (the default), `migrate`, `check-config` or `healthcheck` (see `cli`).
//! Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context as _;
use jobpath_server::cli::{self, Command};
use jobpath_server::config::{self, Config};
use jobpath_server::{App, telemetry};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("jobpath-server: {problem}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("jobpath-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Serve
        | Command::Migrate
        | Command::CheckConfig
        | Command::Healthcheck
        | Command::Admin(_)
        | Command::Keys(_) => {}
    }
    match start(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be set up yet (a config error), so this goes to stderr directly.
            eprintln!("jobpath-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(command: Command) -> anyhow::Result<()> {
    let dotenv = config::dotenv::load()?;
    let mut config = Config::from_env()?;
    if dotenv == config::dotenv::DotEnv::IgnoredInProduction {
        config.warnings.push(
            "./.env is not read in production (APP_ENV=production); set the variables in \
             the environment"
                .to_owned(),
        );
    }
    match command {
        Command::CheckConfig => {
            print!("{}", cli::effective_config(&config));
            println!("configuration is valid");
            return Ok(());
        }
        Command::Healthcheck => {
            let addr = cli::healthcheck_address(&config);
            println!("{}", cli::healthcheck(addr, cli::HEALTHCHECK_TIMEOUT)?);
            return Ok(());
        }
        Command::Serve
        | Command::Migrate
        | Command::Admin(_)
        | Command::Keys(_)
        | Command::Help
        | Command::Version => {}
    }
    match command {
        Command::Admin(_) | Command::Keys(_) => telemetry::init_on_stderr(&config)?,
        _ => telemetry::init(&config)?,
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        if command == Command::Migrate {
            let applied = jobpath_server::migrate(&config).await?;
            tracing::info!(?applied, "migrations up to date");
            return Ok(());
        }
        if let Command::Admin(admin) = &command {
            println!("{}", jobpath_server::admin(&config, admin).await?);
            return Ok(());
        }
        if let Command::Keys(keys) = &command {
            println!("{}", jobpath_server::keys(&config, keys).await?);
            return Ok(());
        }
        serve(config).await
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.jwt_secret_generated {
        tracing::warn!(
            "!!! JWT_SECRET_KEY is not set: using a random secret for this process only. Tokens \
             will not survive a restart nor work across instances. Set JWT_SECRET_KEY (and \
             APP_ENV=production) for any real deployment. !!!"
        );
    }
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (HOST/PORT)"))?;
    let metrics_listener = if config.metrics_public {
        None
    } else {
        let addr = std::net::SocketAddr::new(config.metrics_host, config.metrics_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (METRICS_HOST/METRICS_PORT)"))?;
        Some(listener)
    };
    let metrics = match &metrics_listener {
        Some(l) => format!("http://{}/metrics", l.local_addr()?),
        None => "/metrics on the public port (METRICS_PUBLIC=true)".to_owned(),
    };
    let mut app = App::build(config.clone()).await?;
    if let Some(l) = metrics_listener {
        app.serve_metrics_on(l);
    }
    // The one line that tells an operator what is running. The database is shown as
    // host:port/name: the password never reaches a log.
    tracing::info!(
        version = %config.app_version,
        address = %listener.local_addr()?,
        database = %app.database(),
        pool_size = config.db_pool_size,
        pool_max = config.db_max_connections(),
        bcrypt_cost = config.bcrypt_cost,
        hash_threads = config.hash_threads,
        token_ttl_minutes = config.access_token_ttl.as_secs() / 60,
        cors_origins = %config.cors_origins,
        environment = ?config.environment,
        %metrics,
        "{} listening", config.app_name
    );
    jobpath_server::run(listener, app, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what orchestrators send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
