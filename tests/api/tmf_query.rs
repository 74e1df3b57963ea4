//! The TMF630 query language on both list routes, and the TMF637 read routes, against
//! hand-computed expectations (runs on every store through `PINV_TEST_API_STORE`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::*;

const TMF: &str = "/tmf-api/productInventory/v5/product";
const LISTS: [&str; 2] = ["/products", TMF];

fn product(
    local: &str,
    name: &str,
    status: &str,
    start: Option<&str>,
    speed: i64,
    roles: &[&str],
) -> Value {
    let mut p = json!({
        "@type": "Product",
        "id": local,
        "name": name,
        "status": status,
        "productCharacteristic": [{"@type": "IntegerCharacteristic", "name": "speed", "value": speed}],
        "relatedParty": roles.iter().map(|r| json!({
            "@type": "RelatedPartyOrPartyRole",
            "role": r,
            "partyOrPartyRole": {"@type": "Organization", "id": format!("{local}-{r}"), "name": r}
        })).collect::<Vec<_>>(),
    });
    if let Some(start) = start {
        p["startDate"] = json!(start);
    }
    p
}

/// Four products, by label; returns label -> PINV id.
async fn seed(app: &TestApp) -> BTreeMap<&'static str, String> {
    let products = [
        (
            "P1",
            product(
                "L1",
                "Bravo",
                "active",
                Some("2024-01-01T00:00:00Z"),
                100,
                &["Customer"],
            ),
        ),
        (
            "P2",
            product(
                "L2",
                "alpha",
                "suspended",
                Some("2024-06-01T02:00:00+02:00"),
                20,
                &["User", "Customer"],
            ),
        ),
        ("P3", product("L3", "Charlie", "active", None, 5, &[])),
        (
            "P4",
            product(
                "L4",
                "Bravo",
                "terminated",
                Some("2023-12-31T23:00:00-02:00"),
                100,
                &["User"],
            ),
        ),
    ];
    let mut ids = BTreeMap::new();
    for (i, (label, value)) in products.into_iter().enumerate() {
        let event = small_event(
            "billing",
            &format!("e{i}"),
            "2024-10-03 12:00:00.000Z",
            value,
        );
        let res = app.post_products(&event, &["billing"]).await;
        assert_eq!(res.status(), 201, "{label}");
        let body: Value = res.json().await.unwrap();
        ids.insert(
            label,
            body["responseData"][0]["value"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids
}

/// The labels of the listed products, in answer order, and the two count headers.
async fn list(
    app: &TestApp,
    base: &str,
    query: &str,
    ids: &BTreeMap<&str, String>,
) -> (Vec<String>, String, String) {
    let res = app.get_authorized(&format!("{base}?{query}")).await;
    assert_eq!(
        res.status(),
        200,
        "{base}?{query}: {}",
        res.text().await.unwrap_or_default()
    );
    let header = |name: &str| res.headers()[name].to_str().unwrap().to_owned();
    let (total, count) = (header("X-Total-Count"), header("X-Result-Count"));
    let items: Vec<Value> = res.json().await.unwrap();
    let labels = items
        .iter()
        .map(|d| {
            let id = d["id"].as_str().unwrap();
            ids.iter()
                .find(|(_, v)| *v == id)
                .map(|(k, _)| (*k).to_owned())
                .unwrap()
        })
        .collect();
    (labels, total, count)
}

/// `labels` in PINV id order (the order of an unsorted list, and of sort ties).
fn by_id(ids: &BTreeMap<&str, String>, labels: &[&str]) -> Vec<String> {
    let mut v: Vec<&str> = labels.to_vec();
    v.sort_by_key(|l| ids[l].clone());
    v.into_iter().map(str::to_owned).collect()
}

#[tokio::test]
async fn every_operator_on_both_list_routes() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    let cases: &[(&str, &[&str])] = &[
        ("status=active", &["P1", "P3"]),
        ("status=active,suspended", &["P1", "P2", "P3"]),
        ("status!=active", &["P2", "P4"]),
        ("status.ne=active,terminated", &["P2"]),
        ("startDate>=2024-01-01T00:30:00Z", &["P2", "P4"]),
        ("startDate.gt=2024-01-01T00:00:00Z", &["P2", "P4"]),
        ("startDate.gte=2024-01-01", &["P1", "P2", "P4"]),
        ("startDate<2024-01-01T01:00:00Z", &["P1"]),
        ("startDate.lte=2024-01-01T01:00:00%2B00:00", &["P1", "P4"]),
        ("startDate.lt=2024-06-01", &["P1", "P4"]),
        ("startDate<=2024-06-01", &["P1", "P2", "P4"]),
        ("startDate=2024-06-01T00:00:00Z", &["P2"]),
        ("productCharacteristic.value.gt=20", &["P1", "P4"]),
        ("productCharacteristic.value>=20", &["P1", "P2", "P4"]),
        ("productCharacteristic.value<=20", &["P2", "P3"]),
        ("productCharacteristic.value.lt=20", &["P3"]),
        ("productCharacteristic.value=100.0", &["P1", "P4"]),
        ("relatedParty.role=User", &["P2", "P4"]),
        ("relatedParty.partyOrPartyRole.id=L2-Customer", &["P2"]),
        ("name.gt=Bravo", &["P2", "P3"]),
        ("name<Charlie", &["P1", "P4"]),
        ("status=active&startDate.gte=2024-01-01", &["P1"]),
        ("status=none", &[]),
    ];
    for base in LISTS {
        for (query, expected) in cases {
            let (got, total, count) = list(&app, base, query, &ids).await;
            assert_eq!(got, by_id(&ids, expected), "{base}?{query}");
            assert_eq!(total, expected.len().to_string(), "{base}?{query}");
            assert_eq!(count, expected.len().to_string(), "{base}?{query}");
        }
    }
}

#[tokio::test]
async fn sort_is_stable_with_absent_values_last_and_pages_after_sorting() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    let bravos = by_id(&ids, &["P1", "P4"]);
    let cat = |parts: &[&[String]]| parts.concat();
    let s = |l: &str| vec![l.to_owned()];
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("sort=name", cat(&[&bravos, &s("P3"), &s("P2")])),
        ("sort=-name", cat(&[&s("P2"), &s("P3"), &bravos])),
        (
            "sort=startDate",
            vec!["P1".into(), "P4".into(), "P2".into(), "P3".into()],
        ),
        (
            "sort=-startDate",
            vec!["P2".into(), "P4".into(), "P1".into(), "P3".into()],
        ),
        (
            "sort=status,-startDate",
            vec!["P1".into(), "P3".into(), "P2".into(), "P4".into()],
        ),
        (
            "sort=name,-productCharacteristic.value&status!=suspended",
            cat(&[&bravos, &s("P3")]),
        ),
    ];
    for base in LISTS {
        for (query, expected) in &cases {
            let (got, total, _) = list(&app, base, query, &ids).await;
            assert_eq!(&got, expected, "{base}?{query}");
            assert_eq!(total, expected.len().to_string(), "{base}?{query}");
        }
        let (got, total, count) = list(&app, base, "sort=-startDate&offset=1&limit=2", &ids).await;
        assert_eq!(
            (got, total.as_str(), count.as_str()),
            (vec!["P4".to_owned(), "P1".to_owned()], "4", "2")
        );
    }
}

