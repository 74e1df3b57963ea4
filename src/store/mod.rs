//! Where products live. One trait, three implementations (embedded, memory, MongoDB),
//! one conformance suite (`conformance`, built for tests) that every implementation must pass.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::core::read_plan::{ReadPlan, ReadResult};
use crate::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, ScannedProduct, WriteSet};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::outbox::{DeliveryStatus, OutboxCounts, OutboxEntry, Settlement, Subscription};

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod embedded;
mod embedded_index;
mod embedded_outbox;
pub mod memory;
pub mod mongo;
pub mod outbox;
mod plan;
mod reads;

/// A product as [`Store::scan_for_remerge`] read it: decoded, or still the bytes a store
/// keeps, with the function that decodes them.
///
/// Handing bytes over lets a batch re-merge decode each product on the thread that merges
/// it. A scan is then only the reading, which runs beside the merging of the batch before;
/// a scan that decoded too was the slower of the two stages, and the merge waited on it.
pub struct Scanned(Stage);

enum Stage {
    Decoded(ScannedProduct),
    Stored {
        id: PinvId,
        row: Vec<u8>,
        apart: Option<Vec<u8>>,
        decode: DecodeScanned,
    },
}

/// Decodes a product's stored row (and the bytes kept apart from it, if any).
pub type DecodeScanned = fn(&[u8], Option<&[u8]>) -> StoreResult<ScannedProduct>;

impl Scanned {
    /// A product already decoded.
    pub fn decoded(product: ScannedProduct) -> Self {
        Self(Stage::Decoded(product))
    }

    /// Product `id` as its stored bytes, for `decode` to decode when it is needed.
    pub fn stored(id: PinvId, row: Vec<u8>, apart: Option<Vec<u8>>, decode: DecodeScanned) -> Self {
        Self(Stage::Stored {
            id,
            row,
            apart,
            decode,
        })
    }

    /// The product's id, known without decoding it.
    pub fn id(&self) -> PinvId {
        match &self.0 {
            Stage::Decoded(product) => product.record.id,
            Stage::Stored { id, .. } => *id,
        }
    }

    /// The product, decoded.
    pub fn decode(self) -> StoreResult<ScannedProduct> {
        match self.0 {
            Stage::Decoded(product) => Ok(product),
            Stage::Stored {
                row, apart, decode, ..
            } => decode(&row, apart.as_deref()),
        }
    }
}

impl fmt::Debug for Scanned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Stage::Decoded(product) => f.debug_tuple("Decoded").field(product).finish(),
            Stage::Stored { id, row, .. } => f
                .debug_struct("Stored")
                .field("id", id)
                .field("row_bytes", &row.len())
                .finish_non_exhaustive(),
        }
    }
}

/// What went wrong in a store.
///
/// The message (in [`Cause`]) says what the store was doing; the underlying error, when
/// there is one, is the [`source`](std::error::Error::source), so that a log line or the
/// CLI prints the whole chain without repeating it in the message.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// A guard of a [`WriteSet`] failed (another writer got there first). The caller
    /// re-reads and tries again; nothing was written.
    Conflict(Cause),
    /// The store cannot be reached or timed out. Nothing was written.
    Unavailable(Cause),
    /// A commit was sent but no answer came back (a timeout, a dropped connection, an
    /// unreadable reply): the write set may be stored whole or not at all. Only
    /// [`Store::commit`] returns it; a write set that carries a processed event tells by
    /// [`Store::get_processed`] once the store answers again.
    OutcomeUnknown(Cause),
    /// Stored data could not be read back.
    Corrupt(Cause),
    /// Anything else the store reported.
    Other(Cause),
}

/// The underlying error of a [`StoreError`], shared: a failed batch gives each of its
/// callers the same error.
type Underlying = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a store was doing when it failed, and the error it met, if any.
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<Underlying>,
}

impl Cause {
    /// A cause with no underlying error.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A cause that keeps `source` as the underlying error.
    pub fn from_error(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// What the store was doing.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same underlying error under another message.
    #[must_use]
    pub fn retitled(self, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..self
        }
    }

    /// The underlying error, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StoreError {
    /// A [`StoreError::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(Cause::new(message))
    }

    /// A [`StoreError::Conflict`] caused by `source`.
    pub fn conflict_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Conflict(Cause::from_error(message, source))
    }

    /// A [`StoreError::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(Cause::new(message))
    }

    /// A [`StoreError::Unavailable`] caused by `source`.
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable(Cause::from_error(message, source))
    }

    /// A [`StoreError::OutcomeUnknown`].
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        Self::OutcomeUnknown(Cause::new(message))
    }

    /// A [`StoreError::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt(Cause::new(message))
    }

    /// A [`StoreError::Corrupt`] caused by `source`.
    pub fn corrupt_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Corrupt(Cause::from_error(message, source))
    }

    /// A [`StoreError::Other`].
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(Cause::new(message))
    }

    /// A [`StoreError::Other`] caused by `source`.
    pub fn other_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Other(Cause::from_error(message, source))
    }

    /// The message and underlying error, whatever the kind.
    pub fn cause(&self) -> &Cause {
        match self {
            Self::Conflict(c)
            | Self::Unavailable(c)
            | Self::OutcomeUnknown(c)
            | Self::Corrupt(c)
            | Self::Other(c) => c,
        }
    }

    /// Displays the error and each of its causes, `: `-separated, for a log line.
    pub fn chain(&self) -> impl fmt::Display + '_ {
        Chain(self)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Conflict(_) => "write conflict",
            Self::Unavailable(_) => "store unavailable",
            Self::OutcomeUnknown(_) => "commit outcome unknown",
            Self::Corrupt(_) => "stored data is corrupt",
            Self::Other(_) => "store error",
        };
        write!(f, "{kind}: {}", self.cause())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.cause().source() {
            Some(e) => Some(e),
            None => None,
        }
    }
}

