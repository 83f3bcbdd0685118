//! Finds the database to use.
//!
//! With `DATABASE_URL` set, that is the database (a URL that does not parse was refused
//! when the configuration was read). Without it — the zero-configuration quick start, for
//! development only (production refuses to start without a URL) — the server uses the
//! PostgreSQL on 127.0.0.1:5432 (user `postgres`; `PGPORT` names another port, as it does
//! for psql), creating the `jobpath` database if it is missing. If nothing answers there, it
//! starts a private PostgreSQL from the machine's binaries with its data in
//! `./.jobpath/postgres`, and if there are no binaries it says what to install.
//!
//! The private cluster trusts whoever connects (there is no password to set up or lose), so
//! it listens on no TCP address at all: only on its Unix socket, inside its data directory,
//! which PostgreSQL keeps at mode 0700 — so the only users who can connect are the ones who
//! could read the data files anyway (the owner, and root). A generated password on TCP would
//! protect the same data with a secret file to manage, and a TCP port can collide with
//! another checkout's cluster; a socket in the directory cannot.

use super::typed::Typed as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use super::connect::Target;
use super::tls::Tls;
use crate::config::Config;

/// The private cluster's port: with no TCP listener, only the name of its socket file
/// (`.s.PGSQL.54329`).
const PRIVATE_PORT: u16 = 54329;
/// The longest Unix socket path the kernel takes (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
const DB_NAME: &str = "jobpath";

/// Where the database is, and a human description of it for the start-up log.
pub struct Located {
    /// What the pools connect to (`DATABASE_URL`: a pooler, or PostgreSQL itself).
    pub target: Target,
    /// What needs a session of its own connects to: the migrations' advisory lock and the
    /// outbox's `LISTEN` (`DATABASE_DIRECT_URL`, by default the same as `target`).
    pub direct: Target,
    pub description: String,
}

impl Located {
    fn at(target: Target) -> Located {
        let description = target.describe();
        Located {
            direct: target.clone(),
            target,
            description,
        }
    }
}

/// Finds the database; `tls` is the connector of every connection, including the ones that
/// probe for and create the local database.
pub async fn locate(config: &Config, tls: &Tls) -> anyhow::Result<Located> {
    if let Some(url) = &config.database_url {
        let mut located = Located::at(Target::new(url.pg().clone()));
        if let Some(direct) = &config.database_direct_url {
            located.direct = Target::new(direct.pg().clone());
        }
        return Ok(located);
    }

    let port = config.local_postgres_port;
    let local = Target::new(local_config(port));
    match create_if_missing(&local, tls).await {
        Ok(()) => return Ok(Located::at(local)),
        Err(e) if !is_refused(&e) => {
            return Err(e.context(format!(
                "DATABASE_URL is unset and the PostgreSQL on 127.0.0.1:{port} refused us; \
                 set DATABASE_URL"
            )));
        }
        Err(_) => {}
    }

    tracing::warn!(
        "DATABASE_URL is unset and nothing answers on 127.0.0.1:{port}; \
         starting a private PostgreSQL in ./.jobpath/postgres (Unix socket only)"
    );
    let data = std::env::current_dir()?.join(".jobpath").join("postgres");
    let private = Target::new(private_config(&data)?);
    tokio::task::spawn_blocking(move || start_private_cluster(&data, port))
        .await
        .context("starting a private PostgreSQL")??;
    create_if_missing(&private, tls).await?;
    Ok(Located::at(private))
}

/// The `jobpath` database as user `postgres` on 127.0.0.1:`port`, the local PostgreSQL.
/// Built whole: calling `.port()` on a configuration that already has one adds a second,
/// and tokio-postgres then refuses it ("invalid number of ports").
fn local_config(port: u16) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(DB_NAME);
    config
}

