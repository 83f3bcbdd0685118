//! Verifying JobPath access tokens in another service, without calling the auth server on
//! every request (feature `verify`).
//!
//! The auth server signs access tokens with asymmetric keys (ES256, EdDSA) and publishes the
//! public halves at `/.well-known/jwks.json`. A [`Verifier`] fetches and caches that set
//! (see the `jwks` module for when it asks again) and checks a token locally: the key its
//! `kid` names, with that key's one algorithm, `typ` `at+jwt`, `exp` and `nbf` with leeway,
//! `iss`, `aud`, and `sub == user_id`. Tokens without a `kid` (HS256, the auth server's own)
//! are refused: only published public keys are trusted here.
//!
//! A locally verified token may belong to a session that has just been logged out: it stays
//! valid until it expires (minutes). Routes that must see a logout at once also ask the auth
//! server, with [`Verifier::verify_active`] (or [`Verifier::introspect`]), which needs an
//! API key with the `introspect` scope.
//!
//! ```no_run
//! # async fn demo(token: &str) -> Result<(), jobpath_client::verify::Error> {
//! use jobpath_client::verify::Verifier;
//!
//! let verifier = Verifier::builder("http://127.0.0.1:8000", "jobpath-api", "jobpath").build()?;
//! let claims = verifier.verify(token).await?;
//! println!("hello, {}", claims.email);
//! # Ok(()) }
//! ```
//!
//! [`VerifierBuilder::discover`] instead takes the key set's address from the auth server's
//! `/.well-known/openid-configuration` and checks its issuer at start-up. A `Verifier` is
//! cheap to clone (the clones share one key cache): build one at start-up.

mod claims;
mod error;
mod jwks;

pub use claims::{Claims, Introspection};
pub use error::Error;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use reqwest::header::{AUTHORIZATION, HeaderValue};

use jwks::{KeyCache, Lookup};

/// The JOSE `typ` of an access token (RFC 9068 section 2.1).
const TYPE: &str = "at+jwt";
/// The same, as a full media type, which RFC 7515 section 4.1.9 also allows.
const MEDIA_TYPE: &str = "application/at+jwt";

/// The auth server's own tolerance for clock skew (`server/src/auth/token.rs`).
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Short enough that a hung auth server does not hold requests for long; the key cache
/// keeps serving its stale set meanwhile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for a [`Verifier`]; [`Verifier::builder`] makes one.
pub struct VerifierBuilder {
    base_url: String,
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    leeway: Duration,
    min_refresh_interval: Duration,
    introspection_key: Option<String>,
    http: Option<reqwest::Client>,
}

impl VerifierBuilder {
    /// Where the key set is, when not at `{base}/.well-known/jwks.json`.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Clock skew tolerated for `exp`, `nbf` and `iat` (default 30 s, as the auth server).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The least time between two fetches caused by tokens naming unknown keys, and between
    /// retries after a failed fetch (default 60 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// An API key with the `introspect` scope, for [`Verifier::introspect`].
    pub fn introspection_key(mut self, key: impl Into<String>) -> Self {
        self.introspection_key = Some(key.into());
        self
    }

    /// The HTTP client to fetch with (for TLS settings or a proxy); by default one with
    /// short timeouts.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds after reading `{base}/.well-known/openid-configuration` (OpenID Connect
    /// Discovery): the key set's address is its `jwks_uri` (unless [`jwks_url`](Self::jwks_url)
    /// was given), and its `issuer` must be the expected one, so that a misconfigured issuer
    /// fails at start-up rather than on every token. Fails if the auth server cannot be
    /// reached; [`build`](Self::build) does not need it to be.
    pub async fn discover(mut self) -> Result<Verifier, Error> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let base = self.base_url.trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let http = match self.http.take() {
            Some(http) => http,
            None => default_http()?,
        };
        let failed = |e: reqwest::Error| Error::Config(format!("{url}: {e}"));
        let response = http.get(&url).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Config(format!("{url}: status {status}")));
        }
        let found: Discovery = response.json().await.map_err(failed)?;
        // The keys decide what is trusted: they must come from the server asked, over the
        // same scheme, not from wherever a document (or whoever altered it) points.
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_owned(),
                    u.host_str().map(str::to_owned),
                    u.port_or_known_default(),
                )
            })
        };
        if origin(&found.jwks_uri).is_none() || origin(&found.jwks_uri) != origin(base) {
            return Err(Error::Config(format!(
                "{url} names the key set {:?}, not on {base}",
                found.jwks_uri
            )));
        }
        if found.issuer != self.issuer {
            return Err(Error::Config(format!(
                "{url} names the issuer {:?}, not {:?}",
                found.issuer, self.issuer
            )));
        }
        self.jwks_url.get_or_insert(found.jwks_uri);
        self.http = Some(http);
        self.build()
    }

    pub fn build(self) -> Result<Verifier, Error> {
        let base = self.base_url.trim_end_matches('/').to_owned();
        let jwks_url = self
            .jwks_url
            .unwrap_or_else(|| format!("{base}/.well-known/jwks.json"));
        let introspect_url = format!("{base}/auth/introspect");
        for url in [&jwks_url, &introspect_url] {
            reqwest::Url::parse(url).map_err(|e| Error::Config(format!("{url}: {e}")))?;
        }
        let introspection_auth = match self.introspection_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    Error::Config("the introspection key is not a valid header value".into())
                })?;
                // Keeps the key out of reqwest's Debug output.
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = match self.http {
            Some(http) => http,
            None => default_http()?,
        };
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.leeway = self.leeway.as_secs();
            // jsonwebtoken checks nbf only when asked, and requires only exp by default.
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                es256: validation(Algorithm::ES256),
                eddsa: validation(Algorithm::EdDSA),
                keys: KeyCache::new(http.clone(), jwks_url, self.min_refresh_interval),
                http,
                leeway: self.leeway.as_secs() as i64,
                introspect_url,
                introspection_auth,
            }),
        })
    }
}

