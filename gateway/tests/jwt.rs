//! The JWT cases of the gateway's handshake check: valid, expired, not yet valid,
//! wrong signature, wrong algorithm (including `none`), missing claim, missing or
//! empty cookie, malformed tokens, and the Bearer header; for HS256, RS256 and
//! ES256. Then tokens as identity providers issue them: audience, issuer, leeway,
//! several HS256 secrets, JWKS key sets chosen by `kid` and their rotation, and
//! the namespaces claim (a property test through `identify`). Every refusal's
//! reason is the README's plain text, never debug output.

use chinwag_gateway::auth::{AuthError, Verifier};
use chinwag_gateway::config::Algorithm;
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use proptest::strategy::Strategy as _;
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
    assert_eq!(verifier.authenticate(&cookie(&none), NOW), Err(AuthError::WrongAlgorithm), "alg none is refused");

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
    let config = JwtConfig {
        algorithm: Algorithm::HS256,
        key: KeySource::SecretEnv(vec![var.into()]),
        cookie: "ID_TOKEN".into(),
        audiences: Vec::new(),
        issuers: Vec::new(),
        leeway_secs: 0,
        namespaces: None,
        close_on_expiry: true,
    };
    let token = chinwag_gateway::auth::hs256_token(&config, "alex", &[], NOW, 60).unwrap();
    let verifier = Verifier::from_config(&config).unwrap();
    assert_eq!(verifier.authenticate(&cookie(&token), NOW + 59), Ok("alex".to_owned()));
    assert_eq!(verifier.authenticate(&cookie(&token), NOW + 60), Err(AuthError::Expired));
    let public = JwtConfig { key: KeySource::PublicKeyFile("keys/rs256-public.pem".into()), ..config };
    assert!(chinwag_gateway::auth::hs256_token(&public, "alex", &[], NOW, 60).is_err());
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

/// The reason a 401 carries: the README's wording for the cases it lists.
fn reason(result: Result<String, AuthError>) -> String {
    let reason = result.expect_err("refused").to_string();
    assert_plain(&reason);
    reason
}

/// A reason meant for people: no Rust debug text (`Json(Error("...`), no parser
/// positions, no escaped quotes.
fn assert_plain(reason: &str) {
    for debug in
        ["Error(", "Error {", "Kind", "Json", "Base64(", "Utf8", "Some(", "\\\"", "variant", "line ", "column "]
    {
        assert!(!reason.contains(debug), "{debug:?} in {reason:?}");
    }
}

/// A token made by hand: `header` and `claims` as given (any JSON, or not JSON at
/// all), base64url-encoded, and `signature` as it is.
fn raw(header: &str, claims: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(claims))
}

fn b64(part: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(part)
}

/// `message` (`header.claims`, as they are) with a valid HS256 signature: what
/// only the secret's holder can make, so that what follows the signature check is
/// reached.
fn signed(key: &EncodingKey, message: &str) -> String {
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    headers
}

