//! Packages (ADI + ACCESS + PORT [+ DD]) and relationship-id rewriting
//! (`docs/reference.md` §5).

use serde_json::{json, Value};

use crate::helpers::{is_uuid, spawn_app, TestApp};

const TYPE: &str = "com.att.c360dataPrep.tmf637.post.v5";

fn part(local: &str, spec: &str, related: &[&str]) -> Value {
    json!({
        "@type": "AttProduct",
        "id": local,
        "name": format!("part {local}"),
        "status": "active",
        "productSpecification": {"@type": "ProductSpecificationRef", "id": spec},
        "productRelationship": related.iter()
            .map(|r| json!({"@type": "ProductRelationship", "id": r, "relationshipType": "bundles"}))
            .collect::<Vec<_>>(),
    })
}

fn event(id: &str, time: &str, value: Value) -> Value {
    json!({
        "headers": {"id": id, "source": "provisioning", "type": TYPE, "time": time,
                    "datacontenttype": "application/json"},
        "value": value
    })
}

async fn post(app: &TestApp, body: &Value, query: &str) -> (u16, Value) {
    let res = app
        .post_products_query(body, &["provisioning"], query)
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON body"))
}

fn values(body: &Value) -> Vec<Value> {
    body["responseData"]
        .as_array()
        .expect("responseData array")
        .iter()
        .map(|e| e["value"].clone())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn relationship_ids(doc: &Value) -> Vec<String> {
    doc["productRelationship"]
        .as_array()
        .map(|rels| {
            rels.iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_package_is_stored_with_relationship_ids_rewritten_to_pinv_ids() {
    let app = spawn_app().await;
    let body = event(
        "pkg-1",
        "2024-10-03 12:00:00Z",
        json!([
            part(
                "adi-1",
                "PR-ADI-EMBEDDED-BASE",
                &["acc-1", "port-1", "dd-1"]
            ),
            part("acc-1", "PR-ACCESS-FIBER", &["adi-1"]),
            part("port-1", "PR-PORT-10G", &["adi-1", "acc-1"]),
            part("dd-1", "PR-DD-STANDARD", &["adi-1"]),
        ]),
    );
    let (status, body) = post(&app, &body, "").await;
    assert_eq!(status, 201, "{body}");
    let docs = values(&body);
    assert_eq!(docs.len(), 4, "each posted part once: {body}");
    let ids: Vec<String> = docs
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|id| is_uuid(id)));
    let (adi, acc, port, dd) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    assert_eq!(
        sorted(relationship_ids(&docs[0])),
        sorted(vec![acc.clone(), port.clone(), dd.clone()])
    );
    assert_eq!(relationship_ids(&docs[1]), vec![adi.clone()]);
    assert_eq!(
        docs[1]["productRelationship"][0]["href"],
        format!("/products/{adi}")
    );
    assert_eq!(
        sorted(relationship_ids(&docs[2])),
        sorted(vec![adi.clone(), acc.clone()])
    );

    // Stored as returned, and the whole package is found from any part.
    let stored: Value = app
        .get_authorized(&format!("/products/{acc}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored, docs[1]);
    let res = app
        .get_authorized(&format!("/products/{port}?as-adi-package=true"))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let package: Value = res.json().await.unwrap();
    let got: Vec<String> = values(&package)
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        [port, adi, acc, dd].map(String::clone),
        "the requested part first, then the rest in package order, as POST lists them"
    );
}

#[tokio::test]
async fn a_package_without_exactly_one_adi_access_and_port_is_refused() {
    let app = spawn_app().await;
    let body = event(
        "pkg-bad",
        "2024-10-03 12:00:00Z",
        json!([
            part("adi-1", "PR-ADI-EMBEDDED-BASE", &[]),
            part("adi-2", "PR-ADI-EMBEDDED-BASE", &[]),
            part("port-1", "PR-PORT-10G", &[]),
        ]),
    );
    let (status, body) = post(&app, &body, "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
    let messages = body["error"]["details"].to_string();
    assert!(
        messages.contains("exactly one ADI part, found 2"),
        "{messages}"
    );
    assert!(
        messages.contains("exactly one ACCESS part, found 0"),
        "{messages}"
    );
}

#[tokio::test]
async fn a_part_arriving_after_the_adi_that_named_it_rewrites_the_adi() {
    let app = spawn_app().await;
    let (status, first) = post(
        &app,
        &event(
            "e-adi",
            "2024-10-03 12:00:00Z",
            part("adi-9", "PR-ADI-EMBEDDED-BASE", &["acc-9"]),
        ),
        "",
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let adi = values(&first)[0].clone();
    assert_eq!(
        relationship_ids(&adi),
        vec!["acc-9"],
        "unresolved ids stay as sent"
    );

    let (status, second) = post(
        &app,
        &event(
            "e-acc",
            "2024-10-03 12:01:00Z",
            part("acc-9", "PR-ACCESS-FIBER", &[]),
        ),
        "",
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let docs = values(&second);
    assert_eq!(
        docs.len(),
        2,
        "the new part, then the rewritten ADI: {second}"
    );
    let acc_id = docs[0]["id"].as_str().unwrap();
    assert_eq!(docs[1]["id"], adi["id"]);
    assert_eq!(relationship_ids(&docs[1]), vec![acc_id.to_owned()]);
    assert_eq!(
        docs[1]["productRelationship"][0]["href"],
        format!("/products/{acc_id}")
    );

    let stored: Value = app
        .get_authorized(&format!("/products/{}", adi["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored, docs[1]);
    let history: Value = app
        .get_authorized(&format!(
            "/products/{}/history",
            adi["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "the rewrite is a change: {history}"
    );
    assert_eq!(history[1]["event"]["id"], "e-acc");
}

#[tokio::test]
async fn as_adi_package_on_a_single_part_returns_the_other_parts_too() {
    let app = spawn_app().await;
    let (status, _) = post(
        &app,
        &event(
            "pkg-2",
            "2024-10-03 12:00:00Z",
            json!([
                part("adi-2", "PR-ADI-EMBEDDED-BASE", &["acc-2", "port-2"]),
                part("acc-2", "PR-ACCESS-FIBER", &["adi-2"]),
                part("port-2", "PR-PORT-10G", &["adi-2"]),
            ]),
        ),
        "",
    )
    .await;
    assert_eq!(status, 201);

    let mut update = part("port-2", "PR-PORT-10G", &["adi-2"]);
    update["status"] = json!("suspended");
    let (status, plain) = post(
        &app,
        &event("port-upd", "2024-10-04 12:00:00Z", update.clone()),
        "",
    )
    .await;
    assert_eq!(status, 201, "{plain}");
    assert_eq!(
        values(&plain).len(),
        1,
        "without the flag only the posted part: {plain}"
    );

    update["status"] = json!("active");
    let (status, body) = post(
        &app,
        &event("port-upd-2", "2024-10-05 12:00:00Z", update),
        "as-adi-package=true",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let docs = values(&body);
    assert_eq!(docs.len(), 3, "{body}");
    assert_eq!(docs[0]["name"], "part port-2");
    assert_eq!(docs[0]["status"], "active");
    assert_eq!(docs[1]["name"], "part adi-2", "the rest in package order");
    assert_eq!(docs[2]["name"], "part acc-2");
    assert!(body["responseData"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| is_uuid(e["headers"]["id"].as_str().unwrap())));
}

#[tokio::test]
async fn relationships_to_a_pinv_id_resolve_directly() {
    let app = spawn_app().await;
    let (_, first) = post(
        &app,
        &event(
            "e1",
            "2024-10-03 12:00:00Z",
            part("acc-5", "PR-ACCESS-FIBER", &[]),
        ),
        "",
    )
    .await;
    let acc = values(&first)[0]["id"].as_str().unwrap().to_owned();
    let (status, second) = post(
        &app,
        &event(
            "e2",
            "2024-10-03 12:00:01Z",
            part("adi-5", "PR-ADI-EMBEDDED-BASE", &[&acc]),
        ),
        "as-adi-package=true",
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let docs = values(&second);
    assert_eq!(relationship_ids(&docs[0]), vec![acc.clone()]);
    assert_eq!(
        docs.len(),
        2,
        "the ADI became the ACCESS part's package root: {second}"
    );
    assert_eq!(docs[1]["id"], acc);
}

/// The reference request is sent as `POST /products?as-adi-package=` (no value): a flag
/// given without a value is true, on POST and GET alike.
#[tokio::test]
async fn as_adi_package_without_a_value_is_true() {
    let app = spawn_app().await;
    for (n, query) in ["as-adi-package=", "as-adi-package"]
        .into_iter()
        .enumerate()
    {
        let mut req = crate::helpers::seed_request();
        req["headers"]["id"] = json!(format!("flag-{n}"));
        let res = app.post_products_query(&req, &["billing"], query).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert!(status == 201 || status == 200, "{query}: {status} {body}");
        let id = values(&body)[0]["id"].as_str().unwrap().to_owned();

        let res = app.get_authorized(&format!("/products/{id}?{query}")).await;
        assert_eq!(res.status().as_u16(), 200, "{query}");
        let package: Value = res.json().await.unwrap();
        assert!(
            package["responseData"].is_array(),
            "{query}: the package form, not the bare document: {package}"
        );
    }
}
