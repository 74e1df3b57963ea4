//! Merge cost against the `docs/reference.md` §10 target: merging three seed-sized contributions
//! should cost no more than one serde_json parse + serialize of one such document.
//!
//! `cargo bench --bench merge`. Also measures schema validation of one seed body, the
//! other per-POST cost of the core.
//!
//! The bench uses the allocator of the `pinv` binary (mimalloc) for every measurement, so
//! the numbers are those of the service.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;

use pinv::core::merge::merge;
use pinv::core::package::Links;
use pinv::core::record::Contribution;
use pinv::core::{EventId, Source};
use pinv::testing::rules::shipped_rules;
use pinv::testing::seed::{golden, seed_product, SeedProduct};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn merge_vs_parse(c: &mut Criterion) {
    let rules = shipped_rules();
    let SeedProduct {
        id,
        contributions,
        links,
    } = seed_product();
    // The seed document as a source would send it (compact JSON).
    let seed = serde_json::to_vec(&contributions[0].value).expect("serialize");

    let mut group = c.benchmark_group("merge");
    group.bench_function("merge_three_seed_contributions", |b| {
        b.iter(|| merge(black_box(&id), black_box(&contributions), &links, &rules))
    });
    // Provenance (`core::provenance::explain`, the traced merge plus the per-leaf walk) of
    // the same product: the budget is about one merge.
    group.bench_function("explain_three_seed_contributions", |b| {
        b.iter(|| {
            pinv::core::provenance::explain(
                black_box(&id),
                black_box(&contributions),
                &links,
                &rules,
            )
        })
    });
    // The provenance route's work past the store read: the explanation, then its answer
    // serialised as `api::provenance` does (straight to bytes; through a `json!` value
    // before).
    group.bench_function("explain_three_seed_contributions_to_json", |b| {
        b.iter(|| {
            let e = pinv::core::provenance::explain(
                black_box(&id),
                black_box(&contributions),
                &links,
                &rules,
            );
            #[derive(serde::Serialize)]
            struct Answer<'e> {
                leaves: Vec<pinv::core::provenance::Leaf<'e>>,
                elements: Vec<pinv::core::provenance::Element<'e>>,
            }
            let answer = Answer {
                leaves: e.leaves(),
                elements: e.elements(),
            };
            serde_json::to_vec(&answer).expect("serialize")
        })
    });
    group.bench_function("merge_three_seed_contributions_document_only", |b| {
        b.iter(|| {
            pinv::core::merge::merge_document(
                black_box(&id),
                black_box(&contributions),
                &links,
                &rules,
            )
        })
    });
    // The cost of the TMF637 key order alone: a merged document with every object's keys
    // sorted by name (the order merges had before), cloned and ordered, against the clone.
    fn by_name(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), by_name(v)))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(by_name).collect()),
            other => other.clone(),
        }
    }
    let by_name = by_name(&merge(&id, &contributions, &links, &rules).document);
    let order = pinv::core::order::KeyOrder::product();
    group.bench_function("merged_seed_document_clone", |b| {
        b.iter(|| black_box(&by_name).clone())
    });
    group.bench_function("merged_seed_document_clone_and_key_order", |b| {
        b.iter(|| {
            let mut doc = black_box(&by_name).clone();
            order.order(order.root(), &mut doc);
            doc
        })
    });
    let mut ordered = by_name.clone();
    order.order(order.root(), &mut ordered);
    group.bench_function(
        "merged_seed_document_clone_and_key_order_when_in_order",
        |b| {
            b.iter(|| {
                let mut doc = black_box(&ordered).clone();
                order.order(order.root(), &mut doc);
                doc
            })
        },
    );
    group.bench_function("serde_json_parse_and_serialize_one_seed_document", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&seed)).expect("parse");
            serde_json::to_vec(&value).expect("serialize")
        })
    });
    // Decoding a product's stored contributions, the larger half of reading one in a
    // re-merge.
    let stored = serde_json::to_vec(&contributions).expect("serialize");
    group.bench_function("decode_three_seed_contributions", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Contribution>>(black_box(&stored)).expect("parse"))
    });
    // A re-merge of the seed product whose `name` changes (the 1M all-change run's case), from
    // the stored text as a scan hands it over: merge, compare with the text, patch.
    let stored_merged = pinv::core::merge::merge_document(&id, &contributions, &links, &rules);
    let stored_text = serde_json::to_string(&stored_merged).expect("serialize");
    let record = pinv::core::record::ProductRecord {
        id,
        revision: 1,
        contributions: contributions.to_vec(),
        links: links.clone(),
        merged: Value::Null,
        match_keys: Vec::new(),
        package_root: None,
        rules_hash: rules.hash.clone(),
    };
    let swapped = pinv::testing::rules::billing_names_first();
    let run = pinv::core::record::EventRef {
        source: "bench".to_owned(),
        id: "run".to_owned(),
    };
    let now = chrono::Utc::now();
    group.bench_function("remerge_seed_product_name_changes", |b| {
        b.iter_batched(
            || pinv::core::record::ScannedProduct {
                record: record.clone(),
                merged_text: Some(
                    serde_json::value::RawValue::from_string(stored_text.clone()).expect("JSON"),
                ),
            },
            |scanned| {
                pinv::core::remerge::remerge_scanned(scanned, &swapped, &run, now)
                    .expect("parses")
                    .expect("the name changes")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let schemas = pinv::core::schema::Schemas::compile().expect("the schemas compile");
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(golden("billing-adi.json")).expect("fixture"),
    )
    .expect("fixture is JSON");
    group.bench_function("schema_validation_of_one_seed_body", |b| {
        b.iter(|| {
            let envelope = schemas.validate_envelope(black_box(&body));
            let product = schemas.validate_product(black_box(&body["value"]), "/value");
            assert!(envelope.is_empty() && product.is_empty());
        })
    });
    // The replay digest every POST computes (canonical JSON text streamed into SHA-256).
    group.bench_function("digest_of_one_seed_body", |b| {
        b.iter(|| pinv::core::ingest::digest(black_box(&body)))
    });
    group.finish();
}

/// A product with `n` characteristics and `keys` (at most `n`) relationships and CircuitIDs,
/// as `source` would post it. A POST may carry at most 100 identity keys, so only a merge of
/// stored contributions sees thousands of relationships and CircuitIDs.
fn large_event(source: &str, n: usize, keys: usize) -> Value {
    let keys = keys.min(n);
    let rels: Vec<Value> = (0..keys)
        .map(|i| serde_json::json!({"relationshipType": "bundles", "id": format!("X-{i}")}))
        .collect();
    let refs: Vec<Value> = (0..keys)
        .map(|i| {
            serde_json::json!({"@type": "ExternalIdentifier", "id": format!("{source}-C{i}"),
                "externalIdentifierType": "CircuitID", "owner": "INSTAR"})
        })
        .collect();
    let chars: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("c{i}"), "value": format!("{source}{i}")}))
        .collect();
    serde_json::json!({
        "headers": {"id": format!("{source}-1"), "source": source,
            "type": "com.att.c360dataPrep.tmf637.post.v5",
            "time": "2024-10-03T12:34:56Z", "datacontenttype": "application/json"},
        "value": {"@type": "Product", "id": format!("{source}-L1"), "name": "ADI",
            "productRelationship": rels, "externalReference": refs,
            "productCharacteristic": chars}
    })
}

