//! The admin routes: `POST /admin/remerge` and `GET /admin/remerge/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pinv::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, WriteSet};
use pinv::core::{EventId, MatchKey, PinvId, Source};
use pinv::store::{ListPage, ListQuery, Store, StoreResult};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::*;

fn loaded_rules_hash() -> String {
    pinv::app::rules_loader::load_rules_dir(&rules_dir())
        .unwrap()
        .hash
}

async fn start_remerge(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/admin/remerge"))
        .bearer_auth(admin_token())
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_run(app: &TestApp, id: &str) -> Value {
    let res = app
        .client
        .get(app.url(&format!("/admin/remerge/{id}")))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Follows a run until it is no longer running (the deadline only guards against a hang).
async fn until_done(app: &TestApp, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run = get_run(app, id).await;
        if run["status"] != "running" {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run never ended: {run}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admin_routes_need_a_token_with_the_admin_claim() {
    let app = spawn_shell_app().await;
    let run = "/admin/remerge/5b0a3f52-5ad8-4a47-9d6c-0b0c2f8a1c11";
    let res = app
        .client
        .post(app.url("/admin/remerge"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    assert_error(app.get(run).await, 401, "UNAUTHORIZED").await;

    // Writing for every source is not administering.
    let res = app
        .client
        .post(app.url("/admin/remerge"))
        .bearer_auth(token(&["*"]))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 403, "ADMIN_REQUIRED").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pinv_admin"),
        "{body}"
    );
    assert_error(app.get_authorized(run).await, 403, "ADMIN_REQUIRED").await;

    let res = app
        .client
        .get(app.url(run))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_bad_remerge_request_is_a_400() {
    let app = spawn_shell_app().await;
    for body in [
        json!({"dryRun": "yes"}),
        json!({"dry_run": true}),
        json!({"filter": {"status": 1}}),
        json!({"filter": {"": "active"}}),
        json!({"batch": 0}),
        json!({"batch": 10_001}),
    ] {
        let res = start_remerge(&app, &body).await;
        assert_error(res, 400, "VALIDATION_FAILED").await;
    }
    let res = app
        .client
        .post(app.url("/admin/remerge"))
        .bearer_auth(admin_token())
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "MALFORMED_JSON").await;
}

#[tokio::test]
async fn a_run_re_merges_the_matching_products_with_the_loaded_rules_and_reports_them() {
    let app = spawn_app().await;
    for (n, status) in [(1, "active"), (2, "active"), (3, "suspended")] {
        let event = small_event(
            "billing",
            &format!("e{n}"),
            "2024-10-03T12:00:00Z",
            product_with_circuit(&format!("p{n}"), &format!("C.{n}"), status),
        );
        assert_eq!(app.post_products(&event, &["billing"]).await.status(), 201);
    }
    let hash = loaded_rules_hash();

    // Another rules hash: refused, nothing started.
    let res = start_remerge(&app, &json!({"rulesHash": "not-the-loaded-rules"})).await;
    let body = assert_error(res, 409, "RULES_HASH_MISMATCH").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&hash) && message.contains("restart pinv serve"),
        "{message}"
    );

    let res = start_remerge(
        &app,
        &json!({"filter": {"status": "active"}, "rulesHash": hash, "batch": 1}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = res.json().await.unwrap();
    let id = started["id"].as_str().unwrap();
    assert_eq!(location, format!("/admin/remerge/{id}"));
    assert_eq!(started["status"], "running");
    assert_eq!(started["rulesHash"], hash);
    assert_eq!(started["filter"], json!({"status": "active"}));

    let run = until_done(&app, id).await;
    assert_eq!(run["status"], "finished", "{run}");
    assert!(run["finishedAt"].is_string(), "{run}");
    assert_eq!(run["progress"]["total"], 3, "{run}");
    // Stored with the rules the server applies: nothing to change.
    assert_eq!(
        run["summary"],
        json!({"scanned": 2, "changed": 0, "unchanged": 2, "conflictsRetried": 0,
               "failed": 0, "fields": {}}),
        "{run}"
    );
}

#[tokio::test]
async fn a_run_the_store_stops_is_failed_with_the_reason() {
    let app = spawn_shell_app_with(test_settings(), Arc::new(DownStore)).await;
    let res = start_remerge(&app, &json!({})).await;
    assert_eq!(res.status(), 202);
    let started: Value = res.json().await.unwrap();
    let run = until_done(&app, started["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("run it again"),
        "{run}"
    );
}

/// Holds every scan until the test lets it through, so a run stays running.
struct GatedStore {
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Store for GatedStore {
    async fn resolve_keys(&self, _: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        Ok(BTreeMap::new())
    }
    async fn get_products(&self, _: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        Ok(Vec::new())
    }
    async fn get_processed(&self, _: &Source, _: &EventId) -> StoreResult<Option<ProcessedEvent>> {
        Ok(None)
    }
    async fn waiters(&self, _: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        Ok(BTreeMap::new())
    }
    async fn package_members(&self, _: &PinvId) -> StoreResult<Vec<PinvId>> {
        Ok(Vec::new())
    }
    async fn commit(&self, _: WriteSet) -> StoreResult<()> {
        Ok(())
    }
    async fn list(&self, _: &ListQuery) -> StoreResult<ListPage> {
        Ok(ListPage {
            items: Vec::new(),
            total: 0,
        })
    }
    async fn history(&self, _: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        Ok(Vec::new())
    }
    async fn scan(&self, _: Option<PinvId>, _: usize) -> StoreResult<Vec<ProductRecord>> {
        self.gate.acquire().await.unwrap().forget();
        Ok(Vec::new())
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_run_at_a_time() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(GatedStore {
        gate: Arc::clone(&gate),
    });
    let app = spawn_shell_app_with(test_settings(), store).await;
    let res = start_remerge(&app, &json!({})).await;
    assert_eq!(res.status(), 202);
    let first: Value = res.json().await.unwrap();
    let id = first["id"].as_str().unwrap();

    let res = start_remerge(&app, &json!({"dryRun": true})).await;
    let body = assert_error(res, 409, "REMERGE_RUNNING").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains(id),
        "{body}"
    );
    assert_eq!(get_run(&app, id).await["status"], "running");

    gate.add_permits(1);
    assert_eq!(until_done(&app, id).await["status"], "finished");
    gate.add_permits(1);
    let res = start_remerge(&app, &json!({})).await;
    assert_eq!(
        res.status(),
        202,
        "the next run starts once the first ended"
    );
}
