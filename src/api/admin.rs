//! The admin routes: `POST /admin/remerge` starts a re-merge in the server process, with
//! the merge rules the server loaded at start, and `GET /admin/remerge/{id}` follows it.
//!
//! Both need a token with `"pinv_admin": true` ([`Admin`]). One run at a time: the runs
//! share the store with live traffic, and two would only retry each other's writes. Runs
//! are kept in memory ([`AdminRuns`]): a restart forgets them, and a run the restart
//! interrupted leaves every product either old or new (`docs/reference.md`), so running it
//! again finishes the job.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ErrorCode};
use crate::app::remerge::{run_observed, RemergeObserver, RemergeOptions, RemergeSummary};
use crate::app::service::Service;
use crate::store::StoreError;

/// Products read and written per batch when the request does not say.
pub const DEFAULT_BATCH: usize = 1000;
/// Largest accepted `batch`: three batches are in memory at once.
pub const MAX_BATCH: usize = 10_000;
/// Finished runs remembered (the oldest are forgotten first).
pub const KEPT_RUNS: usize = 100;

/// The body of `POST /admin/remerge`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemergeRequest {
    /// Count what would change; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Only products matching every `path: value`, as the filters of `GET /products`.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Products read and written per batch (1 to [`MAX_BATCH`]).
    #[serde(default)]
    pub batch: Option<usize>,
    /// When given, the run starts only if the server's loaded rules have this hash
    /// (`pinv remerge` sends the hash of the rules directory it was given).
    #[serde(default)]
    pub rules_hash: Option<String>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Still reading and writing.
    Running,
    /// Done; the summary is final.
    Finished,
    /// Stopped by a store error; products already written stay re-merged.
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }
}

/// One run, as `GET /admin/remerge/{id}` shows it.
#[derive(Debug, Clone)]
struct Run {
    id: String,
    status: RunStatus,
    dry_run: bool,
    filter: BTreeMap<String, String>,
    rules_hash: String,
    started_at: String,
    finished_at: Option<String>,
    total: Option<u64>,
    read: u64,
    summary: RemergeSummary,
    error: Option<String>,
}

impl Run {
    fn to_json(&self) -> Value {
        let s = &self.summary;
        json!({
            "id": self.id,
            "status": self.status.as_str(),
            "dryRun": self.dry_run,
            "filter": self.filter,
            "rulesHash": self.rules_hash,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "progress": {"read": self.read, "total": self.total},
            "summary": {
                "scanned": s.scanned,
                "changed": s.changed,
                "unchanged": s.unchanged,
                "conflictsRetried": s.conflicts_retried,
                "failed": s.failed,
                "fields": s.fields,
            },
            "error": self.error,
        })
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// Oldest first.
    runs: VecDeque<Run>,
}

impl Registry {
    fn get_mut(&mut self, id: &str) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.id == id)
    }
}

/// The server's re-merge runs, in memory, and the runtime they run on.
pub struct AdminRuns {
    /// The process's main runtime: a run must not take the time of a request worker.
    runtime: Option<tokio::runtime::Handle>,
    registry: Mutex<Registry>,
}

