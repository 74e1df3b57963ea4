//! `POST /products`: the write path, end to end.

use serde_json::{json, Value};

use crate::helpers::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const T1: &str = "2024-10-03 12:00:00.000Z";
const T2: &str = "2024-10-03 13:00:00.000Z";

async fn created(res: reqwest::Response) -> Value {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], 201);
    body
}

fn crosswalk(doc: &Value) -> Vec<Value> {
    doc["externalIdentifier"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["externalIdentifierType"] == "id")
        .collect()
}

#[tokio::test]
async fn example_request_is_stored_and_returned_merged() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/products"))
        .bearer_auth(token(&["billing"]))
        .header("traceparent", TRACEPARENT)
        .json(&seed_request())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["traceparent"], TRACEPARENT);
    let body = created(res).await;
    assert!(body["timestamp"].is_string());
    let part = &body["responseData"][0];
    let id = part["value"]["id"].as_str().unwrap();
    assert!(is_uuid(id), "{id}");
    assert_eq!(part["value"]["href"], format!("/products/{id}"));
    assert_eq!(
        crosswalk(&part["value"]),
        vec![json!({"owner": "billing", "externalIdentifierType": "id", "id": "41-1234567"})]
    );
    let event_id = part["headers"]["id"].as_str().unwrap();
    assert!(
        is_uuid(event_id),
        "headers.id is replaced by a UUID: {event_id}"
    );
    assert_eq!(part["headers"]["source"], "billing");
    assert_eq!(part["value"]["status"], "active");
}

#[tokio::test]
async fn envelope_traceparent_is_echoed_when_the_http_request_has_none() {
    let app = spawn_app().await;
    let mut req = seed_request();
    req["headers"]["traceparent"] = json!(TRACEPARENT);
    let res = app.post_products(&req, &["billing"]).await;
    assert_eq!(res.headers()["traceparent"], TRACEPARENT);
}

#[tokio::test]
async fn second_source_merges_into_the_same_product() {
    let app = spawn_app().await;
    let first = created(app.post_products(&seed_request(), &["billing"]).await).await;
    let id = first["responseData"][0]["value"]["id"].clone();
    let other = small_event(
        "provisioning",
        "prov-1",
        T1,
        product_with_circuit("P-77", ".BMEC.123456..ATI.", "active"),
    );
    let second = created(app.post_products(&other, &["provisioning"]).await).await;
    let doc = &second["responseData"][0]["value"];
    assert_eq!(doc["id"], id, "same CircuitID, same product");
    let owners: Vec<&str> = crosswalk(doc)
        .iter()
        .map(|e| e["owner"].as_str().unwrap())
        .map(|o| {
            if o == "billing" {
                "billing"
            } else {
                "provisioning"
            }
        })
        .collect();
    assert!(
        owners.contains(&"billing") && owners.contains(&"provisioning"),
        "{doc}"
    );
    let ids: Vec<Value> = crosswalk(doc).iter().map(|e| e["id"].clone()).collect();
    assert!(ids.contains(&json!("41-1234567")) && ids.contains(&json!("P-77")));
}

#[tokio::test]
async fn repeated_event_is_200_with_the_same_document() {
    let app = spawn_app().await;
    let first = created(app.post_products(&seed_request(), &["billing"]).await).await;
    let res = app.post_products(&seed_request(), &["billing"]).await;
    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["status"], 200);
    assert_eq!(
        again["responseData"][0]["value"],
        first["responseData"][0]["value"]
    );
}

