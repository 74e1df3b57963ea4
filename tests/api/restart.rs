//! The embedded store keeps acknowledged products across a restart.

use pinv::config::StoreSetting;
use pinv::startup::Application;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn acknowledged_product_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings();
    settings.store.location = StoreSetting::Embedded(dir.path().join("data"));

    let app = spawn_built(Application::build(settings.clone()).await.unwrap());
    let res = app.post_products(&seed_request(), &["billing"]).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let stored = body["responseData"][0]["value"].clone();
    app.stop().await;

    let app = spawn_built(Application::build(settings).await.unwrap());
    let res = app
        .get_authorized(&format!("/products/{}", stored["id"].as_str().unwrap()))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), stored);
}
