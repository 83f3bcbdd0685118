//! The binary's command line: which command to run, and the two commands that never start
//! a server — `check-config` and `healthcheck`. (`admin …`, which bootstraps and audits
//! administrators, is `jobpath_server::admin`: it needs the database.)
//!
//! The parser is hand-written: the commands take no options, so an argument-parsing crate
//! would add build time and binary size for nothing a test cannot check directly.
//! `healthcheck` speaks just enough HTTP/1.1 over a `TcpStream` to read a status line, so a
//! container image needs neither curl nor wget to check the server.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::Config;

pub const USAGE: &str = "\
jobpath-server: the JobPath API authentication backend

Usage: jobpath-server [COMMAND]

Commands:
  serve         Apply (DB_MIGRATIONS=verify: check) migrations and serve HTTP (default)
  migrate       Apply migrations and exit
  check-config  Validate the configuration and print it, secrets redacted
  healthcheck   Exit 0 if the server on HOST:PORT is ready, 1 if not
  admin grant EMAIL
                Give the account with this address the admin role (ends its sessions)
  admin revoke EMAIL
                Take the admin role away (ends its sessions)
  admin list    List the admins
  keys list     List the signing keys (ES256, EdDSA) and their states
  keys create [--alg ES256|EdDSA]
                Make a standby key: published in the JWKS, signing nothing yet
  keys activate KID [--force]
                Sign with KID from now on; the active key is retired. Refused until KID
                has been published for JWKS_MAX_AGE_SECONDS + 10 minutes, unless --force
  keys retire KID
                Retire a standby key without its ever signing
  keys revoke KID [--force]
                Unpublish KID and refuse its tokens. Refused for a retired key until an
                access-token lifetime + JWKS_MAX_AGE_SECONDS after its retirement, unless
                --force (an incident: its tokens stop working at once)

Options:
  -h, --help     Print this help
  -V, --version  Print the version

Configuration comes from environment variables and, outside production, a .env file in the
working directory; see docs/configuration.md and .env.example. With none at all, the server
uses the PostgreSQL on 127.0.0.1:5432.";

/// How long `healthcheck` waits to connect and for the status line. Below the container
/// `HEALTHCHECK --timeout`, so a hung server is reported by us rather than killed.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    CheckConfig,
    Healthcheck,
    Admin(AdminCommand),
    Keys(KeysCommand),
    Help,
    Version,
}

/// `jobpath-server admin …`: the only way to make the first admin (never the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Grant(String),
    Revoke(String),
    List,
}

/// `jobpath-server keys …`: the signing keys' life (see `keyring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysCommand {
    List,
    /// `None`: `JWT_ALGORITHM`'s, or ES256 for an HS256 deployment.
    Create {
        algorithm: Option<crate::auth::signing::KeyAlgorithm>,
    },
    Activate {
        kid: String,
        force: bool,
    },
    Retire(String),
    Revoke {
        kid: String,
        force: bool,
    },
}

/// `keys …` after the word `keys`.
fn parse_keys(args: &mut impl Iterator<Item = String>) -> Result<KeysCommand, String> {
    let verb = args
        .next()
        .ok_or("keys needs a command: list, create, activate, retire or revoke")?;
    let rest: Vec<String> = args.collect();
    let force = rest.iter().any(|a| a == "--force");
    let words: Vec<&String> = rest.iter().filter(|a| *a != "--force").collect();
    let kid = |words: &[&String]| match words {
        [kid] if !kid.starts_with('-') => Ok((*kid).clone()),
        [] => Err(format!("keys {verb} needs the key's KID")),
        [_, extra, ..] | [extra] => Err(format!("unexpected argument '{extra}'")),
    };
    let no_force = |command: KeysCommand| {
        if force {
            Err(format!("keys {verb} takes no --force"))
        } else {
            Ok(command)
        }
    };
    match verb.as_str() {
        "list" => match words.first() {
            None => no_force(KeysCommand::List),
            Some(extra) => Err(format!("unexpected argument '{extra}'")),
        },
        "create" => {
            let algorithm = match words.as_slice() {
                [] => None,
                [flag, alg] if *flag == "--alg" => Some(
                    crate::auth::signing::KeyAlgorithm::parse(alg)
                        .ok_or(format!("--alg: ES256 or EdDSA, got '{alg}'"))?,
                ),
                [flag] if *flag == "--alg" => return Err("--alg needs ES256 or EdDSA".to_owned()),
                [extra, ..] => return Err(format!("unexpected argument '{extra}'")),
            };
            no_force(KeysCommand::Create { algorithm })
        }
        "activate" => Ok(KeysCommand::Activate {
            kid: kid(&words)?,
            force,
        }),
        "retire" => no_force(KeysCommand::Retire(kid(&words)?)),
        "revoke" => Ok(KeysCommand::Revoke {
            kid: kid(&words)?,
            force,
        }),
        other => Err(format!("unknown keys command '{other}'")),
    }
}

/// Parses the arguments after the program name. `Err` carries the message for a usage
/// error (exit status 2).
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let command = match args.next().as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("check-config") => Command::CheckConfig,
        Some("healthcheck") => Command::Healthcheck,
        Some("admin") => Command::Admin(match (args.next().as_deref(), args.next()) {
            (Some("grant"), Some(email)) => AdminCommand::Grant(email),
            (Some("revoke"), Some(email)) => AdminCommand::Revoke(email),
            (Some("list"), None) => AdminCommand::List,
            (Some("grant" | "revoke"), None) => {
                return Err("admin grant and admin revoke need the account's EMAIL".to_owned());
            }
            (Some("list"), Some(extra)) => return Err(format!("unexpected argument '{extra}'")),
            (Some(other), _) => return Err(format!("unknown admin command '{other}'")),
            (None, _) => return Err("admin needs a command: grant, revoke or list".to_owned()),
        }),
        Some("keys") => return parse_keys(&mut args).map(Command::Keys),
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some(other) => return Err(format!("unknown command '{other}'")),
    };
    match args.next() {
        None => Ok(command),
        Some(extra) => Err(format!("unexpected argument '{extra}'")),
    }
}