#[tokio::test]
async fn what_pinv_does_not_understand_is_bad_query_naming_it() {
    let app = spawn_app().await;
    for base in LISTS {
        for (query, named) in [
            ("status=~active", "status"),
            ("status==active", "status"),
            ("startDate.after=2024-01-01", "startDate.after"),
            ("status.eq=active", "status.eq"),
            ("startDate.gte=", "startDate.gte"),
            ("limit>=3", "limit"),
            ("sort=", "sort"),
            ("sort=a..b", "sort"),
            ("fields=a..b", "fields"),
            ("as-adi-package=true", "as-adi-package"),
            ("limit=0", "limit"),
        ] {
            let res = app.get_authorized(&format!("{base}?{query}")).await;
            let body = if base == TMF {
                assert_tmf_error(res, 400, "BAD_QUERY").await
            } else {
                assert_error(res, 400, "BAD_QUERY").await["error"].take()
            };
            let message = body["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("query parameter '{named}'")),
                "{base}?{query}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn nested_fields_on_lists_and_by_id() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    let p2 = &ids["P2"];
    let tmf_href = format!("{}{TMF}/{p2}", app.address);
    let expected = |href: &str| {
        json!({
            "id": p2, "href": href, "@type": "Product", "name": "alpha",
            "relatedParty": [{"role": "User"}, {"role": "Customer"}]
        })
    };
    for (base, href) in [
        ("/products", format!("/products/{p2}")),
        (TMF, tmf_href.clone()),
    ] {
        let res = app
            .get_authorized(&format!(
                "{base}?status=suspended&fields=name,relatedParty.role"
            ))
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!([expected(&href)]),
            "{base}"
        );
    }
    let res = app
        .get_authorized(&format!("{TMF}/{p2}?fields=name,relatedParty.role"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), expected(&tmf_href));
}

#[tokio::test]
async fn tmf_product_by_id_is_the_merged_document_with_an_absolute_href() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    let id = &ids["P1"];
    let own: Value = app
        .get_authorized(&format!("/products/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let res = app.get_authorized(&format!("{TMF}/{id}")).await;
    assert_eq!(res.status(), 200);
    let tmf: Value = res.json().await.unwrap();
    let mut expected = own;
    expected["href"] = json!(format!("{}{TMF}/{id}", app.address));
    assert_eq!(tmf, expected);

    assert_tmf_error(
        app.get_authorized(&format!("{TMF}/{id}?status=active"))
            .await,
        400,
        "BAD_QUERY",
    )
    .await;
    assert_tmf_error(
        app.get_authorized(&format!("{TMF}/{id}?limit=5")).await,
        400,
        "BAD_QUERY",
    )
    .await;
    assert_tmf_error(
        app.get_authorized(&format!("{TMF}/9ffb3182-409d-48cb-a266-1379117bff58"))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_tmf_error(app.get(&format!("{TMF}/{id}")).await, 401, "UNAUTHORIZED").await;
    assert_tmf_error(app.get(TMF).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn the_public_url_makes_the_href_base() {
    let mut settings = test_settings();
    settings.server.public_url = Some("https://pinv.example.com".to_owned());
    let app = spawn_app_with(settings, store_under_test().await).await;
    let ids = seed(&app).await;
    let id = &ids["P3"];
    let doc: Value = app
        .get_authorized(&format!("{TMF}/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["href"],
        json!(format!("https://pinv.example.com{TMF}/{id}"))
    );
    let list: Value = app
        .get_authorized(&format!("{TMF}?status=active&sort=-name"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list[0]["href"],
        json!(format!("https://pinv.example.com{TMF}/{id}"))
    );
}
