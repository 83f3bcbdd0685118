//! When the verifier asks for the key set: once for many callers, early (but rarely) for an
//! unknown kid, with `If-None-Match` when stale, and never in a way that makes an auth
//! server outage refuse tokens it could still check. Asserted by counting requests.

use std::time::Duration;

use futures::future::join_all;
use jobpath_client::verify::{Error, Verifier};

use crate::support::{AuthServer, claims, eddsa, es256};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_verifications_share_one_fetch() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    let tokens: Vec<String> = (0..32).map(|_| key.sign(&claims())).collect();
    let results = join_all(tokens.iter().map(|t| verifier.verify(t))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_kids_causes_one_refresh_per_interval() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    verifier.verify(&key.sign(&claims())).await.unwrap();
    assert_eq!(server.jwks_requests(), 1);

    let forged: Vec<String> = (0..100)
        .map(|i| es256(&format!("forged-{i}"), 7).sign(&claims()))
        .collect();
    for round in 0..2 {
        let tasks = forged.iter().map(|token| {
            let (verifier, token) = (verifier.clone(), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        });
        let results = join_all(tasks).await;
        for result in results {
            assert!(matches!(result.unwrap(), Err(Error::UnknownKey)));
        }
        // One early refresh for the first flood, none for the second within the interval.
        assert_eq!(server.jwks_requests(), 2, "after round {round}");
    }
    // The known key still verifies from the cache.
    verifier.verify(&key.sign(&claims())).await.unwrap();
    assert_eq!(server.jwks_requests(), 2);
}

#[tokio::test]
async fn a_key_published_later_is_found_by_the_unknown_kid_refresh() {
    let (old, new) = (es256("ec-1", 1), eddsa("ed-2", 2));
    let server = AuthServer::start(&[&old]).await;
    let verifier = server.verifier().build().unwrap();
    verifier.verify(&old.sign(&claims())).await.unwrap();
    server.publish(&[&old, &new]);
    verifier.verify(&new.sign(&claims())).await.unwrap();
    assert_eq!(server.jwks_requests(), 2);
}

#[tokio::test]
async fn a_fresh_set_is_not_fetched_again() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    for cache_control in ["public, max-age=300", "no-store", "max-age=0"] {
        server.set_cache_control(cache_control);
        // no-store and max-age=0 still keep the set for the minimum interval (60 s): the
        // server is asked at most once per interval, not on every request.
        let verifier = server.verifier().build().unwrap();
        let before = server.jwks_requests();
        for _ in 0..10 {
            verifier.verify(&key.sign(&claims())).await.unwrap();
        }
        assert_eq!(server.jwks_requests(), before + 1, "{cache_control}");
    }
}

/// A verifier that finds its set stale at once: every verification revalidates.
fn eager(server: &AuthServer) -> Verifier {
    server.set_cache_control("max-age=0");
    server
        .verifier()
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stale_set_is_revalidated_with_its_etag() {
    let (old, new) = (es256("ec-1", 1), eddsa("ed-2", 2));
    let server = AuthServer::start(&[&old]).await;
    server.set_etag("\"v1\"");
    let verifier = eager(&server);
    verifier.verify(&old.sign(&claims())).await.unwrap();
    verifier.verify(&old.sign(&claims())).await.unwrap();
    assert_eq!(server.not_modified(), 1);

    server.publish(&[&old, &new]);
    server.set_etag("\"v2\"");
    verifier.verify(&new.sign(&claims())).await.unwrap();
    verifier.verify(&old.sign(&claims())).await.unwrap();
    let v1 = Some("\"v1\"".to_owned());
    let v2 = Some("\"v2\"".to_owned());
    assert_eq!(server.if_none_match(), [None, v1.clone(), v1, v2]);
    assert_eq!(server.not_modified(), 2);
}

#[tokio::test]
async fn a_stale_set_is_used_while_the_auth_server_is_down() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = eager(&server);
    verifier.verify(&key.sign(&claims())).await.unwrap();

    server.set_up(false);
    verifier.verify(&key.sign(&claims())).await.unwrap();
    assert_eq!(server.jwks_requests(), 2, "the stale set was revalidated");
    // Stale keys are used, but a kid they do not have is still refused.
    let unknown = eddsa("ed-2", 2).sign(&claims());
    assert!(matches!(
        verifier.verify(&unknown).await,
        Err(Error::UnknownKey)
    ));

    server.stop();
    verifier.verify(&key.sign(&claims())).await.unwrap();
}

#[tokio::test]
async fn with_no_set_fetched_nothing_verifies_and_failures_are_not_retried_at_once() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    server.set_up(false);
    let verifier = server.verifier().build().unwrap();
    for _ in 0..10 {
        let refused = verifier.verify(&key.sign(&claims())).await.unwrap_err();
        assert!(matches!(refused, Error::JwksUnavailable(_)), "{refused:?}");
        assert!(!refused.is_refusal());
    }
    assert_eq!(
        server.jwks_requests(),
        1,
        "a failure waits out the interval"
    );

    // Nothing listening at all.
    let base = server.base_url();
    server.stop();
    let verifier = Verifier::builder(base, "jobpath-api", "jobpath")
        .build()
        .unwrap();
    let refused = verifier.verify(&key.sign(&claims())).await.unwrap_err();
    assert!(matches!(refused, Error::JwksUnavailable(_)), "{refused:?}");
}
