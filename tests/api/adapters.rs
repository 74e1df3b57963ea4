//! `POST /adapters/{system}`: the seed payloads of the mobility systems through their
//! shipped adapters (`adapters/*.toml`), on the store under test.

use serde_json::{json, Value};

use crate::helpers::*;

/// Secret values in the fixtures: none may be stored, answered or kept in history.
const SECRETS: [&str; 10] = [
    "S3cr3t-Passw0rd-7781",
    "PP-PIN-90817263",
    "PP-PIN-11223344",
    "482913",
    "771205",
    "554433",
    "998877",
    "318204",
    // The care order's voicemail PIN ("1234") is a substring of ordinary numbers, so
    // the care-order fixtures carry distinctive ones.
    "PIN-7H3-CARE",
    "PIN-9Q2-CARE",
];

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/adapters/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn activation() -> Value {
    fixture("activation.json")
}

/// The care-order seed for the first activated line, with a distinctive PIN.
fn care_order(kind: &str, id: &str) -> Value {
    let mut order = fixture("care-order.json");
    let change = &mut order["careOrderRequest"]["changeRequest"][0];
    change["type"] = json!(kind);
    change["changeRequestId"] = json!(id);
    change["resetVoiceMail"]["pin"] = json!("PIN-7H3-CARE");
    order
}

/// Only what a change request of `kind` says: no contacts, labels or device.
fn bare_change(kind: &str, id: &str, ctn: &str) -> Value {
    json!({"careOrderRequest": {"poNumber": "PO-1", "changeRequest": [{
        "type": kind, "changeRequestId": id, "ctn": ctn,
        "resetVoiceMail": {"pin": "PIN-9Q2-CARE"}}]}})
}

