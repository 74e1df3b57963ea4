//! The MongoDB store's hub collections.
//!
//! - `hub_subscriptions`: `_id` = hub id, `sub` = the subscription as JSON text.
//! - `hub_outbox`: `_id` = [`OutboxEntry::key`] (so a subscription's entries are one `_id`
//!   range, in delivery order), `dead`, `entry` = the entry as JSON text. Written in the
//!   transaction of the write set whose history entries they report.
//! - `hub_leases`: `_id` = lease name, `holder`, `until` (ms since the epoch), `version`;
//!   taken by compare-and-set on `version`, so that of several PINV instances one delivers a
//!   subscription's batch at a time.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::ClientSession;

use super::{classify, classify_conflict, from_json, is_code, str_field, to_json, MongoStore};
use super::{CHUNK, DUPLICATE_KEY};
use crate::core::record::WriteSet;
use crate::store::outbox::{
    entries_for, key_range, DeliveryStatus, OutboxCounts, OutboxEntry, Settlement, Subscription,
};
use crate::store::StoreResult;

pub(super) const SUBSCRIPTIONS: &str = "hub_subscriptions";
pub(super) const OUTBOX: &str = "hub_outbox";
pub(super) const LEASES: &str = "hub_leases";

fn entry_doc(e: &OutboxEntry) -> StoreResult<Document> {
    Ok(doc! { "_id": e.key(), "dead": e.dead, "entry": to_json(e)? })
}

fn range(sub: &str) -> Document {
    let (lo, hi) = key_range(sub);
    doc! { "$gte": lo, "$lt": hi }
}

impl MongoStore {
    /// Inside the commit's transaction: the outbox entries of `set` for the subscriptions
    /// as this transaction sees them.
    pub(super) async fn append_outbox(
        &self,
        s: &mut ClientSession,
        set: &WriteSet,
    ) -> StoreResult<()> {
        if set.history.is_empty() {
            return Ok(());
        }
        let mut cursor = self
            .coll(SUBSCRIPTIONS)
            .find(doc! {})
            .session(&mut *s)
            .await
            .map_err(classify)?;
        let docs: Vec<Document> = cursor
            .stream(&mut *s)
            .try_collect()
            .await
            .map_err(classify)?;
        self.call.replied();
        if docs.is_empty() {
            return Ok(());
        }
        let subs = docs
            .iter()
            .map(|d| from_json::<Subscription>(&str_field(d, "sub")?, "hub subscription"))
            .collect::<StoreResult<Vec<_>>>()?;
        let entries = entries_for(set, &subs, Utc::now());
        for chunk in entries.chunks(CHUNK) {
            let docs = chunk
                .iter()
                .map(entry_doc)
                .collect::<StoreResult<Vec<_>>>()?;
            self.coll(OUTBOX)
                .insert_many(docs)
                .session(&mut *s)
                .await
                .map_err(|e| classify_conflict(e, "outbox entry already stored"))?;
            self.call.replied();
        }
        Ok(())
    }

