//! `pinv generate`: fills a store with synthetic products, for load and re-merge benchmarks.
//!
//! Each product has a `billing` and a `provisioning` contribution about one circuit, with
//! different `name`s (so swapping their precedence for `name` changes every product), and
//! is merged and keyed exactly as a POST of both documents would have done.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::core::merge::merge_document;
use crate::core::package::Links;
use crate::core::record::{
    patch_between, Contribution, EventRef, HistoryEntry, ProductRecord, ProductWrite, WriteSet,
};
use crate::core::rules::Rules;
use crate::core::{identity, EventId, MatchKey, PinvId, Source};
use crate::store::{Store, StoreError};

/// The two contributions of synthetic product number `n`.
pub fn contributions(n: u64) -> [(Source, Value); 2] {
    let circuit = format!(".GEN.{n:09}..ATI.");
    let common = |local: String, name: &str, status: &str| {
        json!({
            "@type": "AttProduct",
            "id": local,
            "name": name,
            "status": status,
            "externalReference": [
                {"@type": "ExternalIdentifier", "id": circuit, "externalIdentifierType": "CircuitID", "owner": "INSTAR"}
            ],
            "productSpecification": {"@type": "ProductSpecificationRef", "id": "PR-ADI-EMBEDDED-BASE", "version": "Embedded Base 10.0"},
            "productCharacteristic": [
                {"@type": "StringCharacteristic", "name": "Access Speed", "value": format!("{}M", 10 * (1 + n % 100))},
                {"@type": "StringCharacteristic", "name": "Port Speed", "value": ""}
            ],
            "relatedParty": [
                {"@type": "RelatedPartyOrPartyRole", "role": "Customer",
                 "partyOrPartyRole": {"@type": "Organization", "name": format!("Customer {}", n % 10_000)}}
            ]
        })
    };
    [
        (
            Source::parse("billing").expect("valid source"),
            common(format!("B-{n}"), "AT&T Dedicated Internet (ADI)", "active"),
        ),
        (
            Source::parse("provisioning").expect("valid source"),
            common(format!("P-{n}"), "ADI circuit", "pendingActive"),
        ),
    ]
}

/// Builds the stored state of synthetic product `n` with id `id`.
pub fn product(n: u64, id: PinvId, rules: &Rules) -> ProductRecord {
    build(n, id, rules, |_| true)
}

/// Synthetic product `n` with billing's contribution only: its `name` has one source, so
/// a change of `name` precedence leaves it alone (re-merge tests count on that).
pub fn billing_only_product(n: u64, id: PinvId, rules: &Rules) -> ProductRecord {
    build(n, id, rules, |s| s.as_str() == "billing")
}

/// Adds a new product to `set`: the record (which must not exist yet) and its keys.
pub fn add_new_product(set: &mut WriteSet, record: ProductRecord) {
    set.claim_keys
        .extend(record.match_keys.iter().map(|k| (k.clone(), record.id)));
    set.products.push(ProductWrite {
        record,
        expected_revision: None,
        contributions_unchanged: false,
        changed_attributes: None,
        merged_json: None,
    });
}

fn build(n: u64, id: PinvId, rules: &Rules, keep: impl Fn(&Source) -> bool) -> ProductRecord {
    let base = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let mut contributions = Vec::with_capacity(2);
    let mut keys = vec![MatchKey::pinv(&id)];
    let kept = contributions_sorted(n).into_iter().filter(|(s, _)| keep(s));
    for (i, (source, value)) in kept.enumerate() {
        keys.extend(identity::match_keys(&source, &value, rules));
        let event_id = EventId::parse(&format!("gen-{n}-{source}")).expect("valid event id");
        let time = base + Duration::seconds(i as i64);
        contributions.push(Contribution {
            source,
            event_id,
            time,
            received_at: time,
            value: value.into(),
        });
    }
    keys.sort();
    keys.dedup();
    let links = Links::default();
    let merged = merge_document(&id, &contributions, &links, rules);
    ProductRecord {
        id,
        revision: 1,
        contributions,
        links,
        merged,
        match_keys: keys,
        package_root: Some(id),
        rules_hash: rules.hash.clone(),
    }
}

fn contributions_sorted(n: u64) -> Vec<(Source, Value)> {
    let mut c = contributions(n).to_vec();
    c.sort_by(|a, b| a.0.cmp(&b.0));
    c
}

/// Writes `count` synthetic products (numbered from `first`) in batches of `batch`, each
/// batch one write set. Returns how many were written.
pub async fn generate(
    store: Arc<dyn Store>,
    rules: Arc<Rules>,
    first: u64,
    count: u64,
    batch: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let batch = batch.max(1);
    let mut written = 0;
    let mut n = first;
    let end = first + count;
    let run = EventRef {
        source: "pinv-generate".to_owned(),
        id: uuid::Uuid::new_v4().to_string(),
    };
    // The store's own id scheme, so that a generated store is laid out as served ones are.
    let new_id = store.product_ids();
    while n < end {
        let upto = (n + batch).min(end);
        let rules2 = Arc::clone(&rules);
        let run2 = run.clone();
        let set = tokio::task::spawn_blocking(move || batch_set(n, upto, &rules2, &run2, new_id))
            .await
            .expect("generation never panics");
        store.commit(set).await?;
        written += upto - n;
        n = upto;
        progress(written);
    }
    Ok(written)
}

fn batch_set(
    from: u64,
    to: u64,
    rules: &Rules,
    run: &EventRef,
    new_id: fn() -> PinvId,
) -> WriteSet {
    let mut set = WriteSet::default();
    let now = Utc::now();
    for n in from..to {
        let record = product(n, new_id(), rules);
        set.history.push(HistoryEntry {
            product: record.id,
            revision: 1,
            time: now,
            event: run.clone(),
            rules_hash: rules.hash.clone(),
            patch: patch_between(None, &record.merged),
            deleted: false,
        });
        add_new_product(&mut set, record);
    }
    set
}
