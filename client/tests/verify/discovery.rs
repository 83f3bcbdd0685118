//! Building a verifier from the auth server's OpenID Connect discovery document.

use jobpath_client::verify::{Error, Verifier};

use crate::support::{AUDIENCE, AuthServer, claims, es256};

#[tokio::test]
async fn discovery_finds_the_key_set_and_checks_the_issuer() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().discover().await.unwrap();
    verifier.verify(&key.sign(&claims())).await.unwrap();
    assert!(format!("{verifier:?}").contains("/keys/current.json"));

    let refused = Verifier::builder(server.base_url(), "another-issuer", AUDIENCE)
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Config(_)), "{refused:?}");
}