/// The same JSON with the keys of every object in reverse order.
fn keys_reversed(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .rev()
                .map(|(k, v)| (k.clone(), keys_reversed(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(keys_reversed).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn repeated_event_with_its_keys_in_another_order_is_200() {
    let app = spawn_app().await;
    let first = created(app.post_products(&seed_request(), &["billing"]).await).await;
    let reordered = keys_reversed(&seed_request());
    assert_ne!(
        serde_json::to_string(&reordered["value"]).unwrap(),
        serde_json::to_string(&seed_request()["value"]).unwrap(),
        "the test needs the keys to come in another order"
    );
    let res = app.post_products(&reordered, &["billing"]).await;
    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.unwrap();
    assert_eq!(
        again["responseData"][0]["value"],
        first["responseData"][0]["value"]
    );
}

#[tokio::test]
async fn same_event_id_with_another_value_is_409() {
    let app = spawn_app().await;
    created(app.post_products(&seed_request(), &["billing"]).await).await;
    let mut changed = seed_request();
    changed["value"]["name"] = json!("Another name");
    let res = app.post_products(&changed, &["billing"]).await;
    assert_error(res, 409, "EVENT_ID_REUSED").await;
}

#[tokio::test]
async fn stale_event_does_not_replace_newer_contribution() {
    let app = spawn_app().await;
    let newer = small_event(
        "billing",
        "b-2",
        T2,
        product_with_circuit("B-1", "C-STALE", "active"),
    );
    let first = created(app.post_products(&newer, &["billing"]).await).await;
    let older = small_event(
        "billing",
        "b-1",
        T1,
        product_with_circuit("B-1", "C-STALE", "terminated"),
    );
    let res = app.post_products(&older, &["billing"]).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["responseData"][0]["value"]["status"], "active");
    assert_eq!(
        body["responseData"][0]["value"],
        first["responseData"][0]["value"]
    );
}

#[tokio::test]
async fn document_matching_two_products_is_409_naming_both() {
    let app = spawn_app().await;
    let a = created(
        app.post_products(
            &small_event(
                "billing",
                "a",
                T1,
                product_with_circuit("A", "C-A", "active"),
            ),
            &["billing"],
        )
        .await,
    )
    .await;
    let b = created(
        app.post_products(
            &small_event(
                "billing",
                "b",
                T1,
                product_with_circuit("B", "C-B", "active"),
            ),
            &["billing"],
        )
        .await,
    )
    .await;
    let mut both = product_with_circuit("X", "C-A", "active");
    both["externalReference"]
        .as_array_mut()
        .unwrap()
        .push(json!({"@type": "ExternalIdentifier", "id": "C-B",
                     "externalIdentifierType": "CircuitID", "owner": "INSTAR"}));
    let res = app
        .post_products(
            &small_event("provisioning", "x", T1, both),
            &["provisioning"],
        )
        .await;
    let body = assert_error(res, 409, "IDENTITY_CONFLICT").await;
    let text = body["error"].to_string();
    for doc in [&a, &b] {
        let id = doc["responseData"][0]["value"]["id"].as_str().unwrap();
        assert!(text.contains(id), "{text} should name {id}");
    }
}

#[tokio::test]
async fn source_the_token_may_not_write_is_403() {
    let app = spawn_app().await;
    let res = app.post_products(&seed_request(), &["provisioning"]).await;
    assert_error(res, 403, "FORBIDDEN_SOURCE").await;
    // Nothing was stored.
    let list: Value = app.get_authorized("/products").await.json().await.unwrap();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn schema_violation_is_400_with_a_pointer() {
    let app = spawn_app().await;
    let mut req = seed_request();
    req["value"]["status"] = json!(42);
    let body = assert_error(
        app.post_products(&req, &["billing"]).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let pointers = error_pointers(&body);
    assert!(pointers.contains(&"/value/status"), "{pointers:?}");
}

#[tokio::test]
async fn dollar_key_is_400() {
    let app = spawn_app().await;
    let mut req = seed_request();
    req["value"]["$where"] = json!("1 == 1");
    assert_error(
        app.post_products(&req, &["billing"]).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
}

#[tokio::test]
async fn nesting_deeper_than_64_is_400() {
    let app = spawn_app().await;
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!({"a": deep});
    }
    let mut req = seed_request();
    req["value"]["characteristicDeep"] = deep;
    let res = app.post_products(&req, &["billing"]).await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn missing_header_fields_are_400_with_one_detail_each() {
    let app = spawn_app().await;
    let mut req = seed_request();
    req["headers"] = json!({});
    let body = assert_error(
        app.post_products(&req, &["*"]).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let details = body["error"]["details"].as_array().unwrap();
    for field in ["id", "source", "type", "time", "datacontenttype"] {
        let pointer = format!("/headers/{field}");
        let n = details
            .iter()
            .filter(|d| d["pointer"] == pointer.as_str())
            .count();
        assert_eq!(n, 1, "{pointer} in {details:?}");
    }
}

#[tokio::test]
async fn dev_example_is_accepted() {
    let app = spawn_app().await;
    let res = app.post_products(&pinv::cli::dev_example(), &["*"]).await;
    created(res).await;
}

#[tokio::test]
async fn time_outside_years_0000_to_9999_in_utc_is_400() {
    let app = spawn_app().await;
    for time in ["0000-01-01T00:00:00+10:18", "9999-12-31T23:00:00-05:00"] {
        let mut req = seed_request();
        req["headers"]["time"] = json!(time);
        let body = assert_error(
            app.post_products(&req, &["billing"]).await,
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(
            body["error"]["details"][0]["pointer"], "/headers/time",
            "{body}"
        );
    }
    // Nothing was stored.
    let list: Value = app.get_authorized("/products").await.json().await.unwrap();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn header_and_schema_violations_are_reported_together() {
    let app = spawn_app().await;
    let mut req = seed_request();
    req["headers"]["time"] = json!("yesterday");
    req["value"]["relatedParty"] = json!("not an array");
    let body = assert_error(
        app.post_products(&req, &["billing"]).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let pointers = error_pointers(&body);
    assert!(pointers.contains(&"/headers/time"), "{pointers:?}");
    assert!(pointers.contains(&"/value/relatedParty"), "{pointers:?}");
}

/// The `pointer` of every detail of an error body.
fn error_pointers(body: &Value) -> Vec<&str> {
    body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pointer"].as_str().unwrap())
        .collect()
}
