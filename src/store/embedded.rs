//! The embedded store (default): a redb database in a directory, durable when a write returns.
//!
//! # Layout of `<dir>/pinv.redb`
//!
//! | table           | key                                   | value                          |
//! |-----------------|---------------------------------------|--------------------------------|
//! | `products`      | PINV id (16 uuid bytes)               | header, then the record's JSON*|
//! | `contributions` | PINV id (16 bytes)                    | the record's contributions*    |
//! | `keys`          | match key (str)                       | owner's PINV id (16 bytes)     |
//! | `waiters`       | match key (str)                       | JSON array of PINV ids, sorted |
//! | `package_roots` | (root id, member id), 16 bytes each   | `()`                           |
//! | `history`       | (product id, revision u64)            | `HistoryEntry` as JSON*†       |
//! | `events`        | (source, event id)                    | `ProcessedEvent` as JSON       |
//!
//! The hub's `subscriptions` and `outbox` tables are described in `embedded_outbox.rs`; a
//! set's outbox entries are written by the writer thread right after the set, in the same
//! transaction.
//!
//! A product's contributions live apart from the rest of its record, so a re-merge, which
//! changes only the merged document, rewrites neither them nor their pages. Rows written
//! before that split still hold their contributions inline (the header says which); they
//! are moved apart when a re-merge first rewrites them, and read as they are until then.
//!
//! *Packed: lz4-compressed behind a first byte JSON never starts with (see `pack_into`).
//! Values written before packing are plain JSON, read as they are until next written.
//!
//! †A product's first entry, when its plan left the patch out (`HistoryEntry::patch`), is
//! written with `"patch": null` and the created document as `createdDocument`; reading it
//! makes the patch again (see `CreationOut`).
//!
//! Ids are keyed by their 16 bytes, whose order is [`PinvId`]'s `Ord` (and the order of
//! the lowercase hyphenated strings), so `products` iterates in PINV id order.
//!
//! # Threads
//!
//! redb is synchronous. Reads run on `tokio::task::spawn_blocking`, each in its own read
//! transaction (a consistent snapshot), but for the point reads (the reads before a write,
//! `GET /products/{id}`): those run on the async worker itself, in the read transaction the
//! writer opened after its last commit (`Latest` says why).
//! Writes go through a channel to ONE writer thread that does group commit: it takes every
//! write set waiting (up to [`MAX_BATCH`]), applies them one after the other in a single
//! write transaction, commits once with immediate durability (one fsync for the whole
//! batch) and only then answers each caller. Each set's guards are checked inside that
//! transaction, after the earlier sets of the batch, and before any of its own changes is
//! written; a set whose guard fails is answered `Conflict` and leaves no trace.
//!
//! # Limitations
//!
//! - [`Store::list`] reads the products of the list index (`embedded_index`) when a filter
//!   is on an indexed path; otherwise, and to sort, it decodes every matching product.
//! - If applying a set fails for an I/O reason mid-batch, the whole batch is aborted and
//!   every set in it gets the error, including sets that were fine.
//! - A caller that drops a `commit` future after the set was queued cannot stop it: the set
//!   may still be committed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rayon::prelude::*;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::core::index::IndexedPaths;
use crate::core::package::Links;
use crate::core::read_plan::{ReadPlan, ReadResult};
use crate::core::record::{
    patch_between, Contribution, DocumentJson, HistoryEntry, ProcessedEvent, ProductRecord,
    ScannedProduct, WriteSet,
};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::embedded_index::{self, Entries, IndexTables};
use crate::store::embedded_outbox::{self, HubCache};
use crate::store::outbox::{
    entries_for, DeliveryStatus, OutboxCounts, OutboxEntry, Settlement, Subscription,
};
use crate::store::plan::{plan, Plan, PlanView, ProductState, RootChange};
use crate::store::reads::{self, ViewReads};
use crate::store::{ListPage, ListQuery, Scanned, Store, StoreError, StoreResult};

/// The database file inside the store directory.
pub const FILE_NAME: &str = "pinv.redb";

/// Most write sets committed in one transaction. Bounds the latency one batch adds to the
/// callers queued behind it.
pub const MAX_BATCH: usize = 256;

/// Write sets that may wait for the writer; beyond this, `commit` waits (backpressure).
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

type IdBytes = [u8; 16];

const PRODUCTS: TableDefinition<&IdBytes, &[u8]> = TableDefinition::new("products");
const CONTRIBUTIONS: TableDefinition<&IdBytes, &[u8]> = TableDefinition::new("contributions");
const KEYS: TableDefinition<&str, &IdBytes> = TableDefinition::new("keys");
const WAITERS: TableDefinition<&str, &[u8]> = TableDefinition::new("waiters");
const PACKAGE_ROOTS: TableDefinition<(&IdBytes, &IdBytes), ()> =
    TableDefinition::new("package_roots");
const HISTORY: TableDefinition<(&IdBytes, u64), &[u8]> = TableDefinition::new("history");
const EVENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("events");

/// redb's page cache. Its default (1 GiB) would make the server's memory grow with the
/// data; the POST path reads a few small records per request, which this keeps hot.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What the writer thread is asked to do.
// Writes are nearly all the traffic; boxing them to shrink the rare refresh would cost an
// allocation per write.
#[allow(clippy::large_enum_variant)]
enum Work {
    /// Commit a write set.
    Write(Job),
    /// Renew the point-read snapshot, then answer: the hub's own commits (subscriptions,
    /// deliveries) run outside the writer, and a snapshot older than them would keep redb
    /// from reusing the pages they free for as long as no POST comes.
    Refresh(oneshot::Sender<()>),
}

