//! Batch re-merge over a real store: rule changes, dry runs, live writes during a run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pinv::app::generate;
use pinv::app::remerge::{run, RemergeOptions};
use pinv::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use pinv::core::{EventId, MatchKey, PinvId, Source};
use pinv::store::memory::MemoryStore;
use pinv::store::{ListPage, ListQuery, Store, StoreResult};

use pinv::testing::rules::{billing_names_first, shipped_rules};

const BILLING_NAME: &str = "AT&T Dedicated Internet (ADI)";
const PROVISIONING_NAME: &str = "ADI circuit";

/// `both` products with a billing and a provisioning contribution, and `billing_only`
/// products with only billing's, all merged under the shipped rules.
async fn seeded(both: u64, billing_only: u64) -> Arc<dyn Store> {
    let rules = Arc::new(shipped_rules());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    generate::generate(Arc::clone(&store), Arc::clone(&rules), 0, both, 7, |_| {})
        .await
        .unwrap();
    for n in both..both + billing_only {
        let mut set = WriteSet::default();
        generate::add_new_product(
            &mut set,
            generate::billing_only_product(n, PinvId::new_v4(), &rules),
        );
        store.commit(set).await.unwrap();
    }
    store
}

async fn all(store: &dyn Store) -> Vec<ProductRecord> {
    store.scan(None, 10_000).await.unwrap()
}

fn options(dry_run: bool) -> RemergeOptions {
    RemergeOptions {
        dry_run,
        filters: vec![],
        batch: 4,
    }
}

