//! `docs/reference.md` §3.3: every `/products` route needs a valid bearer token.

use std::path::PathBuf;
use std::sync::Arc;

use pinv::config::{JwtKey, PublicKeyAlgorithm};

use crate::helpers::*;

const SOME_ID: &str = "9ffb3182-409d-48cb-a266-1379117bff58";

/// Sends POST /products and GET /products/{id} with this Authorization header (or none)
/// and checks both are refused with 401, WWW-Authenticate and the error JSON.
async fn assert_refused(app: &TestApp, authorization: Option<String>) {
    let post = app.client.post(app.url("/products")).json(&seed_request());
    let get = app.client.get(app.url(&format!("/products/{SOME_ID}")));
    let list = app.client.get(app.url("/products"));
    for req in [post, get, list] {
        let req = match &authorization {
            Some(a) => req.header("Authorization", a),
            None => req,
        };
        let res = req.send().await.unwrap();
        let www = res
            .headers()
            .get("www-authenticate")
            .expect("WWW-Authenticate on 401")
            .to_str()
            .unwrap()
            .to_owned();
        assert!(www.starts_with(r#"Bearer realm="pinv""#), "{www}");
        assert!(www.contains(r#"error="invalid_token""#), "{www}");
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[tokio::test]
async fn missing_token_is_401() {
    let app = spawn_shell_app().await;
    assert_refused(&app, None).await;
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let app = spawn_shell_app().await;
    for header in [
        "Basic dXNlcjpwdw==",
        "Bearer",
        "Bearer ",
        "token",
        "Bearer not.a.jwt",
    ] {
        assert_refused(&app, Some(header.to_owned())).await;
    }
}

#[tokio::test]
async fn token_signed_with_another_secret_is_401() {
    let app = spawn_shell_app().await;
    let t = hs256(&claims(&["*"]), "another-secret-another-secret-another");
    assert_refused(&app, bearer(&t)).await;
}

#[tokio::test]
async fn unsigned_alg_none_token_is_401() {
    let app = spawn_shell_app().await;
    assert_refused(&app, bearer(&alg_none(&claims(&["*"])))).await;
}

#[tokio::test]
async fn expired_token_is_401() {
    let app = spawn_shell_app().await;
    let mut c = claims(&["*"]);
    c.exp = Some(now() - 3600);
    assert_refused(&app, bearer(&hs256(&c, SECRET))).await;
}

#[tokio::test]
async fn token_without_exp_is_401() {
    let app = spawn_shell_app().await;
    let mut c = claims(&["*"]);
    c.exp = None;
    assert_refused(&app, bearer(&hs256(&c, SECRET))).await;
}

#[tokio::test]
async fn token_not_valid_yet_is_401() {
    let app = spawn_shell_app().await;
    let mut c = claims(&["*"]);
    c.nbf = Some(now() + 3600);
    assert_refused(&app, bearer(&hs256(&c, SECRET))).await;
}

#[tokio::test]
async fn rs256_token_is_401_when_hs256_is_configured() {
    let app = spawn_shell_app().await;
    assert_refused(&app, bearer(&rs256(&claims(&["*"])))).await;
}

#[tokio::test]
async fn token_without_sources_claim_is_401() {
    let app = spawn_shell_app().await;
    #[derive(serde::Serialize)]
    struct NoSources {
        exp: u64,
    }
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &NoSources { exp: now() + 60 },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_refused(&app, bearer(&t)).await;
}

async fn issuer_audience_app() -> TestApp {
    let mut settings = test_settings();
    settings.jwt.issuer = Some("https://idp.example".into());
    settings.jwt.audience = Some("pinv".into());
    spawn_shell_app_with(settings, Arc::new(EmptyStore)).await
}

#[tokio::test]
async fn wrong_issuer_is_401() {
    let app = issuer_audience_app().await;
    let mut c = claims(&["*"]);
    c.aud = Some("pinv".into());
    c.iss = Some("https://evil.example".into());
    assert_refused(&app, bearer(&hs256(&c, SECRET))).await;
    c.iss = None;
    assert_refused(&app, bearer(&hs256(&c, SECRET))).await;
}

#[tokio::test]
async fn wrong_audience_is_401() {
    let app = issuer_audience_app().await;
    let mut c = claims(&["*"]);
    c.iss = Some("https://idp.example".into());
    c.aud = Some("someone-else".into());
    assert_refused(&app, bearer(&hs256(&c, SECRET))).await;
}

#[tokio::test]
async fn right_issuer_and_audience_are_accepted() {
    let app = issuer_audience_app().await;
    let mut c = claims(&["*"]);
    c.iss = Some("https://idp.example".into());
    c.aud = Some("pinv".into());
    let res = app
        .client
        .get(app.url(&format!("/products/{SOME_ID}")))
        .bearer_auth(hs256(&c, SECRET))
        .send()
        .await
        .unwrap();
    // Past authentication: the (empty) store has no such product.
    assert_error(res, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn any_valid_token_may_read() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .get(app.url("/products"))
        .bearer_auth(token(&[]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/keys")
        .join(name)
}

async fn public_key_app(algorithm: PublicKeyAlgorithm, file: &str) -> TestApp {
    let mut settings = test_settings();
    settings.jwt.key = Some(JwtKey::PublicKey {
        algorithm,
        file: key_file(file),
    });
    spawn_shell_app_with(settings, Arc::new(EmptyStore)).await
}

async fn read_status(app: &TestApp, token: &str) -> u16 {
    app.client
        .get(app.url("/products"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn rs256_public_key_accepts_rs256_tokens_only() {
    let app = public_key_app(PublicKeyAlgorithm::Rs256, "rsa-public.pem").await;
    assert_eq!(read_status(&app, &rs256(&claims(&["*"]))).await, 200);
    assert_eq!(read_status(&app, &es256(&claims(&["*"]))).await, 401);
    // Algorithm confusion: the public key used as an HMAC secret must not work.
    let pem = std::fs::read_to_string(key_file("rsa-public.pem")).unwrap();
    assert_eq!(read_status(&app, &hs256(&claims(&["*"]), &pem)).await, 401);
    assert_refused(&app, bearer(&alg_none(&claims(&["*"])))).await;
}

#[tokio::test]
async fn es256_public_key_accepts_es256_tokens_only() {
    let app = public_key_app(PublicKeyAlgorithm::Es256, "ec-public.pem").await;
    assert_eq!(read_status(&app, &es256(&claims(&["*"]))).await, 200);
    assert_eq!(read_status(&app, &rs256(&claims(&["*"]))).await, 401);
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let app = spawn_shell_app().await;
    for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

fn hs256_json(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `GET /products/{SOME_ID}` with this token: past authentication the empty store answers 404.
async fn passes_authentication(app: &TestApp, token: &str) {
    let res = app
        .client
        .get(app.url(&format!("/products/{SOME_ID}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn audience_array_containing_the_configured_audience_is_accepted() {
    let app = issuer_audience_app().await;
    let t = hs256_json(serde_json::json!({"sources": ["*"], "exp": now() + 3600,
        "iss": "https://idp.example", "aud": ["other", "pinv"]}));
    passes_authentication(&app, &t).await;
    let t = hs256_json(serde_json::json!({"sources": ["*"], "exp": now() + 3600,
        "iss": "https://idp.example", "aud": ["other", "another"]}));
    assert_refused(&app, bearer(&t)).await;
}

#[tokio::test]
async fn fractional_numeric_dates_are_accepted() {
    let app = spawn_shell_app().await;
    let t = hs256_json(serde_json::json!({"sources": ["*"], "exp": 1893456000.5,
        "nbf": now() as f64 - 0.5, "iat": now() as f64 - 0.5}));
    passes_authentication(&app, &t).await;
}

#[tokio::test]
async fn two_authorization_headers_are_401() {
    let app = spawn_shell_app().await;
    let good = format!("Bearer {}", token(&["*"]));
    for second in [good.clone(), "Bearer other".to_owned()] {
        let res = app
            .client
            .get(app.url("/products"))
            .header("Authorization", &good)
            .header("Authorization", &second)
            .send()
            .await
            .unwrap();
        let body = assert_error(res, 401, "UNAUTHORIZED").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than one"), "{message}");
    }
}

#[tokio::test]
async fn alg_none_token_is_refused_saying_so() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .get(app.url("/products"))
        .bearer_auth(alg_none(&claims(&["*"])))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 401, "UNAUTHORIZED").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("alg none"), "{message}");
}

#[tokio::test]
async fn jwt_leeway_is_configurable() {
    let t = hs256_json(serde_json::json!({"sources": ["*"], "exp": now() - 30}));
    let mut settings = test_settings();
    settings.jwt.leeway_seconds = 0;
    let strict = spawn_shell_app_with(settings, Arc::new(EmptyStore)).await;
    assert_refused(&strict, bearer(&t)).await;
    let default = spawn_shell_app_with(test_settings(), Arc::new(EmptyStore)).await;
    passes_authentication(&default, &t).await;
}