/// One queued write and where to send its outcome.
struct Job {
    set: WriteSet,
    encoded: Encoded,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The heavy values of a write set, serialised by the caller: encoding on the many request
/// threads instead of the one writer thread keeps the writer's critical path short.
#[derive(Default)]
struct Encoded {
    /// One per `set.products`, in order.
    products: Vec<EncodedProduct>,
    /// One per `set.history`, in order.
    history: Vec<Vec<u8>>,
    /// `set.processed`, if any.
    processed: Option<Vec<u8>>,
    /// The list-index entries of `set.products`.
    index: Entries,
    /// The outbox entries the set owes subscribers (see [`embedded_outbox`]).
    outbox: Vec<embedded_outbox::EncodedEntry>,
}

impl Encoded {
    /// Serialises the set's records, history and event, and empties the heavy parts of the
    /// set (documents, patches) so they are freed here rather than on the writer thread.
    /// Guards only need ids, revisions, keys and package roots, which stay.
    fn take_from(set: &mut WriteSet) -> StoreResult<Self> {
        // Products created here: their first history entry (its patch left out, see
        // `HistoryEntry::patch`) is written with the document's JSON, made once for the row
        // and the entry.
        let created: BTreeSet<(PinvId, u64)> = set
            .history
            .iter()
            .filter(|entry| entry.patch.is_null())
            .map(|entry| (entry.product, entry.revision))
            .collect();
        let encoded = encode_all(&mut set.products, |write| {
            let record = &write.record;
            let is_created = created.contains(&(record.id, record.revision));
            let json = match write.merged_json.take() {
                Some(json) => Some(json),
                None => is_created.then(|| DocumentJson::of(&record.merged)),
            };
            let row = match &json {
                Some(json) => product_bytes(record, json.raw())?,
                None => product_bytes(record, &record.merged)?,
            };
            // A new product has nothing stored to keep.
            let keep = write.contributions_unchanged && write.expected_revision.is_some();
            let contributions = (!keep)
                .then(|| encode_packed(&write.record.contributions))
                .transpose()?;
            let document = json
                .filter(|_| is_created)
                .map(|json| (write.record.id, json));
            write.record.contributions = Vec::new();
            write.record.merged = Value::Null;
            Ok((EncodedProduct { row, contributions }, document))
        })?;
        let (products, documents): (Vec<_>, Vec<_>) = encoded.into_iter().unzip();
        let documents: BTreeMap<PinvId, DocumentJson> = documents.into_iter().flatten().collect();
        let history = encode_all(&mut set.history, |entry| {
            let bytes = if entry.patch.is_null() {
                let document = documents.get(&entry.product).ok_or_else(|| {
                    StoreError::other(format!(
                        "the creation entry of {} has no product in its write set",
                        entry.product
                    ))
                })?;
                encode_packed(&CreationOut {
                    entry,
                    document: document.raw(),
                })?
            } else {
                encode_packed(entry)?
            };
            entry.patch = Value::Null;
            Ok(bytes)
        })?;
        let processed = set.processed.as_ref().map(encode).transpose()?;
        Ok(Encoded {
            products,
            history,
            processed,
            index: Vec::new(),
            outbox: Vec::new(),
        })
    }
}

/// A product's stored bytes.
struct EncodedProduct {
    /// The `products` row (header, then JSON).
    row: Vec<u8>,
    /// The `contributions` row; `None` keeps the stored one.
    contributions: Option<Vec<u8>>,
}

/// Applies `encode` to every item, in order; a large set (a batch re-merge writes
/// thousands of products at once) is split over every core.
fn encode_all<T: Send, E: Send>(
    items: &mut [T],
    encode: impl Fn(&mut T) -> StoreResult<E> + Sync + Send,
) -> StoreResult<Vec<E>> {
    if items.len() < PARALLEL_DECODE_MIN {
        return items.iter_mut().map(&encode).collect();
    }
    items.par_iter_mut().map(encode).collect()
}

/// A store in `<dir>/pinv.redb`.
///
/// Dropping it closes the queue, waits for the writer thread to finish the batch in hand
/// (so every acknowledged write is on disk) and closes the database.
pub struct EmbeddedStore {
    db: Arc<Database>,
    index: Arc<IndexedPaths>,
    jobs: Option<mpsc::Sender<Work>>,
    writer: Option<JoinHandle<()>>,
    hub: Arc<HubCache>,
    /// The snapshot point reads use.
    latest: Arc<Latest>,
}

/// The read transaction the writer opened after its last commit, for point reads.
///
/// Starting a read transaction waits while a commit is being flushed (redb holds its header
/// lock through the fsync), and the writer flushes most of the time under load: a point read
/// that started its own transaction on the async worker stalled every connection of that
/// worker, and one sent to the blocking pool paid a thread hop per POST. The writer opens
/// this one after each commit and before answering that commit's callers, so a read that
/// starts after a write was acknowledged sees it. Only the writer thread writes the tables
/// point reads look at (products, keys, waiters, events); the hub's own transactions touch
/// only its tables, but the writer renews the snapshot after them too ([`Work::Refresh`]):
/// a live snapshot keeps redb from reusing the pages later commits free.
struct Latest(RwLock<Option<Arc<ReadTransaction>>>);

impl Latest {
    /// A snapshot of the last commit; `None` if opening it failed (reads then open their own).
    fn get(&self) -> Option<Arc<ReadTransaction>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the snapshot with one of the database as it is now.
    fn refresh(&self, db: &Database) {
        let txn = db
            .begin_read()
            .inspect_err(|e| tracing::warn!(error = %e, "embedded store: no snapshot for reads"))
            .ok()
            .map(Arc::new);
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = txn;
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, indexing the default list paths.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_indexed(dir, IndexedPaths::standard())
    }

