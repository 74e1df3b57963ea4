//! The imperative shell around the core for writes: load what an event touches from the
//! store, plan with the core, commit, retry on conflict.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value};

use crate::core::envelope;
use crate::core::ingest::{self, Event, Plan, PlanError};
use crate::core::package;
use crate::core::record::{Document, ProductRecord};
use crate::core::rules::Rules;
use crate::core::schema::Schemas;
use crate::core::{EventId, PinvId, Source, Violations};
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
    /// Size of the request body in bytes: a body over [`OFFLOAD_BODY_BYTES`] is validated and
    /// planned on the blocking pool.
    pub body_bytes: usize,
}

/// Bodies larger than this are validated and planned on the blocking pool, so that their
/// work (linear in the body, but a megabyte of it takes tens of milliseconds) does not stall
/// the other requests of the worker. Smaller bodies, the common case, are handled in place:
/// a hop to the pool and back costs more than their whole validation and plan, and under
/// load the pool's extra threads (each with its own allocator heap) cost memory too.
pub const OFFLOAD_BODY_BYTES: usize = 64 * 1024;

impl PostOptions {
    fn offload(&self) -> bool {
        self.body_bytes > OFFLOAD_BODY_BYTES
    }
}

/// Runs `f` on the blocking pool when `offload`, else in place.
async fn maybe_blocking<T: Send + 'static>(
    offload: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    if offload {
        run_blocking(f).await
    } else {
        f()
    }
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
    /// The product (the merged document's `id`).
    pub product: PinvId,
    /// The merged document as stored now.
    pub value: Document,
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
    /// The envelope or a document is invalid: `400`, one violation per problem (at most
    /// [`crate::core::MAX_VIOLATIONS`] of them kept).
    #[error("the request is invalid")]
    Invalid(Violations),
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
    /// The store failed: `503` when unavailable or when a commit's outcome is unknown,
    /// `500` otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many times a write is planned again after a conflicting concurrent write before
/// the POST gives up with `503`. Conflicts come from writers touching the same product at
/// the same instant, so a handful of retries with a short pause settles them.
pub(crate) const MAX_ATTEMPTS: u32 = 16;

