//! What a token must be to verify: signed by the published key its kid names, with that
//! key's algorithm, an access token, in date, of our issuer, for our audience.

use jobpath_client::verify::Error;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::{AuthServer, b64, claims, eddsa, es256, now};

#[tokio::test]
async fn es256_and_eddsa_tokens_verify_with_their_published_keys() {
    let (ec, ed) = (es256("ec-1", 1), eddsa("ed-1", 2));
    let server = AuthServer::start(&[&ec, &ed]).await;
    let verifier = server.verifier().build().unwrap();
    for key in [&ec, &ed] {
        let claims = claims();
        let back = verifier.verify(&key.sign(&claims)).await.unwrap();
        assert_eq!(back, claims);
    }
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn expired_tokens_are_refused_beyond_the_leeway_only() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    let mut late = claims();
    late.exp = now() - 10;
    verifier.verify(&key.sign(&late)).await.unwrap();
    late.exp = now() - 100;
    let refused = verifier.verify(&key.sign(&late)).await.unwrap_err();
    assert!(matches!(refused, Error::Expired), "{refused:?}");
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused() {
    let key = eddsa("ed-1", 2);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    let mut early = claims();
    early.nbf = now() + 100;
    let refused = verifier.verify(&key.sign(&early)).await.unwrap_err();
    assert!(matches!(refused, Error::NotYetValid), "{refused:?}");
    let mut from_the_future = claims();
    from_the_future.iat = now() + 100;
    let refused = verifier
        .verify(&key.sign(&from_the_future))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::NotYetValid), "{refused:?}");
}

#[tokio::test]
async fn tokens_of_another_issuer_or_audience_are_refused() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    let mut other = claims();
    other.iss = "someone-else".to_owned();
    let refused = verifier.verify(&key.sign(&other)).await.unwrap_err();
    assert!(matches!(refused, Error::WrongIssuer), "{refused:?}");
    let mut other = claims();
    other.aud = "another-app".to_owned();
    let refused = verifier.verify(&key.sign(&other)).await.unwrap_err();
    assert!(matches!(refused, Error::WrongAudience), "{refused:?}");
}

#[tokio::test]
async fn a_token_whose_sub_is_not_its_user_id_is_refused() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    let mut odd = claims();
    odd.sub = uuid::Uuid::new_v4().to_string();
    let refused = verifier.verify(&key.sign(&odd)).await.unwrap_err();
    assert!(matches!(refused, Error::SubjectMismatch), "{refused:?}");
}

#[tokio::test]
async fn tokens_that_are_not_access_tokens_or_lack_claims_are_refused() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();

    let mut header = key.header();
    header.typ = Some("JWT".to_owned());
    let refused = verifier.verify(&key.sign_with(&header, &claims())).await;
    assert!(
        matches!(refused, Err(Error::NotAnAccessToken)),
        "{refused:?}"
    );

    let mut no_sid = serde_json::to_value(claims()).unwrap();
    no_sid.as_object_mut().unwrap().remove("sid");
    let refused = verifier
        .verify(&key.sign_with(&key.header(), &no_sid))
        .await;
    assert!(matches!(refused, Err(Error::Malformed)), "{refused:?}");

    for junk in ["", "a.b.c", "not a token at all"] {
        let refused = verifier.verify(junk).await;
        assert!(
            matches!(refused, Err(Error::Malformed)),
            "{junk:?}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_published_kid_has_a_bad_signature() {
    let (published, impostor) = (es256("ec-1", 1), es256("ec-1", 9));
    let server = AuthServer::start(&[&published]).await;
    let verifier = server.verifier().build().unwrap();
    let refused = verifier
        .verify(&impostor.sign(&claims()))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::BadSignature), "{refused:?}");
}

#[tokio::test]
async fn hs256_tokens_are_refused_even_signed_with_a_published_key() {
    let ec = es256("ec-1", 1);
    let server = AuthServer::start(&[&ec]).await;
    // A symmetric key in the set is not a key we verify with, whatever its kid.
    let mut keys = vec![ec.jwk.clone()];
    keys.push(json!({"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64(b"shared")}));
    server.publish_raw(keys);
    let verifier = server.verifier().build().unwrap();
    verifier.verify(&ec.sign(&claims())).await.unwrap();

    let forge = |kid: Option<&str>, secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap()
    };
    // The classic confusion: the public key's bytes used as an HMAC secret.
    let public_as_secret = forge(Some("ec-1"), &ec.public);
    let hmac_kid = forge(Some("hmac"), b"shared");
    let servers_own_kind = forge(None, b"the auth server's secret");
    for token in [public_as_secret, hmac_kid, servers_own_kind] {
        let refused = verifier.verify(&token).await;
        assert!(
            matches!(refused, Err(Error::AlgorithmNotAllowed(Algorithm::HS256))),
            "{refused:?}"
        );
    }
    // Refused before any key lookup: forgeries cannot make the verifier fetch.
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn a_token_whose_alg_is_not_its_keys_is_refused() {
    let (ec, ed) = (es256("ec-1", 1), eddsa("ed-1", 2));
    let server = AuthServer::start(&[&ec, &ed]).await;
    let verifier = server.verifier().build().unwrap();
    // Signed with EdDSA (by a real Ed25519 key), but naming the ES256 key.
    let mut header = ed.header();
    header.kid = Some(ec.kid.clone());
    let refused = verifier.verify(&ed.sign_with(&header, &claims())).await;
    assert!(
        matches!(
            refused,
            Err(Error::AlgorithmMismatch {
                token: Algorithm::EdDSA,
                key: Algorithm::ES256
            })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_token_without_a_kid_is_refused() {
    let key = es256("ec-1", 1);
    let server = AuthServer::start(&[&key]).await;
    let verifier = server.verifier().build().unwrap();
    let mut header = key.header();
    header.kid = None;
    let refused = verifier.verify(&key.sign_with(&header, &claims())).await;
    assert!(matches!(refused, Err(Error::NoKeyId)), "{refused:?}");
    assert_eq!(server.jwks_requests(), 0);
}