/// Every case of the check, for each algorithm family, from the cookie and from
/// `Authorization: Bearer` alike; each refusal with the README's reason.
#[test]
fn every_family_every_case() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/");
    let read = |name: &str| std::fs::read(format!("{keys}{name}")).unwrap();
    let (hs, hs_key) = hs256();
    let families = [
        ("HS256", hs, hs_key, EncodingKey::from_secret(b"another secret of at least thirty-two bytes")),
        (
            "RS256",
            Verifier::new(Algorithm::RS256, DecodingKey::from_rsa_pem(&read("rs256-public.pem")).unwrap(), "ID_TOKEN"),
            EncodingKey::from_rsa_pem(&read("rs256-private.pem")).unwrap(),
            EncodingKey::from_rsa_pem(&read("rs256-other-private.pem")).unwrap(),
        ),
        (
            "ES256",
            Verifier::new(Algorithm::ES256, DecodingKey::from_ec_pem(&read("es256-public.pem")).unwrap(), "ID_TOKEN"),
            EncodingKey::from_ec_pem(&read("es256-private.pem")).unwrap(),
            EncodingKey::from_ec_pem(&read("es256-other-private.pem")).unwrap(),
        ),
    ];
    for (name, verifier, key, other_key) in families {
        let alg: jsonwebtoken::Algorithm = name.parse().unwrap();
        let token = |claims| sign(alg, &key, claims);
        for (place, carry) in [("cookie", cookie as fn(&str) -> HeaderMap), ("bearer", bearer)] {
            let check = |token: &str| verifier.authenticate(&carry(token), NOW);
            let case = format!("{name} in the {place}");
            assert_eq!(check(&token(valid_claims())), Ok("alex".to_owned()), "{case}");
            // Time: exp must be in the future, nbf (if any) not.
            let expired = "the token has expired (or has no exp)";
            assert_eq!(reason(check(&token(json!({"preferred_username": "alex", "exp": NOW})))), expired, "{case}");
            assert_eq!(reason(check(&token(json!({"preferred_username": "alex"})))), expired, "{case}: no exp");
            let nbf = |nbf: u64| token(json!({"preferred_username": "alex", "exp": NOW + 60, "nbf": nbf}));
            assert_eq!(reason(check(&nbf(NOW + 1))), "the token is not valid yet", "{case}: nbf");
            assert_eq!(check(&nbf(NOW)), Ok("alex".to_owned()), "{case}: nbf now");
            assert_eq!(check(&nbf(NOW - 60)), Ok("alex".to_owned()), "{case}: nbf past");
            // The required claim.
            let no_username = "the token has no preferred_username";
            assert_eq!(reason(check(&token(json!({"exp": NOW + 60})))), no_username, "{case}");
            assert_eq!(
                reason(check(&token(json!({"preferred_username": null, "exp": NOW + 60})))),
                no_username,
                "{case}: null"
            );
            // The signature, and the algorithm.
            assert_eq!(
                reason(check(&sign(alg, &other_key, valid_claims()))),
                "the token's signature is not valid",
                "{case}: another key"
            );
            let unsigned = raw(r#"{"alg":"none","typ":"JWT"}"#, &valid_claims().to_string(), "");
            let wrong_algorithm = "the token is signed with an algorithm this server does not accept";
            assert_eq!(reason(check(&unsigned)), wrong_algorithm, "{case}: alg none");
            let hs384 = sign(jsonwebtoken::Algorithm::HS384, &EncodingKey::from_secret(SECRET), valid_claims());
            assert_eq!(reason(check(&hs384)), wrong_algorithm, "{case}: HS384");
        }
    }
}

