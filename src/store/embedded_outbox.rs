//! The embedded store's hub tables: subscriptions and the outbox.
//!
//! | table           | key                              | value                 |
//! |-----------------|----------------------------------|-----------------------|
//! | `subscriptions` | hub id (str)                     | `Subscription` JSON   |
//! | `outbox`        | [`OutboxEntry::key`] (str)       | `OutboxEntry` JSON    |
//!
//! Outbox entries are written by the writer thread in the transaction of the write set they
//! report. The subscriptions are also kept in memory ([`HubCache`]) so that a commit with no
//! subscriber costs one atomic load; only one process can open the database, so the copy
//! is exact.

use std::sync::{Arc, RwLock};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::store::outbox::{
    key_range, DeliveryStatus, OutboxCounts, OutboxEntry, Settlement, Subscription,
};
use crate::store::{StoreError, StoreResult};

pub(super) const SUBSCRIPTIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("subscriptions");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");

/// The subscriptions, as of the last change made through this store.
#[derive(Default)]
pub(crate) struct HubCache(RwLock<Arc<Vec<Subscription>>>);

impl HubCache {
    pub(crate) fn get(&self) -> Arc<Vec<Subscription>> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, subs: Vec<Subscription>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(subs);
    }
}

/// One encoded outbox entry: its subscription, key and bytes.
pub(crate) type EncodedEntry = (String, String, Vec<u8>);

fn err(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    StoreError::other_from("embedded store (hub tables)", e)
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::other_from("cannot encode", e))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt_from("hub table entry", e))
}

/// Creates the tables and loads the subscriptions into `cache`.
pub(crate) fn open(db: &Database, cache: &HubCache) -> StoreResult<()> {
    let txn = db.begin_write().map_err(err)?;
    txn.open_table(SUBSCRIPTIONS).map_err(err)?;
    txn.open_table(OUTBOX).map_err(err)?;
    txn.commit().map_err(err)?;
    cache.set(read_subscriptions(db)?);
    Ok(())
}

/// Encodes the entries a commit owes its subscribers.
pub(crate) fn encode(entries: &[OutboxEntry]) -> StoreResult<Vec<EncodedEntry>> {
    entries
        .iter()
        .map(|e| Ok((e.subscription.clone(), e.key(), json(e)?)))
        .collect()
}

/// Writes a committed set's entries in its transaction; entries of a subscription deleted
/// since the set was encoded are dropped.
pub(crate) fn write(txn: &WriteTransaction, entries: Vec<EncodedEntry>) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let subs = txn.open_table(SUBSCRIPTIONS).map_err(err)?;
    let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
    for (sub, key, bytes) in entries {
        if subs.get(sub.as_str()).map_err(err)?.is_some() {
            outbox.insert(key.as_str(), bytes.as_slice()).map_err(err)?;
        }
    }
    Ok(())
}

fn read_subscriptions(db: &Database) -> StoreResult<Vec<Subscription>> {
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(SUBSCRIPTIONS).map_err(err)?;
    table
        .iter()
        .map_err(err)?
        .map(|row| parse(row.map_err(err)?.1.value()))
        .collect()
}

/// Runs `f` in its own durable write transaction.
fn write_txn<T>(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> StoreResult<T>,
) -> StoreResult<T> {
    write_txn_with(db, Durability::Immediate, f)
}

/// Runs `f` in its own write transaction of the given durability.
fn write_txn_with<T>(
    db: &Database,
    durability: Durability,
    f: impl FnOnce(&WriteTransaction) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut txn = db.begin_write().map_err(err)?;
    txn.set_durability(durability).map_err(err)?;
    let out = f(&txn)?;
    txn.commit().map_err(err)?;
    Ok(out)
}

pub(crate) fn put_subscription(
    db: &Database,
    cache: &HubCache,
    sub: &Subscription,
) -> StoreResult<()> {
    let bytes = json(sub)?;
    write_txn(db, |txn| {
        let mut t = txn.open_table(SUBSCRIPTIONS).map_err(err)?;
        t.insert(sub.id.as_str(), bytes.as_slice()).map_err(err)?;
        Ok(())
    })?;
    cache.set(read_subscriptions(db)?);
    Ok(())
}

pub(crate) fn subscriptions(db: &Database) -> StoreResult<Vec<Subscription>> {
    read_subscriptions(db)
}

pub(crate) fn delete_subscription(db: &Database, cache: &HubCache, id: &str) -> StoreResult<bool> {
    let existed = write_txn(db, |txn| {
        let mut subs = txn.open_table(SUBSCRIPTIONS).map_err(err)?;
        let existed = subs.remove(id).map_err(err)?.is_some();
        let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
        let (lo, hi) = key_range(id);
        outbox
            .retain_in(lo.as_str()..hi.as_str(), |_, _| false)
            .map_err(err)?;
        Ok(existed)
    })?;
    cache.set(read_subscriptions(db)?);
    Ok(existed)
}

// Delivery outcomes need no fsync of their own: one lost in a crash means the event is
// delivered again (at least once) or its status is a little older; the next durable commit
// (every POST's) makes them durable.

pub(crate) fn set_delivery_status(
    db: &Database,
    id: &str,
    status: &DeliveryStatus,
) -> StoreResult<()> {
    write_txn_with(db, Durability::None, |txn| {
        let mut subs = txn.open_table(SUBSCRIPTIONS).map_err(err)?;
        let current = subs.get(id).map_err(err)?.map(|g| g.value().to_vec());
        if let Some(bytes) = current {
            let mut sub: Subscription = parse(&bytes)?;
            sub.status = status.clone();
            subs.insert(id, json(&sub)?.as_slice()).map_err(err)?;
        }
        Ok(())
    })
}

pub(crate) fn outbox(db: &Database, sub: &str, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(OUTBOX).map_err(err)?;
    let (lo, hi) = key_range(sub);
    let mut out = Vec::new();
    for row in table.range(lo.as_str()..hi.as_str()).map_err(err)? {
        let entry: OutboxEntry = parse(row.map_err(err)?.1.value())?;
        if !entry.dead {
            out.push(entry);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// Only what counting needs of an outbox entry. The other fields, the event's whole product
/// among them, are skipped over rather than built: the dispatcher counts a subscription's
/// outbox every second or so, and building every waiting event made that count most of the
/// server's CPU once tens of thousands of events waited (BENCHMARKS.md, round 11).
#[derive(serde::Deserialize)]
struct EntryState {
    #[serde(default)]
    dead: bool,
}

pub(crate) fn outbox_counts(db: &Database, sub: &str) -> StoreResult<OutboxCounts> {
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(OUTBOX).map_err(err)?;
    let (lo, hi) = key_range(sub);
    let mut counts = OutboxCounts::default();
    for row in table.range(lo.as_str()..hi.as_str()).map_err(err)? {
        let entry: EntryState = parse(row.map_err(err)?.1.value())?;
        if entry.dead {
            counts.dead += 1;
        } else {
            counts.pending += 1;
        }
    }
    Ok(counts)
}

pub(crate) fn settle(db: &Database, settlements: Vec<Settlement>) -> StoreResult<()> {
    write_txn_with(db, Durability::None, |txn| {
        let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
        for s in settlements {
            match s {
                Settlement::Delivered(key) => {
                    outbox.remove(key.as_str()).map_err(err)?;
                }
                Settlement::Keep(entry) => {
                    let key = entry.key();
                    if outbox.get(key.as_str()).map_err(err)?.is_some() {
                        outbox
                            .insert(key.as_str(), json(&entry)?.as_slice())
                            .map_err(err)?;
                    }
                }
            }
        }
        Ok(())
    })
}