    /// Opens (creating if needed) the store in `dir`, with a list index on `paths` (built
    /// now when the store's index was made for other paths).
    pub fn open_indexed(dir: &Path, paths: IndexedPaths) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::unavailable_from(format!("cannot create directory {}", dir.display()), e)
        })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))
            .map_err(db_err)?;
        create_tables(&db)?;
        embedded_index::ensure(&db, &paths, |bytes| {
            decode_product::<MergedOnly>(bytes).map(|m| m.merged)
        })?;
        let hub = Arc::new(HubCache::default());
        embedded_outbox::open(&db, &hub)?;
        let db = Arc::new(db);
        let latest = Arc::new(Latest(RwLock::new(None)));
        latest.refresh(&db);

        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let writer_db = Arc::clone(&db);
        let writer_latest = Arc::clone(&latest);
        let writer = std::thread::Builder::new()
            .name("pinv-redb-writer".to_owned())
            .spawn(move || writer_loop(&writer_db, queue, &writer_latest))
            .map_err(|e| StoreError::other_from("cannot start the writer thread", e))?;
        Ok(Self {
            db,
            index: Arc::new(paths),
            jobs: Some(jobs),
            writer: Some(writer),
            hub,
            latest,
        })
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(db_err)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::other_from("the read task failed", e))?
    }

    /// Runs a point read (a few keys, a few products) right here on the async worker, in
    /// the snapshot of the last commit ([`Latest`]): it takes microseconds from redb's cache
    /// or the page cache, less than a hop to the blocking pool.
    async fn read_point<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        match self.latest.get() {
            Some(txn) => f(&txn),
            None => self.read(f).await,
        }
    }

    /// Has the writer renew the point-read snapshot, after a hub write ([`Work::Refresh`]).
    /// The writer alone replaces the snapshot, so a renewal can never put back one older
    /// than the writer's last commit.
    async fn refresh_snapshot(&self) {
        let Some(jobs) = self.jobs.as_ref() else {
            return;
        };
        let (done, renewed) = oneshot::channel();
        if jobs.send(Work::Refresh(done)).await.is_ok() {
            let _ = renewed.await;
        }
    }

    /// Runs `f` with the database and the hub cache on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &HubCache) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let hub = Arc::clone(&self.hub);
        tokio::task::spawn_blocking(move || f(&db, &hub))
            .await
            .map_err(|e| StoreError::other_from("the hub task failed", e))?
    }

    /// [`Self::blocking`] for a hub write (it commits outside the writer), then the
    /// snapshot renewed ([`Work::Refresh`]), whether the write succeeded or not.
    async fn hub_write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &HubCache) -> StoreResult<T> + Send + 'static,
    {
        let out = self.blocking(f).await;
        self.refresh_snapshot().await;
        out
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer loop once it has drained and committed.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // The snapshot ends before the database closes, so the close is a clean one.
        *self
            .latest
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Tables must exist before a read transaction can open them.
fn create_tables(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(db_err)?;
    WriteTables::open(&txn)?;
    txn.commit().map_err(db_err)
}

fn writer_loop(db: &Database, mut queue: mpsc::Receiver<Work>, latest: &Latest) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut refreshes = Vec::new();
    // `None` once every sender is gone: the store was dropped.
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(work) = next {
            match work {
                Work::Write(job) => batch.push(job),
                Work::Refresh(done) => refreshes.push(done),
            }
            next = (batch.len() < MAX_BATCH)
                .then(|| queue.try_recv().ok())
                .flatten();
        }
        if !batch.is_empty() {
            commit_batch(db, std::mem::take(&mut batch), latest);
        }
        if !refreshes.is_empty() {
            latest.refresh(db);
            for done in refreshes.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// Applies a batch in one transaction and answers every caller.
fn commit_batch(db: &Database, jobs: Vec<Job>, latest: &Latest) {
    let (sets, replies): (Vec<(WriteSet, Encoded)>, Vec<_>) = jobs
        .into_iter()
        .map(|job| ((job.set, job.encoded), job.reply))
        .unzip();
    match apply_batch(db, sets) {
        Ok(outcomes) => {
            // Before any answer: a read that starts after one must see this commit.
            if outcomes.iter().any(Result::is_ok) {
                latest.refresh(db);
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The caller may have gone away; its set is committed regardless.
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            tracing::error!(error = %error.chain(), "embedded store: batch commit failed");
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// One outcome per set, or an error that sinks the whole batch (nothing was committed).
fn apply_batch(db: &Database, sets: Vec<(WriteSet, Encoded)>) -> StoreResult<Vec<StoreResult<()>>> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    let mut outcomes = Vec::with_capacity(sets.len());
    {
        let mut tables = WriteTables::open(&txn)?;
        let mut index = IndexTables::open(&txn)?;
        for (set, mut encoded) in sets {
            let entries = std::mem::take(&mut encoded.index);
            let outbox = std::mem::take(&mut encoded.outbox);
            // Planning only reads; a set refused here has written nothing.
            match plan(set, &tables).and_then(|p| EncodedPlan::encode(p, encoded)) {
                Ok(encoded) => {
                    tables.apply(encoded)?;
                    index.update(&entries)?;
                    embedded_outbox::write(&txn, outbox)?;
                    outcomes.push(Ok(()));
                }
                Err(refusal) => outcomes.push(Err(refusal)),
            }
        }
    }
    let committed = outcomes.iter().filter(|o| o.is_ok()).count();
    tracing::debug!(
        sets = outcomes.len(),
        committed,
        "embedded store: group commit"
    );
    if committed > 0 {
        txn.commit().map_err(db_err)?;
    } else {
        // Nothing to make durable: skip the fsync.
        txn.abort().map_err(db_err)?;
    }
    Ok(outcomes)
}

/// The tables of one write transaction.
struct WriteTables<'txn> {
    products: Table<'txn, &'static IdBytes, &'static [u8]>,
    contributions: Table<'txn, &'static IdBytes, &'static [u8]>,
    keys: Table<'txn, &'static str, &'static IdBytes>,
    waiters: Table<'txn, &'static str, &'static [u8]>,
    roots: Table<'txn, (&'static IdBytes, &'static IdBytes), ()>,
    history: Table<'txn, (&'static IdBytes, u64), &'static [u8]>,
    events: Table<'txn, (&'static str, &'static str), &'static [u8]>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> StoreResult<Self> {
        Ok(Self {
            products: txn.open_table(PRODUCTS).map_err(db_err)?,
            contributions: txn.open_table(CONTRIBUTIONS).map_err(db_err)?,
            keys: txn.open_table(KEYS).map_err(db_err)?,
            waiters: txn.open_table(WAITERS).map_err(db_err)?,
            roots: txn.open_table(PACKAGE_ROOTS).map_err(db_err)?,
            history: txn.open_table(HISTORY).map_err(db_err)?,
            events: txn.open_table(EVENTS).map_err(db_err)?,
        })
    }

    fn apply(&mut self, plan: EncodedPlan) -> StoreResult<()> {
        for (id, product) in &plan.products {
            let old = self
                .products
                .insert(id, product.row.as_slice())
                .map_err(db_err)?;
            let moved;
            let contributions = match (&product.contributions, old) {
                (Some(bytes), _) => Some(bytes.as_slice()),
                // Kept where they are, unless the row replaced held them inline (written
                // before the split): then they move apart now.
                (None, Some(old)) if is_apart(old.value()) => None,
                (None, Some(old)) => {
                    moved = inline_contributions(old.value())?;
                    Some(moved.as_slice())
                }
                (None, None) => {
                    return Err(StoreError::corrupt(format!(
                        "product {}: no stored contributions to keep",
                        id_from_bytes(id)
                    )))
                }
            };
            if let Some(bytes) = contributions {
                self.contributions.insert(id, bytes).map_err(db_err)?;
            }
        }
        for id in &plan.deleted {
            self.products.remove(id).map_err(db_err)?;
            self.contributions.remove(id).map_err(db_err)?;
        }
        for key in &plan.released {
            self.keys.remove(key.as_str()).map_err(db_err)?;
        }
        for (key, owner) in &plan.keys {
            self.keys.insert(key.as_str(), owner).map_err(db_err)?;
        }
        for (key, bytes) in &plan.waiters {
            match bytes {
                Some(bytes) => self.waiters.insert(key.as_str(), bytes.as_slice()),
                None => self.waiters.remove(key.as_str()),
            }
            .map_err(db_err)?;
        }
        for change in &plan.roots {
            match change {
                RootChange::Add { root, member } => self
                    .roots
                    .insert((&id_bytes(root), &id_bytes(member)), ())
                    .map(drop),
                RootChange::Remove { root, member } => self
                    .roots
                    .remove((&id_bytes(root), &id_bytes(member)))
                    .map(drop),
            }
            .map_err(db_err)?;
        }
        for ((id, revision), bytes) in &plan.history {
            self.history
                .insert((id, *revision), bytes.as_slice())
                .map_err(db_err)?;
        }
        if let Some(((source, event_id), bytes)) = &plan.processed {
            self.events
                .insert((source.as_str(), event_id.as_str()), bytes.as_slice())
                .map_err(db_err)?;
        }
        Ok(())
    }
}

impl PlanView for WriteTables<'_> {
    fn product_state(&self, id: &PinvId) -> StoreResult<Option<ProductState>> {
        let Some(guard) = self.products.get(&id_bytes(id)).map_err(db_err)? else {
            return Ok(None);
        };
        product_state(guard.value()).map(Some)
    }

    fn key_owner(&self, key: &MatchKey) -> StoreResult<Option<PinvId>> {
        Ok(self
            .keys
            .get(key.as_str())
            .map_err(db_err)?
            .map(|g| id_from_bytes(g.value())))
    }

    fn is_processed(&self, source: &Source, event_id: &EventId) -> StoreResult<bool> {
        Ok(self
            .events
            .get((source.as_str(), event_id.as_str()))
            .map_err(db_err)?
            .is_some())
    }

    fn waiters_of(&self, key: &MatchKey) -> StoreResult<BTreeSet<PinvId>> {
        match self.waiters.get(key.as_str()).map_err(db_err)? {
            Some(guard) => decode(guard.value(), "waiters"),
            None => Ok(BTreeSet::new()),
        }
    }
}

/// A stored product is a fixed header, then the record's JSON, packed. The header holds what
/// the writer's guards need (revision, package root), so checking a write never parses
/// the documents: the guard check runs on the single writer thread, in every POST.
/// Header: revision (8 bytes, little-endian), flags (1), package root (16, zero if none).
const HEADER_LEN: usize = 8 + 1 + 16;

/// Flag: the product belongs to a package; the root's id follows.
const FLAG_ROOT: u8 = 1;
/// Flag: the contributions are in the `contributions` table, not in the row's JSON.
const FLAG_APART: u8 = 2;

/// A product's row as written: the record without its contributions, with the merged
/// document as `M` (a tree, or its JSON made already).
#[derive(Serialize)]
struct RowOut<'a, M: ?Sized> {
    id: &'a PinvId,
    revision: u64,
    links: &'a Links,
    merged: &'a M,
    match_keys: &'a [MatchKey],
    package_root: &'a Option<PinvId>,
    rules_hash: &'a str,
}

/// A product's row as read, in either layout, with the merged document as `M` (a tree, or
/// the stored text).
#[derive(Deserialize)]
struct RowIn<M> {
    id: PinvId,
    revision: u64,
    /// Present in rows written before contributions moved apart.
    #[serde(default)]
    contributions: Option<Vec<Contribution>>,
    links: Links,
    merged: M,
    match_keys: Vec<MatchKey>,
    package_root: Option<PinvId>,
    rules_hash: String,
}

/// The stored row of a product: header, then JSON (contributions apart), with `merged` as
/// the merged document (`record.merged`, or its JSON).
fn product_bytes<M: Serialize + ?Sized>(
    record: &ProductRecord,
    merged: &M,
) -> StoreResult<Vec<u8>> {
    let row = RowOut {
        id: &record.id,
        revision: record.revision,
        links: &record.links,
        merged,
        match_keys: &record.match_keys,
        package_root: &record.package_root,
        rules_hash: &record.rules_hash,
    };
    let json = serde_json::to_vec(&row)
        .map_err(|e| StoreError::other_from("cannot encode a product", e))?;
    let mut out = Vec::with_capacity(HEADER_LEN + packed_capacity(json.len()));
    out.extend_from_slice(&record.revision.to_le_bytes());
    match &record.package_root {
        Some(root) => {
            out.push(FLAG_APART | FLAG_ROOT);
            out.extend_from_slice(root.as_bytes());
        }
        None => {
            out.push(FLAG_APART);
            out.extend_from_slice(&[0; 16]);
        }
    }
    pack_into(&json, &mut out);
    Ok(out)
}

/// A product's first history entry as written: the entry without its patch, and the
/// document it created, from which [`decode_history`] makes the patch again. The document
/// is the JSON the product's row was made from, so a creation costs one serialisation of
/// the document, not a copy of it into a patch and a second serialisation.
#[derive(Serialize)]
struct CreationOut<'a> {
    #[serde(flatten)]
    entry: &'a HistoryEntry,
    #[serde(rename = "createdDocument")]
    document: &'a RawValue,
}

