//! API keys: their form, their checksum, their stored hash and their scopes.
//!
//! A key is `jp_pat_` + 256 random bits in base64url (43 characters) + `_` + a checksum of
//! everything before it (CRC-32, 6 base62 characters), 57 characters in all. The fixed
//! prefix lets secret scanners find a leaked key, and the checksum lets them (and the
//! guard) tell a key from a string that only looks like one: [`parse`] refuses a mistyped
//! or truncated key before anything reads the database. The checksum is not a secret and
//! proves nothing about who made the key: the 256 random bits are the key's strength.
//!
//! The database keeps only an HMAC-SHA256 of the whole key, under a key derived from the
//! JWT secret for this purpose (`auth::keys::Purpose::ApiKeyHash`), and the first 15
//! characters ([`Parsed::prefix`]) for people to recognise it by.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What every key starts with; the guard tells a key from a JWT by it, before any other work.
pub const PREFIX: &str = "jp_pat_";
/// Characters of the random part: 32 bytes in unpadded base64url.
const SECRET_CHARS: usize = 43;
/// Characters of the checksum: 62^6 > 2^32, so every CRC-32 fits.
const CHECKSUM_CHARS: usize = 6;
/// The whole key.
pub const KEY_CHARS: usize = PREFIX.len() + SECRET_CHARS + 1 + CHECKSUM_CHARS;
/// Characters of the key kept in the clear: the prefix and 8 of the random part (48 bits,
/// enough to tell one's keys apart, far too few to guess the rest from).
const SHOWN_CHARS: usize = PREFIX.len() + 8;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may call. The wire names are the spec's `ApiKeyScope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `get_me`: the account the key belongs to.
    AccountRead,
    /// `introspect_token`.
    Introspect,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::AccountRead, Scope::Introspect];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AccountRead => "account:read",
            Scope::Introspect => "introspect",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A string that has the form of a key and its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a>(&'a str);

impl<'a> Parsed<'a> {
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// The part of the key shown in lists and logs.
    pub fn prefix(&self) -> &'a str {
        &self.0[..SHOWN_CHARS]
    }
}

/// Why a string is not a key (for the log line; the client is told `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Length,
    Prefix,
    Encoding,
    Checksum,
}

impl Malformed {
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::Length => "api key of the wrong length",
            Malformed::Prefix => "api key without its prefix",
            Malformed::Encoding => "api key not in base64url",
            Malformed::Checksum => "api key checksum mismatch",
        }
    }
}

/// Whether `token` claims to be an API key. One comparison of 7 bytes: what the guard
/// pays on every access token.
pub fn looks_like_key(token: &str) -> bool {
    token.as_bytes().starts_with(PREFIX.as_bytes())
}

/// Checks the form and the checksum of `token`, with no allocation and no I/O.
pub fn parse(token: &str) -> Result<Parsed<'_>, Malformed> {
    if token.len() != KEY_CHARS {
        return Err(Malformed::Length);
    }
    if !looks_like_key(token) {
        return Err(Malformed::Prefix);
    }
    let body_end = PREFIX.len() + SECRET_CHARS;
    let secret = &token.as_bytes()[PREFIX.len()..body_end];
    if token.as_bytes()[body_end] != b'_' {
        return Err(Malformed::Encoding);
    }
    // 43 base64url characters hold 258 bits: the last one's low 2 bits must be zero, or
    // two spellings would name one key. The engine refuses such trailing bits.
    let mut bytes = [0u8; 32];
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(secret, &mut bytes) {
        Ok(32) => {}
        _ => return Err(Malformed::Encoding),
    }
    let expected = checksum(&token.as_bytes()[..body_end]);
    if token.as_bytes()[body_end + 1..] != expected {
        return Err(Malformed::Checksum);
    }
    Ok(Parsed(token))
}

