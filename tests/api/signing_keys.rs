//! Asymmetric signing keys (ES256, EdDSA): tokens with a `kid`, the JWKS and discovery
//! document, algorithm confusion, unknown kids refused without a database read, the key
//! commands and their safety windows, rotation on two instances, the HS256 → ES256
//! migration, and rotating the secret itself (`JWT_SECRET_KEY_PREVIOUS`).

use std::time::Duration;

use base64::Engine as _;
use jobpath_server::auth::signing::KeyAlgorithm;
use jobpath_server::cli::KeysCommand;
use jobpath_server::config::{Config, secret::Secret};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestDb, TestServer, expect_error, test_config, unique_email};
use jobpath_tests::cluster::eventually;

/// Time for a key change to reach an instance (NOTIFY, then a re-read).
const PROPAGATION: Duration = Duration::from_secs(10);

fn asymmetric(db: &TestDb, algorithm: KeyAlgorithm) -> Config {
    let mut config = test_config(db);
    config.jwt_algorithm = Some(algorithm);
    config
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn header(token: &str) -> Header {
    jsonwebtoken::decode_header(token).unwrap()
}

async fn jwks(server: &TestServer) -> Value {
    let resp = server
        .raw(reqwest::Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

fn kids(set: &Value) -> Vec<String> {
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<String> {
    jobpath_server::keys(config, &command).await
}

/// Makes every key look published (or retired) an hour earlier: the passage of time the
/// safety windows wait for.
async fn age_keys(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "UPDATE signing_keys SET created_at = created_at - interval '1 hour',
                 retired_at = retired_at - interval '1 hour'",
        )
        .await
        .unwrap();
}

async fn owner_lookups(server: &TestServer) -> u64 {
    let text = reqwest::get(server.metrics_url.as_ref().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("jobpath_token_owner_lookups_total "))
        .expect("the counter is exposed")
        .trim()
        .parse()
        .unwrap()
}

async fn accepted(server: &TestServer, token: &str) -> bool {
    server.authed(token).get_me().send().await.is_ok()
}

#[tokio::test]
async fn es256_and_eddsa_tokens_name_their_key_and_verify_with_the_published_half_alone() {
    for algorithm in [KeyAlgorithm::Es256, KeyAlgorithm::EdDsa] {
        let db = TestDb::create().await;
        let app = TestServer::start(asymmetric(&db, algorithm)).await;
        let (_, token) = app.user_with_token().await;
        let head = header(&token);
        assert_eq!(head.alg, algorithm.jwt());
        assert_eq!(head.typ.as_deref(), Some("at+jwt"));
        let kid = head.kid.clone().expect("a kid");
        app.authed(&token).get_me().send().await.unwrap();

        // The generated client's view of the set, then the raw one.
        let set = app.api.get_jwks().send().await.unwrap().into_inner();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.to_string(), kid);
        let raw = jwks(&app).await;
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(raw["keys"][0].clone()).unwrap();
        assert!(raw["keys"][0].get("d").is_none(), "no private member");
        // Another service needs nothing but this key.
        let mut validation = Validation::new(algorithm.jwt());
        validation.set_issuer(&["jobpath-api"]);
        validation.set_audience(&["jobpath"]);
        let verified = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(verified.claims["sid"].as_str().unwrap().len(), 36);

        // Cacheable, with a validator that a revalidation matches.
        let resp = app
            .raw(reqwest::Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["cache-control"],
            "public, max-age=300, must-revalidate"
        );
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let again = app
            .raw(reqwest::Method::GET, "/.well-known/jwks.json")
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status().as_u16(), 304);
        let other = app
            .raw(reqwest::Method::GET, "/.well-known/jwks.json")
            .header("if-none-match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status().as_u16(), 200);

        app.stop().await;
    }
}

/// Discovery needs the issuer to be the server's URL; with the default name there is
/// nothing to point at, and no guess (such as the front end's address) is made.
#[tokio::test]
async fn discovery_names_the_keys_beside_an_issuer_url_and_nothing_for_a_plain_name() {
    let db = TestDb::create().await;
    let plain = TestServer::start(test_config(&db)).await;
    expect_error(
        plain.api.get_openid_configuration().send().await,
        404,
        "not_found",
    );
    plain.stop().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = asymmetric(&db, KeyAlgorithm::Es256);
    config.jwt_issuer = format!("http://{}", listener.local_addr().unwrap());
    let app = TestServer::start_on(listener, config.clone()).await;
    let discovery = app
        .api
        .get_openid_configuration()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(discovery.issuer, config.jwt_issuer);
    assert_eq!(
        discovery.jwks_uri,
        format!("{}/.well-known/jwks.json", config.jwt_issuer)
    );
    let set: Value = reqwest::get(&discovery.jwks_uri)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    let (_, token) = app.user_with_token().await;
    assert_eq!(
        crate::helpers::claims(&token)["iss"],
        config.jwt_issuer.as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_hs256_deployment_publishes_no_secret() {
    let db = TestDb::create().await;
    let app = TestServer::start(test_config(&db)).await;
    let (_, token) = app.user_with_token().await;
    assert!(
        header(&token).kid.is_none(),
        "HS256 tokens stay as they were"
    );
    assert_eq!(jwks(&app).await, json!({"keys": []}));
    app.stop().await;
}

/// An HS256 token naming the ES256 key and signed with its public half as the HMAC
/// secret — the classic confusion — and other forgeries are refused, from memory: none
/// costs the database read a verified token costs.
#[tokio::test]
async fn algorithm_confusion_and_unknown_kids_are_refused_without_a_database_read() {
    let db = TestDb::create().await;
    let app = TestServer::start(asymmetric(&db, KeyAlgorithm::Es256)).await;
    let (_, token) = app.user_with_token().await;
    let kid = header(&token).kid.unwrap();
    let claims = crate::helpers::claims(&token);
    let set = jwks(&app).await;
    let public = &set["keys"][0];

    let hs256 = |kid: Option<&str>, secret: &[u8]| {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
    };
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(public["x"].as_str().unwrap())
        .unwrap();
    let mut forgeries = vec![
        hs256(Some(&kid), public.to_string().as_bytes()),
        hs256(Some(&kid), &x),
        // The HS256 key this server would use (its secret is the tests' own): valid in an
        // HS256 deployment, refused here, where kid-less HS256 is not accepted.
        jobpath_server::auth::token::TokenKeys::new(
            crate::helpers::TEST_SECRET.as_bytes(),
            "jobpath-api",
            "jobpath",
            Duration::from_secs(1800),
        )
        .sign(&serde_json::from_value(claims.clone()).unwrap())
        .unwrap(),
    ];
    // The header claims EdDSA for the ES256 key (the signature part is the real one).
    let parts: Vec<&str> = token.split('.').collect();
    let eddsa_header = b64(format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#).as_bytes());
    forgeries.push(format!("{eddsa_header}.{}.{}", parts[1], parts[2]));
    // A kid nobody published, signed properly by a key of the same kind.
    let stranger_db = TestDb::create().await;
    let stranger = TestServer::start(asymmetric(&stranger_db, KeyAlgorithm::Es256)).await;
    let foreign = stranger
        .state
        .tokens
        .sign(&serde_json::from_value(claims.clone()).unwrap())
        .unwrap();
    assert_ne!(header(&foreign).kid.unwrap(), kid);
    forgeries.push(foreign);
    // The real header with another kid.
    let renamed = b64(format!(
        r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#,
        "A".repeat(43)
    )
    .as_bytes());
    forgeries.push(format!("{renamed}.{}.{}", parts[1], parts[2]));

    let before = owner_lookups(&app).await;
    for forged in &forgeries {
        for _ in 0..10 {
            expect_error(
                app.authed(forged).get_me().send().await,
                401,
                "invalid_token",
            );
        }
    }
    assert_eq!(
        owner_lookups(&app).await,
        before,
        "a refused token costs no database read"
    );
    app.authed(&token).get_me().send().await.unwrap();
    assert_eq!(owner_lookups(&app).await, before + 1, "the counter counts");
    stranger.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_first_start_makes_one_key_even_when_instances_start_together() {
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        TestServer::start(asymmetric(&db, KeyAlgorithm::EdDsa)),
        TestServer::start(asymmetric(&db, KeyAlgorithm::EdDsa))
    );
    assert_eq!(db.count("SELECT count(*) FROM signing_keys").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM auth_events WHERE kind = 'signing_key_created'")
            .await,
        1
    );
    assert_eq!(kids(&jwks(&a).await), kids(&jwks(&b).await));
    // A restart keeps the key: tokens survive it.
    let (_, token) = a.user_with_token().await;
    a.stop().await;
    let c = TestServer::start(asymmetric(&db, KeyAlgorithm::EdDsa)).await;
    assert!(accepted(&c, &token).await);
    assert!(accepted(&b, &token).await);
    b.stop().await;
    c.stop().await;
}

/// Rotation on two instances: a new key is published, activated, the old one retired then
/// revoked — and every step reaches the other instance within seconds.
#[tokio::test]
async fn keys_rotate_across_two_instances_and_the_commands_keep_their_windows() {
    let db = TestDb::create().await;
    let config = asymmetric(&db, KeyAlgorithm::Es256);
    let (a, b) = tokio::join!(
        TestServer::start(config.clone()),
        TestServer::start(config.clone())
    );
    let email = unique_email();
    a.signup(&email, PASSWORD).await;
    let old_token = a.login(&email, PASSWORD).await;
    let old = header(&old_token).kid.unwrap();

    let created = keys(&config, KeysCommand::Create { algorithm: None })
        .await
        .unwrap();
    let new = created.split('\t').next().unwrap().to_owned();
    assert_ne!(new, old);
    eventually(
        "both instances publish the standby key",
        PROPAGATION,
        || async { kids(&jwks(&a).await).contains(&new) && kids(&jwks(&b).await).contains(&new) },
    )
    .await;
    assert!(
        header(&b.login(&email, PASSWORD).await).kid.unwrap() == old,
        "standby signs nothing"
    );

    // Too soon: a verifier may hold a JWKS without it.
    let err = keys(
        &config,
        KeysCommand::Activate {
            kid: new.clone(),
            force: false,
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot be activated before"),
        "{err:#}"
    );
    let err = keys(
        &config,
        KeysCommand::Revoke {
            kid: old.clone(),
            force: true,
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("is active"), "{err:#}");
    age_keys(&db).await;
    let done = keys(
        &config,
        KeysCommand::Activate {
            kid: new.clone(),
            force: false,
        },
    )
    .await
    .unwrap();
    assert!(done.contains(&format!("{old} is retired")), "{done}");
    eventually(
        "both instances sign with the new key",
        PROPAGATION,
        || async {
            header(&a.login(&email, PASSWORD).await).kid.as_deref() == Some(new.as_str())
                && header(&b.login(&email, PASSWORD).await).kid.as_deref() == Some(new.as_str())
        },
    )
    .await;
    assert_eq!(
        kids(&jwks(&a).await),
        vec![new.clone(), old.clone()],
        "active first"
    );
    assert!(
        accepted(&a, &old_token).await && accepted(&b, &old_token).await,
        "retired keys verify"
    );

    // The retired key's tokens may still be live: revoking it waits, unless forced.
    let err = keys(
        &config,
        KeysCommand::Revoke {
            kid: old.clone(),
            force: false,
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot be revoked before"),
        "{err:#}"
    );
    keys(
        &config,
        KeysCommand::Revoke {
            kid: old.clone(),
            force: true,
        },
    )
    .await
    .unwrap();
    eventually(
        "both instances refuse the revoked key's tokens",
        PROPAGATION,
        || async { !accepted(&a, &old_token).await && !accepted(&b, &old_token).await },
    )
    .await;
    assert_eq!(kids(&jwks(&b).await), vec![new.clone()]);

    // A standby key can be retired without ever signing; states only move forward.
    let spare = keys(
        &config,
        KeysCommand::Create {
            algorithm: Some(KeyAlgorithm::EdDsa),
        },
    )
    .await
    .unwrap();
    let spare = spare.split('\t').next().unwrap().to_owned();
    keys(&config, KeysCommand::Retire(spare.clone()))
        .await
        .unwrap();
    for refused in [
        KeysCommand::Retire(spare.clone()),
        KeysCommand::Activate {
            kid: spare.clone(),
            force: true,
        },
        KeysCommand::Retire(new.clone()),
        KeysCommand::Activate {
            kid: old.clone(),
            force: true,
        },
        KeysCommand::Revoke {
            kid: "no-such-key".into(),
            force: true,
        },
    ] {
        assert!(keys(&config, refused.clone()).await.is_err(), "{refused:?}");
    }
    let listed = keys(&config, KeysCommand::List).await.unwrap();
    for (kid, state) in [(&old, "revoked"), (&new, "active"), (&spare, "retired")] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(kid.as_str()) && l.contains(state)),
            "{listed}"
        );
    }
    // Every move is a security event, which the admin API lists (and the spec names).
    jobpath_server::admin(
        &config,
        &jobpath_server::cli::AdminCommand::Grant(email.clone()),
    )
    .await
    .unwrap();
    let admin = a.authed(&a.login(&email, PASSWORD).await);
    use jobpath_client::types::EventKind;
    for kind in [
        EventKind::SigningKeyCreated,
        EventKind::SigningKeyActivated,
        EventKind::SigningKeyRetired,
        EventKind::SigningKeyRevoked,
    ] {
        let events = admin
            .admin_list_events()
            .kind(kind)
            .send()
            .await
            .unwrap()
            .into_inner()
            .events;
        assert!(!events.is_empty(), "{kind:?}");
    }
    a.stop().await;
    b.stop().await;
}

/// Two operators activating two standby keys at once: the database keeps one active.
#[tokio::test]
async fn concurrent_activations_leave_exactly_one_active_key() {
    let db = TestDb::create().await;
    let config = asymmetric(&db, KeyAlgorithm::Es256);
    let app = TestServer::start(config.clone()).await;
    let mut standby = Vec::new();
    for _ in 0..4 {
        let out = keys(&config, KeysCommand::Create { algorithm: None })
            .await
            .unwrap();
        standby.push(out.split('\t').next().unwrap().to_owned());
    }
    age_keys(&db).await;
    let results = futures::future::join_all(standby.iter().map(|kid| {
        keys(
            &config,
            KeysCommand::Activate {
                kid: kid.clone(),
                force: false,
            },
        )
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM signing_keys WHERE state = 'active'")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM signing_keys WHERE state = 'retired'")
            .await,
        4,
        "the first key and three of the four activated ones"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_asymmetric_start_with_no_active_key_is_refused_naming_the_command() {
    let db = TestDb::create().await;
    let hs = test_config(&db);
    let app = TestServer::start(hs.clone()).await;
    keys(&hs, KeysCommand::Create { algorithm: None })
        .await
        .unwrap();
    app.stop().await;
    let err = match jobpath_server::App::build(asymmetric(&db, KeyAlgorithm::Es256)).await {
        Ok(_) => panic!("started with no active key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("keys activate"), "{err}");
}

/// The documented migration: publish a key while still on HS256, activate it, switch the
/// servers to ES256 while they accept HS256 tokens for one access-token lifetime, then stop.
#[tokio::test]
async fn an_hs256_deployment_migrates_to_es256_without_logging_anyone_out() {
    let db = TestDb::create().await;
    let hs_config = test_config(&db);
    let hs = TestServer::start(hs_config.clone()).await;
    let email = unique_email();
    hs.signup(&email, PASSWORD).await;
    let hs_token = hs.login(&email, PASSWORD).await;

    // 1. Publish while still signing HS256.
    let out = keys(
        &hs_config,
        KeysCommand::Create {
            algorithm: Some(KeyAlgorithm::Es256),
        },
    )
    .await
    .unwrap();
    let kid = out.split('\t').next().unwrap().to_owned();
    eventually(
        "the HS256 server publishes the key",
        PROPAGATION,
        || async { kids(&jwks(&hs).await) == vec![kid.clone()] },
    )
    .await;
    // 2. Activate it once verifiers have it; HS256 servers go on signing HS256.
    age_keys(&db).await;
    keys(
        &hs_config,
        KeysCommand::Activate {
            kid: kid.clone(),
            force: false,
        },
    )
    .await
    .unwrap();
    // 3. The servers restart with ES256, accepting the HS256 tokens already issued.
    let mut es_config = asymmetric(&db, KeyAlgorithm::Es256);
    es_config.jwt_accept_hs256_until = Some(chrono::Utc::now() + chrono::Duration::minutes(31));
    let es = TestServer::start(es_config).await;
    let es_token = es.login(&email, PASSWORD).await;
    assert_eq!(header(&es_token).kid.as_deref(), Some(kid.as_str()));
    assert!(
        accepted(&es, &hs_token).await,
        "HS256 tokens live on during the window"
    );
    eventually(
        "an HS256 instance mid-rollout verifies ES256 tokens",
        PROPAGATION,
        || async { accepted(&hs, &es_token).await },
    )
    .await;
    assert!(header(&hs.login(&email, PASSWORD).await).kid.is_none());
    // 4. After the window (or without one), kid-less HS256 is refused.
    let strict = TestServer::start(asymmetric(&db, KeyAlgorithm::Es256)).await;
    expect_error(
        strict.authed(&hs_token).get_me().send().await,
        401,
        "invalid_token",
    );
    assert!(accepted(&strict, &es_token).await);
    let mut closed = asymmetric(&db, KeyAlgorithm::Es256);
    closed.jwt_accept_hs256_until = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    let closed = TestServer::start(closed).await;
    assert!(!accepted(&closed, &hs_token).await);
    for server in [hs, es, strict, closed] {
        server.stop().await;
    }
}

/// `JWT_SECRET_KEY_PREVIOUS`: an HS256 secret rotated without logging anyone out, and
/// signing keys sealed under the old secret opened, then sealed again under the new one.
#[tokio::test]
async fn a_secret_rotates_with_the_previous_one_beside_it() {
    let old_secret = "the-old-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
    let new_secret = "the-new-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
    let db = TestDb::create().await;
    let with = |secret: &str, previous: Option<&str>, algorithm: Option<KeyAlgorithm>| {
        let mut config = test_config(&db);
        config.jwt_secret = Secret::new(secret);
        config.jwt_secret_previous = previous.map(Secret::new);
        config.jwt_algorithm = algorithm;
        config
    };
    // HS256.
    let old = TestServer::start(with(old_secret, None, None)).await;
    let (_, token) = old.user_with_token().await;
    old.stop().await;
    let rotated = TestServer::start(with(new_secret, Some(old_secret), None)).await;
    assert!(
        accepted(&rotated, &token).await,
        "the previous secret's tokens verify"
    );
    let (_, fresh) = rotated.user_with_token().await;
    rotated.stop().await;
    let done = TestServer::start(with(new_secret, None, None)).await;
    assert!(
        !accepted(&done, &token).await,
        "until the previous secret is dropped"
    );
    assert!(accepted(&done, &fresh).await);
    done.stop().await;

    // ES256: the key sealed under the old secret.
    let sealed_db = TestDb::create().await;
    let with = |secret: &str, previous: Option<&str>| {
        let mut config = asymmetric(&sealed_db, KeyAlgorithm::Es256);
        config.jwt_secret = Secret::new(secret);
        config.jwt_secret_previous = previous.map(Secret::new);
        config
    };
    let first = TestServer::start(with(old_secret, None)).await;
    let (_, es_token) = first.user_with_token().await;
    first.stop().await;
    let err = match jobpath_server::App::build(with(new_secret, None)).await {
        Ok(_) => panic!("opened a key sealed under another secret"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("JWT_SECRET_KEY_PREVIOUS"), "{err}");
    let rotated = TestServer::start(with(new_secret, Some(old_secret))).await;
    assert!(accepted(&rotated, &es_token).await);
    rotated.stop().await;
    // Sealed again: the new secret alone opens it now.
    let done = TestServer::start(with(new_secret, None)).await;
    assert!(accepted(&done, &es_token).await);
    done.stop().await;
}
