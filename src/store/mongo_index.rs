//! The list index of the MongoDB store: one document per entry in `list_index`, keyed by
//! `_id` = the entry ([`crate::core::index`]), so a filter reads an `_id` range (no index on
//! an array field, which nx-27017 cannot use); `list_index_of` keeps each product's entries
//! (`_id` = PINV id, `entries`: array, not indexed) so a write drops the old ones. Both are
//! written in the transaction that writes the product. A `pinv_meta` document records the
//! indexed paths; on connect, another set of paths rebuilds the index.

use std::collections::BTreeSet;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::ClientSession;

use super::{classify, str_field, MongoStore, CHUNK, PRODUCTS};
use crate::core::index::product_of;
use crate::core::record::WriteSet;
use crate::core::PinvId;
use crate::store::{StoreError, StoreResult};

pub(super) const INDEX: &str = "list_index";
pub(super) const INDEX_OF: &str = "list_index_of";
pub(super) const META: &str = "pinv_meta";

impl MongoStore {
    /// Replaces the entries of every product `set` writes, and drops those of every product
    /// it deletes, inside the session's transaction.
    pub(super) async fn update_list_index(
        &self,
        s: &mut ClientSession,
        set: &WriteSet,
    ) -> StoreResult<()> {
        if self.index.paths().is_empty() {
            return Ok(());
        }
        for write in set.products.iter().filter(|w| self.index.may_change(w)) {
            let new = self.index.entries(&write.record.id, &write.record.merged);
            // A new product has no entries yet (a deleted one took its entries with it):
            // one round trip less on every create.
            let is_new = write.expected_revision.is_none();
            self.replace_entries(s, &write.record.id, Some(new), is_new)
                .await?;
        }
        for delete in &set.delete_products {
            self.replace_entries(s, &delete.id, None, false).await?;
        }
        Ok(())
    }

    /// Makes `new` the index entries of product `id`; `None` removes them all, and the
    /// product's entry list with them. `is_new`: the product has no entries to read.
    async fn replace_entries(
        &self,
        s: &mut ClientSession,
        id: &PinvId,
        new: Option<BTreeSet<String>>,
        is_new: bool,
    ) -> StoreResult<()> {
        let id = id.to_string();
        let stored = if is_new {
            None
        } else {
            let found = self
                .coll(INDEX_OF)
                .find_one(doc! { "_id": &id })
                .session(&mut *s)
                .await
                .map_err(classify)?;
            self.call.replied();
            found
        };
        let old: BTreeSet<String> = match stored {
            Some(d) => d
                .get_array("entries")
                .map_err(|e| StoreError::corrupt_from("list_index_of: no entries", e))?
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect(),
            None => BTreeSet::new(),
        };
        let target = new.clone().unwrap_or_default();
        let gone: Vec<&String> = old.difference(&target).collect();
        for chunk in gone.chunks(CHUNK) {
            self.coll(INDEX)
                .delete_many(doc! { "_id": { "$in": chunk } })
                .session(&mut *s)
                .await
                .map_err(classify)?;
            self.call.replied();
        }
        let added: Vec<Document> = target
            .difference(&old)
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
        match new {
            Some(new) => {
                let entries: Vec<&str> = new.iter().map(String::as_str).collect();
                self.coll(INDEX_OF)
                    .replace_one(doc! { "_id": &id }, doc! { "_id": &id, "entries": entries })
                    .upsert(true)
                    .session(&mut *s)
                    .await
                    .map_err(classify)?;
            }
            None => {
                self.coll(INDEX_OF)
                    .delete_one(doc! { "_id": &id })
                    .session(&mut *s)
                    .await
                    .map_err(classify)?;
            }
        }
        self.call.replied();
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
        for name in [INDEX, INDEX_OF] {
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
        let mut of: Vec<Document> = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(classify)? {
            self.call.replied();
            let id = PinvId::parse(&str_field(&d, "_id")?)
                .map_err(|e| StoreError::corrupt(format!("products: bad _id: {e}")))?;
            let merged = super::from_json(&str_field(&d, "merged")?, "merged document")?;
            let new = self.index.entries(&id, &merged);
            entries.extend(new.iter().map(|e| doc! { "_id": e.as_str() }));
            let list: Vec<&str> = new.iter().map(String::as_str).collect();
            of.push(doc! { "_id": id.to_string(), "entries": list });
            count += 1;
            if of.len() >= CHUNK {
                self.flush_rebuild(&mut entries, &mut of).await?;
            }
        }
        self.flush_rebuild(&mut entries, &mut of).await?;
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

    async fn flush_rebuild(
        &self,
        entries: &mut Vec<Document>,
        of: &mut Vec<Document>,
    ) -> StoreResult<()> {
        for (name, docs) in [(INDEX, entries), (INDEX_OF, of)] {
            for chunk in docs.chunks(CHUNK) {
                self.coll(name).insert_many(chunk).await.map_err(classify)?;
                self.call.replied();
            }
            docs.clear();
        }
        Ok(())
    }
}
