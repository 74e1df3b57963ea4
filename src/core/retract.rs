//! Taking contributions back: one source retracts what it sent for a product (its
//! contribution and its local-id key go, the rest is merged again), or a whole product is
//! deleted (record and keys go, the history keeps a last entry marked `deleted`).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::core::merge::merge_document;
use crate::core::record::{
    patch_between, EventRef, HistoryEntry, ProductDelete, ProductRecord, ProductWrite, WriteSet,
};
use crate::core::rules::Rules;
use crate::core::{MatchKey, Source};

/// What a retraction did to the product.
#[derive(Debug, Clone, PartialEq)]
pub enum Retracted {
    /// Other sources' contributions remain: the product is merged again from them.
    Remerged {
        /// The write set to commit.
        write: WriteSet,
        /// The new merged document.
        merged: Value,
    },
    /// It was the last contribution: the product is deleted.
    Deleted {
        /// The write set to commit.
        write: WriteSet,
    },
}

/// Retracts `source`'s contribution from `record`; `None` when the source has none.
///
/// The source's local-id key (`local:<source>:<id>` of its contribution) is freed, and so
/// are the relationship ids it had resolved. Keys other than the local id (identity-bearing
/// external references) stay with the product: another source may carry the same one.
pub fn retract(
    mut record: ProductRecord,
    source: &Source,
    rules: &Rules,
    event: EventRef,
    now: DateTime<Utc>,
) -> Option<Retracted> {
    let at = record
        .contributions
        .iter()
        .position(|c| &c.source == source)?;
    if record.contributions.len() == 1 {
        return Some(Retracted::Deleted {
            write: delete(record, event, now),
        });
    }
    let gone = record.contributions.remove(at);
    record.links.replace_source(source, Default::default());
    let mut write = WriteSet::default();
    if let Some(local) = gone.value.get("id").and_then(Value::as_str) {
        let key = MatchKey::local(source, local);
        record.match_keys.retain(|k| k != &key);
        write.release_keys.push((key, record.id));
    }
    let merged = merge_document(&record.id, &record.contributions, &record.links, rules);
    let expected = record.revision;
    record.revision += 1;
    record.rules_hash = rules.hash.clone();
    write.history.push(HistoryEntry {
        product: record.id,
        revision: record.revision,
        time: now,
        event,
        rules_hash: rules.hash.clone(),
        patch: patch_between(Some(&record.merged), &merged),
        deleted: false,
    });
    record.merged = merged.clone();
    write.products.push(ProductWrite {
        record,
        expected_revision: Some(expected),
        contributions_unchanged: false,
        changed_attributes: None,
        merged_json: None,
    });
    Some(Retracted::Remerged { write, merged })
}

