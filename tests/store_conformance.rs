//! Runs the store conformance suite against the memory and embedded stores, plus
//! behaviours only the embedded store has (durability across reopen, group commit).

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tempfile::TempDir;

use pinv::store::conformance::{create, id, key, processed, record, update, TestStore};
use pinv::store::embedded::EmbeddedStore;
use pinv::store::{Store, StoreError};

mod memory {
    pinv::store_conformance_tests!(pinv::store::memory::MemoryStore::new());
}

mod embedded {
    use super::fresh_embedded;

    pinv::store_conformance_tests!(fresh_embedded());
}

/// An embedded store in a new temporary directory, removed when the test ends.
fn fresh_embedded() -> TestStore {
    let dir = TempDir::new().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    TestStore::with_guard(store, dir)
}

#[tokio::test]
async fn embedded_data_survives_close_and_reopen() {
    let dir = TempDir::new().expect("temporary directory");
    let mut first = record(id(7), 1, json!({"name": "kept"}));
    first.package_root = Some(id(7));
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let mut set = create(first.clone());
        set.claim_keys = vec![(key("k"), id(7))];
        set.add_waiters = vec![(key("w"), id(7))];
        set.processed = Some(processed("ev-1", vec![id(7)]));
        store.commit(set).await.expect("commit");
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen on the same directory");
    assert_eq!(
        store.get_products(&[id(7)]).await.expect("get"),
        vec![first]
    );
    assert_eq!(
        store
            .resolve_keys(&[key("k")])
            .await
            .expect("keys")
            .get(&key("k")),
        Some(&id(7))
    );
    assert_eq!(store.waiters(&[key("w")]).await.expect("waiters").len(), 1);
    assert_eq!(
        store.package_members(&id(7)).await.expect("members"),
        vec![id(7)]
    );
    assert!(store
        .get_processed(
            &pinv::core::Source::parse("billing").expect("source"),
            &pinv::core::EventId::parse("ev-1").expect("event id")
        )
        .await
        .expect("processed")
        .is_some());
    store.ping().await.expect("ping after reopen");
}

#[tokio::test]
async fn embedded_store_open_creates_missing_directories() {
    let dir = TempDir::new().expect("temporary directory");
    let nested = dir.path().join("a").join("b");
    let store = EmbeddedStore::open(&nested).expect("open in a new directory");
    store.ping().await.expect("ping");
    assert!(nested.join(pinv::store::embedded::FILE_NAME).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_burst_of_concurrent_commits_all_succeed() {
    const COMMITS: u128 = 500;
    let dir = TempDir::new().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));

    let started = Instant::now();
    let tasks: Vec<_> = (1..=COMMITS)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut set = create(record(id(n), 1, json!({"n": n as u64})));
                set.claim_keys = vec![(key(&format!("burst-{n}")), id(n))];
                store.commit(set).await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("task panicked")
            .expect("every commit succeeds");
    }
    let elapsed = started.elapsed();
    // Informational only: durable commits per second with group commit on this machine.
    println!(
        "{COMMITS} concurrent durable commits in {elapsed:?} ({:.0}/s)",
        COMMITS as f64 / elapsed.as_secs_f64()
    );

    let ids: Vec<_> = (1..=COMMITS).map(id).collect();
    let stored = store.get_products(&ids).await.expect("get");
    assert_eq!(stored.len(), COMMITS as usize, "every commit is readable");
    let page = store.scan(None, 1000).await.expect("scan");
    assert_eq!(page.len(), COMMITS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_guard_failure_in_a_batch_spares_the_other_sets() {
    let dir = TempDir::new().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    store
        .commit(create(record(id(1), 1, json!({}))))
        .await
        .expect("seed");

    // Many sets queued at once so that they share batches; every third one is stale.
    let tasks: Vec<_> = (0..60u128)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let set = if i % 3 == 0 {
                    let mut stale = update(record(id(1), 9, json!({})), 8);
                    stale.claim_keys = vec![(key(&format!("stale-{i}")), id(1))];
                    stale
                } else {
                    let mut fresh = create(record(id(100 + i), 1, json!({})));
                    fresh.claim_keys = vec![(key(&format!("fresh-{i}")), id(100 + i))];
                    fresh
                };
                (i, store.commit(set).await)
            })
        })
        .collect();
    for task in tasks {
        let (i, outcome) = task.await.expect("task panicked");
        match (i % 3 == 0, outcome) {
            (true, Err(StoreError::Conflict(_))) | (false, Ok(())) => {}
            (stale, other) => panic!("set {i} (stale: {stale}) got {other:?}"),
        }
    }
    for i in 0..60u128 {
        let owners = store
            .resolve_keys(&[key(&format!("stale-{i}")), key(&format!("fresh-{i}"))])
            .await
            .expect("keys");
        if i % 3 == 0 {
            assert!(owners.is_empty(), "refused set {i} left a key behind");
        } else {
            assert_eq!(owners.len(), 1, "set {i} lost its key");
        }
    }
    assert_eq!(
        store.get_products(&[id(1)]).await.expect("get")[0].revision,
        1,
        "the stale sets changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_large_write_set_is_stored_whole_and_in_order() {
    // Large sets (a batch re-merge) are encoded on several threads: every record must still
    // land under its own id, with its own history entry.
    const N: u128 = 300;
    let dir = TempDir::new().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let mut set = pinv::core::record::WriteSet::default();
    for n in 1..=N {
        let mut one = create(record(id(n), 1, json!({"n": n as u64})));
        set.products.append(&mut one.products);
        set.history
            .push(pinv::store::conformance::history_entry(id(n), 1));
    }
    store.commit(set).await.expect("the set commits");
    let stored = store.scan(None, 1000).await.expect("scan");
    assert_eq!(stored.len(), N as usize);
    for (n, r) in (1..=N).zip(&stored) {
        assert_eq!(r.id, id(n));
        assert_eq!(
            r.merged["n"],
            json!(n as u64),
            "record {n} kept its own document"
        );
        let history = store.history(&id(n)).await.expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].product, id(n));
    }
}

#[tokio::test]
async fn the_list_index_is_read_and_rebuilt_when_the_indexed_paths_change() {
    use pinv::core::index::IndexedPaths;
    use pinv::store::conformance::listed;

    let dir = TempDir::new().expect("temporary directory");
    let paths = |p: &[&str]| IndexedPaths::parse(p.iter().copied()).expect("paths");
    {
        let store = EmbeddedStore::open_indexed(dir.path(), paths(&["status"])).expect("open");
        store
            .commit(create(record(
                id(1),
                1,
                json!({"status": "on", "name": "x"}),
            )))
            .await
            .expect("commit");
        assert_eq!(listed(&store, "name=x").await.0, vec![id(1)], "by a scan");
    }
    // Another set of paths: the index of `name` is built from the stored products; were
    // it not, the list (which reads only the index for an indexed path) would be empty.
    let store = EmbeddedStore::open_indexed(dir.path(), paths(&["name"])).expect("reopen");
    assert_eq!(listed(&store, "name=x").await.0, vec![id(1)]);
    assert_eq!(listed(&store, "name.gte=w&status=on").await.0, vec![id(1)]);
    assert_eq!(listed(&store, "name=y").await.0, vec![]);
}
