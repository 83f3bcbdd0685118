//! What the tests need of an auth server: signing keys made here, tokens signed with them,
//! and a local HTTP server publishing their JWKS (and discovery and introspection), which counts
//! what it is asked so that the tests can assert on fetches rather than on time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jobpath_client::verify::{Claims, Verifier, VerifierBuilder};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

pub const ISSUER: &str = "jobpath-api";
pub const AUDIENCE: &str = "jobpath";
pub const INTROSPECTION_KEY: &str = "jp_test_introspection_key";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A private key, its public JWK, and its public key's bytes (for forgeries).
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
    pub public: Vec<u8>,
}

/// A P-256 key made from `seed` (a fixed seed keeps failures reproducible).
pub fn es256(kid: &str, seed: u8) -> SigningKey {
    use p256::pkcs8::EncodePrivateKey as _;
    let secret = p256::SecretKey::from_slice(&[seed; 32]).unwrap();
    let der = secret.to_pkcs8_der().unwrap();
    let point = secret.public_key().to_encoded_point(false);
    SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        }),
        public: point.as_bytes().to_vec(),
    }
}

/// An Ed25519 key made from `seed`.
pub fn eddsa(kid: &str, seed: u8) -> SigningKey {
    let secret = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let der = secret.to_pkcs8_der().unwrap();
    let public = secret.verifying_key().to_bytes();
    SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
            "x": b64(&public),
        }),
        public: public.to_vec(),
    }
}

impl SigningKey {
    /// The header the auth server will send: the key's alg, `at+jwt`, the key's kid.
    pub fn header(&self) -> Header {
        let mut header = Header::new(self.alg);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        header
    }

    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_with(&self.header(), claims)
    }

    /// Signs anything (claims with a field missing, say) under any header.
    pub fn sign_with(&self, header: &Header, claims: &impl serde::Serialize) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap()
    }
}

/// Valid claims, issued now, for a new user and session.
pub fn claims() -> Claims {
    let user_id = Uuid::new_v4();
    let now = now();
    Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: user_id.to_string(),
        user_id,
        email: "ada@example.com".to_owned(),
        email_verified: true,
        roles: vec![],
        aal: 1,
        amr: vec!["pwd".to_owned()],
        mfa_required: false,
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: Uuid::new_v4(),
        sid: Uuid::new_v4(),
    }
}

/// What the stand-in publishes and what it has been asked.
struct State {
    keys: Vec<Value>,
    etag: Option<String>,
    cache_control: String,
    up: bool,
    jwks_requests: usize,
    not_modified: usize,
    if_none_match: Vec<Option<String>>,
    /// Tokens introspection calls active, with the claims it answers with.
    active: HashMap<String, Claims>,
}

/// A local stand-in for the auth server's `/.well-known/jwks.json` and `/auth/introspect`.
pub struct AuthServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl AuthServer {
    pub async fn start(keys: &[&SigningKey]) -> AuthServer {
        let state = Arc::new(Mutex::new(State {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            etag: None,
            cache_control: "public, max-age=300".to_owned(),
            up: true,
            jwks_requests: 0,
            not_modified: 0,
            if_none_match: vec![],
            active: HashMap::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Connections live in the accept task's set, so that stop() ends them too (a
            // pooled keep-alive connection would otherwise outlive the "down" server).
            let mut connections = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = Arc::clone(&shared);
                let service = service_fn(move |request| handle(Arc::clone(&state), request));
                connections.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AuthServer { addr, state, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A verifier of this server's tokens, with the default settings.
    pub fn verifier(&self) -> VerifierBuilder {
        Verifier::builder(self.base_url(), ISSUER, AUDIENCE)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        self.with(|s| s.keys = keys.iter().map(|k| k.jwk.clone()).collect());
    }

    pub fn publish_raw(&self, keys: Vec<Value>) {
        self.with(|s| s.keys = keys);
    }

    pub fn set_etag(&self, etag: &str) {
        self.with(|s| s.etag = Some(etag.to_owned()));
    }

    pub fn set_cache_control(&self, value: &str) {
        self.with(|s| s.cache_control = value.to_owned());
    }

    /// Down: the key set answers 503.
    pub fn set_up(&self, up: bool) {
        self.with(|s| s.up = up);
    }

    pub fn activate(&self, token: &str, claims: &Claims) {
        self.with(|s| s.active.insert(token.to_owned(), claims.clone()));
    }

    pub fn deactivate(&self, token: &str) {
        self.with(|s| s.active.remove(token));
    }

    /// How many times the key set was asked for (whatever the answer).
    pub fn jwks_requests(&self) -> usize {
        self.with(|s| s.jwks_requests)
    }

    pub fn not_modified(&self) -> usize {
        self.with(|s| s.not_modified)
    }

    /// The `If-None-Match` of each key set request, in order.
    pub fn if_none_match(&self) -> Vec<Option<String>> {
        self.with(|s| s.if_none_match.clone())
    }

    /// Gone altogether: connections refused.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match request.uri().path() {
        // The second path is where discovery says the set is.
        "/.well-known/jwks.json" | "/keys/current.json" => {
            Ok(jwks(&mut state.lock().unwrap(), &request))
        }
        "/auth/introspect" => Ok(introspect(&state, request).await),
        "/.well-known/openid-configuration" => {
            let host = request.headers().get(hyper::header::HOST).unwrap();
            let base = format!("http://{}", host.to_str().unwrap());
            let jwks_uri = format!("{base}/keys/current.json");
            let body = json!({ "issuer": ISSUER, "jwks_uri": jwks_uri }).to_string();
            Ok(respond(StatusCode::OK, Bytes::from(body)))
        }
        _ => Ok(respond(StatusCode::NOT_FOUND, Bytes::new())),
    }
}

fn jwks(state: &mut State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    state.jwks_requests += 1;
    let asked = request
        .headers()
        .get(IF_NONE_MATCH)
        .map(|v| v.to_str().unwrap().to_owned());
    state.if_none_match.push(asked.clone());
    if !state.up {
        return respond(StatusCode::SERVICE_UNAVAILABLE, Bytes::new());
    }
    let unchanged = asked.is_some() && asked == state.etag;
    let mut response = if unchanged {
        state.not_modified += 1;
        respond(StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        let body = json!({ "keys": state.keys }).to_string();
        respond(StatusCode::OK, Bytes::from(body))
    };
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, state.cache_control.parse().unwrap());
    if let Some(etag) = &state.etag {
        headers.insert(ETAG, etag.parse().unwrap());
    }
    response
}

async fn introspect(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {INTROSPECTION_KEY}").as_bytes());
    let form = request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v == "application/x-www-form-urlencoded");
    if !authorized || !form {
        return respond(StatusCode::UNAUTHORIZED, Bytes::new());
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    // A JWT is base64url and dots: nothing in it is percent-encoded in a form.
    let token = std::str::from_utf8(&body)
        .unwrap()
        .strip_prefix("token=")
        .unwrap()
        .to_owned();
    let answer = match state.lock().unwrap().active.get(&token) {
        Some(c) => json!({
            "active": true, "sub": c.sub, "sid": c.sid, "exp": c.exp, "iat": c.iat,
            "scope": "", "token_type": "Bearer",
        }),
        None => json!({ "active": false }),
    };
    respond(StatusCode::OK, Bytes::from(answer.to_string()))
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}
