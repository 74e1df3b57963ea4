//! `pinv remerge`: re-applies the current merge rules to every stored product (or those
//! matching filters), beside live traffic.
//!
//! Products are read in id order, in batches; each batch is merged on every core, and
//! the products whose merged document changes are written in one all-or-nothing write
//! set, compare-and-set on the revisions that were read. When a POST touched one of them
//! meanwhile, the set is refused and those products are re-read and merged again one by
//! one, so a live update is never overwritten with a stale result. An interrupted run
//! leaves every product either old or new; running it again finishes the job, because
//! products already re-merged no longer change.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::core::query::Query;
use crate::core::record::{EventRef, WriteSet};
use crate::core::remerge::{remerge, remerge_scanned, Remerged, REMERGE_SOURCE};
use crate::core::rules::Rules;
use crate::core::PinvId;
use crate::store::{Scanned, Store, StoreError};

/// How often a single product is re-read and merged again when live writes keep
/// moving it, before it is counted as failed.
const MAX_PRODUCT_ATTEMPTS: u32 = 8;

/// Batches whose write sets may be committing at once. Batches hold disjoint products, so
/// they never conflict with one another. With 2, merging stopped whenever the writer flushed
/// a commit and waited on the disk; with 4 the merge runs on through the flush: a 1M
/// all-change run on the embedded store took 50.3-51.3 s instead of 57.1-60.3 s, for 10-20
/// MiB more peak memory (BENCHMARKS.md, issue 9 round 6).
const WRITES_IN_FLIGHT: usize = 4;

/// What to re-merge and how.
#[derive(Debug, Clone)]
pub struct RemergeOptions {
    /// Report what would change; write nothing.
    pub dry_run: bool,
    /// `GET /products` filters; only matching products are re-merged.
    pub filters: Vec<(String, String)>,
    /// Products read and written per batch.
    pub batch: usize,
}

/// The totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemergeSummary {
    /// The run id recorded in history entries.
    pub run_id: String,
    /// Products examined (matching the filters).
    pub scanned: u64,
    /// Products whose merged document changed (or would, in a dry run).
    pub changed: u64,
    /// Products whose merged document stays as it is.
    pub unchanged: u64,
    /// Products re-read and merged again because a live write moved them.
    pub conflicts_retried: u64,
    /// Products that could not be written.
    pub failed: u64,
    /// For each top-level attribute, in how many products it changed.
    pub fields: BTreeMap<String, u64>,
}

impl RemergeSummary {
    fn count_change(&mut self, fields: &[String]) {
        self.changed += 1;
        for f in fields {
            *self.fields.entry(f.clone()).or_default() += 1;
        }
    }

    /// Adds a batch's tally (everything but the run id and the scanned count).
    fn absorb(&mut self, tally: RemergeSummary) {
        self.changed += tally.changed;
        self.unchanged += tally.unchanged;
        self.conflicts_retried += tally.conflicts_retried;
        self.failed += tally.failed;
        for (field, n) in tally.fields {
            *self.fields.entry(field).or_default() += n;
        }
    }

    /// One line for the end of a run.
    pub fn line(&self) -> String {
        format!(
            "scanned {}, changed {}, unchanged {}, conflicts retried {}, failed {}",
            self.scanned, self.changed, self.unchanged, self.conflicts_retried, self.failed
        )
    }
}

/// Follows a run as it goes (the command line draws progress on stderr; the server's admin
/// route keeps it for `GET /admin/remerge/{id}`).
pub trait RemergeObserver: Send + Sync {
    /// The run starts over `total` stored products (filters are applied as they are read).
    fn started(&self, total: u64);
    /// `read` more products were read; `summary` holds the totals so far.
    fn advanced(&self, read: u64, summary: &RemergeSummary);
    /// The run is done.
    fn finished(&self, summary: &RemergeSummary);
}

/// Runs a re-merge. `out` receives, in a dry run, one line per changed product; progress
/// goes to stderr (a bar on a terminal, periodic lines otherwise).
pub async fn run(
    store: Arc<dyn Store>,
    rules: Arc<Rules>,
    options: &RemergeOptions,
    out: &mut (dyn Write + Send),
) -> Result<RemergeSummary, StoreError> {
    let progress = StderrProgress(std::sync::OnceLock::new());
    let run_id = uuid::Uuid::new_v4().to_string();
    run_observed(store, rules, options, run_id, out, &progress).await
}

