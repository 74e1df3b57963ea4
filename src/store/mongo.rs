//! The MongoDB store: the production store for deployments with replicas, sharding and many
//! stateless PINV instances in front (`PINV_STORE=mongodb://...`).
//!
//! Layout (see `docs/mongodb.md`):
//! - `products`: one document per product, `_id` = PINV id. The record is kept as exact JSON
//!   text (`record`, with `merged` nulled, and `merged` beside it) so that any TMF637 key
//!   round-trips, whatever MongoDB thinks of `@`, `.` or `$` in field names. Query-only
//!   fields sit beside it: `revision` (compare-and-set), `package_root`, and `terms` (one
//!   string per leaf of the merged document, for list filters).
//! - `match_keys`: one document per key, `_id` = the key, `product` = its owner. Uniqueness
//!   comes from `_id`, which a sharded cluster enforces too.
//! - `waiters`: one document per (key, waiting product).
//! - `processed_events`: `_id` = `<source>:<event id>` (a source cannot contain `:`).
//! - `history`: `_id` = `<product>:<zero-padded revision>`, indexed by (product, revision).
//!
//! A write set that changes one product document and nothing else is a compare-and-set on
//! the revision; anything else (keys, several products, history, processed events) is one
//! multi-document transaction, so nothing half-written is ever visible.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{
    Error as MongoError, ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use serde_json::Value;

use crate::core::index::IndexedPaths;
use crate::core::record::{HistoryEntry, ProcessedEvent, ProductRecord, ProductWrite, WriteSet};
use crate::core::{EventId, MatchKey, PinvId, Source};
use crate::store::outbox::{DeliveryStatus, OutboxCounts, OutboxEntry, Settlement, Subscription};
use crate::store::{ListPage, ListQuery, Store, StoreError, StoreResult};

#[path = "mongo_index.rs"]
mod list_index;

const PRODUCTS: &str = "products";
const MATCH_KEYS: &str = "match_keys";
const WAITERS: &str = "waiters";
const PROCESSED: &str = "processed_events";
const HISTORY: &str = "history";
/// Where [`MongoStore::isolates_transactions`] writes its probe (inside a transaction it
/// aborts, so nothing stays on a server that isolates transactions).
const PROBES: &str = "isolation_probe";

#[path = "mongo_outbox.rs"]
mod hub;

/// The stored documents (`_id` and `merged` only) that a transaction replaced or deleted, by
/// product: their list-index entries are what it drops.
type Previous = BTreeMap<PinvId, Document>;

/// MongoDB's duplicate-key error code (E11000).
const DUPLICATE_KEY: i32 = 11000;

/// How a transaction guards the keys it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyGuard {
    /// Insert them; a key already recorded fails the transaction with [`KEY_RECORDED`].
    Insert,
    /// Read their owners first: a key recorded for the same product is left as it is.
    ReadFirst,
}

/// The conflict of a [`KeyGuard::Insert`] transaction that met a recorded key: nothing was
/// written, and [`MongoStore::commit_transaction`] tries again with [`KeyGuard::ReadFirst`].
const KEY_RECORDED: &str = "a claimed key is already recorded";

/// At most this many ids or documents in one command, so that the reply to every command
/// comes within the timeout however many keys one write set claims (see [`MongoStore::run`]).
const CHUNK: usize = 1000;

/// How PINV talks to MongoDB, beyond what the URI says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoOptions {
    /// Write concern `w`: `majority` (the default), a number of nodes (`1`), or a custom
    /// tag-set name.
    pub w: String,
    /// Whether writes wait for the on-disk journal; `None` leaves the server's default.
    pub journal: Option<bool>,
    /// Bound on waiting for the server: server selection, connecting, and every stretch of a
    /// call in which no reply comes. A call that waits longer fails with
    /// [`StoreError::Unavailable`] (or [`StoreError::OutcomeUnknown`] once its commit was
    /// sent); a large call whose replies keep coming is not cut short.
    pub timeout: Duration,
    /// Run one store call at a time. Only for wire-compatible test servers such as
    /// nx-27017, whose concurrent transactions share one SQLite transaction (no isolation,
    /// and one aborting can undo another's acknowledged writes). Off for MongoDB. When off,
    /// [`MongoStore::connect`] checks that the server isolates transactions and turns it on
    /// (with a warning) when it does not.
    pub one_at_a_time: bool,
    /// The paths of the list index (`store::mongo::list_index`).
    pub indexed_paths: IndexedPaths,
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self {
            w: "majority".to_owned(),
            journal: None,
            timeout: Duration::from_secs(5),
            one_at_a_time: false,
            indexed_paths: IndexedPaths::standard(),
        }
    }
}

impl MongoOptions {
    fn write_concern(&self) -> WriteConcern {
        let w = match self.w.parse::<u32>() {
            Ok(n) => Acknowledgment::Nodes(n),
            Err(_) => Acknowledgment::from(self.w.clone()),
        };
        let mut wc = WriteConcern::builder().w(w).w_timeout(self.timeout).build();
        wc.journal = self.journal;
        wc
    }
}

/// A store in one MongoDB database.
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    timeout: Duration,
    /// Held for a whole call when [`MongoOptions::one_at_a_time`] is set: by the task that
    /// runs it, until the server has answered its last command (see [`MongoStore::run`]).
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// The call this clone runs (each call runs on its own clone).
    call: Arc<Call>,
    /// The paths of the list index.
    index: Arc<IndexedPaths>,
}

/// What the caller of a store call and the task running it share.
struct Call {
    started: Instant,
    /// Milliseconds from `started` to the latest reply of the server.
    last_reply_ms: AtomicU64,
    /// [`RUNNING`], [`COMMITTING`] or [`ABANDONED`].
    phase: AtomicU8,
}

const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

