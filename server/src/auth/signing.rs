//! Asymmetric signing keys (ES256, EdDSA): making them, sealing their private half, and the
//! [`KeySet`] every instance signs and verifies with, built from the `signing_keys` table.
//!
//! A key is 32 random bytes — a P-256 scalar or an Ed25519 seed — from which everything
//! else follows: the PKCS#8 document jsonwebtoken signs with, the public JWK (RFC 7517)
//! the JWKS publishes, and the `kid`, the key's RFC 7638 thumbprint, so a kid names one
//! key for ever and a verifier can check it. The private half is stored sealed
//! (AES-256-GCM under a key derived from `JWT_SECRET_KEY`, the kid as associated data),
//! and opened only by a server that signs with it.
//!
//! The set holds the one signing key (if any) and a verifier for each standby, active and
//! retired key, each with the algorithm its row names: a token is verified only with the
//! key its header's `kid` names and that key's algorithm (`auth::token`). A standby key
//! signs nothing, but it verifies: an instance that has already seen it activated may
//! sign with it before this one has re-read the table, and its tokens must not be
//! refused meanwhile (other verifiers have it from the JWKS anyway). The JWKS document and
//! its ETag are rendered once per set, not per request.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::keys::{self, Purpose};

/// The asymmetric algorithms a key can have (`JWT_ALGORITHM`, `keys create --alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256: the widest verifier support (Web Crypto included).
    Es256,
    /// Ed25519.
    EdDsa,
}

impl KeyAlgorithm {
    /// The JOSE name, as in `alg` and the `algorithm` column.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// The JOSE name, exactly (the column's values, `JWT_ALGORITHM` after case folding).
    pub fn parse(name: &str) -> Option<KeyAlgorithm> {
        match name {
            "ES256" => Some(KeyAlgorithm::Es256),
            "EdDSA" => Some(KeyAlgorithm::EdDsa),
            _ => None,
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            KeyAlgorithm::Es256 => Algorithm::ES256,
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A key's place in its life (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Standby,
    Active,
    Retired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Standby => "standby",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        }
    }

    pub fn parse(name: &str) -> Option<KeyState> {
        [
            KeyState::Standby,
            KeyState::Active,
            KeyState::Retired,
            KeyState::Revoked,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Length of the AES-GCM nonce that starts a sealed key.
const NONCE_BYTES: usize = 12;

/// Seals and opens private keys with the key derived from the current secret, and opens
/// (for re-sealing) those sealed under `JWT_SECRET_KEY_PREVIOUS`.
pub struct Sealer {
    current: Aes256Gcm,
    previous: Option<Aes256Gcm>,
}

/// A private key, opened; says whether it was sealed under the previous secret (and so
/// should be sealed again under the current one).
pub struct Opened {
    pub secret: zeroize::Zeroizing<[u8; 32]>,
    pub under_previous: bool,
}

impl Sealer {
    pub fn new(secret: &[u8], previous: Option<&[u8]>) -> Sealer {
        let cipher = |s: &[u8]| {
            Aes256Gcm::new_from_slice(&keys::derive(s, Purpose::SigningKeySeal))
                .expect("a 32-byte key")
        };
        Sealer {
            current: cipher(secret),
            previous: previous.map(cipher),
        }
    }

    /// `secret` sealed for the key `kid`: nonce, then ciphertext and tag.
    pub fn seal(&self, kid: &str, secret: &[u8; 32]) -> Vec<u8> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let sealed = self
            .current
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: kid.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The private key sealed for `kid`, under the current secret or the previous one.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> anyhow::Result<Opened> {
        anyhow::ensure!(sealed.len() > NONCE_BYTES, "sealed key too short");
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at its length");
        let open = |cipher: &Aes256Gcm| {
            cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: kid.as_bytes(),
                    },
                )
                .ok()
                .map(zeroize::Zeroizing::new)
        };
        let (plain, under_previous) = match open(&self.current) {
            Some(plain) => (plain, false),
            None => match self.previous.as_ref().and_then(open) {
                Some(plain) => (plain, true),
                None => bail!(
                    "the private key of signing key {kid} does not open with JWT_SECRET_KEY{}; \
                     it was sealed under another secret (set JWT_SECRET_KEY_PREVIOUS to it)",
                    if self.previous.is_some() {
                        " nor JWT_SECRET_KEY_PREVIOUS"
                    } else {
                        ""
                    }
                ),
            },
        };
        let secret: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("the private key of signing key {kid} is not 32 bytes"))?;
        Ok(Opened {
            secret: zeroize::Zeroizing::new(secret),
            under_previous,
        })
    }
}

