//! A MongoDB outage seen through the HTTP API: the test starts its own nx-27017 server
//! (`PINV_TEST_NX_BIN`, exported by `./scripts/test.sh`, as `tests/mongo_outage.rs` does at
//! the store level), serves a PINV app on it, kills the server and restarts it on the same
//! port and database file.
//!
//! Expected: during the outage POSTs answer `503 STORE_UNAVAILABLE` with `Retry-After` and
//! `/health/ready` answers `503`, each within the store timeout; after the restart the same
//! app recovers by itself; the package posted during the outage is all there or all absent,
//! and the one posted before is intact.
//!
//! Plain `cargo test` ignores these tests; `./scripts/test.sh` installs nx-27017, sets
//! `PINV_TEST_NX_BIN` and runs them with `--include-ignored`. Run without the variable, or
//! with a server that does not start, they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinv::store::mongo::{MongoOptions, MongoStore};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app_with, test_settings, TestApp};

use pinv::testing::mongo::{free_port, nx_bin, NxServer};

const TIMEOUT: Duration = Duration::from_secs(1);
/// Slack over the store timeout for a request to come back (scheduling on a busy machine).
const SLACK: Duration = Duration::from_secs(2);
const TYPE: &str = "com.att.c360dataPrep.tmf637.post.v5";
const SOURCE: &str = "provisioning";

/// Connects, retrying while the freshly started server comes up (at most 30 s).
async fn connect_when_up(uri: &str) -> MongoStore {
    let options = MongoOptions {
        w: "1".to_owned(),
        timeout: TIMEOUT,
        // nx-27017: concurrent transactions are not isolated from each other.
        one_at_a_time: true,
        ..MongoOptions::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match MongoStore::connect(uri, "pinv_api_outage", options.clone()).await {
            Ok(store) => return store,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("nx-27017 never answered at {uri}: {e}"),
        }
    }
}

/// The external reference that names one part of package `n` (unique per part).
fn reference(n: u32, part: &str) -> String {
    format!("OUTAGE-PKG-{n}-{part}")
}

/// The ADI + ACCESS + PORT package `n`, one event.
fn package(n: u32) -> Value {
    package_with(n, "OrderLineID", reference)
}

/// The ADI + ACCESS + PORT package `n`, each part named by one external reference of
/// `reference_type` (a `CircuitID` is a match key: the package then claims three keys).
fn package_with(n: u32, reference_type: &str, reference: fn(u32, &str) -> String) -> Value {
    let part = |kind: &str, spec: &str, related: &[&str]| {
        json!({
            "@type": "AttProduct",
            "id": format!("{kind}-{n}"),
            "name": format!("part {kind} of package {n}"),
            "status": "active",
            "productSpecification": {"@type": "ProductSpecificationRef", "id": spec},
            "externalReference": [{
                "@type": "ExternalIdentifier",
                "id": reference(n, kind),
                "externalIdentifierType": reference_type,
                "owner": "TEST"
            }],
            "productRelationship": related.iter()
                .map(|r| json!({"@type": "ProductRelationship", "id": format!("{r}-{n}"),
                                "relationshipType": "bundles"}))
                .collect::<Vec<_>>(),
        })
    };
    json!({
        "headers": {"id": format!("outage-pkg-{n}"), "source": SOURCE, "type": TYPE,
                    "time": "2024-10-03 12:00:00Z", "datacontenttype": "application/json"},
        "value": [
            part("adi", "PR-ADI-EMBEDDED-BASE", &["acc", "port"]),
            part("acc", "PR-ACCESS-FIBER", &["adi"]),
            part("port", "PR-PORT-10G", &["adi", "acc"]),
        ]
    })
}

const PARTS: [&str; 3] = ["adi", "acc", "port"];

/// POSTs package `n`; returns the status, the body and how long it took.
async fn post_package(app: &TestApp, n: u32) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let res = app.post_products(&package(n), &[SOURCE]).await;
    (res, started.elapsed())
}

