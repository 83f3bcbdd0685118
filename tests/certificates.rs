//! Certificates made for a test by the `openssl` command line: a CA, a server certificate
//! it signs for 127.0.0.1, a second CA that signed nothing here, and a self-signed server
//! certificate (what Debian's PostgreSQL packages enable by default, the "snakeoil" one).
//! Without `openssl`, [`Certificates::make`] skips the test by the rule of [`crate::skip`].

use std::path::PathBuf;
use std::process::Command;

/// A directory of PEM files: `ca.pem` (the CA), `server.crt` / `server.key` (signed by it,
/// for IP 127.0.0.1), `other-ca.pem` (a CA that signed nothing here), and
/// `self-signed.crt` / `self-signed.key` (for 127.0.0.1, signed by nobody else). Removed
/// on drop.
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    pub fn make(test: &str) -> Option<Certificates> {
        if Command::new("openssl").arg("version").output().is_err() {
            crate::skip::skip(test, "it needs the openssl command (Debian: openssl)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("jobpath-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let key = format!("{ca}.key");
            let pem = format!("{ca}.pem");
            let subject = format!("/CN=JobPath test {ca}");
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem]);
            openssl(&args);
        }
        let mut args = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&args);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=127.0.0.1"];
        args.extend(ec);
        // Not a CA, like Debian's snakeoil certificate: a verifier then finds no issuer
        // (UnknownIssuer) rather than a CA misused as a server certificate.
        args.extend([
            "-addext",
            "subjectAltName = IP:127.0.0.1",
            "-addext",
            "basicConstraints = critical, CA:FALSE",
            "-keyout",
            "self-signed.key",
            "-out",
            "self-signed.crt",
        ]);
        openssl(&args);
        Some(Certificates { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
