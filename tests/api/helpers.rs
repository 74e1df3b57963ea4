//! Spawning a real PINV server on a random port, and talking to it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pinv::config::Settings;
use pinv::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use pinv::core::{EventId, MatchKey, PinvId, Source};
use pinv::startup::Application;
use pinv::store::{ListPage, ListQuery, Store, StoreError, StoreResult};
use serde_json::{json, Value};

/// The HS256 secret every test app is configured with.
pub const SECRET: &str = "pinv-test-secret-0123456789abcdef0123";

/// The repository's merge-rules directory.
pub fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("merge-rules")
}

/// Settings of a test app: port 0, memory store, [`SECRET`], the repository's rules.
pub fn test_settings() -> Settings {
    Settings::for_tests(rules_dir(), SECRET)
}

/// A running app and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A plain client.
    pub client: reqwest::Client,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// An app on the store under test with the repository's rules.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(), store_under_test().await).await
}

/// An app with these settings and this store (rules and schemas loaded as in production).
pub async fn spawn_app_with(settings: Settings, store: Arc<dyn Store>) -> TestApp {
    let app = Application::build_with_store(settings, store).expect("the test app builds");
    start(app)
}

/// An app on a store whose behaviour the test picks ([`EmptyStore`], [`DownStore`]), for
/// routes that never need stored products (auth, content type, size, routing, health).
pub async fn spawn_shell_app_with(settings: Settings, store: Arc<dyn Store>) -> TestApp {
    spawn_app_with(settings, store).await
}

/// [`spawn_shell_app_with`] on the default settings and an empty store.
pub async fn spawn_shell_app() -> TestApp {
    spawn_shell_app_with(test_settings(), Arc::new(EmptyStore)).await
}

/// Runs an already built app (tests that build through [`Application::build`]).
pub fn spawn_built(app: Application) -> TestApp {
    start(app)
}

fn start(app: Application) -> TestApp {
    let port = app.port();
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        handle,
        task,
    }
}

/// The variable that picks the store the suite runs on: `memory` (the default),
/// `embedded` or `mongodb`. `scripts/test.sh` runs the suite once per store.
pub const STORE_VAR: &str = "PINV_TEST_API_STORE";

/// A fresh, empty store of the kind [`STORE_VAR`] names. A MongoDB run without a
/// reachable server fails: it was asked for, so it must not pass on another store.
pub async fn store_under_test() -> Arc<dyn Store> {
    match std::env::var(STORE_VAR).unwrap_or_default().as_str() {
        "" | "memory" => Arc::new(pinv::store::memory::MemoryStore::new()),
        "embedded" => {
            // The directory lives as long as the test process; each store gets its own.
            let dir = tempfile::tempdir().expect("a temp dir").keep();
            Arc::new(
                pinv::store::embedded::EmbeddedStore::open(&dir).expect("embedded store opens"),
            )
        }
        "mongodb" => {
            let uri = pinv::testing::mongo::uri();
            let options = pinv::testing::mongo::options();
            let database = format!("pinv_api_{}", uuid::Uuid::new_v4().simple());
            let store = pinv::store::mongo::MongoStore::connect(&uri, &database, options)
                .await
                .unwrap_or_else(|e| panic!("cannot reach the MongoDB test server at {uri}: {e}"));
            Arc::new(store)
        }
        other => panic!("{STORE_VAR}={other}: expected memory, embedded or mongodb"),
    }
}

impl TestApp {
    /// A full URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST /products` with a JSON body and a token for `sources`.
    pub async fn post_products(&self, body: &Value, sources: &[&str]) -> reqwest::Response {
        self.post_products_query(body, sources, "").await
    }

