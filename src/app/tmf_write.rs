//! The TMF637 writes over per-source contributions: a bare product POST, a PATCH of the
//! writing source's own contribution, retracting a contribution and deleting a product.
//!
//! POST and PATCH build an envelope and go through the one write path of
//! [`Service::post`] (validation, identity, merge, history, the read-plan-commit loop with
//! its guards); retraction and deletion plan with [`crate::core::retract`] and commit in
//! the same compare-and-set retry loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::app::service::{
    rand_jitter, IngestError, PostOptions, PostStatus, Service, MAX_ATTEMPTS,
};
use crate::core::record::{Document, EventRef, ProductRecord, WriteSet};
use crate::core::retract::{self, Retracted};
use crate::core::{EventId, PinvId, Source, Violation, Violations};
use crate::store::StoreError;

/// The source named in the history entry of a product deleted by an admin token.
pub const ADMIN_SOURCE: &str = "pinv-admin";

/// A change to one source's contribution.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductPatch {
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`).
    Merge(Value),
    /// RFC 6902 JSON patch (`application/json-patch+json`).
    Json(json_patch::Patch),
}

/// Why a TMF637 write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// What a POST can answer (validation, identity, event id reuse, store).
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// No such product (or, for a retraction, no contribution of that source to it).
    #[error("{0}")]
    NotFound(String),
    /// A JSON patch `test` operation failed: `409`. The pointer names the operation.
    #[error("{}", .0.message)]
    PatchTestFailed(Violation),
    /// A JSON patch cannot be applied (bad path, missing value): `400`.
    #[error("{}", .0.message)]
    PatchInvalid(Violation),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        Self::Ingest(IngestError::Store(e))
    }
}

/// The answer of a POST or PATCH.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Created (`201` for a POST, `200` for a PATCH) or unchanged (a repeat).
    pub status: PostStatus,
    /// The product.
    pub id: PinvId,
    /// The merged product as stored now (its JSON as made for the store, on a write).
    pub product: Document,
}

/// What a retraction left.
#[derive(Debug, Clone, PartialEq)]
pub enum Retraction {
    /// Other contributions remain; the merged product as stored now.
    Remerged(Value),
    /// That was the last contribution: the product is deleted.
    Deleted,
}

impl Service {
    /// `POST /product`: stores a bare TMF637 product as `source`'s event `event_id` at
    /// `time`. The body's `id`, when present, is the source's local id. Violations point
    /// into the product as sent (not into the envelope built for it).
    pub async fn post_product(
        &self,
        source: &Source,
        product: Value,
        event_id: &EventId,
        time: DateTime<Utc>,
        body_bytes: usize,
    ) -> Result<Written, WriteError> {
        let envelope = self.envelope(source, event_id, time, product);
        let options = PostOptions {
            as_adi_package: false,
            body_bytes,
        };
        let outcome = self
            .post(envelope, options, &|_| true)
            .await
            .map_err(rebased)?;
        let part = outcome.parts.into_iter().next().ok_or_else(|| {
            // Only a repeat answers without a product: the event's product was deleted.
            WriteError::NotFound(format!(
                "event '{event_id}' of source '{source}' was stored before, and its product \
                     has since been deleted"
            ))
        })?;
        Ok(Written {
            status: outcome.status,
            id: part.product,
            product: part.value,
        })
    }

    /// Patches `source`'s own contribution to product `id` (a source that has none starts
    /// from `{}`) and stores the result as its event `event_id` at `time`: validated like a
    /// POST, merged, with a history entry. Safe under concurrency: the patch is applied to
    /// the contribution of the revision read, and committed only if the product is still at
    /// that revision (else read, patch and plan again).
    ///
    /// The same `event_id` again with a patch giving the same contribution is answered
    /// unchanged; one giving another is [`IngestError::EventIdReused`].
    pub async fn patch_product(
        &self,
        source: &Source,
        id: PinvId,
        patch: &ProductPatch,
        event_id: &EventId,
        time: DateTime<Utc>,
    ) -> Result<Written, WriteError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let record = self.read_one(id).await?;
            let current = record.contributions.iter().find(|c| &c.source == source);
            // The patch is made from the kept contribution, so it supersedes it even when that
            // one carries a later event time (which would otherwise make this one stale).
            let time = current.map_or(time, |c| time.max(c.time));
            let current = current.map_or_else(|| json!({}), |c| Value::clone(&c.value));
            let patched = apply(patch, current)?;
            let envelope = self.envelope(source, event_id, time, patched);
            let event = self
                .validate(envelope, Some(id), &|_| true)
                .map_err(rebased)?;
            let event = Arc::new(event);
            match self
                .try_post(&event, false, Some((id, record.revision)))
                .await
            {
                Ok((status, replayed)) => {
                    let outcome = self
                        .respond(&event, status, replayed, PostOptions::default())
                        .await?;
                    let part = outcome
                        .parts
                        .into_iter()
                        .next()
                        .ok_or_else(|| WriteError::NotFound(not_found(id)))?;
                    return Ok(Written {
                        status,
                        id: part.product,
                        product: part.value,
                    });
                }
                Err(IngestError::Store(StoreError::Conflict(_))) if attempt < MAX_ATTEMPTS => {
                    pause(attempt).await;
                }
                Err(e) => return Err(gave_up(e).into()),
            }
        }
    }

    /// Retracts `source`'s contribution to product `id`: its local-id key is freed and the
    /// product merged again from the others; the last contribution deletes the product.
    pub async fn retract(&self, source: &Source, id: PinvId) -> Result<Retraction, WriteError> {
        self.commit_loop(id, |record| {
            let event = EventRef {
                source: source.to_string(),
                id: uuid::Uuid::new_v4().to_string(),
            };
            match retract::retract(record, source, &self.rules, event, Utc::now()) {
                None => Err(WriteError::NotFound(format!(
                    "source '{source}' has no contribution to product '{id}'"
                ))),
                Some(Retracted::Remerged { write, merged }) => {
                    Ok((write, Retraction::Remerged(merged)))
                }
                Some(Retracted::Deleted { write }) => Ok((write, Retraction::Deleted)),
            }
        })
        .await
    }

    /// Deletes product `id` whatever its contributions (an admin's delete).
    pub async fn delete_product(&self, id: PinvId) -> Result<(), WriteError> {
        self.commit_loop(id, |record| {
            let event = EventRef {
                source: ADMIN_SOURCE.to_owned(),
                id: uuid::Uuid::new_v4().to_string(),
            };
            Ok((retract::delete(record, event, Utc::now()), ()))
        })
        .await
    }

    /// Reads product `id`, plans a write set from it, commits; on a conflict, again.
    async fn commit_loop<T>(
        &self,
        id: PinvId,
        plan: impl Fn(ProductRecord) -> Result<(WriteSet, T), WriteError>,
    ) -> Result<T, WriteError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (write, answer) = plan(self.read_one(id).await?)?;
            match self.store.commit(write).await {
                Ok(()) => return Ok(answer),
                Err(StoreError::Conflict(_)) if attempt < MAX_ATTEMPTS => pause(attempt).await,
                Err(e) => return Err(gave_up(IngestError::Store(e)).into()),
            }
        }
    }

    async fn read_one(&self, id: PinvId) -> Result<ProductRecord, WriteError> {
        self.store
            .get_products(&[id])
            .await?
            .pop()
            .ok_or_else(|| WriteError::NotFound(not_found(id)))
    }

    /// The envelope PINV builds around a bare product.
    fn envelope(
        &self,
        source: &Source,
        event_id: &EventId,
        time: DateTime<Utc>,
        product: Value,
    ) -> Value {
        let event_type = self
            .rules
            .accepted_types
            .first()
            .cloned()
            .unwrap_or_default();
        json!({
            "headers": {
                "id": event_id.as_str(),
                "source": source.as_str(),
                "type": event_type,
                "time": time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "datacontenttype": "application/json",
            },
            "value": product,
        })
    }
}

fn not_found(id: PinvId) -> String {
    format!("no product with id '{id}'")
}

/// Applies `patch` to `doc`. A failed JSON patch names the operation that failed.
fn apply(patch: &ProductPatch, mut doc: Value) -> Result<Value, WriteError> {
    match patch {
        ProductPatch::Merge(p) => {
            json_patch::merge(&mut doc, p);
            Ok(doc)
        }
        ProductPatch::Json(p) => match json_patch::patch(&mut doc, p) {
            Ok(()) => Ok(doc),
            Err(e) => {
                let at = Violation::new(
                    format!("/{}", e.operation),
                    format!("operation {} (path '{}'): {}", e.operation, e.path, e.kind),
                );
                Err(match e.kind {
                    json_patch::PatchErrorKind::TestFailed => WriteError::PatchTestFailed(at),
                    _ => WriteError::PatchInvalid(at),
                })
            }
        },
    }
}

/// Violations of the envelope PINV built point into the product the client sent.
fn rebased(e: IngestError) -> IngestError {
    match e {
        IngestError::Invalid(mut v) => {
            Violations::rebase(&mut v, "/value", "");
            IngestError::Invalid(v)
        }
        e => e,
    }
}

/// A conflict after the last attempt is the store being too busy: `503`, as for a POST.
fn gave_up(e: IngestError) -> IngestError {
    match e {
        IngestError::Store(e @ StoreError::Conflict(_)) => {
            IngestError::Store(StoreError::unavailable_from(
                format!("gave up after {MAX_ATTEMPTS} conflicting concurrent writes"),
                e,
            ))
        }
        e => e,
    }
}

async fn pause(attempt: u32) {
    let millis = 1 + u64::from(attempt) * 2 + (rand_jitter() % 5);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_on_nothing_starts_from_an_empty_object() {
        let patch = ProductPatch::Merge(json!({"status": "active", "gone": null}));
        assert_eq!(
            apply(&patch, json!({})).unwrap(),
            json!({"status": "active"})
        );
    }

    #[test]
    fn a_failed_test_operation_is_a_conflict_naming_the_operation() {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "replace", "path": "/name", "value": "b"},
            {"op": "test", "path": "/name", "value": "a"}
        ]))
        .unwrap();
        match apply(&ProductPatch::Json(patch), json!({"name": "a"})) {
            Err(WriteError::PatchTestFailed(v)) => assert_eq!(v.pointer, "/1"),
            other => panic!("expected a failed test, got {other:?}"),
        }
    }

    #[test]
    fn a_patch_of_a_missing_path_is_invalid() {
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "remove", "path": "/nope"}])).unwrap();
        match apply(&ProductPatch::Json(patch), json!({})) {
            Err(WriteError::PatchInvalid(v)) => assert_eq!(v.pointer, "/0"),
            other => panic!("expected an invalid patch, got {other:?}"),
        }
    }
}
