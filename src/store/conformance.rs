//! The conformance suite every store must pass.
//!
//! Each behaviour is a public async function that takes a fresh, empty store and panics
//! with a readable message when the store misbehaves. [`store_conformance_tests!`] turns
//! them into one `#[tokio::test]` each for a given store:
//!
//! ```text
//! mod memory {
//!     pinv::store_conformance_tests!(pinv::store::memory::MemoryStore::new());
//! }
//! ```
//!
//! The expression may also yield a [`TestStore`] to keep something alive as long as the
//! store (a temporary directory, a database handle). An attribute before it goes on every
//! test, e.g. `#[ignore = "needs a server"]` for a store that needs one.
//!
//! The helpers (`id`, `record`, `create`, ...) build small records for these tests.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::core::package::Links;
use crate::core::read_plan::ReadPlan;
use crate::core::record::WriteSet;
use crate::core::record::{
    Contribution, EventRef, HistoryEntry, ProcessedEvent, ProductDelete, ProductRecord,
    ProductWrite, ScannedProduct,
};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::{ListQuery, Store, StoreError};

/// A store under test, plus whatever must live as long as it (e.g. its `TempDir`).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    // Declared after `store` so the store is dropped (and closed) first.
    _guard: Option<Box<dyn Any + Send>>,
}

impl TestStore {
    /// A store that needs nothing kept alive.
    pub fn new(store: impl Store) -> Self {
        Self {
            store: Arc::new(store),
            _guard: None,
        }
    }

    /// A store that needs `guard` kept alive until the store is gone.
    pub fn with_guard(store: impl Store, guard: impl Any + Send) -> Self {
        Self {
            store: Arc::new(store),
            _guard: Some(Box::new(guard)),
        }
    }
}

impl<S: Store> From<S> for TestStore {
    fn from(store: S) -> Self {
        Self::new(store)
    }
}

