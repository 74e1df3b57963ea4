//! A MongoDB outage seen through [`MongoStore`]: the test starts its own nx-27017 server
//! (`PINV_TEST_NX_BIN`, exported by `./scripts/test.sh`), kills it in the middle of a stream
//! of multi-product write sets, and restarts it on the same port and database file.
//!
//! Expected: calls during the outage fail with `StoreError::Unavailable` within the timeout
//! (no hang, no panic); every write set is all there or all absent afterwards; the same
//! store works again once the server is back, without reconnecting by hand.
//!
//! Plain `cargo test` ignores it; `./scripts/test.sh` installs nx-27017, sets
//! `PINV_TEST_NX_BIN` and runs it with `--include-ignored`. Run without the variable, or with
//! a server that does not start, it fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;

use pinv::core::record::ProductWrite;
use pinv::core::PinvId;
use pinv::store::conformance::{create, id, key, processed, record};
use pinv::store::mongo::{MongoOptions, MongoStore};
use pinv::store::{Store, StoreError};

use pinv::testing::mongo::{free_port, nx_bin, NxServer};

const TIMEOUT: Duration = Duration::from_secs(1);
/// Slack over the store timeout for a call to come back (scheduling on a busy machine).
const SLACK: Duration = Duration::from_secs(2);

fn options() -> MongoOptions {
    MongoOptions {
        w: "1".to_owned(),
        timeout: TIMEOUT,
        // nx-27017: concurrent transactions are not isolated from each other.
        one_at_a_time: true,
        ..MongoOptions::default()
    }
}

/// Connects, retrying while the freshly started server comes up (at most 30 s).
async fn connect_when_up(uri: &str) -> MongoStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match MongoStore::connect(uri, "pinv_outage", options()).await {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("nx-27017 never answered at {uri}: {e}"),
        }
    }
}

/// A write set creating products `2n` and `2n+1` of one package, with keys and an event.
fn package_set(n: u128) -> (pinv::core::record::WriteSet, [PinvId; 2]) {
    let (a, b) = (id(2 * n), id(2 * n + 1));
    let mut set = create(record(a, 1, json!({"n": n as u64, "part": "ADI"})));
    let mut second = record(b, 1, json!({"n": n as u64, "part": "PORT"}));
    second.package_root = Some(a);
    set.products.push(ProductWrite {
        record: second,
        expected_revision: None,
        contributions_unchanged: false,
        changed_attributes: None,
        merged_json: None,
    });
    set.products[0].record.package_root = Some(a);
    set.claim_keys = vec![(key(&format!("a{n}")), a), (key(&format!("b{n}")), b)];
    set.processed = Some(processed(&format!("ev-{n}"), vec![a, b]));
    (set, [a, b])
}

#[derive(Debug, Default)]
struct Tally {
    ok: Vec<u128>,
    unavailable: Vec<u128>,
    /// Sent as the server died: the commit may have landed (whole) or not.
    unknown: Vec<u128>,
    slowest: Duration,
}

/// Commits package sets 1, 2, ... until `stop`, recording each outcome.
async fn traffic(store: Arc<MongoStore>, first: u128, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        let (set, _) = package_set(n);
        let started = Instant::now();
        let outcome = store.commit(set).await;
        tally.slowest = tally.slowest.max(started.elapsed());
        match outcome {
            Ok(()) => tally.ok.push(n),
            Err(StoreError::Unavailable(_)) => tally.unavailable.push(n),
            Err(StoreError::OutcomeUnknown(_)) => tally.unknown.push(n),
            Err(e) => panic!(
                "write set {n} during the outage: expected Unavailable or OutcomeUnknown, got {e}"
            ),
        }
        n += 1;
    }
    tally
}

/// `true` when both products, both keys and the event of set `n` are stored; `false` when
/// none is; panics on anything in between.
async fn all_or_nothing(store: &MongoStore, n: u128) -> bool {
    let (_, ids) = package_set(n);
    let products = store.get_products(&ids).await.expect("get_products");
    let keys = store
        .resolve_keys(&[key(&format!("a{n}")), key(&format!("b{n}"))])
        .await
        .expect("resolve_keys");
    let event = store
        .get_processed(
            &pinv::store::conformance::source("billing"),
            &pinv::store::conformance::event_id(&format!("ev-{n}")),
        )
        .await
        .expect("get_processed");
    let parts = (products.len(), keys.len(), usize::from(event.is_some()));
    match parts {
        (2, 2, 1) => true,
        (0, 0, 0) => false,
        other => panic!("write set {n} is half-written: (products, keys, event) = {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own nx-27017 server (PINV_TEST_NX_BIN): run ./scripts/test.sh"]
async fn outage_is_unavailable_all_or_nothing_and_recovers() {
    let bin = nx_bin();
    let dir = TempDir::new().expect("temporary directory");
    let db_file = dir.path().join("outage.db");
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");

    let mut server = NxServer::start(&bin, &db_file, port, dir.path());
    let store = Arc::new(connect_when_up(&uri).await);
    store.ping().await.expect("ping before the outage");
    for n in 1..=3 {
        store
            .commit(package_set(n).0)
            .await
            .expect("commit before the outage");
    }

    // Traffic, then the server dies under it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(traffic(Arc::clone(&store), 100, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    let killed_at = Instant::now();

    let started = Instant::now();
    let ping = store.ping().await;
    assert!(
        matches!(ping, Err(StoreError::Unavailable(_))),
        "ping during the outage: expected Unavailable, got {ping:?}"
    );
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "ping came back in time"
    );
    let read = store.get_products(&[id(2)]).await;
    assert!(
        matches!(read, Err(StoreError::Unavailable(_))),
        "read during the outage: expected Unavailable, got {read:?}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let tally = writer.await.expect("traffic task panicked");
    assert!(
        !tally.ok.is_empty(),
        "some sets went through before the kill"
    );
    assert!(
        !tally.unavailable.is_empty(),
        "sets during the outage must fail as Unavailable"
    );
    assert!(
        tally.slowest < TIMEOUT + SLACK,
        "a call took {:?}, beyond the timeout {TIMEOUT:?}",
        tally.slowest
    );

    // Back on the same port and file; the same store recovers by itself.
    let mut server = NxServer::start(&bin, &db_file, port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the store did not recover within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_after = killed_at.elapsed();

    for n in 1..=3 {
        assert!(
            all_or_nothing(&store, n).await,
            "set {n} committed before the outage"
        );
    }
    for n in &tally.ok {
        assert!(all_or_nothing(&store, *n).await, "set {n} was acknowledged");
    }
    let mut landed_anyway = 0;
    for n in tally.unavailable.iter().chain(&tally.unknown) {
        // A commit in flight at the kill may still have landed, but whole.
        if all_or_nothing(&store, *n).await {
            landed_anyway += 1;
        }
    }
    store
        .commit(package_set(10_000).0)
        .await
        .expect("commit after recovery");
    assert!(all_or_nothing(&store, 10_000).await);
    println!(
        "outage: {} sets ok, {} unavailable, {} outcome unknown ({landed_anyway} of those \
         landed whole), slowest call {:?}, recovered {:?} after the kill",
        tally.ok.len(),
        tally.unavailable.len(),
        tally.unknown.len(),
        tally.slowest,
        recovered_after
    );
    server.kill();
}
