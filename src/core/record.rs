//! What PINV keeps about a product, and the all-or-nothing change sets that stores apply.
//!
//! These are domain types: the core computes them, every store persists them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::core::package::Links;
use crate::core::{EventId, MatchKey, PinvId, Source};

/// The latest TMF637 value one source sent for one product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Who sent it.
    pub source: Source,
    /// The event that carried it.
    #[serde(rename = "eventId")]
    pub event_id: EventId,
    /// `headers.time` of that event, as an instant.
    pub time: DateTime<Utc>,
    /// When PINV received it.
    #[serde(rename = "receivedAt")]
    pub received_at: DateTime<Utc>,
    /// The product as the source sent it; shared with the event that carried it, as the
    /// plan's copy of it would cost a POST a copy of the whole document.
    #[serde(deserialize_with = "crate::core::value::deserialize_shared")]
    pub value: Arc<Value>,
}

/// One stored product: every source's contribution and the merged document made from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRecord {
    /// The PINV id.
    pub id: PinvId,
    /// Starts at 1; every write adds 1. Stores compare-and-set on it.
    pub revision: u64,
    /// One per source, sorted by source.
    pub contributions: Vec<Contribution>,
    /// Relationship ids resolved so far, per source.
    pub links: Links,
    /// The merged TMF637 document.
    pub merged: Value,
    /// Every match key the product owns, sorted.
    pub match_keys: Vec<MatchKey>,
    /// The PINV id of the ADI part of the package this product belongs to, if known.
    pub package_root: Option<PinvId>,
    /// Hash of the rules that made `merged`.
    pub rules_hash: String,
}

/// A stored product as a batch re-merge reads it: a store may hand the merged document
/// over as the text it stored, because a re-merge that changes nothing never needs its tree
/// (parsing it was a third of the cost of reading a product).
#[derive(Debug)]
pub struct ScannedProduct {
    /// The record. When `merged_text` is set, `record.merged` is `Null` and the text is
    /// the merged document.
    pub record: ProductRecord,
    /// The merged document as stored, if the store kept it as text.
    pub merged_text: Option<Box<serde_json::value::RawValue>>,
}

impl ScannedProduct {
    /// The record with its merged document parsed (a no-op when it already was).
    pub fn into_record(self) -> Result<ProductRecord, serde_json::Error> {
        let mut record = self.record;
        if let Some(text) = self.merged_text {
            record.merged = serde_json::from_str(text.get())?;
        }
        Ok(record)
    }
}

/// Which event changed a merged document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// The source (or `pinv-remerge` for a batch re-merge).
    pub source: String,
    /// The event id (or the re-merge run id).
    pub id: String,
}

/// One change of a merged document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The product.
    pub product: PinvId,
    /// The revision this change produced.
    pub revision: u64,
    /// When it was stored.
    pub time: DateTime<Utc>,
    /// What caused it.
    pub event: EventRef,
    /// Hash of the rules that made the new document.
    #[serde(rename = "rulesHash")]
    pub rules_hash: String,
    /// RFC 6902 patch from the previous merged document (`{}` before the first) to the new one.
    ///
    /// In a [`WriteSet`], `Null` on the first entry of a product the same set creates stands
    /// for that patch, [`patch_between`]`(None, merged)`: the plan does not copy the new
    /// document into a patch (a tenth of a POST's CPU), and a store writes the entry from the
    /// document it writes anyway ([`WriteSet::expand_creation_patches`] for stores that keep
    /// the patch as it is). Entries read back from a store always carry the patch.
    pub patch: Value,
    /// True on the last entry of a deleted product: the product, its keys and its
    /// contributions are gone, and `patch` takes the last merged document to `{}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// An event PINV has stored, kept so the same event again is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedEvent {
    /// The source.
    pub source: Source,
    /// The source's event id.
    pub event_id: EventId,
    /// Hex SHA-256 of the event's `value`, in canonical JSON.
    pub digest: String,
    /// The products the event was about, in the order of its parts.
    pub products: Vec<PinvId>,
}

/// One product to write, guarded by the revision the writer read.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductWrite {
    /// The new state; its `revision` is `expected_revision + 1` (or 1 for a new product).
    pub record: ProductRecord,
    /// The revision that must be stored now; `None` means the product must not exist yet.
    pub expected_revision: Option<u64>,
    /// True when `record.contributions` are exactly those stored at `expected_revision`
    /// (a re-merge changes only the merged document): a store may leave them where they
    /// are instead of writing them again. False whenever in doubt.
    pub contributions_unchanged: bool,
    /// The top-level attributes of the merged document that this write changes, when the
    /// writer knows them (a re-merge does); `None`: any may change. A store indexing the
    /// merged document may leave a product's index entries alone when none of its indexed
    /// paths starts with one of these.
    pub changed_attributes: Option<Vec<String>>,
    /// `record.merged`'s JSON (exactly), when the writer made it already (a POST does, for
    /// its answer): a store may write it instead of serialising the document again.
    pub merged_json: Option<DocumentJson>,
}

/// JSON text made once and shared: a document or event that is written, stored or sent
/// as text, so that it is serialised one time however many places take it.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Arc<RawValue>);

impl JsonText {
    /// The JSON of `value`.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        let json = serde_json::value::to_raw_value(value)
            .expect("our values serialise (their keys are strings)");
        Self(Arc::from(json))
    }

    /// The JSON, as a raw value to serialise into something larger.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree again.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("JSON made by serde_json parses")
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A merged document's JSON: a POST answers with the JSON the store writes, instead of
/// copying the document for the answer and serialising it twice.
pub type DocumentJson = JsonText;

