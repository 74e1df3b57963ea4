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
//! Without `PINV_TEST_NX_BIN` the test prints `NOT RUN` and returns; with it set, a server
//! that does not start is a failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinv::store::mongo::{MongoOptions, MongoStore};
use serde_json::{json, Value};

use crate::helpers::{assert_error, not_run, spawn_app_with, test_settings, TestApp};

#[path = "../support/nx.rs"]
mod nx;
use nx::{free_port, Server, NX_VAR};

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
                "externalIdentifierType": "OrderLineID",
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
async fn store_outage_answers_503_and_the_app_recovers_by_itself() {
    let Some(bin) = std::env::var_os(NX_VAR).map(PathBuf::from) else {
        not_run(format!(
            "NOT RUN: store_outage_answers_503_and_the_app_recovers_by_itself needs {NX_VAR} \
             (the nx-27017 executable); run ./scripts/test.sh"
        ));
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_file = dir.path().join("api-outage.db");
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");

    let mut server = Server::start(&bin, &db_file, port, dir.path());
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

    let _server = Server::start(&bin, &db_file, port, dir.path());
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