/// A stored history entry: as written, or a creation ([`CreationOut`]) with its patch made
/// again from the document.
fn decode_history(bytes: &[u8]) -> StoreResult<HistoryEntry> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "createdDocument")]
        document: Option<Value>,
    }
    let json = unpack(bytes, "history entry")?;
    let mut entry: HistoryEntry = decode(&json, "history entry")?;
    if entry.patch.is_null() {
        let created: Created = decode(&json, "history entry")?;
        let document = created
            .document
            .ok_or_else(|| StoreError::corrupt("a history entry has neither patch nor document"))?;
        entry.patch = patch_between(None, &document);
    }
    Ok(entry)
}

/// Whether a row keeps its contributions in the `contributions` table.
fn is_apart(row: &[u8]) -> bool {
    row.get(8).is_some_and(|flags| flags & FLAG_APART != 0)
}

/// The contributions' JSON of a row that holds them inline.
fn inline_contributions(row: &[u8]) -> StoreResult<Vec<u8>> {
    #[derive(Deserialize)]
    struct Inline<'a> {
        #[serde(borrow)]
        contributions: &'a RawValue,
    }
    let json = product_json(row)?;
    let inline: Inline = decode(&json, "product")?;
    Ok(inline.contributions.get().as_bytes().to_vec())
}

/// A product from its row and, when they are apart, its contributions' bytes.
fn decode_record(row: &[u8], contributions: Option<&[u8]>) -> StoreResult<ProductRecord> {
    let (mut record, merged) = decode_row::<Value>(row, contributions)?;
    record.merged = merged;
    Ok(record)
}

/// [`decode_record`] leaving the merged document as its stored text.
fn decode_scanned(row: &[u8], contributions: Option<&[u8]>) -> StoreResult<ScannedProduct> {
    let (record, merged) = decode_row::<Box<RawValue>>(row, contributions)?;
    Ok(ScannedProduct {
        record,
        merged_text: Some(merged),
    })
}

/// A product's record (its `merged` left `Null`) and its merged document as `M`.
fn decode_row<M: DeserializeOwned>(
    row: &[u8],
    contributions: Option<&[u8]>,
) -> StoreResult<(ProductRecord, M)> {
    let row: RowIn<M> = decode_product(row)?;
    let contributions = match (row.contributions, contributions) {
        (Some(inline), _) => inline,
        (None, Some(bytes)) => decode_packed(bytes, "contributions")?,
        (None, None) => {
            return Err(StoreError::corrupt(format!(
                "product {}: its contributions are missing",
                row.id
            )))
        }
    };
    let record = ProductRecord {
        id: row.id,
        revision: row.revision,
        contributions,
        links: row.links,
        merged: Value::Null,
        match_keys: row.match_keys,
        package_root: row.package_root,
        rules_hash: row.rules_hash,
    };
    Ok((record, row.merged))
}

/// Reads a product's row and, when they are apart, its contributions.
fn read_record(
    products: &impl ReadableTable<&'static IdBytes, &'static [u8]>,
    contributions: &impl ReadableTable<&'static IdBytes, &'static [u8]>,
    id: &IdBytes,
) -> StoreResult<Option<ProductRecord>> {
    let Some(row) = products.get(id).map_err(db_err)? else {
        return Ok(None);
    };
    let row = row.value();
    if !is_apart(row) {
        return decode_record(row, None).map(Some);
    }
    let apart = contributions.get(id).map_err(db_err)?;
    decode_record(row, apart.as_ref().map(|g| g.value())).map(Some)
}

/// The guard's view of stored product bytes, from the header alone.
fn product_state(bytes: &[u8]) -> StoreResult<ProductState> {
    if bytes.len() < HEADER_LEN {
        return Err(StoreError::corrupt(
            "product: record shorter than its header",
        ));
    }
    let revision = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let flags = bytes[8];
    if flags & !(FLAG_ROOT | FLAG_APART) != 0 {
        return Err(StoreError::corrupt(format!(
            "product: bad header flags {flags}"
        )));
    }
    let package_root = (flags & FLAG_ROOT != 0)
        .then(|| id_from_bytes(bytes[9..HEADER_LEN].try_into().expect("16 bytes")));
    Ok(ProductState {
        revision,
        package_root,
    })
}

/// The merged document of a stored record as the text it was stored as (the record's
/// other fields are skipped, not decoded).
#[derive(Deserialize)]
struct MergedText<'a> {
    #[serde(borrow)]
    merged: &'a RawValue,
}

/// The JSON part of stored product bytes (unpacked when it was packed).
fn product_json(bytes: &[u8]) -> StoreResult<Cow<'_, [u8]>> {
    let json = bytes
        .get(HEADER_LEN..)
        .ok_or_else(|| StoreError::corrupt("product: record shorter than its header"))?;
    unpack(json, "product")
}

/// The JSON part of stored product bytes, decoded.
fn decode_product<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    decode(&product_json(bytes)?, "product")
}

/// The part of a stored record that `list` needs.
#[derive(Deserialize)]
struct MergedOnly {
    merged: Value,
}

/// A [`Plan`] with every value already serialised, so that applying it can only fail in
/// redb (which sinks the batch), never half-way through a set for an encoding reason.
struct EncodedPlan {
    products: Vec<(IdBytes, EncodedProduct)>,
    deleted: Vec<IdBytes>,
    released: Vec<MatchKey>,
    keys: Vec<(MatchKey, IdBytes)>,
    waiters: BTreeMap<MatchKey, Option<Vec<u8>>>,
    roots: Vec<RootChange>,
    history: Vec<((IdBytes, u64), Vec<u8>)>,
    processed: Option<((Source, EventId), Vec<u8>)>,
}

impl EncodedPlan {
    fn encode(plan: Plan, encoded: Encoded) -> StoreResult<Self> {
        Ok(Self {
            products: plan
                .products
                .iter()
                .map(|r| id_bytes(&r.id))
                .zip(encoded.products)
                .collect(),
            deleted: plan.deleted.iter().map(id_bytes).collect(),
            released: plan.released,
            keys: plan
                .keys
                .into_iter()
                .map(|(key, owner)| (key, id_bytes(&owner)))
                .collect(),
            waiters: plan
                .waiters
                .into_iter()
                .map(|(key, set)| {
                    let bytes = if set.is_empty() {
                        None
                    } else {
                        Some(encode(&set)?)
                    };
                    Ok((key, bytes))
                })
                .collect::<StoreResult<_>>()?,
            roots: plan.roots,
            history: plan
                .history
                .iter()
                .map(|e| (id_bytes(&e.product), e.revision))
                .zip(encoded.history)
                .collect(),
            processed: plan
                .processed
                .map(|e| (e.source, e.event_id))
                .zip(encoded.processed),
        })
    }
}

