//! In-memory store, for tests: nothing survives a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::core::read_plan::{ReadPlan, ReadResult};
use crate::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::outbox::{
    entries_for, key_range, DeliveryStatus, OutboxCounts, OutboxEntry, Settlement, Subscription,
};
use crate::store::plan::{plan, Plan, PlanView, ProductState, RootChange};
use crate::store::reads::{self, ViewReads};
use crate::store::{ListPage, ListQuery, Store, StoreError, StoreResult};

/// Everything the memory store holds.
#[derive(Debug, Default)]
struct State {
    products: BTreeMap<PinvId, ProductRecord>,
    keys: BTreeMap<MatchKey, PinvId>,
    waiters: BTreeMap<MatchKey, BTreeSet<PinvId>>,
    /// (root, member) pairs, so a root's members are one range.
    roots: BTreeSet<(PinvId, PinvId)>,
    history: BTreeMap<(PinvId, u64), HistoryEntry>,
    processed: BTreeMap<(Source, EventId), ProcessedEvent>,
    subscriptions: BTreeMap<String, Subscription>,
    outbox: BTreeMap<String, OutboxEntry>,
}

impl PlanView for State {
    fn product_state(&self, id: &PinvId) -> StoreResult<Option<ProductState>> {
        Ok(self.products.get(id).map(|r| ProductState {
            revision: r.revision,
            package_root: r.package_root,
        }))
    }

    fn key_owner(&self, key: &MatchKey) -> StoreResult<Option<PinvId>> {
        Ok(self.keys.get(key).copied())
    }

    fn is_processed(&self, source: &Source, event_id: &EventId) -> StoreResult<bool> {
        Ok(self
            .processed
            .contains_key(&(source.clone(), event_id.clone())))
    }

    fn waiters_of(&self, key: &MatchKey) -> StoreResult<BTreeSet<PinvId>> {
        Ok(self.waiters.get(key).cloned().unwrap_or_default())
    }
}

impl ViewReads for State {
    fn processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>> {
        Ok(self
            .processed
            .get(&(source.clone(), event_id.clone()))
            .cloned())
    }

    fn owners(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        Ok(keys
            .iter()
            .filter_map(|k| self.keys.get(k).map(|id| (k.clone(), *id)))
            .collect())
    }

    fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        Ok(keys
            .iter()
            .filter_map(|k| {
                self.waiters
                    .get(k)
                    .map(|w| (k.clone(), w.iter().copied().collect()))
            })
            .collect())
    }

    fn products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        Ok(ids
            .iter()
            .filter_map(|id| self.products.get(id).cloned())
            .collect())
    }
}

impl State {
    fn apply(&mut self, plan: Plan) {
        for record in plan.products {
            self.products.insert(record.id, record);
        }
        for id in &plan.deleted {
            self.products.remove(id);
        }
        for key in &plan.released {
            self.keys.remove(key);
        }
        self.keys.extend(plan.keys);
        for (key, waiters) in plan.waiters {
            if waiters.is_empty() {
                self.waiters.remove(&key);
            } else {
                self.waiters.insert(key, waiters);
            }
        }
        for change in plan.roots {
            match change {
                RootChange::Add { root, member } => self.roots.insert((root, member)),
                RootChange::Remove { root, member } => self.roots.remove(&(root, member)),
            };
        }
        for entry in plan.history {
            self.history.insert((entry.product, entry.revision), entry);
        }
        if let Some(event) = plan.processed {
            self.processed
                .insert((event.source.clone(), event.event_id.clone()), event);
        }
    }
}

/// A store in a `Mutex`ed map.
///
/// The lock is a `std` mutex, held only for in-memory work and never across an `.await`.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, State>> {
        // A panic while holding the lock may have left a write half-applied.
        self.state
            .lock()
            .map_err(|_| StoreError::other("memory store lock poisoned by a panic"))
    }
}

