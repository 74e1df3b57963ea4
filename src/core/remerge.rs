//! Re-merging a stored product under (possibly changed) rules, for `pinv remerge`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::core::merge::merge_document;
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
    let merged = merge_document(&record.id, &record.contributions, &record.links, rules);
    changed(record, merged, rules, run, now)
}

/// [`remerge`] of a product as a scan read it. When the store gave the merged document as
/// text, the new document is compared with that text as it is serialised, and the text is
/// parsed only when they differ: an unchanged product costs no parse of its document.
/// Fails only if stored text does not parse.
pub fn remerge_scanned(
    scanned: ScannedProduct,
    rules: &Rules,
    run: &EventRef,
    now: DateTime<Utc>,
) -> Result<Option<Remerged>, serde_json::Error> {
    let ScannedProduct {
        mut record,
        merged_text,
    } = scanned;
    let merged = merge_document(&record.id, &record.contributions, &record.links, rules);
    if let Some(text) = merged_text {
        if serialises_as(&merged, text.get().as_bytes()) {
            return Ok(None);
        }
        // Text can differ for equal documents (written by another version): compare trees.
        record.merged = crate::core::value::from_slice(text.get().as_bytes())?;
    }
    Ok(changed(record, merged, rules, run, now))
}

/// Whether `value` serialises (compactly, as stores write it) to exactly `text`. Stops at
/// the first byte that differs, so a changed document costs little to rule out.
fn serialises_as(value: &Value, text: &[u8]) -> bool {
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

/// The write and history of `record` taking `merged`, or `None` when it is what is stored.
fn changed(
    mut record: ProductRecord,
    merged: Value,
    rules: &Rules,
    run: &EventRef,
    now: DateTime<Utc>,
) -> Option<Remerged> {
    if merged == record.merged {
        return None;
    }
    let patch = patch_between(Some(&record.merged), &merged);
    let changed_fields = changed_fields(&record.merged, &merged);
    let expected_revision = record.revision;
    record.merged = merged;
    record.revision += 1;
    record.rules_hash = rules.hash.clone();
    Some(Remerged {
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
            changed_attributes: Some(changed_fields),
        },
    })
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
    use crate::core::package::Links;
    use crate::core::record::Contribution;
    use crate::core::{EventId, MatchKey, PinvId, Source};
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
            value: json!({"id": format!("{source}-1"), "name": name, "status": "active"}),
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

    #[test]
    fn serialises_as_wants_the_whole_text() {
        let v = json!({"a": [1, "x"]});
        assert!(serialises_as(&v, br#"{"a":[1,"x"]}"#));
        assert!(!serialises_as(&v, br#"{"a":[1,"x"]}  "#));
        assert!(!serialises_as(&v, br#"{"a":[1,"#));
        assert!(!serialises_as(&v, br#"{"a":[1,"y"]}"#));
    }
}
