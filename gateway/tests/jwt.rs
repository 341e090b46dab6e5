//! The JWT cases of the gateway's handshake check: valid, expired, not yet valid,
//! wrong signature, wrong algorithm (including `none`), missing claim, missing or
//! empty cookie, and the Bearer header; for HS256, RS256 and ES256.

use chinwag_gateway::auth::{AuthError, Verifier};
use chinwag_gateway::config::Algorithm;
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

fn sign(alg: jsonwebtoken::Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn cookie(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(&format!("theme=dark; ID_TOKEN={token}; other=1")).unwrap());
    headers
}

fn valid_claims() -> serde_json::Value {
    json!({"preferred_username": "alex", "exp": NOW + 60})
}

fn hs256() -> (Verifier, EncodingKey) {
    (Verifier::new(Algorithm::HS256, DecodingKey::from_secret(SECRET), "ID_TOKEN"), EncodingKey::from_secret(SECRET))
}

#[test]
fn hs256_cases() {
    let (verifier, key) = hs256();
    let hs = jsonwebtoken::Algorithm::HS256;
    let check = |claims, key: &EncodingKey| verifier.authenticate(&cookie(&sign(hs, key, claims)), NOW);

    assert_eq!(check(valid_claims(), &key), Ok("alex".to_owned()));
    assert_eq!(check(json!({"preferred_username": "alex", "exp": NOW}), &key), Err(AuthError::Expired));
    assert_eq!(check(json!({"preferred_username": "alex"}), &key), Err(AuthError::Expired), "no exp");
    assert_eq!(
        check(json!({"preferred_username": "alex", "exp": NOW + 60, "nbf": NOW + 30}), &key),
        Err(AuthError::NotYetValid)
    );
    assert_eq!(check(json!({"exp": NOW + 60}), &key), Err(AuthError::MissingUsername));
    assert_eq!(check(json!({"preferred_username": " ", "exp": NOW + 60}), &key), Err(AuthError::MissingUsername));
    let other = EncodingKey::from_secret(b"another secret of at least thirty-two bytes");
    assert_eq!(check(valid_claims(), &other), Err(AuthError::BadSignature));

    // Another algorithm with the same secret, and the unsigned `none`.
    let hs384 = sign(jsonwebtoken::Algorithm::HS384, &key, valid_claims());
    assert_eq!(verifier.authenticate(&cookie(&hs384), NOW), Err(AuthError::WrongAlgorithm));
    let valid = sign(hs, &key, valid_claims());
    let body = valid.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
    assert!(verifier.authenticate(&cookie(&none), NOW).is_err(), "alg none is refused");

    // Where the token may be, and may not.
    assert_eq!(verifier.authenticate(&HeaderMap::new(), NOW), Err(AuthError::MissingToken));
    assert_eq!(verifier.authenticate(&cookie(""), NOW), Err(AuthError::MissingToken));
    let mut bearer = HeaderMap::new();
    bearer.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {valid}")).unwrap());
    assert_eq!(verifier.authenticate(&bearer, NOW), Ok("alex".to_owned()));
    let mut other_cookie = HeaderMap::new();
    other_cookie.insert(header::COOKIE, HeaderValue::from_str(&format!("NOT_ID_TOKEN={valid}")).unwrap());
    assert_eq!(verifier.authenticate(&other_cookie, NOW), Err(AuthError::MissingToken));
    assert!(matches!(verifier.authenticate(&cookie("not.a.jwt"), NOW), Err(AuthError::Malformed(_))));
}

