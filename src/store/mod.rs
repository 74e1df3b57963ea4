//! Where products live. One trait, three implementations (embedded, memory, MongoDB),
//! one conformance suite ([`conformance`]) that every implementation must pass.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use crate::core::{EventId, MatchKey, PinvId, Source};

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod embedded;
pub mod memory;
pub mod mongo;
mod plan;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A guard of a [`WriteSet`] failed (another writer got there first). The caller
    /// re-reads and tries again; nothing was written.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// The store cannot be reached or timed out. Nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A commit was sent but no answer came back (a timeout, a dropped connection, an
    /// unreadable reply): the write set may be stored whole or not at all. Only
    /// [`Store::commit`] returns it; a write set that carries a processed event tells by
    /// [`Store::get_processed`] once the store answers again.
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Anything else the store reported.
    #[error("store error: {0}")]
    Other(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A `GET /products` query: attribute equality filters over the merged document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `(dotted path, value)` pairs; all must hold. Arrays are transparent in paths.
    pub filters: Vec<(String, String)>,
    /// How many matching documents to skip.
    pub offset: u64,
    /// At most this many documents.
    pub limit: u64,
}

/// One page of `GET /products`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// Matching merged documents, in PINV id order, after offset and limit.
    pub items: Vec<Value>,
    /// How many documents match in all.
    pub total: u64,
}

/// A place to keep products. Every method is all-or-nothing.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The owner of each key that has one; keys nobody owns are absent from the map.
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>>;

    /// The products with these ids; ids not stored are skipped.
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>>;

    /// The remembered event (source, event id), if any.
    async fn get_processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>>;

    /// For each key, the products waiting for it (sorted); keys nobody waits for are absent.
    async fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>>;

    /// Every product whose package root is `root` (the root itself included if it records
    /// itself), sorted.
    async fn package_members(&self, root: &PinvId) -> StoreResult<Vec<PinvId>>;

    /// Applies a write set atomically; [`StoreError::Conflict`] when any guard fails.
    async fn commit(&self, set: WriteSet) -> StoreResult<()>;

    /// Lists merged documents matching the query.
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage>;

    /// The history of one product, oldest first.
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>>;

    /// Up to `limit` products with ids greater than `after`, in id order (for batch re-merge).
    async fn scan(&self, after: Option<PinvId>, limit: usize) -> StoreResult<Vec<ProductRecord>>;

    /// How many products are stored.
    async fn count(&self) -> StoreResult<u64> {
        let all = ListQuery {
            limit: 0,
            ..Default::default()
        };
        Ok(self.list(&all).await?.total)
    }

    /// Checks that the store answers.
    async fn ping(&self) -> StoreResult<()>;
}