impl AdminRuns {
    /// Runs will be spawned on `runtime` (on the calling worker's when `None`).
    pub fn new(runtime: Option<tokio::runtime::Handle>) -> Self {
        Self {
            runtime,
            registry: Mutex::new(Registry::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new running run, unless one is running already (`409 REMERGE_RUNNING`).
    fn begin(
        &self,
        dry_run: bool,
        filter: BTreeMap<String, String>,
        rules_hash: &str,
    ) -> Result<Run, ApiError> {
        let mut registry = self.lock();
        if let Some(running) = registry
            .runs
            .iter()
            .find(|r| r.status == RunStatus::Running)
        {
            return Err(ApiError::new(
                ErrorCode::RemergeRunning,
                format!(
                    "re-merge run {} is still running; follow it at /admin/remerge/{}",
                    running.id, running.id
                ),
            ));
        }
        while registry.runs.len() >= KEPT_RUNS {
            registry.runs.pop_front();
        }
        let run = Run {
            id: uuid::Uuid::new_v4().to_string(),
            status: RunStatus::Running,
            dry_run,
            filter,
            rules_hash: rules_hash.to_owned(),
            started_at: crate::api::timestamp(),
            finished_at: None,
            total: None,
            read: 0,
            summary: RemergeSummary::default(),
            error: None,
        };
        registry.runs.push_back(run.clone());
        Ok(run)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Run)) {
        if let Some(run) = self.lock().get_mut(id) {
            f(run);
        }
    }

    /// Records how a run ended; a run that panicked or was cancelled has failed.
    fn end(&self, id: &str, result: Result<Result<RemergeSummary, StoreError>, String>) {
        self.update(id, |run| {
            run.finished_at = Some(crate::api::timestamp());
            match result {
                Ok(Ok(summary)) => {
                    run.summary = summary;
                    run.status = RunStatus::Finished;
                }
                Ok(Err(e)) => {
                    run.status = RunStatus::Failed;
                    // The run's reader is the operator: the whole chain, as in the log.
                    run.error = Some(format!(
                        "{}; products already re-merged stay so, run it again to finish",
                        e.chain()
                    ));
                }
                Err(e) => {
                    run.status = RunStatus::Failed;
                    run.error = Some(format!("the run stopped: {e}"));
                }
            }
        });
    }

    fn get(&self, id: &str) -> Option<Run> {
        self.lock().runs.iter().find(|r| r.id == id).cloned()
    }
}

/// Keeps a run's progress in the registry.
struct Tracker {
    runs: Arc<AdminRuns>,
    id: String,
}

impl RemergeObserver for Tracker {
    fn started(&self, total: u64) {
        self.runs.update(&self.id, |r| r.total = Some(total));
    }

    fn advanced(&self, read: u64, summary: &RemergeSummary) {
        self.runs.update(&self.id, |r| {
            r.read += read;
            r.summary = summary.clone();
        });
    }

    fn finished(&self, _: &RemergeSummary) {}
}

fn run_location(id: &str) -> String {
    format!("/admin/remerge/{id}")
}

/// `POST /admin/remerge`: starts a run and answers `202` with it at once.
pub async fn post_remerge(
    _admin: Admin,
    service: web::Data<Service>,
    runs: web::Data<AdminRuns>,
    body: web::Json<RemergeRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    if request.filter.keys().any(|p| p.is_empty()) {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "filter: a path must not be empty",
        ));
    }
    let batch = request.batch.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("batch: must be between 1 and {MAX_BATCH}"),
        ));
    }
    let loaded = &service.rules.hash;
    if let Some(expected) = request.rules_hash.as_deref().filter(|h| *h != loaded) {
        return Err(ApiError::new(
            ErrorCode::RulesHashMismatch,
            format!(
                "the server merges with the rules it loaded at start (hash {loaded}), not the \
                 expected ones (hash {expected}); restart pinv serve so it loads the new rules, \
                 then run the re-merge again"
            ),
        ));
    }
    let run = runs.begin(request.dry_run, request.filter.clone(), loaded)?;
    let options = RemergeOptions {
        dry_run: request.dry_run,
        filters: request.filter.into_iter().collect(),
        batch,
    };
    let (store, rules) = (Arc::clone(&service.store), Arc::clone(&service.rules));
    let registry = runs.clone().into_inner();
    let tracker = Tracker {
        runs: Arc::clone(&registry),
        id: run.id.clone(),
    };
    let id = run.id.clone();
    tracing::info!(run = %id, dry_run = options.dry_run, rules_hash = %loaded, "re-merge started");
    let work = async move {
        // A dry run's per-product lines have no reader here: the summary counts them.
        let mut out = std::io::sink();
        run_observed(store, rules, &options, id, &mut out, &tracker).await
    };
    let id = run.id.clone();
    let watch = async move {
        // Its own task, so that a panic in the run is a failed run, not a lost one.
        let result = tokio::spawn(work).await.map_err(|e| e.to_string());
        match &result {
            Ok(Ok(s)) => tracing::info!(run = %id, "re-merge finished: {}", s.line()),
            Ok(Err(e)) => tracing::error!(run = %id, error = %e.chain(), "re-merge failed"),
            Err(e) => tracing::error!(run = %id, error = %e, "re-merge task failed"),
        }
        registry.end(&id, result);
    };
    match &runs.runtime {
        Some(runtime) => drop(runtime.spawn(watch)),
        None => drop(tokio::spawn(watch)),
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, run_location(&run.id)))
        .json(run.to_json()))
}