#[async_trait]
impl Store for MemoryStore {
    #[tracing::instrument(
        level = "debug",
        name = "store.read_for",
        skip_all,
        fields(store = "memory")
    )]
    async fn read_for(&self, plan: Arc<dyn ReadPlan>) -> StoreResult<ReadResult> {
        reads::run(&*plan, &*self.lock()?)
    }

    #[tracing::instrument(level = "debug", name = "store.resolve_keys", skip_all, fields(store = "memory", keys = keys.len()))]
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        self.lock()?.owners(keys)
    }

    #[tracing::instrument(level = "debug", name = "store.get_products", skip_all, fields(store = "memory", ids = ids.len()))]
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        self.lock()?.products(ids)
    }

    #[tracing::instrument(level = "debug", name = "store.get_processed", skip_all, fields(store = "memory", source = %source, event_id = %event_id))]
    async fn get_processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>> {
        let state = self.lock()?;
        state.processed(source, event_id)
    }

    #[tracing::instrument(level = "debug", name = "store.waiters", skip_all, fields(store = "memory", keys = keys.len()))]
    async fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        ViewReads::waiters(&*self.lock()?, keys)
    }

    #[tracing::instrument(level = "debug", name = "store.package_members", skip_all, fields(store = "memory", root = %root))]
    async fn package_members(&self, root: &PinvId) -> StoreResult<Vec<PinvId>> {
        let state = self.lock()?;
        let lowest = PinvId::from_uuid(uuid::Uuid::nil());
        let highest = PinvId::from_uuid(uuid::Uuid::max());
        Ok(state
            .roots
            .range((*root, lowest)..=(*root, highest))
            .map(|(_, member)| *member)
            .collect())
    }

    #[tracing::instrument(level = "debug", name = "store.commit", skip_all, fields(store = "memory", products = set.products.len()))]
    async fn commit(&self, mut set: WriteSet) -> StoreResult<()> {
        set.expand_creation_patches();
        let mut state = self.lock()?;
        let subscriptions: Vec<Subscription> = state.subscriptions.values().cloned().collect();
        let outbox = entries_for(&set, &subscriptions, chrono::Utc::now());
        let plan = plan(set, &*state)?;
        state.apply(plan);
        state
            .outbox
            .extend(outbox.into_iter().map(|e| (e.key(), e)));
        Ok(())
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.list",
        skip_all,
        fields(store = "memory")
    )]
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        let state = self.lock()?;
        let matching = state
            .products
            .values()
            .filter(|r| query.matches(&r.merged))
            .map(|r| r.merged.clone());
        let (items, total) = query.page(matching);
        Ok(ListPage { items, total })
    }

    #[tracing::instrument(level = "debug", name = "store.history", skip_all, fields(store = "memory", product = %id))]
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        let state = self.lock()?;
        Ok(state
            .history
            .range((*id, 0)..=(*id, u64::MAX))
            .map(|(_, e)| e.clone())
            .collect())
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.scan",
        skip_all,
        fields(store = "memory", limit)
    )]
    async fn scan(&self, after: Option<PinvId>, limit: usize) -> StoreResult<Vec<ProductRecord>> {
        use std::ops::Bound;
        let state = self.lock()?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .products
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.ping",
        skip_all,
        fields(store = "memory")
    )]
    async fn ping(&self) -> StoreResult<()> {
        self.lock().map(|_| ())
    }

    async fn put_subscription(&self, subscription: &Subscription) -> StoreResult<()> {
        let mut state = self.lock()?;
        state
            .subscriptions
            .insert(subscription.id.clone(), subscription.clone());
        Ok(())
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        Ok(self.lock()?.subscriptions.values().cloned().collect())
    }

    async fn delete_subscription(&self, id: &str) -> StoreResult<bool> {
        let mut state = self.lock()?;
        let (lo, hi) = key_range(id);
        let keys: Vec<String> = state.outbox.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for key in keys {
            state.outbox.remove(&key);
        }
        Ok(state.subscriptions.remove(id).is_some())
    }

    async fn set_delivery_status(&self, id: &str, status: &DeliveryStatus) -> StoreResult<()> {
        if let Some(sub) = self.lock()?.subscriptions.get_mut(id) {
            sub.status = status.clone();
        }
        Ok(())
    }

    async fn outbox(&self, subscription: &str, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        let (lo, hi) = key_range(subscription);
        Ok(self
            .lock()?
            .outbox
            .range(lo..hi)
            .map(|(_, e)| e)
            .filter(|e| !e.dead)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn outbox_counts(&self, subscription: &str) -> StoreResult<OutboxCounts> {
        let (lo, hi) = key_range(subscription);
        let state = self.lock()?;
        let mut counts = OutboxCounts::default();
        for (_, e) in state.outbox.range(lo..hi) {
            if e.dead {
                counts.dead += 1;
            } else {
                counts.pending += 1;
            }
        }
        Ok(counts)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> StoreResult<()> {
        let mut state = self.lock()?;
        for s in settlements {
            match s {
                Settlement::Delivered(key) => {
                    state.outbox.remove(&key);
                }
                Settlement::Keep(entry) => {
                    if state.outbox.contains_key(&entry.key()) {
                        state.outbox.insert(entry.key(), entry);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::record::ProductWrite;
    use crate::store::conformance::{create, id, key, record};

    #[test]
    fn new_products_get_random_ids() {
        let new_id = MemoryStore::new().product_ids();
        let id = uuid::Uuid::parse_str(&new_id().to_string()).unwrap();
        assert_eq!(id.get_version_num(), 4);
    }

    fn write(n: u128, revision: u64, expected: Option<u64>) -> ProductWrite {
        ProductWrite {
            record: record(id(n), revision, json!({})),
            expected_revision: expected,
            contributions_unchanged: false,
            changed_attributes: None,
            merged_json: None,
        }
    }

    #[test]
    fn one_set_cannot_claim_a_key_for_two_products() {
        let set = WriteSet {
            claim_keys: vec![(key("k"), id(1)), (key("k"), id(2))],
            ..WriteSet::default()
        };
        let refused = plan(set, &State::default());
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_set_writing_one_product_twice_is_judged_in_order() {
        let chained = WriteSet {
            products: vec![write(1, 1, None), write(1, 2, Some(1))],
            ..WriteSet::default()
        };
        assert!(plan(chained, &State::default()).is_ok());

        let twice_new = WriteSet {
            products: vec![write(1, 1, None), write(1, 1, None)],
            ..WriteSet::default()
        };
        assert!(matches!(
            plan(twice_new, &State::default()),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn a_moved_root_is_removed_then_added() {
        let mut state = State::default();
        let mut first = record(id(1), 1, json!({}));
        first.package_root = Some(id(10));
        state.apply(plan(create(first), &state).expect("create"));

        let mut moved = record(id(1), 2, json!({}));
        moved.package_root = Some(id(20));
        let set = WriteSet {
            products: vec![ProductWrite {
                record: moved,
                expected_revision: Some(1),
                contributions_unchanged: false,
                changed_attributes: None,
                merged_json: None,
            }],
            ..WriteSet::default()
        };
        let planned = plan(set, &state).expect("move");
        assert_eq!(
            planned.roots,
            vec![
                RootChange::Remove {
                    root: id(10),
                    member: id(1)
                },
                RootChange::Add {
                    root: id(20),
                    member: id(1)
                },
            ]
        );
    }

    #[test]
    fn clearing_wins_over_adding_in_the_same_set() {
        let set = WriteSet {
            add_waiters: vec![(key("k"), id(1))],
            clear_waiters: vec![key("k")],
            ..WriteSet::default()
        };
        let planned = plan(set, &State::default()).expect("plan");
        assert_eq!(planned.waiters.get(&key("k")), Some(&BTreeSet::new()));
    }
}
