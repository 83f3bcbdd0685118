//! Other services verifying tokens with the published keys alone: the client crate's
//! example resource server (`client/examples/resource_server.rs`, run as its own process)
//! under steady load while the keys rotate, and PyJWT's `PyJWKClient` in Python.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jobpath_server::auth::signing::KeyAlgorithm;
use jobpath_server::cli::KeysCommand;
use tokio::io::AsyncBufReadExt as _;

use crate::helpers::{PASSWORD, TestDb, TestServer, test_config, unique_email};
use jobpath_tests::cluster::eventually;

const PROPAGATION: Duration = Duration::from_secs(10);

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// The example's binary, built by `cargo test --workspace` beside this test's; built here
/// when a narrower command did not.
async fn resource_server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples/resource_server");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = tokio::process::Command::new(cargo)
            .args([
                "build",
                "-p",
                "jobpath-client",
                "--features",
                "verify",
                "--example",
                "resource_server",
            ])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "building the resource_server example");
    }
    binary
}

/// The resource server, started against `auth`, and its address.
async fn start_resource_server(auth: &TestServer) -> (tokio::process::Child, String) {
    start_resource_server_with(auth, &[]).await
}

async fn start_resource_server_with(
    auth: &TestServer,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(resource_server_binary().await)
        .envs(env.iter().copied())
        .env("JOBPATH_AUTH_URL", &auth.base_url)
        .env("RESOURCE_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.to_owned();
            }
        }
        panic!("the resource server exited before listening");
    })
    .await
    .expect("the resource server starts");
    (child, format!("http://{addr}"))
}

async fn status(http: &reqwest::Client, resource: &str, token: &str) -> u16 {
    status_of(http, resource, "/jobs/mine", token).await
}