/// The reads of a write, all in one read transaction.
impl ViewReads for ReadTransaction {
    fn processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>> {
        let table = self.open_table(EVENTS).map_err(db_err)?;
        let guard = table
            .get((source.as_str(), event_id.as_str()))
            .map_err(db_err)?;
        guard
            .map(|g| decode(g.value(), "processed event"))
            .transpose()
    }

    fn owners(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        let table = self.open_table(KEYS).map_err(db_err)?;
        let mut owners = BTreeMap::new();
        for key in keys {
            if let Some(guard) = table.get(key.as_str()).map_err(db_err)? {
                owners.insert(key.clone(), id_from_bytes(guard.value()));
            }
        }
        Ok(owners)
    }

    fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        let table = self.open_table(WAITERS).map_err(db_err)?;
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(guard) = table.get(key.as_str()).map_err(db_err)? {
                let waiting: Vec<PinvId> = decode(guard.value(), "waiters")?;
                out.insert(key.clone(), waiting);
            }
        }
        Ok(out)
    }

    fn products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        let products = self.open_table(PRODUCTS).map_err(db_err)?;
        let contributions = self.open_table(CONTRIBUTIONS).map_err(db_err)?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = read_record(&products, &contributions, &id_bytes(id))? {
                records.push(record);
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Time-ordered: the products, contributions, history and list-index entries a group
    /// commit inserts then share a few B-tree leaves instead of each copying a random one
    /// (BENCHMARKS.md, issue 9 round 8: half the bytes written per POST).
    fn product_ids(&self) -> fn() -> PinvId {
        PinvId::new_v7
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.read_for",
        skip_all,
        fields(store = "embedded")
    )]
    async fn read_for(&self, plan: Arc<dyn ReadPlan>) -> StoreResult<ReadResult> {
        self.read_point(move |txn| reads::run(&*plan, txn)).await
    }

    #[tracing::instrument(level = "debug", name = "store.resolve_keys", skip_all, fields(store = "embedded", keys = keys.len()))]
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        let keys = keys.to_vec();
        self.read(move |txn| txn.owners(&keys)).await
    }

    #[tracing::instrument(level = "debug", name = "store.get_products", skip_all, fields(store = "embedded", ids = ids.len()))]
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        let ids = ids.to_vec();
        self.read(move |txn| txn.products(&ids)).await
    }

    #[tracing::instrument(level = "debug", name = "store.get_merged_json", skip_all, fields(store = "embedded", id = %id))]
    async fn get_merged_json(&self, id: &PinvId) -> StoreResult<Option<Box<RawValue>>> {
        let id = id_bytes(id);
        self.read_point(move |txn| {
            let table = txn.open_table(PRODUCTS).map_err(db_err)?;
            let Some(bytes) = table.get(&id).map_err(db_err)? else {
                return Ok(None);
            };
            let json = product_json(bytes.value())?;
            let merged: MergedText = decode(&json, "product")?;
            Ok(Some(merged.merged.to_owned()))
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_processed", skip_all, fields(store = "embedded", source = %source, event_id = %event_id))]
    async fn get_processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>> {
        let (source, event_id) = (source.clone(), event_id.clone());
        self.read(move |txn| txn.processed(&source, &event_id))
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.waiters", skip_all, fields(store = "embedded", keys = keys.len()))]
    async fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        let keys = keys.to_vec();
        self.read(move |txn| ViewReads::waiters(txn, &keys)).await
    }

    #[tracing::instrument(level = "debug", name = "store.package_members", skip_all, fields(store = "embedded", root = %root))]
    async fn package_members(&self, root: &PinvId) -> StoreResult<Vec<PinvId>> {
        let root = id_bytes(root);
        self.read(move |txn| {
            let table = txn.open_table(PACKAGE_ROOTS).map_err(db_err)?;
            let (lowest, highest) = ([0u8; 16], [0xffu8; 16]);
            let mut members = Vec::new();
            for entry in table
                .range((&root, &lowest)..=(&root, &highest))
                .map_err(db_err)?
            {
                let (key, _) = entry.map_err(db_err)?;
                members.push(id_from_bytes(key.value().1));
            }
            Ok(members)
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.commit", skip_all, fields(store = "embedded", products = set.products.len()))]
    async fn commit(&self, mut set: WriteSet) -> StoreResult<()> {
        // Made before encoding, which drops the merged documents the events carry.
        let subscriptions = self.hub.get();
        let outbox =
            embedded_outbox::encode(&entries_for(&set, &subscriptions, chrono::Utc::now()))?;
        let (set, mut encoded) = if set.products.len() < PARALLEL_DECODE_MIN {
            // A POST's set: a few records, cheaper to encode right here.
            let index = embedded_index::entries_of(&self.index, &set);
            let encoded = Encoded::take_from(&mut set)?;
            (set, Encoded { index, ..encoded })
        } else {
            let paths = Arc::clone(&self.index);
            let (set, encoded) = tokio::task::spawn_blocking(move || {
                let index = embedded_index::entries_of(&paths, &set);
                let encoded = Encoded::take_from(&mut set).map(|e| Encoded { index, ..e });
                (set, encoded)
            })
            .await
            .map_err(|e| StoreError::other_from("the encoding task failed", e))?;
            (set, encoded?)
        };
        encoded.outbox = outbox;
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("store is closed"))?;
        let (reply, outcome) = oneshot::channel();
        jobs.send(Work::Write(Job {
            set,
            encoded,
            reply,
        }))
        .await
        .map_err(|_| StoreError::unavailable("the writer thread has stopped"))?;
        outcome
            .await
            .map_err(|_| StoreError::unavailable("the writer thread stopped before answering"))?
    }

    /// The products the list index proposes, or else every product, decoded and filtered.
    #[tracing::instrument(
        level = "debug",
        name = "store.list",
        skip_all,
        fields(store = "embedded")
    )]
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        let query = query.clone();
        let lists = self.index.candidates(&query);
        self.read(move |txn| {
            let table = txn.open_table(PRODUCTS).map_err(db_err)?;
            // The page keeps only what it shows (or sorts), so documents stream through it;
            // the first failure is kept aside and answered instead.
            let failure = std::cell::RefCell::new(None);
            let fail = |e: StoreError| {
                failure.borrow_mut().get_or_insert(e);
                None
            };
            let matching = |bytes: &[u8]| match decode_product::<MergedOnly>(bytes) {
                Ok(MergedOnly { merged }) => query.matches(&merged).then_some(merged),
                Err(e) => fail(e),
            };
            let (items, total) = match lists {
                Some(lists) => {
                    let ids = embedded_index::candidates(txn, &lists)?;
                    query.page(ids.iter().filter_map(|id| {
                        match table.get(&id_bytes(id)).map_err(db_err) {
                            Ok(Some(guard)) => matching(guard.value()),
                            Ok(None) => None,
                            Err(e) => fail(e),
                        }
                    }))
                }
                None => query.page(table.iter().map_err(db_err)?.filter_map(|entry| {
                    match entry.map_err(db_err) {
                        Ok((_, value)) => matching(value.value()),
                        Err(e) => fail(e),
                    }
                })),
            };
            if let Some(e) = failure.into_inner() {
                return Err(e);
            }
            Ok(ListPage { items, total })
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.history", skip_all, fields(store = "embedded", product = %id))]
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        let id = id_bytes(id);
        self.read(move |txn| {
            let table = txn.open_table(HISTORY).map_err(db_err)?;
            let mut entries = Vec::new();
            for entry in table.range((&id, 0)..=(&id, u64::MAX)).map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                entries.push(decode_history(value.value())?);
            }
            Ok(entries)
        })
        .await
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.scan",
        skip_all,
        fields(store = "embedded", limit)
    )]
    async fn scan(&self, after: Option<PinvId>, limit: usize) -> StoreResult<Vec<ProductRecord>> {
        self.read(move |txn| decode_all(&scan_rows(txn, after, limit)?, decode_record))
            .await
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.scan_for_remerge",
        skip_all,
        fields(store = "embedded", limit)
    )]
    async fn scan_for_remerge(
        &self,
        after: Option<PinvId>,
        limit: usize,
    ) -> StoreResult<Vec<Scanned>> {
        self.read(move |txn| {
            Ok(scan_rows(txn, after, limit)?
                .into_iter()
                .map(|(id, row, apart)| {
                    Scanned::stored(id_from_bytes(&id), row, apart, decode_scanned)
                })
                .collect())
        })
        .await
    }

    /// The products table's length, which redb keeps: no scan (the default counts through
    /// `list`, which decodes every product).
    #[tracing::instrument(
        level = "debug",
        name = "store.count",
        skip_all,
        fields(store = "embedded")
    )]
    async fn count(&self) -> StoreResult<u64> {
        self.read(|txn| {
            txn.open_table(PRODUCTS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)
        })
        .await
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.ping",
        skip_all,
        fields(store = "embedded")
    )]
    async fn ping(&self) -> StoreResult<()> {
        if self.jobs.is_none() || self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(StoreError::unavailable("the writer thread has stopped"));
        }
        self.read(|txn| {
            txn.open_table(PRODUCTS).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn put_subscription(&self, subscription: &Subscription) -> StoreResult<()> {
        let sub = subscription.clone();
        self.hub_write(move |db, hub| embedded_outbox::put_subscription(db, hub, &sub))
            .await
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        self.blocking(|db, _| embedded_outbox::subscriptions(db))
            .await
    }

    async fn delete_subscription(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.hub_write(move |db, hub| embedded_outbox::delete_subscription(db, hub, &id))
            .await
    }

    async fn set_delivery_status(&self, id: &str, status: &DeliveryStatus) -> StoreResult<()> {
        let (id, status) = (id.to_owned(), status.clone());
        self.hub_write(move |db, _| embedded_outbox::set_delivery_status(db, &id, &status))
            .await
    }

    async fn outbox(&self, subscription: &str, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        let sub = subscription.to_owned();
        self.blocking(move |db, _| embedded_outbox::outbox(db, &sub, limit))
            .await
    }

    async fn outbox_counts(&self, subscription: &str) -> StoreResult<OutboxCounts> {
        let sub = subscription.to_owned();
        self.blocking(move |db, _| embedded_outbox::outbox_counts(db, &sub))
            .await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> StoreResult<()> {
        self.hub_write(move |db, _| embedded_outbox::settle(db, settlements))
            .await
    }
}

/// Below this many records a scan decodes (and a commit encodes) on its own thread:
/// handing them to the pool costs more.
const PARALLEL_DECODE_MIN: usize = 64;

/// A product's stored bytes as a scan copies them: its row, and its contributions when
/// they are apart.
type RawProduct = (IdBytes, Vec<u8>, Option<Vec<u8>>);

/// The stored bytes of up to `limit` products after `after`, in id order.
fn scan_rows(
    txn: &ReadTransaction,
    after: Option<PinvId>,
    limit: usize,
) -> StoreResult<Vec<RawProduct>> {
    let after = after.as_ref().map(id_bytes);
    let table = txn.open_table(PRODUCTS).map_err(db_err)?;
    let contributions = txn.open_table(CONTRIBUTIONS).map_err(db_err)?;
    let lower = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
    // Both tables are keyed by id: walk them side by side (a merge join), which reads each
    // contributions page once instead of descending the tree per product.
    let mut apart_rows = contributions
        .range::<&IdBytes>((lower, Bound::Unbounded))
        .map_err(db_err)?;
    let mut next_apart = apart_rows.next().transpose().map_err(db_err)?;
    let mut raw = Vec::new();
    for entry in table
        .range::<&IdBytes>((lower, Bound::Unbounded))
        .map_err(db_err)?
        .take(limit)
    {
        let (key, value) = entry.map_err(db_err)?;
        let (id, row) = (key.value(), value.value());
        let mut apart = None;
        if is_apart(row) {
            while matches!(&next_apart, Some((k, _)) if k.value() < id) {
                next_apart = apart_rows.next().transpose().map_err(db_err)?;
            }
            if let Some((k, bytes)) = &next_apart {
                if k.value() == id {
                    apart = Some(bytes.value().to_vec());
                }
            }
        }
        raw.push((*id, row.to_vec(), apart));
    }
    Ok(raw)
}

/// Decodes scanned products, in order, on every core: decoding dominates a large scan, and
/// the tables themselves are read in microseconds. (A batch re-merge's scan leaves decoding
/// to the merge, see [`Scanned`].)
fn decode_all<T: Send>(
    raw: &[RawProduct],
    decode: fn(&[u8], Option<&[u8]>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let decode = |(_, row, apart): &RawProduct| decode(row, apart.as_deref());
    if raw.len() < PARALLEL_DECODE_MIN {
        return raw.iter().map(decode).collect();
    }
    raw.par_iter().map(decode).collect()
}

/// The 16 bytes of a PINV id, whose order is the id's order.
fn id_bytes(id: &PinvId) -> IdBytes {
    *id.as_bytes()
}

fn id_from_bytes(bytes: &IdBytes) -> PinvId {
    PinvId::from_uuid(uuid::Uuid::from_bytes(*bytes))
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::other_from("cannot encode", e))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt_from(format!("cannot decode the stored {what}"), e))
}

/// First byte of a packed value: JSON text never starts with it.
const PACKED: u8 = 0;

/// [`encode`], packed (see [`pack_into`]).
fn encode_packed<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    let json = encode(value)?;
    let mut out = Vec::with_capacity(packed_capacity(json.len()));
    pack_into(&json, &mut out);
    Ok(out)
}

