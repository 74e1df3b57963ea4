//! The TMF637 hub: subscriptions, product events, delivery to a real listener the test
//! starts on a random port.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use pinv::config::Settings;
use serde_json::{json, Value};

use crate::helpers::{
    assert_tmf_error, product_with_circuit, small_event, spawn_app_with, store_under_test,
    test_settings, token, TestApp,
};

const HUB: &str = "/tmf-api/productInventory/v5/hub";

/// One request the listener received.
#[derive(Debug, Clone)]
struct Delivery {
    /// The request path.
    path: String,
    event_id: String,
    content_type: String,
    signature: Option<String>,
    raw: Vec<u8>,
    body: Value,
}

impl Delivery {
    /// The id of the product the event carries.
    fn product_id(&self) -> &str {
        self.body["event"]["product"]["id"]
            .as_str()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct ListenerState {
    /// Answered 2xx, in arrival order.
    delivered: Mutex<Vec<Delivery>>,
    /// Every attempt, answered or not.
    attempts: Mutex<Vec<Delivery>>,
    /// Answer `500` to this many attempts first.
    fail_first: AtomicUsize,
    /// Answer `500` to every event whose body contains this text.
    fail_containing: Mutex<Option<String>>,
    /// Never answer.
    hang: AtomicBool,
    /// Requests being held (hang mode).
    held: AtomicUsize,
    /// Answer only after this many milliseconds.
    answer_after_ms: AtomicUsize,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A tiny HTTP server standing in for a subscriber.
struct Listener {
    url: String,
    state: Arc<ListenerState>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ListenerState>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delivery = Delivery {
        path: req.path().to_owned(),
        event_id: header("x-pinv-event-id").unwrap_or_default(),
        content_type: header("content-type").unwrap_or_default(),
        signature: header("x-pinv-signature"),
        raw: body.to_vec(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    state.attempts.lock().unwrap().push(delivery.clone());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let wait = state.answer_after_ms.load(Ordering::SeqCst) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    if state.hang.load(Ordering::SeqCst) {
        state.held.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let failing = state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let refused = state
        .fail_containing
        .lock()
        .unwrap()
        .as_deref()
        .is_some_and(|text| String::from_utf8_lossy(&body).contains(text));
    if failing || refused {
        return HttpResponse::InternalServerError().finish();
    }
    state.delivered.lock().unwrap().push(delivery);
    HttpResponse::NoContent().finish()
}

impl Listener {
    fn start() -> Self {
        let state = Arc::new(ListenerState::default());
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/pinv"),
            state,
            handle,
        }
    }

    fn delivered(&self) -> Vec<Delivery> {
        self.state.delivered.lock().unwrap().clone()
    }

    fn types(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .map(|d| d.body["eventType"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until at least `n` events were delivered (failing after a generous bound).
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        for _ in 0..1500 {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {n} deliveries, got {:?}", self.types());
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Test settings with a dispatcher that polls every 20 ms and retries within 50-100 ms.
fn quick_hub_settings() -> Settings {
    let mut settings = test_settings();
    settings.hub.hub_poll = Duration::from_millis(20);
    settings.hub.hub_retry_base = Duration::from_millis(50);
    settings.hub.hub_retry_max = Duration::from_millis(100);
    settings
}

async fn hub_app() -> TestApp {
    let mut settings = quick_hub_settings();
    settings.hub.hub_retry_max = Duration::from_millis(200);
    spawn_app_with(settings, store_under_test().await).await
}

/// A PINV server the test talks to: in-process ([`TestApp`]) or a separate process.
trait Server {
    fn client(&self) -> &reqwest::Client;
    fn url(&self, path: &str) -> String;
}

impl Server for TestApp {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    fn url(&self, path: &str) -> String {
        TestApp::url(self, path)
    }
}

/// A `pinv serve` process.
struct Process {
    address: String,
    client: reqwest::Client,
}

impl Server for Process {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

async fn subscribe(app: &impl Server, body: Value) -> reqwest::Response {
    app.client()
        .post(app.url(HUB))
        .bearer_auth(token(&["*"]))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn subscribed(app: &impl Server, body: Value) -> String {
    let res = subscribe(app, body).await;
    assert_eq!(res.status().as_u16(), 201);
    let hub: Value = res.json().await.unwrap();
    hub["id"].as_str().unwrap().to_owned()
}

async fn hub_status(app: &TestApp, id: &str) -> Value {
    let res = app.get_authorized(&format!("{HUB}/{id}")).await;
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

/// The hub's status once its delivery-status `count` reaches `want` (or after about 10 s,
/// for the caller's assertions to report).
async fn hub_status_once(app: &TestApp, id: &str, count: &str, want: u64) -> Value {
    let mut status = hub_status(app, id).await;
    for _ in 0..500 {
        if status["deliveryStatus"][count] == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = hub_status(app, id).await;
    }
    status
}

/// POSTs one product version; returns its PINV id.
async fn post(app: &impl Server, circuit: &str, event: &str, second: u32, status: &str) -> String {
    let value = product_with_circuit(&format!("{circuit}-local"), circuit, status);
    let time = format!("2024-10-03T12:00:{second:02}Z");
    let res = app
        .client()
        .post(app.url("/products"))
        .bearer_auth(token(&["billing"]))
        .json(&small_event("billing", event, &time, value))
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert!(code == 201 || code == 200, "{code} {body}");
    body["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn create_change_and_state_change_arrive_with_their_payloads_and_signature() {
    let app = hub_app().await;
    let listener = Listener::start();
    subscribed(&app, json!({"callback": listener.url, "secret": "s3cret"})).await;

    let id = post(&app, "HUB-C1", "e1", 1, "active").await;
    post(&app, "HUB-C1", "e2", 2, "suspended").await;
    let got = listener.wait_for(3).await;
    assert_eq!(
        listener.types(),
        [
            "ProductCreateEvent",
            "ProductStateChangeEvent",
            "ProductAttributeValueChangeEvent"
        ]
    );
    let create = &got[0];
    assert_eq!(create.body["event"]["product"]["id"], id.as_str());
    assert_eq!(create.body["event"]["product"]["status"], "active");
    assert_eq!(create.body["correlationId"], "e1");
    assert_eq!(create.event_id, create.body["eventId"].as_str().unwrap());
    assert!(create.content_type.starts_with("application/json"));
    let expected = pinv::app::dispatch::signature("s3cret", &create.raw);
    assert_eq!(
        create.signature.as_deref(),
        Some(&*format!("sha256={expected}"))
    );

    let state = &got[1];
    assert_eq!(state.body["event"]["product"]["status"], "suspended");
    assert_eq!(state.body["fieldPath"], "status");
    assert_eq!(state.body["correlationId"], "e2");
    assert!(got[2].body["fieldPath"]
        .as_str()
        .unwrap()
        .contains("status"));
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "event ids are unique");
    let paths: Vec<&str> = got.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/pinv/listener/productCreateEvent",
            "/pinv/listener/productStateChangeEvent",
            "/pinv/listener/productAttributeValueChangeEvent"
        ],
        "the TMF637 listener resources under the callback"
    );

    listener.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_query_chooses_the_events() {
    let app = hub_app().await;
    let suspended = Listener::start();
    let everything = Listener::start();
    let q = "eventType=ProductStateChangeEvent&event.product.status=suspended";
    subscribed(&app, json!({"callback": suspended.url, "query": q})).await;
    subscribed(&app, json!({"callback": everything.url})).await;

    post(&app, "HUB-Q1", "q1", 1, "active").await;
    post(&app, "HUB-Q1", "q2", 2, "suspended").await;
    post(&app, "HUB-Q1", "q3", 3, "active").await;
    // create, state+attr, state+attr
    everything.wait_for(5).await;
    let got = suspended.wait_for(1).await;
    assert_eq!(got.len(), 1, "{:?}", suspended.types());
    assert_eq!(got[0].body["eventType"], "ProductStateChangeEvent");
    assert_eq!(got[0].body["event"]["product"]["status"], "suspended");
    app.stop().await;
}

#[tokio::test]
async fn unsubscribing_stops_delivery() {
    let app = hub_app().await;
    let gone = Listener::start();
    let kept = Listener::start();
    let id = subscribed(&app, json!({"callback": gone.url})).await;
    subscribed(&app, json!({"callback": kept.url})).await;
    let res = app
        .client
        .delete(app.url(&format!("{HUB}/{id}")))
        .bearer_auth(token(&["*"]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_tmf_error(
        app.get_authorized(&format!("{HUB}/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;

    post(&app, "HUB-U1", "u1", 1, "active").await;
    kept.wait_for(1).await;
    // The kept subscriber has its event; give the dispatcher more polls for the other.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gone.state.attempts.lock().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_failing_listener_gets_the_event_later_with_the_same_id() {
    let app = hub_app().await;
    let listener = Listener::start();
    listener.state.fail_first.store(3, Ordering::SeqCst);
    let hub = subscribed(&app, json!({"callback": listener.url})).await;
    post(&app, "HUB-F1", "f1", 1, "active").await;
    post(&app, "HUB-F1", "f2", 2, "suspended").await;
    let got = listener.wait_for(3).await;
    let attempts = listener.state.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 6, "3 failures then 3 deliveries");
    assert!(attempts[..3].iter().all(|a| a.event_id == got[0].event_id));
    // Order per product holds through the retries.
    assert_eq!(
        listener.types(),
        [
            "ProductCreateEvent",
            "ProductStateChangeEvent",
            "ProductAttributeValueChangeEvent"
        ]
    );
    let status = hub_status_once(&app, &hub, "deliveredCount", 3).await;
    let ds = &status["deliveryStatus"];
    assert_eq!(ds["pendingCount"], 0, "{status}");
    assert_eq!(ds["deliveredCount"], 3, "{status}");
    assert!(
        ds["lastError"].as_str().unwrap().contains("500"),
        "{status}"
    );
    assert!(ds["lastSuccess"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_kept_as_dead() {
    let mut settings = quick_hub_settings();
    settings.hub.hub_retry_window = Duration::from_secs(1);
    let app = spawn_app_with(settings, store_under_test().await).await;
    let listener = Listener::start();
    listener
        .state
        .fail_first
        .store(usize::MAX, Ordering::SeqCst);
    let hub = subscribed(&app, json!({"callback": listener.url})).await;
    post(&app, "HUB-D1", "d1", 1, "active").await;
    let status = hub_status_once(&app, &hub, "deadCount", 1).await;
    assert_eq!(status["deliveryStatus"]["deadCount"], 1, "{status}");
    assert_eq!(status["deliveryStatus"]["pendingCount"], 0, "{status}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("pinv_hub_deliveries_total{outcome=\"dead\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_yield_one_event_per_change_in_order_per_product() {
    let app = Arc::new(hub_app().await);
    let listener = Listener::start();
    subscribed(&*app, json!({"callback": listener.url})).await;
    let mut tasks = Vec::new();
    for n in 0..20u32 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let circuit = format!("HUB-CC{}", n % 4);
            let status = if n % 3 == 0 { "suspended" } else { "active" };
            post(&*app, &circuit, &format!("cc{n}"), n + 1, status).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 4);
    // The events each product's history says are owed, in order.
    let mut owed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in &ids {
        let history: Value = app
            .get_authorized(&format!("/products/{id}/history"))
            .await
            .json()
            .await
            .unwrap();
        for entry in history.as_array().unwrap() {
            let rev = entry["revision"].as_u64().unwrap();
            let ids = owed.entry(id.clone()).or_default();
            if rev == 1 {
                ids.push(format!("{id}/1/create"));
                continue;
            }
            let touches_status = entry["patch"]
                .as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/status");
            if touches_status {
                ids.push(format!("{id}/{rev}/state"));
            }
            ids.push(format!("{id}/{rev}/attr"));
        }
    }
    let total: usize = owed.values().map(Vec::len).sum();
    let got = listener.wait_for(total).await;
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(listener.delivered().len(), total);
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in got {
        let product = d.product_id().to_owned();
        received.entry(product).or_default().push(d.event_id);
    }
    assert_eq!(received, owed);
}

#[tokio::test]
async fn a_slow_listener_gets_several_products_events_at_once() {
    let app = hub_app().await;
    let listener = Listener::start();
    // Slower than the POSTs below: while the first delivery waits, the others queue up and
    // the next round has several products to deliver. (Each product's order is checked by
    // concurrent_posts_yield_one_event_per_change_in_order_per_product.)
    listener.state.answer_after_ms.store(300, Ordering::SeqCst);
    subscribed(&app, json!({"callback": listener.url})).await;
    for n in 0..6u32 {
        post(
            &app,
            &format!("HUB-AT-ONCE{n}"),
            &format!("ao{n}"),
            n + 1,
            "active",
        )
        .await;
    }
    listener.wait_for(6).await;
    let most = listener.state.most_in_flight.load(Ordering::SeqCst);
    assert!(
        most > 1,
        "one subscriber's deliveries went out one at a time"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_product_whose_events_keep_failing_does_not_hold_back_the_others() {
    let app = hub_app().await;
    let listener = Listener::start();
    *listener.state.fail_containing.lock().unwrap() = Some("HUB-STUCK".to_owned());
    subscribed(&app, json!({"callback": listener.url})).await;
    let stuck = post(&app, "HUB-STUCK", "stuck", 1, "active").await;
    let mut others = std::collections::BTreeSet::new();
    for n in 0..5u32 {
        let id = post(
            &app,
            &format!("HUB-FREE{n}"),
            &format!("free{n}"),
            n + 2,
            "active",
        )
        .await;
        others.insert(id);
    }
    let delivered: std::collections::BTreeSet<String> = listener
        .wait_for(5)
        .await
        .iter()
        .map(|d| d.product_id().to_owned())
        .collect();
    assert_eq!(delivered, others);
    // The stuck product's event was tried more than once, and never delivered (above).
    let tried = |attempts: &[Delivery]| attempts.iter().filter(|d| d.product_id() == stuck).count();
    for _ in 0..500 {
        if tried(&listener.state.attempts.lock().unwrap()) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tried(&listener.state.attempts.lock().unwrap()) >= 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_does_not_hold_up_posts_or_other_listeners() {
    let mut settings = test_settings();
    settings.hub.hub_poll = Duration::from_millis(20);
    settings.hub.hub_timeout = Duration::from_secs(3600);
    let app = spawn_app_with(settings, store_under_test().await).await;
    let silent = Listener::start();
    silent.state.hang.store(true, Ordering::SeqCst);
    let fine = Listener::start();
    subscribed(&app, json!({"callback": silent.url})).await;
    subscribed(&app, json!({"callback": fine.url})).await;

    post(&app, "HUB-H0", "h0", 1, "active").await;
    for _ in 0..1500 {
        if silent.state.held.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(silent.state.held.load(Ordering::SeqCst), 1);
    // While that delivery hangs, POSTs are answered and the other listener gets each one.
    for n in 1..=10u32 {
        post(
            &app,
            &format!("HUB-H{n}"),
            &format!("h{n}"),
            n + 1,
            "active",
        )
        .await;
    }
    fine.wait_for(11).await;
    assert_eq!(silent.state.held.load(Ordering::SeqCst), 1);
    assert!(silent.delivered().is_empty());
}

#[tokio::test]
async fn bad_subscriptions_are_refused() {
    let mut settings = test_settings();
    settings.hub.hub_callback_allow = vec!["http://127.0.0.1:".to_owned()];
    let app = spawn_app_with(settings, store_under_test().await).await;
    for (body, code) in [
        (json!({"callback": "ftp://127.0.0.1/x"}), "BAD_CALLBACK"),
        (json!({"callback": "http://example.com/x"}), "BAD_CALLBACK"),
        (
            json!({"callback": "http://127.0.0.1:9/x", "query": "eventType=Nope"}),
            "BAD_HUB_QUERY",
        ),
        (
            json!({"callback": "http://127.0.0.1:9/x", "query": "status=active"}),
            "BAD_HUB_QUERY",
        ),
    ] {
        assert_tmf_error(subscribe(&app, body).await, 400, code).await;
    }
    let res = app
        .client
        .post(app.url(HUB))
        .json(&json!({"callback": "http://127.0.0.1:9/x"}))
        .send()
        .await
        .unwrap();
    assert_tmf_error(res, 401, "UNAUTHORIZED").await;
    let ok = subscribe(&app, json!({"callback": "http://127.0.0.1:9/x"})).await;
    assert_eq!(ok.status().as_u16(), 201);
    let location = ok.headers()["location"].to_str().unwrap().to_owned();
    let hub: Value = ok.json().await.unwrap();
    assert_eq!(location, format!("{HUB}/{}", hub["id"].as_str().unwrap()));
    app.stop().await;
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pinv serve` on the embedded store in `dir`, as a separate process that can be SIGKILLed.
async fn serve_process(dir: &std::path::Path) -> (std::process::Child, Process) {
    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinv"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PINV_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .arg("serve")
        .env("PINV_STORE", dir)
        .env("PINV_BIND", format!("127.0.0.1:{port}"))
        .env("PINV_JWT_SECRET", crate::helpers::SECRET)
        .env("PINV_RULES_DIR", crate::helpers::rules_dir())
        .env("PINV_HUB_POLL_MS", "20")
        .env("PINV_HUB_RETRY_BASE_MS", "20")
        .env("PINV_HUB_RETRY_MAX_MS", "50")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("pinv serve starts");
    let app = Process {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    for _ in 0..500 {
        if let Ok(res) = app.client.get(app.url("/health/ready")).send().await {
            if res.status().is_success() {
                return (child, app);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("pinv serve did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pending_at_a_sigkill_are_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start();
    listener
        .state
        .fail_first
        .store(usize::MAX, Ordering::SeqCst);
    let (mut server, app) = serve_process(dir.path()).await;
    subscribed(&app, json!({"callback": listener.url})).await;
    let first = post(&app, "HUB-K1", "k1", 1, "active").await;
    let second = post(&app, "HUB-K2", "k2", 2, "active").await;
    for _ in 0..1500 {
        if listener.state.attempts.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    assert!(listener.delivered().is_empty());

    listener.state.fail_first.store(0, Ordering::SeqCst);
    let (mut server, _app) = serve_process(dir.path()).await;
    let got = listener.wait_for(2).await;
    let mut ids: Vec<&str> = got.iter().map(|d| d.event_id.as_str()).collect();
    ids.sort_unstable();
    let mut owed = vec![format!("{first}/1/create"), format!("{second}/1/create")];
    owed.sort();
    assert_eq!(ids, owed);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the nx-27017 server of ./scripts/test.sh (PINV_TEST_MONGODB_URI)"]
async fn two_instances_on_one_mongodb_deliver_each_event_once() {
    let uri = pinv::testing::mongo::uri();
    let database = format!("pinv_hub_{}", uuid::Uuid::new_v4().simple());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let store = pinv::store::mongo::MongoStore::connect(
            &uri,
            &database,
            pinv::testing::mongo::options(),
        )
        .await
        .expect("MongoDB answers");
        let mut settings = test_settings();
        settings.hub.hub_poll = Duration::from_millis(10);
        apps.push(spawn_app_with(settings, Arc::new(store)).await);
    }
    let listener = Listener::start();
    subscribed(&apps[0], json!({"callback": listener.url})).await;
    for n in 0..12u32 {
        post(
            &apps[0],
            &format!("HUB-M{n}"),
            &format!("m{n}"),
            n + 1,
            "active",
        )
        .await;
    }
    let got = listener.wait_for(12).await;
    // Both dispatchers polled all along; any duplicate would have arrived by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = listener.state.attempts.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<&str> =
        all.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(distinct.len(), 12, "{got:?}");
    assert_eq!(all.len(), 12, "each event once, not once per instance");
}

#[tokio::test]
async fn a_post_publishes_a_create_for_every_product_it_stores() {
    let app = hub_app().await;
    let listener = Listener::start();
    subscribed(&app, json!({"callback": listener.url})).await;
    let res = app
        .post_products(&crate::helpers::seed_request(), &["billing"])
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let all: Value = app
        .get_authorized("/products?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let mut stored: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!stored.is_empty());
    let got = listener.wait_for(stored.len()).await;
    assert!(got
        .iter()
        .all(|d| d.body["eventType"] == "ProductCreateEvent"));
    let mut products: Vec<String> = got.iter().map(|d| d.product_id().to_owned()).collect();
    products.sort();
    stored.sort();
    assert_eq!(products, stored);
    app.stop().await;
}

#[tokio::test]
async fn a_delete_event_carries_the_product_as_it_was_last() {
    let app = hub_app().await;
    let listener = Listener::start();
    subscribed(&app, json!({"callback": listener.url})).await;
    let id = post(&app, "HUB-X1", "x1", 1, "suspended").await;
    let before: Value = app
        .get_authorized(&format!("/products/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let res = app
        .client
        .delete(app.url(&format!("/products/{id}/sources/billing")))
        .bearer_auth(token(&["billing"]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let got = listener.wait_for(2).await;
    assert_eq!(
        listener.types(),
        ["ProductCreateEvent", "ProductDeleteEvent"]
    );
    assert_eq!(got[1].path, "/pinv/listener/productDeleteEvent");
    let deleted = &got[1].body;
    assert_eq!(deleted["event"]["product"], before, "{deleted}");
    assert_eq!(deleted["event"]["product"]["status"], "suspended");
    listener.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_full_outbox_keeps_the_oldest_events_as_dead_and_delivers_the_newest() {
    let mut settings = quick_hub_settings();
    settings.hub.hub_outbox_max = 2;
    let app = spawn_app_with(settings, store_under_test().await).await;
    let listener = Listener::start();
    listener
        .state
        .fail_first
        .store(usize::MAX, Ordering::SeqCst);
    let hub = subscribed(&app, json!({"callback": listener.url})).await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(post(&app, &format!("HUB-O{n}"), &format!("o{n}"), n, "active").await);
    }
    // The overflow count is recorded right after the dead entries are settled: waiting for
    // it (not for `deadCount`, which a poll may see between the two) sees both.
    let status = hub_status_once(&app, &hub, "overflowCount", 3).await;
    let ds = &status["deliveryStatus"];
    assert_eq!(ds["deadCount"], 3, "{status}");
    assert_eq!(ds["pendingCount"], 2, "{status}");
    assert_eq!(ds["overflowCount"], 3, "{status}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("pinv_hub_deliveries_total{outcome=\"overflow\"} 3"),
        "{metrics}"
    );

    listener.state.fail_first.store(0, Ordering::SeqCst);
    let got = listener.wait_for(2).await;
    // Delivered in key order (by product), not commit order.
    let products: std::collections::BTreeSet<&str> = got.iter().map(Delivery::product_id).collect();
    let newest = std::collections::BTreeSet::from([ids[3].as_str(), ids[4].as_str()]);
    assert_eq!(products, newest, "the newest two");
    listener.stop().await;
    app.stop().await;
}
