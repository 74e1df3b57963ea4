//! Re-merging a stored product under (possibly changed) rules, for `pinv remerge`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::core::merge::merge_document_nested_unordered;
use crate::core::order::{KeyOrder, Ordered};
use crate::core::record::{
    patch_between, EventRef, HistoryEntry, ProductRecord, ProductWrite, ScannedProduct,
};
use crate::core::rules::Rules;

/// The source recorded in history entries written by a batch re-merge.
pub const REMERGE_SOURCE: &str = "pinv-remerge";

/// A product whose merged document changes under the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Remerged {
    /// The write, compare-and-set on the revision that was read.
    pub write: ProductWrite,
    /// Its history entry.
    pub history: HistoryEntry,
    /// How many RFC 6902 operations the change takes.
    pub patch_ops: usize,
}

impl Remerged {
    /// The top-level attributes whose values change, sorted (the write carries them, as
    /// [`ProductWrite::changed_attributes`], for the stores' indexes).
    pub fn changed_fields(&self) -> &[String] {
        self.write.changed_attributes.as_deref().unwrap_or_default()
    }
}

/// Merges `record`'s kept contributions again under `rules`; `None` when the merged
/// document would not change (such products are not written). Relationship ids stay
/// rewritten because the record's links are re-applied. Takes the record by value: a
/// batch re-merge reads every product once and need not copy any.
pub fn remerge(
    record: ProductRecord,
    rules: &Rules,
    run: &EventRef,
    now: DateTime<Utc>,
) -> Option<Remerged> {
    // Values compare whatever their key order: the nested keys are put in order only for a
    // document that changed.
    let mut merged =
        merge_document_nested_unordered(&record.id, &record.contributions, &record.links, rules);
    if record.merged == merged {
        return None;
    }
    let order = KeyOrder::product();
    order.order(order.root(), &mut merged);
    let delta = Delta::of(&record.merged, &merged);
    Some(changed(record, merged, delta, rules, run, now))
}

/// [`remerge`] of a product as a scan read it. When the store gave the merged document as
/// text, the new document is compared with that text as it is serialised: an unchanged
/// product costs no parse of its document, and a changed one a parse of the attributes
/// that differ (see `Delta::from_text`). Fails only if stored text does not parse.
pub fn remerge_scanned(
    scanned: ScannedProduct,
    rules: &Rules,
    run: &EventRef,
    now: DateTime<Utc>,
) -> Result<Option<Remerged>, serde_json::Error> {
    let ScannedProduct {
        record,
        merged_text,
    } = scanned;
    let Some(text) = merged_text else {
        return Ok(remerge(record, rules, run, now));
    };
    // The nested keys are put in order only for a document that changed: an unchanged one
    // is recognised by writing it in order straight into the comparison.
    let mut merged =
        merge_document_nested_unordered(&record.id, &record.contributions, &record.links, rules);
    let text = text.get().as_bytes();
    let order = KeyOrder::product();
    if serialises_as(&Ordered::new(order, order.root(), &merged), text) {
        return Ok(None);
    }
    order.order(order.root(), &mut merged);
    Ok(Delta::from_text(text, &merged)?
        .map(|delta| changed(record, merged, delta, rules, run, now)))
}

/// What changes between a stored document and its re-merge, when anything does.
struct Delta {
    /// The RFC 6902 patch from the old document to the new one.
    patch: Value,
    /// The top-level attributes added, removed or changed, sorted.
    fields: Vec<String>,
}

impl Delta {
    /// The delta between two parsed documents; `None` when they are equal.
    fn between(old: &Value, new: &Value) -> Option<Self> {
        (old != new).then(|| Self::of(old, new))
    }

    /// The delta between two documents known to differ.
    fn of(old: &Value, new: &Value) -> Self {
        Delta {
            patch: patch_between(Some(old), new),
            fields: changed_fields(old, new),
        }
    }

