//! Two PINV instances (two `Application`s, each with its own `MongoStore`) sharing ONE
//! MongoDB database: simultaneous first POSTs of one circuit, one through each instance,
//! create exactly one product, and both instances see it with both contributions.
//!
//! Only meaningful on MongoDB, so it runs against `PINV_TEST_MONGODB_URI` whatever
//! `PINV_TEST_API_STORE` says, and only when `PINV_TEST_MONGODB_ISOLATED=1` declares that the
//! server isolates concurrent transactions (MongoDB does). nx-27017, the server
//! `scripts/test.sh` starts, does not: all its sessions share one SQLite transaction, and
//! `one_at_a_time` serialises calls within one process only, so two instances interleave
//! their transactions and the server itself loses or mixes writes (docs/mongodb.md, "What
//! nx-27017 cannot do"). So the test is ignored, also by `./scripts/test.sh`; run it against
//! a replica set (README, "Tests"). Run without the URI or the declaration, or with an
//! unreachable server, it fails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pinv::store::mongo::{MongoOptions, MongoStore};
use serde_json::Value;
use tokio::sync::Barrier;

use pinv::testing::mongo::{flag, uri, ONE_AT_A_TIME_VAR, URI_VAR};

use crate::helpers::{
    first_part_id, product_with_circuit, small_event, spawn_app_with, test_settings, TestApp,
};

const ISOLATED_VAR: &str = "PINV_TEST_MONGODB_ISOLATED";
const ROUNDS: usize = 8;

/// The URI to run against; panics when the server is not declared to isolate concurrent
/// transactions, as the test cannot tell a lost race from a server that mixes transactions.
fn server_under_test() -> String {
    let uri = uri();
    assert!(
        flag(ISOLATED_VAR),
        "the server at {URI_VAR} is not declared to isolate concurrent transactions \
         ({ISOLATED_VAR}=1); nx-27017 does not, and two PINV instances on it interleave their \
         transactions (docs/mongodb.md). Run this test against a MongoDB replica set: \
         {URI_VAR}='mongodb://host:27017/?replicaSet=rs0' {ISOLATED_VAR}=1 \
         cargo test --test api mongo_instances -- --include-ignored"
    );
    uri
}

/// One PINV instance: its own client, connection pool and (if asked) gate.
async fn instance(uri: &str, database: &str) -> (TestApp, Arc<MongoStore>) {
    let options = MongoOptions {
        timeout: Duration::from_secs(10),
        // Per instance, as in production: it cannot serialise two instances.
        one_at_a_time: flag(ONE_AT_A_TIME_VAR),
        ..MongoOptions::default()
    };
    let store = Arc::new(
        MongoStore::connect(uri, database, options)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the MongoDB test server at {uri}: {e}")),
    );
    let app = spawn_app_with(test_settings(), store.clone()).await;
    (app, store)
}

async fn first_post(app: &TestApp, source: &str, circuit: &str, barrier: &Barrier) -> String {
    let body = small_event(
        source,
        &format!("{source}-{circuit}"),
        "2024-10-03 12:00:00Z",
        product_with_circuit(&format!("{source}-{circuit}"), circuit, "active"),
    );
    barrier.wait().await;
    let (status, answer) = app.post_answer(&body, source).await;
    assert_eq!(status, 201, "{source} on {circuit}: {answer}");
    first_part_id(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a MongoDB replica set (PINV_TEST_MONGODB_URI, PINV_TEST_MONGODB_ISOLATED=1): \
            nx-27017 does not isolate concurrent transactions; see README, Tests"]
async fn two_instances_racing_on_one_circuit_create_one_product() {
    let uri = server_under_test();
    let database = format!("pinv_instances_{}", uuid::Uuid::new_v4().simple());
    let (a, store_a) = instance(&uri, &database).await;
    let (b, _store_b) = instance(&uri, &database).await;
    let (a, b) = (Arc::new(a), Arc::new(b));

    for round in 0..ROUNDS {
        let circuit = format!("CIRCUIT-2INST-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racer = |app: Arc<TestApp>, source: &'static str| {
            let (circuit, barrier) = (circuit.clone(), barrier.clone());
            tokio::spawn(async move { first_post(&app, source, &circuit, &barrier).await })
        };
        let from_a = racer(a.clone(), "billing");
        let from_b = racer(b.clone(), "provisioning");
        let (id_a, id_b) = (from_a.await.unwrap(), from_b.await.unwrap());
        assert_eq!(id_a, id_b, "round {round}: two products for {circuit}");

        for (name, app) in [("A", &a), ("B", &b)] {
            let list = app
                .get_authorized(&format!("/products?externalReference.id={circuit}"))
                .await;
            assert_eq!(list.status().as_u16(), 200);
            assert_eq!(
                list.headers()["X-Total-Count"],
                "1",
                "instance {name}, {circuit}"
            );
            let items: Value = list.json().await.unwrap();
            assert_eq!(items[0]["id"], id_a, "instance {name}, {circuit}");
            assert_eq!(
                app.sources_of(&id_a).await,
                BTreeSet::from(["billing".to_owned(), "provisioning".to_owned()]),
                "instance {name}: both contributions of {circuit}"
            );
        }
    }
    store_a
        .drop_database()
        .await
        .expect("drop the test database");
}