/// Runs a re-merge whose history entries carry `run_id`, telling `observer` how it goes.
///
/// Three stages overlap: while a batch is merged, the next one is already being read, and
/// the previous ones' write sets are still being committed: up to
/// `WRITES_IN_FLIGHT` (4), so that the store's single writer can start on one batch as soon
/// as it has flushed the one before, instead of waiting for that batch to be encoded.
/// Memory stays bounded by `2 + WRITES_IN_FLIGHT` batches.
pub async fn run_observed(
    store: Arc<dyn Store>,
    rules: Arc<Rules>,
    options: &RemergeOptions,
    run_id: String,
    out: &mut (dyn Write + Send),
    progress: &dyn RemergeObserver,
) -> Result<RemergeSummary, StoreError> {
    let run = EventRef {
        source: REMERGE_SOURCE.to_owned(),
        id: run_id,
    };
    let mut summary = RemergeSummary {
        run_id: run.id.clone(),
        ..Default::default()
    };
    let total = store.count().await?;
    progress.started(total);
    let batch = options.batch.max(1);
    let mut next_scan = Some(spawn_scan(&store, None, batch));
    let mut writing: VecDeque<tokio::task::JoinHandle<Result<RemergeSummary, StoreError>>> =
        VecDeque::with_capacity(WRITES_IN_FLIGHT);
    while let Some(scan) = next_scan.take() {
        let records = scan
            .await
            .map_err(|e| StoreError::other_from("the scan task failed", e))??;
        let Some(last) = records.last() else { break };
        // Read ahead until a scan comes back empty (a store may return short batches).
        next_scan = Some(spawn_scan(&store, Some(last.id()), batch));
        let read = records.len() as u64;
        let filters = options.filters.clone();
        let changes = remerge_all(records, filters, &rules, &run).await?;
        summary.scanned += changes.len() as u64;
        summary.unchanged += changes.iter().filter(|c| c.is_none()).count() as u64;
        let changes: Vec<Remerged> = changes.into_iter().flatten().collect();
        if options.dry_run {
            for c in &changes {
                writeln!(
                    out,
                    "{}\t{} patch operations\t{}",
                    c.write.record.id,
                    c.patch_ops,
                    c.changed_fields().join(",")
                )
                .map_err(|e| StoreError::other_from("cannot write the report", e))?;
                summary.count_change(c.changed_fields());
            }
        } else {
            if writing.len() == WRITES_IN_FLIGHT {
                let oldest = writing.pop_front().expect("a write in flight");
                summary.absorb(join_write(oldest).await?);
            }
            let (store, rules, run) = (Arc::clone(&store), Arc::clone(&rules), run.clone());
            writing.push_back(tokio::spawn(async move {
                write_batch(&*store, &rules, &run, changes).await
            }));
        }
        progress.advanced(read, &summary);
    }
    for previous in writing {
        summary.absorb(join_write(previous).await?);
    }
    progress.finished(&summary);
    Ok(summary)
}

/// Reads the next batch in the background.
fn spawn_scan(
    store: &Arc<dyn Store>,
    after: Option<PinvId>,
    batch: usize,
) -> tokio::task::JoinHandle<Result<Vec<Scanned>, StoreError>> {
    let store = Arc::clone(store);
    tokio::spawn(async move { store.scan_for_remerge(after, batch).await })
}

/// Waits for a batch's commit and returns its tally.
async fn join_write(
    task: tokio::task::JoinHandle<Result<RemergeSummary, StoreError>>,
) -> Result<RemergeSummary, StoreError> {
    task.await
        .map_err(|e| StoreError::other_from("the write task failed", e))?
}

/// Merges a batch on every core (rayon's pool, whose threads live across batches);
/// products that do not match `filters` are left out of the result.
async fn remerge_all(
    records: Vec<Scanned>,
    filters: Vec<(String, String)>,
    rules: &Arc<Rules>,
    run: &EventRef,
) -> Result<Vec<Option<Remerged>>, StoreError> {
    let rules = Arc::clone(rules);
    let run = run.clone();
    tokio::task::spawn_blocking(move || {
        let now = Utc::now();
        // The equality filters of `GET /products`, typed the same way.
        let query = Query::equalities(filters.iter().map(|(p, v)| (p.as_str(), v.as_str())));
        let unfiltered = filters.is_empty();
        let unparsable = |e| StoreError::corrupt_from("cannot parse a stored merged document", e);
        // Each record is decoded, re-merged and dropped on the pool thread that took it.
        records
            .into_par_iter()
            .map(|scanned| {
                let scanned = scanned.decode()?;
                if unfiltered {
                    return remerge_scanned(scanned, &rules, &run, now)
                        .map(Some)
                        .map_err(unparsable);
                }
                // A filter reads the document: parse it once, for the filter and the merge.
                let record = scanned.into_record().map_err(unparsable)?;
                Ok(query
                    .matches(&record.merged)
                    .then(|| remerge(record, &rules, &run, now)))
            })
            .filter_map(|outcome| outcome.transpose())
            .collect()
    })
    .await
    .expect("the merge task never panics")
}