/// The stored documents of package `n`'s parts, found by their external references:
/// `Some` with all three when the package is whole, `None` when none is stored; panics on
/// anything in between.
async fn stored_package(app: &TestApp, n: u32) -> Option<Vec<Value>> {
    let mut found = Vec::new();
    for part in PARTS {
        let res = app
            .get_authorized(&format!(
                "/products?externalReference.id={}",
                reference(n, part)
            ))
            .await;
        assert_eq!(res.status().as_u16(), 200, "list after recovery");
        let list: Value = res.json().await.unwrap();
        let list = list.as_array().expect("an array").clone();
        assert!(list.len() <= 1, "package {n}, {part}: {list:?}");
        found.extend(list);
    }
    match found.len() {
        3 => Some(found),
        0 => None,
        k => panic!("package {n} is half-written: {k} of 3 parts stored: {found:?}"),
    }
}

async fn ready_status(app: &TestApp) -> (u16, Duration) {
    let started = Instant::now();
    let status = app.get("/health/ready").await.status().as_u16();
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own nx-27017 server (PINV_TEST_NX_BIN): run ./scripts/test.sh"]
async fn store_outage_answers_503_and_the_app_recovers_by_itself() {
    let bin = nx_bin();
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_file = dir.path().join("api-outage.db");
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");

    let mut server = NxServer::start(&bin, &db_file, port, dir.path());
    let store = Arc::new(connect_when_up(&uri).await);
    let app = spawn_app_with(test_settings(), store).await;

    let (res, _) = post_package(&app, 1).await;
    assert_eq!(res.status().as_u16(), 201);
    let before: Value = res.json().await.unwrap();
    let before: Vec<Value> = before["responseData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].clone())
        .collect();
    assert_eq!(before.len(), 3);
    assert_eq!(ready_status(&app).await.0, 200);

    server.kill();

    let killed_at = Instant::now();
    let (res, first_took) = post_package(&app, 2).await;
    assert!(
        first_took < TIMEOUT + SLACK,
        "POST during the outage took {first_took:?}"
    );
    assert!(
        res.headers().contains_key("retry-after"),
        "Retry-After on 503: {:?}",
        res.headers()
    );
    assert_error(res, 503, "STORE_UNAVAILABLE").await;
    let (status, ready_took) = ready_status(&app).await;
    assert_eq!(status, 503, "/health/ready during the outage");
    assert!(
        ready_took < TIMEOUT + SLACK,
        "/health/ready took {ready_took:?}"
    );
    // A second attempt, on a connection pool that has seen the failure, fails the same way.
    let (res, took) = post_package(&app, 2).await;
    assert!(took < TIMEOUT + SLACK, "second POST took {took:?}");
    assert_error(res, 503, "STORE_UNAVAILABLE").await;

    let _server = NxServer::start(&bin, &db_file, port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&app).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/health/ready is not 200 within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_after = killed_at.elapsed();

    // Acknowledged before the outage: intact.
    for doc in &before {
        let id = doc["id"].as_str().unwrap();
        let res = app.get_authorized(&format!("/products/{id}")).await;
        assert_eq!(res.status().as_u16(), 200, "{id}");
        assert_eq!(&res.json::<Value>().await.unwrap(), doc);
    }
    assert_eq!(stored_package(&app, 1).await.as_ref(), Some(&before));

    // Refused during the outage: whole or absent; the client's retry then completes it.
    let landed = stored_package(&app, 2).await.is_some();
    let (res, _) = post_package(&app, 2).await;
    let expected = if landed { 200 } else { 201 };
    assert_eq!(res.status().as_u16(), expected, "retry of package 2");
    assert!(stored_package(&app, 2).await.is_some());

    // And new traffic goes through.
    let (res, _) = post_package(&app, 3).await;
    assert_eq!(res.status().as_u16(), 201, "a new package after recovery");
    assert!(stored_package(&app, 3).await.is_some());
    println!(
        "api outage: first POST 503 in {first_took:?}, ready 503 in {ready_took:?}, ready \
         again {recovered_after:?} after the kill, package 2 {}",
        if landed {
            "had landed whole"
        } else {
            "was absent"
        }
    );
    app.stop().await;
}

/// The CircuitID of one part of package `n` of the freeze test.
fn circuit(n: u32, part: &str) -> String {
    format!("FREEZE-{n}-{part}")
}

/// Every product stored for package `n`'s CircuitIDs: `Some` when the three parts are there,
/// each exactly once (one product per CircuitID) and each with a history; `None` when none
/// is; panics on anything in between.
async fn stored_circuit_package(app: &TestApp, n: u32) -> Option<Vec<Value>> {
    let mut found = Vec::new();
    for part in PARTS {
        let res = app
            .get_authorized(&format!(
                "/products?externalReference.id={}",
                circuit(n, part)
            ))
            .await;
        assert_eq!(res.status().as_u16(), 200, "list after the freezes");
        let list: Value = res.json().await.unwrap();
        let list = list.as_array().expect("an array").clone();
        assert!(
            list.len() <= 1,
            "package {n}, {part}: {} products for one CircuitID: {list:?}",
            list.len()
        );
        for doc in &list {
            let id = doc["id"].as_str().unwrap();
            let res = app.get_authorized(&format!("/products/{id}/history")).await;
            assert_eq!(res.status().as_u16(), 200, "history of {id}");
            let history: Value = res.json().await.unwrap();
            assert!(
                !history.as_array().unwrap().is_empty(),
                "package {n}, {part}: product {id} stored without history"
            );
        }
        found.extend(list);
    }
    match found.len() {
        3 => Some(found),
        0 => None,
        k => panic!("package {n} is half-written: {k} of 3 parts stored: {found:?}"),
    }
}

/// The server freezes (SIGSTOP) for longer than the store timeout, again and again, while
/// eight writers post packages. Whatever the timing, an answer must be true: a `201`/`200`
/// is stored, a `503 STORE_UNAVAILABLE` ("nothing was written") is not, a
/// `503 COMMIT_OUTCOME_UNKNOWN` is whole or absent, no package is ever half-written, and the
/// clients' retries never make a second product for a CircuitID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own nx-27017 server (PINV_TEST_NX_BIN): run ./scripts/test.sh"]
async fn server_freezes_never_make_answers_lie_or_packages_half_written() {
    const WRITERS: u32 = 8;
    const FREEZES: u32 = 6;
    const FROZEN: Duration = Duration::from_millis(1500);
    let bin = nx_bin();
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_file = dir.path().join("api-freeze.db");
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let server = NxServer::start(&bin, &db_file, port, dir.path());
    let store = Arc::new(connect_when_up(&uri).await);
    let app = Arc::new(spawn_app_with(test_settings(), store).await);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (app, stop) = (app.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = w * 10_000 + i;
                i += 1;
                let body = package_with(n, "CircuitID", circuit);
                let res = app.post_products(&body, &[SOURCE]).await;
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
                outcomes.push((n, status, code));
            }
            outcomes
        }));
    }
    for _ in 0..FREEZES {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.signal("STOP");
        tokio::time::sleep(FROZEN).await;
        server.signal("CONT");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.extend(w.await.unwrap());
    }

    let mut tally: std::collections::BTreeMap<String, u32> = Default::default();
    for (n, status, code) in &outcomes {
        *tally.entry(format!("{status} {code}")).or_default() += 1;
        let stored = stored_circuit_package(&app, *n).await;
        match (status, code.as_str()) {
            (200 | 201, _) => assert!(stored.is_some(), "package {n}: {status} but not stored"),
            (503, "STORE_UNAVAILABLE") => assert!(
                stored.is_none(),
                "package {n}: 503 STORE_UNAVAILABLE (nothing was written) but stored"
            ),
            (503, "COMMIT_OUTCOME_UNKNOWN") => {}
            _ => panic!("package {n}: unexpected answer {status} {code}"),
        }
        // The client's retry of the same event completes it, with one product per circuit.
        let res = app
            .post_products(&package_with(*n, "CircuitID", circuit), &[SOURCE])
            .await;
        let retry = res.status().as_u16();
        assert!(
            retry == 200 || retry == 201,
            "retry of package {n}: {retry}"
        );
        assert!(stored_circuit_package(&app, *n).await.is_some());
    }
    println!(
        "freeze: {} POSTs during {FREEZES} freezes: {tally:?}",
        outcomes.len()
    );
    assert!(
        tally.keys().any(|k| k.starts_with("503")),
        "no POST met a freeze: the test did not test anything ({tally:?})"
    );
    drop(server);
}
