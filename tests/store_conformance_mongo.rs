//! Runs the store conformance suite against [`MongoStore`], plus MongoDB-only behaviours
//! (exact round-trip of awkward TMF637 keys, error mapping).
//!
//! The tests that need a server are ignored by plain `cargo test`. `./scripts/test.sh`
//! starts nx-27017, sets `PINV_TEST_MONGODB_URI` and runs them with `--include-ignored`; run
//! without the variable, or with the server unreachable, they fail. The error-mapping tests
//! need no server and always run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use pinv::core::MatchKey;
use pinv::store::conformance::{create, id, key, processed, record, TestStore};
use pinv::store::mongo::{MongoOptions, MongoStore};
use pinv::store::{ListQuery, Store, StoreError};
use pinv::testing::mongo::{free_port, options as test_options, uri, URI_VAR};

mod mongo {
    use super::fresh_store;

    pinv::store_conformance_tests!(
        #[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
        fresh_store().await
    );
}

/// A store on a new database `pinv_test_<uuid>`, dropped when the test ends.
async fn fresh_store() -> TestStore {
    store_on_new_database(test_options()).await.0
}

/// A store with `options` on a new database, dropped when the test ends, and the
/// database's name.
async fn store_on_new_database(options: MongoOptions) -> (TestStore, String) {
    let uri = uri();
    let database = format!("pinv_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&uri, &database, options)
        .await
        .unwrap_or_else(|e| panic!("{URI_VAR} is set but MongoStore::connect({uri}) failed: {e}"));
    let guard = DropDatabase {
        uri,
        database: database.clone(),
    };
    (TestStore::with_guard(store, guard), database)
}

/// Drops a test database when the test ends. `Drop` cannot await, so a thread with its own
/// runtime and client does it.
struct DropDatabase {
    uri: String,
    database: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (uri, database) = (self.uri.clone(), self.database.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let options = MongoOptions {
                    timeout: Duration::from_secs(2),
                    ..test_options()
                };
                if let Ok(store) = MongoStore::connect(&uri, &database, options).await {
                    let _ = store.drop_database().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

async fn fresh() -> (TestStore, Arc<dyn Store>) {
    let test_store = fresh_store().await;
    let store = Arc::clone(&test_store.store);
    (test_store, store)
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn awkward_tmf_keys_round_trip_exactly() {
    let (_guard, store) = fresh().await;
    let merged = json!({
        "@type": "Product",
        "@baseType": "Product",
        "@schemaLocation": "/schema/AttProduct_tmf637.schema.json",
        "a.b": {"c.d": [1, 2.5, -0.0, 1e300]},
        "": "empty key",
        "unicode ✓": "λ",
        "nested": [[{"x": null}], [], {}],
        "nul": "a\u{0}b",
        "big": 18446744073709551615u64,
    });
    let mut rec = record(id(1), 1, merged);
    rec.contributions = vec![pinv::core::record::Contribution {
        source: pinv::store::conformance::source("billing"),
        event_id: pinv::store::conformance::event_id("ev.1"),
        time: chrono::Utc::now(),
        received_at: chrono::Utc::now(),
        value: json!({"@type": "Product", "x.y": {"$ref": "kept as data"}}).into(),
    }];
    rec.match_keys = vec![MatchKey::external("CircuitID", ".BMEC.123456..ATI.")];
    store.commit(create(rec.clone())).await.expect("commit");
    let back = store.get_products(&[id(1)]).await.expect("get");
    assert_eq!(back, vec![rec.clone()]);
    let scanned = store.scan(None, 10).await.expect("scan");
    assert_eq!(scanned, vec![rec.clone()]);
    let listed = store
        .list(&ListQuery::equalities([("@type", "Product")]))
        .await
        .expect("list");
    assert_eq!(listed.items, vec![rec.merged]);
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn dotted_key_is_not_reachable_by_a_dotted_filter() {
    // As `core::query`: a path splits on '.', so key "a.b" is never walked.
    let (_guard, store) = fresh().await;
    store
        .commit(create(record(id(1), 1, json!({"a.b": "x"}))))
        .await
        .expect("commit");
    store
        .commit(create(record(id(2), 1, json!({"a": {"b": "x"}}))))
        .await
        .expect("commit");
    let page = store
        .list(&ListQuery::equalities([("a.b", "x")]))
        .await
        .expect("list");
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0]["id"], json!(id(2).to_string()));
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn duplicate_event_in_a_multi_product_set_is_a_conflict_not_an_error() {
    let (_guard, store) = fresh().await;
    let mut first = create(record(id(1), 1, json!({})));
    first.processed = Some(processed("ev", vec![id(1)]));
    store.commit(first).await.expect("first");

    let mut again = create(record(id(2), 1, json!({})));
    again
        .products
        .push(create(record(id(3), 1, json!({}))).products.remove(0));
    again.claim_keys = vec![(key("two"), id(2))];
    again.processed = Some(processed("ev", vec![id(2), id(3)]));
    match store.commit(again).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(store
        .get_products(&[id(2), id(3)])
        .await
        .expect("get")
        .is_empty());
    assert!(store
        .resolve_keys(&[key("two")])
        .await
        .expect("keys")
        .is_empty());
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn list_limit_zero_counts_without_items() {
    let (_guard, store) = fresh().await;
    for n in 1..=3 {
        store
            .commit(create(record(id(n), 1, json!({"s": "on"}))))
            .await
            .expect("commit");
    }
    let page = store
        .list(&ListQuery {
            limit: 0,
            ..ListQuery::equalities([("s", "on")])
        })
        .await
        .expect("list");
    assert_eq!((page.total, page.items.len()), (3, 0));
    let beyond = store
        .list(&ListQuery {
            offset: 5,
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!((beyond.total, beyond.items.len()), (3, 0));
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable_within_the_timeout() {
    let port = free_port();
    let options = MongoOptions {
        timeout: Duration::from_millis(500),
        ..test_options()
    };
    let started = Instant::now();
    let outcome = MongoStore::connect(
        &format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        "pinv_unreachable",
        options,
    )
    .await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {:?}",
        outcome.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
}

#[tokio::test]
async fn malformed_uri_is_refused() {
    let outcome = MongoStore::connect("mongodb://", "pinv", test_options()).await;
    assert!(matches!(outcome, Err(StoreError::Other(_))));
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn the_list_index_is_read_and_rebuilt_when_the_indexed_paths_change() {
    use pinv::core::index::IndexedPaths;
    use pinv::store::conformance::listed;

    let with_paths = |p: &[&str]| MongoOptions {
        indexed_paths: IndexedPaths::parse(p.iter().copied()).expect("paths"),
        ..test_options()
    };
    let (_guard, database) = store_on_new_database(with_paths(&["status"])).await;
    let store = &_guard.store;
    store
        .commit(create(record(
            id(1),
            1,
            json!({"status": "on", "name": "x"}),
        )))
        .await
        .expect("commit");
    assert_eq!(listed(&**store, "name=x").await.0, vec![id(1)], "by a scan");
    // Another set of paths: the index of `name` is built from the stored products; were it
    // not, the list (which reads only the index for an indexed path) would be empty.
    let again = MongoStore::connect(&uri(), &database, with_paths(&["name"]))
        .await
        .expect("reconnect");
    assert_eq!(listed(&again, "name=x").await.0, vec![id(1)]);
    assert_eq!(listed(&again, "name.gte=w&status=on").await.0, vec![id(1)]);
    assert_eq!(listed(&again, "name=y").await.0, vec![]);
}

/// The list index holds exactly the entries of the stored documents: a replace drops the
/// entries of the document it replaced (found from that document, which the replace returns)
/// and a delete drops them all. A list re-checks its candidates, so entries left behind would
/// not show in answers, only in the index's size and speed: this reads the index itself.
#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn the_list_index_holds_exactly_the_entries_of_the_stored_documents() {
    use std::collections::BTreeSet;

    use futures_util::TryStreamExt;
    use mongodb::bson::{doc, Document};
    use pinv::core::index::IndexedPaths;
    use pinv::core::record::{ProductDelete, WriteSet};
    use pinv::store::conformance::update;

    let (_guard, database) = store_on_new_database(test_options()).await;
    let store = &_guard.store;
    let paths = IndexedPaths::standard();
    let one = json!({"status": "active", "name": "one"});
    let two = json!({"status": "pending", "name": "two"});
    store
        .commit(create(record(id(1), 1, one)))
        .await
        .expect("create 1");
    store
        .commit(create(record(id(2), 1, two.clone())))
        .await
        .expect("create 2");
    let changed = json!({"status": "terminated", "name": "one"});
    store
        .commit(update(record(id(1), 2, changed.clone()), 1))
        .await
        .expect("update 1");
    let delete = WriteSet {
        delete_products: vec![ProductDelete {
            id: id(2),
            expected_revision: 1,
            last: two,
        }],
        ..WriteSet::default()
    };
    store.commit(delete).await.expect("delete 2");

    let client = mongodb::Client::with_uri_str(uri())
        .await
        .expect("a client");
    let stored: BTreeSet<String> = client
        .database(&database)
        .collection::<Document>("list_index")
        .find(doc! {})
        .await
        .expect("read the index")
        .try_collect::<Vec<_>>()
        .await
        .expect("read the index")
        .iter()
        .map(|d| d.get_str("_id").expect("an entry").to_owned())
        .collect();
    assert_eq!(stored, paths.entries(&id(1), &changed));
}