/// `chinwag token`'s tokens are accepted by a gateway with the same config and
/// secret, and only until they expire; a public-key config cannot make them.
#[test]
fn made_tokens_are_accepted() {
    use chinwag_gateway::config::{JwtConfig, KeySource};
    // A variable of this test's own: tests run in parallel in one process.
    let var = "CHINWAG_TEST_MADE_TOKENS_SECRET";
    // SAFETY: no other code of this test binary reads or writes this variable.
    unsafe { std::env::set_var(var, std::str::from_utf8(SECRET).unwrap()) };
    let config =
        JwtConfig { algorithm: Algorithm::HS256, key: KeySource::SecretEnv(var.into()), cookie: "ID_TOKEN".into() };
    let token = chinwag_gateway::auth::hs256_token(&config, "alex", NOW, 60).unwrap();
    let verifier = Verifier::from_config(&config).unwrap();
    assert_eq!(verifier.authenticate(&cookie(&token), NOW + 59), Ok("alex".to_owned()));
    assert_eq!(verifier.authenticate(&cookie(&token), NOW + 60), Err(AuthError::Expired));
    let public = JwtConfig { key: KeySource::PublicKeyFile("keys/rs256-public.pem".into()), ..config };
    assert!(chinwag_gateway::auth::hs256_token(&public, "alex", NOW, 60).is_err());
}

#[test]
fn rs256_and_es256_with_public_keys() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/");
    let read = |name: &str| std::fs::read(format!("{keys}{name}")).unwrap();
    let rs = Verifier::new(Algorithm::RS256, DecodingKey::from_rsa_pem(&read("rs256-public.pem")).unwrap(), "ID_TOKEN");
    let rs_key = EncodingKey::from_rsa_pem(&read("rs256-private.pem")).unwrap();
    let es = Verifier::new(Algorithm::ES256, DecodingKey::from_ec_pem(&read("es256-public.pem")).unwrap(), "ID_TOKEN");
    let es_key = EncodingKey::from_ec_pem(&read("es256-private.pem")).unwrap();

    let rs_token = sign(jsonwebtoken::Algorithm::RS256, &rs_key, valid_claims());
    let es_token = sign(jsonwebtoken::Algorithm::ES256, &es_key, valid_claims());
    assert_eq!(rs.authenticate(&cookie(&rs_token), NOW), Ok("alex".to_owned()));
    assert_eq!(es.authenticate(&cookie(&es_token), NOW), Ok("alex".to_owned()));
    // Each refuses the other's tokens, and an HS256 token (the classic confusion:
    // the public key used as an HMAC secret).
    assert_eq!(rs.authenticate(&cookie(&es_token), NOW), Err(AuthError::WrongAlgorithm));
    assert_eq!(es.authenticate(&cookie(&rs_token), NOW), Err(AuthError::WrongAlgorithm));
    let confused =
        sign(jsonwebtoken::Algorithm::HS256, &EncodingKey::from_secret(&read("rs256-public.pem")), valid_claims());
    assert_eq!(rs.authenticate(&cookie(&confused), NOW), Err(AuthError::WrongAlgorithm));
    assert_eq!(
        es.authenticate(&cookie(&sign(jsonwebtoken::Algorithm::ES256, &es_key, json!({"exp": NOW - 1}))), NOW),
        Err(AuthError::Expired)
    );
    // A token signed by another key pair of the same kind.
    let tampered = {
        let mut parts: Vec<String> = es_token.split('.').map(str::to_owned).collect();
        parts[1] =
            sign(jsonwebtoken::Algorithm::ES256, &es_key, json!({"preferred_username": "root", "exp": NOW + 60}))
                .split('.')
                .nth(1)
                .unwrap()
                .to_owned();
        parts.join(".")
    };
    assert_eq!(es.authenticate(&cookie(&tampered), NOW), Err(AuthError::BadSignature));
}

proptest::proptest! {
    /// Arbitrary cookie and Authorization headers never panic and never
    /// authenticate anyone.
    #[test]
    fn arbitrary_headers_are_refused(cookie_value in "[ -~]{0,200}", bearer in "[ -~]{0,200}") {
        let (verifier, _) = hs256();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&cookie_value) {
            headers.insert(header::COOKIE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {bearer}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
        proptest::prop_assert!(verifier.authenticate(&headers, NOW).is_err());
    }
}