/// What `check-config` prints: one `VARIABLE=value` line per setting, secrets redacted, then
/// any warnings.
pub fn effective_config(config: &Config) -> String {
    let mut out = String::from("# effective configuration (secrets redacted)\n");
    for (name, value) in config.effective() {
        out.push_str(&format!("{name}={value}\n"));
    }
    for warning in &config.warnings {
        out.push_str(&format!("# warning: {warning}\n"));
    }
    out
}

/// The address `healthcheck` calls: the server's `HOST:PORT`, with a wildcard host
/// (`0.0.0.0`, `::`) replaced by the loopback address of the same family.
pub fn healthcheck_address(config: &Config) -> SocketAddr {
    let host = match config.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(host, config.port)
}

/// `GET /health/ready` on `addr`: `Ok` with a one-line report if it answered 200, `Err`
/// saying what went wrong otherwise.
pub fn healthcheck(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let status = ready_status(addr, timeout).with_context(|| format!("unhealthy: {addr}"))?;
    if status != 200 {
        bail!("unhealthy: {addr}/health/ready answered {status}");
    }
    Ok(format!("healthy: {addr}/health/ready answered 200"))
}

fn ready_status(addr: SocketAddr, timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).context("connecting")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: jobpath-server-healthcheck\r\n\
         Connection: close\r\n\r\n"
    )
    .context("sending the request")?;
    let mut line = String::new();
    BufReader::new(stream.take(1024))
        .read_line(&mut line)
        .context("reading the status line")?;
    // "HTTP/1.1 200 OK"
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => Ok(status),
        _ => bail!("not an HTTP response: {:?}", line.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn commands_parse_and_strays_are_refused() {
        assert_eq!(parse_args(&[]), Ok(Command::Serve));
        assert_eq!(parse_args(&["serve"]), Ok(Command::Serve));
        assert_eq!(parse_args(&["migrate"]), Ok(Command::Migrate));
        assert_eq!(parse_args(&["check-config"]), Ok(Command::CheckConfig));
        assert_eq!(parse_args(&["healthcheck"]), Ok(Command::Healthcheck));
        assert_eq!(parse_args(&["--help"]), Ok(Command::Help));
        assert_eq!(parse_args(&["-V"]), Ok(Command::Version));
        assert_eq!(
            parse_args(&["admin", "grant", "a@b.co"]),
            Ok(Command::Admin(AdminCommand::Grant("a@b.co".into())))
        );
        assert_eq!(
            parse_args(&["admin", "revoke", "a@b.co"]),
            Ok(Command::Admin(AdminCommand::Revoke("a@b.co".into())))
        );
        assert_eq!(
            parse_args(&["admin", "list"]),
            Ok(Command::Admin(AdminCommand::List))
        );
        for bad in [
            &["admin"][..],
            &["admin", "grant"],
            &["admin", "promote", "a@b.co"],
            &["admin", "list", "x"],
            &["admin", "grant", "a@b.co", "x"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_args(&["keys", "list"]),
            Ok(Command::Keys(KeysCommand::List))
        );
        assert_eq!(
            parse_args(&["keys", "create", "--alg", "EdDSA"]),
            Ok(Command::Keys(KeysCommand::Create {
                algorithm: Some(crate::auth::signing::KeyAlgorithm::EdDsa)
            }))
        );
        assert_eq!(
            parse_args(&["keys", "create"]),
            Ok(Command::Keys(KeysCommand::Create { algorithm: None }))
        );
        assert_eq!(
            parse_args(&["keys", "revoke", "--force", "k1"]),
            Ok(Command::Keys(KeysCommand::Revoke {
                kid: "k1".into(),
                force: true
            }))
        );
        assert_eq!(
            parse_args(&["keys", "activate", "k1"]),
            Ok(Command::Keys(KeysCommand::Activate {
                kid: "k1".into(),
                force: false
            }))
        );
        for bad in [
            &["keys"][..],
            &["keys", "create", "--alg", "HS256"],
            &["keys", "create", "--alg"],
            &["keys", "activate"],
            &["keys", "activate", "k1", "k2"],
            &["keys", "retire", "k1", "--force"],
            &["keys", "list", "--force"],
            &["keys", "rotate"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
        assert!(parse_args(&["serve", "now"]).is_err());
        assert!(parse_args(&["frobnicate"]).is_err());
    }

    #[test]
    fn the_healthcheck_calls_loopback_when_the_server_listens_everywhere() {
        let mut config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(healthcheck_address(&config).to_string(), "127.0.0.1:8000");
        config.host = "::".parse().unwrap();
        assert_eq!(healthcheck_address(&config).to_string(), "[::1]:8000");
        config.host = "10.1.2.3".parse().unwrap();
        assert_eq!(healthcheck_address(&config).to_string(), "10.1.2.3:8000");
    }

    #[test]
    fn the_healthcheck_reports_a_closed_port_as_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = healthcheck(addr, Duration::from_secs(1)).unwrap_err();
        assert!(format!("{err:#}").starts_with("unhealthy"), "{err:#}");
    }
}
