//! A commit whose answer never came (`StoreError::OutcomeUnknown`): the write path reads the
//! event back, and answers "created" only when it finds it stored; otherwise the outcome
//! stays unknown and is said to be so, never "nothing was written".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pinv::app::service::{IngestError, PostOptions, PostStatus, Service};
use pinv::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use pinv::core::schema::Schemas;
use pinv::core::{EventId, MatchKey, PinvId, Source};
use pinv::store::memory::MemoryStore;
use pinv::store::{ListPage, ListQuery, Store, StoreError, StoreResult};
use serde_json::Value;

/// A memory store whose commits lose their answer: the set is applied (or not, per
/// `applies`) and the caller hears `OutcomeUnknown` either way.
struct LostAnswer {
    inner: MemoryStore,
    applies: AtomicBool,
}

#[async_trait]
impl Store for LostAnswer {
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        self.inner.resolve_keys(keys).await
    }
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        self.inner.get_products(ids).await
    }
    async fn get_processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>> {
        self.inner.get_processed(source, event_id).await
    }
    async fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        self.inner.waiters(keys).await
    }
    async fn package_members(&self, root: &PinvId) -> StoreResult<Vec<PinvId>> {
        self.inner.package_members(root).await
    }
    async fn commit(&self, set: WriteSet) -> StoreResult<()> {
        if self.applies.load(Ordering::SeqCst) {
            self.inner.commit(set).await?;
        }
        Err(StoreError::outcome_unknown(
            "the answer to the commit was lost",
        ))
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        self.inner.list(query).await
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

fn service(applies: bool) -> (Service, Arc<LostAnswer>) {
    let store = Arc::new(LostAnswer {
        inner: MemoryStore::new(),
        applies: AtomicBool::new(applies),
    });
    let service = Service {
        store: store.clone(),
        rules: Arc::new(pinv::testing::rules::shipped_rules()),
        schemas: Arc::new(Schemas::compile().unwrap()),
    };
    (service, store)
}

fn seed() -> Value {
    serde_json::from_str(include_str!("../docs/examples/seed-adi-request.json")).unwrap()
}

#[tokio::test]
async fn a_lost_answer_to_a_commit_that_landed_is_created() {
    let (service, store) = service(true);
    let outcome = service
        .post(seed(), PostOptions::default(), &|_| true)
        .await
        .expect("the event is found stored, so the POST succeeded");
    assert_eq!(outcome.status, PostStatus::Created);
    assert_eq!(store.inner.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_lost_answer_to_a_commit_that_did_not_land_stays_unknown() {
    let (service, store) = service(false);
    let err = service
        .post(seed(), PostOptions::default(), &|_| true)
        .await
        .expect_err("nothing is found stored, so the outcome is unknown");
    assert!(
        matches!(err, IngestError::Store(StoreError::OutcomeUnknown(_))),
        "{err:?}"
    );
    assert_eq!(store.inner.count().await.unwrap(), 0);
}
