//! `docs/reference.md` §3.4: every failure is the error JSON with a stable code.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_shell_app().await;
    for ct in [
        "text/plain",
        "application/xml",
        "application/json; charset=latin1",
    ] {
        let res = app
            .client
            .post(app.url("/products"))
            .bearer_auth(token(&["*"]))
            .header("Content-Type", ct)
            .body(seed_request().to_string())
            .send()
            .await
            .unwrap();
        assert_error(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    }
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .post(app.url("/products"))
        .bearer_auth(token(&["*"]))
        .body(seed_request().to_string())
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn token_is_checked_before_content_type() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .post(app.url("/products"))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = spawn_shell_app().await;
    let big = json!({"headers": {}, "value": {"name": "x".repeat(2 * 1024 * 1024)}});
    let res = app.post_products(&big, &["*"]).await;
    assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn configured_limit_applies() {
    let mut settings = test_settings();
    settings.server.max_body_bytes = 100;
    let app = spawn_shell_app_with(settings, Arc::new(EmptyStore)).await;
    let res = app
        .post_products(&json!({"pad": "y".repeat(200)}), &["*"])
        .await;
    assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn bad_json_is_400_malformed_json_with_position() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .post(app.url("/products"))
        .bearer_auth(token(&["*"]))
        .header("Content-Type", "application/json")
        .body("{\"headers\": {,}")
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 400, "MALFORMED_JSON").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 1 column"), "{message}");
}

#[tokio::test]
async fn empty_body_is_400_malformed_json() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .post(app.url("/products"))
        .bearer_auth(token(&["*"]))
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "MALFORMED_JSON").await;
}

#[tokio::test]
async fn ten_thousand_levels_of_nesting_is_400_not_a_crash() {
    let app = spawn_shell_app().await;
    let deep = format!(
        "{{\"headers\": {{}}, \"value\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let res = app
        .client
        .post(app.url("/products"))
        .bearer_auth(token(&["*"]))
        .header("Content-Type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // The server is still there.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test]
async fn bad_as_adi_package_value_is_400_bad_query() {
    let app = spawn_shell_app().await;
    let res = app
        .post_products_query(&seed_request(), &["*"], "as-adi-package=maybe")
        .await;
    assert_error(res, 400, "BAD_QUERY").await;
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let app = spawn_shell_app().await;
    assert_error(app.get("/nope").await, 404, "ROUTE_NOT_FOUND").await;
    assert_error(app.get("/products/a/b/c").await, 404, "ROUTE_NOT_FOUND").await;
}

#[tokio::test]
async fn wrong_method_is_405_json_with_allow() {
    let app = spawn_shell_app().await;
    let res = app
        .client
        .delete(app.url("/products"))
        .send()
        .await
        .unwrap();
    let allow = res
        .headers()
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn product_id_that_is_not_a_uuid_is_404() {
    let app = spawn_shell_app().await;
    for path in [
        "/products/41-1234567",
        "/products/41-1234567/sources",
        "/products/41-1234567/history",
    ] {
        assert_error(app.get_authorized(path).await, 404, "NOT_FOUND").await;
    }
}

#[tokio::test]
async fn bad_limit_or_offset_is_400_bad_query() {
    let app = spawn_shell_app().await;
    for q in ["limit=abc", "limit=1001", "limit=0", "offset=-1"] {
        let res = app.get_authorized(&format!("/products?{q}")).await;
        assert_error(res, 400, "BAD_QUERY").await;
    }
}

#[tokio::test]
async fn store_outage_is_503_with_retry_after() {
    let app = spawn_shell_app_with(test_settings(), Arc::new(DownStore)).await;
    let res = app.get_authorized("/products").await;
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    assert_error(res, 503, "STORE_UNAVAILABLE").await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_and_the_server_stays_up() {
    let app = spawn_shell_app_with(test_settings(), Arc::new(PanickingStore)).await;
    let res = app.get_authorized("/products").await;
    assert_error(res, 500, "INTERNAL").await;
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test]
async fn offset_beyond_the_largest_number_is_400_too_large() {
    let app = spawn_shell_app().await;
    let res = app
        .get_authorized("/products?offset=18446744073709551616")
        .await;
    let body = assert_error(res, 400, "BAD_QUERY").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'offset'") && message.contains("too large"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_percent_encoding_in_the_query_is_400_naming_the_parameter() {
    let app = spawn_shell_app().await;
    for path in [
        "/products?status=%ZZ",
        "/products?status=%FF",
        "/products/00000000-0000-4000-8000-000000000000?status=%ZZ",
    ] {
        let body = assert_error(app.get_authorized(path).await, 400, "BAD_QUERY").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("'status'"), "{path}: {message}");
    }
    let res = app
        .post_products_query(&seed_request(), &["*"], "status=%ZZ")
        .await;
    assert_error(res, 400, "BAD_QUERY").await;
}

/// Sends the headers of a `POST /products` declaring `length` body bytes, then `sent` of
/// them, and keeps the connection open.
async fn start_slow_post(app: &TestApp, length: usize, sent: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /products HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        token(&["*"])
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Reads what the server answers until it closes the connection (bounded, so a server
/// that never answers fails the test instead of hanging it).
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers a slow body instead of waiting for it")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn body_that_does_not_arrive_in_time_is_408() {
    let mut settings = test_settings();
    settings.server.body_timeout = std::time::Duration::from_secs(1);
    let app = spawn_shell_app_with(settings, Arc::new(EmptyStore)).await;
    let mut stream = start_slow_post(&app, 200, b"{\"headers\": ").await;
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"REQUEST_TIMEOUT""#), "{answer}");
}

#[tokio::test]
async fn bodies_beyond_the_budget_are_503_server_busy_with_retry_after() {
    let mut settings = test_settings();
    settings.server.max_body_bytes = 10_000;
    settings.server.body_budget_bytes = 10_000;
    // The holder keeps its share for longer than a waiter waits for one.
    settings.server.body_timeout = std::time::Duration::from_secs(10);
    let app = spawn_shell_app_with(settings, Arc::new(EmptyStore)).await;
    let holder = start_slow_post(&app, 10_000, b"{").await;
    // The holder's headers may not have reached its handler yet: ask until they have (a
    // server without a budget never answers 503).
    let mut busy = None;
    for _ in 0..50 {
        let res = app
            .post_products(&json!({"headers": {}, "value": {}}), &["*"])
            .await;
        if res.status() == 503 {
            busy = Some(res);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let res = busy.expect("a body beyond the budget is refused");
    assert_eq!(res.headers()["retry-after"], "1");
    let body = assert_error(res, 503, "SERVER_BUSY").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at once"));
    // With the holder gone, its share is back.
    drop(holder);
    let res = app
        .post_products(&json!({"headers": {}, "value": {}}), &["*"])
        .await;
    assert_eq!(res.status(), 400);
}
