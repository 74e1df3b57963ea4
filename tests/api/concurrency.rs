//! Concurrent writers: no contribution lost, one product per circuit.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{first_part_id, product_with_circuit, small_event, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_posts_from_five_sources_keep_all_five_contributions() {
    let app = std::sync::Arc::new(spawn_app().await);
    let sources = [
        "billing",
        "provisioning",
        "inventory",
        "ordering",
        "assurance",
    ];
    let mut tasks = Vec::new();
    for round in 0..10 {
        for source in sources {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let value =
                    product_with_circuit(&format!("{source}-local"), "CIRCUIT-CONC-1", "active");
                let time = format!("2024-10-03 12:00:{round:02}Z");
                let body = small_event(source, &format!("{source}-{round}"), &time, value);
                let (status, answer) = app.post_answer(&body, source).await;
                assert!(status == 201 || status == 200, "{status} {answer}");
                first_part_id(&answer)
            }));
        }
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "one product: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let contributions: Value = app
        .get_authorized(&format!("/products/{id}/sources"))
        .await
        .json()
        .await
        .unwrap();
    let got: BTreeSet<&str> = contributions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"].as_str().unwrap())
        .collect();
    assert_eq!(got, sources.into_iter().collect());
    for c in contributions.as_array().unwrap() {
        assert_eq!(
            c["eventId"],
            format!("{}-9", c["source"].as_str().unwrap()),
            "the newest event of each source wins: {c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_first_posts_of_one_circuit_create_one_product() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for (i, source) in ["billing", "provisioning", "inventory", "ordering"]
        .into_iter()
        .enumerate()
    {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = small_event(
                source,
                "first",
                "2024-10-03 12:00:00Z",
                product_with_circuit(&format!("L-{i}"), "CIRCUIT-RACE-1", "active"),
            );
            let (status, answer) = app.post_answer(&body, source).await;
            assert_eq!(status, 201, "{answer}");
            first_part_id(&answer)
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let list = app
        .get_authorized("/products?externalReference.id=CIRCUIT-RACE-1")
        .await;
    assert_eq!(list.headers()["X-Total-Count"], "1");
}
