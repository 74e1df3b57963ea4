//! A MongoDB store started without `one_at_a_time` on a server that does not isolate
//! concurrent transactions (nx-27017, which `scripts/test.sh` starts) finds it out at connect
//! and runs one call at a time, so concurrent POSTs stay correct: every new product answered
//! `201` and stored once, and sources racing on one circuit (their key conflicts abort
//! transactions) ending in one product with both contributions. Without the check, on
//! nx-27017 some of those POSTs failed with `503 COMMIT_OUTCOME_UNKNOWN` in every run: an
//! aborted transaction had undone the savepoints of the others (`docs/mongodb.md`).
//!
//! Runs against `PINV_TEST_MONGODB_URI` whatever `PINV_TEST_API_STORE` says. The server is
//! expected not to isolate transactions when `PINV_TEST_MONGODB_ONE_AT_A_TIME` says it is
//! nx-27017, and to isolate them otherwise (a replica set).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pinv::store::mongo::{MongoOptions, MongoStore};
use serde_json::Value;

use pinv::testing::mongo::{flag, uri, ONE_AT_A_TIME_VAR};

use crate::helpers::{
    first_part_id, product_with_circuit, seed_request, small_event, spawn_app_with, test_settings,
};

/// As many as the load test's connections: fewer, and nx-27017 sometimes got through
/// without mixing two transactions.
const POSTS: usize = 64;
/// Sources racing on one circuit meanwhile: their key conflicts abort transactions, and
/// on a server that nests every transaction in one, an abort undoes the others' writes.
const RACERS: [&str; 2] = ["provisioning", "inventory"];
const RACER_ROUNDS: usize = 16;
const SHARED: &str = "CIRCUIT-ISO-SHARED";

/// The example request as a product of its own: event id, local id and CircuitIDs
/// numbered `n` (as `scripts/load/seed_template.py` makes the load test's requests).
fn seed_number(n: usize) -> Value {
    let seed = seed_request();
    let circuits: Vec<String> = seed["value"]["externalReference"]
        .as_array()
        .expect("the seed has external references")
        .iter()
        .filter(|r| r["externalIdentifierType"] == "CircuitID")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut text = seed.to_string();
    for circuit in &circuits {
        text = text.replace(&format!("\"{circuit}\""), &format!("\"{circuit}-ISO-{n}\""));
    }
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["headers"]["id"] = format!("iso-{n}").into();
    body["value"]["id"] = format!("billing-iso-{n}").into();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn concurrent_posts_stay_correct_without_one_at_a_time() {
    let uri = uri();
    let database = format!("pinv_isolation_{}", uuid::Uuid::new_v4().simple());
    let options = MongoOptions {
        w: "1".to_owned(),
        timeout: Duration::from_secs(10),
        one_at_a_time: false,
        ..MongoOptions::default()
    };
    let store = Arc::new(
        MongoStore::connect(&uri, &database, options)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the MongoDB test server at {uri}: {e}")),
    );
    assert_eq!(
        store.runs_one_call_at_a_time(),
        flag(ONE_AT_A_TIME_VAR),
        "one call at a time exactly when the server does not isolate transactions"
    );
    let app = Arc::new(spawn_app_with(test_settings(), store.clone()).await);

    let racers: Vec<_> = (0..RACER_ROUNDS)
        .flat_map(|round| RACERS.map(|source| (round, source)))
        .map(|(round, source)| {
            let app = app.clone();
            tokio::spawn(async move {
                let value = product_with_circuit(&format!("{source}-shared"), SHARED, "active");
                let time = format!("2024-10-03 12:00:{round:02}Z");
                let body = small_event(source, &format!("{source}-{round}"), &time, value);
                let (status, answer) = app.post_answer(&body, source).await;
                assert!(
                    status == 201 || status == 200,
                    "{source} round {round}: {status} {answer}"
                );
                first_part_id(&answer)
            })
        })
        .collect();
    let tasks: Vec<_> = (0..POSTS)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move {
                let (status, answer) = app.post_answer(&seed_number(n), "billing").await;
                assert_eq!(status, 201, "POST {n}: {answer}");
                first_part_id(&answer)
            })
        })
        .collect();
    let mut shared = BTreeSet::new();
    for racer in racers {
        shared.insert(racer.await.expect("the racing POST task"));
    }
    assert_eq!(
        shared.len(),
        1,
        "one product for the shared circuit: {shared:?}"
    );
    let mut ids = BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.expect("the POST task"));
    }
    assert_eq!(ids.len(), POSTS, "one product per circuit");
    let shared = shared.pop_first().unwrap();
    assert_eq!(
        app.sources_of(&shared).await,
        RACERS.map(str::to_owned).into_iter().collect(),
        "both racers' contributions"
    );

    let list = app.get_authorized("/products?limit=1").await;
    assert_eq!(list.status().as_u16(), 200);
    assert_eq!(
        list.headers()["X-Total-Count"],
        (POSTS + 1).to_string().as_str(),
        "only the acknowledged products are stored"
    );
    for id in &ids {
        let res = app.get_authorized(&format!("/products/{id}")).await;
        assert_eq!(res.status().as_u16(), 200, "{id}");
        let product: Value = res.json().await.unwrap();
        assert_eq!(product["id"], id.as_str());
    }
    store.drop_database().await.expect("drop the test database");
}