/// The `jobpath` database of the private cluster in `data`, through its socket there.
fn private_config(data: &Path) -> anyhow::Result<tokio_postgres::Config> {
    let socket = data.join(format!(".s.PGSQL.{PRIVATE_PORT}"));
    let length = socket.as_os_str().len();
    if length > MAX_SOCKET_PATH {
        bail!(
            "DATABASE_URL is unset and the private PostgreSQL's socket would be {} ({length} \
             bytes, the limit is {MAX_SOCKET_PATH}); run from a shorter directory or set \
             DATABASE_URL",
            socket.display()
        );
    }
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(data)
        .port(PRIVATE_PORT)
        .user("postgres")
        .dbname(DB_NAME);
    Ok(config)
}

/// Connects to the `postgres` maintenance database of the same server and creates `jobpath`
/// if it does not exist (racing instances are fine: "already exists" counts as done).
async fn create_if_missing(target: &Target, tls: &Tls) -> anyhow::Result<()> {
    let client = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        target.with_dbname("postgres").connect(tls),
    )
    .await
    .map_err(|_| anyhow!("no answer within 3 s"))??;
    let exists = client
        .opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DB_NAME])
        .await?
        .is_some();
    if !exists {
        match client
            .batch_execute(&format!("CREATE DATABASE {DB_NAME}"))
            .await
        {
            Ok(()) => tracing::info!("created database {DB_NAME}"),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn is_refused(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    }) || format!("{err:#}").contains("Connection refused")
}

fn start_private_cluster(data: &Path, local_port: u16) -> anyhow::Result<()> {
    let bin = find_pg_bin().ok_or_else(|| {
        anyhow!(
            "DATABASE_URL is unset, no PostgreSQL answers on 127.0.0.1:{local_port} and no \
             PostgreSQL binaries (initdb, pg_ctl) were found. Install them (Debian: \
             `apt-get install postgresql`) or set DATABASE_URL"
        )
    })?;
    let as_root = is_root();
    let parent = data.parent().expect("data dir has a parent");
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    if as_root {
        // PostgreSQL refuses to run as root; the Debian packages create a `postgres` user.
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(parent))?;
    }
    if !data.join("PG_VERSION").exists() {
        run(pg_command(&bin.join("initdb"), as_root)
            // Trust on the socket (guarded by the directory's mode), and should TCP ever be
            // switched on by hand, no connection from it.
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=reject"])
            .args(["-E", "UTF8", "-D"])
            .arg(data))?;
    }
    let running = pg_command(&bin.join("pg_ctl"), as_root)
        .arg("status")
        .arg("-D")
        .arg(data)
        .output()
        .is_ok_and(|o| o.status.success());
    if !running {
        // pg_ctl hands these to a shell: '' is an empty listen_addresses (no TCP at all).
        let options = format!(
            "-p {PRIVATE_PORT} -c listen_addresses='' -c unix_socket_permissions=0700 -k '{}'",
            data.display()
        );
        run(pg_command(&bin.join("pg_ctl"), as_root)
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(data)
            .arg("-l")
            .arg(parent.join("postgres.log"))
            .args(["-o", &options]))?;
    }
    Ok(())
}

fn pg_command(program: &Path, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_pg_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The private cluster's configuration is one a connection can use: one host, one
    /// port. (It once had two ports, and the zero-configuration fallback failed with
    /// "invalid configuration: invalid number of ports".)
    #[tokio::test]
    async fn the_private_cluster_configuration_names_one_host_and_its_port() {
        let data = std::env::temp_dir().join("jobpath-no-cluster-here");
        let config = private_config(&data).unwrap();
        assert_eq!(config.get_ports(), &[PRIVATE_PORT]);
        assert_eq!(
            config.get_hosts(),
            &[tokio_postgres::config::Host::Unix(data)]
        );
        assert_eq!(config.get_dbname(), Some("jobpath"));
        // Nothing answers there, but the configuration itself is accepted: the error is
        // about the connection, not the configuration.
        let e = config.connect(tokio_postgres::NoTls).await.err().unwrap();
        assert!(!e.to_string().starts_with("invalid configuration"), "{e}");
    }

    #[test]
    fn a_socket_path_the_kernel_would_refuse_is_a_clear_error() {
        let deep = std::env::temp_dir().join("d".repeat(100));
        let err = private_config(&deep).unwrap_err().to_string();
        assert!(
            err.contains("socket") && err.contains("DATABASE_URL"),
            "{err}"
        );
    }
}