    pub(super) async fn hub_put(&self, sub: Subscription) -> StoreResult<()> {
        self.run(move |s| async move {
            s.coll(SUBSCRIPTIONS)
                .insert_one(doc! { "_id": &sub.id, "sub": to_json(&sub)? })
                .await
                .map_err(classify)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn hub_list(&self) -> StoreResult<Vec<Subscription>> {
        self.run(|s| async move {
            let docs = s
                .find_all(SUBSCRIPTIONS, doc! {}, Some(doc! { "_id": 1 }), None)
                .await?;
            docs.iter()
                .map(|d| from_json(&str_field(d, "sub")?, "hub subscription"))
                .collect()
        })
        .await
    }

    pub(super) async fn hub_delete(&self, id: String) -> StoreResult<bool> {
        self.run(move |s| async move {
            let gone = s
                .coll(SUBSCRIPTIONS)
                .delete_one(doc! { "_id": &id })
                .await
                .map_err(classify)?;
            s.coll(OUTBOX)
                .delete_many(doc! { "_id": range(&id) })
                .await
                .map_err(classify)?;
            Ok(gone.deleted_count == 1)
        })
        .await
    }

    pub(super) async fn hub_status(&self, id: String, status: DeliveryStatus) -> StoreResult<()> {
        self.run(move |s| async move {
            let found = s
                .coll(SUBSCRIPTIONS)
                .find_one(doc! { "_id": &id })
                .await
                .map_err(classify)?;
            if let Some(d) = found {
                let mut sub: Subscription = from_json(&str_field(&d, "sub")?, "hub subscription")?;
                sub.status = status;
                s.coll(SUBSCRIPTIONS)
                    .replace_one(
                        doc! { "_id": &id },
                        doc! { "_id": &id, "sub": to_json(&sub)? },
                    )
                    .await
                    .map_err(classify)?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn hub_outbox(
        &self,
        sub: String,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEntry>> {
        self.run(move |s| async move {
            let cursor = s
                .coll(OUTBOX)
                .find(doc! { "_id": range(&sub), "dead": false })
                .sort(doc! { "_id": 1 })
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .await
                .map_err(classify)?;
            let docs: Vec<Document> = cursor.try_collect().await.map_err(classify)?;
            let mut entries = docs
                .iter()
                .map(|d| from_json::<OutboxEntry>(&str_field(d, "entry")?, "outbox entry"))
                .collect::<StoreResult<Vec<_>>>()?;
            // Guards against servers that ignore the sort.
            entries.sort_by_key(OutboxEntry::key);
            Ok(entries)
        })
        .await
    }

    pub(super) async fn hub_counts(&self, sub: String) -> StoreResult<OutboxCounts> {
        self.run(move |s| async move {
            let docs = s
                .find_all(
                    OUTBOX,
                    doc! { "_id": range(&sub) },
                    None,
                    Some(doc! { "_id": 1, "dead": 1 }),
                )
                .await?;
            let mut counts = OutboxCounts::default();
            for d in docs {
                if d.get_bool("dead").unwrap_or(false) {
                    counts.dead += 1;
                } else {
                    counts.pending += 1;
                }
            }
            Ok(counts)
        })
        .await
    }

    pub(super) async fn hub_settle(&self, settlements: Vec<Settlement>) -> StoreResult<()> {
        self.run(move |s| async move {
            let outbox = s.coll(OUTBOX);
            for settlement in settlements {
                match settlement {
                    Settlement::Delivered(key) => {
                        outbox
                            .delete_one(doc! { "_id": key })
                            .await
                            .map_err(classify)?;
                    }
                    // Never an upsert: an entry deleted with its subscription stays gone.
                    Settlement::Keep(entry) => {
                        outbox
                            .replace_one(doc! { "_id": entry.key() }, entry_doc(&entry)?)
                            .await
                            .map_err(classify)?;
                    }
                }
                s.call.replied();
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn hub_lease(
        &self,
        name: String,
        holder: String,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.run(move |s| async move {
            let leases = s.coll(LEASES);
            let now = Utc::now().timestamp_millis();
            let until = until.timestamp_millis();
            let current = leases
                .find_one(doc! { "_id": &name })
                .await
                .map_err(classify)?;
            let Some(current) = current else {
                let first =
                    doc! { "_id": &name, "holder": &holder, "until": until, "version": 0_i64 };
                return match leases.insert_one(first).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_code(&e, &[DUPLICATE_KEY]) => Ok(false),
                    Err(e) => Err(classify(e)),
                };
            };
            let theirs = current.get_str("holder").unwrap_or_default() != holder;
            let live = current.get_i64("until").unwrap_or(0) > now;
            if theirs && live {
                return Ok(false);
            }
            let version = match current.get("version") {
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Int32(v)) => i64::from(*v),
                _ => 0,
            };
            let next =
                doc! { "_id": &name, "holder": &holder, "until": until, "version": version + 1 };
            let swapped = leases
                .replace_one(doc! { "_id": &name, "version": version }, next)
                .await
                .map_err(classify)?;
            Ok(swapped.matched_count == 1)
        })
        .await
    }
}
