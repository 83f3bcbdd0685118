//! The second factor's cryptography: TOTP codes (RFC 6238), their secrets sealed at rest,
//! the enrolment's `otpauth://` URI and QR code, and recovery codes.
//!
//! What the database decides (a code accepted once per step, attempts, locks) is in
//! `db::mfa`; the operations are in `handlers::mfa`.
//!
//! - **Codes**: HMAC-SHA-1, 6 digits, 30 s steps — what every authenticator app supports.
//!   A code is checked against the current step and one step each way (clock skew), and
//!   the step it matched is returned, so the caller can accept it at most once.
//! - **Secrets**: 160 random bits (RFC 4226's recommended length), sealed with AES-256-GCM
//!   under a key derived for this purpose alone (`auth::keys`), with the factor's id as
//!   associated data: a sealed secret copied to another factor's row does not open.
//! - **Recovery codes**: 120 random bits, shown as `xxxxxx-xxxxxx-xxxxxx-xxxxxx` in
//!   lowercase base32 (no 0/1/8/9 to misread), stored as keyed hashes (HMAC-SHA256): above
//!   112 bits a fast hash is enough (NIST SP 800-63B 5.1.2.2), and without the server's
//!   secret a stolen table cannot even be tested against.
//! - **Clock**: [`Clock`], the system's unless a test sets one, so tests can step time.

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::keys::{self, Purpose};

/// Seconds per TOTP step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps of clock skew accepted each way.
pub const SKEW_STEPS: i64 = 1;
/// Recovery codes per set.
pub const RECOVERY_CODES: usize = 10;
/// Bytes of a TOTP secret (160 bits).
const SECRET_BYTES: usize = 20;
/// Bytes of a recovery code (120 bits: 24 base32 characters).
const RECOVERY_BYTES: usize = 15;
/// AES-GCM's nonce, stored in front of the ciphertext.
const NONCE_BYTES: usize = 12;

/// Where TOTP checks read the time: the system clock, or a test's.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> i64 + Send + Sync>>);

impl Clock {
    /// A clock that reads `now` (Unix seconds): tests step it to check skew and replays.
    pub fn from_fn(now: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now)))
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        match &self.0 {
            Some(now) => now(),
            None => chrono::Utc::now().timestamp(),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Clock(test)",
            None => "Clock(system)",
        })
    }
}

/// The TOTP step `unix_secs` falls in.
pub fn step_at(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The code of `secret` for `step`.
pub fn code_for_step(secret: &[u8], step: i64) -> String {
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS as u64,
        secret.to_vec(),
    );
    totp.generate((step.max(0) * STEP_SECS) as u64)
}

/// The step whose code `code` is, among the current one and [`SKEW_STEPS`] each way, at
/// `now`; `None` if it is none of them. Every candidate is computed and compared in
/// constant time, so the time taken says nothing about which step (or digit) matched.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let current = step_at(now);
    let mut found = None;
    for step in current - SKEW_STEPS..=current + SKEW_STEPS {
        let expected = code_for_step(secret, step);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new TOTP secret.
pub fn fresh_secret() -> Vec<u8> {
    rand::random::<[u8; SECRET_BYTES]>().to_vec()
}

/// The secret as base32 without padding (what apps take when typed).
pub fn secret_base32(secret: &[u8]) -> String {
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, secret)
}

/// The `otpauth://` URI of Google Authenticator's key URI format, which every app reads:
/// `otpauth://totp/Issuer:account?secret=…&issuer=Issuer&algorithm=SHA1&digits=6&period=30`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent_encode(issuer),
        percent_encode(account),
        secret_base32(secret),
        percent_encode(issuer),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so `:` in an issuer
