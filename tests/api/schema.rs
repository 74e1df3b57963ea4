//! `GET /schema/{file}`.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn unknown_schema_file_is_404_json() {
    let app = spawn_shell_app().await;
    assert_error(app.get("/schema/nope.json").await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn product_schema_of_the_example_is_served() {
    let app = spawn_shell_app().await;
    let res = app.get("/schema/AttProduct_tmf637.schema.json").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.contains("json"), "{ct}");
    let schema: Value = res.json().await.unwrap();
    assert!(schema.is_object());
}