/// Checks access tokens against the auth server's published keys. Clones share one cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeyCache,
    http: reqwest::Client,
    /// The rules per algorithm, built once: iss, aud, required claims, leeway.
    es256: Validation,
    eddsa: Validation,
    leeway: i64,
    introspect_url: String,
    introspection_auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("jwks_url", &self.inner.keys.url())
            .field("issuer", &self.inner.es256.iss)
            .field("audience", &self.inner.es256.aud)
            .field("introspection", &self.inner.introspection_auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of the tokens that the auth server at `base_url` issues with `iss` =
    /// `issuer` and `aud` = `audience` (its `JWT_ISSUER` and `JWT_AUDIENCE`).
    pub fn builder(
        base_url: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> VerifierBuilder {
        VerifierBuilder {
            base_url: base_url.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            leeway: DEFAULT_LEEWAY,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            introspection_key: None,
            http: None,
        }
    }

    /// Verifies `token` (without `Bearer `) locally and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Malformed)?;
        let typ = header.typ.as_deref().unwrap_or_default();
        if !(typ.eq_ignore_ascii_case(TYPE) || typ.eq_ignore_ascii_case(MEDIA_TYPE)) {
            return Err(Error::NotAnAccessToken);
        }
        // Checked before any key lookup, so that tokens we would never accept (HS256, with
        // or without a kid) cannot cause fetches.
        let validation = match header.alg {
            Algorithm::ES256 => &self.inner.es256,
            Algorithm::EdDSA => &self.inner.eddsa,
            other => return Err(Error::AlgorithmNotAllowed(other)),
        };
        let kid = header.kid.as_deref().ok_or(Error::NoKeyId)?;
        let key = self.inner.keys.key(kid).await.map_err(|e| match e {
            Lookup::Unavailable(why) => Error::JwksUnavailable(why),
            Lookup::Unknown => Error::UnknownKey,
        })?;
        // The key decides the algorithm, never the token: an EdDSA header on an ES256 key's
        // kid is refused rather than tried.
        if key.alg != header.alg {
            return Err(Error::AlgorithmMismatch {
                token: header.alg,
                key: key.alg,
            });
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, validation)
            .map_err(Error::from_jwt)?
            .claims;
        if claims.sub != claims.user_id.to_string() {
            return Err(Error::SubjectMismatch);
        }
        if claims.iat > now() + self.inner.leeway {
            return Err(Error::NotYetValid);
        }
        Ok(claims)
    }

    /// Asks the auth server whether `token` is still active (RFC 7662). Costs a request:
    /// use it where a logout must take effect at once, after [`verify`](Self::verify).
    pub async fn introspect(&self, token: &str) -> Result<Introspection, Error> {
        let auth = self
            .inner
            .introspection_auth
            .as_ref()
            .ok_or(Error::IntrospectionNotConfigured)?;
        let url = &self.inner.introspect_url;
        let failed = |e: reqwest::Error| Error::IntrospectionFailed(format!("{url}: {e}"));
        let response = self
            .inner
            .http
            .post(url)
            .header(AUTHORIZATION, auth.clone())
            .form(&[("token", token)])
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::IntrospectionFailed(format!(
                "{url}: status {status}"
            )));
        }
        response.json().await.map_err(failed)
    }

    /// [`verify`](Self::verify), then [`introspect`](Self::introspect): the claims of a
    /// token that is valid and whose session the auth server says is still live.
    pub async fn verify_active(&self, token: &str) -> Result<Claims, Error> {
        let claims = self.verify(token).await?;
        let answer = self.introspect(token).await?;
        if !answer.active {
            return Err(Error::Inactive);
        }
        let other_session = answer.sid.is_some_and(|sid| sid != claims.sid);
        let other_subject = answer.sub.as_deref().is_some_and(|sub| sub != claims.sub);
        if other_session || other_subject {
            return Err(Error::IntrospectionFailed(
                "the answer is about another token".into(),
            ));
        }
        Ok(claims)
    }
}

fn default_http() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