/// cannot be read as the label's separator, and a space is `%20`, as apps expect).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `uri` as a QR code: a self-contained SVG document, black on white, with its quiet zone.
pub fn qr_svg(uri: &str) -> anyhow::Result<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)?;
    Ok(code
        .render::<svg::Color>()
        .min_dimensions(256, 256)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// Seals and opens TOTP secrets, and hashes recovery codes, with keys derived from the
/// server's secret.
pub struct MfaKeys {
    cipher: Aes256Gcm,
    recovery: [u8; 32],
    pub clock: Clock,
}

impl MfaKeys {
    pub fn new(jwt_secret: &[u8], clock: Clock) -> MfaKeys {
        let key = keys::derive(jwt_secret, Purpose::TotpSecret);
        MfaKeys {
            cipher: Aes256Gcm::new_from_slice(&key).expect("a 32-byte key"),
            recovery: keys::derive(jwt_secret, Purpose::RecoveryCodeHash),
            clock,
        }
    }

    /// `secret` sealed for the factor `factor_id`: nonce, then ciphertext and tag.
    pub fn seal(&self, factor_id: Uuid, secret: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: factor_id.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The secret sealed for `factor_id`; an error if it was sealed with another key (the
    /// server's secret changed) or for another factor.
    pub fn open(&self, factor_id: Uuid, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(sealed.len() > NONCE_BYTES, "sealed secret too short");
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at its length");
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: factor_id.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("TOTP secret does not open with this server's key"))
    }

    /// The stored form of a recovery code, from its [`normalise_recovery_code`] form.
    pub fn recovery_hash(&self, normalised: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.recovery)
            .expect("HMAC takes any key length");
        mac.update(normalised.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// A new set of recovery codes, as shown to the user.
pub fn fresh_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let raw = base32::encode(
                base32::Alphabet::Rfc4648 { padding: false },
                &rand::random::<[u8; RECOVERY_BYTES]>(),
            )
            .to_ascii_lowercase();
            let groups: Vec<&str> = (0..4).map(|i| &raw[i * 6..i * 6 + 6]).collect();
            groups.join("-")
        })
        .collect()
}

/// A typed recovery code as stored: dashes and whitespace dropped, lowercase. `None` if
/// what is left cannot be a code (it is then simply a wrong one).
pub fn normalise_recovery_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (code.len() == 24 && code.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
        .then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows: the algorithm itself, with the RFC's 20-byte
    /// secret and 8 digits (our codes are the same computation cut to 6).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890".to_vec();
        let totp = |time: u64| {
            totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 8, 0, 30, secret.clone())
                .generate(time)
        };
        for (time, code) in [
            (59, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(totp(time), code, "T = {time}");
        }
        // Six digits are the last six of the same value.
        assert_eq!(code_for_step(&secret, step_at(59)), "287082");
        assert_eq!(code_for_step(&secret, step_at(1111111109)), "081804");
    }

    #[test]
    fn one_step_of_skew_each_way_is_accepted_and_two_are_not() {
        let secret = fresh_secret();
        let now = 1_800_000_015;
        let step = step_at(now);
        for (offset, accepted) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = code_for_step(&secret, step + offset);
            let matched = matching_step(&secret, &code, now);
            match accepted {
                true => assert_eq!(matched, Some(step + offset), "offset {offset}"),
                false => assert_eq!(matched, None, "offset {offset}"),
            }
        }
        assert_eq!(matching_step(&secret, "12345", now), None);
    }

    #[test]
    fn sealed_secrets_open_only_for_their_factor_and_key() {
        let keys = MfaKeys::new(b"a configured secret of thirty-two bytes", Clock::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let secret = fresh_secret();
        let sealed = keys.seal(a, &secret);
        assert_eq!(keys.open(a, &sealed).unwrap(), secret);
        assert!(keys.open(b, &sealed).is_err(), "another factor's row");
        let other = MfaKeys::new(b"another secret, also long enough!!", Clock::default());
        assert!(other.open(a, &sealed).is_err(), "another server secret");
        assert_ne!(keys.seal(a, &secret), sealed, "a fresh nonce each time");
    }

    #[test]
    fn recovery_codes_are_distinct_and_typed_forms_normalise() {
        let codes = fresh_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        for code in &codes {
            assert_eq!(code.len(), 27);
            let plain = normalise_recovery_code(code).unwrap();
            assert_eq!(
                normalise_recovery_code(&plain.to_uppercase()).as_deref(),
                Some(plain.as_str())
            );
            assert_eq!(
                normalise_recovery_code(&format!(" {} \n", code.replace('-', " "))).as_deref(),
                Some(plain.as_str())
            );
        }
        assert_eq!(normalise_recovery_code("abc"), None);
        assert_eq!(normalise_recovery_code(&"1".repeat(24)), None);
    }

    #[test]
    fn the_uri_names_issuer_and_account_encoded() {
        let uri = otpauth_uri("Job Path", "ada+1@example.com", &[0xff; 20]);
        assert_eq!(
            uri,
            "otpauth://totp/Job%20Path:ada%2B1%40example.com?secret=77777777777777777777777777777777\
             &issuer=Job%20Path&algorithm=SHA1&digits=6&period=30"
        );
        assert!(qr_svg(&uri).unwrap().starts_with("<?xml"));
    }
}
