//! `GET /openapi.json` documents every route the app serves.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = spawn_shell_app().await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = pinv::api::ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_listed_route_is_actually_served() {
    let app = spawn_shell_app().await;
    for r in pinv::api::ROUTES {
        let path = r
            .path
            .replace("{id}", "9ffb3182-409d-48cb-a266-1379117bff58")
            .replace("{file}", "x.json");
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(r.method.as_str().as_bytes()).unwrap(),
                app.url(&path),
            )
            .bearer_auth(token(&["*"]))
            .send()
            .await
            .unwrap();
        if res.status() == 404 {
            let body: Value = res.json().await.unwrap();
            assert_ne!(
                body["error"]["code"], "ROUTE_NOT_FOUND",
                "{} {}",
                r.method, r.path
            );
        }
    }
}