/// Planning and merging a product whose arrays hold `n` elements each: the time per element
/// must stay flat as `n` grows (it grew linearly, i.e. quadratic in total, before).
fn large_documents(c: &mut Criterion) {
    use criterion::{BenchmarkId, Throughput};
    use pinv::core::ingest::{self, Snapshot};

    let rules = shipped_rules();
    let id = seed_product().id;
    let mut group = c.benchmark_group("large_document");
    group.sample_size(10);
    for n in [2_500, 5_000, 10_000, 20_000] {
        group.throughput(Throughput::Elements(n as u64));
        let event = |source| {
            let envelope =
                pinv::core::envelope::parse(large_event(source, n, 45), &rules.accepted_types)
                    .expect("a valid envelope");
            ingest::prepare(envelope, &rules).expect("a valid event")
        };
        let billing = event("billing");
        group.bench_with_input(BenchmarkId::new("plan_new_product", n), &n, |b, _| {
            b.iter(|| {
                ingest::plan(
                    black_box(&billing),
                    &[None],
                    &Snapshot::default(),
                    &rules,
                    chrono::Utc::now(),
                    &mut || id,
                )
                .expect("a plan")
            })
        });
        // Two sources with half of their characteristics and relationships in common.
        let time = billing.headers.time.instant;
        let contributions: Vec<Contribution> = ["billing", "provisioning"]
            .into_iter()
            .map(|source| Contribution {
                source: Source::parse(source).expect("a source"),
                event_id: EventId::parse(&format!("{source}-1")).expect("an id"),
                time,
                received_at: time,
                value: large_event(source, n, n)["value"].clone().into(),
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("merge_two_sources", n), &n, |b, _| {
            b.iter(|| merge(&id, black_box(&contributions), &Links::default(), &rules))
        });
    }
    group.finish();
}

criterion_group!(benches, merge_vs_parse, large_documents);
criterion_main!(benches);