/// Writes a batch's changes in one set; on a conflict, product by product. Returns the
/// batch's tally of changed, unchanged (after a re-read), retried and failed products.
async fn write_batch(
    store: &dyn Store,
    rules: &Rules,
    run: &EventRef,
    changes: Vec<Remerged>,
) -> Result<RemergeSummary, StoreError> {
    let mut tally = RemergeSummary::default();
    let summary = &mut tally;
    if changes.is_empty() {
        return Ok(tally);
    }
    let ids: Vec<PinvId> = changes.iter().map(|c| c.write.record.id).collect();
    // Counted now, while the writes still hold their fields; kept only if the set lands.
    let mut written = RemergeSummary::default();
    let mut set = WriteSet::default();
    for c in changes {
        written.count_change(c.changed_fields());
        set.products.push(c.write);
        set.history.push(c.history);
    }
    match store.commit(set).await {
        Ok(()) => Ok(written),
        Err(StoreError::Conflict(_)) => {
            for id in ids {
                match remerge_one(store, rules, run, id, summary).await? {
                    Outcome::Written(fields) => summary.count_change(&fields),
                    // Merged again after a live write, the product no longer changes.
                    Outcome::Unchanged => summary.unchanged += 1,
                    Outcome::Failed => summary.failed += 1,
                }
            }
            Ok(tally)
        }
        Err(e) => Err(e),
    }
}

/// How re-merging one product ended.
enum Outcome {
    /// Written; these top-level attributes changed.
    Written(Vec<String>),
    /// Its merged document no longer changes.
    Unchanged,
    /// Live writes kept moving it.
    Failed,
}

/// Re-reads one product and writes its re-merge.
async fn remerge_one(
    store: &dyn Store,
    rules: &Rules,
    run: &EventRef,
    id: PinvId,
    summary: &mut RemergeSummary,
) -> Result<Outcome, StoreError> {
    for _ in 0..MAX_PRODUCT_ATTEMPTS {
        summary.conflicts_retried += 1;
        let Some(record) = store.get_products(&[id]).await?.pop() else {
            return Ok(Outcome::Unchanged);
        };
        let Some(change) = remerge(record, rules, run, Utc::now()) else {
            return Ok(Outcome::Unchanged);
        };
        let fields = change.changed_fields().to_vec();
        let set = WriteSet {
            products: vec![change.write],
            history: vec![change.history],
            ..Default::default()
        };
        match store.commit(set).await {
            Ok(()) => return Ok(Outcome::Written(fields)),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(%id, "product kept changing during the re-merge; left as it was");
    Ok(Outcome::Failed)
}

/// The command line's observer: [`Progress`] once the total is known.
struct StderrProgress(std::sync::OnceLock<Progress>);

impl RemergeObserver for StderrProgress {
    fn started(&self, total: u64) {
        let _ = self.0.set(Progress::new(total));
    }

    fn advanced(&self, read: u64, summary: &RemergeSummary) {
        if let Some(p) = self.0.get() {
            p.advance(read, summary);
        }
    }

    fn finished(&self, summary: &RemergeSummary) {
        if let Some(p) = self.0.get() {
            p.finish(summary);
        }
    }
}

/// A bar on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: ProgressBar,
    plain: Option<std::sync::Mutex<PlainProgress>>,
}

struct PlainProgress {
    done: u64,
    total: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    const PLAIN_EVERY: Duration = Duration::from_secs(5);

    fn new(total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total).with_style(
                ProgressStyle::default_bar()
                    .template("{bar:40} {pos}/{len} products  {per_sec}  ETA {eta}  {msg}")
                    .expect("the template is valid"),
            );
            Self { bar, plain: None }
        } else {
            let now = Instant::now();
            Self {
                bar: ProgressBar::hidden(),
                plain: Some(std::sync::Mutex::new(PlainProgress {
                    done: 0,
                    total,
                    started: now,
                    last: now,
                })),
            }
        }
    }

    fn advance(&self, read: u64, summary: &RemergeSummary) {
        self.bar.inc(read);
        self.bar.set_message(format!("changed {}", summary.changed));
        if let Some(plain) = &self.plain {
            let mut p = plain.lock().expect("progress lock");
            p.done += read;
            if p.last.elapsed() >= Self::PLAIN_EVERY {
                p.last = Instant::now();
                let rate = p.done as f64 / p.started.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "remerge: {}/{} products read, {:.0}/s, {}",
                    p.done,
                    p.total,
                    rate,
                    summary.line()
                );
            }
        }
    }

    fn finish(&self, summary: &RemergeSummary) {
        self.bar
            .finish_with_message(format!("changed {}", summary.changed));
    }
}
