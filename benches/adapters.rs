//! Cost of an adapter's mapping (`cargo bench --bench adapters`): one activation request of
//! two subscribers and one care order (the fixtures of `tests/fixtures/adapters/`) mapped by
//! the shipped adapters, secrets dropped first, next to a serde_json parse + serialize of
//! the same payload for scale. What the mapped products then cost is the POST path's
//! (`benches/merge.rs`, BENCHMARKS.md).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;

use pinv::core::adapter::{Adapters, Input};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("fixture")
}

fn mapping(c: &mut Criterion) {
    let files: Vec<(String, String)> = ["activation.toml", "care-order.toml"]
        .into_iter()
        .map(|f| (f.to_owned(), read(&format!("adapters/{f}"))))
        .collect();
    let adapters = Adapters::from_files(&files).expect("the shipped adapters parse");
    let headers: BTreeMap<String, String> =
        [("x-att-messageid".to_owned(), "m-1".to_owned())].into();
    let mut group = c.benchmark_group("adapter");
    for (system, fixture) in [
        ("activation", "tests/fixtures/adapters/activation.json"),
        ("care-order", "tests/fixtures/adapters/care-order.json"),
    ] {
        let text = read(fixture);
        let payload: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let adapter = adapters.get(system).expect("shipped");
        group.bench_function(format!("{system}_drop_secrets_and_map"), |b| {
            b.iter(|| {
                let mut p = black_box(&payload).clone();
                adapter.drop_secrets(&mut p);
                adapter
                    .apply(&Input {
                        payload: &p,
                        headers: &headers,
                        received: "2026-01-01T00:00:00Z",
                        event_type: "com.att.c360dataPrep.tmf637.post.v5",
                    })
                    .expect("the fixture maps")
            })
        });
        group.bench_function(
            format!("{system}_payload_serde_json_parse_and_serialize"),
            |b| {
                b.iter(|| {
                    let v: Value = serde_json::from_str(black_box(&text)).expect("parse");
                    serde_json::to_vec(&v).expect("serialize")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
