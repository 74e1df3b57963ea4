//! Running a [`ReadPlan`]: in one go against a store's consistent view ([`run`]), or one
//! store call per step ([`run_by_calls`], the default of [`Store::read_for`]).

use std::collections::BTreeMap;

use crate::core::read_plan::{ReadPlan, ReadResult};
use crate::core::record::{ProcessedEvent, ProductRecord};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::{Store, StoreResult};

/// Synchronous reads against one view of a store (a read transaction, a locked map).
pub(crate) trait ViewReads {
    /// The remembered event, if any.
    fn processed(&self, source: &Source, event_id: &EventId)
        -> StoreResult<Option<ProcessedEvent>>;
    /// The owners of those keys that have one.
    fn owners(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>>;
    /// The waiters of those keys that have some.
    fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>>;
    /// The stored ones of these products.
    fn products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>>;
}

/// Runs every step of `plan` against `view`.
pub(crate) fn run(plan: &dyn ReadPlan, view: &impl ViewReads) -> StoreResult<ReadResult> {
    let (source, event_id) = plan.event();
    if let Some(event) = view.processed(source, event_id)? {
        return Ok(ReadResult::processed(event));
    }
    let owners = view.owners(&plan.owner_keys())?;
    let waiter_keys = plan.waiter_keys(&owners);
    let waiters = if waiter_keys.is_empty() {
        BTreeMap::new()
    } else {
        view.waiters(&waiter_keys)?
    };
    let ids = plan.records(&owners, &waiters);
    let records = if ids.is_empty() {
        Vec::new()
    } else {
        view.products(&ids)?
    };
    Ok(ReadResult::new(owners, waiters, records))
}

/// Runs every step of `plan` as its own store call: for stores with no cheaper way.
pub(crate) async fn run_by_calls<S: Store + ?Sized>(
    store: &S,
    plan: &dyn ReadPlan,
) -> StoreResult<ReadResult> {
    let (source, event_id) = plan.event();
    if let Some(event) = store.get_processed(source, event_id).await? {
        return Ok(ReadResult::processed(event));
    }
    let owners = store.resolve_keys(&plan.owner_keys()).await?;
    let waiter_keys = plan.waiter_keys(&owners);
    let waiters = if waiter_keys.is_empty() {
        BTreeMap::new()
    } else {
        store.waiters(&waiter_keys).await?
    };
    let ids = plan.records(&owners, &waiters);
    let records = if ids.is_empty() {
        Vec::new()
    } else {
        store.get_products(&ids).await?
    };
    Ok(ReadResult::new(owners, waiters, records))
}
