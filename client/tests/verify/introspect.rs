//! The strict check: asking the auth server whether a token's session is still live.

use jobpath_client::verify::Error;

use crate::support::{AuthServer, INTROSPECTION_KEY, claims, es256};

#[tokio::test]
async fn verify_active_accepts_a_live_token_and_refuses_a_logged_out_one() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server
        .verifier()
        .introspection_key(INTROSPECTION_KEY)
        .build()
        .unwrap();
    let claims = claims();
    let token = key.sign(&claims);
    server.activate(&token, &claims);
    assert_eq!(verifier.verify_active(&token).await.unwrap(), claims);
    let answer = verifier.introspect(&token).await.unwrap();
    assert!(answer.active);
    assert_eq!(answer.sid, Some(claims.sid));

    server.deactivate(&token);
    // Still valid locally: only the strict check sees the logout.
    verifier.verify(&token).await.unwrap();
    let refused = verifier.verify_active(&token).await;
    assert!(matches!(refused, Err(Error::Inactive)), "{refused:?}");
    let answer = verifier.introspect(&token).await.unwrap();
    assert!(!answer.active);
    assert_eq!(
        (answer.sub, answer.sid, answer.other.len()),
        (None, None, 0)
    );
}

#[tokio::test]
async fn introspection_needs_a_valid_api_key() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let token = key.sign(&claims());

    let unconfigured = server.verifier().build().unwrap();
    let refused = unconfigured.introspect(&token).await;
    assert!(
        matches!(refused, Err(Error::IntrospectionNotConfigured)),
        "{refused:?}"
    );

    let wrong_key = server
        .verifier()
        .introspection_key("jp_not_the_key")
        .build()
        .unwrap();
    let refused = wrong_key.verify_active(&token).await.unwrap_err();
    assert!(
        matches!(refused, Error::IntrospectionFailed(_)),
        "{refused:?}"
    );
    assert!(!refused.is_refusal());
    assert!(!refused.to_string().contains("jp_not_the_key"));
}
