//! The TMF637 writes over HTTP: bare POST, PATCH (merge and JSON patch), DELETE by a source,
//! by the last source and by an admin, the retraction route of `/products`, and the TMF
//! error shape.

use serde_json::{json, Value};

use crate::helpers::{admin_token, assert_tmf_error, spawn_app, token, TestApp};

const PRODUCT: &str = "/tmf-api/productInventory/v5/product";

impl TestApp {
    /// `POST /product` with a token for `sources` and optional `PINV-Source` and
    /// `Idempotency-Key` headers.
    async fn tmf_post(
        &self,
        body: &Value,
        sources: &[&str],
        source: Option<&str>,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(PRODUCT))
            .bearer_auth(token(sources))
            .json(body);
        if let Some(s) = source {
            req = req.header("PINV-Source", s);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.expect("request sent")
    }

    /// `PATCH /product/{id}` as the only source of the token.
    async fn tmf_patch(
        &self,
        id: &str,
        source: &str,
        content_type: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("{PRODUCT}/{id}")))
            .bearer_auth(token(&[source]))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// `DELETE` of `path` with `bearer`.
    async fn delete_with(&self, path: &str, bearer: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request sent")
    }

    async fn product(&self, id: &str) -> (u16, Value) {
        let res = self.get_authorized(&format!("/products/{id}")).await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn product(local_id: &str, name: &str) -> Value {
    json!({"@type": "Product", "id": local_id, "name": name, "status": "active"})
}

/// Posts `body` as `source` and returns the PINV id.
async fn create(app: &TestApp, source: &str, body: &Value) -> String {
    let res = app.tmf_post(body, &[source], None, None).await;
    assert_eq!(res.status().as_u16(), 201, "{:?}", res.text().await);
    let doc: Value = res.json().await.unwrap();
    doc["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bare_post_without_a_key_stores_a_new_event_each_time() {
    let app = spawn_app().await;
    let res = app
        .tmf_post(&product("b-1", "first"), &["billing"], None, None)
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let doc: Value = res.json().await.unwrap();
    let id = doc["id"].as_str().unwrap();
    assert_eq!(location, format!("{PRODUCT}/{id}"));
    assert_eq!(doc["name"], "first");
    let (status, stored) = app.product(id).await;
    assert_eq!((status, &stored), (200, &doc));

    // Same local id, no key: a new event, merged into the same product.
    let res = app
        .tmf_post(&product("b-1", "second"), &["billing"], None, None)
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["id"], id);
    assert_eq!(again["name"], "second");
    let sources: Value = app
        .get_authorized(&format!("/products/{id}/sources"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sources[0]["source"], "billing");
    assert_eq!(sources[0]["value"]["name"], "second");
    assert!(crate::helpers::is_uuid(
        sources[0]["eventId"].as_str().unwrap()
    ));
    app.stop().await;
}

#[tokio::test]
async fn a_bare_post_with_an_idempotency_key_is_stored_once() {
    let app = spawn_app().await;
    let body = product("b-2", "once");
    let res = app
        .tmf_post(&body, &["*"], Some("billing"), Some("k-1"))
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let first: Value = res.json().await.unwrap();

    let res = app
        .tmf_post(&body, &["*"], Some("billing"), Some("k-1"))
        .await;
    assert_eq!(res.status().as_u16(), 200, "the same key and body again");
    assert_eq!(res.json::<Value>().await.unwrap(), first);

    let res = app
        .tmf_post(
            &product("b-2", "other"),
            &["*"],
            Some("billing"),
            Some("k-1"),
        )
        .await;
    assert_tmf_error(res, 409, "EVENT_ID_REUSED").await;
    let sources: Value = app
        .get_authorized(&format!(
            "/products/{}/sources",
            first["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sources[0]["eventId"], "k-1");
    app.stop().await;
}

#[tokio::test]
async fn the_writing_source_must_be_known_and_allowed() {
    let app = spawn_app().await;
    let body = product("b-3", "x");
    let res = app.tmf_post(&body, &["*"], None, None).await;
    let err = assert_tmf_error(res, 400, "BAD_HEADER").await;
    assert!(
        err["message"].as_str().unwrap().contains("PINV-Source"),
        "{err}"
    );
    let res = app.tmf_post(&body, &["billing", "crm"], None, None).await;
    assert_tmf_error(res, 400, "BAD_HEADER").await;
    let res = app.tmf_post(&body, &["billing"], Some("crm"), None).await;
    assert_tmf_error(res, 403, "FORBIDDEN_SOURCE").await;
    let res = app.tmf_post(&body, &["*"], Some("no:colons"), None).await;
    assert_tmf_error(res, 400, "BAD_HEADER").await;
    let res = app
        .tmf_post(&body, &["billing"], None, Some(&"k".repeat(300)))
        .await;
    assert_tmf_error(res, 400, "BAD_HEADER").await;
    // Validation pointers point into the product as sent.
    let res = app
        .tmf_post(&json!({"name": "no id"}), &["billing"], None, None)
        .await;
    let err = assert_tmf_error(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(err["details"][0]["pointer"], "", "{err}");
    let res = app
        .tmf_post(&json!([product("b-3", "x")]), &["billing"], None, None)
        .await;
    assert_tmf_error(res, 400, "VALIDATION_FAILED").await;
    // An unauthenticated call is answered in the TMF shape too.
    let res = app
        .client
        .post(app.url(PRODUCT))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_tmf_error(res, 401, "UNAUTHORIZED").await;
    app.stop().await;
}

#[tokio::test]
async fn a_merge_patch_changes_only_the_writing_sources_contribution() {
    let app = spawn_app().await;
    let id = create(&app, "billing", &product("b-4", "billing name")).await;

    // A source that has not contributed starts from {}: no id needed.
    let res = app
        .tmf_patch(
            &id,
            "inventory",
            "application/merge-patch+json",
            &json!({"description": "from inventory"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["name"], "billing name");
    assert_eq!(doc["description"], "from inventory");

    // Removing a member with null.
    let res = app
        .tmf_patch(
            &id,
            "billing",
            "application/merge-patch+json",
            &json!({"name": null, "status": "suspended"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let sources: Value = app
        .get_authorized(&format!("/products/{id}/sources"))
        .await
        .json()
        .await
        .unwrap();
    let billing = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"] == "billing")
        .unwrap();
    assert_eq!(
        billing["value"],
        json!({"@type": "Product", "id": "b-4", "status": "suspended"})
    );
    let history: Value = app
        .get_authorized(&format!("/products/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    app.stop().await;
}

#[tokio::test]
async fn a_json_patch_applies_or_fails_with_a_pointer() {
    let app = spawn_app().await;
    let id = create(&app, "billing", &product("b-5", "v1")).await;
    let ops = json!([
        {"op": "test", "path": "/name", "value": "v1"},
        {"op": "replace", "path": "/name", "value": "v2"}
    ]);
    let res = app
        .tmf_patch(&id, "billing", "application/json-patch+json", &ops)
        .await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "v2");

    let res = app
        .tmf_patch(&id, "billing", "application/json-patch+json", &ops)
        .await;
    let err = assert_tmf_error(res, 409, "PATCH_TEST_FAILED").await;
    assert_eq!(err["details"][0]["pointer"], "/0");
    let res = app
        .tmf_patch(
            &id,
            "billing",
            "application/json-patch+json",
            &json!([{"op": "remove", "path": "/nothing/here"}]),
        )
        .await;
    let err = assert_tmf_error(res, 400, "PATCH_INVALID").await;
    assert_eq!(err["details"][0]["pointer"], "/0");
    let res = app
        .tmf_patch(
            &id,
            "billing",
            "application/json-patch+json",
            &json!({"op": "x"}),
        )
        .await;
    assert_tmf_error(res, 400, "PATCH_INVALID").await;
    let res = app
        .tmf_patch(&id, "billing", "application/json", &json!({"name": "v3"}))
        .await;
    assert_tmf_error(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // The patched contribution is validated like a POST.
    let res = app
        .tmf_patch(
            &id,
            "billing",
            "application/merge-patch+json",
            &json!({"externalIdentifier": []}),
        )
        .await;
    let err = assert_tmf_error(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(err["details"][0]["pointer"], "/externalIdentifier", "{err}");
    let res = app
        .tmf_patch(
            "00000000-0000-0000-0000-000000000001",
            "billing",
            "application/merge-patch+json",
            &json!({}),
        )
        .await;
    assert_tmf_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.product(&id).await.1["name"], "v2");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sources_patching_one_product_at_once_lose_nothing() {
    let app = std::sync::Arc::new(spawn_app().await);
    let id = create(&app, "billing", &product("b-6", "start")).await;
    let rounds = 10;
    let mut tasks = Vec::new();
    for (source, media) in [
        ("inventory", "application/merge-patch+json"),
        ("billing", "application/json-patch+json"),
    ] {
        let (app, id) = (app.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..rounds {
                let body = if media == "application/json-patch+json" {
                    json!([{"op": "add", "path": format!("/characteristic/-"),
                            "value": {"name": format!("{source}-{n}"), "value": n}}])
                } else {
                    json!({"description": format!("{source}-{n}")})
                };
                let body = if n == 0 && media == "application/json-patch+json" {
                    json!([{"op": "add", "path": "/characteristic", "value": []},
                           body[0].clone()])
                } else {
                    body
                };
                let res = app.tmf_patch(&id, source, media, &body).await;
                assert_eq!(res.status().as_u16(), 200, "{:?}", res.text().await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sources: Value = app
        .get_authorized(&format!("/products/{id}/sources"))
        .await
        .json()
        .await
        .unwrap();
    let of = |s: &str| {
        sources
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["source"] == s)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(
        of("inventory")["description"],
        format!("inventory-{}", rounds - 1)
    );
    let names: Vec<String> = of("billing")["characteristic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..rounds).map(|n| format!("billing-{n}")).collect();
    assert_eq!(names, expected, "every JSON patch landed, in order");
    let history: Value = app
        .get_authorized(&format!("/products/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1 + 2 * rounds);
    std::sync::Arc::try_unwrap(app).ok().unwrap().stop().await;
}

#[tokio::test]
async fn deleting_one_of_two_contributions_re_merges_and_the_last_deletes() {
    let app = spawn_app().await;
    let id = create(&app, "billing", &product("b-7", "billing name")).await;
    let res = app
        .tmf_post(
            &json!({"id": id, "description": "from inventory"}),
            &["inventory"],
            None,
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 201, "{:?}", res.text().await);

    let res = app
        .delete_with(&format!("{PRODUCT}/{id}"), &token(&["billing"]))
        .await;
    assert_eq!(res.status().as_u16(), 204);
    let (status, doc) = app.product(&id).await;
    assert_eq!(status, 200);
    assert_eq!(doc["description"], "from inventory");
    assert!(doc.get("name").is_none(), "{doc}");
    // A second retraction by the same source finds nothing to retract.
    let res = app
        .delete_with(&format!("{PRODUCT}/{id}"), &token(&["billing"]))
        .await;
    assert_tmf_error(res, 404, "NOT_FOUND").await;
    // Billing's local id is free again: posting it makes a new product.
    let other = create(&app, "billing", &product("b-7", "new")).await;
    assert_ne!(other, id);

    // The last contribution, retracted on PINV's own surface.
    let res = app
        .delete_with(
            &format!("/products/{id}/sources/inventory"),
            &token(&["inventory"]),
        )
        .await;
    assert_eq!(res.status().as_u16(), 204);
    let res = app.get_authorized(&format!("/products/{id}")).await;
    crate::helpers::assert_error(res, 404, "NOT_FOUND").await;
    let history: Value = app
        .get_authorized(&format!("/products/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["deleted"], true, "{history}");
    app.stop().await;
}

#[tokio::test]
async fn retraction_on_the_products_surface_checks_the_token_and_uses_its_error_shape() {
    let app = spawn_app().await;
    let id = create(&app, "billing", &product("b-8", "x")).await;
    let res = app
        .delete_with(&format!("/products/{id}/sources/billing"), &token(&["crm"]))
        .await;
    crate::helpers::assert_error(res, 403, "FORBIDDEN_SOURCE").await;
    let res = app
        .delete_with(&format!("/products/{id}/sources/crm"), &token(&["crm"]))
        .await;
    crate::helpers::assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.product(&id).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_deletes_the_whole_product_and_its_keys_are_free() {
    let app = spawn_app().await;
    let id = create(&app, "billing", &product("b-9", "x")).await;
    let res = app
        .tmf_patch(
            &id,
            "inventory",
            "application/merge-patch+json",
            &json!({"id": "i-9"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let res = app
        .delete_with(&format!("{PRODUCT}/{id}"), &admin_token())
        .await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(app.product(&id).await.0, 404);
    let res = app
        .delete_with(&format!("{PRODUCT}/{id}"), &admin_token())
        .await;
    assert_tmf_error(res, 404, "NOT_FOUND").await;
    let again = create(&app, "inventory", &product("i-9", "y")).await;
    assert_ne!(again, id, "the freed key makes a new product");
    app.stop().await;
}

#[tokio::test]
async fn a_patch_supersedes_a_contribution_with_a_later_event_time() {
    let app = spawn_app().await;
    let event = crate::helpers::small_event(
        "billing",
        "future-1",
        "2999-01-01T00:00:00.123456Z",
        product("b-10", "from the future"),
    );
    let res = app.post_products(&event, &["billing"]).await;
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    let id = body["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .tmf_patch(
            &id,
            "billing",
            "application/merge-patch+json",
            &json!({"name": "patched"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "patched");
    assert_eq!(app.product(&id).await.1["name"], "patched");
    app.stop().await;
}

#[tokio::test]
async fn repeating_the_event_of_a_deleted_product_is_not_found() {
    let app = spawn_app().await;
    let body = product("b-11", "x");
    let res = app.tmf_post(&body, &["billing"], None, Some("k-11")).await;
    assert_eq!(res.status().as_u16(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .delete_with(&format!("{PRODUCT}/{id}"), &token(&["billing"]))
        .await;
    assert_eq!(res.status().as_u16(), 204);
    let res = app.tmf_post(&body, &["billing"], None, Some("k-11")).await;
    assert_tmf_error(res, 404, "NOT_FOUND").await;
    app.stop().await;
}

#[tokio::test]
async fn a_patch_whose_keys_lead_to_another_product_is_an_identity_conflict() {
    let app = spawn_app().await;
    let first = create(&app, "billing", &product("b-12", "first")).await;
    let second = create(&app, "billing", &product("b-13", "second")).await;
    let res = app
        .tmf_patch(
            &second,
            "billing",
            "application/merge-patch+json",
            &json!({"id": "b-12"}),
        )
        .await;
    let err = assert_tmf_error(res, 409, "IDENTITY_CONFLICT").await;
    assert!(err["message"].as_str().unwrap().contains(&first), "{err}");
    assert_eq!(app.product(&second).await.1["name"], "second");
    app.stop().await;
}