/// `GET /admin/remerge/{id}`: a run's progress, and its summary once finished.
pub async fn get_remerge(
    _admin: Admin,
    runs: web::Data<AdminRuns>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match runs.get(&id) {
        Some(run) => Ok(HttpResponse::Ok().json(run.to_json())),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no re-merge run with id '{id}' (runs are kept in memory: a restart forgets them)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_and_the_next_once_it_ended() {
        let runs = AdminRuns::new(None);
        let first = runs.begin(false, BTreeMap::new(), "h").unwrap();
        let refused = runs.begin(true, BTreeMap::new(), "h").unwrap_err();
        assert_eq!(refused.code, ErrorCode::RemergeRunning);
        assert!(refused.message.contains(&first.id), "{}", refused.message);
        runs.end(&first.id, Ok(Ok(RemergeSummary::default())));
        assert_eq!(runs.get(&first.id).unwrap().status, RunStatus::Finished);
        let second = runs.begin(false, BTreeMap::new(), "h").unwrap();
        runs.end(&second.id, Err("cancelled".into()));
        let failed = runs.get(&second.id).unwrap();
        assert_eq!(failed.status, RunStatus::Failed);
        assert!(failed.to_json()["error"]
            .as_str()
            .unwrap()
            .contains("cancelled"));
        // A failed run does not hold the next one back either.
        runs.begin(false, BTreeMap::new(), "h").unwrap();
    }

    #[test]
    fn a_store_error_fails_the_run_and_says_to_run_it_again() {
        let runs = AdminRuns::new(None);
        let run = runs.begin(false, BTreeMap::new(), "h").unwrap();
        runs.end(&run.id, Ok(Err(StoreError::unavailable("down"))));
        let json = runs.get(&run.id).unwrap().to_json();
        assert_eq!(json["status"], "failed");
        assert!(
            json["error"].as_str().unwrap().contains("run it again"),
            "{json}"
        );
    }

    #[test]
    fn only_the_latest_runs_are_kept() {
        let runs = AdminRuns::new(None);
        let first = runs.begin(false, BTreeMap::new(), "h").unwrap();
        runs.end(&first.id, Ok(Ok(RemergeSummary::default())));
        for _ in 0..KEPT_RUNS {
            let r = runs.begin(false, BTreeMap::new(), "h").unwrap();
            runs.end(&r.id, Ok(Ok(RemergeSummary::default())));
        }
        assert!(runs.get(&first.id).is_none());
        assert_eq!(runs.lock().runs.len(), KEPT_RUNS);
    }

    #[test]
    fn the_request_body_is_camel_case_and_strict() {
        let r: RemergeRequest = serde_json::from_value(
            json!({"dryRun": true, "filter": {"status": "active"}, "batch": 5, "rulesHash": "x"}),
        )
        .unwrap();
        assert!(r.dry_run);
        assert_eq!(r.filter["status"], "active");
        assert_eq!((r.batch, r.rules_hash.as_deref()), (Some(5), Some("x")));
        assert_eq!(
            serde_json::from_value::<RemergeRequest>(json!({})).unwrap(),
            RemergeRequest::default()
        );
        assert!(serde_json::from_value::<RemergeRequest>(json!({"dry_run": true})).is_err());
        assert!(
            serde_json::from_value::<RemergeRequest>(json!({"filter": {"status": 1}})).is_err()
        );
    }
}