async fn adapt(
    app: &TestApp,
    system: &str,
    body: &Value,
    message_id: &str,
    sources: &[&str],
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/adapters/{system}")))
        .bearer_auth(token(sources))
        .header("X-ATT-MessageId", message_id)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Posts and checks the status; the answer's body.
async fn adapt_ok(
    app: &TestApp,
    system: &str,
    body: &Value,
    message_id: &str,
    status: u16,
) -> Value {
    let res = adapt(app, system, body, message_id, &[system]).await;
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(got, status, "{body:#}");
    body
}

async fn by_number(app: &TestApp, number: &str) -> Vec<Value> {
    let res = app
        .get_authorized(&format!(
            "/products?externalReference.id={}",
            number.replace('+', "%2B")
        ))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    let res = app.get_authorized(&format!("/products/{id}/history")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_activation_creates_active_mobile_products_found_by_their_number() {
    let app = spawn_app().await;
    let answer = adapt_ok(&app, "activation", &activation(), "msg-1", 201).await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{answer:#}");
    assert_eq!(
        results[0]["pointer"],
        "/ActivateSubscriberResellerRequest/SubscriberReseller/0"
    );
    assert_eq!(results[0]["eventId"], "msg-1/+12145550134");
    assert_eq!(results[0]["status"], 201);
    assert!(is_uuid(results[0]["id"].as_str().unwrap()));

    let found = by_number(&app, "+12145550134").await;
    assert_eq!(found.len(), 1);
    let p = &found[0];
    assert_eq!(p["id"], results[0]["id"]);
    assert_eq!(
        p["href"], results[0]["href"],
        "the answer links the stored product"
    );
    assert_eq!(p["status"], "active");
    assert_eq!(p["startDate"], "2025-03-29T00:00:00Z");
    assert_eq!(p["productOffering"]["id"], "UNLPREMPL");
    assert_eq!(
        p["productPrice"][0]["price"]["taxIncludedAmount"]["value"],
        json!(85.99)
    );
    assert_eq!(p["productTerm"][0]["duration"]["amount"], json!(24));
    assert_eq!(p["relatedParty"][0]["role"], "Dealer");
    assert_eq!(p["relatedParty"][0]["partyOrPartyRole"]["id"], "DLR-7731");
    assert_eq!(p["place"][0]["place"]["postcode"], "75201");
    let resource = |name: &str| {
        p["realizingResource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["id"].clone())
    };
    assert_eq!(resource("IMEI"), Some(json!("359194077165207")));
    assert_eq!(resource("ICCID"), Some(json!("89014704272630325832")));
    assert_eq!(
        p["externalIdentifier"],
        json!([{"owner": "activation", "externalIdentifierType": "id", "id": "+12145550134@2025-03-29"}])
    );
    // The national form of the second number finds it too: one line, one key.
    let second = by_number(&app, "+12145550199").await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["id"], results[1]["id"]);
}

#[tokio::test]
async fn a_care_order_changes_only_what_it_says_and_redelivery_changes_nothing() {
    let app = spawn_app().await;
    let first = adapt_ok(&app, "activation", &activation(), "msg-1", 201).await;
    let id = ids(&first)[0].clone();
    // Redelivery of the activation: nothing stored, same products.
    let again = adapt_ok(&app, "activation", &activation(), "msg-1", 200).await;
    assert_eq!(ids(&again), ids(&first));
    assert!(again["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == 200));
    assert_eq!(history(&app, &id).await.len(), 1);

    let answer = adapt_ok(
        &app,
        "care-order",
        &care_order("updateSubscriber", "ChangeID1"),
        "care-1",
        201,
    )
    .await;
    assert_eq!(answer["results"][0]["id"], json!(id), "{answer:#}");
    assert_eq!(answer["results"][0]["eventId"], "care-1/ChangeID1");
    let h = history(&app, &id).await;
    assert_eq!(h.len(), 2);
    assert_eq!(
        h[1]["event"],
        json!({"source": "care-order", "id": "care-1/ChangeID1"})
    );
    let touched: Vec<String> = h[1]["patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            op["path"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(1)
                .unwrap()
                .to_owned()
        })
        .collect();
    for path in &touched {
        assert!(
            ["productCharacteristic", "relatedParty"].contains(&path.as_str()),
            "the update touched {path}: {:#}",
            h[1]["patch"]
        );
    }
    let p: Value = app
        .get_authorized(&format!("/products/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["status"], "active");
    let characteristics: Vec<&str> = p["productCharacteristic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        characteristics.contains(&"sku12037300017"),
        "{characteristics:?}"
    );
    assert!(
        characteristics.contains(&"User Name"),
        "{characteristics:?}"
    );
    let user = p["relatedParty"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "User")
        .unwrap();
    assert_eq!(user["partyOrPartyRole"]["familyName"], "Bell");

    // A suspension changes the status and nothing else.
    adapt_ok(
        &app,
        "care-order",
        &bare_change("suspendSubscriber", "S1", "214-555-0134"),
        "care-2",
        201,
    )
    .await;
    let h = history(&app, &id).await;
    assert_eq!(h.len(), 3);
    assert_eq!(
        h[2]["patch"],
        json!([{"op": "replace", "path": "/status", "value": "suspended"}])
    );
    // Redelivered care orders change nothing, even after later changes.
    let again = adapt_ok(
        &app,
        "care-order",
        &care_order("updateSubscriber", "ChangeID1"),
        "care-1",
        200,
    )
    .await;
    assert_eq!(again["results"][0]["id"], json!(id));
    adapt_ok(
        &app,
        "care-order",
        &bare_change("suspendSubscriber", "S1", "214-555-0134"),
        "care-2",
        200,
    )
    .await;
    assert_eq!(history(&app, &id).await.len(), 3);
}

#[tokio::test]
async fn a_number_activated_again_after_termination_is_a_second_product() {
    let app = spawn_app().await;
    let first = adapt_ok(&app, "activation", &activation(), "msg-1", 201).await;
    let old = ids(&first)[0].clone();
    adapt_ok(
        &app,
        "care-order",
        &bare_change("cancelSubscriber", "C1", "2145550134"),
        "care-9",
        201,
    )
    .await;
    let p: Value = app
        .get_authorized(&format!("/products/{old}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["status"], "terminated");

    let mut again = activation();
    let subs = &mut again["ActivateSubscriberResellerRequest"]["SubscriberReseller"];
    subs.as_array_mut().unwrap().truncate(1);
    subs[0]["activationDate"] = json!("2025-09-01");
    let answer = adapt_ok(&app, "activation", &again, "msg-2", 201).await;
    let new = ids(&answer)[0].clone();
    assert_ne!(new, old, "the number is a new line");
    let found = by_number(&app, "+12145550134").await;
    assert_eq!(
        found.len(),
        2,
        "both products keep the number in their documents"
    );
    // The old product's history still shows it had the number.
    let h = history(&app, &old).await;
    assert!(h[0]["patch"].to_string().contains("+12145550134"));
    // Care orders now reach the new line.
    let answer = adapt_ok(
        &app,
        "care-order",
        &bare_change("suspendSubscriber", "S2", "+12145550134"),
        "care-10",
        201,
    )
    .await;
    assert_eq!(answer["results"][0]["id"], json!(new));
    let p: Value = app
        .get_authorized(&format!("/products/{old}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["status"], "terminated");
}

#[tokio::test]
async fn no_secret_is_stored_answered_or_kept_in_history() {
    let store = store_under_test().await;
    let app = spawn_app_with(test_settings(), store.clone()).await;
    let mut answers = String::new();
    for (system, body, msg) in [
        ("activation", activation(), "msg-1"),
        (
            "care-order",
            care_order("updateSubscriber", "ChangeID1"),
            "care-1",
        ),
        (
            "care-order",
            bare_change("suspendSubscriber", "S1", "2145550134"),
            "care-2",
        ),
    ] {
        let res = adapt(&app, system, &body, msg, &[system]).await;
        answers.push_str(&res.text().await.unwrap());
    }
    // An invalid payload's error answer must not echo its secrets either.
    let mut bad = activation();
    bad["ActivateSubscriberResellerRequest"]["SubscriberReseller"][0]["activationDate"] =
        json!("soon");
    let res = adapt(&app, "activation", &bad, "msg-3", &["activation"]).await;
    assert_eq!(res.status(), 400);
    answers.push_str(&res.text().await.unwrap());

    let list = app.get_authorized("/products").await.text().await.unwrap();
    let mut everything = format!("{answers}{list}");
    let products: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(products.len(), 2);
    for p in &products {
        let id = p["id"].as_str().unwrap();
        for route in ["sources", "history"] {
            let text = app
                .get_authorized(&format!("/products/{id}/{route}"))
                .await
                .text()
                .await
                .unwrap();
            everything.push_str(&text);
        }
        let pinv = pinv::core::PinvId::parse(id).unwrap();
        let record = store.get_products(&[pinv]).await.unwrap();
        everything.push_str(&format!("{record:?}"));
        everything.push_str(&format!("{:?}", store.history(&pinv).await.unwrap()));
    }
    assert!(
        everything.contains("Bell"),
        "the reads cover the care order"
    );
    for secret in SECRETS {
        assert!(
            !everything.contains(secret),
            "{secret} was kept or answered"
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_pointers_into_the_native_payload() {
    let app = spawn_app().await;
    let res = adapt(&app, "billing-feed", &json!({}), "m", &["*"]).await;
    let body = assert_error(res, 404, "NOT_FOUND").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("billing-feed"));

    let res = adapt(&app, "activation", &activation(), "m", &["billing"]).await;
    assert_error(res, 403, "FORBIDDEN_SOURCE").await;

    let mut bad = activation();
    bad["ActivateSubscriberResellerRequest"]["SubscriberReseller"][1]["subscriberNumber"] =
        json!("555");
    bad["ActivateSubscriberResellerRequest"]["SubscriberReseller"][0]["suspendImmediate"] =
        json!("maybe");
    let res = adapt(&app, "activation", &bad, "m", &["activation"]).await;
    let body = assert_error(res, 400, "VALIDATION_FAILED").await;
    let pointers: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers
            .contains(&"/ActivateSubscriberResellerRequest/SubscriberReseller/0/suspendImmediate"),
        "{pointers:?}"
    );
    assert!(
        pointers
            .contains(&"/ActivateSubscriberResellerRequest/SubscriberReseller/1/subscriberNumber"),
        "{pointers:?}"
    );
    // Nothing of a refused payload is stored.
    assert!(by_number(&app, "+12145550134").await.is_empty());

    let res = adapt(&app, "activation", &json!([1, 2]), "m", &["activation"]).await;
    assert_error(res, 400, "VALIDATION_FAILED").await;
    let res = app
        .client
        .post(app.url("/adapters/activation"))
        .bearer_auth(token(&["activation"]))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "MALFORMED_JSON").await;

    // A change for a line that does not exist.
    let res = adapt(
        &app,
        "care-order",
        &bare_change("suspendSubscriber", "S1", "2145550000"),
        "c",
        &["care-order"],
    )
    .await;
    let body = assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(
        body["error"]["details"][0]["pointer"],
        "/careOrderRequest/changeRequest/0"
    );
}

#[tokio::test]
async fn a_broken_adapter_file_stops_the_start_with_its_problems_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "source = \"broken\"\nkind = \"change\"\nproducts = \"items\"\n[event]\nid = { from = \"/id\" }\n[[field]]\nto = \"/status\"\nfrom = \"/s\"\ntransform = \"upper\"\n",
    )
    .unwrap();
    let mut settings = test_settings();
    settings.adapters.dir = dir.path().to_owned();
    let err = pinv::startup::Application::build_with_store(settings, store_under_test().await)
        .err()
        .expect("the start is refused");
    let text = err.to_string();
    for expected in [
        "broken.toml: products: 'items' is not a JSON Pointer",
        "broken.toml: find: required for a change adapter",
        "broken.toml: field[0].transform: unknown transform 'upper'",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
}
