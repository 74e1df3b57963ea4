//! The list index of the embedded store: two redb tables written in the same transaction
//! as the products they describe.
//!
//! | table           | key                              | value                             |
//! |-----------------|----------------------------------|-----------------------------------|
//! | `list_index`    | entry ([`crate::core::index`])   | `()`                              |
//! | `list_index_of` | PINV id (16 bytes)               | the product's entries, JSON array |
//! | `list_index_meta` | `"paths"`                      | the indexed paths' fingerprint    |
//!
//! `list_index_of` lets the writer drop a product's old entries without decoding its old
//! record. When the configured paths differ from the fingerprint (or a store predates the
//! index), [`ensure`] rebuilds both tables from the products before the store is used.

use std::collections::BTreeSet;

use redb::{Database, ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde_json::Value;

use crate::core::index::{product_of, IndexedPaths};
use crate::core::record::WriteSet;
use crate::core::PinvId;
use crate::store::{StoreError, StoreResult};

const INDEX: TableDefinition<&str, ()> = TableDefinition::new("list_index");
const INDEX_OF: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("list_index_of");
const META: TableDefinition<&str, &str> = TableDefinition::new("list_index_meta");
const PRODUCTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("products");

/// A product's entries, computed where its merged document still is (the caller's side of
/// a commit).
pub(crate) type Entries = Vec<(PinvId, BTreeSet<String>)>;

/// The entries of every product a write set stores, but those whose write says it changes
/// no indexed attribute (their entries stay as they are); none for each product it deletes.
pub(crate) fn entries_of(paths: &IndexedPaths, set: &WriteSet) -> Entries {
    if paths.paths().is_empty() {
        return Vec::new();
    }
    set.products
        .iter()
        .filter(|w| paths.may_change(w))
        .map(|w| (w.record.id, paths.entries(&w.record.id, &w.record.merged)))
        .chain(set.delete_products.iter().map(|d| (d.id, BTreeSet::new())))
        .collect()
}

/// The index tables of one write transaction.
pub(crate) struct IndexTables<'txn> {
    index: Table<'txn, &'static str, ()>,
    index_of: Table<'txn, &'static [u8; 16], &'static [u8]>,
}

impl<'txn> IndexTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> StoreResult<Self> {
        Ok(Self {
            index: txn.open_table(INDEX).map_err(err)?,
            index_of: txn.open_table(INDEX_OF).map_err(err)?,
        })
    }

    /// Replaces each product's entries by its new ones.
    pub(crate) fn update(&mut self, entries: &Entries) -> StoreResult<()> {
        for (id, new) in entries {
            let old: BTreeSet<String> = match self.index_of.get(id.as_bytes()).map_err(err)? {
                Some(g) => serde_json::from_slice(g.value()).map_err(|e| {
                    StoreError::corrupt_from("list index: unreadable entries of a product", e)
                })?,
                None => BTreeSet::new(),
            };
            if old == *new {
                // A re-merge that changes no indexed value (most of them) writes nothing here.
                continue;
            }
            for gone in old.difference(new) {
                self.index.remove(gone.as_str()).map_err(err)?;
            }
            for added in new.difference(&old) {
                self.index.insert(added.as_str(), ()).map_err(err)?;
            }
            if new.is_empty() {
                // A deleted product (or one without indexed values) leaves nothing behind.
                self.index_of.remove(id.as_bytes()).map_err(err)?;
                continue;
            }
            let bytes = serde_json::to_vec(new)
                .map_err(|e| StoreError::other_from("cannot encode index entries", e))?;
            self.index_of
                .insert(id.as_bytes(), bytes.as_slice())
                .map_err(err)?;
        }
        Ok(())
    }
}

/// The products in every list of ranges (each list: a union of `[from, to)` entry ranges).
pub(crate) fn candidates(
    txn: &ReadTransaction,
    lists: &[Vec<(String, String)>],
) -> StoreResult<BTreeSet<PinvId>> {
    let table = txn.open_table(INDEX).map_err(err)?;
    let mut result: Option<BTreeSet<PinvId>> = None;
    for ranges in lists {
        let mut ids = BTreeSet::new();
        for (from, to) in ranges {
            for entry in table.range(from.as_str()..to.as_str()).map_err(err)? {
                let (key, _) = entry.map_err(err)?;
                ids.extend(product_of(key.value()));
            }
        }
        result = Some(match result {
            Some(before) => before.intersection(&ids).copied().collect(),
            None => ids,
        });
        if result.as_ref().is_some_and(BTreeSet::is_empty) {
            break;
        }
    }
    Ok(result.unwrap_or_default())
}

/// Creates the index tables, and rebuilds them when they were made for other paths;
/// `merged` reads the merged document out of a stored product's bytes.
pub(crate) fn ensure(
    db: &Database,
    paths: &IndexedPaths,
    merged: impl Fn(&[u8]) -> StoreResult<Value>,
) -> StoreResult<()> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut meta = txn.open_table(META).map_err(err)?;
        let fingerprint = paths.fingerprint();
        let current = meta
            .get("paths")
            .map_err(err)?
            .map(|g| g.value().to_owned());
        if current.as_deref() != Some(fingerprint.as_str()) {
            let started = std::time::Instant::now();
            txn.delete_table(INDEX).map_err(err)?;
            txn.delete_table(INDEX_OF).map_err(err)?;
            let mut tables = IndexTables::open(&txn)?;
            let products = txn.open_table(PRODUCTS).map_err(err)?;
            let mut count = 0u64;
            for entry in products.iter().map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                let id = PinvId::from_uuid(uuid::Uuid::from_bytes(*key.value()));
                let doc = merged(value.value())?;
                tables.update(&vec![(id, paths.entries(&id, &doc))])?;
                count += 1;
            }
            meta.insert("paths", fingerprint.as_str()).map_err(err)?;
            tracing::info!(
                products = count,
                seconds = started.elapsed().as_secs_f64(),
                "embedded store: list index built for the configured paths"
            );
        }
    }
    txn.commit().map_err(err)
}

fn err(error: impl Into<redb::Error>) -> StoreError {
    StoreError::other_from("list index", error.into())
}