async fn status_of(http: &reqwest::Client, resource: &str, path: &str, token: &str) -> u16 {
    http.get(format!("{resource}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn keys(config: &jobpath_server::config::Config, command: KeysCommand) -> String {
    jobpath_server::keys(config, &command).await.unwrap()
}

/// While clients log in and call the resource server without pause, a new key is
/// published, activated (the old one retired) and the old one revoked: no valid token is
/// refused, and once the revocation is out and a cache lifetime has passed, no token of the
/// revoked key is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_server_refuses_no_valid_token_while_keys_rotate() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.jwt_algorithm = Some(KeyAlgorithm::Es256);
    // Verifiers keep the set one second: the test sees a revocation's effect quickly.
    config.jwks_max_age = Duration::from_secs(1);
    let auth = Arc::new(TestServer::start(config.clone()).await);
    let (_child, resource) = start_resource_server(&auth).await;
    let http = reqwest::Client::new();

    let email = unique_email();
    auth.signup(&email, PASSWORD).await;
    let first = auth.login(&email, PASSWORD).await;
    let old_kid = kid(&first);
    assert_eq!(status(&http, &resource, &first).await, 200);

    // The load: fresh tokens from logins, each presented at once and again later.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen_kids = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let load = {
        let (auth, http, resource, email) = (
            Arc::clone(&auth),
            http.clone(),
            resource.clone(),
            email.clone(),
        );
        let (stop, calls, refused, seen_kids) = (
            Arc::clone(&stop),
            Arc::clone(&calls),
            Arc::clone(&refused),
            Arc::clone(&seen_kids),
        );
        tokio::spawn(async move {
            let mut recent: Vec<String> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let token = auth.login(&email, PASSWORD).await;
                seen_kids.lock().unwrap().insert(kid(&token));
                recent.push(token);
                if recent.len() > 20 {
                    recent.remove(0);
                }
                for token in recent.iter().rev().take(5) {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if status(&http, &resource, token).await != 200 {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = keys(&config, KeysCommand::Create { algorithm: None }).await;
    let new_kid = out.split('\t').next().unwrap().to_owned();
    eventually("the new key is published", PROPAGATION, || async {
        auth.api
            .get_jwks()
            .send()
            .await
            .unwrap()
            .keys
            .iter()
            .any(|k| k.kid.to_string() == new_kid)
    })
    .await;
    // The publication window has passed (made so in the table: an hour is long to wait).
    db.client()
        .await
        .batch_execute("UPDATE signing_keys SET created_at = created_at - interval '1 hour'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    keys(
        &config,
        KeysCommand::Activate {
            kid: new_kid.clone(),
            force: false,
        },
    )
    .await;
    eventually(
        "tokens are signed with the new key",
        PROPAGATION,
        || async { seen_kids.lock().unwrap().contains(&new_kid) },
    )
    .await;
    // Tokens of both keys in flight for a while (the old one retired, still valid).
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let (calls, refused) = (calls.load(Ordering::SeqCst), refused.load(Ordering::SeqCst));
    assert!(calls > 50, "a steady load ran ({calls} calls)");
    assert_eq!(
        refused, 0,
        "valid tokens refused during the rotation, of {calls}"
    );
    assert_eq!(
        status(&http, &resource, &first).await,
        200,
        "retired keys verify"
    );

    // Revoke the old key (forced: its tokens are still live).
    keys(
        &config,
        KeysCommand::Revoke {
            kid: old_kid.clone(),
            force: true,
        },
    )
    .await;
    eventually("the old key is unpublished", PROPAGATION, || async {
        auth.api
            .get_jwks()
            .send()
            .await
            .unwrap()
            .keys
            .iter()
            .all(|k| k.kid.to_string() != old_kid)
    })
    .await;
    // Past the cache lifetime, the next call refetches the set, and from then on every
    // token of the revoked key is refused while the new key's are accepted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = auth.login(&email, PASSWORD).await;
    assert_eq!(kid(&fresh), new_kid);
    for _ in 0..20 {
        assert_eq!(status(&http, &resource, &fresh).await, 200);
        assert_eq!(
            status(&http, &resource, &first).await,
            401,
            "a revoked key's token accepted"
        );
    }
}

/// The example's strict route asks the auth server (`POST /auth/introspect`, with an API
/// key of scope `introspect`): a logout counts there at once, while the local check goes
/// on accepting the token until it expires — the trade the docs describe.
#[tokio::test]
async fn the_strict_route_sees_a_logout_at_once_through_introspection() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.jwt_algorithm = Some(KeyAlgorithm::Es256);
    let auth = TestServer::start(config).await;
    let (_, _, introspector) =
        crate::api_keys::user_with_key(&auth, &[jobpath_client::types::ApiKeyScope::Introspect])
            .await;
    let (_child, resource) =
        start_resource_server_with(&auth, &[("JOBPATH_INTROSPECTION_KEY", &introspector)]).await;
    let http = reqwest::Client::new();
    let (_, token) = auth.user_with_token().await;
    assert_eq!(status_of(&http, &resource, "/jobs/mine", &token).await, 200);
    assert_eq!(
        status_of(&http, &resource, "/jobs/strict", &token).await,
        200
    );
    auth.authed(&token).logout().send().await.unwrap();
    assert_eq!(
        status_of(&http, &resource, "/jobs/mine", &token).await,
        200,
        "verified locally: valid until it expires"
    );
    assert_eq!(
        status_of(&http, &resource, "/jobs/strict", &token).await,
        401,
        "introspected: the logout counts at once"
    );
    auth.stop().await;
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python of a virtualenv holding exactly `tests/python/requirements.txt`.
async fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyjwt-venv");
    let requirements = repo_root().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        for (program, args) in [
            (
                PathBuf::from("python3"),
                vec!["-m", "venv", venv.to_str().unwrap()],
            ),
            (
                venv.join("bin/pip"),
                vec!["install", "--quiet", "-r", requirements.to_str().unwrap()],
            ),
        ] {
            let status = tokio::process::Command::new(&program)
                .args(&args)
                .stdout(Stdio::null())
                .status()
                .await
                .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
            assert!(status.success(), "{} {args:?}", program.display());
        }
        std::fs::write(&stamp, wanted).unwrap();
    }
    venv.join("bin/python")
}

/// A verifier in another language needs only the JWKS: PyJWT's `PyJWKClient` takes the
/// key the token's kid names and checks the signature, issuer and audience — for ES256
/// and EdDSA — and refuses a token of a key the server no longer publishes.
#[tokio::test]
async fn pyjwt_verifies_tokens_with_the_jwks_alone() {
    let python = python().await;
    for algorithm in [KeyAlgorithm::Es256, KeyAlgorithm::EdDsa] {
        let db = TestDb::create().await;
        let mut config = test_config(&db);
        config.jwt_algorithm = Some(algorithm);
        let auth = TestServer::start(config.clone()).await;
        let (_, token) = auth.user_with_token().await;
        let run = |token: String| {
            let python = python.clone();
            let jwks = format!("{}/.well-known/jwks.json", auth.base_url);
            async move {
                let out = tokio::process::Command::new(&python)
                    .arg(repo_root().join("tests/python/verify.py"))
                    .args([&jwks, &token])
                    .output()
                    .await
                    .unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                )
            }
        };
        let (code, printed) = run(token.clone()).await;
        assert_eq!(code, Some(0), "{algorithm:?}: {printed}");
        let claims = crate::helpers::claims(&token);
        assert_eq!(printed, format!("ok {}", claims["sub"].as_str().unwrap()));
        // A tampered token, then one whose key has been revoked.
        let mut tampered = token.clone();
        tampered.replace_range(tampered.len() - 2.., "AA");
        assert_eq!(run(tampered).await.0, Some(1), "{algorithm:?}");
        let old = kid(&token);
        let out = keys(&config, KeysCommand::Create { algorithm: None }).await;
        let new = out.split('\t').next().unwrap().to_owned();
        keys(
            &config,
            KeysCommand::Activate {
                kid: new,
                force: true,
            },
        )
        .await;
        keys(
            &config,
            KeysCommand::Revoke {
                kid: old,
                force: true,
            },
        )
        .await;
        eventually("the revoked key is unpublished", PROPAGATION, || async {
            auth.api.get_jwks().send().await.unwrap().keys.len() == 1
        })
        .await;
        assert_eq!(run(token).await.0, Some(1), "{algorithm:?}: revoked key");
        auth.stop().await;
    }
}