/// Tokens that are not well-formed JWTs: refused with a reason meant for people,
/// never with the parser's debug output.
#[test]
fn malformed_tokens_have_plain_reasons() {
    let (verifier, key) = hs256();
    let valid = sign(jsonwebtoken::Algorithm::HS256, &key, valid_claims());
    let (head, rest) = valid.split_once('.').unwrap();
    let claims = valid_claims().to_string();
    let wrong_algorithm = "the token is signed with an algorithm this server does not accept";
    let json_form = "the token is malformed: its header or claims are not JSON objects of the expected form";
    let cases: Vec<(String, &str)> = vec![
        ("not.a.jwt".into(), "the token is malformed: its header is not base64url-encoded JSON"),
        ("abc".into(), "the token is malformed: it is not three base64url parts separated by dots"),
        (format!("{valid}.x"), "the token is malformed: it is not three base64url parts separated by dots"),
        (raw("[1, 2]", &claims, "x"), "the token is malformed: its header is not base64url-encoded JSON"),
        (raw(r#"{"typ":"JWT"}"#, &claims, "x"), "the token is malformed: its header has no alg"),
        (raw(r#"{"alg":5}"#, &claims, "x"), "the token is malformed: its header has no alg"),
        (raw(r#"{"alg":"none"}"#, &claims, ""), wrong_algorithm),
        (raw(r#"{"alg":"None"}"#, &claims, ""), wrong_algorithm),
        (raw(r#"{"alg":"HS256x"}"#, &claims, "x"), wrong_algorithm),
        (raw(r#"{"alg":"EdDSA"}"#, &claims, "x"), wrong_algorithm),
        (raw(r#"{"alg":"HS256","kid":5}"#, &claims, "x"), "the token is malformed: its header's kid is not a string"),
        (format!("{head}.!!!.{}", rest.split_once('.').unwrap().1), "the token's signature is not valid"),
        (format!("{head}.{}", rest.replace('.', ".!")), "the token is malformed: a part is not base64url"),
        (signed(&key, &format!("{head}.!!!")), "the token is malformed: a part is not base64url"),
        (signed(&key, &format!("{head}.{}", b64("[1]"))), json_form),
        (signed(&key, &format!("{head}.{}", b64("{"))), json_form),
    ];
    for (token, expected) in cases {
        assert_eq!(reason(verifier.authenticate(&cookie(&token), NOW)), expected, "{token}");
    }
    // Claims of the wrong type, correctly signed: the claim is named.
    let hs = jsonwebtoken::Algorithm::HS256;
    for (claims, expected) in [
        (json!({"preferred_username": "alex", "exp": "soon"}), "the token is malformed: its exp is not a number"),
        (
            json!({"preferred_username": "alex", "exp": NOW + 60, "nbf": "later"}),
            "the token is malformed: its nbf is not a number",
        ),
        (
            json!({"preferred_username": 7, "exp": NOW + 60}),
            "the token is malformed: its preferred_username is not a string",
        ),
    ] {
        assert_eq!(reason(verifier.authenticate(&cookie(&sign(hs, &key, claims.clone())), NOW)), expected, "{claims}");
    }
    // A float time is a NumericDate too.
    let float = sign(hs, &key, json!({"preferred_username": "alex", "exp": NOW as f64 + 0.5}));
    assert_eq!(verifier.authenticate(&cookie(&float), NOW), Ok("alex".to_owned()));
}

proptest::proptest! {
    /// Whatever the token, header and claims, the reason is plain text.
    #[test]
    fn every_refusal_is_plain_text(
        token in "[ -~]{0,120}",
        header in "[ -~]{0,40}",
        alg in proptest::option::of("[A-Za-z0-9]{0,6}"),
        claims in "[ -~]{0,40}",
        signature in "[A-Za-z0-9_\\-]{0,20}",
    ) {
        let (verifier, _) = hs256();
        if let Err(e) = verifier.authenticate(&cookie(&token), NOW) {
            assert_plain(&e.to_string());
        }
        let header = alg.map_or(header, |alg| json!({"alg": alg, "typ": "JWT"}).to_string());
        if let Err(e) = verifier.authenticate(&bearer(&raw(&header, &claims, &signature)), NOW) {
            assert_plain(&e.to_string());
        }
    }

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

// ----- tokens as identity providers issue them ------------------------------------

fn keys_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/")
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}{name}", keys_dir())).unwrap()
}

/// A JSON Web Key of the test keys, with `extra` members (kid, use, alg).
fn jwk(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut key: serde_json::Value = serde_json::from_slice(&pem(name)).unwrap();
    key.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    key
}

/// A token signed by `key` with `kid` in its header.
fn with_kid(alg: jsonwebtoken::Algorithm, key: &EncodingKey, kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// A folder of its own for a test's key files, removed at the end.
struct Folder(std::path::PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("chinwag-jwt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        // Atomically, as a deployment replaces a key file.
        std::fs::write(self.0.join(".next"), contents).unwrap();
        std::fs::rename(self.0.join(".next"), &path).unwrap();
        path
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn jwt_config(algorithm: Algorithm, key: chinwag_gateway::config::KeySource) -> chinwag_gateway::config::JwtConfig {
    chinwag_gateway::config::JwtConfig {
        algorithm,
        key,
        cookie: "ID_TOKEN".into(),
        audiences: Vec::new(),
        issuers: Vec::new(),
        leeway_secs: 0,
        namespaces: Some(chinwag_core::gateway::NamespacePolicy::Any),
        close_on_expiry: true,
    }
}

#[test]
fn audience_issuer_and_leeway() {
    let (verifier, key) = hs256();
    let verifier = verifier
        .audiences(vec!["chinwag".into(), "chat".into()])
        .issuers(vec!["https://idp.example".into()])
        .leeway(30);
    let hs = jsonwebtoken::Algorithm::HS256;
    let check = |claims: serde_json::Value| verifier.verify(&cookie(&sign(hs, &key, claims)), NOW);
    let good = json!({"preferred_username": "alex", "exp": NOW + 60, "aud": "chinwag", "iss": "https://idp.example"});
    let verified = check(good.clone()).unwrap();
    assert_eq!((verified.username.as_str(), verified.expires), ("alex", (NOW + 90) as f64), "exp plus the leeway");
    assert_eq!(verified.claims["iss"], "https://idp.example", "every claim is kept");
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[key] = value;
        check(claims)
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(key);
        check(claims)
    };
    assert!(with("aud", json!(["other", "chat"])).is_ok(), "one of a list of audiences");
    let refusals: Vec<(Result<chinwag_gateway::Verified, AuthError>, &str)> = vec![
        (with("aud", json!("other")), "the token is meant for another audience (its aud does not name this server)"),
        (with("aud", json!(["other"])), "the token is meant for another audience (its aud does not name this server)"),
        (without("aud"), "the token has no aud (audience), which this server requires"),
        (with("aud", json!(7)), "the token is malformed: its aud is not a string or a list of strings"),
        (with("aud", json!(["chinwag", 7])), "the token is malformed: its aud is not a string or a list of strings"),
        (with("iss", json!("https://evil.example")), "the token is from an issuer (iss) this server does not accept"),
        (without("iss"), "the token has no iss (issuer), which this server requires"),
        (with("iss", json!(["https://idp.example"])), "the token is malformed: its iss is not a string"),
        // The leeway: 30 s past exp is expired, 29 s is not; nbf 30 s ahead is fine.
        (with("exp", json!(NOW - 30)), "the token has expired (or has no exp)"),
        (with("nbf", json!(NOW + 31)), "the token is not valid yet"),
    ];
    for (result, expected) in refusals {
        assert_eq!(result.expect_err(expected).to_string(), expected);
    }
    assert!(with("exp", json!(NOW - 29)).is_ok(), "within the leeway");
    assert!(with("nbf", json!(NOW + 30)).is_ok(), "within the leeway");
    // Without audiences or issuers configured, neither is looked at.
    let (plain, _) = hs256();
    assert!(
        plain
            .verify(&cookie(&sign(hs, &key, json!({"preferred_username": "a", "exp": NOW + 1, "aud": 7}))), NOW)
            .is_ok()
    );
}

#[test]
fn several_hs256_secrets_during_a_rotation() {
    let (new, old) = ("CHINWAG_TEST_ROTATION_NEW", "CHINWAG_TEST_ROTATION_OLD");
    // SAFETY: no other code of this test binary reads or writes these variables.
    unsafe {
        std::env::set_var(new, "the new secret, at least thirty-two bytes long");
        std::env::set_var(old, std::str::from_utf8(SECRET).unwrap());
    }
    let config =
        jwt_config(Algorithm::HS256, chinwag_gateway::config::KeySource::SecretEnv(vec![new.into(), old.into()]));
    let verifier = Verifier::from_config(&config).unwrap();
    let hs = jsonwebtoken::Algorithm::HS256;
    let by_old = sign(hs, &EncodingKey::from_secret(SECRET), valid_claims());
    let by_new = sign(hs, &EncodingKey::from_secret(b"the new secret, at least thirty-two bytes long"), valid_claims());
    let by_neither =
        sign(hs, &EncodingKey::from_secret(b"another secret of at least thirty-two bytes"), valid_claims());
    assert_eq!(verifier.authenticate(&cookie(&by_old), NOW), Ok("alex".to_owned()));
    assert_eq!(verifier.authenticate(&cookie(&by_new), NOW), Ok("alex".to_owned()));
    assert_eq!(verifier.authenticate(&cookie(&by_neither), NOW), Err(AuthError::BadSignature));
    // `chinwag token` signs with the first: the new one.
    let made = chinwag_gateway::auth::hs256_token(&config, "jo", &[], NOW, 60).unwrap();
    let only_new = Verifier::new(
        Algorithm::HS256,
        DecodingKey::from_secret(b"the new secret, at least thirty-two bytes long"),
        "ID_TOKEN",
    );
    assert_eq!(only_new.authenticate(&cookie(&made), NOW), Ok("jo".to_owned()));
    // A missing second secret is an error at start, naming it.
    let missing = jwt_config(
        Algorithm::HS256,
        chinwag_gateway::config::KeySource::SecretEnv(vec![new.into(), "CHINWAG_TEST_UNSET".into()]),
    );
    assert!(Verifier::from_config(&missing).unwrap_err().contains("CHINWAG_TEST_UNSET"));
}

#[test]
fn jwks_keys_are_chosen_by_kid_and_rotate() {
    let folder = Folder::new("jwks");
    let set = |keys: Vec<serde_json::Value>| json!({"keys": keys}).to_string();
    let rs = jsonwebtoken::Algorithm::RS256;
    let first = EncodingKey::from_rsa_pem(&pem("rs256-private.pem")).unwrap();
    let second = EncodingKey::from_rsa_pem(&pem("rs256-other-private.pem")).unwrap();
    // What identity providers publish beside their signing keys: an encryption
    // key, a key of another algorithm, one of a kind this server cannot read.
    let path = folder.write(
        "jwks.json",
        &set(vec![
            jwk("rs256-public.jwk.json", json!({"kid": "2025", "use": "sig", "alg": "RS256"})),
            jwk("rs256-other-public.jwk.json", json!({"kid": "enc", "use": "enc", "alg": "RSA-OAEP"})),
            jwk("es256-public.jwk.json", json!({"kid": "ec"})),
            json!({"kid": "weird", "kty": "nope"}),
        ]),
    );
    let verifier =
        Verifier::from_config(&jwt_config(Algorithm::RS256, chinwag_gateway::config::KeySource::JwksFile(path)))
            .unwrap();
    let summary = verifier.summary();
    assert_eq!((summary.keys, summary.kids.clone()), (1, vec!["2025".to_owned()]));
    assert_eq!(summary.skipped.len(), 3, "{summary}");
    let check = |key: &EncodingKey, kid: Option<&str>| {
        verifier.authenticate(&cookie(&with_kid(rs, key, kid, valid_claims())), NOW)
    };
    assert_eq!(check(&first, Some("2025")), Ok("alex".to_owned()));
    assert_eq!(check(&first, None), Ok("alex".to_owned()), "one key: no kid needed");
    assert_eq!(check(&first, Some("2026")), Err(AuthError::UnknownKey));
    assert_eq!(check(&second, Some("enc")), Err(AuthError::UnknownKey), "an encryption key signs nothing");
    assert_eq!(check(&second, Some("2025")), Err(AuthError::BadSignature));
    assert_eq!(verifier.reload_if_changed(), Ok(None), "unchanged");

    // Rotation: the new key joins; both are accepted by kid; a token must say which.
    folder.write(
        "jwks.json",
        &set(vec![
            jwk("rs256-public.jwk.json", json!({"kid": "2025"})),
            jwk("rs256-other-public.jwk.json", json!({"kid": "2026"})),
        ]),
    );
    let reloaded = verifier.reload_if_changed().unwrap().expect("changed");
    assert_eq!(reloaded.kids, ["2025", "2026"]);
    assert_eq!(check(&second, Some("2026")), Ok("alex".to_owned()));
    assert_eq!(check(&first, Some("2025")), Ok("alex".to_owned()));
    assert_eq!(check(&first, None), Err(AuthError::NoKeyId));
    assert_eq!(check(&second, Some("2025")), Err(AuthError::BadSignature), "each kid its own key");
    // The old key leaves.
    folder.write("jwks.json", &set(vec![jwk("rs256-other-public.jwk.json", json!({"kid": "2026"}))]));
    assert_eq!(verifier.reload().unwrap().kids, ["2026"]);
    assert_eq!(check(&first, Some("2025")), Err(AuthError::UnknownKey));
    // A broken file, or one without a usable key, changes nothing.
    for broken in ["{\"keys\": [", "{\"kees\": []}", &set(vec![jwk("es256-public.jwk.json", json!({"kid": "ec"}))])] {
        folder.write("jwks.json", broken);
        let error = verifier.reload_if_changed().expect_err(broken);
        assert!(error.contains("jwks.json"), "{error}");
        assert_eq!(check(&second, Some("2026")), Ok("alex".to_owned()), "{broken}: the keys in use stay");
    }
    std::fs::remove_file(folder.0.join("jwks.json")).unwrap();
    assert!(verifier.reload().unwrap_err().contains("cannot read"));
    assert_eq!(check(&second, Some("2026")), Ok("alex".to_owned()));
    // ES256 from a JWKS too.
    let es_path = folder.write("es.json", &set(vec![jwk("es256-public.jwk.json", json!({"kid": "p256"}))]));
    let es =
        Verifier::from_config(&jwt_config(Algorithm::ES256, chinwag_gateway::config::KeySource::JwksFile(es_path)))
            .unwrap();
    let es_key = EncodingKey::from_ec_pem(&pem("es256-private.pem")).unwrap();
    let es_token = with_kid(jsonwebtoken::Algorithm::ES256, &es_key, Some("p256"), valid_claims());
    assert_eq!(es.authenticate(&cookie(&es_token), NOW), Ok("alex".to_owned()));
}

/// A request for `namespace` carrying `token`, as the gateway gets it.
fn request(namespace: &str, token: &str) -> chinwag_core::Request {
    let head = format!(
        "GET /connect?namespace={namespace} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: ID_TOKEN={token}\r\n\r\n"
    );
    let now = std::time::Instant::now();
    let mut conn = chinwag_core::Connection::server(chinwag_core::Config::default(), now);
    conn.receive(now, head.as_bytes());
    match conn.poll_event(now) {
        Some(chinwag_core::Event::UpgradeRequest(request)) => *request,
        other => panic!("not an upgrade request: {other:?}"),
    }
}

proptest::proptest! {
    /// Random users, tokens with random namespaces claims (missing, a string, a
    /// list with or without `*`, a list with a number), and requested namespaces:
    /// a connection is admitted only to a namespace its signed claim lists (or
    /// `*`), with 403 otherwise; the claims are the token's, whatever the query says.
    #[test]
    fn a_connection_is_admitted_only_to_an_allowed_namespace(
        user in "[a-z]{1,8}",
        claim in proptest::option::of(proptest::collection::vec(proptest::prop_oneof![
            "[a-c]{1,2}".prop_map(serde_json::Value::from),
            proptest::strategy::Just(json!("*")),
            proptest::strategy::Just(json!(1)),
        ], 0..4)),
        as_string in proptest::bool::ANY,
        requested in "[a-c]{1,2}",
    ) {
        let (verifier, key) = hs256();
        let authenticator = chinwag_gateway::Authenticator::Jwt(Box::new(
            verifier.namespaces(chinwag_core::gateway::NamespacePolicy::Claim("namespaces".into())),
        ));
        let mut claims = json!({"preferred_username": user, "exp": NOW + 60});
        match (&claim, as_string) {
            (Some(list), true) if !list.is_empty() => claims["namespaces"] = list[0].clone(),
            (Some(list), _) => claims["namespaces"] = json!(list),
            (None, _) => {}
        }
        let token = sign(jsonwebtoken::Algorithm::HS256, &key, claims.clone());
        let outcome = chinwag_gateway::identify(&request(&requested, &token), &authenticator, NOW);
        let allowed = match &claims["namespaces"] {
            serde_json::Value::Array(items) => items.iter().all(|i| i.is_string())
                && items.iter().any(|i| i == "*" || i == requested.as_str()),
            _ => false,
        };
        match outcome {
            Ok(identified) => {
                proptest::prop_assert!(allowed, "admitted to {requested} with {claims}");
                proptest::prop_assert_eq!(identified.identity.namespace.as_deref(), Some(requested.as_str()));
                proptest::prop_assert_eq!(serde_json::Value::Object(identified.claims), claims);
            }
            Err(refusal) => {
                proptest::prop_assert!(!allowed, "refused {requested} with {claims}: {}", refusal.reason);
                proptest::prop_assert_eq!(refusal.status, 403);
                assert_plain(&refusal.reason);
            }
        }
    }
}