/// An error and its sources on one line.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A list query: TMF630 filters, sort and paging over merged documents (see
/// [`crate::core::query`]). Stores answer its filters, sort, offset and limit; `fields` is
/// the caller's.
pub type ListQuery = crate::core::query::Query;

/// One page of `GET /products`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// Matching merged documents, in the query's sort order (PINV id order without one, and
    /// for ties), after offset and limit.
    pub items: Vec<Value>,
    /// How many documents match in all.
    pub total: u64,
}

/// A place to keep products. Every method is all-or-nothing.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// How this store wants new products' ids made. Random (v4) by default: they spread
    /// inserts evenly over a collection sharded by id range. The embedded store wants
    /// time-ordered ones (v7).
    fn product_ids(&self) -> fn() -> PinvId {
        PinvId::new_v4
    }

    /// The owner of each key that has one; keys nobody owns are absent from the map.
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>>;

    /// The products with these ids; ids not stored are skipped.
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>>;

    /// The merged document of product `id` as JSON text, for answers that send it as it
    /// is (`GET /products/{id}`); `None` if it is not stored. The default serialises the
    /// record's document; a store that keeps the text returns it without building a tree.
    async fn get_merged_json(&self, id: &PinvId) -> StoreResult<Option<Box<RawValue>>> {
        self.get_products(std::slice::from_ref(id))
            .await?
            .into_iter()
            .find(|r| r.id == *id)
            .map(|r| serde_json::value::to_raw_value(&r.merged))
            .transpose()
            .map_err(|e| StoreError::other_from("cannot encode a product", e))
    }

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

    /// Everything a write reads before it plans, step by step ([`ReadPlan`]). The default
    /// makes one call per step; a store that can answers them all from one consistent view
    /// in one call (a POST used to make four).
    async fn read_for(&self, plan: Arc<dyn ReadPlan>) -> StoreResult<ReadResult> {
        reads::run_by_calls(self, &*plan).await
    }

    /// Applies a write set atomically; [`StoreError::Conflict`] when any guard fails.
    async fn commit(&self, set: WriteSet) -> StoreResult<()>;

    /// Lists merged documents matching the query.
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage>;

    /// The history of one product, oldest first.
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>>;

    /// Up to `limit` products with ids greater than `after`, in id order (for batch re-merge).
    async fn scan(&self, after: Option<PinvId>, limit: usize) -> StoreResult<Vec<ProductRecord>>;

    /// [`Store::scan`] for a batch re-merge: a store that keeps merged documents as text may
    /// hand them over unparsed (see [`ScannedProduct`]), or its products still as stored
    /// bytes (see [`Scanned`]). By default, the parsed records.
    async fn scan_for_remerge(
        &self,
        after: Option<PinvId>,
        limit: usize,
    ) -> StoreResult<Vec<Scanned>> {
        Ok(self
            .scan(after, limit)
            .await?
            .into_iter()
            .map(|record| {
                Scanned::decoded(ScannedProduct {
                    record,
                    merged_text: None,
                })
            })
            .collect())
    }

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

    // Hub subscriptions and the outbox (see [`outbox`]). A store that keeps neither
    // refuses to register subscriptions, so it never owes anyone an event.

    /// Registers a subscription (its id is new).
    async fn put_subscription(&self, _subscription: &Subscription) -> StoreResult<()> {
        Err(StoreError::other("this store keeps no hub subscriptions"))
    }

    /// Every subscription, in id order.
    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        Ok(Vec::new())
    }

    /// Removes a subscription and its outbox entries; false when there was none.
    async fn delete_subscription(&self, _id: &str) -> StoreResult<bool> {
        Ok(false)
    }

    /// Replaces the delivery status of a subscription, if it still exists.
    async fn set_delivery_status(&self, _id: &str, _status: &DeliveryStatus) -> StoreResult<()> {
        Ok(())
    }

    /// Up to `limit` live (not dead) entries of a subscription, in key order.
    async fn outbox(&self, _subscription: &str, _limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        Ok(Vec::new())
    }

    /// How many entries of a subscription are pending and dead.
    async fn outbox_counts(&self, _subscription: &str) -> StoreResult<OutboxCounts> {
        Ok(OutboxCounts::default())
    }

    /// Applies the dispatcher's decisions; entries of a deleted subscription are ignored.
    async fn settle(&self, _settlements: Vec<Settlement>) -> StoreResult<()> {
        Ok(())
    }

    /// Takes or renews the delivery lease `name` for `holder` until `until`; false when
    /// another holder's lease has not expired. A store only one process can open has
    /// nobody to share with.
    async fn lease(
        &self,
        _name: &str,
        _holder: &str,
        _until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_underlying_error_is_the_source_not_part_of_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry");
        let e = StoreError::unavailable_from("cannot open the store file", io);
        assert_eq!(
            e.to_string(),
            "store unavailable: cannot open the store file"
        );
        let source = e.source().expect("the io error is kept");
        assert_eq!(source.to_string(), "no entry");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            e.chain().to_string(),
            "store unavailable: cannot open the store file: no entry"
        );
        // A clone (a failed batch answers each caller) keeps it too.
        assert!(e.clone().source().is_some());
        assert!(matches!(e, StoreError::Unavailable(_)));
    }

    #[test]
    fn an_error_without_an_underlying_one_has_no_source() {
        let e = StoreError::conflict("product changed");
        assert!(e.source().is_none());
        assert_eq!(e.chain().to_string(), "write conflict: product changed");
    }
}
