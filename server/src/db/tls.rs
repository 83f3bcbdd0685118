//! TLS to PostgreSQL.
//!
//! Every connection the server opens goes through one connector, [`Tls`] (rustls, built
//! once at start-up). Whether a connection uses it is its configuration's `sslmode` —
//! `DATABASE_URL`'s, or the default for the configurations of the zero-configuration start —
//! settled by [`settle_ssl_mode`], which [`super::connect::Target::new`] applies to every
//! configuration before anything connects with it:
//!
//! - `sslmode=require`: TLS or no connection, and the server's certificate must verify
//!   against Mozilla's roots (embedded, so a slim container image needs no CA bundle) plus
//!   the PEM certificates in `DB_SSL_ROOT_CERT` — where a managed database's own CA goes
//!   (Amazon RDS, Cloud SQL and others sign with CAs of their own) — and name the host.
//! - `sslmode=disable`, and the default `prefer`: plain TCP. An opportunistic TLS that
//!   cannot verify its peer protects against nothing an attacker on the path cannot undo,
//!   and verifying would refuse the self-signed certificates local PostgreSQL packages
//!   enable by default. So `prefer` is treated as `disable`; ask for `require`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres::config::SslMode;

/// The connector every PostgreSQL connection of this process uses. Cheap to clone.
///
/// A thin wrapper of tokio-postgres-rustls's, for Unix sockets: tokio-postgres asks for a
/// connector with the host name `""` there, which rustls refuses as a server name ("invalid
/// dns name") before anything is sent — so without the wrapper no connection over a socket
/// (the private cluster's, or a `host=/var/run/postgresql` URL) could be made at all.
/// PostgreSQL never speaks TLS on a socket, and a socket's `sslmode` is settled to
/// `disable`, so the name given instead is never checked against anything.
#[derive(Clone)]
pub struct Tls(tokio_postgres_rustls::MakeRustlsConnect);

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for Tls
where
    tokio_postgres_rustls::MakeRustlsConnect: tokio_postgres::tls::MakeTlsConnect<S>,
{
    type Stream =
        <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        S,
    >>::TlsConnect;
    type Error =
        <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = if hostname.is_empty() {
            "localhost"
        } else {
            hostname
        };
        self.0.make_tls_connect(name)
    }
}

/// Builds the connector: Mozilla's roots, plus every certificate in `extra_roots` (a PEM
/// file) if given. A file that cannot be read or holds no certificate is an error.
pub fn connector(extra_roots: Option<&Path>) -> anyhow::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_roots {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("DB_SSL_ROOT_CERT: reading {}", path.display()))?
        {
            let cert =
                cert.with_context(|| format!("DB_SSL_ROOT_CERT: parsing {}", path.display()))?;
            roots.add(cert).with_context(|| {
                format!("DB_SSL_ROOT_CERT: a certificate of {}", path.display())
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(anyhow!(
                "DB_SSL_ROOT_CERT: {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// Applies the rule of the module docs to a connection configuration: `prefer` becomes
/// `disable`; `require` and `disable` stay.
pub fn settle_ssl_mode(pg: &mut tokio_postgres::Config) {
    if pg.get_ssl_mode() == SslMode::Prefer {
        pg.ssl_mode(SslMode::Disable);
    }
}

/// Whether a connection error is a failed TLS negotiation (a certificate that does not
/// verify, a server without TLS under `require`): a configuration problem to report at
/// once, not an outage to wait out.
pub fn is_tls_failure(err: &tokio_postgres::Error) -> bool {
    err.to_string()
        .starts_with("error performing TLS handshake")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_becomes_disable_and_require_stays() {
        for (url, expected) in [
            ("postgres://u@h/db", SslMode::Disable),
            ("postgres://u@h/db?sslmode=prefer", SslMode::Disable),
            ("postgres://u@h/db?sslmode=disable", SslMode::Disable),
            ("postgres://u@h/db?sslmode=require", SslMode::Require),
        ] {
            let mut pg: tokio_postgres::Config = url.parse().unwrap();
            settle_ssl_mode(&mut pg);
            assert_eq!(pg.get_ssl_mode(), expected, "{url}");
        }
    }

    #[test]
    fn a_unix_socket_gets_a_connector_though_it_has_no_host_name() {
        use tokio_postgres::tls::MakeTlsConnect;
        // tokio-postgres's request for a socket: no name. The bare rustls connector refuses.
        let mut tls = connector(None).unwrap();
        assert!(
            MakeTlsConnect::<tokio::net::UnixStream>::make_tls_connect(&mut tls.0, "").is_err()
        );
        assert!(MakeTlsConnect::<tokio::net::UnixStream>::make_tls_connect(&mut tls, "").is_ok());
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("jobpath-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = connector(Some(&empty)).err().expect("refused");
        assert!(err.to_string().contains("DB_SSL_ROOT_CERT"), "{err:#}");
        assert!(connector(Some(&dir.join("missing.pem"))).is_err());
        assert!(connector(None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
