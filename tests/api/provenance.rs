//! `GET /products/{id}/provenance`.

use serde_json::{json, Value};

use crate::helpers::*;

const T1: &str = "2024-10-03 12:00:00.000Z";
const T2: &str = "2024-10-03 13:00:00.000Z";

/// A product from billing, then provisioning's view of it with another name and status.
async fn two_sources(app: &TestApp) -> String {
    let mut billing = product_with_circuit("B1", "C1", "active");
    billing["name"] = json!("billing name");
    let res = app
        .post_products(&small_event("billing", "e1", T1, billing), &["billing"])
        .await;
    assert_eq!(res.status(), 201);
    let mut provisioning = product_with_circuit("P1", "C1", "pendingActive");
    provisioning["name"] = json!("provisioning name");
    let res = app
        .post_products(
            &small_event("provisioning", "e2", T2, provisioning),
            &["provisioning"],
        )
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    let body: Value = res.json().await.unwrap();
    body["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn leaf<'a>(body: &'a Value, pointer: &str) -> &'a Value {
    let found: Vec<&Value> = body["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["pointer"] == pointer)
        .collect();
    assert_eq!(found.len(), 1, "{pointer} in {body}");
    found[0]
}

#[tokio::test]
async fn every_leaf_names_its_source_event_and_rule() {
    let app = spawn_app().await;
    let id = two_sources(&app).await;
    let res = app
        .get_authorized(&format!("/products/{id}/provenance"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["revision"], json!(2));
    assert_eq!(body["currentRevision"], json!(2));
    let merged: Value = app
        .get_authorized(&format!("/products/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let name = leaf(&body, "/name");
    assert_eq!(name["value"], merged["name"]);
    assert_eq!(name["setBy"], "source");
    let winner = name["source"].as_str().unwrap();
    assert_eq!(
        merged["name"],
        json!(format!("{winner} name")),
        "the named source sent the value"
    );
    assert_eq!(
        name["eventId"],
        json!(if winner == "billing" { "e1" } else { "e2" })
    );
    assert!(name["rule"]["strategy"].is_string(), "{name}");
    assert!(name["rule"]["precedence"].is_array(), "{name}");
    let pid = leaf(&body, "/id");
    assert_eq!((&pid["setBy"], &pid["value"]), (&json!("pinv"), &json!(id)));
    assert!(pid["reason"].is_string());
    let crosswalk = leaf(&body, "/externalIdentifier/0/id");
    assert_eq!(crosswalk["setBy"], "pinv");
    assert_eq!(crosswalk["source"], "billing");
}

#[tokio::test]
async fn at_explains_an_earlier_revision_or_says_why_not() {
    let app = spawn_app().await;
    let id = two_sources(&app).await;
    let res = app
        .get_authorized(&format!("/products/{id}/provenance?at=1"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["revision"], json!(1));
    let name = leaf(&body, "/name");
    assert_eq!(
        (&name["value"], &name["source"]),
        (&json!("billing name"), &json!("billing"))
    );
    assert!(body["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["source"] != "provisioning"));

    let res = app
        .get_authorized(&format!("/products/{id}/provenance?at=3"))
        .await;
    let err = assert_error(res, 404, "NOT_FOUND").await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no revision 3 (revisions 1 to 2)"),
        "{err}"
    );
    let res = app
        .get_authorized(&format!("/products/{id}/provenance?at=0"))
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app
        .get_authorized(&format!("/products/{id}/provenance?at=two"))
        .await;
    assert_error(res, 400, "BAD_QUERY").await;
    let res = app
        .get_authorized(&format!("/products/{id}/provenance?since=1"))
        .await;
    assert_error(res, 400, "BAD_QUERY").await;
}

#[tokio::test]
async fn a_replaced_contribution_makes_an_earlier_revision_unexplainable() {
    let app = spawn_app().await;
    let first = small_event(
        "billing",
        "e1",
        T1,
        product_with_circuit("B1", "C1", "active"),
    );
    let res = app.post_products(&first, &["billing"]).await;
    let body: Value = res.json().await.unwrap();
    let id = body["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = small_event(
        "billing",
        "e2",
        T2,
        product_with_circuit("B1", "C1", "suspended"),
    );
    assert!(app
        .post_products(&second, &["billing"])
        .await
        .status()
        .is_success());
    let res = app
        .get_authorized(&format!("/products/{id}/provenance?at=1"))
        .await;
    let err = assert_error(res, 400, "REVISION_NOT_EXPLAINABLE").await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replaced by event e2"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_product_is_404_and_no_token_is_401() {
    let app = spawn_app().await;
    let path = "/products/9ffb3182-409d-48cb-a266-1379117bff58/provenance";
    assert_error(app.get_authorized(path).await, 404, "NOT_FOUND").await;
    assert_error(app.get(path).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn the_tmf_path_answers_the_same_with_tmf_errors() {
    let app = spawn_app().await;
    let id = two_sources(&app).await;
    let plain: Value = app
        .get_authorized(&format!("/products/{id}/provenance"))
        .await
        .json()
        .await
        .unwrap();
    let tmf = format!("/tmf-api/productInventory/v5/product/{id}/provenance");
    let res = app.get_authorized(&tmf).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, plain);
    let res = app.get_authorized(&format!("{tmf}?at=3")).await;
    assert_tmf_error(res, 404, "NOT_FOUND").await;
    let unknown =
        "/tmf-api/productInventory/v5/product/9ffb3182-409d-48cb-a266-1379117bff58/provenance";
    assert_tmf_error(app.get_authorized(unknown).await, 404, "NOT_FOUND").await;
    assert_tmf_error(app.get(unknown).await, 401, "UNAUTHORIZED").await;
}
