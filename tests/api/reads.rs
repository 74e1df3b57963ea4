//! The `GET /products...` routes over stored products.

use serde_json::{json, Value};

use crate::helpers::*;

const T1: &str = "2024-10-03 12:00:00.000Z";
const T2: &str = "2024-10-03 13:00:00.000Z";

async fn store_one(app: &TestApp, source: &str, event: &str, time: &str, product: Value) -> Value {
    let res = app
        .post_products(&small_event(source, event, time, product), &[source])
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    let body: Value = res.json().await.unwrap();
    body["responseData"][0]["value"].clone()
}

fn id_of(doc: &Value) -> String {
    doc["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn unknown_product_is_404() {
    let app = spawn_app().await;
    let res = app
        .get_authorized("/products/9ffb3182-409d-48cb-a266-1379117bff58")
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn product_is_returned_as_the_bare_merged_document() {
    let app = spawn_app().await;
    let doc = store_one(
        &app,
        "billing",
        "e1",
        T1,
        product_with_circuit("B1", "C1", "active"),
    )
    .await;
    let res = app
        .get_authorized(&format!("/products/{}", id_of(&doc)))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), doc);
}

#[tokio::test]
async fn as_adi_package_wraps_the_product_in_response_data() {
    let app = spawn_app().await;
    let doc = store_one(
        &app,
        "billing",
        "e1",
        T1,
        product_with_circuit("B1", "C1", "active"),
    )
    .await;
    let res = app
        .get_authorized(&format!("/products/{}?as-adi-package=true", id_of(&doc)))
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], 200);
    assert_eq!(body["responseData"][0]["value"], doc);
}

#[tokio::test]
async fn list_filters_projects_and_counts() {
    let app = spawn_app().await;
    let a = store_one(
        &app,
        "billing",
        "e1",
        T1,
        product_with_circuit("B1", "C-1", "active"),
    )
    .await;
    let b = store_one(
        &app,
        "billing",
        "e2",
        T1,
        product_with_circuit("B2", "C-2", "suspended"),
    )
    .await;

    let res = app.get_authorized("/products").await;
    assert_eq!(res.headers()["x-total-count"], "2");
    assert_eq!(res.headers()["x-result-count"], "2");

    let res = app.get_authorized("/products?status=active").await;
    let list: Value = res.json().await.unwrap();
    assert_eq!(list, json!([a.clone()]));

    let res = app
        .get_authorized("/products?externalReference.id=C-2")
        .await;
    assert_eq!(res.headers()["x-total-count"], "1");
    let list: Value = res.json().await.unwrap();
    assert_eq!(list, json!([b.clone()]));

    let res = app.get_authorized("/products?limit=1").await;
    assert_eq!(res.headers()["x-total-count"], "2");
    assert_eq!(res.headers()["x-result-count"], "1");

    let res = app
        .get_authorized("/products?fields=status&status=suspended")
        .await;
    let list: Value = res.json().await.unwrap();
    let item = list[0].as_object().unwrap();
    assert_eq!(item["status"], "suspended");
    assert!(!item.contains_key("externalReference"), "{item:?}");
    assert_eq!(item["id"], b["id"]);
}

#[tokio::test]
async fn sources_lists_every_contribution() {
    let app = spawn_app().await;
    let doc = store_one(
        &app,
        "billing",
        "b-1",
        T1,
        product_with_circuit("B1", "C-S", "active"),
    )
    .await;
    store_one(
        &app,
        "provisioning",
        "p-1",
        T2,
        product_with_circuit("P1", "C-S", "active"),
    )
    .await;
    let res = app
        .get_authorized(&format!("/products/{}/sources", id_of(&doc)))
        .await;
    assert_eq!(res.status(), 200);
    let list: Vec<Value> = res.json().await.unwrap();
    assert_eq!(list.len(), 2);
    let mut sources: Vec<&str> = list.iter().map(|c| c["source"].as_str().unwrap()).collect();
    sources.sort();
    assert_eq!(sources, ["billing", "provisioning"]);
    for c in &list {
        for key in ["eventId", "time", "receivedAt", "value"] {
            assert!(c.get(key).is_some(), "{key} in {c}");
        }
    }
    let billing = list.iter().find(|c| c["source"] == "billing").unwrap();
    assert_eq!(billing["eventId"], "b-1");
    assert_eq!(billing["value"]["id"], "B1");
}

#[tokio::test]
async fn history_lists_changes_oldest_first() {
    let app = spawn_app().await;
    let doc = store_one(
        &app,
        "billing",
        "b-1",
        T1,
        product_with_circuit("B1", "C-H", "active"),
    )
    .await;
    store_one(
        &app,
        "billing",
        "b-2",
        T2,
        product_with_circuit("B1", "C-H", "suspended"),
    )
    .await;
    let res = app
        .get_authorized(&format!("/products/{}/history", id_of(&doc)))
        .await;
    assert_eq!(res.status(), 200);
    let list: Vec<Value> = res.json().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["revision"], 1);
    assert_eq!(list[1]["revision"], 2);
    assert_eq!(list[0]["event"], json!({"source": "billing", "id": "b-1"}));
    assert_eq!(list[1]["event"], json!({"source": "billing", "id": "b-2"}));
    // Each entry names the rules that made it: here the repository's.
    let hash = pinv::app::rules_loader::load_rules_dir(&rules_dir())
        .unwrap()
        .hash;
    assert_eq!(hash.len(), 64);
    for entry in &list {
        assert_eq!(entry["rulesHash"], hash.as_str(), "{entry}");
    }
    // Replaying the patches from {} gives the current document.
    let mut current = json!({});
    for entry in &list {
        assert!(entry["time"].is_string());
        let patch: json_patch::Patch = serde_json::from_value(entry["patch"].clone()).unwrap();
        json_patch::patch(&mut current, &patch).unwrap();
    }
    let now: Value = app
        .get_authorized(&format!("/products/{}", id_of(&doc)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current, now);
}