/// Expands to one `#[tokio::test]` per behaviour of this module, each on a fresh store
/// made by `$make` (an expression yielding a [`Store`] or a [`TestStore`]), with the
/// attribute written before `$make`, if any, on each test.
#[macro_export]
macro_rules! store_conformance_tests {
    (#[$attr:meta] $make:expr) => {
        $crate::store_conformance_tests!(@all [$attr] $make);
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(@all [] $make);
    };
    (@all $attrs:tt $make:expr) => {
        $crate::store_conformance_tests!(@single $attrs $make;
            create_and_read_product,
            a_write_that_keeps_its_contributions_reads_back_whole,
            a_write_naming_its_changed_attributes_keeps_lists_right,
            stale_revision_conflicts_and_writes_nothing,
            creating_an_existing_product_conflicts,
            key_owned_by_another_product_conflicts_and_writes_nothing,
            claiming_an_owned_key_again_is_fine,
            resolve_keys_returns_only_owned_keys,
            processed_event_is_remembered_and_cannot_be_inserted_twice,
            waiters_are_added_as_a_set_and_cleared_per_key,
            package_members_follow_the_package_root,
            list_filters_pages_and_orders_by_id,
            list_query_language_follows_updates,
            history_is_oldest_first_per_product,
            a_creation_entry_written_without_its_patch_reads_back_with_it,
            a_product_written_with_its_json_made_reads_back_as_that_document,
            scan_pages_cover_every_product_once,
            numbers_read_back_exactly_as_written,
            deleting_a_product_frees_its_keys_and_keeps_its_history,
            deleting_at_a_stale_revision_conflicts_and_writes_nothing,
            releasing_a_key_frees_only_the_named_owners_key,
            outbox_entries_commit_with_their_change_or_not_at_all,
            outbox_entries_are_settled_and_go_with_their_subscription,
            read_for_follows_each_step_of_the_plan
        );
        $crate::store_conformance_tests!(@shared $attrs $make;
            racing_key_claims_have_exactly_one_winner,
            concurrent_increments_lose_no_update
        );
    };
    (@single $attrs:tt $make:expr; $($name:ident),* $(,)?) => {
        $( $crate::store_conformance_tests!(@single_test $attrs $make; $name); )*
    };
    (@shared $attrs:tt $make:expr; $($name:ident),* $(,)?) => {
        $( $crate::store_conformance_tests!(@shared_test $attrs $make; $name); )*
    };
    (@single_test [$($attr:meta)?] $make:expr; $name:ident) => {
        #[::tokio::test]
        $(#[$attr])?
        async fn $name() {
            let test_store: $crate::store::conformance::TestStore = ($make).into();
            $crate::store::conformance::$name(&*test_store.store).await;
        }
    };
    (@shared_test [$($attr:meta)?] $make:expr; $name:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])?
        async fn $name() {
            let test_store: $crate::store::conformance::TestStore = ($make).into();
            $crate::store::conformance::$name(test_store.store.clone()).await;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A deterministic PINV id; ids compare like `n`.
pub fn id(n: u128) -> PinvId {
    PinvId::from_uuid(uuid::Uuid::from_u128(n))
}

/// A source name (panics on an invalid one: test input).
pub fn source(name: &str) -> Source {
    Source::parse(name).expect("test source name is valid")
}

/// An event id (panics on an invalid one: test input).
pub fn event_id(text: &str) -> EventId {
    EventId::parse(text).expect("test event id is valid")
}

/// The key `ext:Test:<text>`.
pub fn key(text: &str) -> MatchKey {
    MatchKey::external("Test", text)
}

/// A record at `revision` whose merged document is `merged` with `id` set.
pub fn record(id: PinvId, revision: u64, mut merged: Value) -> ProductRecord {
    if let Value::Object(map) = &mut merged {
        map.insert("id".to_owned(), Value::String(id.to_string()));
        map.insert("href".to_owned(), Value::String(id.href()));
    }
    ProductRecord {
        id,
        revision,
        contributions: Vec::new(),
        links: Links::default(),
        merged,
        match_keys: Vec::new(),
        package_root: None,
        rules_hash: "test-rules".to_owned(),
    }
}

/// A write set creating `record` (expected revision: none).
pub fn create(record: ProductRecord) -> WriteSet {
    WriteSet {
        products: vec![ProductWrite {
            record,
            expected_revision: None,
            contributions_unchanged: false,
            changed_attributes: None,
            merged_json: None,
        }],
        ..WriteSet::default()
    }
}

/// A write set replacing the product at revision `expected` with `record`.
pub fn update(record: ProductRecord, expected: u64) -> WriteSet {
    WriteSet {
        products: vec![ProductWrite {
            record,
            expected_revision: Some(expected),
            contributions_unchanged: false,
            changed_attributes: None,
            merged_json: None,
        }],
        ..WriteSet::default()
    }
}

/// The PINV ids a list query answers, in order, and its total.
pub async fn listed(store: &dyn Store, query: &str) -> (Vec<PinvId>, u64) {
    let q = crate::core::query::Query::parse(query, &[]).expect("test query parses");
    let page = store.list(&q).await.expect("list");
    let ids = page
        .items
        .iter()
        .map(|d| {
            PinvId::parse(d["id"].as_str().expect("listed documents have an id"))
                .expect("a PINV id")
        })
        .collect();
    (ids, page.total)
}

/// A history entry for (product, revision).
pub fn history_entry(product: PinvId, revision: u64) -> HistoryEntry {
    HistoryEntry {
        product,
        revision,
        time: Utc
            .timestamp_opt(1_700_000_000 + revision as i64, 0)
            .single()
            .unwrap_or_default(),
        event: EventRef {
            source: "billing".to_owned(),
            id: format!("ev-{revision}"),
        },
        rules_hash: "test-rules".to_owned(),
        patch: json!([{"op": "replace", "path": "/revision", "value": revision}]),
        deleted: false,
    }
}

/// A processed event of `billing` with this id, about `products`.
pub fn processed(event: &str, products: Vec<PinvId>) -> ProcessedEvent {
    ProcessedEvent {
        source: source("billing"),
        event_id: event_id(event),
        digest: "0".repeat(64),
        products,
    }
}

async fn get_one(store: &dyn Store, id: PinvId) -> Option<ProductRecord> {
    let mut found = store
        .get_products(&[id])
        .await
        .unwrap_or_else(|e| panic!("get_products({id}) failed: {e}"));
    assert!(found.len() <= 1, "get_products returned duplicates");
    found.pop()
}

async fn commit_ok(store: &dyn Store, set: WriteSet, what: &str) {
    if let Err(e) = store.commit(set).await {
        panic!("{what}: commit should succeed, got {e}");
    }
}

async fn commit_conflict(store: &dyn Store, set: WriteSet, what: &str) {
    match store.commit(set).await {
        Err(StoreError::Conflict(_)) => {}
        Err(e) => panic!("{what}: expected a Conflict, got {e}"),
        Ok(()) => panic!("{what}: expected a Conflict, but the commit succeeded"),
    }
}

// ---------------------------------------------------------------------------------------
// Behaviours

/// A created product reads back as written; unknown ids are skipped.
pub async fn create_and_read_product(store: &dyn Store) {
    store.ping().await.expect("a fresh store answers ping");
    let mut rec = record(id(1), 1, json!({"name": "ADI 1", "status": "active"}));
    rec.match_keys = vec![key("a")];
    commit_ok(store, create(rec.clone()), "creating a product").await;

    let found = store
        .get_products(&[id(1), id(99)])
        .await
        .expect("get_products");
    assert_eq!(
        found,
        vec![rec],
        "the stored record must read back unchanged"
    );
    assert!(get_one(store, id(2)).await.is_none());
}

/// A contribution as a source might have sent it.
pub fn contribution(from: &str, value: Value) -> Contribution {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    Contribution {
        source: source(from),
        event_id: event_id(&format!("{from}-event")),
        time: at,
        received_at: at,
        value: value.into(),
    }
}

/// A write that names the top-level attributes it changes (a re-merge's) keeps list
/// filters right: a filter on an indexed path it does not touch still finds the product,
/// and a change to an indexed attribute it names moves the product between values.
pub async fn a_write_naming_its_changed_attributes_keeps_lists_right(store: &dyn Store) {
    let doc = |name: &str, status: &str| json!({"name": name, "status": status});
    let first = record(id(1), 1, doc("first", "active"));
    commit_ok(store, create(first), "creating").await;
    let mut set = update(record(id(1), 2, doc("second", "active")), 1);
    set.products[0].changed_attributes = Some(vec!["name".to_owned()]);
    commit_ok(store, set, "renaming").await;
    assert_eq!(listed(store, "status=active").await, (vec![id(1)], 1));
    assert_eq!(listed(store, "name=second").await, (vec![id(1)], 1));

    let mut set = update(record(id(1), 3, doc("second", "suspended")), 2);
    set.products[0].changed_attributes = Some(vec!["status".to_owned()]);
    commit_ok(store, set, "suspending").await;
    assert_eq!(listed(store, "status=active").await, (vec![], 0));
    assert_eq!(listed(store, "status=suspended").await, (vec![id(1)], 1));
}

/// A write that says its contributions are unchanged (a re-merge) keeps them, in reads and
/// scans (the re-merge's scan too), whatever the store does with them; a later write that changes them is read back
/// with the new ones, and a product deleted and made again starts from its own.
pub async fn a_write_that_keeps_its_contributions_reads_back_whole(store: &dyn Store) {
    let mut rec = record(id(1), 1, json!({"name": "from a"}));
    rec.contributions = vec![
        contribution("a", json!({"name": "from a", "n": 12345678901234567890u64})),
        contribution("b", json!({"name": "from b"})),
    ];
    commit_ok(store, create(rec.clone()), "creating").await;

    let mut remerged = rec.clone();
    remerged.revision = 2;
    remerged.merged = record(id(1), 2, json!({"name": "from b"})).merged;
    let mut set = update(remerged.clone(), 1);
    set.products[0].contributions_unchanged = true;
    commit_ok(store, set, "re-merging").await;
    assert_eq!(get_one(store, id(1)).await, Some(remerged.clone()));
    assert_eq!(
        store.scan(None, 10).await.expect("scan"),
        vec![remerged.clone()]
    );
    // The re-merge's own scan reads the same product, its document as text or parsed.
    let scanned = store
        .scan_for_remerge(None, 10)
        .await
        .expect("scan_for_remerge");
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].id(), id(1), "the id is known before decoding");
    let scanned: Vec<ScannedProduct> = scanned
        .into_iter()
        .map(|s| s.decode().expect("decodes"))
        .collect();
    if let Some(text) = &scanned[0].merged_text {
        assert_eq!(
            scanned[0].record.merged,
            Value::Null,
            "text or tree, not both"
        );
        assert_eq!(text.get(), serde_json::to_string(&remerged.merged).unwrap());
    }
    let parsed = scanned
        .into_iter()
        .map(|s| s.into_record().expect("parses"));
    assert_eq!(parsed.collect::<Vec<_>>(), vec![remerged.clone()]);
    assert!(store
        .scan_for_remerge(Some(id(1)), 10)
        .await
        .expect("scan_for_remerge past the end")
        .is_empty());

    let mut posted = remerged;
    posted.revision = 3;
    posted.contributions[1] = contribution("b", json!({"name": "b again"}));
    commit_ok(store, update(posted.clone(), 2), "changing a contribution").await;
    assert_eq!(get_one(store, id(1)).await, Some(posted.clone()));

    let set = WriteSet {
        delete_products: vec![ProductDelete {
            id: id(1),
            expected_revision: 3,
            last: posted.merged.clone(),
        }],
        ..WriteSet::default()
    };
    commit_ok(store, set, "deleting").await;
    let mut again = record(id(1), 1, json!({"name": "new"}));
    again.contributions = vec![contribution("c", json!({"name": "new"}))];
    commit_ok(store, create(again.clone()), "making it again").await;
    assert_eq!(get_one(store, id(1)).await, Some(again));
}

