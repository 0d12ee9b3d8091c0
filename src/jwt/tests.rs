//! Each way a token can be wrong is refused with its reason; a good one logs
//! in, directly and through an engine session.

use std::sync::Arc;

use im_core::pb::ErrorCode;
use im_core::{AuthError, Engine};
use im_store_memory::MemoryStore;
use im_testkit::duplex::MemClient;
use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde::Serialize;

use super::*;

const AUDIENCE: &str = "chat.test";
const SECRET: &[u8] = b"a secret of the sign-in service, 32+ bytes long";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

fn claims(sub: &str) -> Claims<'_> {
    Claims {
        sub,
        aud: AUDIENCE,
        exp: get_current_timestamp() + 600,
        iss: None,
    }
}

fn hs256(claims: &Claims<'_>, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("sign")
}

fn auth() -> JwtAuthenticator {
    JwtAuthenticator::new(JwtConfig::new(
        DecodingKey::from_secret(SECRET).expect("key"),
        Algorithm::HS256,
        AUDIENCE,
    ))
}

fn refusal(auth: &JwtAuthenticator, token: &str) -> String {
    match auth.verify(token) {
        Err(AuthError::InvalidToken(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_good_token_logs_in_as_its_subject() {
    let user = auth()
        .verify(&hs256(&claims("alice"), SECRET))
        .expect("valid");
    assert_eq!(user.as_str(), "alice");
}

#[test]
fn alg_none_is_refused() {
    // {"alg":"none","typ":"JWT"}.{"sub":"alice","aud":"chat.test","exp":4102444800}.
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                 eyJzdWIiOiJhbGljZSIsImF1ZCI6ImNoYXQudGVzdCIsImV4cCI6NDEwMjQ0NDgwMH0.";
    assert_eq!(
        refusal(&auth(), token),
        "token algorithm not accepted (only HS256)"
    );
    // The same claims signed properly pass: only the algorithm was wrong.
    let signed = hs256(
        &Claims {
            exp: 4_102_444_800,
            ..claims("alice")
        },
        SECRET,
    );
    auth().verify(&signed).expect("the signed twin is valid");
}

#[test]
fn a_token_signed_with_another_key_is_refused() {
    let reason = refusal(
        &auth(),
        &hs256(&claims("alice"), b"someone else's secret, also long"),
    );
    assert_eq!(reason, "token signature does not verify");
}

#[test]
fn an_expired_token_is_refused() {
    let old = Claims {
        exp: get_current_timestamp() - 3600,
        ..claims("alice")
    };
    assert_eq!(
        refusal(&auth(), &hs256(&old, SECRET)),
        "token expired: sign in again"
    );
}

#[test]
fn a_token_for_another_audience_is_refused() {
    let elsewhere = Claims {
        aud: "billing.test",
        ..claims("alice")
    };
    let reason = refusal(&auth(), &hs256(&elsewhere, SECRET));
    assert!(
        reason.contains("not for this service") && reason.contains(AUDIENCE),
        "{reason}"
    );
}

#[test]
fn another_algorithm_is_refused_even_with_the_right_secret() {
    let token = encode(
        &Header::new(Algorithm::HS384),
        &claims("alice"),
        &EncodingKey::from_secret(SECRET).expect("key"),
    )
    .expect("sign");
    assert!(refusal(&auth(), &token).contains("algorithm not accepted"));
}

#[test]
fn issuer_is_checked_when_configured() {
    let auth = JwtAuthenticator::new(
        JwtConfig::new(
            DecodingKey::from_secret(SECRET).expect("key"),
            Algorithm::HS256,
            AUDIENCE,
        )
        .issuer("https://login.test"),
    );
    assert!(refusal(&auth, &hs256(&claims("alice"), SECRET)).contains("iss"));
    let from = |iss| Claims {
        iss: Some(iss),
        ..claims("alice")
    };
    assert_eq!(
        refusal(&auth, &hs256(&from("https://evil.test"), SECRET)),
        "token is from another issuer"
    );
    auth.verify(&hs256(&from("https://login.test"), SECRET))
        .expect("valid");
}

#[test]
fn ed25519_tokens_verify_with_the_public_key_only() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key pair");
    let private = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("private");
    let public_pem = pair.public_key_pem();
    let auth = JwtAuthenticator::new(JwtConfig::new(
        DecodingKey::from_ed_pem(public_pem.as_bytes()).expect("public"),
        Algorithm::EdDSA,
        AUDIENCE,
    ));
    let token = encode(&Header::new(Algorithm::EdDSA), &claims("bob"), &private).expect("sign");
    assert_eq!(auth.verify(&token).expect("valid").as_str(), "bob");
    // The public key, known to anyone, used as an HMAC secret: refused by the
    // pinned algorithm.
    let forged = hs256(&claims("mallory"), public_pem.as_bytes());
    assert!(refusal(&auth, &forged).contains("algorithm not accepted"));
}

#[tokio::test]
async fn the_engine_answers_a_refused_token_with_unauthenticated() {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .authenticator(Arc::new(auth()))
        .build()
        .expect("engine");
    let good = MemClient::connect_with_token(&engine, &hs256(&claims("alice"), SECRET), "d")
        .await
        .expect("a good token logs in");
    assert_eq!(good.connected.user_id, "alice");

    let old = Claims {
        exp: get_current_timestamp() - 3600,
        ..claims("alice")
    };
    let e = MemClient::connect_with_token(&engine, &hs256(&old, SECRET), "d")
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{e}");
    assert!(e.to_string().contains("token expired"), "{e}");
}
