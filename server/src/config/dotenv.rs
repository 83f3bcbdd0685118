//! The `.env` file: a development convenience, read by `main` before the configuration.
//!
//! Only `./.env`, in the working directory, is read — not the nearest one up the tree, which
//! could belong to another checkout or project, so that where the settings come from is
//! obvious from where the server runs. Variables already in the environment win. With
//! `APP_ENV=production` in the environment no file is read at all: a deployment's
//! configuration is its environment, and a stray file in the image or the working directory
//! must not change it (one that is there gets a warning).

use std::path::Path;

use anyhow::Context as _;

use super::Environment;

/// What [`load`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotEnv {
    Loaded,
    Absent,
    /// A `./.env` exists, but this is production.
    IgnoredInProduction,
}

/// Reads `./.env` into the process environment, unless `APP_ENV` says production.
pub fn load() -> anyhow::Result<DotEnv> {
    let path = Path::new(".env");
    let app_env = std::env::var("APP_ENV").ok();
    // An APP_ENV that does not parse is reported by the configuration; here it is not
    // production, so a development file may still be read.
    if Environment::parse(app_env.as_deref()).ok() == Some(Environment::Production) {
        return Ok(match path.exists() {
            true => DotEnv::IgnoredInProduction,
            false => DotEnv::Absent,
        });
    }
    match dotenvy::from_path(path) {
        Ok(()) => Ok(DotEnv::Loaded),
        Err(e) if e.not_found() => Ok(DotEnv::Absent),
        Err(e) => Err(e).context("reading ./.env"),
    }
}
