//! Logging setup: `tracing` to stdout, human-readable or JSON (`LOG_FORMAT=json`), filtered
//! by `LOG_LEVEL` (a level or any `tracing` filter directive).
//!
//! Colours only on a terminal: piped into a file, `docker logs` or a log shipper, escape
//! codes would split every `key=value` a person or a grep looks for.
//!
//! tokio-postgres logs every statement's parameters at debug level — password hashes and
//! emails included — so its target is held at `info` unless `LOG_LEVEL` names it explicitly.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

pub fn filter(log_level: &str) -> anyhow::Result<EnvFilter> {
    let directives = if log_level.contains("tokio_postgres") {
        log_level.to_owned()
    } else {
        format!("{log_level},tokio_postgres=info")
    };
    EnvFilter::try_new(&directives)
        .with_context(|| format!("LOG_LEVEL: invalid value '{log_level}'"))
}

/// Installs the global subscriber. Fails if one is already installed.
pub fn init(config: &Config) -> anyhow::Result<()> {
    install(config, std::io::stdout, std::io::stdout().is_terminal())
}

/// [`init`] for a command whose standard output is its answer (`admin list`): the log
/// lines go to standard error, so a script reading the answer reads only the answer.
pub fn init_on_stderr(config: &Config) -> anyhow::Result<()> {
    install(config, std::io::stderr, std::io::stderr().is_terminal())
}

fn install<W>(config: &Config, writer: W, ansi: bool) -> anyhow::Result<()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&config.log_level)?)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