/// A write at a stale revision is a conflict, and nothing of its set is written.
pub async fn stale_revision_conflicts_and_writes_nothing(store: &dyn Store) {
    let v1 = record(id(1), 1, json!({"name": "v1"}));
    commit_ok(store, create(v1.clone()), "creating").await;
    let v2 = record(id(1), 2, json!({"name": "v2"}));
    commit_ok(store, update(v2.clone(), 1), "updating at revision 1").await;

    let mut stale = update(record(id(1), 2, json!({"name": "stale"})), 1);
    stale.claim_keys = vec![(key("stale-key"), id(1))];
    stale.add_waiters = vec![(key("wanted"), id(1))];
    stale.history = vec![history_entry(id(1), 2)];
    stale.processed = Some(processed("stale-event", vec![id(1)]));
    commit_conflict(store, stale, "updating at stale revision 1").await;

    assert_eq!(get_one(store, id(1)).await, Some(v2), "product unchanged");
    assert!(
        store
            .resolve_keys(&[key("stale-key")])
            .await
            .expect("resolve_keys")
            .is_empty(),
        "the refused set's key must not be recorded"
    );
    assert!(
        store
            .waiters(&[key("wanted")])
            .await
            .expect("waiters")
            .is_empty(),
        "the refused set's waiter must not be recorded"
    );
    assert!(
        store.history(&id(1)).await.expect("history").is_empty(),
        "the refused set's history must not be recorded"
    );
    assert_eq!(
        store
            .get_processed(&source("billing"), &event_id("stale-event"))
            .await
            .expect("get_processed"),
        None,
        "the refused set's event must not be remembered"
    );
}

/// Creating a product whose id is already stored is a conflict.
pub async fn creating_an_existing_product_conflicts(store: &dyn Store) {
    let first = record(id(1), 1, json!({"name": "first"}));
    commit_ok(store, create(first.clone()), "creating").await;
    commit_conflict(
        store,
        create(record(id(1), 1, json!({"name": "second"}))),
        "creating the same id again",
    )
    .await;
    assert_eq!(get_one(store, id(1)).await, Some(first));

    commit_conflict(
        store,
        update(record(id(2), 2, json!({})), 1),
        "updating a product that does not exist",
    )
    .await;
    assert!(get_one(store, id(2)).await.is_none());
}

/// Claiming a key another product owns is a conflict and writes nothing of the set.
pub async fn key_owned_by_another_product_conflicts_and_writes_nothing(store: &dyn Store) {
    let mut set = create(record(id(1), 1, json!({})));
    set.claim_keys = vec![(key("circuit"), id(1))];
    commit_ok(store, set, "first claim").await;

    let mut rival = create(record(id(2), 1, json!({})));
    rival.claim_keys = vec![(key("other"), id(2)), (key("circuit"), id(2))];
    rival.processed = Some(processed("rival", vec![id(2)]));
    commit_conflict(store, rival, "claiming a key owned by another product").await;

    assert!(get_one(store, id(2)).await.is_none(), "no product written");
    let owners = store
        .resolve_keys(&[key("circuit"), key("other")])
        .await
        .expect("resolve_keys");
    assert_eq!(owners, BTreeMap::from([(key("circuit"), id(1))]));
    assert_eq!(
        store
            .get_processed(&source("billing"), &event_id("rival"))
            .await
            .expect("get_processed"),
        None
    );
}

/// A product may claim a key it already owns (every write re-records its keys).
pub async fn claiming_an_owned_key_again_is_fine(store: &dyn Store) {
    let mut set = create(record(id(1), 1, json!({})));
    set.claim_keys = vec![(key("k"), id(1))];
    commit_ok(store, set, "first claim").await;

    let mut again = update(record(id(1), 2, json!({})), 1);
    again.claim_keys = vec![(key("k"), id(1)), (key("k2"), id(1))];
    commit_ok(store, again, "claiming an owned key again").await;

    let owners = store
        .resolve_keys(&[key("k"), key("k2")])
        .await
        .expect("resolve_keys");
    assert_eq!(
        owners,
        BTreeMap::from([(key("k"), id(1)), (key("k2"), id(1))])
    );
    assert_eq!(get_one(store, id(1)).await.map(|r| r.revision), Some(2));
}

/// `resolve_keys` answers owned keys only.
pub async fn resolve_keys_returns_only_owned_keys(store: &dyn Store) {
    let mut set = create(record(id(1), 1, json!({})));
    set.claim_keys = vec![(key("a"), id(1)), (MatchKey::pinv(&id(1)), id(1))];
    commit_ok(store, set, "claim a").await;
    let mut set = create(record(id(2), 1, json!({})));
    set.claim_keys = vec![(key("b"), id(2))];
    commit_ok(store, set, "claim b").await;

    let owners = store
        .resolve_keys(&[key("a"), key("b"), key("nobody"), MatchKey::pinv(&id(1))])
        .await
        .expect("resolve_keys");
    assert_eq!(
        owners,
        BTreeMap::from([
            (key("a"), id(1)),
            (key("b"), id(2)),
            (MatchKey::pinv(&id(1)), id(1)),
        ])
    );
    assert!(store.resolve_keys(&[]).await.expect("empty").is_empty());
}

/// A processed event is remembered; remembering it again is a conflict.
pub async fn processed_event_is_remembered_and_cannot_be_inserted_twice(store: &dyn Store) {
    let event = processed("41-1234567", vec![id(1)]);
    let mut set = create(record(id(1), 1, json!({})));
    set.processed = Some(event.clone());
    commit_ok(store, set, "first processing").await;

    assert_eq!(
        store
            .get_processed(&source("billing"), &event_id("41-1234567"))
            .await
            .expect("get_processed"),
        Some(event.clone())
    );
    assert_eq!(
        store
            .get_processed(&source("provisioning"), &event_id("41-1234567"))
            .await
            .expect("get_processed"),
        None,
        "events are per source"
    );

    let mut again = update(record(id(1), 2, json!({"x": 1})), 1);
    again.processed = Some(event);
    commit_conflict(store, again, "processing the same event again").await;
    assert_eq!(get_one(store, id(1)).await.map(|r| r.revision), Some(1));
}