impl Call {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_reply_ms: AtomicU64::new(0),
            phase: AtomicU8::new(RUNNING),
        }
    }

    fn replied(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_reply_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_reply(&self) -> Instant {
        self.started + Duration::from_millis(self.last_reply_ms.load(Ordering::Relaxed))
    }

    /// The task is about to send what makes its writes durable. False when the caller has
    /// already given up (and answered that nothing was written): the task must not commit.
    fn begin_commit(&self) -> bool {
        self.phase
            .compare_exchange(RUNNING, COMMITTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The caller gives up waiting. True when the commit had not been sent (and now never
    /// will be); false when it was, so the outcome is unknown.
    fn abandon(&self) -> bool {
        self.phase
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

impl MongoStore {
    /// Connects to `uri` (`mongodb://` or `mongodb+srv://`), and creates PINV's collections
    /// and indexes in `database` if they are missing (idempotent, safe from many instances).
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be reached within
    /// `options.timeout`, and [`StoreError::Other`] for a malformed URI.
    pub async fn connect(uri: &str, database: &str, options: MongoOptions) -> StoreResult<Self> {
        Self::connect_with(uri, database, options, None).await
    }

    /// [`MongoStore::connect`], with every command the driver sends reported to `commands`
    /// (tests count the round trips of a POST with it).
    #[cfg(any(test, feature = "testing"))]
    pub async fn connect_observed(
        uri: &str,
        database: &str,
        options: MongoOptions,
        commands: mongodb::event::EventHandler<mongodb::event::command::CommandEvent>,
    ) -> StoreResult<Self> {
        Self::connect_with(uri, database, options, Some(commands)).await
    }

    async fn connect_with(
        uri: &str,
        database: &str,
        options: MongoOptions,
        commands: Option<mongodb::event::EventHandler<mongodb::event::command::CommandEvent>>,
    ) -> StoreResult<Self> {
        let mut client_options = bounded(options.timeout, async {
            ClientOptions::parse(uri).await.map_err(|e| match *e.kind {
                ErrorKind::DnsResolve { .. } => {
                    StoreError::unavailable_from("cannot resolve the MongoDB host", e)
                }
                _ => StoreError::other_from("bad MongoDB URI", e),
            })
        })
        .await?;
        client_options
            .app_name
            .get_or_insert_with(|| "pinv".to_owned());
        // The driver gives up choosing a server a little before the call's own deadline,
        // so that its reason (which servers it tried, why each failed) reaches the caller
        // instead of a bare "did not answer".
        client_options.server_selection_timeout = Some(options.timeout * 4 / 5);
        client_options.connect_timeout = Some(options.timeout);
        client_options.write_concern = Some(options.write_concern());
        client_options.command_event_handler = commands;
        let client = Client::with_options(client_options).map_err(classify)?;
        let mut store = Self {
            db: client.database(database),
            client,
            timeout: options.timeout,
            gate: options
                .one_at_a_time
                .then(|| Arc::new(tokio::sync::Mutex::new(()))),
            call: Arc::new(Call::new()),
            index: Arc::new(options.indexed_paths),
        };
        store.run(|s| async move { s.init().await }).await?;
        store
            .run(|s| async move { s.ensure_list_index().await })
            .await?;
        if store.gate.is_none()
            && !store
                .run(|s| async move { s.isolates_transactions().await })
                .await?
        {
            tracing::warn!(
                database,
                "the MongoDB server does not isolate concurrent transactions (a write inside \
                 an open transaction was visible outside it): running one store call at a \
                 time, as PINV_MONGODB_ONE_AT_A_TIME=true would. MongoDB replica sets isolate \
                 them; this is a test server such as nx-27017"
            );
            store.gate = Some(Arc::new(tokio::sync::Mutex::new(())));
        }
        Ok(store)
    }

    /// Whether this store runs one call at a time: asked for
    /// ([`MongoOptions::one_at_a_time`]) or found needed at connect.
    pub fn runs_one_call_at_a_time(&self) -> bool {
        self.gate.is_some()
    }

    /// Whether a write inside an open transaction stays invisible outside it until the
    /// commit, as MongoDB guarantees. nx-27017 runs every session's transaction as a
    /// savepoint of one SQLite transaction: the write shows at once, and concurrent POSTs
    /// would mix their transactions (`docs/mongodb.md`). The transaction is aborted, so the
    /// probe leaves nothing behind where transactions are isolated.
    async fn isolates_transactions(&self) -> StoreResult<bool> {
        let probe = format!("probe-{}", uuid::Uuid::new_v4().simple());
        let probes = self.coll(PROBES);
        let mut session = self.client.start_session().await.map_err(classify)?;
        session.start_transaction().await.map_err(classify)?;
        // The first command of a transaction: a standalone server refuses it, and PINV, which
        // needs transactions for every POST, does not start.
        let written = probes
            .insert_one(doc! { "_id": &probe })
            .session(&mut session)
            .await
            .map_err(classify_probe);
        self.replied(());
        let seen = match written {
            Ok(_) => probes
                .find_one(doc! { "_id": &probe })
                .await
                .map_err(classify),
            Err(e) => Err(e),
        };
        self.replied(());
        // Best effort, as after any failed transaction: the server also aborts it when the
        // session goes away.
        let _ = session.abort_transaction().await;
        Ok(seen?.is_none())
    }

    /// Drops the whole database (tests and tools; PINV itself never calls this).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.run(|s| async move { s.db.drop().await.map_err(classify) })
            .await
    }

    async fn init(&self) -> StoreResult<()> {
        // Collections are created up front: older servers cannot create them inside a
        // transaction, and a sharded cluster wants them to exist before sharding.
        let existing: BTreeSet<String> = self
            .db
            .list_collection_names()
            .await
            .map_err(classify)?
            .into_iter()
            .collect();
        for name in [
            PRODUCTS,
            MATCH_KEYS,
            WAITERS,
            PROCESSED,
            HISTORY,
            PROBES,
            list_index::INDEX,
            list_index::META,
            hub::SUBSCRIPTIONS,
            hub::OUTBOX,
            hub::LEASES,
        ] {
            if !existing.contains(name) {
                if let Err(e) = self.db.create_collection(name).await {
                    // Another instance may have created it meanwhile (NamespaceExists).
                    if !matches!(*e.kind, ErrorKind::Command(ref c) if c.code == 48) {
                        return Err(classify(e));
                    }
                }
            }
        }
        let index = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        self.products()
            .create_indexes([
                index(doc! { "package_root": 1 }, "package_root"),
                index(doc! { "terms": 1 }, "terms"),
            ])
            .await
            .map_err(classify)?;
        self.coll(WAITERS)
            .create_index(index(doc! { "key": 1 }, "key"))
            .await
            .map_err(classify)?;
        self.coll(HISTORY)
            .create_index(index(
                doc! { "product": 1, "revision": 1 },
                "product_revision",
            ))
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    fn products(&self) -> Collection<Document> {
        self.coll(PRODUCTS)
    }

    /// Runs one store call on its own task and waits for it, at most `timeout` without a
    /// reply from the server (the driver has no socket timeout, so a server that accepts
    /// connections but never answers would otherwise hang the caller). The bound is on
    /// waiting, not on the whole call: a call that sends many commands (a write set of
    /// thousands of keys, chunked by [`CHUNK`]) takes as long as it needs while the server
    /// keeps answering. Waiting for the gate counts against the timeout.
    ///
    /// A caller that gives up leaves the server still working on what it was sent. So with
    /// the gate, the task keeps it until the server has answered (the next call must not
    /// overlap the abandoned one on a server that does not isolate them), and a task whose
    /// caller gave up before its commit was sent never sends it: "nothing was written"
    /// then holds. Without the gate the task is dropped, which aborts an open transaction.
    async fn run<T, F, Fut>(&self, call: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(MongoStore) -> Fut,
        Fut: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let turn = match &self.gate {
            Some(gate) => match tokio::time::timeout(self.timeout, gate.clone().lock_owned()).await
            {
                Ok(turn) => Some(turn),
                Err(_) => {
                    return Err(StoreError::unavailable(format!(
                        "an earlier call is still running on the MongoDB server after {:?} \
                         (one call at a time)",
                        self.timeout
                    )))
                }
            },
            None => None,
        };
        let state = Arc::new(Call::new());
        let mut this = self.clone();
        this.call = state.clone();
        let fut = call(this);
        let mut task = tokio::spawn(async move {
            let result = fut.await;
            drop(turn);
            result
        });
        loop {
            let deadline = state.last_reply() + self.timeout;
            tokio::select! {
                joined = &mut task => {
                    return joined.unwrap_or_else(|e| {
                        Err(StoreError::other_from("the store call task failed", e))
                    });
                }
                () = tokio::time::sleep_until(deadline) => {
                    if state.last_reply() + self.timeout > Instant::now() {
                        continue; // a reply came meanwhile
                    }
                    let not_sent = state.abandon();
                    if self.gate.is_none() {
                        task.abort();
                    }
                    let silent = self.timeout;
                    return Err(if not_sent {
                        StoreError::unavailable(format!(
                            "MongoDB did not answer within {silent:?}"
                        ))
                    } else {
                        StoreError::outcome_unknown(format!(
                            "MongoDB did not answer the commit within {silent:?}"
                        ))
                    });
                }
            }
        }
    }

    /// Marks a reply of the server: the caller's timeout counts from the latest one.
    fn replied<T>(&self, result: T) -> T {
        self.call.replied();
        result
    }

    /// Enters the commit: an error after this point leaves the outcome unknown.
    fn begin_commit(&self) -> StoreResult<()> {
        if self.call.begin_commit() {
            Ok(())
        } else {
            Err(StoreError::unavailable(
                "the caller gave up before the commit",
            ))
        }
    }

    /// A write set that changes one product document and nothing else: compare-and-set.
    async fn commit_single(&self, write: &ProductWrite) -> StoreResult<()> {
        let doc = product_doc(&write.record)?;
        self.begin_commit()?;
        match write.expected_revision {
            None => {
                self.products().insert_one(doc).await.map_err(|e| {
                    unknown_unless_refused(classify_conflict(e, "product already exists"))
                })?;
            }
            Some(expected) => {
                let filter =
                    doc! { "_id": write.record.id.to_string(), "revision": rev(expected)? };
                let result = self
                    .products()
                    .replace_one(filter, doc)
                    .await
                    .map_err(|e| unknown_unless_refused(classify(e)))?;
                if result.matched_count != 1 {
                    return Err(revision_moved(write));
                }
            }
        }
        Ok(())
    }

    /// Commits `set` in one transaction. Its keys are first inserted without reading them
    /// (a POST claims keys nobody owns: one round trip fewer); when one is already recorded
    /// the server refuses the insert, nothing is written, and the set is tried again with
    /// the guard that reads the keys' owners (re-recording a key a product already owns is
    /// allowed; another owner is a conflict).
    async fn commit_transaction(&self, set: &WriteSet) -> StoreResult<()> {
        match self.commit_transaction_once(set, KeyGuard::Insert).await {
            Err(StoreError::Conflict(c)) if c.message() == KEY_RECORDED => {
                self.commit_transaction_once(set, KeyGuard::ReadFirst).await
            }
            other => other,
        }
    }

    async fn commit_transaction_once(&self, set: &WriteSet, guard: KeyGuard) -> StoreResult<()> {
        let mut session = self.client.start_session().await.map_err(classify)?;
        session.start_transaction().await.map_err(classify)?;
        match self.apply(&mut session, set, guard).await {
            Ok(()) => {
                if let Err(e) = self.begin_commit() {
                    let _ = session.abort_transaction().await;
                    return Err(e);
                }
                let committed = session.commit_transaction().await;
                self.replied(committed.map_err(|e| unknown_unless_refused(classify(e))))
            }
            Err(e) => {
                // Best effort: the server also aborts when the session goes away.
                let _ = session.abort_transaction().await;
                Err(e)
            }
        }
    }

    /// Every change of `set` inside the session's transaction; the first failed guard
    /// returns [`StoreError::Conflict`] and the caller aborts.
    async fn apply(
        &self,
        s: &mut ClientSession,
        set: &WriteSet,
        guard: KeyGuard,
    ) -> StoreResult<()> {
        self.record_processed(s, set).await?;
        self.release_keys(s, set).await?;
        self.claim_keys(s, set, guard).await?;
        let mut previous = self.write_products(s, set).await?;
        previous.extend(self.delete_products(s, set).await?);
        self.update_list_index(s, set, previous).await?;
        self.update_waiters(s, set).await?;
        self.append_history(s, set).await?;
        self.append_outbox(s, set).await
    }

    /// Remembers the event: a second commit of it fails on the unique id.
    async fn record_processed(&self, s: &mut ClientSession, set: &WriteSet) -> StoreResult<()> {
        if let Some(p) = &set.processed {
            self.coll(PROCESSED)
                .insert_one(processed_doc(p)?)
                .session(&mut *s)
                .await
                .map_err(|e| classify_conflict(e, "event already processed"))?;
            self.call.replied();
        }
        Ok(())
    }

    /// Frees each key still owned by the product named with it.
    async fn release_keys(&self, s: &mut ClientSession, set: &WriteSet) -> StoreResult<()> {
        let mut by_owner: BTreeMap<PinvId, Vec<&str>> = BTreeMap::new();
        for (key, owner) in &set.release_keys {
            by_owner.entry(*owner).or_default().push(key.as_str());
        }
        for (owner, keys) in by_owner {
            for chunk in keys.chunks(CHUNK) {
                self.coll(MATCH_KEYS)
                    .delete_many(doc! { "_id": { "$in": chunk }, "product": owner.to_string() })
                    .session(&mut *s)
                    .await
                    .map_err(classify)?;
                self.call.replied();
            }
        }
        Ok(())
    }

    /// Removes products at the revision the plan read. Returns their merged documents when
    /// there is a list index to update.
    async fn delete_products(
        &self,
        s: &mut ClientSession,
        set: &WriteSet,
    ) -> StoreResult<Previous> {
        let mut previous = Previous::new();
        for delete in &set.delete_products {
            let filter = doc! {
                "_id": delete.id.to_string(),
                "revision": rev(delete.expected_revision)?,
            };
            let deleted = if self.index.paths().is_empty() {
                let result = self
                    .products()
                    .delete_one(filter)
                    .session(&mut *s)
                    .await
                    .map_err(classify)?;
                result.deleted_count == 1
            } else {
                let old = self
                    .products()
                    .find_one_and_delete(filter)
                    .projection(doc! { "merged": 1 })
                    .session(&mut *s)
                    .await
                    .map_err(classify)?;
                let found = old.is_some();
                previous.extend(old.map(|old| (delete.id, old)));
                found
            };
            self.call.replied();
            if !deleted {
                return Err(StoreError::conflict(format!(
                    "product {} is no longer at revision {}",
                    delete.id, delete.expected_revision
                )));
            }
        }
        Ok(previous)
    }

    /// Claims the keys of `set` for their owners; a key owned by another product, or claimed
    /// twice, is a conflict.
    async fn claim_keys(
        &self,
        s: &mut ClientSession,
        set: &WriteSet,
        guard: KeyGuard,
    ) -> StoreResult<()> {
        if !set.claim_keys.is_empty() {
            let mut wanted: BTreeMap<&MatchKey, PinvId> = BTreeMap::new();
            for (key, owner) in &set.claim_keys {
                if let Some(other) = wanted.insert(key, *owner) {
                    if other != *owner {
                        return Err(StoreError::conflict(format!(
                            "key {} claimed for two products",
                            key.as_str()
                        )));
                    }
                }
            }
            let all: Vec<String> = match guard {
                KeyGuard::Insert => Vec::new(),
                KeyGuard::ReadFirst => wanted.keys().map(|k| k.as_str().to_owned()).collect(),
            };
            for ids in all.chunks(CHUNK) {
                let mut cursor = self
                    .coll(MATCH_KEYS)
                    .find(doc! { "_id": { "$in": ids } })
                    .session(&mut *s)
                    .await
                    .map_err(classify)?;
                self.call.replied();
                while let Some(found) = cursor.next(&mut *s).await {
                    let found = found.map_err(classify)?;
                    let key = str_field(&found, "_id")?;
                    let owner = id_field(&found, "product")?;
                    if let Some((k, want)) =
                        wanted.remove_entry(&MatchKey::from_stored(key.clone()))
                    {
                        if want != owner {
                            return Err(StoreError::conflict(format!(
                                "key {} is owned by {owner}",
                                k.as_str()
                            )));
                        }
                    }
                }
                self.call.replied();
            }
            let wanted: Vec<_> = wanted.into_iter().collect();
            for chunk in wanted.chunks(CHUNK) {
                let docs = chunk.iter().map(|(key, owner)| {
                    doc! { "_id": key.as_str(), "product": owner.to_string() }
                });
                self.coll(MATCH_KEYS)
                    .insert_many(docs)
                    .session(&mut *s)
                    .await
                    .map_err(|e| match guard {
                        KeyGuard::Insert if is_code(&e, &[DUPLICATE_KEY]) => {
                            StoreError::conflict_from(KEY_RECORDED, e)
                        }
                        _ => classify_conflict(e, "key claimed concurrently"),
                    })?;
                self.call.replied();
            }
        }
        Ok(())
    }

    /// Inserts new products and replaces stored ones at the revision the plan read. Returns
    /// the replaced merged documents whose list-index entries the write may change (see
    /// [`MongoStore::update_list_index`]), read by the replace itself.
    async fn write_products(&self, s: &mut ClientSession, set: &WriteSet) -> StoreResult<Previous> {
        let mut previous = Previous::new();
        for write in &set.products {
            let doc = product_doc(&write.record)?;
            let id = write.record.id;
            match write.expected_revision {
                None => {
                    self.products()
                        .insert_one(doc)
                        .session(&mut *s)
                        .await
                        .map_err(|e| classify_conflict(e, "product already exists"))?;
                    self.call.replied();
                }
                Some(expected) => {
                    let filter = doc! { "_id": id.to_string(), "revision": rev(expected)? };
                    let replaced = if self.list_index_may_change(write) {
                        let old = self
                            .products()
                            .find_one_and_replace(filter, doc)
                            .projection(doc! { "merged": 1 })
                            .session(&mut *s)
                            .await
                            .map_err(classify)?;
                        self.call.replied();
                        let found = old.is_some();
                        previous.extend(old.map(|old| (id, old)));
                        found
                    } else {
                        let result = self
                            .products()
                            .replace_one(filter, doc)
                            .session(&mut *s)
                            .await
                            .map_err(classify)?;
                        self.call.replied();
                        result.matched_count == 1
                    };
                    if !replaced {
                        return Err(revision_moved(write));
                    }
                }
            }
        }
        Ok(previous)
    }

    /// Adds the new waiters and drops those whose key is now claimed.
    async fn update_waiters(&self, s: &mut ClientSession, set: &WriteSet) -> StoreResult<()> {
        for (key, product) in &set.add_waiters {
            let id = waiter_id(key, product);
            self.coll(WAITERS)
                .update_one(
                    doc! { "_id": id },
                    doc! { "$set": { "key": key.as_str(), "product": product.to_string() } },
                )
                .upsert(true)
                .session(&mut *s)
                .await
                .map_err(classify)?;
            self.call.replied();
        }

        if !set.clear_waiters.is_empty() {
            let keys: Vec<&str> = set.clear_waiters.iter().map(MatchKey::as_str).collect();
            self.coll(WAITERS)
                .delete_many(doc! { "key": { "$in": keys } })
                .session(&mut *s)
                .await
                .map_err(classify)?;
            self.call.replied();
        }
        Ok(())
    }

    /// Appends the history entries.
    async fn append_history(&self, s: &mut ClientSession, set: &WriteSet) -> StoreResult<()> {
        if !set.history.is_empty() {
            let docs = set
                .history
                .iter()
                .map(history_doc)
                .collect::<StoreResult<Vec<_>>>()?;
            self.coll(HISTORY)
                .insert_many(docs)
                .session(&mut *s)
                .await
                .map_err(|e| classify_conflict(e, "history entry already stored"))?;
            self.call.replied();
        }
        Ok(())
    }

    async fn find_all(
        &self,
        coll: &str,
        filter: Document,
        sort: Option<Document>,
        projection: Option<Document>,
    ) -> StoreResult<Vec<Document>> {
        let coll = self.coll(coll);
        let mut find = coll.find(filter);
        if let Some(sort) = sort {
            find = find.sort(sort);
        }
        if let Some(projection) = projection {
            find = find.projection(projection);
        }
        let cursor = self.replied(find.await.map_err(classify)?);
        self.replied(cursor.try_collect().await.map_err(classify))
    }
}

#[async_trait]
impl Store for MongoStore {
    #[tracing::instrument(level = "debug", name = "store.resolve_keys", skip_all, fields(store = "mongo", keys = keys.len()))]
    async fn resolve_keys(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, PinvId>> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        self.run(move |s| async move {
            let mut out = BTreeMap::new();
            for chunk in ids.chunks(CHUNK) {
                let docs = s
                    .find_all(MATCH_KEYS, doc! { "_id": { "$in": chunk } }, None, None)
                    .await?;
                for d in &docs {
                    out.insert(
                        MatchKey::from_stored(str_field(d, "_id")?),
                        id_field(d, "product")?,
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_products", skip_all, fields(store = "mongo", ids = ids.len()))]
    async fn get_products(&self, ids: &[PinvId]) -> StoreResult<Vec<ProductRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.run(move |s| async move {
            let wanted: Vec<String> = ids.iter().map(PinvId::to_string).collect();
            let mut found: BTreeMap<PinvId, ProductRecord> = BTreeMap::new();
            for chunk in wanted.chunks(CHUNK) {
                let docs = s
                    .find_all(PRODUCTS, doc! { "_id": { "$in": chunk } }, None, None)
                    .await?;
                for d in &docs {
                    let record = record_from_doc(d)?;
                    found.insert(record.id, record);
                }
            }
            // In the order asked for, as callers pair results with their ids.
            Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_processed", skip_all, fields(store = "mongo", source = %source, event_id = %event_id))]
    async fn get_processed(
        &self,
        source: &Source,
        event_id: &EventId,
    ) -> StoreResult<Option<ProcessedEvent>> {
        let id = processed_id(source, event_id);
        self.run(move |s| async move {
            let found = s
                .coll(PROCESSED)
                .find_one(doc! { "_id": id })
                .await
                .map_err(classify)?;
            found
                .map(|d| from_json(&str_field(&d, "event")?, "processed event"))
                .transpose()
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.waiters", skip_all, fields(store = "mongo", keys = keys.len()))]
    async fn waiters(&self, keys: &[MatchKey]) -> StoreResult<BTreeMap<MatchKey, Vec<PinvId>>> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let wanted: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        self.run(move |s| async move {
            let mut out: BTreeMap<MatchKey, BTreeSet<PinvId>> = BTreeMap::new();
            for chunk in wanted.chunks(CHUNK) {
                let docs = s
                    .find_all(WAITERS, doc! { "key": { "$in": chunk } }, None, None)
                    .await?;
                for d in &docs {
                    out.entry(MatchKey::from_stored(str_field(d, "key")?))
                        .or_default()
                        .insert(id_field(d, "product")?);
                }
            }
            Ok(out
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect())
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.package_members", skip_all, fields(store = "mongo", root = %root))]
    async fn package_members(&self, root: &PinvId) -> StoreResult<Vec<PinvId>> {
        let root = root.to_string();
        self.run(move |s| async move {
            let docs = s
                .find_all(
                    PRODUCTS,
                    doc! { "package_root": root },
                    Some(doc! { "_id": 1 }),
                    Some(doc! { "_id": 1 }),
                )
                .await?;
            let mut ids = docs
                .iter()
                .map(|d| id_field(d, "_id"))
                .collect::<StoreResult<Vec<_>>>()?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.commit", skip_all, fields(store = "mongo", products = set.products.len()))]
    async fn commit(&self, mut set: WriteSet) -> StoreResult<()> {
        set.expand_creation_patches();
        let only_one_product = set.products.len() == 1
            && set.claim_keys.is_empty()
            && set.add_waiters.is_empty()
            && set.clear_waiters.is_empty()
            && set.history.is_empty()
            && set.processed.is_none()
            && set.delete_products.is_empty()
            && set.release_keys.is_empty();
        if set.is_empty() {
            return Ok(());
        }
        self.run(move |s| async move {
            // With a list index, even one product's write updates two collections.
            if only_one_product && s.index.paths().is_empty() {
                s.commit_single(&set.products[0]).await
            } else {
                s.commit_transaction(&set).await
            }
        })
        .await
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.list",
        skip_all,
        fields(store = "mongo")
    )]
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        let query = query.clone();
        self.run(move |s| async move {
            let mut pager = query.pager();
            let mut take = |d: &Document| -> StoreResult<()> {
                let merged: Value = from_json(&str_field(d, "merged")?, "merged document")?;
                if query.matches(&merged) {
                    pager.push(merged);
                }
                Ok(())
            };
            match s.index.candidates(&query) {
                Some(lists) => {
                    let ids: Vec<String> = s
                        .list_candidates(&lists)
                        .await?
                        .iter()
                        .map(PinvId::to_string)
                        .collect();
                    for chunk in ids.chunks(CHUNK) {
                        let docs = s
                            .find_all(
                                PRODUCTS,
                                doc! { "_id": { "$in": chunk } },
                                None,
                                Some(doc! { "merged": 1 }),
                            )
                            .await?;
                        // The server's order of an `$in` answer is not the id order.
                        let by_id: BTreeMap<String, &Document> = docs
                            .iter()
                            .map(|d| Ok((str_field(d, "_id")?, d)))
                            .collect::<StoreResult<_>>()?;
                        for d in by_id.values() {
                            take(d)?;
                        }
                    }
                }
                None => {
                    let mut cursor = s
                        .products()
                        .find(doc! {})
                        .sort(doc! { "_id": 1 })
                        .projection(doc! { "merged": 1 })
                        .await
                        .map_err(classify)?;
                    while let Some(d) = cursor.try_next().await.map_err(classify)? {
                        s.call.replied();
                        take(&d)?;
                    }
                }
            }
            let (items, total) = pager.finish();
            Ok(ListPage { items, total })
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "store.history", skip_all, fields(store = "mongo", product = %id))]
    async fn history(&self, id: &PinvId) -> StoreResult<Vec<HistoryEntry>> {
        let id = id.to_string();
        self.run(move |s| async move {
            let docs = s
                .find_all(
                    HISTORY,
                    doc! { "product": id },
                    Some(doc! { "revision": 1 }),
                    None,
                )
                .await?;
            let mut entries = docs
                .iter()
                .map(|d| from_json::<HistoryEntry>(&str_field(d, "entry")?, "history entry"))
                .collect::<StoreResult<Vec<_>>>()?;
            // The server sorted already; sorting again guards against servers that ignore
            // the sort on an indexed query.
            entries.sort_by_key(|e| e.revision);
            Ok(entries)
        })
        .await
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.scan",
        skip_all,
        fields(store = "mongo", limit)
    )]
    async fn scan(&self, after: Option<PinvId>, limit: usize) -> StoreResult<Vec<ProductRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run(move |s| async move {
            let filter = match after {
                Some(after) => doc! { "_id": { "$gt": after.to_string() } },
                None => doc! {},
            };
            let cursor = s
                .products()
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .await
                .map_err(classify)?;
            let docs: Vec<Document> = cursor.try_collect().await.map_err(classify)?;
            docs.iter().map(record_from_doc).collect()
        })
        .await
    }

    #[tracing::instrument(
        level = "debug",
        name = "store.ping",
        skip_all,
        fields(store = "mongo")
    )]
    async fn ping(&self) -> StoreResult<()> {
        self.run(|s| async move {
            s.db.run_command(doc! { "ping": 1 })
                .await
                .map(|_| ())
                .map_err(classify)
        })
        .await
    }

    async fn put_subscription(&self, subscription: &Subscription) -> StoreResult<()> {
        self.hub_put(subscription.clone()).await
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        self.hub_list().await
    }

    async fn delete_subscription(&self, id: &str) -> StoreResult<bool> {
        self.hub_delete(id.to_owned()).await
    }

    async fn set_delivery_status(&self, id: &str, status: &DeliveryStatus) -> StoreResult<()> {
        self.hub_status(id.to_owned(), status.clone()).await
    }

    async fn outbox(&self, subscription: &str, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        self.hub_outbox(subscription.to_owned(), limit).await
    }

    async fn outbox_counts(&self, subscription: &str) -> StoreResult<OutboxCounts> {
        self.hub_counts(subscription.to_owned()).await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> StoreResult<()> {
        self.hub_settle(settlements).await
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        self.hub_lease(name.to_owned(), holder.to_owned(), until)
            .await
    }
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::unavailable(format!(
            "MongoDB did not answer within {timeout:?}"
        ))),
    }
}

// ---- documents ------------------------------------------------------------------------

fn rev(revision: u64) -> StoreResult<i64> {
    i64::try_from(revision).map_err(|_| StoreError::other(format!("revision {revision} too large")))
}

fn revision_moved(write: &ProductWrite) -> StoreError {
    StoreError::conflict(format!(
        "product {} is no longer at revision {:?}",
        write.record.id, write.expected_revision
    ))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::other_from("cannot encode", e))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt_from(format!("cannot decode the stored {what}"), e))
}

fn str_field(d: &Document, name: &str) -> StoreResult<String> {
    match d.get(name) {
        Some(Bson::String(s)) => Ok(s.clone()),
        other => Err(StoreError::corrupt(format!(
            "field {name} is not a string: {other:?}"
        ))),
    }
}

fn id_field(d: &Document, name: &str) -> StoreResult<PinvId> {
    let s = str_field(d, name)?;
    PinvId::parse(&s)
        .map_err(|_| StoreError::corrupt(format!("field {name} is not a PINV id: {s}")))
}

/// The product document: exact JSON plus query-only fields.
fn product_doc(record: &ProductRecord) -> StoreResult<Document> {
    // The merged document is kept apart so that lists read it without the contributions.
    let mut rest = serde_json::to_value(record)
        .map_err(|e| StoreError::other_from("cannot encode a record", e))?;
    if let Some(obj) = rest.as_object_mut() {
        obj.insert("merged".to_owned(), Value::Null);
    }
    Ok(doc! {
        "_id": record.id.to_string(),
        "revision": rev(record.revision)?,
        "record": to_json(&rest)?,
        "merged": to_json(&record.merged)?,
        "package_root": record.package_root.map_or(Bson::Null, |r| Bson::String(r.to_string())),
        "terms": terms(&record.merged),
    })
}

fn record_from_doc(d: &Document) -> StoreResult<ProductRecord> {
    let mut record: ProductRecord = from_json(&str_field(d, "record")?, "product record")?;
    record.merged = from_json(&str_field(d, "merged")?, "merged document")?;
    Ok(record)
}

fn processed_id(source: &Source, event_id: &EventId) -> String {
    // Unambiguous: a source name cannot contain ':'.
    format!("{source}:{event_id}")
}

fn processed_doc(p: &ProcessedEvent) -> StoreResult<Document> {
    Ok(doc! {
        "_id": processed_id(&p.source, &p.event_id),
        "source": p.source.as_str(),
        "event_id": p.event_id.as_str(),
        "event": to_json(p)?,
    })
}

fn waiter_id(key: &MatchKey, product: &PinvId) -> String {
    // JSON keeps the pair unambiguous whatever characters the key holds.
    serde_json::to_string(&(key.as_str(), product.to_string())).unwrap_or_default()
}

fn history_doc(h: &HistoryEntry) -> StoreResult<Document> {
    Ok(doc! {
        "_id": format!("{}:{:020}", h.product, h.revision),
        "product": h.product.to_string(),
        "revision": rev(h.revision)?,
        "entry": to_json(h)?,
    })
}

// ---- list filters -----------------------------------------------------------------------

/// The list term of one `(dotted path, leaf text)` pair: a JSON array, so no character of a
/// key or value can make two different pairs meet.
fn term(path: &str, leaf: &str) -> String {
    serde_json::to_string(&[path, leaf]).unwrap_or_default()
}

/// One term per leaf (string, number, boolean) of `doc`, arrays transparent, in the form
/// the former equality filters compared: strings as they are, numbers and booleans as
/// their JSON text. Keys containing `.` are skipped: no dotted path can name them.
fn terms(doc: &Value) -> Vec<String> {
    fn walk<'a>(v: &'a Value, path: &mut Vec<&'a str>, out: &mut BTreeSet<String>) {
        let leaf = match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k.contains('.') {
                        continue;
                    }
                    path.push(k);
                    walk(child, path, out);
                    path.pop();
                }
                return;
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, path, out);
                }
                return;
            }
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => return,
        };
        if !path.is_empty() {
            out.insert(term(&path.join("."), &leaf));
        }
    }
    let mut out = BTreeSet::new();
    walk(doc, &mut Vec::new(), &mut out);
    out.into_iter().collect()
}

// ---- errors -----------------------------------------------------------------------------

/// Server error codes that mean "not reachable now, try later".
const UNAVAILABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Server error codes that mean "another writer got there first".
const CONFLICT_CODES: &[i32] = &[
    DUPLICATE_KEY,
    112, // WriteConflict
    244, // TransactionAborted
    251, // NoSuchTransaction (aborted under us)
];

fn classify(e: MongoError) -> StoreError {
    // Network trouble first: inside a transaction it also carries the transient label,
    // but retrying against a server that is down is the caller's 503, not a conflict.
    match *e.kind {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => return StoreError::unavailable_from("cannot reach MongoDB", e),
        // A reply the driver cannot read (nx-27017 answers some failures without an error
        // code) is the server failing, not PINV's data: stored documents are read by PINV
        // itself, whose parse errors are `Corrupt`.
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            return StoreError::unavailable_from("no usable reply from MongoDB", e)
        }
        _ => {}
    }
    if is_code(&e, CONFLICT_CODES) || e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return StoreError::conflict_from("MongoDB refused a concurrent write", e);
    }
    if is_code(&e, UNAVAILABLE_CODES)
        || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
        || matches!(
            *e.kind,
            ErrorKind::Write(WriteFailure::WriteConcernError(_))
        )
    {
        return StoreError::unavailable_from("MongoDB cannot serve the call now", e);
    }
    // Any other error the server replied with is a failure of the store, which a retry
    // may not meet: a `503`, not an internal error of PINV.
    if matches!(
        *e.kind,
        ErrorKind::Command(_) | ErrorKind::Write(_) | ErrorKind::InsertMany(_)
    ) {
        return StoreError::unavailable_from("MongoDB refused the call", e);
    }
    StoreError::other_from("the MongoDB driver failed", e)
}

/// An error of the command that commits: only a refusal (a failed guard, a transaction the
/// server aborted) says that nothing was written; anything else may have committed.
fn unknown_unless_refused(e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(cause) | StoreError::Other(cause) => {
            StoreError::OutcomeUnknown(cause)
        }
        other => other,
    }
}

/// [`classify`] for the first command of the connect-time transaction: a refusal from the
/// server there (a standalone `mongod` has no transactions) says what PINV needs.
fn classify_probe(e: MongoError) -> StoreError {
    let refused = matches!(*e.kind, ErrorKind::Command(_) | ErrorKind::Write(_));
    match classify(e) {
        StoreError::Other(cause) | StoreError::Unavailable(cause) if refused => {
            StoreError::Unavailable(cause.retitled(
                "MongoDB refused the transaction of the connect-time check \
                 (transactions need a replica set or a sharded cluster)",
            ))
        }
        other => other,
    }
}

/// Like [`classify`], naming the guard that a duplicate key broke.
fn classify_conflict(e: MongoError, what: &str) -> StoreError {
    match classify(e) {
        StoreError::Conflict(cause) => StoreError::Conflict(cause.retitled(what)),
        other => other,
    }
}

fn is_code(e: &MongoError, codes: &[i32]) -> bool {
    match &*e.kind {
        ErrorKind::Command(c) => codes.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => codes.contains(&w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => codes.contains(&w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| codes.contains(&w.code)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn has(doc: &Value, path: &str, value: &str) -> bool {
        terms(doc).contains(&term(path, value))
    }

    #[test]
    fn terms_walk_through_arrays_and_keep_leaf_text() {
        let doc = json!({
            "status": "active",
            "externalReference": [{"id": "X", "n": 3}, {"id": "Y", "flag": true}],
            "nested": [["deep"]],
            "nothing": null,
        });
        assert!(has(&doc, "status", "active"));
        assert!(has(&doc, "externalReference.id", "X"));
        assert!(has(&doc, "externalReference.id", "Y"));
        assert!(has(&doc, "externalReference.n", "3"));
        assert!(has(&doc, "externalReference.flag", "true"));
        assert!(has(&doc, "nested", "deep"));
        assert!(!terms(&doc).iter().any(|t| t.contains("nothing")));
    }

    #[test]
    fn terms_cannot_be_forged_by_separators_in_keys_or_values() {
        let a = json!({"a=b": "c"});
        let b = json!({"a": "b=c"});
        assert_ne!(terms(&a), terms(&b));
        // A key with a dot is unreachable by a dotted path, so it yields no term at all.
        assert!(terms(&json!({"a.b": "c"})).is_empty());
        assert!(has(&json!({"a": {"b": "c"}}), "a.b", "c"));
    }

    fn server_error(code: i32) -> MongoError {
        let reply: mongodb::error::CommandError = mongodb::bson::from_document(
            doc! { "code": code, "codeName": "Whatever", "errmsg": "the server failed" },
        )
        .unwrap();
        MongoError::from(ErrorKind::Command(reply))
    }

    #[test]
    fn error_replies_of_the_server_are_store_failures_not_internal_errors() {
        assert!(matches!(
            classify(server_error(8000)),
            StoreError::Unavailable(_)
        ));
        // nx-27017's reply to a failed commit has no error code: the driver cannot read it.
        let unreadable = MongoError::from(
            mongodb::bson::from_document::<mongodb::error::CommandError>(
                doc! { "ok": 0, "errmsg": "no such savepoint: session_tx_1" },
            )
            .unwrap_err(),
        );
        assert!(matches!(classify(unreadable), StoreError::Unavailable(_)));
        assert!(matches!(
            classify(server_error(DUPLICATE_KEY)),
            StoreError::Conflict(_)
        ));
    }

    #[test]
    fn a_refused_probe_transaction_says_what_pinv_needs() {
        // A standalone mongod: "Transaction numbers are only allowed on a replica set member
        // or mongos" (IllegalOperation).
        let StoreError::Unavailable(cause) = classify_probe(server_error(20)) else {
            panic!("a refusal is unavailable");
        };
        assert!(
            cause.message().contains("replica set"),
            "{}",
            cause.message()
        );
        assert!(cause.source().is_some(), "the server's error is kept");
        // Not reaching the server is said as such.
        let io = MongoError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let StoreError::Unavailable(cause) = classify_probe(io) else {
            panic!("a network error is unavailable");
        };
        assert!(
            !cause.message().contains("replica set"),
            "{}",
            cause.message()
        );
    }

    #[test]
    fn a_failed_commit_is_unknown_unless_the_server_refused_it() {
        let commit = |e| unknown_unless_refused(classify(e));
        assert!(matches!(commit(server_error(112)), StoreError::Conflict(_)));
        assert!(matches!(
            commit(server_error(91)),
            StoreError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            commit(server_error(8000)),
            StoreError::OutcomeUnknown(_)
        ));
    }

    #[test]
    fn the_driver_error_is_kept_as_the_source() {
        let e = unknown_unless_refused(classify(server_error(8000)));
        assert!(matches!(e, StoreError::OutcomeUnknown(_)), "{e:?}");
        let source = std::error::Error::source(&e).expect("the driver's error");
        let driver = source.downcast_ref::<MongoError>().expect("a MongoError");
        assert!(is_code(driver, &[8000]), "{driver:?}");
        let e = classify_conflict(server_error(DUPLICATE_KEY), "key claimed concurrently");
        assert_eq!(e.to_string(), "write conflict: key claimed concurrently");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[tokio::test]
    async fn a_call_given_up_before_its_commit_never_commits() {
        let call = Call::new();
        assert!(
            call.abandon(),
            "nothing sent yet: the caller may say nothing was written"
        );
        assert!(!call.begin_commit(), "the task must not commit after that");
        let call = Call::new();
        assert!(call.begin_commit());
        assert!(!call.abandon(), "commit sent: the outcome is unknown");
    }

    /// A store whose client never connects (nothing listens on the discard port): enough to
    /// exercise [`MongoStore::run`] with calls that stand in for the server's work.
    async fn offline(timeout: Duration, one_at_a_time: bool) -> MongoStore {
        let options = ClientOptions::parse("mongodb://127.0.0.1:9/")
            .await
            .unwrap();
        let client = Client::with_options(options).unwrap();
        MongoStore {
            db: client.database("offline"),
            client,
            timeout,
            gate: one_at_a_time.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            call: Arc::new(Call::new()),
            index: Arc::new(IndexedPaths::standard()),
        }
    }

    #[tokio::test]
    async fn the_timeout_bounds_silence_not_the_length_of_a_call() {
        let store = offline(Duration::from_millis(1000), false).await;
        // A large call: 3 s in all, but the server answers every 50 ms.
        let long = store
            .run(|s| async move {
                for _ in 0..60 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    s.replied(());
                }
                Ok(60)
            })
            .await;
        assert_eq!(long.unwrap(), 60);
        let silent = store
            .run(|_| std::future::pending::<StoreResult<()>>())
            .await;
        assert!(
            matches!(silent, Err(StoreError::Unavailable(_))),
            "{silent:?}"
        );
    }

    #[tokio::test]
    async fn a_call_given_up_on_keeps_the_gate_until_it_ends_and_never_commits_after() {
        let store = offline(Duration::from_millis(300), true).await;
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committed = Arc::new(std::sync::Mutex::new(None));
        let (r, c) = (running.clone(), committed.clone());
        // The server keeps working on it for 1.5 s after the caller gave up.
        let first = store
            .run(move |s| async move {
                r.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                *c.lock().unwrap() = Some(s.begin_commit().is_ok());
                r.store(false, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(
            matches!(first, Err(StoreError::Unavailable(_))),
            "{first:?}"
        );
        let overlap = |running: Arc<std::sync::atomic::AtomicBool>| {
            move |_| async move {
                assert!(
                    !running.load(Ordering::SeqCst),
                    "overlaps the abandoned call"
                );
                Ok(())
            }
        };
        let next = store.run(overlap(running.clone())).await;
        assert!(matches!(next, Err(StoreError::Unavailable(_))), "{next:?}");
        while committed.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            *committed.lock().unwrap(),
            Some(false),
            "committed after giving up"
        );
        store.run(overlap(running)).await.unwrap();
    }

    #[test]
    fn write_concern_defaults_to_majority() {
        let wc = MongoOptions::default().write_concern();
        assert_eq!(wc.w, Some(Acknowledgment::Majority));
        let one = MongoOptions {
            w: "1".into(),
            ..MongoOptions::default()
        };
        assert_eq!(one.write_concern().w, Some(Acknowledgment::Nodes(1)));
    }

    #[test]
    fn processed_and_history_ids_are_distinct_per_key() {
        let s = Source::parse("billing").unwrap();
        assert_ne!(
            processed_id(&s, &EventId::parse("a:b").unwrap()),
            processed_id(
                &Source::parse("billing-a").unwrap(),
                &EventId::parse("b").unwrap()
            )
        );
    }
}
