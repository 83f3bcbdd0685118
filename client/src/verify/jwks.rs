//! The published signing keys: fetching the JWK set, reading it, and caching it.
//!
//! One [`KeyCache`] per verifier holds the last good set and decides when to ask the auth
//! server again. The rules, and why:
//!
//! - A set is fresh for the response's `max-age` (300 s when absent), as the server says — a
//!   key it revokes stops being trusted here within that time — but never less than a
//!   second (so `no-store` or `max-age=0` cannot make every request a fetch) and never more
//!   than a day.
//! - A stale set is revalidated with `If-None-Match` when the server gave an `ETag`; a 304
//!   keeps the keys and renews their freshness.
//! - A token naming an unknown `kid` may refresh early (the server may have rotated), but at
//!   most once per minimum interval: a flood of forged kids cannot make us hammer the server.
//! - Every fetch happens under one async lock, and a caller that waited for it checks whether
//!   someone else fetched meanwhile: concurrent callers share one request (single flight).
//!   A caller holding a stale set that knows its key does not wait: it uses the stale key
//!   while whoever holds the lock revalidates.
//! - A failed fetch keeps the old set (even stale: an auth server blip must not refuse every
//!   request) and is not retried before the interval has passed. But a set stale for more
//!   than [`MAX_STALE`] is used no more: an outage of the auth server (or a blocked
//!   fetch) must not keep a key it has revoked trusted for ever, so tokens are then
//!   refused as unverifiable.
//!
//! Only keys we can use safely are kept: `EC`/`P-256` for ES256 and `OKP`/`Ed25519` for
//! EdDSA, with a `kid`, and an `alg` (if given) that agrees with the key type. Anything else
//! (`oct`, RSA, other curves, `use` other than `sig`, a `kid` published twice) is ignored.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::lock::Mutex;
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH};
use serde::Deserialize;

/// Freshness when the response has no `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// The shortest time a fetched set is used without asking again.
const MIN_FRESHNESS: Duration = Duration::from_secs(1);
/// How long past its freshness a set is still used when it cannot be renewed.
pub(crate) const MAX_STALE: Duration = Duration::from_secs(60 * 60);
/// Longest we trust a set without asking again, whatever the server says.
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// A JWK set of a few keys is a few KiB; anything much larger is not ours.
const MAX_BODY: usize = 256 * 1024;

/// A public key from the set, with the one algorithm it verifies.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) alg: Algorithm,
    pub(crate) decoding: DecodingKey,
}

/// One fetched set and how long it is good for.
struct KeySet {
    keys: Arc<HashMap<String, Key>>,
    etag: Option<HeaderValue>,
    fresh_until: Instant,
}

/// What the last fetches did, for the rate limits. Only touched under the fetch lock.
#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// Why the last attempt failed, if it did (no secrets: URLs and status codes).
    last_failure: Option<String>,
    /// When a token with an unknown kid last caused a fetch.
    last_early: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// No set yet, or the set is stale.
    Due,
    /// The set is fresh but does not know the token's kid.
    UnknownKid,
}

/// Why no key could be found for a kid.
pub(crate) enum Lookup {
    /// No set could ever be fetched; the message says why.
    Unavailable(String),
    /// The (possibly stale) set has no usable key of that kid.
    Unknown,
}

pub(crate) struct KeyCache {
    http: reqwest::Client,
    url: String,
    min_interval: Duration,
    /// Read on every verification, written after a fetch; never held across an await.
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held for the duration of a fetch: this is the single flight.
    fetch: Mutex<FetchState>,
}

impl KeyCache {
    pub(crate) fn new(http: reqwest::Client, url: String, min_interval: Duration) -> KeyCache {
        KeyCache {
            http,
            url,
            min_interval,
            current: RwLock::new(None),
            fetch: Mutex::new(FetchState::default()),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key `kid` names, fetching the set first when that is due and allowed.
    pub(crate) async fn key(&self, kid: &str) -> Result<Key, Lookup> {
        let seen = self.snapshot();
        let now = Instant::now();
        let failure = match &seen {
            Some(set) if now < set.fresh_until => match set.keys.get(kid) {
                Some(key) => return Ok(key.clone()),
                None => {
                    let mut state = self.fetch.lock().await;
                    self.fetch_if_needed(&mut state, &seen, Reason::UnknownKid)
                        .await
                }
            },
            Some(set) if set.keys.contains_key(kid) && now < set.fresh_until + MAX_STALE => {
                // Stale but knows the key: revalidate unless someone already is, and do not
                // make this request wait for it.
                match self.fetch.try_lock() {
                    Some(mut state) => self.fetch_if_needed(&mut state, &seen, Reason::Due).await,
                    None => None,
                }
            }
            _ => {
                let mut state = self.fetch.lock().await;
                self.fetch_if_needed(&mut state, &seen, Reason::Due).await
            }
        };
        match self.snapshot() {
            None => Err(Lookup::Unavailable(
                failure.unwrap_or_else(|| "no key set fetched yet".to_owned()),
            )),
            Some(set) if Instant::now() >= set.fresh_until + MAX_STALE => {
                Err(Lookup::Unavailable(format!(
                    "the key set is over {} s stale{}",
                    MAX_STALE.as_secs(),
                    failure.map(|f| format!(": {f}")).unwrap_or_default()
                )))
            }
            Some(set) => set.keys.get(kid).cloned().ok_or(Lookup::Unknown),
        }
    }

    /// Fetches unless someone did while we waited for the lock, or a rate limit says no.
    /// Returns the last failure, if the set could not be renewed.
    async fn fetch_if_needed(
        &self,
        state: &mut FetchState,
        seen: &Option<Arc<KeySet>>,
        reason: Reason,
    ) -> Option<String> {
        let current = self.snapshot();
        let someone_fetched = match (seen, &current) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        };
        if someone_fetched {
            return None;
        }
        let now = Instant::now();
        let recent = |at: Option<Instant>| {
            at.is_some_and(|t| now.saturating_duration_since(t) < self.min_interval)
        };
        if state.last_failure.is_some() && recent(state.last_attempt) {
            return state.last_failure.clone();
        }
        if reason == Reason::UnknownKid && recent(state.last_early) {
            return None;
        }
        state.last_attempt = Some(now);
        if reason == Reason::UnknownKid {
            state.last_early = Some(now);
        }
        match self.fetch_set(current.as_deref()).await {
            Ok(set) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
                state.last_failure = None;
                None
            }
            Err(why) => {
                state.last_failure = Some(why.clone());
                Some(why)
            }
        }
    }