/// Deletes `record` whatever its contributions: the product and every key it owns go, its
/// history gets a last entry marked `deleted` whose patch takes the document to `{}`.
pub fn delete(record: ProductRecord, event: EventRef, now: DateTime<Utc>) -> WriteSet {
    let empty = Value::Object(Default::default());
    WriteSet {
        delete_products: vec![ProductDelete {
            id: record.id,
            expected_revision: record.revision,
            last: record.merged.clone(),
        }],
        release_keys: record
            .match_keys
            .iter()
            .map(|k| (k.clone(), record.id))
            .collect(),
        history: vec![HistoryEntry {
            product: record.id,
            revision: record.revision + 1,
            time: now,
            event,
            rules_hash: record.rules_hash.clone(),
            patch: patch_between(Some(&record.merged), &empty),
            deleted: true,
        }],
        ..WriteSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Contribution;
    use crate::core::{EventId, PinvId};
    use serde_json::json;

    fn rules() -> Rules {
        let text = "[precedence]\ndefault = [\"billing\", \"crm\"]\n[events]\naccepted_types = [\"t\"]\n\
            [package.roles]\nADI = [\"A-*\"]\nACCESS = [\"B-*\"]\nPORT = [\"C-*\"]\nDD = [\"D-*\"]\n";
        Rules::from_files(&[("rules.toml".into(), text.into())]).expect("test rules are valid")
    }

    fn contribution(source: &str, value: Value) -> Contribution {
        Contribution {
            source: Source::parse(source).unwrap(),
            event_id: EventId::parse("e1").unwrap(),
            time: Utc::now(),
            received_at: Utc::now(),
            value: value.into(),
        }
    }

    fn record(contributions: Vec<Contribution>) -> ProductRecord {
        let id = PinvId::from_uuid(uuid::Uuid::from_u128(7));
        let rules = rules();
        let mut match_keys = vec![MatchKey::pinv(&id)];
        for c in &contributions {
            if let Some(local) = c.value.get("id").and_then(Value::as_str) {
                match_keys.push(MatchKey::local(&c.source, local));
            }
        }
        match_keys.sort();
        ProductRecord {
            id,
            revision: 3,
            merged: merge_document(&id, &contributions, &Default::default(), &rules),
            contributions,
            links: Default::default(),
            match_keys,
            package_root: None,
            rules_hash: rules.hash.clone(),
        }
    }

    fn event() -> EventRef {
        EventRef {
            source: "crm".to_owned(),
            id: "r1".to_owned(),
        }
    }

    #[test]
    fn retracting_one_of_two_contributions_merges_the_other_and_frees_its_local_key() {
        let rec = record(vec![
            contribution("billing", json!({"id": "b-1", "name": "from billing"})),
            contribution("crm", json!({"id": "c-1", "description": "from crm"})),
        ]);
        let crm = Source::parse("crm").unwrap();
        let Some(Retracted::Remerged { write, merged }) =
            retract(rec.clone(), &crm, &rules(), event(), Utc::now())
        else {
            panic!("expected a re-merge");
        };
        assert_eq!(merged.get("name"), Some(&json!("from billing")));
        assert_eq!(merged.get("description"), None);
        let key = MatchKey::local(&crm, "c-1");
        assert_eq!(write.release_keys, vec![(key.clone(), rec.id)]);
        let stored = &write.products[0];
        assert_eq!(stored.expected_revision, Some(3));
        assert_eq!(stored.record.revision, 4);
        assert!(!stored.record.match_keys.contains(&key));
        assert_eq!(stored.record.contributions.len(), 1);
        assert!(!write.history[0].deleted);
        assert!(write.delete_products.is_empty());
    }

    #[test]
    fn retracting_the_last_contribution_deletes_the_product_and_frees_every_key() {
        let rec = record(vec![contribution("crm", json!({"id": "c-1", "name": "x"}))]);
        let crm = Source::parse("crm").unwrap();
        let Some(Retracted::Deleted { write }) =
            retract(rec.clone(), &crm, &rules(), event(), Utc::now())
        else {
            panic!("expected a deletion");
        };
        assert_eq!(
            write.delete_products,
            vec![ProductDelete {
                id: rec.id,
                expected_revision: 3,
                last: rec.merged.clone(),
            }]
        );
        let freed: Vec<MatchKey> = write.release_keys.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(freed, rec.match_keys);
        let last = &write.history[0];
        assert!(last.deleted);
        assert_eq!(last.revision, 4);
        let mut doc = rec.merged.clone();
        json_patch::patch(
            &mut doc,
            &serde_json::from_value::<json_patch::Patch>(last.patch.clone()).unwrap(),
        )
        .unwrap();
        assert_eq!(doc, json!({}));
    }

    #[test]
    fn a_source_without_a_contribution_retracts_nothing() {
        let rec = record(vec![contribution("crm", json!({"id": "c-1"}))]);
        let billing = Source::parse("billing").unwrap();
        assert_eq!(retract(rec, &billing, &rules(), event(), Utc::now()), None);
    }
}