#[tokio::test]
async fn a_precedence_swap_rewrites_exactly_the_affected_products_with_history() {
    let store = seeded(10, 3).await;
    let before = all(&*store).await;
    assert!(before
        .iter()
        .filter(|r| r.contributions.len() == 2)
        .all(|r| r.merged["name"] == PROVISIONING_NAME));

    let mut out = Vec::new();
    let summary = run(
        Arc::clone(&store),
        Arc::new(billing_names_first()),
        &options(false),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            summary.scanned,
            summary.changed,
            summary.unchanged,
            summary.failed
        ),
        (13, 10, 3, 0)
    );
    assert_eq!(summary.fields, BTreeMap::from([("name".to_owned(), 10)]));

    for (old, new) in before.iter().zip(all(&*store).await) {
        assert_eq!(old.id, new.id);
        assert_eq!(new.merged["name"], BILLING_NAME);
        if old.contributions.len() == 2 {
            assert_eq!(new.revision, old.revision + 1);
            let history = store.history(&new.id).await.unwrap();
            let last = history.last().unwrap();
            assert_eq!(last.event.source, "pinv-remerge");
            assert_eq!(last.event.id, summary.run_id);
            assert_eq!(last.revision, new.revision);
            assert_eq!(last.patch[0]["path"], "/name");
        } else {
            assert_eq!(new, *old, "unaffected products are not written");
        }
    }

    // Running again finds nothing left to do.
    let again = run(
        Arc::clone(&store),
        Arc::new(billing_names_first()),
        &options(false),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!((again.changed, again.unchanged), (0, 13));
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_reports_the_same_counts() {
    let store = seeded(6, 2).await;
    let before = all(&*store).await;
    let mut out = Vec::new();
    let dry = run(
        Arc::clone(&store),
        Arc::new(billing_names_first()),
        &options(true),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(all(&*store).await, before, "a dry run changes nothing");
    let report = String::from_utf8(out).unwrap();
    assert_eq!(report.lines().count(), 6, "{report}");
    assert!(
        report
            .lines()
            .all(|l| l.ends_with("\t1 patch operations\tname")),
        "{report}"
    );

    let real = run(
        Arc::clone(&store),
        Arc::new(billing_names_first()),
        &options(false),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.scanned, dry.changed, dry.unchanged),
        (real.scanned, real.changed, real.unchanged)
    );
    assert_eq!(dry.fields, real.fields);
}

#[tokio::test]
async fn filters_limit_the_run_to_matching_products() {
    let store = seeded(5, 0).await;
    let target = all(&*store).await[2].clone();
    let circuit = target.merged["externalReference"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let opts = RemergeOptions {
        filters: vec![("externalReference.id".into(), circuit)],
        ..options(false)
    };
    let summary = run(
        Arc::clone(&store),
        Arc::new(billing_names_first()),
        &opts,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!((summary.scanned, summary.changed), (1, 1));
    for r in all(&*store).await {
        let expected = if r.id == target.id {
            BILLING_NAME
        } else {
            PROVISIONING_NAME
        };
        assert_eq!(r.merged["name"], expected);
    }
}

/// A store that lets a "live POST" change one product just before the re-merge's first
/// write, i.e. after the re-merge read it.
struct RacingStore {
    inner: Arc<dyn Store>,
    victim: PinvId,
    raced: AtomicBool,
}

#[async_trait]
impl Store for RacingStore {
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        self.inner.resolve_keys(keys).await
    }
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        self.inner.get_products(ids).await
    }
    async fn get_processed(&self, s: &Source, e: &EventId) -> StoreResult<Option<ProcessedEvent>> {
        self.inner.get_processed(s, e).await
    }
    async fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        self.inner.waiters(keys).await
    }
    async fn package_members(&self, root: &PinvId) -> StoreResult<Vec<PinvId>> {
        self.inner.package_members(root).await
    }
    async fn commit(&self, set: WriteSet) -> StoreResult<()> {
        if !self.raced.swap(true, Ordering::SeqCst) {
            // The live write: billing reports a new status for the victim.
            let mut record = self
                .inner
                .get_products(&[self.victim])
                .await?
                .pop()
                .unwrap();
            let billing = record
                .contributions
                .iter_mut()
                .find(|c| c.source.as_str() == "billing")
                .unwrap();
            std::sync::Arc::make_mut(&mut billing.value)["status"] = "suspended".into();
            billing.time += chrono::Duration::days(30);
            record.merged["status"] = "suspended".into();
            let expected = record.revision;
            record.revision += 1;
            self.inner
                .commit(WriteSet {
                    products: vec![pinv::core::record::ProductWrite {
                        record,
                        expected_revision: Some(expected),
                        contributions_unchanged: false,
                        changed_attributes: None,
                        merged_json: None,
                    }],
                    ..Default::default()
                })
                .await?;
        }
        self.inner.commit(set).await
    }
    async fn list(&self, q: &ListQuery) -> StoreResult<ListPage> {
        self.inner.list(q).await
    }
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        self.inner.history(id).await
    }
    async fn scan(&self, after: Option<PinvId>, limit: usize) -> StoreResult<Vec<ProductRecord>> {
        self.inner.scan(after, limit).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_live_write_during_the_run_is_not_lost() {
    let inner = seeded(4, 0).await;
    let victim = all(&*inner).await[0].id;
    let store: Arc<dyn Store> = Arc::new(RacingStore {
        inner: Arc::clone(&inner),
        victim,
        raced: AtomicBool::new(false),
    });
    let summary = run(
        store,
        Arc::new(billing_names_first()),
        &options(false),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert!(summary.conflicts_retried >= 1, "{summary:?}");
    assert_eq!((summary.changed, summary.failed), (4, 0));
    let record = inner.get_products(&[victim]).await.unwrap().pop().unwrap();
    assert_eq!(
        record.merged["status"], "suspended",
        "the live write survived"
    );
    assert_eq!(
        record.merged["name"], BILLING_NAME,
        "and the new rules were applied on top"
    );
    assert_eq!(record.revision, 3);
}

#[tokio::test]
async fn forged_external_identifiers_stored_in_a_contribution_are_dropped_by_a_remerge() {
    let rules = Arc::new(shipped_rules());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut record = generate::billing_only_product(0, PinvId::new_v4(), &rules);
    // Stored before POSTs refused the field: a claim on provisioning's id, merged in.
    let forged =
        serde_json::json!({"owner": "provisioning", "externalIdentifierType": "id", "id": "P-9"});
    std::sync::Arc::make_mut(&mut record.contributions[0].value)["externalIdentifier"] =
        serde_json::json!([forged.clone()]);
    let mut merged_with_forgery = record.merged["externalIdentifier"].clone();
    merged_with_forgery
        .as_array_mut()
        .unwrap()
        .push(forged.clone());
    record.merged["externalIdentifier"] = merged_with_forgery;
    let id = record.id;
    let mut set = WriteSet::default();
    generate::add_new_product(&mut set, record);
    store.commit(set).await.unwrap();

    let summary = run(Arc::clone(&store), rules, &options(false), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((summary.changed, summary.unchanged), (1, 0));
    let after = store.get_products(&[id]).await.unwrap().remove(0);
    let crosswalk = after.merged["externalIdentifier"].as_array().unwrap();
    assert!(!crosswalk.contains(&forged), "{crosswalk:?}");
    assert!(
        crosswalk.iter().all(|e| e["owner"] == "billing"),
        "{crosswalk:?}"
    );
}

#[tokio::test]
async fn a_remerge_publishes_one_event_per_changed_product() {
    let store = seeded(10, 3).await;
    let hub = pinv::store::outbox::Subscription {
        id: "remerge-hub".to_owned(),
        callback: "http://127.0.0.1:9/hook".to_owned(),
        query: String::new(),
        secret: None,
        created: chrono::Utc::now(),
        status: Default::default(),
    };
    store.put_subscription(&hub).await.unwrap();
    let summary = run(
        Arc::clone(&store),
        Arc::new(billing_names_first()),
        &options(false),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.changed, 10);
    let events = store.outbox(&hub.id, 100).await.unwrap();
    assert_eq!(events.len(), 10);
    let products: std::collections::BTreeSet<PinvId> = events.iter().map(|e| e.product).collect();
    assert_eq!(products.len(), 10);
    for e in &events {
        let event = e.event.to_value();
        assert_eq!(event["eventType"], "ProductAttributeValueChangeEvent");
        assert_eq!(event["fieldPath"], "name");
        assert_eq!(event["correlationId"], summary.run_id.as_str());
        assert_eq!(event["event"]["product"]["name"], BILLING_NAME);
    }
}
