//! Sequential single-product write sets through [`MongoStore`], as the service writes them:
//! compare-and-set updates, then transactional creates (two keys, a history entry, a
//! processed event: the shape of a POST). Prints commits per second of each.
//!
//! Needs a server: `PINV_TEST_MONGODB_URI=mongodb://HOST:PORT/?directConnection=true cargo
//! bench --bench mongo_writes` (`PINV_TEST_MONGODB_ONE_AT_A_TIME=1` for nx-27017). Without
//! the variable it says so and measures nothing. It writes to a new database
//! `pinv_bench_<uuid>` and drops it at the end.

use std::time::{Duration, Instant};

use serde_json::json;

use pinv::core::{MatchKey, PinvId};
use pinv::store::conformance::{create, history_entry, id, key, processed, record, update};
use pinv::store::mongo::MongoStore;
use pinv::store::Store;
use pinv::testing::mongo::{options, URI_VAR};

/// Write sets of each kind.
const N: u64 = 200;

fn main() {
    let Some(uri) = std::env::var(URI_VAR).ok().filter(|u| !u.trim().is_empty()) else {
        eprintln!(
            "mongo_writes: nothing measured: {URI_VAR} is not set. This bench needs a MongoDB \
             wire-protocol server: {URI_VAR}=mongodb://HOST:PORT/?directConnection=true cargo \
             bench --bench mongo_writes"
        );
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(&uri));
}

async fn run(uri: &str) {
    let database = format!("pinv_bench_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(uri, &database, options())
        .await
        .unwrap_or_else(|e| panic!("{URI_VAR} is set but MongoStore::connect({uri}) failed: {e}"));
    let (cas, txn) = measure(&store).await;
    store
        .drop_database()
        .await
        .expect("drop the bench database");
    println!(
        "MongoStore: {N} CAS updates in {cas:?} ({:.0}/s); {N} transactional creates \
         (2 keys + history + event) in {txn:?} ({:.0}/s)",
        N as f64 / cas.as_secs_f64(),
        N as f64 / txn.as_secs_f64()
    );
}

async fn measure(store: &MongoStore) -> (Duration, Duration) {
    store
        .commit(create(record(id(1), 1, json!({"n": 0}))))
        .await
        .expect("seed");

    let started = Instant::now();
    for n in 1..=N {
        store
            .commit(update(record(id(1), n + 1, json!({"n": n})), n))
            .await
            .expect("cas update");
    }
    let cas = started.elapsed();

    let started = Instant::now();
    for n in 1..=N {
        let pid = PinvId::from_uuid(uuid::Uuid::from_u128(1000 + u128::from(n)));
        let mut set = create(record(pid, 1, json!({"n": n, "status": "active"})));
        set.claim_keys = vec![(key(&format!("k{n}")), pid), (MatchKey::pinv(&pid), pid)];
        set.history = vec![history_entry(pid, 1)];
        set.processed = Some(processed(&format!("ev-{n}"), vec![pid]));
        store.commit(set).await.expect("transaction");
    }
    (cas, started.elapsed())
}