/// Waiters are a set per key, sorted; clearing removes the key's entry.
pub async fn waiters_are_added_as_a_set_and_cleared_per_key(store: &dyn Store) {
    let set = WriteSet {
        add_waiters: vec![
            (key("x"), id(3)),
            (key("x"), id(1)),
            (key("y"), id(2)),
            (key("x"), id(3)),
        ],
        ..WriteSet::default()
    };
    commit_ok(store, set, "adding waiters").await;
    let set = WriteSet {
        add_waiters: vec![(key("x"), id(2)), (key("x"), id(1))],
        ..WriteSet::default()
    };
    commit_ok(store, set, "adding more waiters").await;

    let found = store
        .waiters(&[key("x"), key("y"), key("z")])
        .await
        .expect("waiters");
    assert_eq!(
        found,
        BTreeMap::from([
            (key("x"), vec![id(1), id(2), id(3)]),
            (key("y"), vec![id(2)]),
        ])
    );

    let set = WriteSet {
        clear_waiters: vec![key("x"), key("never-waited")],
        ..WriteSet::default()
    };
    commit_ok(store, set, "clearing waiters").await;
    let found = store.waiters(&[key("x"), key("y")]).await.expect("waiters");
    assert_eq!(found, BTreeMap::from([(key("y"), vec![id(2)])]));
}

/// The package-root index follows each record's `package_root`, including a moved root.
pub async fn package_members_follow_the_package_root(store: &dyn Store) {
    let (root_a, root_b) = (id(10), id(20));
    let in_package = |n: u128, root: PinvId| {
        let mut r = record(id(n), 1, json!({}));
        r.package_root = Some(root);
        r
    };
    let set = WriteSet {
        products: [
            in_package(10, root_a),
            in_package(3, root_a),
            in_package(1, root_a),
        ]
        .into_iter()
        .map(|record| ProductWrite {
            record,
            expected_revision: None,
            contributions_unchanged: false,
            changed_attributes: None,
            merged_json: None,
        })
        .collect(),
        ..WriteSet::default()
    };
    commit_ok(store, set, "creating a package").await;
    commit_ok(store, create(record(id(5), 1, json!({}))), "no package").await;
    assert_eq!(
        store.package_members(&root_a).await.expect("members"),
        vec![id(1), id(3), id(10)]
    );

    let mut moved = in_package(3, root_b);
    moved.revision = 2;
    commit_ok(store, update(moved, 1), "moving to another root").await;
    assert_eq!(
        store.package_members(&root_a).await.expect("members"),
        vec![id(1), id(10)]
    );
    assert_eq!(
        store.package_members(&root_b).await.expect("members"),
        vec![id(3)]
    );

    let mut unchanged = in_package(1, root_a);
    unchanged.revision = 2;
    commit_ok(store, update(unchanged, 1), "rewriting with the same root").await;
    let mut dropped = record(id(10), 2, json!({}));
    dropped.package_root = None;
    commit_ok(store, update(dropped, 1), "leaving the package").await;
    assert_eq!(
        store.package_members(&root_a).await.expect("members"),
        vec![id(1)]
    );
    assert!(store
        .package_members(&id(5))
        .await
        .expect("members")
        .is_empty());
}

/// `list` filters (top level, dotted paths into arrays, numbers, booleans), counts the
/// total, pages with offset/limit, and orders by PINV id.
pub async fn list_filters_pages_and_orders_by_id(store: &dyn Store) {
    let doc = |n: u128, status: &str, spec: &str, circuit: &str, qty: u64, bundle: bool| {
        record(
            id(n),
            1,
            json!({
                "status": status,
                "quantity": qty,
                "isBundle": bundle,
                "productSpecification": {"id": spec},
                "externalReference": [
                    {"externalIdentifierType": "Other", "id": "noise"},
                    {"externalIdentifierType": "CircuitID", "id": circuit}
                ],
                "relatedParty": [{"partyOrPartyRole": {"name": format!("party-{n}")}}]
            }),
        )
    };
    // Created out of id order, so insertion order cannot pass for id order.
    let docs = [
        doc(4, "active", "PR-ADI-EMBEDDED-BASE", "C4", 1, true),
        doc(2, "active", "PR-PORT-1", "C2", 2, false),
        doc(5, "terminated", "PR-ADI-EMBEDDED-BASE", "C5", 1, false),
        doc(1, "active", "PR-ADI-EMBEDDED-BASE", "C1", 2, false),
        doc(3, "active", "PR-ADI-EMBEDDED-BASE", "C3", 1, true),
    ];
    for d in docs {
        commit_ok(store, create(d), "creating").await;
    }

    let ids_of = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|d| d["id"].as_str().unwrap_or("<no id>").to_owned())
            .collect()
    };
    let ids = |ns: &[u128]| -> Vec<String> { ns.iter().map(|n| id(*n).to_string()).collect() };
    let query = |filters: &[(&str, &str)], offset: u64, limit: u64| ListQuery {
        offset,
        limit,
        ..ListQuery::equalities(filters.iter().copied())
    };

    let all = store.list(&query(&[], 0, 100)).await.expect("list");
    assert_eq!(all.total, 5);
    assert_eq!(ids_of(&all.items), ids(&[1, 2, 3, 4, 5]), "id order");

    let active_adi = store
        .list(&query(
            &[
                ("status", "active"),
                ("productSpecification.id", "PR-ADI-EMBEDDED-BASE"),
            ],
            0,
            100,
        ))
        .await
        .expect("list");
    assert_eq!(active_adi.total, 3);
    assert_eq!(ids_of(&active_adi.items), ids(&[1, 3, 4]));

    let by_circuit = store
        .list(&query(&[("externalReference.id", "C3")], 0, 100))
        .await
        .expect("list");
    assert_eq!(ids_of(&by_circuit.items), ids(&[3]));
    let by_party = store
        .list(&query(
            &[("relatedParty.partyOrPartyRole.name", "party-5")],
            0,
            100,
        ))
        .await
        .expect("list");
    assert_eq!(ids_of(&by_party.items), ids(&[5]));

    let typed = store
        .list(&query(&[("quantity", "1"), ("isBundle", "true")], 0, 100))
        .await
        .expect("list");
    assert_eq!(
        ids_of(&typed.items),
        ids(&[3, 4]),
        "number and boolean leaves"
    );

    let page = store
        .list(&query(&[("status", "active")], 1, 2))
        .await
        .expect("list");
    assert_eq!(page.total, 4, "total counts every match, not the page");
    assert_eq!(ids_of(&page.items), ids(&[2, 3]));
    let past_end = store
        .list(&query(&[("status", "active")], 10, 2))
        .await
        .expect("list");
    assert_eq!((past_end.total, past_end.items.len()), (4, 0));

    let none = store
        .list(&query(&[("status", "nothing")], 0, 100))
        .await
        .expect("list");
    assert_eq!((none.total, none.items.len()), (0, 0));
}

