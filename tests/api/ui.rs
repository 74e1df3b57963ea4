//! The inspector pages (`/ui/...`): status, login, escaping, links.

use serde_json::{json, Value};

use crate::helpers::*;

const T1: &str = "2024-10-03 12:00:00.000Z";

async fn store(app: &TestApp, name: &str) -> String {
    let mut product = product_with_circuit("B1", "C1", "active");
    product["name"] = json!(name);
    let res = app
        .post_products(&small_event("billing", "e1", T1, product), &["billing"])
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["responseData"][0]["value"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn page(app: &TestApp, path: &str) -> (u16, String) {
    let res = app.get_authorized(path).await;
    let status = res.status().as_u16();
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    (status, res.text().await.unwrap())
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_product_page_escapes_values_and_links_its_product() {
    let app = spawn_app().await;
    let id = store(&app, "<script>alert(1)</script> & co").await;
    let (status, html) = page(&app, &format!("/ui/products/{id}")).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
    // The legend, the contribution and the history entry.
    assert!(
        html.contains("class=\"src src-0\">billing</span>"),
        "{html}"
    );
    assert!(html.contains("set by PINV"));
    assert!(html.contains("revision 1"));
    assert!(html.contains(&format!("href=\"/products/{id}/provenance\"")));
    // The name's value is marked with billing's colour.
    assert!(html.contains("class=\"val src-0\""), "{html}");
}

#[tokio::test]
async fn search_finds_products_by_the_list_filters_and_links_them() {
    let app = spawn_app().await;
    let id = store(&app, "Findable").await;
    let (status, html) = page(&app, "/ui/?name=Findable&status=").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href=\"/ui/products/{id}\"")),
        "{html}"
    );
    assert!(html.contains("1 products match"), "{html}");
    let (_, none) = page(&app, "/ui/?name=Other").await;
    assert!(!none.contains(&id));
    assert!(none.contains("0 products match"));
    let (status, _) = page(&app, "/ui/?limit=0").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_unknown_product_is_a_404_page() {
    let app = spawn_app().await;
    let (status, html) = page(&app, "/ui/products/not-an-id").await;
    assert_eq!(status, 404);
    assert!(html.contains("NOT_FOUND"));
}

#[tokio::test]
async fn without_a_token_the_pages_ask_to_log_in_and_the_login_keeps_it_in_a_cookie() {
    let app = spawn_app().await;
    let id = store(&app, "Mine").await;
    let client = no_redirects();
    let res = client.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("action=\"/ui/login\""));

    let res = client
        .post(app.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none());

    let res = client
        .post(app.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={}&next=%2Fui%2Fproducts%2F{id}",
            token(&["*"])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["pinv_token=", "HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let moved_on = res.text().await.unwrap();
    assert!(
        moved_on.contains(&format!("url=/ui/products/{id}")),
        "{moved_on}"
    );
    let pair = cookie.split(';').next().unwrap();
    let res = client
        .get(app.url(&format!("/ui/products/{id}")))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Mine"));

    let res = client
        .post(app.url("/ui/logout"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/ui/login");
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("pinv_token=;"));
}

#[tokio::test]
async fn login_goes_on_only_to_inspector_pages() {
    let app = spawn_app().await;
    for next in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example%2Fui%2F",
        "%2Fproducts",
    ] {
        let res = no_redirects()
            .post(app.url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}&next={next}", token(&["*"])))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("content=\"0; url=/ui/\""), "{next}: {html}");
        assert!(!html.contains("evil"), "{html}");
    }
}
