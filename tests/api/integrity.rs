//! Data integrity: what a source sends is what PINV stores and returns, no source can
//! write another's crosswalk, merged addresses come from one source, and per-document
//! work and error bodies are bounded.

use serde_json::{json, Value};

use crate::helpers::*;

/// Posts a raw JSON text (so that its numbers reach the server exactly as written).
async fn post_text(app: &TestApp, text: String, sources: &[&str]) -> reqwest::Response {
    app.client
        .post(app.url("/products"))
        .bearer_auth(token(sources))
        .header("Content-Type", "application/json")
        .body(text)
        .send()
        .await
        .expect("request sent")
}

const NUMBERS: [&str; 6] = [
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "1e-400",
    "-0",
    "2.50",
];

#[tokio::test]
async fn numbers_are_stored_and_returned_exactly_as_posted() {
    let app = spawn_app().await;
    let chars: Vec<String> = NUMBERS
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#"{{"name": "n{i}", "value": {n}}}"#))
        .collect();
    let value = format!(
        r#"{{"id": "NUM-1", "name": "numbers", "productCharacteristic": [{}]}}"#,
        chars.join(", ")
    );
    let body = format!(
        r#"{{"headers": {{"id": "num-1", "source": "billing", "type": "com.att.c360dataPrep.tmf637.post.v5",
             "time": "2024-10-03T12:00:00Z", "datacontenttype": "application/json"}}, "value": {value}}}"#
    );
    let res = post_text(&app, body, &["billing"]).await;
    assert_eq!(res.status(), 201);
    let text = res.text().await.unwrap();
    let posted: Value = serde_json::from_str(&text).unwrap();
    let id = posted["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reads = [
        ("the POST answer", text),
        (
            "the product",
            app.get_authorized(&format!("/products/{id}"))
                .await
                .text()
                .await
                .unwrap(),
        ),
        (
            "the sources",
            app.get_authorized(&format!("/products/{id}/sources"))
                .await
                .text()
                .await
                .unwrap(),
        ),
        (
            "the history",
            app.get_authorized(&format!("/products/{id}/history"))
                .await
                .text()
                .await
                .unwrap(),
        ),
    ];
    for (what, text) in &reads {
        for (i, n) in NUMBERS.iter().enumerate() {
            let expected = format!(r#""name":"n{i}","value":{n}}}"#);
            assert!(text.contains(&expected), "{what} lacks {expected}: {text}");
        }
    }
    // A list filter finds the product by a number's exact text.
    let res = app
        .get_authorized("/products?productCharacteristic.value=123456789012345678901234567890")
        .await;
    assert_eq!(res.headers()["x-total-count"], "1");
    app.stop().await;
}

#[tokio::test]
async fn a_source_cannot_write_another_sources_crosswalk() {
    let app = spawn_app().await;
    let mut value = product_with_circuit("BILL-1", ".CIRCUIT.FORGE.", "active");
    value["externalIdentifier"] =
        json!([{"owner": "provisioning", "externalIdentifierType": "id", "id": "PROV-1"}]);
    let event = small_event("billing", "forge-1", "2024-10-03T12:00:00Z", value);
    let res = app.post_products(&event, &["billing"]).await;
    let body = assert_error(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(
        body["error"]["details"][0]["pointer"], "/value/externalIdentifier",
        "{body}"
    );
    let res = app
        .get_authorized("/products?externalIdentifier.id=PROV-1")
        .await;
    assert_eq!(res.headers()["x-total-count"], "0");
    app.stop().await;
}

#[tokio::test]
async fn a_merged_address_comes_whole_from_one_source() {
    let app = spawn_app().await;
    let customer = |id: &str, street: &str, city: &str, post_code: &str| {
        let mut v = product_with_circuit(id, ".CIRCUIT.ADDR.", "active");
        v["relatedParty"] = json!([{"role": "Customer", "partyOrPartyRole": {
            "@type": "Organization", "name": "ACME",
            "contactMedium": [{"contactType": "ServiceAddress", "street1": street,
                               "city": city, "postCode": post_code}]}}]);
        v
    };
    let b = small_event(
        "billing",
        "addr-b",
        "2024-10-03T12:00:00Z",
        customer("B-1", "1 A ST", "DALLAS", "75201"),
    );
    let p = small_event(
        "provisioning",
        "addr-p",
        "2024-10-03T12:00:01Z",
        customer("P-1", "2 B AVE", "HONOLULU", ""),
    );
    assert_eq!(app.post_products(&b, &["billing"]).await.status(), 201);
    let res = app.post_products(&p, &["provisioning"]).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let medium =
        &body["responseData"][0]["value"]["relatedParty"][0]["partyOrPartyRole"]["contactMedium"];
    assert_eq!(
        medium,
        &json!([{"contactType": "ServiceAddress", "street1": "2 B AVE",
                 "city": "HONOLULU", "postCode": ""}]),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn ids_that_identify_products_are_limited_in_length() {
    let app = spawn_app().await;
    let long = "x".repeat(1_000_000);
    let event = small_event(
        "billing",
        "long-1",
        "2024-10-03T12:00:00Z",
        product_with_circuit(&long, ".CIRCUIT.LONG.", "active"),
    );
    let body = assert_error(
        app.post_products(&event, &["billing"]).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(
        body["error"]["details"][0]["pointer"], "/value/id",
        "{body}"
    );
    let message = body["error"]["details"][0]["message"].as_str().unwrap();
    assert!(message.contains("at most 256 bytes"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn identity_keys_per_product_are_limited() {
    let app = spawn_app().await;
    let refs: Vec<Value> = (0..15_000)
        .map(|i| json!({"externalIdentifierType": "CircuitID", "id": format!("C{i}")}))
        .collect();
    let event = small_event(
        "billing",
        "many-1",
        "2024-10-03T12:00:00Z",
        json!({"id": "MANY-1", "externalReference": refs}),
    );
    let body = assert_error(
        app.post_products(&event, &["billing"]).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{body}");
    assert_eq!(details[0]["pointer"], "/value");
    let message = details[0]["message"].as_str().unwrap();
    assert!(message.contains("15001 identity keys"), "{message}");
    assert!(message.contains("at most 100"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn a_megabyte_of_bad_keys_answers_a_bounded_error() {
    let app = spawn_app().await;
    let keys: serde_json::Map<String, Value> =
        (0..90_000).map(|i| (format!("${i}"), json!(1))).collect();
    let event = small_event(
        "billing",
        "dollars-1",
        "2024-10-03T12:00:00Z",
        Value::Object(keys),
    );
    let res = app.post_products(&event, &["billing"]).await;
    let body = assert_error(res, 400, "VALIDATION_FAILED").await;
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 101, "{}", details.len());
    assert_eq!(details[100]["message"], "89900 more violations not shown");
    assert_eq!(body["error"]["message"], "90000 problems, see details");
    app.stop().await;
}