/// A key just made, as it is inserted.
pub struct NewKey {
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    pub sealed: Vec<u8>,
    pub public_jwk: Value,
}

/// A new key of `algorithm`, its private half sealed by `sealer`.
pub fn generate(algorithm: KeyAlgorithm, sealer: &Sealer) -> NewKey {
    let secret = loop {
        let candidate = zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
        // A P-256 scalar must be in [1, n); 32 random bytes miss that about once in 2^32.
        if algorithm == KeyAlgorithm::EdDsa || p256::SecretKey::from_slice(&*candidate).is_ok() {
            break candidate;
        }
    };
    let public_jwk = public_jwk(algorithm, &secret).expect("a valid key has a public half");
    let kid = public_jwk["kid"]
        .as_str()
        .expect("public_jwk sets the kid")
        .to_owned();
    NewKey {
        sealed: sealer.seal(&kid, &secret),
        kid,
        algorithm,
        public_jwk,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of the key with this private half: the RFC 7638 members, plus `kid`
/// (the thumbprint), `alg` and `use`.
pub fn public_jwk(algorithm: KeyAlgorithm, secret: &[u8; 32]) -> anyhow::Result<Value> {
    // RFC 7638: the required members, in lexicographic order, no whitespace.
    let (mut jwk, canonical) = match algorithm {
        KeyAlgorithm::Es256 => {
            let key = p256::SecretKey::from_slice(secret).context("not a P-256 scalar")?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &key.public_key(),
                false,
            );
            let x = b64(point.x().context("the point at infinity")?);
            let y = b64(point.y().context("a compressed point")?);
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            (
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                canonical,
            )
        }
        KeyAlgorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::from_bytes(secret);
            let x = b64(key.verifying_key().as_bytes());
            let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
            (json!({"kty": "OKP", "crv": "Ed25519", "x": x}), canonical)
        }
    };
    let kid = b64(&Sha256::digest(canonical.as_bytes()));
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(algorithm.as_str());
    jwk["use"] = json!("sig");
    Ok(jwk)
}

