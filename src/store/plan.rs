//! The write planner the memory and embedded stores share, so both check a
//! [`WriteSet`]'s guards and derive its changes in exactly the same way.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::{StoreError, StoreResult};

/// What the planner needs to know about a stored product to check a write against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProductState {
    /// The stored revision.
    pub revision: u64,
    /// The stored package root, whose index entry must go when the root changes.
    pub package_root: Option<PinvId>,
}

/// Read access to a store's current state, as seen from inside a write (for the embedded
/// store: inside the write transaction, so earlier sets of the same batch are visible).
pub(crate) trait PlanView {
    /// The product's revision and package root, if stored.
    fn product_state(&self, id: &PinvId) -> StoreResult<Option<ProductState>>;
    /// The key's owner, if any.
    fn key_owner(&self, key: &MatchKey) -> StoreResult<Option<PinvId>>;
    /// Whether (source, event id) is already remembered.
    fn is_processed(&self, source: &Source, event_id: &EventId) -> StoreResult<bool>;
    /// The products waiting for the key (empty when none).
    fn waiters_of(&self, key: &MatchKey) -> StoreResult<BTreeSet<PinvId>>;
}

/// One change to the package-root index, applied in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootChange {
    /// `member` now records `root`.
    Add { root: PinvId, member: PinvId },
    /// `member` no longer records `root`.
    Remove { root: PinvId, member: PinvId },
}

/// Everything a write set changes, derived after all its guards held. Applying a plan
/// cannot fail for a domain reason, only for an I/O one.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Records to store, replacing any previous version.
    pub products: Vec<ProductRecord>,
    /// Products to remove.
    pub deleted: Vec<PinvId>,
    /// Keys to free, applied before `keys`.
    pub released: Vec<MatchKey>,
    /// Keys to record (including ones the product already owned; re-recording is harmless).
    pub keys: Vec<(MatchKey, PinvId)>,
    /// The final waiter set of every key the set touched; empty means delete the entry.
    pub waiters: BTreeMap<MatchKey, BTreeSet<PinvId>>,
    /// Package-root index changes, in order.
    pub roots: Vec<RootChange>,
    /// History entries to store under (product, revision).
    pub history: Vec<HistoryEntry>,
    /// The event to remember.
    pub processed: Option<ProcessedEvent>,
}

/// Checks every guard of `set` against `view` and, when all hold, returns what to apply.
///
/// Guards are checked as if the set's own entries were applied one after the other, so a
/// set that writes one product twice, or claims one key for two products, is judged
/// consistently. Waiters are added before cleared: a key that a set both adds to and clears
/// ends without waiters (a set clears a key because the key is now owned).
pub(crate) fn plan(set: WriteSet, view: &impl PlanView) -> StoreResult<Plan> {
    let mut out = Plan::default();

    let mut products_seen: BTreeMap<PinvId, ProductState> = BTreeMap::new();
    for write in set.products {
        let id = write.record.id;
        let current = match products_seen.get(&id) {
            Some(state) => Some(*state),
            None => view.product_state(&id)?,
        };
        let stored_revision = current.map(|s| s.revision);
        if stored_revision != write.expected_revision {
            return Err(StoreError::conflict(format!(
                "product {id}: expected revision {}, stored revision {}",
                describe_revision(write.expected_revision),
                describe_revision(stored_revision),
            )));
        }
        let old_root = current.and_then(|s| s.package_root);
        let new_root = write.record.package_root;
        if let Some(root) = old_root.filter(|r| Some(*r) != new_root) {
            out.roots.push(RootChange::Remove { root, member: id });
        }
        if let Some(root) = new_root {
            out.roots.push(RootChange::Add { root, member: id });
        }
        products_seen.insert(
            id,
            ProductState {
                revision: write.record.revision,
                package_root: new_root,
            },
        );
        out.products.push(write.record);
    }

    for delete in set.delete_products {
        let id = delete.id;
        let current = match products_seen.get(&id) {
            Some(state) => Some(*state),
            None => view.product_state(&id)?,
        };
        let Some(current) = current.filter(|s| s.revision == delete.expected_revision) else {
            return Err(StoreError::conflict(format!(
                "product {id}: cannot delete at revision {}, stored revision {}",
                delete.expected_revision,
                describe_revision(current.map(|s| s.revision)),
            )));
        };
        if let Some(root) = current.package_root {
            out.roots.push(RootChange::Remove { root, member: id });
        }
        out.deleted.push(id);
    }

    // `None`: freed by this set.
    let mut keys_seen: BTreeMap<MatchKey, Option<PinvId>> = BTreeMap::new();
    for (key, owner) in set.release_keys {
        let current = match keys_seen.get(&key) {
            Some(o) => *o,
            None => view.key_owner(&key)?,
        };
        // Only the named owner's key is freed: a key another product claimed since is theirs.
        if current == Some(owner) {
            keys_seen.insert(key.clone(), None);
            out.released.push(key);
        }
    }
    for (key, owner) in set.claim_keys {
        let current = match keys_seen.get(&key) {
            Some(o) => *o,
            None => view.key_owner(&key)?,
        };
        if let Some(other) = current.filter(|o| *o != owner) {
            return Err(StoreError::conflict(format!(
                "key {key} is owned by product {other}, cannot be claimed by {owner}"
            )));
        }
        keys_seen.insert(key.clone(), Some(owner));
        out.keys.push((key, owner));
    }

    if let Some(event) = &set.processed {
        if view.is_processed(&event.source, &event.event_id)? {
            return Err(StoreError::conflict(format!(
                "event {} from source {} was already processed",
                event.event_id, event.source
            )));
        }
    }
    out.processed = set.processed;

    for (key, waiter) in set.add_waiters {
        if !out.waiters.contains_key(&key) {
            let current = view.waiters_of(&key)?;
            out.waiters.insert(key.clone(), current);
        }
        out.waiters.entry(key).or_default().insert(waiter);
    }
    for key in set.clear_waiters {
        out.waiters.insert(key, BTreeSet::new());
    }

    out.history = set.history;
    Ok(out)
}

fn describe_revision(revision: Option<u64>) -> String {
    revision.map_or_else(|| "none (new product)".to_owned(), |r| r.to_string())
}