    /// The delta between a stored document's text and a new document.
    ///
    /// Only the attributes whose stored text differs from the new value's are parsed and
    /// compared: a re-merge that changes one attribute neither parses nor walks the rest of
    /// the document (they were 13% of an all-change re-merge's CPU). The patch is the one
    /// [`patch_between`] gives for the whole documents, because json-patch diffs an object
    /// key by key and equal attributes add no operations. Text that is not an object
    /// without repeated keys is parsed whole.
    fn from_text(old_text: &[u8], new: &Value) -> serde_json::Result<Option<Self>> {
        let (Some(new_attributes), Ok(old_attributes)) = (new.as_object(), attributes(old_text))
        else {
            return Ok(Self::between(
                &crate::core::value::from_slice(old_text)?,
                new,
            ));
        };
        let mut text = Vec::new();
        // Attributes written as the new value serialises: equal on both sides, left out.
        let mut same = HashSet::new();
        let mut old = Map::new();
        for (key, raw) in &old_attributes {
            let raw = raw.get().as_bytes();
            if let Some(value) = new_attributes.get(key.as_ref()) {
                text.clear();
                serde_json::to_writer(&mut text, value)?;
                if text == raw {
                    same.insert(key.as_ref());
                    continue;
                }
            }
            old.insert(key.to_string(), crate::core::value::from_slice(raw)?);
        }
        let new: Map<String, Value> = new_attributes
            .iter()
            .filter(|(key, _)| !same.contains(key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(Self::between(&Value::Object(old), &Value::Object(new)))
    }
}

/// An object's attributes as they are written: each key with its value's text, in order.
/// Fails on anything but one object whose keys are all different.
fn attributes(text: &[u8]) -> serde_json::Result<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Key<'a>(Cow<'a, str>);
    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(key)))
                }
                fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(key.to_owned())))
                }
            }
            deserializer.deserialize_str(KeyVisitor)
        }
    }
    struct Attributes;
    impl<'de> Visitor<'de> for Attributes {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut attributes = Vec::with_capacity(map.size_hint().unwrap_or(16));
            while let Some(Key(key)) = map.next_key()? {
                attributes.push((key, map.next_value()?));
            }
            Ok(attributes)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let attributes = deserializer.deserialize_map(Attributes)?;
    deserializer.end()?;
    let distinct: HashSet<&str> = attributes.iter().map(|(k, _)| k.as_ref()).collect();
    if distinct.len() != attributes.len() {
        return Err(serde_json::Error::custom("repeated keys"));
    }
    Ok(attributes)
}

/// Whether `value` serialises (compactly, as stores write it) to exactly `text`. Stops at
/// the first byte that differs, so a changed document costs little to rule out.
fn serialises_as(value: &impl Serialize, text: &[u8]) -> bool {
    /// A writer that checks what it is given against the rest of the expected text.
    struct SameAs<'a>(&'a [u8]);
    impl std::io::Write for SameAs<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.0.strip_prefix(buf) {
                Some(rest) => {
                    self.0 = rest;
                    Ok(buf.len())
                }
                None => Err(std::io::ErrorKind::InvalidData.into()),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut same = SameAs(text);
    serde_json::to_writer(&mut same, value).is_ok() && same.0.is_empty()
}

/// The write and history of `record` taking `merged`, which differs from what is stored
/// by `delta`.
fn changed(
    mut record: ProductRecord,
    merged: Value,
    delta: Delta,
    rules: &Rules,
    run: &EventRef,
    now: DateTime<Utc>,
) -> Remerged {
    let Delta { patch, fields } = delta;
    let expected_revision = record.revision;
    record.merged = merged;
    record.revision += 1;
    record.rules_hash = rules.hash.clone();
    Remerged {
        patch_ops: patch.as_array().map_or(0, Vec::len),
        history: HistoryEntry {
            product: record.id,
            revision: record.revision,
            time: now,
            event: run.clone(),
            rules_hash: rules.hash.clone(),
            patch,
            deleted: false,
        },
        write: ProductWrite {
            record,
            expected_revision: Some(expected_revision),
            contributions_unchanged: true,
            changed_attributes: Some(fields),
            merged_json: None,
        },
    }
}

