//! The imperative shell around the core for writes: load what an event touches from the
//! store, plan with the core, commit, retry on conflict.
//! STUB: signatures are fixed; bodies are being written.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::core::rules::Rules;
use crate::core::schema::Schemas;
use crate::core::{EventId, PinvId, Source, Violation};
use crate::store::{Store, StoreError};

/// What the write path needs: the store, the rules, the schemas.
#[derive(Clone)]
pub struct Service {
    /// Where products live.
    pub store: Arc<dyn Store>,
    /// The merge rules loaded at start.
    pub rules: Arc<Rules>,
    /// The compiled JSON Schemas.
    pub schemas: Arc<Schemas>,
}

/// Options of `POST /products`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostOptions {
    /// `?as-adi-package=true`: also return every other part of the package(s) concerned.
    pub as_adi_package: bool,
}

/// Whether a POST stored anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostStatus {
    /// Something was stored: `201`.
    Created,
    /// Nothing was stored (repeated or stale event): `200` with the current documents.
    Unchanged,
}

/// One entry of `responseData`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedPart {
    /// The request headers with `id` replaced by a new UUID.
    pub headers: Map<String, Value>,
    /// The merged document as stored now.
    pub value: Value,
}

/// The result of a POST.
#[derive(Debug, Clone, PartialEq)]
pub struct PostOutcome {
    /// 201 or 200.
    pub status: PostStatus,
    /// The posted parts first, then parts changed by relationship rewriting, then (with
    /// `as_adi_package`) the rest of the package(s).
    pub parts: Vec<PostedPart>,
}

/// Why a POST was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The envelope or a document is invalid: `400`, one violation per problem.
    #[error("the request is invalid")]
    Invalid(Vec<Violation>),
    /// The token may not write for this source: `403`.
    #[error("the token may not write for source '{0}'")]
    Forbidden(Source),
    /// The same (source, event id) was stored before with a different value: `409`.
    /// Fields: the source, the event id.
    #[error("event '{1}' of source '{0}' was already stored with a different value")]
    EventIdReused(Source, EventId),
    /// The document's match keys lead to several stored products: `409`.
    #[error("the document matches several stored products: {}", .products.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "))]
    IdentityConflict {
        /// The products concerned.
        products: Vec<PinvId>,
    },
    /// The store failed: `503` when unavailable, `500` otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Service {
    /// Handles one `POST /products` body. `may_write` says whether the caller's token may
    /// write for a source; it is asked for every part's source before anything is read.
    pub async fn post(
        &self,
        body: Value,
        options: PostOptions,
        may_write: &(dyn Fn(&Source) -> bool + Sync),
    ) -> Result<PostOutcome, IngestError> {
        let _ = (body, options, may_write);
        todo!()
    }
}
