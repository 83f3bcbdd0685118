//! A panicking handler must cost one 500, not the connection or the server. No real handler
//! panics on purpose, so the test passes the wrapper a dispatch step that does, for one path,
//! and the real dispatch for every other; requests travel over real TCP through hyper.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::router::Router;
use super::service;
use crate::auth::hasher::Hasher;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::state::AppState;

/// State whose database is never reached: the routes used here do not touch it, and the
/// pool opens connections only on first use.
fn state() -> Arc<AppState> {
    let config = Config::from_lookup(|key| match key {
        "DATABASE_URL" => Some("postgres://nobody@127.0.0.1:9/none".into()),
        "BCRYPT_ROUNDS" => Some("4".into()),
        _ => None,
    })
    .unwrap();
    let pg = config.database_url.as_ref().unwrap().pg().clone();
    let metrics = crate::metrics::Metrics::new("test");
    let tls = crate::db::tls::connector(None).unwrap();
    let pool = crate::db::pool(&crate::db::connect::Target::new(pg), &config, tls).unwrap();
    Arc::new(AppState {
        owners: crate::db::owners::OwnerLookups::start(
            crate::db::shared::Shared::new(pool.clone(), 1),
            true,
        ),
        db: pool,
        hasher: Hasher::start(
            1,
            4,
            crate::auth::hasher::Pepper::new(b"panic test pepper"),
            Duration::from_secs(1),
            metrics.hash(),
        )
        .unwrap(),
        tokens: TokenKeys::new(
            config.jwt_secret.expose().as_bytes(),
            &config.jwt_issuer,
            &config.jwt_audience,
            Duration::from_secs(60),
        ),
        sealer: None,
        refresh: crate::auth::refresh::RefreshKeys::new(config.jwt_secret.expose().as_bytes()),
        devices: crate::auth::device::DeviceKeys::new(config.jwt_secret.expose().as_bytes()),
        api_keys: crate::auth::api_keys::ApiKeyKeys::new(config.jwt_secret.expose().as_bytes()),
        email_secrets: crate::mail::secrets::SecretKeys::new(config.jwt_secret.expose().as_bytes()),
        passkeys: crate::auth::passkeys::RelyingParty::new(&config.webauthn).unwrap(),
        mfa: crate::auth::mfa::MfaKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.mfa_clock.clone(),
        ),
        router: Router::new(false, true),
        metrics,
        observer: std::sync::OnceLock::new(),
        config,
    })
}

/// Serves connections on a port-0 listener with the panicking dispatch.
async fn serve(state: Arc<AppState>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let state = Arc::clone(&state);
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move {
                    let resp = service::respond(
                        state,
                        peer,
                        req,
                        |state, target, call, params, req| async move {
                            if req.uri().query() == Some("boom") {
                                panic!("handler bug holding secret-detail-123");
                            }
                            crate::handlers::dispatch(state, target, call, params, req).await
                        },
                    )
                    .await;
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
        }
    });
    addr
}

/// Sends a GET on `stream` and reads one response: (status, headers, body).
async fn get(stream: &mut TcpStream, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head[9..12].parse().unwrap();
    let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
    (status, head.to_ascii_lowercase(), body)
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_and_the_connection_and_server_keep_serving() {
    let addr = serve(state()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();

    let (status, head, body) = get(&mut conn, "/health/live?boom").await;
    assert_eq!(status, 500);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-request-id:"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "internal_error", "{body}");
    assert_eq!(json["status_code"], 500, "{body}");
    assert!(
        !body.contains("secret-detail"),
        "the panic message leaked: {body}"
    );

    // The same keep-alive connection still serves...
    let (status, _, body) = get(&mut conn, "/health/live").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // ...and so does a new one, also after another panic.
    let mut other = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get(&mut other, "/health/live?boom").await.0, 500);
    assert_eq!(get(&mut other, "/health/live").await.0, 200);
}
