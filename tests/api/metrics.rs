//! `GET /metrics`.

use crate::helpers::*;

async fn metrics_text(app: &TestApp) -> String {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    res.text().await.unwrap()
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_not_raw_path() {
    let app = spawn_shell_app().await;
    for id in [
        "9ffb3182-409d-48cb-a266-1379117bff58",
        "0ffb3182-409d-48cb-a266-1379117bff58",
    ] {
        app.get_authorized(&format!("/products/{id}")).await;
    }
    let text = metrics_text(&app).await;
    assert!(
        text.contains(
            r#"pinv_http_requests_total{method="GET",route="/products/{id}",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(!text.contains("9ffb3182"), "raw ids must not become labels");
    assert!(text.contains("pinv_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn unknown_paths_share_one_label() {
    let app = spawn_shell_app().await;
    app.get("/a").await;
    app.get("/b").await;
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"pinv_http_requests_total{method="GET",route="unmatched",status="404"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn post_errors_are_counted_by_code() {
    let app = spawn_shell_app().await;
    app.client
        .post(app.url("/products"))
        .bearer_auth(token(&["*"]))
        .header("Content-Type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"pinv_post_outcomes_total{code="MALFORMED_JSON",outcome="error"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn made_up_methods_share_one_label() {
    let app = spawn_shell_app().await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let res = app
            .client
            .request(method, app.url("/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405);
    }
    let text = metrics_text(&app).await;
    assert!(
        text.contains(
            r#"pinv_http_requests_total{method="OTHER",route="/health/live",status="405"} 50"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("M49"),
        "made-up methods must not become labels"
    );
}
