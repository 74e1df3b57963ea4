//! A batch re-merge over the MongoDB store gives the same documents as over the embedded
//! store: the same products (same ids) are stored in both, re-merged with changed rules,
//! and compared product by product.
//!
//! Needs a server, so plain `cargo test` ignores it: `./scripts/test.sh` starts nx-27017, sets
//! `PINV_TEST_MONGODB_URI` and runs it with `--include-ignored`. Run without the variable,
//! or with the server unreachable, it fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use pinv::app::generate;
use pinv::app::remerge::{run, RemergeOptions, RemergeSummary};
use pinv::core::record::{HistoryEntry, ProductRecord, WriteSet};
use pinv::core::rules::Rules;
use pinv::core::PinvId;
use pinv::store::embedded::EmbeddedStore;
use pinv::store::mongo::MongoStore;
use pinv::store::Store;
use pinv::testing::mongo::{options, uri, URI_VAR};
use pinv::testing::rules::{billing_names_first, shipped_rules};

/// `count` products; every third has billing's contribution only (and is not affected by
/// the rule change). The ids are fixed here so both stores hold the same products.
fn products(count: u64, rules: &Rules) -> Vec<ProductRecord> {
    (0..count)
        .map(|n| {
            let id = PinvId::from_uuid(uuid::Uuid::from_u128(
                0x5eed_0000_0000_4000_8000_0000_0000_0000 + u128::from(n) * 7919,
            ));
            if n % 3 == 0 {
                generate::billing_only_product(n, id, rules)
            } else {
                generate::product(n, id, rules)
            }
        })
        .collect()
}

async fn store_all(store: &dyn Store, records: &[ProductRecord]) {
    for chunk in records.chunks(10) {
        let mut set = WriteSet::default();
        for record in chunk {
            generate::add_new_product(&mut set, record.clone());
        }
        store.commit(set).await.unwrap();
    }
}

async fn remerged(
    store: Arc<dyn Store>,
    records: &[ProductRecord],
    rules: &Arc<Rules>,
) -> (
    RemergeSummary,
    BTreeMap<PinvId, (ProductRecord, Vec<HistoryEntry>)>,
) {
    store_all(&*store, records).await;
    let options = RemergeOptions {
        dry_run: false,
        filters: vec![],
        batch: 8,
    };
    let summary = run(
        Arc::clone(&store),
        Arc::clone(rules),
        &options,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for record in store.scan(None, 10_000).await.unwrap() {
        let history = store.history(&record.id).await.unwrap();
        out.insert(record.id, (record, history));
    }
    (summary, out)
}

#[tokio::test]
#[ignore = "needs a MongoDB wire-protocol server: run ./scripts/test.sh"]
async fn remerge_over_mongodb_gives_the_same_documents_as_over_the_embedded_store() {
    let uri = uri();
    let shipped = shipped_rules();
    let records = products(40, &shipped);
    let rules = Arc::new(billing_names_first());

    let database = format!("pinv_test_{}", uuid::Uuid::new_v4().simple());
    let mongo = MongoStore::connect(&uri, &database, options())
        .await
        .unwrap_or_else(|e| panic!("{URI_VAR} is set but MongoStore::connect({uri}) failed: {e}"));
    let mongo = Arc::new(mongo);
    let (mongo_summary, on_mongo) =
        remerged(Arc::clone(&mongo) as Arc<dyn Store>, &records, &rules).await;
    mongo.drop_database().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let (embedded_summary, on_embedded) = remerged(embedded, &records, &rules).await;

    let counts = |s: &RemergeSummary| {
        (
            s.scanned,
            s.changed,
            s.unchanged,
            s.failed,
            s.fields.clone(),
        )
    };
    assert_eq!(counts(&mongo_summary), counts(&embedded_summary));
    assert_eq!(
        (embedded_summary.scanned, embedded_summary.changed),
        (40, 26),
        "the 26 two-source products change"
    );
    assert_eq!(on_mongo.len(), 40);
    assert_eq!(
        on_mongo.keys().collect::<Vec<_>>(),
        on_embedded.keys().collect::<Vec<_>>()
    );
    for (id, (m, m_history)) in &on_mongo {
        let (e, e_history) = &on_embedded[id];
        assert_eq!(m, e, "product {id} differs between the stores");
        assert_eq!(m_history.len(), e_history.len(), "{id}");
        for (a, b) in m_history.iter().zip(e_history) {
            // Run ids and times differ between the two runs; the rest may not.
            assert_eq!(
                (a.revision, &a.event.source, &a.rules_hash, &a.patch),
                (b.revision, &b.event.source, &b.rules_hash, &b.patch),
                "{id}"
            );
        }
    }
    for (id, (record, history)) in &on_embedded {
        let two_sources = record.contributions.len() == 2;
        assert_eq!(record.revision, if two_sources { 2 } else { 1 }, "{id}");
        assert_eq!(record.merged["name"], "AT&T Dedicated Internet (ADI)");
        assert_eq!(history.len(), usize::from(two_sources), "{id}");
        if two_sources {
            assert_eq!(record.rules_hash, rules.hash);
        }
    }
}