/// History is kept per product, oldest first.
pub async fn history_is_oldest_first_per_product(store: &dyn Store) {
    let mut set = create(record(id(1), 1, json!({"v": 1})));
    set.history = vec![history_entry(id(1), 1)];
    commit_ok(store, set, "rev 1").await;
    let mut set = create(record(id(2), 1, json!({"v": 1})));
    set.history = vec![history_entry(id(2), 1)];
    commit_ok(store, set, "other product").await;
    for revision in 2..=11 {
        let mut set = update(
            record(id(1), revision, json!({"v": revision})),
            revision - 1,
        );
        set.history = vec![history_entry(id(1), revision)];
        commit_ok(store, set, "next revision").await;
    }

    let history = store.history(&id(1)).await.expect("history");
    let revisions: Vec<u64> = history.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, (1..=11).collect::<Vec<_>>(), "oldest first");
    assert_eq!(
        history[4],
        history_entry(id(1), 5),
        "entries read back intact"
    );
    assert_eq!(store.history(&id(2)).await.expect("history").len(), 1);
    assert!(store.history(&id(3)).await.expect("history").is_empty());
}

/// A plan leaves the patch of a product's first entry `Null`: it stands for the creation of
/// the document written beside it (`HistoryEntry::patch`). Read back, the entry carries that
/// patch, numbers and key order included.
pub async fn a_creation_entry_written_without_its_patch_reads_back_with_it(store: &dyn Store) {
    let merged = serde_json::from_str::<Value>(
        r#"{"zeta": 1, "a/b": {"y": 2, "x": 1}, "big": 123456789012345678901234567890, "s": "t"}"#,
    )
    .expect("test document parses");
    let product = record(id(1), 1, merged);
    let merged = product.merged.clone();
    let mut set = create(product);
    let mut entry = history_entry(id(1), 1);
    entry.patch = Value::Null;
    set.history = vec![entry.clone()];
    commit_ok(store, set, "a creation").await;
    let history = store.history(&id(1)).await.expect("history");
    entry.patch = crate::core::record::patch_between(None, &merged);
    assert_eq!(history, vec![entry.clone()]);
    assert_eq!(
        serde_json::to_string(&history[0].patch).expect("serialises"),
        serde_json::to_string(&entry.patch).expect("serialises"),
        "the patch keeps the document's key order and numbers"
    );
}

/// A POST's writes carry the merged document's JSON (`ProductWrite::merged_json`), which a
/// store may write instead of the tree: either way the same document reads back.
pub async fn a_product_written_with_its_json_made_reads_back_as_that_document(store: &dyn Store) {
    let document = |name: &str| {
        serde_json::from_str::<Value>(&format!(
            r#"{{"name": "{name}", "big": 123456789012345678901234567890, "z": [1, {{"b": 2, "a": 1}}]}}"#
        ))
        .expect("test document parses")
    };
    let with_json = |mut set: WriteSet| {
        let write = &mut set.products[0];
        write.merged_json = Some(crate::core::record::DocumentJson::of(&write.record.merged));
        set
    };
    let first = record(id(1), 1, document("first"));
    let mut set = with_json(create(first.clone()));
    let mut entry = history_entry(id(1), 1);
    entry.patch = Value::Null;
    set.history = vec![entry];
    commit_ok(store, set, "a creation with its JSON").await;
    let second = record(id(1), 2, document("second"));
    commit_ok(
        store,
        with_json(update(second.clone(), 1)),
        "an update with its JSON",
    )
    .await;
    let stored = store.get_products(&[id(1)]).await.expect("read");
    let stored = stored.first().expect("stored");
    assert_eq!(stored.merged, second.merged);
    assert_eq!(
        serde_json::to_string(&stored.merged).expect("serialises"),
        serde_json::to_string(&second.merged).expect("serialises"),
        "key order and numbers as written"
    );
    let history = store.history(&id(1)).await.expect("history");
    assert_eq!(
        history[0].patch,
        crate::core::record::patch_between(None, &first.merged)
    );
}

/// Numbers no `f64` or `u64` holds exactly. A store must give them back as written
/// (not as `1.2345678901234568e+29`), in records, contributions and history patches.
pub const EXACT_NUMBERS: &str = r#"{"big": 123456789012345678901234567890, "u64plus": 18446744073709551616,
  "i64minus": -9223372036854775809, "tiny": 1e-400, "negzero": -0, "decimal": 0.10000000000000000001,
  "list": [1.0, 1e2, 2.50]}"#;

/// Numbers read back exactly as written: the merged document, a contribution, a history
/// patch; and a list filter finds a product by a number's exact text.
pub async fn numbers_read_back_exactly_as_written(store: &dyn Store) {
    let numbers: Value = serde_json::from_str(EXACT_NUMBERS).expect("test JSON");
    let text = |v: &Value| serde_json::to_string(v).expect("a Value serialises");
    let mut rec = record(id(1), 1, numbers.clone());
    rec.contributions = vec![crate::core::record::Contribution {
        source: source("billing"),
        event_id: event_id("ev-1"),
        time: Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default(),
        received_at: Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default(),
        value: numbers.clone().into(),
    }];
    let mut set = create(rec);
    let mut entry = history_entry(id(1), 1);
    entry.patch = json!([{"op": "add", "path": "/n", "value": numbers["big"].clone()}]);
    set.history = vec![entry];
    commit_ok(store, set, "a product with big numbers").await;

    let read = get_one(store, id(1)).await.expect("the product exists");
    for (what, got) in [
        ("merged", &read.merged),
        ("contribution", &read.contributions[0].value),
    ] {
        for (name, expected) in numbers.as_object().expect("an object") {
            assert_eq!(
                text(&got[name]),
                text(expected),
                "{what}.{name} must read back as written"
            );
        }
    }
    assert_eq!(text(&read.merged["big"]), "123456789012345678901234567890");
    // The text GET /products/{id} sends is the document as read, numbers as written.
    let merged_text = store
        .get_merged_json(&id(1))
        .await
        .expect("get_merged_json")
        .expect("the product exists");
    assert_eq!(merged_text.get(), text(&read.merged));
    assert!(store
        .get_merged_json(&id(2))
        .await
        .expect("get_merged_json of a missing product")
        .is_none());
    // serde_json writes an exponent's sign (`1e2` as `1e+2`): the same number, exactly.
    assert_eq!(text(&read.merged["list"]), "[1.0,1e+2,2.50]");
    let history = store.history(&id(1)).await.expect("history");
    assert_eq!(
        text(&history[0].patch[0]["value"]),
        "123456789012345678901234567890"
    );
    let found = store
        .list(&ListQuery::equalities([(
            "big",
            "123456789012345678901234567890",
        )]))
        .await
        .expect("list");
    assert_eq!(
        found.total, 1,
        "a filter on the exact number finds the product"
    );
}

