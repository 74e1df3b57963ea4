//! `GET /health/live` and `GET /health/ready`.

use std::sync::Arc;

use crate::helpers::*;

#[tokio::test]
async fn live_is_200() {
    let app = spawn_shell_app().await;
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test]
async fn ready_is_200_when_the_store_answers() {
    let app = spawn_shell_app().await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test]
async fn ready_is_503_json_when_the_store_is_down() {
    let app = spawn_shell_app_with(test_settings(), Arc::new(DownStore)).await;
    let res = app.get("/health/ready").await;
    assert!(res.headers().get("retry-after").is_some());
    assert_error(res, 503, "STORE_UNAVAILABLE").await;
    // Liveness does not depend on the store.
    assert_eq!(app.get("/health/live").await.status(), 200);
}
