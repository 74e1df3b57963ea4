//! What a write reads from the store before it plans, as steps a store can run in one go.
//!
//! Each read depends on the one before (the waiters to read are the keys nobody owns; the
//! records to read are those the owners and waiters name), so a store that can read at one
//! instant (the embedded store: one read transaction) asks a [`ReadPlan`] for the next step
//! itself instead of the caller making one store call per step.

use std::collections::BTreeMap;

use crate::core::ingest::{self, Event, Snapshot};
use crate::core::record::{ProcessedEvent, ProductRecord};
use crate::core::{EventId, MatchKey, PinvId, Source};

/// The reads of one write, step by step; each step is a pure function of what was read.
pub trait ReadPlan: Send + Sync {
    /// The (source, event id) whose remembered event is read first. When it is remembered,
    /// nothing else is read: the write is a repeat (or a reuse of the id).
    fn event(&self) -> (&Source, &EventId);
    /// The keys whose owners to read.
    fn owner_keys(&self) -> Vec<MatchKey>;
    /// Given the owners, the keys whose waiters to read.
    fn waiter_keys(&self, owners: &BTreeMap<MatchKey, PinvId>) -> Vec<MatchKey>;
    /// Given owners and waiters, the products to read.
    fn records(
        &self,
        owners: &BTreeMap<MatchKey, PinvId>,
        waiters: &BTreeMap<MatchKey, Vec<PinvId>>,
    ) -> Vec<PinvId>;
}

/// What a [`ReadPlan`] read.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// The remembered event, if any; when present the snapshot is empty.
    pub processed: Option<ProcessedEvent>,
    /// Owners, waiters and records, as the planner wants them.
    pub snapshot: Snapshot,
}

impl ReadResult {
    /// Builds the result from the records read (ids not stored are simply absent).
    pub fn new(
        owners: BTreeMap<MatchKey, PinvId>,
        waiters: BTreeMap<MatchKey, Vec<PinvId>>,
        records: Vec<ProductRecord>,
    ) -> Self {
        Self {
            processed: None,
            snapshot: Snapshot {
                owners,
                records: records.into_iter().map(|r| (r.id, r)).collect(),
                waiters,
            },
        }
    }

    /// The result for a remembered event: nothing else is needed.
    pub fn processed(event: ProcessedEvent) -> Self {
        Self {
            processed: Some(event),
            snapshot: Snapshot::default(),
        }
    }
}

impl ReadPlan for Event {
    fn event(&self) -> (&Source, &EventId) {
        (&self.headers.source, &self.headers.id)
    }

    fn owner_keys(&self) -> Vec<MatchKey> {
        ingest::lookup_keys(self)
    }

    fn waiter_keys(&self, owners: &BTreeMap<MatchKey, PinvId>) -> Vec<MatchKey> {
        ingest::keys_to_claim(self, owners)
    }

    /// An event whose keys lead to several products reads no records: planning it fails
    /// with the identity conflict anyway.
    fn records(
        &self,
        owners: &BTreeMap<MatchKey, PinvId>,
        waiters: &BTreeMap<MatchKey, Vec<PinvId>>,
    ) -> Vec<PinvId> {
        match ingest::identify(self, owners) {
            Ok(ids) => ingest::records_needed(&ids, owners, waiters),
            Err(_) => Vec::new(),
        }
    }
}