/// A merged document on its way to an answer: the tree, or its JSON made for the store.
#[derive(Debug, Clone)]
pub enum Document {
    /// The tree (a product read back, or one the write left unchanged).
    Tree(Value),
    /// The JSON the store writes.
    Json(DocumentJson),
}

impl Document {
    /// The document as a tree.
    pub fn into_value(self) -> Value {
        match self {
            Document::Tree(value) => value,
            Document::Json(json) => json.to_value(),
        }
    }
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Document::Json(a), Document::Json(b)) => a == b,
            (a, b) => a.clone().into_value() == b.clone().into_value(),
        }
    }
}

impl Serialize for Document {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Document::Tree(value) => value.serialize(serializer),
            Document::Json(json) => json.serialize(serializer),
        }
    }
}

/// One product to remove, guarded like a [`ProductWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDelete {
    /// The product.
    pub id: PinvId,
    /// The revision that must be stored now; the product must exist.
    pub expected_revision: u64,
    /// The merged document being removed (the stored one, as `expected_revision` guards):
    /// what the product's delete event reports. Stores do not keep it.
    pub last: Value,
}

/// Everything one event (or one re-merge step) changes, applied by a store all or nothing.
///
/// A store refuses the whole set with a conflict when any guard fails: a product's
/// revision moved, a key is owned by another product, or the event was already processed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteSet {
    /// Products to create or replace.
    pub products: Vec<ProductWrite>,
    /// Keys to record for a product; refused if another product owns one.
    pub claim_keys: Vec<(MatchKey, PinvId)>,
    /// Products waiting for a key that no product owns yet (an unresolved relationship id).
    pub add_waiters: Vec<(MatchKey, PinvId)>,
    /// Keys whose waiters were served by this write.
    pub clear_waiters: Vec<MatchKey>,
    /// History entries, one per changed merged document.
    pub history: Vec<HistoryEntry>,
    /// The event to remember; refused if the (source, event id) is already remembered.
    pub processed: Option<ProcessedEvent>,
    /// Products to remove with their package-root index entry. Their keys are not freed by
    /// this alone: the writer lists them in `release_keys`.
    pub delete_products: Vec<ProductDelete>,
    /// Keys to free, each of the product named with it; a key owned by another product (or by
    /// nobody) is left as it is. Freed before `claim_keys` are claimed.
    pub release_keys: Vec<(MatchKey, PinvId)>,
}

impl WriteSet {
    /// Writes out every creation patch the plan left as `Null` ([`HistoryEntry::patch`]),
    /// from the document of the product the same set writes.
    pub fn expand_creation_patches(&mut self) {
        let products = &self.products;
        for entry in self.history.iter_mut().filter(|e| e.patch.is_null()) {
            let created = products
                .iter()
                .find(|w| w.record.id == entry.product && w.record.revision == entry.revision);
            if let Some(write) = created {
                entry.patch = patch_between(None, &write.record.merged);
            }
        }
    }

    /// Whether applying the set would change nothing.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
            && self.claim_keys.is_empty()
            && self.add_waiters.is_empty()
            && self.clear_waiters.is_empty()
            && self.history.is_empty()
            && self.processed.is_none()
            && self.delete_products.is_empty()
            && self.release_keys.is_empty()
    }
}

/// The RFC 6902 patch (as JSON) from `old` (`None`: no document yet, i.e. `{}`) to `new`.
///
/// A first document is one `add` per attribute, built directly: going through
/// `json_patch::diff` and `serde_json::to_value` would copy the whole document twice on
/// every product creation.
pub fn patch_between(old: Option<&Value>, new: &Value) -> Value {
    match (old, new) {
        (None, Value::Object(attributes)) => Value::Array(
            attributes
                .iter()
                .map(|(key, value)| {
                    let mut op = serde_json::Map::with_capacity(3);
                    op.insert("op".to_owned(), Value::from("add"));
                    op.insert(
                        "path".to_owned(),
                        Value::from(format!("/{}", crate::core::pointer_token(key))),
                    );
                    op.insert("value".to_owned(), value.clone());
                    Value::Object(op)
                })
                .collect(),
        ),
        _ => {
            let empty = Value::Object(Default::default());
            let patch = json_patch::diff(old.unwrap_or(&empty), new);
            serde_json::to_value(patch).expect("a patch serialises")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_as_json_answers_as_its_tree_would() {
        let tree: Value = serde_json::from_str(
            r#"{"id": "p1", "z": 1, "a": [1.50, 123456789012345678901234567890]}"#,
        )
        .unwrap();
        let json = Document::Json(DocumentJson::of(&tree));
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            serde_json::to_string(&tree).unwrap()
        );
        assert_eq!(json, Document::Tree(tree.clone()));
        assert_eq!(json.into_value(), tree);
    }

    #[test]
    fn a_patch_takes_the_old_document_to_the_new_one() {
        let cases = [
            (None, json!({"a/b": 1, "c~": {"d": [1, 2]}, "e": ""})),
            (
                Some(json!({"a": 1, "b": [1]})),
                json!({"a": 2, "b": [1, 3], "c": null}),
            ),
            (Some(json!({"a": 1})), json!({})),
        ];
        for (old, new) in cases {
            let patch = patch_between(old.as_ref(), &new);
            let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
            let mut doc = old.unwrap_or_else(|| json!({}));
            json_patch::patch(&mut doc, &patch).unwrap();
            assert_eq!(doc, new);
        }
    }
}