/// [`decode`] of a value stored packed (or as plain JSON, see [`unpack`]).
fn decode_packed<T: DeserializeOwned>(bytes: &[u8], what: &str) -> StoreResult<T> {
    decode(&unpack(bytes, what)?, what)
}

/// The room [`pack_into`] needs for `json_len` bytes of JSON, at worst.
fn packed_capacity(json_len: usize) -> usize {
    1 + 4 + lz4_flex::block::get_maximum_output_size(json_len)
}

/// Appends `json` compressed: [`PACKED`], its length (4 bytes, little-endian), then an lz4
/// block. Documents, contributions and history patches are JSON with many repeated keys, and
/// come out at about half their size: rows of half the size mean half the B-tree leaves to
/// rewrite in a re-merge and to read in a scan, and a store that fits in memory twice over.
///
/// Compresses straight into `out`. A value the 4-byte length cannot describe stays plain
/// JSON, which [`unpack`] reads as it is.
fn pack_into(json: &[u8], out: &mut Vec<u8>) {
    let Ok(len) = u32::try_from(json.len()) else {
        out.extend_from_slice(json);
        return;
    };
    let header = out.len();
    out.push(PACKED);
    out.extend_from_slice(&len.to_le_bytes());
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(json.len()),
        0,
    );
    match lz4_flex::block::compress_into(json, &mut out[start..]) {
        Ok(written) => out.truncate(start + written),
        // Cannot happen (`out` has room for the worst case); plain JSON is still readable.
        Err(_) => {
            out.truncate(header);
            out.extend_from_slice(json);
        }
    }
}

/// A stored value's JSON: unpacked when it was packed, as it is when it is older JSON.
fn unpack<'a>(bytes: &'a [u8], what: &str) -> StoreResult<Cow<'a, [u8]>> {
    let Some((&PACKED, block)) = bytes.split_first() else {
        return Ok(Cow::Borrowed(bytes));
    };
    // The length comes from the file: refuse one no lz4 block of this size could give
    // (lz4 expands at most about 255 times) rather than allocate it.
    let corrupt = || StoreError::corrupt(format!("cannot unpack the stored {what}"));
    let declared = block
        .get(..4)
        .map(|n| u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize)
        .ok_or_else(corrupt)?;
    if declared > block.len().saturating_mul(255) {
        return Err(corrupt());
    }
    lz4_flex::block::decompress_size_prepended(block)
        .map(Cow::Owned)
        .map_err(|e| StoreError::corrupt_from(format!("cannot unpack the stored {what}"), e))
}