/// Paging through `scan` visits every product exactly once, in id order.
pub async fn scan_pages_cover_every_product_once(store: &dyn Store) {
    // Ids spread over the whole UUID space, including its ends, in scrambled order.
    let mut expected = BTreeSet::new();
    for i in 0..23u128 {
        let n = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) ^ (i << 100);
        expected.insert(id(n));
    }
    expected.insert(id(0));
    expected.insert(id(u128::MAX));
    for pid in &expected {
        commit_ok(store, create(record(*pid, 1, json!({}))), "creating").await;
    }

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan(after, 4).await.expect("scan");
        assert!(page.len() <= 4, "scan returned more than its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|r| r.id));
    }
    let sorted: Vec<PinvId> = expected.iter().copied().collect();
    assert_eq!(seen, sorted, "every product once, in id order");
    assert!(store.scan(None, 0).await.expect("scan").is_empty());
    assert!(store
        .scan(Some(id(u128::MAX)), 10)
        .await
        .expect("scan")
        .is_empty());
}

/// 20 concurrent first writes claiming one key for 20 different new products: exactly one
/// wins; the others are conflicts and leave no product behind.
pub async fn racing_key_claims_have_exactly_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (1..=20u128)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut set = create(record(id(n), 1, json!({})));
                set.claim_keys = vec![(key("circuit"), id(n)), (MatchKey::pinv(&id(n)), id(n))];
                (n, store.commit(set).await)
            })
        })
        .collect();

    let mut winners = Vec::new();
    for task in tasks {
        let (n, outcome) = task.await.expect("task panicked");
        match outcome {
            Ok(()) => winners.push(n),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("racing claim {n}: expected success or Conflict, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins, got {winners:?}");
    let winner = id(winners[0]);
    let owners = store
        .resolve_keys(&[key("circuit")])
        .await
        .expect("resolve_keys");
    assert_eq!(owners, BTreeMap::from([(key("circuit"), winner)]));
    let ids: Vec<PinvId> = (1..=20).map(id).collect();
    let stored = store.get_products(&ids).await.expect("get_products");
    assert_eq!(
        stored.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![winner],
        "losers must leave no product"
    );
}

/// 10 tasks each add 1 to a counter 5 times with read / compare-and-set / retry: the
/// product ends at revision 51 with counter 50.
pub async fn concurrent_increments_lose_no_update(store: Arc<dyn Store>) {
    const TASKS: u64 = 10;
    const EACH: u64 = 5;
    commit_ok(
        &*store,
        create(record(id(1), 1, json!({"counter": 0}))),
        "creating the counter",
    )
    .await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..EACH {
                    loop {
                        let current = get_one(&*store, id(1)).await.expect("counter exists");
                        let counter = current.merged["counter"].as_u64().expect("a number");
                        let next =
                            record(id(1), current.revision + 1, json!({"counter": counter + 1}));
                        match store.commit(update(next, current.revision)).await {
                            Ok(()) => break,
                            Err(StoreError::Conflict(_)) => tokio::task::yield_now().await,
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task panicked");
    }

    let last = get_one(&*store, id(1)).await.expect("counter exists");
    assert_eq!(
        last.revision,
        1 + TASKS * EACH,
        "one revision per increment"
    );
    assert_eq!(
        last.merged["counter"],
        json!(TASKS * EACH),
        "no increment may be lost"
    );
}

/// A deleted product is gone from every read, its keys and its package-root entry are
/// freed (another product may claim the keys), and its history keeps every entry, the
/// deletion last.
pub async fn deleting_a_product_frees_its_keys_and_keeps_its_history(store: &dyn Store) {
    let mut rec = record(id(1), 1, json!({"name": "doomed", "status": "active"}));
    rec.match_keys = vec![key("a"), key("b")];
    rec.package_root = Some(id(9));
    let mut set = create(rec);
    set.claim_keys = vec![(key("a"), id(1)), (key("b"), id(1))];
    set.history = vec![history_entry(id(1), 1)];
    commit_ok(store, set, "creating").await;
    let survivor = record(id(2), 1, json!({"name": "stays"}));
    commit_ok(store, create(survivor.clone()), "creating another").await;

    let mut last = history_entry(id(1), 2);
    last.deleted = true;
    let set = WriteSet {
        delete_products: vec![ProductDelete {
            id: id(1),
            expected_revision: 1,
            last: json!({}),
        }],
        release_keys: vec![(key("a"), id(1)), (key("b"), id(1))],
        history: vec![last.clone()],
        ..WriteSet::default()
    };
    commit_ok(store, set, "deleting").await;

    assert!(get_one(store, id(1)).await.is_none(), "the product is gone");
    assert_eq!(get_one(store, id(2)).await, Some(survivor));
    let owners = store
        .resolve_keys(&[key("a"), key("b")])
        .await
        .expect("keys");
    assert!(owners.is_empty(), "the keys are free: {owners:?}");
    assert!(store
        .package_members(&id(9))
        .await
        .expect("members")
        .is_empty());
    let all = ListQuery {
        limit: 10,
        ..Default::default()
    };
    let page = store.list(&all).await.expect("list");
    assert_eq!(page.total, 1);
    assert_eq!(store.count().await.expect("count"), 1);
    // `status` is an indexed path: the deletion took the index entry with it.
    let active = ListQuery {
        limit: 10,
        ..ListQuery::equalities([("status", "active")])
    };
    assert_eq!(store.list(&active).await.expect("list").total, 0);
    let scanned = store.scan(None, 10).await.expect("scan");
    assert_eq!(scanned.iter().map(|r| r.id).collect::<Vec<_>>(), [id(2)]);
    let history = store.history(&id(1)).await.expect("history");
    assert_eq!(history, vec![history_entry(id(1), 1), last]);

    let mut reborn = record(id(3), 1, json!({}));
    reborn.match_keys = vec![key("a")];
    let mut set = create(reborn);
    set.claim_keys = vec![(key("a"), id(3))];
    commit_ok(store, set, "claiming a freed key").await;
    let owners = store.resolve_keys(&[key("a")]).await.expect("keys");
    assert_eq!(owners, BTreeMap::from([(key("a"), id(3))]));
}

/// Deleting a product that moved on, or that is not stored, is a conflict that writes
/// nothing of its set.
pub async fn deleting_at_a_stale_revision_conflicts_and_writes_nothing(store: &dyn Store) {
    let rec = record(id(1), 2, json!({"name": "v2"}));
    let mut set = create(rec.clone());
    set.claim_keys = vec![(key("a"), id(1))];
    commit_ok(store, set, "creating").await;
    for (target, expected) in [(id(1), 1), (id(7), 1)] {
        let set = WriteSet {
            delete_products: vec![ProductDelete {
                id: target,
                expected_revision: expected,
                last: json!({}),
            }],
            release_keys: vec![(key("a"), id(1))],
            history: vec![history_entry(target, expected + 1)],
            ..WriteSet::default()
        };
        commit_conflict(store, set, "deleting at a stale revision").await;
    }
    assert_eq!(get_one(store, id(1)).await, Some(rec));
    let owners = store.resolve_keys(&[key("a")]).await.expect("keys");
    assert_eq!(owners, BTreeMap::from([(key("a"), id(1))]));
    assert!(store.history(&id(1)).await.expect("history").is_empty());
}

/// Releasing frees a key of the product named with it; another product's key, or a key
/// nobody owns, is left alone. A set may free a key and claim it for another product.
pub async fn releasing_a_key_frees_only_the_named_owners_key(store: &dyn Store) {
    let mut set = create(record(id(1), 1, json!({})));
    set.products
        .extend(create(record(id(2), 1, json!({}))).products);
    set.claim_keys = vec![(key("a"), id(1)), (key("b"), id(2)), (key("c"), id(1))];
    commit_ok(store, set, "creating").await;

    let set = WriteSet {
        release_keys: vec![(key("a"), id(1)), (key("b"), id(1)), (key("none"), id(1))],
        ..WriteSet::default()
    };
    commit_ok(store, set, "releasing").await;
    let owners = store
        .resolve_keys(&[key("a"), key("b"), key("c"), key("none")])
        .await
        .expect("keys");
    assert_eq!(
        owners,
        BTreeMap::from([(key("b"), id(2)), (key("c"), id(1))])
    );

    let set = WriteSet {
        release_keys: vec![(key("c"), id(1))],
        claim_keys: vec![(key("c"), id(2))],
        ..WriteSet::default()
    };
    commit_ok(store, set, "moving a key").await;
    let owners = store.resolve_keys(&[key("c")]).await.expect("keys");
    assert_eq!(owners, BTreeMap::from([(key("c"), id(2))]));
}

/// Operators, sort and paging answer the same on every store, on indexed paths (`status`,
/// `startDate`, `relatedParty.id` are indexed by default) and others, and follow updates:
/// a changed value is found under its new value only.
pub async fn list_query_language_follows_updates(store: &dyn Store) {
    let doc = |status: &str, start: &str, n: i64, party: &str| json!({"status": status, "startDate": start, "n": n, "relatedParty": [{"id": party}, {"id": "shared"}]});
    let docs = [
        doc("active", "2024-01-01T00:00:00Z", 3, "a"),
        doc("suspended", "2024-02-01T00:00:00+01:00", 1, "b"),
        doc("active", "2023-06-01", 2, "c"),
    ];
    for (n, d) in (1..).zip(docs) {
        commit_ok(store, create(record(id(n), 1, d)), "creating").await;
    }
    let cases: &[(&str, &[u128])] = &[
        ("status=active", &[1, 3]),
        ("status!=active", &[2]),
        ("status=active,suspended&startDate.gte=2024-01-01", &[1, 2]),
        ("startDate<2024-01-31T23:00:00Z", &[1, 3]),
        ("startDate<=2024-01-31T23:00:00Z", &[1, 2, 3]),
        ("relatedParty.id=shared&n.gt=1", &[1, 3]),
        ("relatedParty.id=b", &[2]),
        ("n>=2&sort=-n", &[1, 3]),
        ("sort=startDate", &[3, 1, 2]),
        ("sort=-status,n", &[2, 3, 1]),
        ("sort=n&offset=1&limit=1", &[3]),
    ];
    for (query, expected) in cases {
        let (got, _) = listed(store, query).await;
        let want: Vec<PinvId> = expected.iter().map(|n| id(*n)).collect();
        assert_eq!(got, want, "{query}");
    }
    assert_eq!(listed(store, "sort=n&offset=1&limit=1").await.1, 3);

    let changed = doc("terminated", "2025-01-01T00:00:00Z", 9, "z");
    commit_ok(store, update(record(id(1), 2, changed), 1), "updating").await;
    for (query, expected) in [
        ("status=active", vec![id(3)]),
        ("status=terminated", vec![id(1)]),
        ("relatedParty.id=a", vec![]),
        ("relatedParty.id=z", vec![id(1)]),
        ("startDate.gte=2024-12-31", vec![id(1)]),
        ("startDate=2024-01-01", vec![]),
    ] {
        assert_eq!(
            listed(store, query).await.0,
            expected,
            "after the update: {query}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hub subscriptions and the outbox

/// A subscription `id` to a callback nobody listens on.
pub fn subscription(id: &str) -> crate::store::outbox::Subscription {
    crate::store::outbox::Subscription {
        id: id.to_owned(),
        callback: "http://127.0.0.1:9/hook".to_owned(),
        query: String::new(),
        secret: None,
        created: Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default(),
        status: Default::default(),
    }
}

/// A change and its outbox entries are one commit: a refused set leaves no entry.
pub async fn outbox_entries_commit_with_their_change_or_not_at_all(store: &dyn Store) {
    store
        .put_subscription(&subscription("s1"))
        .await
        .expect("subscribe");
    let mut first = create(record(id(1), 1, json!({"status": "active"})));
    first.history = vec![history_entry(id(1), 1)];
    store.commit(first.clone()).await.expect("create");
    let entries = store.outbox("s1", 10).await.expect("outbox");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let event = entries[0].event.to_value();
    assert_eq!(event["eventType"], "ProductCreateEvent");
    assert_eq!(event["event"]["product"]["status"], "active");

    // The same creation again is refused, and so is a stale update: no entry for either.
    assert!(matches!(
        store.commit(first).await,
        Err(StoreError::Conflict(_))
    ));
    let mut stale = update(record(id(1), 2, json!({"status": "suspended"})), 5);
    stale.history = vec![history_entry(id(1), 2)];
    assert!(matches!(
        store.commit(stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.outbox("s1", 10).await.expect("outbox").len(), 1);

    let mut changed = update(record(id(1), 2, json!({"status": "suspended"})), 1);
    let mut entry = history_entry(id(1), 2);
    entry.patch = json!([{"op": "replace", "path": "/status", "value": "suspended"}]);
    changed.history = vec![entry];
    store.commit(changed).await.expect("update");
    let kinds: Vec<Value> = store
        .outbox("s1", 10)
        .await
        .expect("outbox")
        .into_iter()
        .map(|e| e.event.to_value()["eventType"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "ProductCreateEvent",
            "ProductStateChangeEvent",
            "ProductAttributeValueChangeEvent"
        ]
    );
}

/// Delivered entries go, kept ones are replaced, dead ones are counted but not listed,
/// and deleting a subscription drops its entries.
pub async fn outbox_entries_are_settled_and_go_with_their_subscription(store: &dyn Store) {
    use crate::store::outbox::Settlement;
    for s in ["a", "b"] {
        store
            .put_subscription(&subscription(s))
            .await
            .expect("subscribe");
    }
    let mut subs: Vec<String> = store
        .subscriptions()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    subs.sort();
    assert_eq!(subs, ["a", "b"]);
    for n in 1..=3 {
        let mut set = create(record(id(n), 1, json!({})));
        set.history = vec![history_entry(id(n), 1)];
        store.commit(set).await.expect("create");
    }
    let entries = store.outbox("a", 10).await.expect("outbox");
    assert_eq!(entries.len(), 3);
    assert_eq!(store.outbox("a", 2).await.expect("outbox").len(), 2);
    let mut dead = entries[1].clone();
    dead.dead = true;
    dead.attempts = 3;
    store
        .settle(vec![
            Settlement::Delivered(entries[0].key()),
            Settlement::Keep(dead),
        ])
        .await
        .expect("settle");
    let left = store.outbox("a", 10).await.expect("outbox");
    assert_eq!(left, vec![entries[2].clone()]);
    let counts = store.outbox_counts("a").await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (1, 1));

    let status = crate::store::outbox::DeliveryStatus {
        delivered: 1,
        overflowed: 2,
        last_error: Some("boom".to_owned()),
        ..Default::default()
    };
    store
        .set_delivery_status("a", &status)
        .await
        .expect("status");
    let a = store.subscriptions().await.expect("list");
    let a = a.iter().find(|s| s.id == "a").expect("a is kept");
    assert_eq!(a.status, status);

    assert!(store.delete_subscription("a").await.expect("delete"));
    assert!(!store.delete_subscription("a").await.expect("delete again"));
    let counts = store.outbox_counts("a").await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (0, 0));
    assert_eq!(store.outbox("b", 10).await.expect("outbox b").len(), 3);
    // A settlement for an entry of a deleted subscription does not bring it back.
    store
        .settle(vec![Settlement::Keep(entries[2].clone())])
        .await
        .expect("settle");
    assert!(store.outbox("a", 10).await.expect("outbox").is_empty());
}

/// A [`ReadPlan`] with fixed keys: owners of `keys`, waiters of those nobody owns, and the
/// records of every owner and waiter: each step depends on the one before.
struct FixedReads {
    source: Source,
    event_id: EventId,
    keys: Vec<MatchKey>,
}

impl ReadPlan for FixedReads {
    fn event(&self) -> (&Source, &EventId) {
        (&self.source, &self.event_id)
    }

    fn owner_keys(&self) -> Vec<MatchKey> {
        self.keys.clone()
    }

    fn waiter_keys(&self, owners: &BTreeMap<MatchKey, PinvId>) -> Vec<MatchKey> {
        let keys = self.keys.iter().filter(|k| !owners.contains_key(*k));
        keys.cloned().collect()
    }

    fn records(
        &self,
        owners: &BTreeMap<MatchKey, PinvId>,
        waiters: &BTreeMap<MatchKey, Vec<PinvId>>,
    ) -> Vec<PinvId> {
        let ids: BTreeSet<PinvId> = owners
            .values()
            .chain(waiters.values().flatten())
            .copied()
            .collect();
        ids.into_iter().collect()
    }
}

/// `read_for` runs every step of a read plan against the stored state: owners, then the
/// waiters of the keys nobody owns, then the records both name; a remembered event stops
/// it after the first step.
pub async fn read_for_follows_each_step_of_the_plan(store: &dyn Store) {
    let mut set = create(record(id(1), 1, json!({"name": "owner"})));
    set.claim_keys = vec![(key("owned"), id(1))];
    set.add_waiters = vec![(key("free"), id(2))];
    set.processed = Some(processed("seen", vec![id(1)]));
    commit_ok(store, set, "owner, waiter and event").await;
    commit_ok(
        store,
        create(record(id(2), 1, json!({"name": "waiter"}))),
        "waiter",
    )
    .await;
    commit_ok(store, create(record(id(3), 1, json!({}))), "bystander").await;

    let plan = |event: &str| {
        Arc::new(FixedReads {
            source: source("billing"),
            event_id: event_id(event),
            keys: vec![key("free"), key("owned"), key("unknown")],
        })
    };
    let read = store.read_for(plan("new")).await.expect("read_for");
    assert_eq!(read.processed, None);
    assert_eq!(
        read.snapshot.owners,
        BTreeMap::from([(key("owned"), id(1))])
    );
    assert_eq!(
        read.snapshot.waiters,
        BTreeMap::from([(key("free"), vec![id(2)])])
    );
    let names: Vec<(PinvId, &Value)> = read
        .snapshot
        .records
        .iter()
        .map(|(id, r)| (*id, &r.merged["name"]))
        .collect();
    assert_eq!(
        names,
        vec![(id(1), &json!("owner")), (id(2), &json!("waiter"))]
    );

    let read = store.read_for(plan("seen")).await.expect("read_for");
    assert_eq!(read.processed, Some(processed("seen", vec![id(1)])));
    assert!(read.snapshot.owners.is_empty() && read.snapshot.records.is_empty());
}