impl Service {
    /// Handles one `POST /products` body. `may_write` says whether the caller's token may
    /// write for a source; it is asked once the headers are known, before anything is read.
    #[tracing::instrument(
        level = "debug",
        name = "service.post",
        skip_all,
        fields(source, event_id, products)
    )]
    pub async fn post(
        &self,
        body: Value,
        options: PostOptions,
        may_write: &(dyn Fn(&Source) -> bool + Sync),
    ) -> Result<PostOutcome, IngestError> {
        // Validation and planning take time in proportion to the body: for a large body they
        // run on the blocking pool (see `OFFLOAD_BODY_BYTES`). The verdict on the token is
        // taken here, as `may_write` borrows from the caller.
        let verdict = body
            .pointer("/headers/source")
            .and_then(Value::as_str)
            .and_then(|s| Source::parse(s).ok())
            .map(|s| {
                let allowed = may_write(&s);
                (s, allowed)
            });
        let this = self.clone();
        let event = maybe_blocking(options.offload(), move || {
            this.validate(body, None, &|s| {
                verdict
                    .as_ref()
                    .is_some_and(|(source, allowed)| source == s && *allowed)
            })
        })
        .await?;
        let span = tracing::Span::current();
        span.record("source", tracing::field::display(&event.headers.source));
        span.record("event_id", tracing::field::display(&event.headers.id));
        let event = Arc::new(event);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_post(&event, options.offload(), None).await {
                Ok((status, result)) => {
                    let outcome = self.respond(&event, status, result, options).await?;
                    if !span.is_disabled() {
                        let ids: Vec<String> = outcome
                            .parts
                            .iter()
                            .map(|p| p.product.to_string())
                            .collect();
                        span.record("products", tracing::field::debug(&ids));
                    }
                    return Ok(outcome);
                }
                Err(IngestError::Store(e @ StoreError::Conflict(_))) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e.chain(), "write conflict, planning again");
                    // Spread retries of colliding writers apart.
                    let pause = 1 + u64::from(attempt) * 2 + (rand_jitter() % 5);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(IngestError::Store(e @ StoreError::Conflict(_))) => {
                    return Err(IngestError::Store(StoreError::unavailable_from(
                        format!("gave up after {MAX_ATTEMPTS} conflicting concurrent writes"),
                        e,
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Structure, envelope, authorization, schemas and package rules, in that order.
    #[tracing::instrument(level = "debug", name = "service.validate", skip_all)]
    pub(crate) fn validate(
        &self,
        body: Value,
        target: Option<PinvId>,
        may_write: &(dyn Fn(&Source) -> bool + Sync),
    ) -> Result<Event, IngestError> {
        let structure = envelope::check_structure(&body);
        if !structure.is_empty() {
            return Err(IngestError::Invalid(structure));
        }
        let mut violations = self.schemas.validate_envelope(&body);
        // Checked before the headers are parsed (which consumes the body), so that a request
        // with bad headers hears about its product's problems in the same answer.
        let mut product_violations = Violations::new();
        for (pointer, product) in envelope::raw_products(&body) {
            product_violations.append(self.schemas.validate_product(product, &pointer));
        }
        let envelope = match envelope::parse(body, &self.rules.accepted_types) {
            Ok(envelope) => envelope,
            Err(parsed) => {
                // The parser's message is the more precise one where both object.
                violations.retain(|v| !parsed.iter().any(|p| p.pointer == v.pointer));
                violations.extend(parsed);
                violations.append(product_violations);
                return Err(IngestError::Invalid(violations));
            }
        };
        if !may_write(&envelope.headers.source) {
            return Err(IngestError::Forbidden(envelope.headers.source));
        }
        violations.append(product_violations);
        if !violations.is_empty() {
            return Err(IngestError::Invalid(violations));
        }
        ingest::prepare_for(envelope, &self.rules, target).map_err(IngestError::Invalid)
    }

    /// Reads what the event touches, plans, commits. A conflict comes back as
    /// `StoreError::Conflict` for the caller to retry. With `pin` (product, revision), the
    /// product must still be at that revision (the caller built the event from it).
    #[tracing::instrument(level = "debug", name = "service.try_post", skip_all)]
    pub(crate) async fn try_post(
        &self,
        event: &Arc<Event>,
        offload: bool,
        pin: Option<(PinvId, u64)>,
    ) -> Result<(PostStatus, Replayed), IngestError> {
        let store = &*self.store;
        let read = store.read_for(event.clone()).await?;
        if let Some(products) =
            ingest::check_replay(event, read.processed.as_ref()).map_err(plan_error(event))?
        {
            return Ok((PostStatus::Unchanged, Replayed::Products(products)));
        }
        let snapshot = read.snapshot;
        let ids = ingest::identify(event, &snapshot.owners).map_err(plan_error(event))?;
        if let Some((id, revision)) = pin {
            if snapshot.records.get(&id).map(|r| r.revision) != Some(revision) {
                return Err(StoreError::conflict(format!("product {id} changed")).into());
            }
        }
        let (planned, rules) = (event.clone(), self.rules.clone());
        let mut new_id = store.product_ids();
        let plan = maybe_blocking(offload, move || {
            ingest::plan(&planned, &ids, &snapshot, &rules, Utc::now(), &mut new_id)
        })
        .await
        .map_err(plan_error(event))?;
        if plan.write.products.is_empty() {
            return Ok((PostStatus::Unchanged, Replayed::Plan(Box::new(plan))));
        }
        let mut plan = plan;
        match store.commit(std::mem::take(&mut plan.write)).await {
            Ok(()) => {}
            Err(e @ StoreError::OutcomeUnknown(_)) => {
                // The commit was sent and no answer came. The processed event is part of the
                // write set, so finding this event stored (same source, id and digest: an id
                // is never stored with another digest) proves the whole set was; anything
                // else leaves the outcome unknown: a commit still running on the server may
                // land after this read.
                let found = store
                    .get_processed(&event.headers.source, &event.headers.id)
                    .await;
                match found {
                    Ok(Some(stored)) if stored.digest == event.digest => {
                        tracing::info!(
                            error = %e.chain(),
                            "commit outcome was unknown; read back: stored"
                        );
                    }
                    _ => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok((PostStatus::Created, Replayed::Plan(Box::new(plan))))
    }

    /// The parts of the packages rooted at `roots`, but those in `except`, in the order
    /// parts are listed in ([`package::sort_members`]): the one lookup of POST and GET.
    #[tracing::instrument(level = "debug", name = "service.package_members", skip_all)]
    pub async fn package_members(
        &self,
        roots: impl IntoIterator<Item = PinvId>,
        except: &[PinvId],
    ) -> Result<Vec<ProductRecord>, StoreError> {
        let mut ids = Vec::new();
        for root in roots {
            ids.extend(self.store.package_members(&root).await?);
        }
        ids.retain(|m| !except.contains(m));
        ids.sort_unstable();
        ids.dedup();
        let mut members = self.store.get_products(&ids).await?;
        package::sort_members(&mut members, |r| (&r.merged, r.id), &self.rules);
        Ok(members)
    }

    /// Builds `responseData`: posted parts, changed others, then (on request) the packages.
    #[tracing::instrument(level = "debug", name = "service.respond", skip_all)]
    pub(crate) async fn respond(
        &self,
        event: &Event,
        status: PostStatus,
        result: Replayed,
        options: PostOptions,
    ) -> Result<PostOutcome, IngestError> {
        let (mut order, mut documents, mut roots) = match result {
            Replayed::Plan(plan) => {
                let plan = *plan;
                let mut order = plan.posted.clone();
                order.extend(plan.changed_others.iter().copied());
                (order, plan.documents, plan.roots)
            }
            Replayed::Products(ids) => {
                let records = self.store.get_products(&ids).await?;
                let roots = records
                    .iter()
                    .filter_map(|r| r.package_root.map(|root| (r.id, root)))
                    .collect();
                let documents = records
                    .into_iter()
                    .map(|r| (r.id, Document::Tree(r.merged)))
                    .collect();
                (ids, documents, roots)
            }
        };
        dedup_in_order(&mut order);
        if options.as_adi_package {
            let package_roots: BTreeSet<PinvId> = order
                .iter()
                .take(event.parts.len())
                .filter_map(|id| roots.get(id).copied())
                .collect();
            for r in self.package_members(package_roots, &order).await? {
                order.push(r.id);
                if let Some(root) = r.package_root {
                    roots.insert(r.id, root);
                }
                documents.insert(r.id, Document::Tree(r.merged));
            }
        }
        let parts = order
            .into_iter()
            .filter_map(|id| documents.remove(&id).map(|value| (id, value)))
            .map(|(product, value)| PostedPart {
                headers: event.headers.echoed(&uuid::Uuid::new_v4().to_string()),
                product,
                value,
            })
            .collect();
        Ok(PostOutcome { status, parts })
    }
}

/// What to answer with: a fresh plan, or the products of a repeated event.
pub(crate) enum Replayed {
    Plan(Box<Plan>),
    Products(Vec<PinvId>),
}

fn plan_error(event: &Event) -> impl Fn(PlanError) -> IngestError + '_ {
    move |e| match e {
        PlanError::EventIdReused => {
            IngestError::EventIdReused(event.headers.source.clone(), event.headers.id.clone())
        }
        PlanError::IdentityConflict(products) => IngestError::IdentityConflict { products },
        PlanError::Inconsistent => {
            IngestError::Store(StoreError::conflict("a product changed while it was read"))
        }
    }
}

fn dedup_in_order(ids: &mut Vec<PinvId>) {
    let mut seen = BTreeSet::new();
    ids.retain(|id| seen.insert(*id));
}

/// Runs `f` on the blocking pool; a panic in `f` goes on in the caller, as if `f` had run
/// there.
async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // The blocking pool's thread does not inherit the caller's span.
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(t) => t,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a blocking task was cancelled: {e}"),
        },
    }
}

/// A few bits of randomness for retry jitter, without a dependency for it.
pub(crate) fn rand_jitter() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_fields().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_large_bodies_go_to_the_blocking_pool() {
        let options = |body_bytes| PostOptions {
            as_adi_package: false,
            body_bytes,
        };
        assert!(!options(0).offload());
        assert!(!options(OFFLOAD_BODY_BYTES).offload());
        assert!(options(OFFLOAD_BODY_BYTES + 1).offload());
    }
}
