//! Secrets in the configuration: [`Secret`], which never shows itself in `Debug`, and the
//! rules for the JWT signing key (`JWT_SECRET_KEY`) and the password pepper
//! (`PASSWORD_PEPPER`).
//!
//! Outside development the key must be set, at least [`MIN_SECRET_BYTES`] long, and not a
//! placeholder copied from documentation; in development a missing one is replaced by a
//! random key for the one process (with a loud warning, logged by `main`), and a weak one is
//! accepted with a warning.

use std::fmt;

use anyhow::bail;

use super::Environment;

/// Minimum JWT secret length outside development (HS256 keys shorter than the hash are weak).
pub const MIN_SECRET_BYTES: usize = 32;

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

/// Words that mark a secret copied from documentation rather than generated.
const PLACEHOLDERS: &[&str] = &["change", "placeholder", "example", "your-secret", "replace"];

/// What is wrong with a configured secret, if anything: a placeholder copied from the
/// documentation, or too short to be a key. The rules of every secret here.
fn weakness(secret: &str) -> Option<&'static str> {
    let lowered = secret.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lowered.contains(p)) {
        Some("is a placeholder")
    } else if secret.len() < MIN_SECRET_BYTES {
        Some("is shorter than 32 bytes")
    } else {
        None
    }
}

/// `JWT_SECRET_KEY_PREVIOUS`, held to the rules of the secret it was: a weak one would let
/// anyone sign HS256 tokens for as long as it stays set.
pub fn previous_secret(
    raw: Option<String>,
    env: Environment,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<Secret>> {
    let Some(raw) = raw else { return Ok(None) };
    match weakness(&raw) {
        None => Ok(Some(Secret(raw))),
        Some(problem) if env == Environment::Production => {
            bail!("JWT_SECRET_KEY_PREVIOUS {problem}; in production it must be a strong secret")
        }
        Some(problem) => {
            warnings.push(format!(
                "JWT_SECRET_KEY_PREVIOUS {problem}; accepted only because APP_ENV=development"
            ));
            Ok(Some(Secret(raw)))
        }
    }
}

/// The signing key from `raw` (`JWT_SECRET_KEY`), and whether it was generated because none
/// was set. Problems tolerated in development are pushed onto `warnings`.
pub fn jwt_secret(
    raw: Option<String>,
    env: Environment,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Secret, bool)> {
    let problem = match &raw {
        None => Some("is not set"),
        Some(s) => weakness(s),
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

/// The pepper of development when `PASSWORD_PEPPER` is unset. It is public, so it protects
/// nothing; it is fixed (not random like the development JWT secret) so that accounts made
/// in development still log in after a restart.
pub const DEVELOPMENT_PEPPER: &str = "jobpath development pepper: public, not a secret";

/// The pepper from `raw` (`PASSWORD_PEPPER`), and whether it is the development one. The
/// rules are the JWT secret's, and it must differ from that secret: the two are kept apart
/// so that rotating the JWT secret leaves every password hash valid.
pub fn password_pepper(
    raw: Option<String>,
    env: Environment,
    jwt_secret: &Secret,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Secret, bool)> {
    let problem = match &raw {
        None => Some("is not set"),
        Some(s) if s == jwt_secret.expose() => Some("is the same as JWT_SECRET_KEY"),
        Some(s) => weakness(s),
    };
    match (raw, problem) {
        (Some(s), None) => Ok((Secret(s), false)),
        (_, Some(problem)) if env == Environment::Production => bail!(
            "PASSWORD_PEPPER {problem}; in production it must be a random value of at least \
             {MIN_SECRET_BYTES} bytes, other than JWT_SECRET_KEY (e.g. `openssl rand -base64 48`)"
        ),
        (Some(s), Some(problem)) => {
            warnings.push(format!(
                "PASSWORD_PEPPER {problem}; accepted only because APP_ENV=development"
            ));
            Ok((Secret(s), false))
        }
        (None, _) => Ok((Secret(DEVELOPMENT_PEPPER.to_owned()), true)),
    }
}
