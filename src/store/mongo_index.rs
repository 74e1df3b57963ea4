//! The list index of the MongoDB store: one document per entry in `list_index`, keyed by
//! `_id` = the entry ([`crate::core::index`]), so a filter reads an `_id` range (no index on
//! an array field, which nx-27017 cannot use). The entries are written in the transaction
//! that writes the product. A product's stored entries are always those of its stored merged
//! document under the indexed paths, so a write finds the entries to drop from the document
//! it replaces, which the replace itself returns: no list of each product's entries is kept.
//! A `pinv_meta` document records the indexed paths; on connect, another set of paths
//! rebuilds the index.

use std::collections::BTreeSet;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::ClientSession;

use super::{classify, str_field, MongoStore, Previous, CHUNK, PRODUCTS};
use crate::core::index::product_of;
use crate::core::record::{ProductWrite, WriteSet};
use crate::core::PinvId;
use crate::store::{StoreError, StoreResult};

pub(super) const INDEX: &str = "list_index";
/// Each product's entries, kept by builds before the entries were found from the replaced
/// document; no longer read or written (`docs/mongodb.md`).
pub(super) const LEGACY_INDEX_OF: &str = "list_index_of";
pub(super) const META: &str = "pinv_meta";

impl MongoStore {
    /// Whether `write` may change its product's list-index entries.
    pub(super) fn list_index_may_change(&self, write: &ProductWrite) -> bool {
        !self.index.paths().is_empty() && self.index.may_change(write)
    }

    /// Replaces the entries of every product `set` writes, and drops those of every product
    /// it deletes, inside the session's transaction. `previous`: the documents the set
    /// replaced or deleted (a new product has no entries yet).
    pub(super) async fn update_list_index(
        &self,
        s: &mut ClientSession,
        set: &WriteSet,
        previous: Previous,
    ) -> StoreResult<()> {
        if self.index.paths().is_empty() {
            return Ok(());
        }
        let old_entries = |id: &PinvId| -> StoreResult<BTreeSet<String>> {
            match previous.get(id) {
                Some(old) => {
                    let merged = super::from_json(&str_field(old, "merged")?, "merged document")?;
                    Ok(self.index.entries(id, &merged))
                }
                None => Ok(BTreeSet::new()),
            }
        };
        for write in set
            .products
            .iter()
            .filter(|w| self.list_index_may_change(w))
        {
            let id = &write.record.id;
            let new = self.index.entries(id, &write.record.merged);
            self.replace_entries(s, &old_entries(id)?, &new).await?;
        }
        for delete in &set.delete_products {
            self.replace_entries(s, &old_entries(&delete.id)?, &BTreeSet::new())
                .await?;
        }
        Ok(())
    }

    /// Drops the entries in `old` but not in `new`, and adds those in `new` but not in `old`.
    async fn replace_entries(
        &self,
        s: &mut ClientSession,
        old: &BTreeSet<String>,
        new: &BTreeSet<String>,
    ) -> StoreResult<()> {
        let gone: Vec<&String> = old.difference(new).collect();
        for chunk in gone.chunks(CHUNK) {
            self.coll(INDEX)
                .delete_many(doc! { "_id": { "$in": chunk } })
                .session(&mut *s)
                .await
                .map_err(classify)?;
            self.call.replied();
        }
        let added: Vec<Document> = new
            .difference(old)
            .map(|e| doc! { "_id": e.as_str() })
            .collect();
        for chunk in added.chunks(CHUNK) {
            self.coll(INDEX)
                .insert_many(chunk)
                .session(&mut *s)
                .await
                .map_err(classify)?;
            self.call.replied();
        }
        Ok(())
    }

    /// The products in every list of `[from, to)` entry ranges.
    pub(super) async fn list_candidates(
        &self,
        lists: &[Vec<(String, String)>],
    ) -> StoreResult<BTreeSet<PinvId>> {
        let mut result: Option<BTreeSet<PinvId>> = None;
        for ranges in lists {
            let mut ids = BTreeSet::new();
            for (from, to) in ranges {
                let docs = self
                    .find_all(
                        INDEX,
                        doc! { "_id": { "$gte": from, "$lt": to } },
                        None,
                        None,
                    )
                    .await?;
                for d in &docs {
                    ids.extend(product_of(&str_field(d, "_id")?));
                }
            }
            let narrowed = match result {
                Some(before) => before.intersection(&ids).copied().collect(),
                None => ids,
            };
            let empty = narrowed.is_empty();
            result = Some(narrowed);
            if empty {
                break;
            }
        }
        Ok(result.unwrap_or_default())
    }

    /// Rebuilds the index when it was made for other paths (or not made yet).
    pub(super) async fn ensure_list_index(&self) -> StoreResult<()> {
        let fingerprint = self.index.fingerprint();
        let meta = self
            .coll(META)
            .find_one(doc! { "_id": "list_index" })
            .await
            .map_err(classify)?;
        self.call.replied();
        if meta.as_ref().and_then(|m| m.get_str("paths").ok()) == Some(fingerprint.as_str()) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // The legacy per-product lists go too: an index rebuilt without them is complete.
        for name in [INDEX, LEGACY_INDEX_OF] {
            self.coll(name)
                .delete_many(doc! {})
                .await
                .map_err(classify)?;
            self.call.replied();
        }
        let mut cursor = self
            .coll(PRODUCTS)
            .find(doc! {})
            .projection(doc! { "merged": 1 })
            .await
            .map_err(classify)?;
        let mut count = 0u64;
        let mut entries: Vec<Document> = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(classify)? {
            self.call.replied();
            let id = PinvId::parse(&str_field(&d, "_id")?)
                .map_err(|e| StoreError::corrupt(format!("products: bad _id: {e}")))?;
            let merged = super::from_json(&str_field(&d, "merged")?, "merged document")?;
            entries.extend(
                self.index
                    .entries(&id, &merged)
                    .iter()
                    .map(|e| doc! { "_id": e.as_str() }),
            );
            count += 1;
            if entries.len() >= CHUNK {
                self.flush_rebuild(&mut entries).await?;
            }
        }
        self.flush_rebuild(&mut entries).await?;
        self.coll(META)
            .replace_one(
                doc! { "_id": "list_index" },
                doc! { "_id": "list_index", "paths": &fingerprint },
            )
            .upsert(true)
            .await
            .map_err(classify)?;
        tracing::info!(
            products = count,
            seconds = started.elapsed().as_secs_f64(),
            "mongo store: list index built for the configured paths"
        );
        Ok(())
    }

    async fn flush_rebuild(&self, entries: &mut Vec<Document>) -> StoreResult<()> {
        for chunk in entries.chunks(CHUNK) {
            self.coll(INDEX)
                .insert_many(chunk)
                .await
                .map_err(classify)?;
            self.call.replied();
        }
        entries.clear();
        Ok(())
    }
}