/// The PKCS#8 document of a private key, which is what jsonwebtoken signs with.
fn encoding_key(algorithm: KeyAlgorithm, secret: &[u8; 32]) -> anyhow::Result<EncodingKey> {
    match algorithm {
        KeyAlgorithm::Es256 => {
            use p256::pkcs8::EncodePrivateKey as _;
            let der = p256::SecretKey::from_slice(secret)
                .context("not a P-256 scalar")?
                .to_pkcs8_der()
                .map_err(|e| anyhow!("encoding a P-256 key: {e}"))?;
            Ok(EncodingKey::from_ec_der(der.as_bytes()))
        }
        KeyAlgorithm::EdDsa => {
            // RFC 8410's OneAsymmetricKey v1 without the public key: a fixed 16-byte prefix
            // and the seed.
            const PREFIX: [u8; 16] = [
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            let der = zeroize::Zeroizing::new([PREFIX.as_slice(), secret].concat());
            Ok(EncodingKey::from_ed_der(&der))
        }
    }
}

/// The verification key of a published JWK, checked to be of the algorithm its row names.
pub fn decoding_key(algorithm: KeyAlgorithm, jwk: &Value) -> anyhow::Result<DecodingKey> {
    let member = |name: &str| {
        jwk[name]
            .as_str()
            .with_context(|| format!("the JWK has no '{name}'"))
    };
    match algorithm {
        KeyAlgorithm::Es256 => {
            anyhow::ensure!(member("kty")? == "EC" && member("crv")? == "P-256");
            Ok(DecodingKey::from_ec_components(member("x")?, member("y")?)?)
        }
        KeyAlgorithm::EdDsa => {
            anyhow::ensure!(member("kty")? == "OKP" && member("crv")? == "Ed25519");
            Ok(DecodingKey::from_ed_components(member("x")?)?)
        }
    }
}

/// A row of `signing_keys` that is not revoked, as the set is built from it.
pub struct StoredKey {
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    pub state: KeyState,
    pub sealed: Vec<u8>,
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    pub header: Header,
    pub key: EncodingKey,
}

/// A key a token may be verified with, and the one algorithm it verifies.
pub struct Verifier {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The active key's kid and private half, when it must be sealed again under the current
/// secret.
pub type Reseal = (String, zeroize::Zeroizing<[u8; 32]>);

/// The keys an instance holds at one moment. Replaced whole when the table changes.
pub struct KeySet {
    pub signer: Option<Signer>,
    pub verifiers: HashMap<String, Verifier>,
    /// `{"keys": [...]}` as served, and its strong ETag (quoted).
    pub jwks: Bytes,
    pub etag: String,
}

impl KeySet {
    /// No keys: what an HS256 server without any asymmetric key holds.
    pub fn empty() -> KeySet {
        KeySet::render(None, HashMap::new(), Vec::new())
    }

    /// The same keys with `signer` signing (a re-read that could not open the active key
    /// keeps signing with the key held, while the table still says it is active).
    pub fn with_signer(mut self, signer: Option<Signer>) -> KeySet {
        self.signer = signer;
        self
    }

    /// The set of `rows` (revoked ones are not given). With `sealer`, the active key's
    /// private half is opened and signs; without, nothing signs here (an HS256 server
    /// verifies and publishes only). Also returns, opened, the active key if it was sealed
    /// under the previous secret, so the caller can seal it again.
    pub fn build(
        rows: &[StoredKey],
        sealer: Option<&Sealer>,
    ) -> anyhow::Result<(KeySet, Option<Reseal>)> {
        let mut signer = None;
        let mut reseal = None;
        let mut verifiers = HashMap::new();
        let mut published = Vec::new();
        // Active first, then the rest by age: verifiers that take the first key find the
        // one in use.
        let mut ordered: Vec<&StoredKey> = rows.iter().collect();
        ordered.sort_by_key(|k| (k.state != KeyState::Active, k.created_at));
        for row in ordered {
            match row.state {
                KeyState::Revoked => continue,
                KeyState::Standby | KeyState::Active | KeyState::Retired => {
                    let key = decoding_key(row.algorithm, &row.public_jwk)
                        .with_context(|| format!("the public key of signing key {}", row.kid))?;
                    verifiers.insert(
                        row.kid.clone(),
                        Verifier {
                            algorithm: row.algorithm.jwt(),
                            key,
                        },
                    );
                }
            }
            if row.state == KeyState::Active
                && let Some(sealer) = sealer
            {
                let opened = sealer.open(&row.kid, &row.sealed)?;
                // The stored public half must be this private key's: a row edited by hand
                // would otherwise sign tokens that nothing verifies.
                let derived = public_jwk(row.algorithm, &opened.secret)?;
                anyhow::ensure!(
                    derived == row.public_jwk && derived["kid"] == json!(row.kid),
                    "signing key {}: its private and public halves do not match",
                    row.kid
                );
                let mut header = Header::new(row.algorithm.jwt());
                header.typ = Some(super::token::TYPE.to_owned());
                header.kid = Some(row.kid.clone());
                signer = Some(Signer {
                    kid: row.kid.clone(),
                    header,
                    key: encoding_key(row.algorithm, &opened.secret)?,
                });
                if opened.under_previous {
                    reseal = Some((row.kid.clone(), opened.secret));
                }
            }
            published.push(row.public_jwk.clone());
        }
        Ok((KeySet::render(signer, verifiers, published), reseal))
    }

    fn render(
        signer: Option<Signer>,
        verifiers: HashMap<String, Verifier>,
        published: Vec<Value>,
    ) -> KeySet {
        let jwks =
            serde_json::to_vec(&json!({ "keys": published })).expect("a JSON value serialises");
        let etag = format!("\"{}\"", b64(&Sha256::digest(&jwks)[..16]));
        KeySet {
            signer,
            verifiers,
            jwks: Bytes::from(jwks),
            etag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(b"a configured secret of thirty-two bytes", None)
    }

    fn stored(new: &NewKey, state: KeyState) -> StoredKey {
        StoredKey {
            kid: new.kid.clone(),
            algorithm: new.algorithm,
            state,
            sealed: new.sealed.clone(),
            public_jwk: new.public_jwk.clone(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_new_key_signs_what_its_published_half_verifies() {
        let sealer = sealer();
        for alg in [KeyAlgorithm::Es256, KeyAlgorithm::EdDsa] {
            let new = generate(alg, &sealer);
            assert_eq!(new.public_jwk["alg"], alg.as_str());
            assert_eq!(new.public_jwk["use"], "sig");
            assert!(new.public_jwk.get("d").is_none(), "no private member");
            assert_eq!(new.kid.len(), 43, "a SHA-256 thumbprint");
            let (set, reseal) =
                KeySet::build(&[stored(&new, KeyState::Active)], Some(&sealer)).expect("builds");
            assert!(reseal.is_none());
            let signer = set.signer.as_ref().expect("the active key signs");
            let claims = json!({"sub": "x", "exp": Utc::now().timestamp() + 60});
            let token = jsonwebtoken::encode(&signer.header, &claims, &signer.key).unwrap();
            let verifier = &set.verifiers[&new.kid];
            let mut validation = jsonwebtoken::Validation::new(alg.jwt());
            validation.set_required_spec_claims(&["exp"]);
            jsonwebtoken::decode::<Value>(&token, &verifier.key, &validation)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            let jwks: Value = serde_json::from_slice(&set.jwks).unwrap();
            assert_eq!(jwks["keys"][0], new.public_jwk);
        }
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let seed: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let jwk = public_jwk(KeyAlgorithm::EdDsa, &seed).unwrap();
        assert_eq!(jwk["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(jwk["kid"], "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn states_decide_what_signs_verifies_and_is_published() {
        let sealer = sealer();
        let keys: Vec<NewKey> = (0..4)
            .map(|_| generate(KeyAlgorithm::Es256, &sealer))
            .collect();
        let rows = [
            stored(&keys[0], KeyState::Standby),
            stored(&keys[1], KeyState::Active),
            stored(&keys[2], KeyState::Retired),
            stored(&keys[3], KeyState::Revoked),
        ];
        let (set, _) = KeySet::build(&rows, Some(&sealer)).unwrap();
        assert_eq!(set.signer.as_ref().unwrap().kid, keys[1].kid);
        let mut verifying: Vec<&String> = set.verifiers.keys().collect();
        verifying.sort();
        let mut expected = vec![&keys[0].kid, &keys[1].kid, &keys[2].kid];
        expected.sort();
        assert_eq!(verifying, expected);
        let jwks: Value = serde_json::from_slice(&set.jwks).unwrap();
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(published[0], keys[1].kid, "the active key first");
        assert_eq!(published.len(), 3);
        assert!(!published.contains(&keys[3].kid.as_str()));
        // Without a sealer (an HS256 server) nothing signs, the rest is the same.
        let (set, _) = KeySet::build(&rows, None).unwrap();
        assert!(set.signer.is_none());
        assert_eq!(set.verifiers.len(), 3);
    }

    #[test]
    fn a_key_opens_under_its_secret_or_the_previous_one_only() {
        let old = Sealer::new(b"the old secret, thirty-two bytes long", None);
        let new = generate(KeyAlgorithm::EdDsa, &old);
        let rotated = Sealer::new(
            b"the new secret, thirty-two bytes long",
            Some(b"the old secret, thirty-two bytes long"),
        );
        let opened = rotated.open(&new.kid, &new.sealed).unwrap();
        assert!(opened.under_previous);
        let (_, reseal) = KeySet::build(&[stored(&new, KeyState::Active)], Some(&rotated)).unwrap();
        assert_eq!(reseal.unwrap().0, new.kid);
        let stranger = Sealer::new(b"the new secret, thirty-two bytes long", None);
        let err = stranger.open(&new.kid, &new.sealed).err().unwrap();
        assert!(
            format!("{err}").contains("JWT_SECRET_KEY_PREVIOUS"),
            "{err}"
        );
        // Sealed for one kid, it does not open as another's.
        assert!(old.open("another-kid", &new.sealed).is_err());
    }

    #[test]
    fn a_row_whose_halves_disagree_does_not_sign() {
        let sealer = sealer();
        let a = generate(KeyAlgorithm::Es256, &sealer);
        let b = generate(KeyAlgorithm::Es256, &sealer);
        let mut row = stored(&a, KeyState::Active);
        row.public_jwk = b.public_jwk.clone();
        assert!(KeySet::build(&[row], Some(&sealer)).is_err());
    }
}