/// The message of [`EmbeddedStore::open`] when another process holds the store (redb locks
/// its file for one process: a running `pinv serve` holds it).
pub const IN_USE: &str = "the store is in use by another process (the embedded store admits one \
                          process at a time; a running `pinv serve` holds it)";

/// Whether `error` says that another process holds the store (see [`IN_USE`]).
pub fn is_in_use(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(cause)
        if cause
            .source()
            .and_then(|e| e.downcast_ref::<redb::Error>())
            .is_some_and(|e| matches!(e, redb::Error::DatabaseAlreadyOpen)))
}

fn db_err(error: impl Into<redb::Error>) -> StoreError {
    let error = error.into();
    match error {
        redb::Error::Corrupted(_) => {
            StoreError::corrupt_from("the database file is damaged", error)
        }
        redb::Error::DatabaseAlreadyOpen => StoreError::unavailable_from(IN_USE, error),
        _ => StoreError::other_from("the embedded database failed", error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_bytes_round_trip_and_sort_like_pinv_ids() {
        let mut ids: Vec<PinvId> = (0..200).map(|_| PinvId::new_v4()).collect();
        ids.push(PinvId::from_uuid(uuid::Uuid::nil()));
        ids.push(PinvId::from_uuid(uuid::Uuid::max()));
        for id in &ids {
            assert_eq!(id_from_bytes(&id_bytes(id)), *id);
        }
        let mut by_id = ids.clone();
        by_id.sort();
        let mut by_bytes = ids.clone();
        by_bytes.sort_by_key(id_bytes);
        let mut by_text = ids;
        by_text.sort_by_key(PinvId::to_string);
        assert_eq!(by_id, by_bytes);
        assert_eq!(by_id, by_text);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_point_read_sees_every_write_acknowledged_before_it() {
        use crate::store::conformance::{create, id, record, update};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        // Writers and readers at once, so that reads meet commits being flushed.
        let writers: Vec<_> = (0..4u128)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for n in (1..=50).map(|i| w * 1000 + i) {
                        store
                            .commit(create(record(id(n), 1, serde_json::json!({"n": 1}))))
                            .await
                            .unwrap();
                        assert_eq!(merged_n(&store, n).await, Some(1), "product {n}");
                        let set = update(record(id(n), 2, serde_json::json!({"n": 2})), 1);
                        store.commit(set).await.unwrap();
                        assert_eq!(merged_n(&store, n).await, Some(2), "product {n}");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_hub_write_renews_the_point_read_snapshot() {
        use crate::store::conformance::subscription;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.put_subscription(&subscription("s1")).await.unwrap();
        // A snapshot from before the hub's commit would pin the pages it freed.
        let snapshot = store.latest.get().expect("a snapshot");
        let subs = snapshot.open_table(embedded_outbox::SUBSCRIPTIONS).unwrap();
        assert!(subs.get("s1").unwrap().is_some());
        store.delete_subscription("s1").await.unwrap();
        let snapshot = store.latest.get().expect("a snapshot");
        let subs = snapshot.open_table(embedded_outbox::SUBSCRIPTIONS).unwrap();
        assert!(subs.get("s1").unwrap().is_none());
    }

    /// The `n` of product `n`'s merged document, read as `GET /products/{id}` reads it.
    async fn merged_n(store: &EmbeddedStore, n: u128) -> Option<u64> {
        use crate::store::conformance::id;
        let text = store.get_merged_json(&id(n)).await.unwrap()?;
        let merged: Value = serde_json::from_str(text.get()).unwrap();
        merged["n"].as_u64()
    }

    #[tokio::test]
    async fn count_is_the_number_of_products() {
        use crate::store::conformance::{create, id, record};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.count().await.unwrap(), 0);
        for n in 1..=3 {
            let set = create(record(id(n), 1, serde_json::json!({"n": n as u64})));
            store.commit(set).await.unwrap();
        }
        assert_eq!(store.count().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn large_scans_decode_in_parallel_and_keep_id_order() {
        use crate::store::conformance::{create, id, record};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let n = 3 * PARALLEL_DECODE_MIN as u128 + 5;
        for i in (1..=n).rev() {
            let set = create(record(id(i), 1, serde_json::json!({"n": i as u64})));
            store.commit(set).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .scan(after, 2 * PARALLEL_DECODE_MIN + 1)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            seen.extend(
                page.into_iter()
                    .map(|r| (r.id, r.merged["n"].as_u64().unwrap())),
            );
        }
        let expected: Vec<_> = (1..=n).map(|i| (id(i), i as u64)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn undecodable_records_are_reported_as_corrupt() {
        let error = decode_product::<ProductRecord>(b"not json").err();
        assert!(matches!(error, Some(StoreError::Corrupt(_))), "{error:?}");
        let mut bytes = vec![0; HEADER_LEN];
        bytes.extend_from_slice(b"{}");
        let error = decode_product::<ProductRecord>(&bytes).err();
        assert!(matches!(error, Some(StoreError::Corrupt(_))), "{error:?}");
        // The decoder's error is kept as the source, not pasted into the message.
        let error = error.unwrap();
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.is::<serde_json::Error>(), "{source:?}");
        assert!(!error.to_string().contains(&source.to_string()), "{error}");
        bytes[8] = 7;
        assert!(matches!(product_state(&bytes), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_store_held_elsewhere_is_in_use_with_redb_s_error_as_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let _held = EmbeddedStore::open(dir.path()).unwrap();
        let Err(error) = EmbeddedStore::open(dir.path()) else {
            panic!("a second open of a held store succeeded");
        };
        assert!(is_in_use(&error), "{error:?}");
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.is::<redb::Error>(), "{source:?}");
        // Another unavailable store is not "in use", whatever its message says.
        assert!(!is_in_use(&StoreError::unavailable(IN_USE)));
    }

    /// A row as written before contributions moved apart: their JSON inline.
    fn inline_row(record: &ProductRecord) -> Vec<u8> {
        let mut out = record.revision.to_le_bytes().to_vec();
        out.push(0);
        out.extend_from_slice(&[0; 16]);
        serde_json::to_writer(&mut out, record).unwrap();
        out
    }

    fn contributions_rows(store: &EmbeddedStore) -> u64 {
        let txn = store.db.begin_read().unwrap();
        txn.open_table(CONTRIBUTIONS).unwrap().len().unwrap()
    }

    #[tokio::test]
    async fn rows_with_inline_contributions_are_read_and_moved_apart_when_kept() {
        use crate::store::conformance::{contribution, create, id, record, update};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let product = |n: u128| {
            let mut r = record(id(n), 1, serde_json::json!({"name": "a"}));
            r.contributions = vec![contribution("a", serde_json::json!({"name": n as u64}))];
            r
        };
        // Old rows 1 and 3 on either side of a new row 2 (a scan walks both tables).
        let (old, new, old3) = (product(1), product(2), product(3));
        {
            let txn = store.db.begin_write().unwrap();
            let mut products = txn.open_table(PRODUCTS).unwrap();
            for r in [&old, &old3] {
                products
                    .insert(&id_bytes(&r.id), inline_row(r).as_slice())
                    .unwrap();
            }
            drop(products);
            txn.commit().unwrap();
        }
        store.commit(create(new.clone())).await.unwrap();
        assert_eq!(
            store.get_products(&[id(1)]).await.unwrap(),
            vec![old.clone()]
        );
        let all = vec![old.clone(), new.clone(), old3.clone()];
        assert_eq!(store.scan(None, 5).await.unwrap(), all);
        assert_eq!(contributions_rows(&store), 1);

        let mut remerged = old.clone();
        remerged.revision = 2;
        remerged.merged["name"] = "b".into();
        let mut set = update(remerged.clone(), 1);
        set.products[0].contributions_unchanged = true;
        // What a re-merge hands over; the store must not rely on it when it keeps them.
        set.products[0].record.contributions = Vec::new();
        store.commit(set).await.unwrap();
        assert_eq!(contributions_rows(&store), 2, "moved out of the old row");
        assert_eq!(
            store.get_products(&[id(1)]).await.unwrap(),
            vec![remerged.clone()]
        );
        let all = vec![remerged, new, old3.clone()];
        assert_eq!(store.scan(None, 5).await.unwrap(), all);
        assert_eq!(store.scan(Some(id(2)), 5).await.unwrap(), vec![old3]);
    }

    #[tokio::test]
    async fn a_remerge_scan_hands_over_bytes_and_a_damaged_row_fails_the_run_as_corrupt() {
        use crate::store::conformance::{create, id, record};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        for n in 1..=3 {
            let set = create(record(id(n), 1, serde_json::json!({"n": n as u64})));
            store.commit(set).await.unwrap();
        }
        let scanned = store.scan_for_remerge(Some(id(1)), 5).await.unwrap();
        let ids: Vec<PinvId> = scanned.iter().map(Scanned::id).collect();
        assert_eq!(ids, vec![id(2), id(3)], "ids known before any decoding");
        let decoded: Vec<ProductRecord> = scanned
            .into_iter()
            .map(|s| s.decode().unwrap().into_record().unwrap())
            .collect();
        assert_eq!(decoded, store.scan(Some(id(1)), 5).await.unwrap());

        // Product 2's row loses its JSON: the scan still reads it, its decoding fails.
        {
            let txn = store.db.begin_write().unwrap();
            let mut products = txn.open_table(PRODUCTS).unwrap();
            let row = products
                .get(&id_bytes(&id(2)))
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            products
                .insert(&id_bytes(&id(2)), &row[..HEADER_LEN])
                .unwrap();
            drop(products);
            txn.commit().unwrap();
        }
        let scanned = store.scan_for_remerge(None, 5).await.unwrap();
        assert_eq!(scanned.len(), 3);
        let damaged = scanned.into_iter().nth(1).unwrap().decode().err();
        assert!(
            matches!(damaged, Some(StoreError::Corrupt(_))),
            "{damaged:?}"
        );
        let rules = Arc::new(crate::testing::rules::shipped_rules());
        let options = crate::app::remerge::RemergeOptions {
            dry_run: false,
            filters: vec![],
            batch: 2,
        };
        let outcome = crate::app::remerge::run(store, rules, &options, &mut Vec::new()).await;
        assert!(
            matches!(outcome, Err(StoreError::Corrupt(_))),
            "{:?}",
            outcome.map(|s| s.scanned)
        );
    }

    #[tokio::test]
    async fn deleting_a_product_deletes_its_contributions() {
        use crate::store::conformance::{contribution, create, id, record};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut rec = record(id(1), 1, serde_json::json!({}));
        rec.contributions = vec![contribution("a", serde_json::json!({}))];
        store.commit(create(rec)).await.unwrap();
        assert_eq!(contributions_rows(&store), 1);
        let set = WriteSet {
            delete_products: vec![crate::core::record::ProductDelete {
                id: id(1),
                expected_revision: 1,
                last: serde_json::json!({}),
            }],
            ..WriteSet::default()
        };
        store.commit(set).await.unwrap();
        assert_eq!(contributions_rows(&store), 0);
    }

    #[test]
    fn the_header_carries_revision_and_root() {
        let id = crate::store::conformance::id;
        let mut r = crate::store::conformance::record(id(3), 41, serde_json::json!({"name": "x"}));
        r.package_root = Some(id(9));
        let bytes = product_bytes(&r, &r.merged).unwrap();
        assert_eq!(
            product_state(&bytes).unwrap(),
            ProductState {
                revision: 41,
                package_root: Some(id(9))
            }
        );
        let contributions = encode(&r.contributions).unwrap();
        assert_eq!(decode_record(&bytes, Some(&contributions)).unwrap(), r);
        assert!(
            matches!(decode_record(&bytes, None), Err(StoreError::Corrupt(_))),
            "a row whose contributions are apart needs them"
        );
        r.package_root = None;
        assert_eq!(
            product_state(&product_bytes(&r, &r.merged).unwrap())
                .unwrap()
                .package_root,
            None
        );
    }

    #[test]
    fn packed_json_unpacks_to_itself_and_plain_json_passes_through() {
        let json = serde_json::to_vec(&crate::store::conformance::record(
            crate::store::conformance::id(1),
            1,
            serde_json::json!({"name": "x", "note": "a".repeat(300)}),
        ))
        .unwrap();
        let mut packed = Vec::new();
        pack_into(&json, &mut packed);
        assert_eq!(packed[0], PACKED);
        assert!(packed.len() < json.len(), "{} bytes", packed.len());
        assert_eq!(unpack(&packed, "x").unwrap().as_ref(), json.as_slice());
        assert!(matches!(unpack(&json, "x").unwrap(), Cow::Borrowed(b) if b == json.as_slice()));
        assert!(matches!(unpack(b"", "x").unwrap(), Cow::Borrowed(b"")));
    }

    #[test]
    fn damaged_packed_json_is_corrupt_without_a_huge_allocation() {
        let mut packed = Vec::new();
        pack_into(
            br#"{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
            &mut packed,
        );
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let truncated = &packed[..packed.len() - 3];
        for (bytes, case) in [
            (&huge[..], "huge length"),
            (truncated, "truncated"),
            (&packed[..3], "no length"),
        ] {
            let error = unpack(bytes, "history entry").err();
            assert!(
                matches!(error, Some(StoreError::Corrupt(_))),
                "{case}: {error:?}"
            );
        }
        // The length is refused before lz4 sees it (lz4 would reserve 4 GiB for it first):
        // the error is the store's own, with no decoder error behind it.
        let refused = unpack(&huge, "history entry").unwrap_err();
        assert!(std::error::Error::source(&refused).is_none(), "{refused:?}");
    }

    #[tokio::test]
    async fn rows_contributions_and_history_are_stored_packed_and_plain_ones_still_read() {
        use crate::store::conformance::{create, history_entry, id, record};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let product = record(id(1), 1, serde_json::json!({"name": "x"}));
        let mut set = create(product.clone());
        set.history.push(history_entry(id(1), 1));
        store.commit(set).await.unwrap();
        let plain = history_entry(id(1), 2);
        {
            let txn = store.db.begin_write().unwrap();
            {
                let products = txn.open_table(PRODUCTS).unwrap();
                let row = products.get(&id_bytes(&id(1))).unwrap().unwrap();
                assert_eq!(row.value()[HEADER_LEN], PACKED, "the row");
                let contributions = txn.open_table(CONTRIBUTIONS).unwrap();
                let apart = contributions.get(&id_bytes(&id(1))).unwrap().unwrap();
                assert_eq!(apart.value()[0], PACKED, "the contributions");
            }
            {
                let mut history = txn.open_table(HISTORY).unwrap();
                let first = history.get((&id_bytes(&id(1)), 1)).unwrap().unwrap();
                assert_eq!(first.value()[0], PACKED, "the history entry");
                drop(first);
                // An entry as written before values were packed.
                history
                    .insert((&id_bytes(&id(1)), 2), encode(&plain).unwrap().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        assert_eq!(
            store.get_products(&[id(1)]).await.unwrap(),
            vec![product.clone()]
        );
        assert_eq!(
            store.get_merged_json(&id(1)).await.unwrap().unwrap().get(),
            serde_json::to_string(&product.merged).unwrap()
        );
        assert_eq!(
            store.history(&id(1)).await.unwrap(),
            vec![history_entry(id(1), 1), plain]
        );
    }
}