    /// `POST /products?<query>` with a JSON body and a token for `sources`.
    pub async fn post_products_query(
        &self,
        body: &Value,
        sources: &[&str],
        query: &str,
    ) -> reqwest::Response {
        let url = if query.is_empty() {
            self.url("/products")
        } else {
            self.url(&format!("/products?{query}"))
        };
        self.client
            .post(url)
            .bearer_auth(token(sources))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /products` as `source`: the status and the JSON answer.
    pub async fn post_answer(&self, body: &Value, source: &str) -> (u16, Value) {
        let res = self.post_products(body, &[source]).await;
        let status = res.status().as_u16();
        (status, res.json().await.expect("a JSON answer"))
    }

    /// The sources with a contribution to product `id` (`GET /products/{id}/sources`).
    pub async fn sources_of(&self, id: &str) -> std::collections::BTreeSet<String> {
        let res = self
            .get_authorized(&format!("/products/{id}/sources"))
            .await;
        assert_eq!(res.status().as_u16(), 200);
        let body: Value = res.json().await.expect("a JSON answer");
        body.as_array()
            .expect("an array of contributions")
            .iter()
            .map(|c| c["source"].as_str().expect("a source").to_owned())
            .collect()
    }

    /// A GET with a token for every source.
    pub async fn get_authorized(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token(&["*"]))
            .send()
            .await
            .expect("request sent")
    }

    /// A GET without a token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server and waits until it has let go of everything (the store included).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// Claims as the tests write them; fields left `None` are omitted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestClaims {
    /// Sources.
    pub sources: Vec<String>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The admin claim, written only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pinv_admin: bool,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims for `sources`, expiring in an hour.
pub fn claims(sources: &[&str]) -> TestClaims {
    TestClaims {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        exp: Some(now() + 3600),
        nbf: None,
        iss: None,
        aud: None,
        pinv_admin: false,
    }
}

/// An HS256 token with [`SECRET`] and `"pinv_admin": true` (and no source).
pub fn admin_token() -> String {
    hs256(
        &TestClaims {
            pinv_admin: true,
            ..claims(&[])
        },
        SECRET,
    )
}

/// An HS256 token with [`SECRET`].
pub fn token(sources: &[&str]) -> String {
    hs256(&claims(sources), SECRET)
}

/// An HS256 token with any claims and secret.
pub fn hs256(claims: &TestClaims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An RS256 token signed with the test RSA key (`keys/rsa-private.pem`).
pub fn rs256(claims: &TestClaims) -> String {
    let key = EncodingKey::from_rsa_pem(include_bytes!("keys/rsa-private.pem")).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

/// An ES256 token signed with the test EC key (`keys/ec-private.pem`).
pub fn es256(claims: &TestClaims) -> String {
    let key = EncodingKey::from_ec_pem(include_bytes!("keys/ec-private.pem")).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

/// An unsigned token (`"alg": "none"`), crafted by hand since no library will make one.
pub fn alg_none(claims: &TestClaims) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(serde_json::to_string(claims).unwrap().as_bytes());
    format!("{header}.{payload}.")
}

/// Unpadded base64url (RFC 4648 §5).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Checks the error shape (`docs/reference.md` §3.4) and the code; returns the body.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["timestamp"].is_string(), "{body}");
    assert_eq!(body["error"]["@type"], "Error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["reason"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_array(), "{body}");
    body
}

/// The example request of `docs/reference.md` §1 (`docs/examples/seed-adi-request.json`).
pub fn seed_request() -> Value {
    serde_json::from_str(include_str!("../../docs/examples/seed-adi-request.json")).unwrap()
}

/// A small valid single-product event.
pub fn small_event(source: &str, event_id: &str, time: &str, value: Value) -> Value {
    json!({
        "headers": {
            "id": event_id,
            "source": source,
            "type": "com.att.c360dataPrep.tmf637.post.v5",
            "time": time,
            "datacontenttype": "application/json"
        },
        "value": value
    })
}

/// A product with a local id and a CircuitID external reference.
pub fn product_with_circuit(local_id: &str, circuit: &str, status: &str) -> Value {
    json!({
        "@type": "Product",
        "id": local_id,
        "name": "AT&T Dedicated Internet (ADI)",
        "status": status,
        "externalReference": [{
            "@type": "ExternalIdentifier",
            "id": circuit,
            "externalIdentifierType": "CircuitID",
            "owner": "INSTAR"
        }]
    })
}

/// The PINV id of the first part of a `POST /products` answer.
pub fn first_part_id(answer: &Value) -> String {
    answer["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no PINV id in {answer}"))
        .to_owned()
}

/// True when `s` is a hyphenated UUID.
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// A store that holds nothing and always answers.
pub struct EmptyStore;

/// A store that is always unavailable.
pub struct DownStore;

#[async_trait]
impl Store for EmptyStore {
    async fn resolve_keys(&self, _: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        Ok(BTreeMap::new())
    }
    async fn get_products(&self, _: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        Ok(Vec::new())
    }
    async fn get_processed(&self, _: &Source, _: &EventId) -> StoreResult<Option<ProcessedEvent>> {
        Ok(None)
    }
    async fn waiters(&self, _: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        Ok(BTreeMap::new())
    }
    async fn package_members(&self, _: &PinvId) -> StoreResult<Vec<PinvId>> {
        Ok(Vec::new())
    }
    async fn commit(&self, _: WriteSet) -> StoreResult<()> {
        Err(StoreError::other("EmptyStore stores nothing"))
    }
    async fn list(&self, _: &ListQuery) -> StoreResult<ListPage> {
        Ok(ListPage {
            items: Vec::new(),
            total: 0,
        })
    }
    async fn history(&self, _: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        Ok(Vec::new())
    }
    async fn scan(&self, _: Option<PinvId>, _: usize) -> StoreResult<Vec<ProductRecord>> {
        Ok(Vec::new())
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

fn down<T>() -> StoreResult<T> {
    Err(StoreError::unavailable("test store is down"))
}

#[async_trait]
impl Store for DownStore {
    async fn resolve_keys(&self, _: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        down()
    }
    async fn get_products(&self, _: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        down()
    }
    async fn get_processed(&self, _: &Source, _: &EventId) -> StoreResult<Option<ProcessedEvent>> {
        down()
    }
    async fn waiters(&self, _: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        down()
    }
    async fn package_members(&self, _: &PinvId) -> StoreResult<Vec<PinvId>> {
        down()
    }
    async fn commit(&self, _: WriteSet) -> StoreResult<()> {
        down()
    }
    async fn list(&self, _: &ListQuery) -> StoreResult<ListPage> {
        down()
    }
    async fn history(&self, _: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        down()
    }
    async fn scan(&self, _: Option<PinvId>, _: usize) -> StoreResult<Vec<ProductRecord>> {
        down()
    }
    async fn ping(&self) -> StoreResult<()> {
        down()
    }
}

/// A store whose `list` panics (everything else as [`EmptyStore`]), to check that a bug
/// becomes a `500` and not a dropped connection.
pub struct PanickingStore;

#[async_trait]
impl Store for PanickingStore {
    async fn resolve_keys(&self, k: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        EmptyStore.resolve_keys(k).await
    }
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        EmptyStore.get_products(ids).await
    }
    async fn get_processed(&self, s: &Source, e: &EventId) -> StoreResult<Option<ProcessedEvent>> {
        EmptyStore.get_processed(s, e).await
    }
    async fn waiters(&self, k: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        EmptyStore.waiters(k).await
    }
    async fn package_members(&self, r: &PinvId) -> StoreResult<Vec<PinvId>> {
        EmptyStore.package_members(r).await
    }
    async fn commit(&self, w: WriteSet) -> StoreResult<()> {
        EmptyStore.commit(w).await
    }
    async fn list(&self, _: &ListQuery) -> StoreResult<ListPage> {
        panic!("PanickingStore::list")
    }
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        EmptyStore.history(id).await
    }
    async fn scan(&self, a: Option<PinvId>, l: usize) -> StoreResult<Vec<ProductRecord>> {
        EmptyStore.scan(a, l).await
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Checks the TMF `Error` shape and the code; returns the body.
pub async fn assert_tmf_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["@type"], "Error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.to_string(), "{body}");
    assert!(body["reason"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["details"].is_array(), "{body}");
    body
}

/// The `pinv` binary with none of the environment's `PINV_*` settings (a test sets its own).
pub fn pinv_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pinv"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PINV_") {
            c.env_remove(name);
        }
    }
    c
}

/// Asserts that a command failed and returns what it said on stderr.
pub fn refused(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the command succeeded; stderr: {err}"
    );
    err
}