/// CRC-32 (IEEE 802.3, as zlib and PNG) of `data` in 6 base62 digits, most significant first.
fn checksum(data: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let mut n = u64::from(crc32(data));
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// The bitwise CRC-32: a key is 50 bytes, so a table would buy nothing worth its code.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The key that hashes stored keys.
pub struct ApiKeyKeys {
    key: [u8; 32],
}

impl ApiKeyKeys {
    pub fn new(jwt_secret: &[u8]) -> ApiKeyKeys {
        ApiKeyKeys {
            key: super::keys::derive(jwt_secret, super::keys::Purpose::ApiKeyHash),
        }
    }

    /// A new key, with its checksum.
    pub fn fresh(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        with_checksum(&bytes)
    }

    /// What the database stores in place of `key`.
    pub fn hash(&self, key: Parsed<'_>) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("32-byte key");
        mac.update(key.as_str().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

fn with_checksum(random: &[u8; 32]) -> String {
    let mut key = String::with_capacity(KEY_CHARS);
    key.push_str(PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(random, &mut key);
    let sum = checksum(key.as_bytes());
    key.push('_');
    key.extend(sum.iter().map(|&b| char::from(b)));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_standard_one() {
        // The check value of CRC-32/ISO-HDLC, and zlib's crc32 of "hello world".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"hello world"), 0x0D4A_1185);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn the_checksum_is_six_base62_digits_of_the_crc() {
        assert_eq!(&checksum(b""), b"000000");
        // The same digits, computed the slow way.
        let mut n = u64::from(0xCBF4_3926u32);
        let mut digits = Vec::new();
        while n > 0 {
            digits.push(BASE62[(n % 62) as usize]);
            n /= 62;
        }
        while digits.len() < 6 {
            digits.push(b'0');
        }
        digits.reverse();
        assert_eq!(checksum(b"123456789").to_vec(), digits);
        assert_eq!(checksum(&[0xFF; 64]).len(), 6);
    }

    #[test]
    fn a_fresh_key_has_the_documented_form_and_parses() {
        let keys = ApiKeyKeys::new(b"a configured secret of thirty-two bytes");
        let key = keys.fresh();
        assert_eq!(key.len(), KEY_CHARS);
        assert_eq!(KEY_CHARS, 57);
        assert!(key.starts_with("jp_pat_"));
        assert_eq!(key.as_bytes()[50], b'_');
        assert!(
            key[7..50]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(key[51..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let parsed = parse(&key).expect("a fresh key parses");
        assert_eq!(parsed.prefix(), &key[..15]);
        assert_ne!(keys.fresh(), key, "random");
    }

    #[test]
    fn every_single_character_typo_is_refused_by_the_checksum_or_the_form() {
        let key = with_checksum(&[7u8; 32]);
        assert!(parse(&key).is_ok());
        let alphabet = b"ABCXYZabcxyz0189-_";
        for at in PREFIX.len()..KEY_CHARS {
            for &c in alphabet {
                if key.as_bytes()[at] == c {
                    continue;
                }
                let mut typo = key.clone().into_bytes();
                typo[at] = c;
                let typo = String::from_utf8(typo).unwrap();
                assert!(parse(&typo).is_err(), "{typo} accepted");
            }
        }
        // Two adjacent characters swapped.
        let mut swapped = key.clone().into_bytes();
        swapped.swap(20, 21);
        if swapped != key.as_bytes() {
            assert_eq!(
                parse(std::str::from_utf8(&swapped).unwrap()),
                Err(Malformed::Checksum)
            );
        }
    }

    #[test]
    fn other_strings_are_refused_with_their_reason() {
        let key = with_checksum(&[9u8; 32]);
        assert_eq!(parse(&key[..56]), Err(Malformed::Length));
        assert_eq!(parse(&format!("{key}x")), Err(Malformed::Length));
        assert_eq!(
            parse(&format!("jp_xyz_{}", &key[7..])),
            Err(Malformed::Prefix)
        );
        let mut bad = key.clone().into_bytes();
        bad[10] = b'!';
        assert_eq!(
            parse(std::str::from_utf8(&bad).unwrap()),
            Err(Malformed::Encoding)
        );
        let mut bad = key.clone().into_bytes();
        bad[50] = b'x';
        assert_eq!(
            parse(std::str::from_utf8(&bad).unwrap()),
            Err(Malformed::Encoding)
        );
        // A non-canonical last character (low bits set) is another spelling: refused.
        let mut bad = key.clone().into_bytes();
        bad[49] = b'B';
        assert!(parse(std::str::from_utf8(&bad).unwrap()).is_err());
        assert!(parse("").is_err());
        assert!(!looks_like_key("eyJhbGciOiJIUzI1NiJ9.e30.x"));
        assert!(looks_like_key("jp_pat_"));
    }

    #[test]
    fn the_stored_hash_is_keyed_and_deterministic() {
        let key = with_checksum(&[1u8; 32]);
        let parsed = parse(&key).unwrap();
        let a = ApiKeyKeys::new(b"a configured secret of thirty-two bytes");
        let b = ApiKeyKeys::new(b"another secret, also long enough!!");
        assert_eq!(a.hash(parsed), a.hash(parsed));
        assert_ne!(a.hash(parsed), b.hash(parsed));
        assert_eq!(a.hash(parsed).len(), 32);
    }

    #[test]
    fn scopes_have_the_specs_names() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("admin"), None);
        let spec: serde_json::Value = serde_json::from_slice(crate::spec::JSON).unwrap();
        let names: Vec<&str> = spec["components"]["schemas"]["ApiKeyScope"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, Scope::ALL.map(Scope::as_str));
    }
}