    /// One GET of the set: a new set, the old keys renewed by a 304, or why not.
    async fn fetch_set(&self, old: Option<&KeySet>) -> Result<KeySet, String> {
        let mut request = self.http.get(&self.url);
        if let Some(etag) = old.and_then(|set| set.etag.as_ref()) {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("fetching {}: {e}", self.url))?;
        let status = response.status();
        let fresh_until = Instant::now() + self.freshness(response.headers());
        let etag = response.headers().get(ETAG).cloned();
        if status == StatusCode::NOT_MODIFIED
            && let Some(old) = old
        {
            return Ok(KeySet {
                keys: Arc::clone(&old.keys),
                etag: etag.or_else(|| old.etag.clone()),
                fresh_until,
            });
        }
        if status != StatusCode::OK {
            return Err(format!("fetching {}: status {status}", self.url));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading {}: {e}", self.url))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "{}: the key set is over {MAX_BODY} bytes",
                    self.url
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_set(&body).map_err(|e| format!("{}: not a JWK set: {e}", self.url))?;
        Ok(KeySet {
            keys: Arc::new(keys),
            etag,
            fresh_until,
        })
    }

    /// The set's `max-age`, as the server says (a key revoked there is dropped here once
    /// it runs out), but at least [`MIN_FRESHNESS`] (or the minimum refresh interval, if a
    /// verifier set it lower), so a `no-store` answer cannot make every request a fetch;
    /// at most a day.
    fn freshness(&self, headers: &HeaderMap) -> Duration {
        max_age(headers)
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(MIN_FRESHNESS.min(self.min_interval), MAX_MAX_AGE)
    }
}

/// `Cache-Control`'s `max-age`, with `no-store` and `no-cache` meaning zero.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=")
                && let Ok(secs) = secs.trim_matches('"').parse::<u64>()
            {
                age = Some(Duration::from_secs(secs));
            }
        }
    }
    age
}

/// The fields of a JWK we look at (RFC 7517 section 4, RFC 7518 section 6, RFC 8037).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a set, by kid. Keys we cannot use are skipped, not errors: a set may
/// rightly hold keys for other consumers.
fn parse_set(body: &[u8]) -> Result<HashMap<String, Key>, serde_json::Error> {
    let raw: RawSet = serde_json::from_slice(body)?;
    let mut keys = HashMap::new();
    let mut duplicated = Vec::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        let Some((kid, key)) = usable(jwk) else {
            continue;
        };
        if keys.insert(kid.clone(), key).is_some() {
            duplicated.push(kid);
        }
    }
    // A kid that names two keys names neither: we will not guess which one was meant.
    for kid in duplicated {
        keys.remove(&kid);
    }
    Ok(keys)
}

/// base64url without padding of 32 bytes: a P-256 coordinate or an Ed25519 public key.
const B64_32_BYTES: usize = 43;

fn usable(jwk: RawJwk) -> Option<(String, Key)> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = jwk.kid.filter(|kid| !kid.is_empty())?;
    let x = jwk.x.filter(|x| x.len() == B64_32_BYTES)?;
    let (alg, decoding) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EC", Some("P-256")) => {
            let y = jwk.y.filter(|y| y.len() == B64_32_BYTES)?;
            (
                Algorithm::ES256,
                DecodingKey::from_ec_components(&x, &y).ok()?,
            )
        }
        ("OKP", Some("Ed25519")) => (Algorithm::EdDSA, DecodingKey::from_ed_components(&x).ok()?),
        _ => return None,
    };
    // The key type decides the algorithm; an `alg` saying otherwise is a broken key.
    if jwk.alg.is_some_and(|named| named != format!("{alg:?}")) {
        return None;
    }
    Some((kid, Key { alg, decoding }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cache_control: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_str(cache_control).unwrap());
        h
    }

    #[test]
    fn max_age_reads_the_directive_and_no_store_means_zero() {
        assert_eq!(
            max_age(&headers("public, max-age=300")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(&headers("Max-Age=7")), Some(Duration::from_secs(7)));
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(
            max_age(&headers("max-age=60, no-cache")),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&headers("max-age=soon")), None);
    }

    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn only_signing_keys_whose_alg_matches_their_type_are_kept() {
        let set = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "ec", "alg": "ES256", "use": "sig"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "ed", "alg": "EdDSA"},
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "ec-as-ed", "alg": "EdDSA"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "ed-as-hs", "alg": "HS256"},
            {"kty": "oct", "k": X, "kid": "hmac", "alg": "HS256"},
            {"kty": "EC", "crv": "P-384", "x": X, "y": Y, "kid": "p384"},
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "enc", "use": "enc"},
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "twice"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "twice"},
            "not even an object"
        ]});
        let keys = parse_set(set.to_string().as_bytes()).unwrap();
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ec", "ed"]);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
        assert_eq!(keys["ed"].alg, Algorithm::EdDSA);
    }
}