/// Top-level attributes added, removed or changed between two documents, sorted.
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::merge::merge_document;
    use crate::core::package::Links;
    use crate::core::record::Contribution;
    use crate::core::value::strategy::json;
    use crate::core::{EventId, MatchKey, PinvId, Source};
    use proptest::prelude::*;
    use serde_json::json;

    fn rules(precedence: &str) -> Rules {
        let text = format!(
            r#"
[precedence]
default = {precedence}
[events]
accepted_types = ["t"]
[package.roles]
ADI = ["PR-ADI-*"]
ACCESS = ["PR-ACCESS-*"]
PORT = ["PR-PORT-*"]
DD = ["PR-DD-*"]
"#
        );
        Rules::from_files(&[("r.toml".into(), text)]).unwrap()
    }

    fn record(rules: &Rules) -> ProductRecord {
        let id = PinvId::from_uuid(uuid::Uuid::from_u128(1));
        let contribution = |source: &str, name: &str| Contribution {
            source: Source::parse(source).unwrap(),
            event_id: EventId::parse("e").unwrap(),
            time: Utc::now(),
            received_at: Utc::now(),
            value: json!({"id": format!("{source}-1"), "name": name, "status": "active"}).into(),
        };
        let contributions = vec![contribution("a", "from a"), contribution("b", "from b")];
        let merged = merge_document(&id, &contributions, &Links::default(), rules);
        ProductRecord {
            id,
            revision: 3,
            contributions,
            links: Links::default(),
            merged,
            match_keys: vec![MatchKey::pinv(&id)],
            package_root: None,
            rules_hash: rules.hash.clone(),
        }
    }

    fn run() -> EventRef {
        EventRef {
            source: REMERGE_SOURCE.into(),
            id: "run-1".into(),
        }
    }

    #[test]
    fn unchanged_rules_change_nothing() {
        let r = rules(r#"["a", "b"]"#);
        assert_eq!(remerge(record(&r), &r, &run(), Utc::now()), None);
    }

    #[test]
    fn swapped_precedence_changes_the_winner_with_cas_and_history() {
        let old = rules(r#"["a", "b"]"#);
        let new = rules(r#"["b", "a"]"#);
        let rec = record(&old);
        assert_eq!(rec.merged["name"], "from a");
        let out = remerge(rec.clone(), &new, &run(), Utc::now()).expect("changes");
        assert_eq!(out.write.record.merged["name"], "from b");
        assert_eq!(out.write.expected_revision, Some(3));
        assert_eq!(out.write.record.revision, 4);
        assert_eq!(out.write.record.rules_hash, new.hash);
        assert_eq!(out.history.event, run());
        assert_eq!(out.history.revision, 4);
        assert_eq!(out.changed_fields(), ["name".to_owned()]);
        assert_eq!(out.patch_ops, 1);
    }

    #[test]
    fn changed_fields_sees_additions_removals_and_changes() {
        let a = json!({"x": 1, "y": 2, "z": 3});
        let b = json!({"x": 1, "y": 5, "w": 0});
        assert_eq!(changed_fields(&a, &b), vec!["w", "y", "z"]);
    }

    /// `record` as a scan that keeps merged documents as text hands it over.
    fn scanned(mut record: ProductRecord, text: &str) -> ScannedProduct {
        record.merged = Value::Null;
        ScannedProduct {
            record,
            merged_text: Some(serde_json::value::RawValue::from_string(text.to_owned()).unwrap()),
        }
    }

    #[test]
    fn a_scanned_product_is_judged_like_a_parsed_one() {
        let (old, new) = (rules(r#"["a", "b"]"#), rules(r#"["b", "a"]"#));
        let rec = record(&old);
        let text = serde_json::to_string(&rec.merged).unwrap();
        let now = Utc::now();
        let same = |p| remerge_scanned(p, &old, &run(), now).unwrap();
        assert_eq!(same(scanned(rec.clone(), &text)), None);
        // Equal documents in other text (key order, spacing): still unchanged.
        let mut reordered: Vec<(String, Value)> = rec
            .merged
            .as_object()
            .unwrap()
            .clone()
            .into_iter()
            .collect();
        reordered.reverse();
        let reordered = serde_json::to_string_pretty(&serde_json::Map::from_iter(reordered));
        assert_ne!(reordered.as_ref().unwrap(), &text);
        assert_eq!(same(scanned(rec.clone(), &reordered.unwrap())), None);
        // A change: exactly what the parsed record gives.
        let out = remerge_scanned(scanned(rec.clone(), &text), &new, &run(), now).unwrap();
        assert_eq!(out, remerge(rec.clone(), &new, &run(), now));
        assert_eq!(out.unwrap().history.patch.as_array().unwrap().len(), 1);
        // No text: the record's own document.
        let plain = ScannedProduct {
            record: rec.clone(),
            merged_text: None,
        };
        assert_eq!(remerge_scanned(plain, &old, &run(), now).unwrap(), None);
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec(("[a-f]{1,2}", json()), 0..8)
            .prop_map(|entries| entries.into_iter().collect())
    }

    proptest! {
        #[test]
        fn a_delta_from_text_is_the_delta_of_the_documents(
            old in object(),
            mut new in object(),
            keep in prop::collection::vec(any::<bool>(), 8),
            pretty in any::<bool>(),
        ) {
            // Some attributes the same on both sides, as in a real re-merge.
            for ((key, value), keep) in old.iter().zip(keep) {
                if keep {
                    new.insert(key.clone(), value.clone());
                }
            }
            let (old, new) = (Value::Object(old), Value::Object(new));
            let text = if pretty {
                serde_json::to_string_pretty(&old)
            } else {
                serde_json::to_string(&old)
            }
            .unwrap();
            let ours = Delta::from_text(text.as_bytes(), &new).unwrap();
            let theirs = Delta::between(&old, &new);
            prop_assert_eq!(ours.map(|d| (d.patch, d.fields)), theirs.map(|d| (d.patch, d.fields)));
        }
    }

    #[test]
    fn text_that_is_not_one_object_of_distinct_keys_is_parsed_whole() {
        let new = json!({"a": 2, "b": 1});
        // serde_json keeps the last of repeated keys: the document is unchanged.
        let repeated = br#"{"a": 1, "b": 1, "a": 2}"#;
        assert!(attributes(repeated).is_err());
        assert!(Delta::from_text(repeated, &new).unwrap().is_none());
        let array = Delta::from_text(b"[1]", &new).unwrap().expect("changes");
        assert_eq!(array.patch, patch_between(Some(&json!([1])), &new));
        assert!(Delta::from_text(br#"{"a": 2} x"#, &new).is_err());
        assert!(attributes(br#"{"a": 2, "b": {"c": [1, 2]}}"#).is_ok());
    }

    #[test]
    fn serialises_as_wants_the_whole_text() {
        let v = json!({"a": [1, "x"]});
        assert!(serialises_as(&v, br#"{"a":[1,"x"]}"#));
        assert!(!serialises_as(&v, br#"{"a":[1,"x"]}  "#));
        assert!(!serialises_as(&v, br#"{"a":[1,"#));
        assert!(!serialises_as(&v, br#"{"a":[1,"y"]}"#));
    }
}
