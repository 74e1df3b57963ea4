//! Planning one POST (`docs/reference.md` §3.1, §4, §5): from a parsed event and a snapshot
//! of what the store holds about it, to the write set that stores it and the documents to
//! answer with.
//!
//! The service reads the snapshot in steps ([`lookup_keys`], [`identify`],
//! [`keys_to_claim`], [`records_needed`]), calls [`plan`], and commits the result; when the
//! store reports a conflict it reads again and plans again, so a plan never needs locks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::envelope::{Envelope, Headers, Payload};
use crate::core::merge::merge_document;
use crate::core::package::{self, Resolution};
use crate::core::record::{
    patch_between, Contribution, Document, DocumentJson, EventRef, HistoryEntry, ProcessedEvent,
    ProductRecord, ProductWrite, WriteSet,
};
use crate::core::rules::{Role, Rules};
use crate::core::{identity, MatchKey, PinvId, Violation, Violations};

/// The crosswalk of local ids in a merged document, written by PINV only.
const EXTERNAL_IDENTIFIER: &str = "externalIdentifier";

/// One product of a posted event.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Where the product is in the body (`/value` or `/value/<i>`).
    pub pointer: String,
    /// The product as sent (shared with the contribution the plan makes of it).
    pub value: Arc<Value>,
    /// Its package role, if its `productSpecification.id` names one.
    pub role: Option<Role>,
    /// The source's own id for it (`value.id`), if any.
    pub local_id: Option<String>,
    /// The keys the product will own (sorted).
    pub keys: Vec<MatchKey>,
    /// The keys to look it up by: its own keys, plus `pinv:<id>` when `id` is a PINV id.
    pub lookup: Vec<MatchKey>,
}

/// A validated event, ready to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The headers.
    pub headers: Headers,
    /// The product(s), in body order.
    pub parts: Vec<Part>,
    /// True when `value` was an array (a package).
    pub is_package: bool,
    /// Hex SHA-256 of the canonical JSON of `value`: recognises the same event sent again.
    pub digest: String,
}

/// Why an event cannot be stored as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The (source, event id) was stored before with a different value.
    #[error("event id already used with a different value")]
    EventIdReused,
    /// Match keys lead to several products (or two parts of a package to one product).
    #[error("the document matches several stored products")]
    IdentityConflict(Vec<PinvId>),
    /// The snapshot misses a product that a key points at: it changed while it was read.
    #[error("the store changed while it was read")]
    Inconsistent,
}

/// Hex SHA-256 of the canonical JSON text of `value`: object keys sorted (by their UTF-8
/// bytes) at every depth, no whitespace, strings escaped as serde_json does, numbers as
/// their exact text. The same event sent with its keys in another order has the same digest.
///
/// The text is streamed into the hasher through a small buffer, never built whole.
pub fn digest(value: &Value) -> String {
    sha256_hex_of_json(&Canonical(value))
}

/// The digest of an event as stored before [`digest`] sorted keys: the JSON text with the
/// keys in the order they came. Kept only so that events remembered with it are still
/// recognised when they are sent again (see [`check_replay`]).
fn legacy_digest<T: serde::Serialize + ?Sized>(value: &T) -> String {
    sha256_hex_of_json(value)
}

/// Hex SHA-256 of `value`'s JSON text. serde_json writes a token at a time (a quote, a key,
/// a comma), and each hasher update has a cost of its own: the text goes through a buffer, so
/// that the hasher sees a few large updates instead (the digest of a seed body took about a
/// third of a JSON round trip with one update per token).
fn sha256_hex_of_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut writer = std::io::BufWriter::with_capacity(8 * 1024, HashWriter(Sha256::new()));
    serde_json::to_writer(&mut writer, value).expect("a Value always serialises");
    let hasher = writer
        .into_inner()
        .unwrap_or_else(|_| unreachable!("HashWriter never fails"));
    hex(&hasher.0.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Feeds serialised JSON into the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serialises a JSON value with the keys of every object sorted.
struct Canonical<'a>(&'a Value);

impl serde::Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Canonical(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                // Most objects have a handful of keys: those are sorted on the stack, not in
                // an allocation of their own.
                const SMALL: usize = 16;
                static NULL: Value = Value::Null;
                let mut small = [("", &NULL); SMALL];
                let mut large = Vec::new();
                let entries = if map.len() <= SMALL {
                    for (slot, (key, value)) in small.iter_mut().zip(map) {
                        *slot = (key.as_str(), value);
                    }
                    &mut small[..map.len()]
                } else {
                    large.extend(map.iter().map(|(key, value)| (key.as_str(), value)));
                    large.as_mut_slice()
                };
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries.iter() {
                    out.serialize_entry(key, &Canonical(value))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// Turns a parsed envelope into an event: roles, keys, package checks.
///
/// Refuses a package whose roles do not form a valid package, a part with no key at all
/// (it could never be found again, so every POST of it would make a new product), two
/// parts of one package sharing a key, a part over the identity limits
/// ([`identity::check_limits`]), and a part that sends `externalIdentifier`: that array is
/// PINV's crosswalk of every source's local id, so a source that could write it could
/// claim another source's ids.
pub fn prepare(envelope: Envelope, rules: &Rules) -> Result<Event, Violations> {
    prepare_for(envelope, rules, None)
}

/// [`prepare`] for a write addressed to a stored product by its PINV id (a TMF637 `PATCH`
/// of `/product/{id}`): the single part is also looked up by `pinv:<target>`, so it may
/// carry no key of its own (the product is found by the address, not the document).
pub fn prepare_for(
    envelope: Envelope,
    rules: &Rules,
    target: Option<PinvId>,
) -> Result<Event, Violations> {
    let Envelope { headers, payload } = envelope;
    let (values, is_package) = match payload {
        Payload::Single(v) => (vec![v], false),
        Payload::Package(vs) => (vs, true),
    };
    let digest = match is_package {
        true => digest_of_package(&values),
        false => digest(&values[0]),
    };
    let mut violations = Violations::new();
    let parts: Vec<Part> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let pointer = if is_package {
                format!("/value/{i}")
            } else {
                "/value".to_owned()
            };
            if value.get(EXTERNAL_IDENTIFIER).is_some() {
                violations.push(Violation::new(
                    format!("{pointer}/{EXTERNAL_IDENTIFIER}"),
                    "\"externalIdentifier\" is set by PINV (one entry per source's own id, \
                     from each source's \"id\"); a source may not send it",
                ));
            }
            identity::check_limits(&pointer, &value, rules, &mut violations);
            let keys = identity::match_keys(&headers.source, &value, rules);
            let mut lookup = identity::lookup_keys(&headers.source, &value, rules);
            if let Some(target) = target {
                lookup.push(MatchKey::pinv(&target));
                lookup.sort();
                lookup.dedup();
            }
            let local_id = value
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            Part {
                role: package::role_of(&value, rules),
                pointer,
                value: Arc::new(value),
                local_id,
                keys,
                lookup,
            }
        })
        .collect();
    if is_package {
        let roles: Vec<_> = parts.iter().map(|p| p.role).collect();
        violations.extend(package::check_package(&roles, "/value"));
    }
    let mut seen: BTreeMap<&MatchKey, &str> = BTreeMap::new();
    for part in &parts {
        if part.keys.is_empty() && target.is_none() {
            violations.push(Violation::new(
                part.pointer.clone(),
                format!(
                    "the product has no id and no identity-bearing externalReference ({}), so it could never be found again",
                    rules.identity_types.join(", ")
                ),
            ));
        }
        for key in &part.keys {
            if let Some(other) = seen.insert(key, &part.pointer) {
                violations.push(Violation::new(
                    part.pointer.clone(),
                    format!("shares the match key '{key}' with the part at {other}"),
                ));
            }
        }
    }
    if violations.is_empty() {
        Ok(Event {
            headers,
            parts,
            is_package,
            digest,
        })
    } else {
        Err(violations)
    }
}

/// A package's digest is that of the array itself, as if it were one `Value::Array`.
fn digest_of_package(parts: &[Value]) -> String {
    let canonical: Vec<Canonical> = parts.iter().map(Canonical).collect();
    sha256_hex_of_json(&canonical)
}

/// What a remembered event means for this one: `Ok(Some(products))` it is the same event
/// again (answer with those products, store nothing); `Ok(None)` it is new.
///
/// An event remembered before digests were canonical carries the digest of its text as it
/// came; it is compared too before the event id counts as reused.
pub fn check_replay(
    event: &Event,
    processed: Option<&ProcessedEvent>,
) -> Result<Option<Vec<PinvId>>, PlanError> {
    match processed {
        None => Ok(None),
        Some(p) if p.digest == event.digest || p.digest == event_legacy_digest(event) => {
            Ok(Some(p.products.clone()))
        }
        Some(_) => Err(PlanError::EventIdReused),
    }
}

/// The legacy digest of the event's value, rebuilt from its parts (which hold the values
/// as they came).
fn event_legacy_digest(event: &Event) -> String {
    let values: Vec<&Value> = event.parts.iter().map(|p| &*p.value).collect();
    match event.is_package {
        true => legacy_digest(&values),
        false => legacy_digest(values[0]),
    }
}

/// Local ids of the parts of the post: relationship ids naming them resolve to the part.
fn local_ids_in_post(event: &Event) -> BTreeSet<&str> {
    event
        .parts
        .iter()
        .filter_map(|p| p.local_id.as_deref())
        .collect()
}

/// Every key whose owner the plan needs: the parts' lookup keys and the keys their
/// relationship ids could resolve through. Sorted, no duplicates.
pub fn lookup_keys(event: &Event) -> Vec<MatchKey> {
    let in_post = local_ids_in_post(event);
    let mut keys: BTreeSet<MatchKey> = BTreeSet::new();
    for part in &event.parts {
        keys.extend(part.lookup.iter().cloned());
        for raw in package::relationship_ids(&part.value) {
            if !(event.is_package && in_post.contains(raw)) {
                keys.extend(package::candidate_keys(&event.headers.source, raw));
            }
        }
    }
    keys.into_iter().collect()
}

/// The stored product each part is about (`None`: a new product), by its lookup keys.
pub fn identify(
    event: &Event,
    owners: &BTreeMap<MatchKey, PinvId>,
) -> Result<Vec<Option<PinvId>>, PlanError> {
    let mut ids = Vec::with_capacity(event.parts.len());
    for part in &event.parts {
        let found: BTreeSet<PinvId> = part
            .lookup
            .iter()
            .filter_map(|k| owners.get(k).copied())
            .collect();
        match found.len() {
            0 => ids.push(None),
            1 => ids.push(found.into_iter().next()),
            _ => return Err(PlanError::IdentityConflict(found.into_iter().collect())),
        }
    }
    let mut seen = BTreeSet::new();
    for id in ids.iter().flatten() {
        if !seen.insert(*id) {
            return Err(PlanError::IdentityConflict(vec![*id]));
        }
    }
    Ok(ids)
}

/// The keys the parts will claim that nobody owns yet (products may wait for them).
pub fn keys_to_claim(event: &Event, owners: &BTreeMap<MatchKey, PinvId>) -> Vec<MatchKey> {
    let keys: BTreeSet<MatchKey> = event
        .parts
        .iter()
        .flat_map(|p| p.keys.iter())
        .filter(|k| !owners.contains_key(*k))
        .cloned()
        .collect();
    keys.into_iter().collect()
}

/// The stored products the plan reads: the parts' own products, the products waiting for
/// the parts' new keys, and the products their relationship ids already resolve to
/// (whose package root may change).
pub fn records_needed(
    ids: &[Option<PinvId>],
    owners: &BTreeMap<MatchKey, PinvId>,
    waiters: &BTreeMap<MatchKey, Vec<PinvId>>,
) -> Vec<PinvId> {
    let mut need: BTreeSet<PinvId> = ids.iter().flatten().copied().collect();
    need.extend(owners.values().copied());
    need.extend(waiters.values().flatten().copied());
    need.into_iter().collect()
}

/// What the store holds about an event, read before planning.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Owners of the keys of [`lookup_keys`].
    pub owners: BTreeMap<MatchKey, PinvId>,
    /// The products of [`records_needed`] that exist.
    pub records: BTreeMap<PinvId, ProductRecord>,
    /// Waiters of the keys of [`keys_to_claim`].
    pub waiters: BTreeMap<MatchKey, Vec<PinvId>>,
}

/// The outcome of planning an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to commit; empty when nothing changes (every part was stale).
    pub write: WriteSet,
    /// The product of each part, in body order.
    pub posted: Vec<PinvId>,
    /// Other products whose merged document changes (relationship ids rewritten), sorted.
    pub changed_others: Vec<PinvId>,
    /// The merged document of every product above, as it will be stored.
    pub documents: BTreeMap<PinvId, Document>,
    /// The package root of every product above, as it will be stored.
    pub roots: BTreeMap<PinvId, PinvId>,
}

/// A product the plan touches.
struct Working<'a> {
    record: ProductRecord,
    original: Option<&'a ProductRecord>,
    role: Option<Role>,
    remerge: bool,
}

/// Plans the storage of `event`, whose parts are the products `ids` (from [`identify`]).
///
/// New products get ids from `fresh`. A part whose source already has a newer contribution
/// for the product changes nothing (`docs/reference.md` §3.1, stale events).
pub fn plan(
    event: &Event,
    ids: &[Option<PinvId>],
    snapshot: &Snapshot,
    rules: &Rules,
    now: DateTime<Utc>,
    fresh: &mut dyn FnMut() -> PinvId,
) -> Result<Plan, PlanError> {
    let mut write = WriteSet::default();
    let (mut work, posted) = open_parts(event, ids, snapshot, rules, fresh)?;
    let links = post_links(event, &posted);
    let claimed = add_contributions(event, &posted, &links, snapshot, now, &mut work, &mut write);
    rewrite_waiters(&claimed, snapshot, rules, &mut work, &mut write);
    propagate_roots(&mut work, snapshot, rules, links.package_root.is_some());
    Ok(finish(event, posted, work, claimed, write, rules, now))
}

/// Every part's product, existing or new, as a working copy; and the product of each part.
fn open_parts<'s>(
    event: &Event,
    ids: &[Option<PinvId>],
    snapshot: &'s Snapshot,
    rules: &Rules,
    fresh: &mut dyn FnMut() -> PinvId,
) -> Result<(BTreeMap<PinvId, Working<'s>>, Vec<PinvId>), PlanError> {
    let mut work = BTreeMap::new();
    let mut posted = Vec::with_capacity(event.parts.len());
    for (part, id) in event.parts.iter().zip(ids) {
        let id = match id {
            Some(id) => *id,
            None => fresh(),
        };
        let original = match snapshot.records.get(&id) {
            Some(r) => Some(r),
            None if ids.contains(&Some(id)) => return Err(PlanError::Inconsistent),
            None => None,
        };
        let record = original.cloned().unwrap_or_else(|| ProductRecord {
            id,
            revision: 0,
            contributions: Vec::new(),
            links: Default::default(),
            merged: Value::Object(Default::default()),
            match_keys: vec![MatchKey::pinv(&id)],
            package_root: None,
            rules_hash: rules.hash.clone(),
        });
        work.insert(
            id,
            Working {
                role: part.role,
                record,
                original,
                remerge: false,
            },
        );
        posted.push(id);
    }
    Ok((work, posted))
}

/// What a package post says about its own parts: local id -> product, and its ADI part.
struct PostLinks<'e> {
    in_post: BTreeMap<&'e str, PinvId>,
    package_root: Option<PinvId>,
}

/// The parts' local ids (relationship ids naming a part resolve to it) and the package
/// root; both empty unless the event is a package.
fn post_links<'e>(event: &'e Event, posted: &[PinvId]) -> PostLinks<'e> {
    if !event.is_package {
        return PostLinks {
            in_post: BTreeMap::new(),
            package_root: None,
        };
    }
    let in_post = event
        .parts
        .iter()
        .zip(posted)
        .filter_map(|(p, id)| p.local_id.as_deref().map(|l| (l, *id)))
        .collect();
    let package_root = event
        .parts
        .iter()
        .zip(posted)
        .find(|(p, _)| p.role == Some(Role::Adi))
        .map(|(_, id)| *id);
    PostLinks {
        in_post,
        package_root,
    }
}

/// Puts each part's contribution in its product (unless the product already has a newer one
/// from the source), with its resolved relationship ids, keys and package root. Returns
/// the keys claimed (key, owner); unresolved relationship ids become waiters in `write`.
fn add_contributions(
    event: &Event,
    posted: &[PinvId],
    links: &PostLinks<'_>,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    work: &mut BTreeMap<PinvId, Working<'_>>,
    write: &mut WriteSet,
) -> Vec<(MatchKey, PinvId)> {
    let source = &event.headers.source;
    let mut claimed: Vec<(MatchKey, PinvId)> = Vec::new();
    for (part, id) in event.parts.iter().zip(posted) {
        let w = work.get_mut(id).expect("every part is opened");
        let stale = w
            .record
            .contributions
            .iter()
            .any(|c| &c.source == source && c.time > event.headers.time.instant);
        if stale {
            continue;
        }
        let mut resolved = BTreeMap::new();
        for raw in package::relationship_ids(&part.value) {
            match package::resolve(source, raw, &links.in_post, &snapshot.owners) {
                Resolution::Resolved(target) => {
                    resolved.insert(raw.to_owned(), target);
                }
                Resolution::Pending(key) => write.add_waiters.push((key, *id)),
            }
        }
        w.record.links.replace_source(source, resolved);
        let contribution = Contribution {
            source: source.clone(),
            event_id: event.headers.id.clone(),
            time: event.headers.time.instant,
            received_at: now,
            value: Arc::clone(&part.value),
        };
        match w
            .record
            .contributions
            .binary_search_by(|c| c.source.cmp(source))
        {
            Ok(i) => w.record.contributions[i] = contribution,
            Err(i) => w.record.contributions.insert(i, contribution),
        }
        for key in &part.keys {
            if snapshot.owners.get(key) != Some(id) {
                claimed.push((key.clone(), *id));
            }
        }
        if w.original.is_none() {
            claimed.push((MatchKey::pinv(id), *id));
        }
        // Appended then sorted once: a sorted insert per key made many keys quadratic.
        let keys = &mut w.record.match_keys;
        keys.extend(
            claimed
                .iter()
                .filter(|(_, owner)| owner == id)
                .map(|(key, _)| key.clone()),
        );
        keys.sort_unstable();
        keys.dedup();
        if let Some(root) = links.package_root {
            w.record.package_root = Some(root);
        } else if part.role == Some(Role::Adi) {
            w.record.package_root = Some(*id);
        }
        w.remerge = true;
    }
    claimed
}

/// Products that waited for a key claimed now get their relationship ids rewritten.
fn rewrite_waiters<'s>(
    claimed: &[(MatchKey, PinvId)],
    snapshot: &'s Snapshot,
    rules: &Rules,
    work: &mut BTreeMap<PinvId, Working<'s>>,
    write: &mut WriteSet,
) {
    let claimed_keys: Vec<MatchKey> = claimed.iter().map(|(k, _)| k.clone()).collect();
    let owner_of: BTreeMap<&MatchKey, PinvId> = claimed.iter().map(|(k, id)| (k, *id)).collect();
    for (waiter, keys) in package::pending_rewrites(&claimed_keys, &snapshot.waiters) {
        write.clear_waiters.extend(keys.iter().cloned());
        let Some(w) = load(work, snapshot, waiter, rules) else {
            continue;
        };
        for key in &keys {
            if let Some((key_source, raw)) = package::parse_local_key(key) {
                w.record.links.insert(&key_source, raw, owner_of[key]);
            }
        }
        w.remerge = true;
    }
    write.clear_waiters.sort();
    write.clear_waiters.dedup();
    // A product that resolved a key in the same write no longer waits for it.
    write.add_waiters.retain(|(k, _)| !owner_of.contains_key(k));
}

/// Merges what changed, and turns every change into writes and history.
fn finish(
    event: &Event,
    posted: Vec<PinvId>,
    work: BTreeMap<PinvId, Working<'_>>,
    claimed: Vec<(MatchKey, PinvId)>,
    mut write: WriteSet,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Plan {
    let source = &event.headers.source;
    let event_ref = EventRef {
        source: source.to_string(),
        id: event.headers.id.to_string(),
    };
    let mut documents = BTreeMap::new();
    let mut roots = BTreeMap::new();
    let mut changed_others = Vec::new();
    let mut released = Vec::new();
    for (id, w) in work {
        let Working {
            mut record,
            original,
            remerge,
            ..
        } = w;
        if remerge {
            record.merged = merge_document(&id, &record.contributions, &record.links, rules);
            record.rules_hash = rules.hash.clone();
        }
        if identity::is_terminated(&record.merged) && !rules.released_when_terminated.is_empty() {
            // A terminated line gives its number up for a new product; the history keeps
            // that it had it.
            record.match_keys.retain(|k| {
                let release = identity::released_when_terminated(k, rules);
                if release {
                    released.push((k.clone(), id));
                }
                !release
            });
        }
        let old_merged = original.map(|o| &o.merged);
        let merged_changed = old_merged != Some(&record.merged);
        if let Some(root) = record.package_root {
            roots.insert(id, root);
        }
        if original != Some(&record) {
            record.revision = original.map_or(1, |o| o.revision + 1);
            if merged_changed {
                write.history.push(HistoryEntry {
                    product: id,
                    revision: record.revision,
                    time: now,
                    event: event_ref.clone(),
                    rules_hash: rules.hash.clone(),
                    // A creation's patch is the document itself; stores write it from the
                    // record (see `HistoryEntry::patch`).
                    patch: match old_merged {
                        None => Value::Null,
                        old => patch_between(old, &record.merged),
                    },
                    deleted: false,
                });
                if !posted.contains(&id) {
                    changed_others.push(id);
                }
            }
            // The answer and the store share the document's JSON.
            let merged_json =
                (posted.contains(&id) || merged_changed).then(|| DocumentJson::of(&record.merged));
            if let Some(json) = &merged_json {
                documents.insert(id, Document::Json(json.clone()));
            }
            write.products.push(ProductWrite {
                expected_revision: original.map(|o| o.revision),
                contributions_unchanged: false,
                changed_attributes: None,
                merged_json,
                record,
            });
        } else if posted.contains(&id) {
            documents.insert(id, Document::Tree(record.merged));
        }
    }
    write.claim_keys = claimed
        .into_iter()
        .filter(|c| !released.contains(c))
        .collect();
    // A key this write would have claimed is released by not claiming it; the store frees
    // the others (and leaves alone a key nobody owns).
    write.release_keys.extend(released);
    if !write.products.is_empty() {
        write.processed = Some(ProcessedEvent {
            source: source.clone(),
            event_id: event.headers.id.clone(),
            digest: event.digest.clone(),
            products: posted.clone(),
        });
    } else {
        write = WriteSet::default();
    }
    Plan {
        write,
        posted,
        changed_others,
        documents,
        roots,
    }
}

/// The working copy of a stored product, loaded on first use; `None` if it is not stored.
fn load<'w, 's>(
    work: &'w mut BTreeMap<PinvId, Working<'s>>,
    snapshot: &'s Snapshot,
    id: PinvId,
    rules: &Rules,
) -> Option<&'w mut Working<'s>> {
    use std::collections::btree_map::Entry;
    match work.entry(id) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => {
            let record = snapshot.records.get(&id)?;
            Some(e.insert(Working {
                role: package::role_of(&record.merged, rules),
                record: record.clone(),
                original: Some(record),
                remerge: false,
            }))
        }
    }
}

/// Sets package roots along resolved relationships: an ADI product is its own root and the
/// root of every non-ADI product it relates to or that relates to it. A package post has
/// already set the root of its parts, which wins.
fn propagate_roots<'s>(
    work: &mut BTreeMap<PinvId, Working<'s>>,
    snapshot: &'s Snapshot,
    rules: &Rules,
    package_post: bool,
) {
    let edges: Vec<(PinvId, PinvId)> = work
        .iter()
        .filter(|(_, w)| w.remerge)
        .flat_map(|(id, w)| w.record.links.targets().into_iter().map(|t| (*id, t)))
        .filter(|(a, b)| a != b)
        .collect();
    for (from, to) in edges {
        let role_from = work.get(&from).and_then(|w| w.role);
        let role_to = match load(work, snapshot, to, rules) {
            Some(w) => w.role,
            None => continue,
        };
        let (adi, other) = match (role_from, role_to) {
            (Some(Role::Adi), r) if r != Some(Role::Adi) => (from, to),
            (r, Some(Role::Adi)) if r != Some(Role::Adi) => (to, from),
            _ => continue,
        };
        let w = work.get_mut(&other).expect("loaded above");
        let set_by_post = package_post && w.remerge;
        if !set_by_post && w.record.package_root != Some(adi) {
            w.record.package_root = Some(adi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envelope::EventTime;
    use crate::core::{EventId, Source};
    use serde_json::json;

    const RULES: &str = r#"
[precedence]
default = ["provisioning", "billing"]
[identity]
external_reference_types = ["CircuitID"]
[events]
accepted_types = ["t"]
[package.roles]
ADI = ["PR-ADI-*"]
ACCESS = ["PR-ACCESS-*"]
PORT = ["PR-PORT-*"]
DD = ["PR-DD-*"]
[[field]]
path = "productRelationship"
strategy = "union"
key = ["relationshipType", "id"]
"#;

    fn rules() -> Rules {
        Rules::from_files(&[("rules.toml".into(), RULES.into())]).expect("test rules are valid")
    }

    fn id(n: u128) -> PinvId {
        PinvId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn event(source: &str, event_id: &str, time: &str, value: Value) -> Event {
        let instant = DateTime::parse_from_rfc3339(time)
            .unwrap()
            .with_timezone(&Utc);
        let headers = Headers {
            id: EventId::parse(event_id).unwrap(),
            source: Source::parse(source).unwrap(),
            event_type: "t".into(),
            time: EventTime {
                instant,
                raw: time.into(),
            },
            traceparent: None,
            raw: Default::default(),
        };
        let payload = match value {
            Value::Array(vs) => Payload::Package(vs),
            v => Payload::Single(v),
        };
        prepare(Envelope { headers, payload }, &rules()).expect("valid test event")
    }

    fn product(local: &str, spec: &str, rels: &[&str]) -> Value {
        json!({
            "id": local,
            "name": format!("product {local}"),
            "productSpecification": {"id": spec},
            "productRelationship": rels.iter().map(|r| json!({"id": r, "relationshipType": "bundled"})).collect::<Vec<_>>(),
        })
    }

    /// A tiny in-memory world: plans events and applies their write sets like a store would.
    #[derive(Default)]
    struct World {
        snapshot: Snapshot,
        next: u128,
    }

    impl World {
        fn post(&mut self, event: &Event) -> Plan {
            let ids = identify(event, &self.snapshot.owners).expect("identified");
            let mut next = self.next;
            let plan = plan(
                event,
                &ids,
                &self.snapshot,
                &rules(),
                Utc::now(),
                &mut || {
                    next += 1;
                    id(next)
                },
            )
            .expect("planned");
            self.next = next;
            let w = &plan.write;
            for (k, owner) in &w.claim_keys {
                self.snapshot.owners.insert(k.clone(), *owner);
            }
            for k in &w.clear_waiters {
                self.snapshot.waiters.remove(k);
            }
            for (k, p) in &w.add_waiters {
                self.snapshot.waiters.entry(k.clone()).or_default().push(*p);
            }
            for pw in &w.products {
                let stored = self.snapshot.records.get(&pw.record.id).map(|r| r.revision);
                assert_eq!(stored, pw.expected_revision, "revision guard");
                self.snapshot
                    .records
                    .insert(pw.record.id, pw.record.clone());
            }
            plan
        }

        fn merged(&self, id: PinvId) -> &Value {
            &self.snapshot.records[&id].merged
        }
    }

    #[test]
    fn a_new_product_claims_its_keys_and_starts_its_history() {
        let mut world = World::default();
        let doc = json!({"id": "41-1", "status": "active",
            "externalReference": [{"externalIdentifierType": "CircuitID", "id": "C1"}]});
        let plan = world.post(&event("billing", "e1", "2024-10-03T12:00:00Z", doc));
        let p = plan.posted[0];
        let keys: Vec<_> = plan
            .write
            .claim_keys
            .iter()
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
        assert!(keys.contains(&"local:billing:41-1".to_owned()), "{keys:?}");
        assert!(keys.contains(&"ext:CircuitID:C1".to_owned()), "{keys:?}");
        assert!(keys.contains(&format!("pinv:{p}")), "{keys:?}");
        assert_eq!(plan.write.products[0].expected_revision, None);
        assert_eq!(plan.write.products[0].record.revision, 1);
        assert_eq!(plan.write.history.len(), 1);
        assert_eq!(
            plan.write.history[0].patch,
            Value::Null,
            "the creation shorthand"
        );
        let mut write = plan.write.clone();
        write.expand_creation_patches();
        assert_eq!(
            write.history[0].patch,
            patch_between(None, &plan.write.products[0].record.merged)
        );
        let processed = plan.write.processed.as_ref().expect("event remembered");
        assert_eq!(processed.products, vec![p]);
        let document = plan.documents[&p].clone().into_value();
        assert_eq!(document["id"], p.to_string());
        assert_eq!(document["status"], "active");
    }

    #[test]
    fn a_second_source_merges_into_the_product_found_by_circuit() {
        let mut world = World::default();
        let circuit = json!([{"externalIdentifierType": "CircuitID", "id": "C1"}]);
        let first = world.post(&event(
            "billing",
            "e1",
            "2024-10-03T12:00:00Z",
            json!({"id": "B-1", "name": "from billing", "externalReference": circuit}),
        ));
        let second = world.post(&event(
            "provisioning",
            "p1",
            "2024-10-04T12:00:00Z",
            json!({"id": "P-1", "name": "from provisioning", "externalReference": circuit}),
        ));
        assert_eq!(first.posted, second.posted);
        let w = &second.write.products[0];
        assert_eq!((w.expected_revision, w.record.revision), (Some(1), 2));
        assert_eq!(w.record.contributions.len(), 2);
        let claimed: Vec<_> = second
            .write
            .claim_keys
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(claimed, vec!["local:provisioning:P-1"]);
        assert_eq!(world.merged(first.posted[0])["name"], "from provisioning");
    }

    #[test]
    fn a_stale_contribution_changes_nothing() {
        let mut world = World::default();
        world.post(&event(
            "billing",
            "e2",
            "2024-10-05T00:00:00Z",
            json!({"id": "B-1", "name": "new"}),
        ));
        let plan = world.post(&event(
            "billing",
            "e1",
            "2024-10-04T00:00:00Z",
            json!({"id": "B-1", "name": "old"}),
        ));
        assert_eq!(plan.write, WriteSet::default());
        assert_eq!(
            plan.documents[&plan.posted[0]].clone().into_value()["name"],
            "new"
        );
    }

    #[test]
    fn the_same_event_again_is_recognised_and_a_changed_one_refused() {
        let e = event(
            "billing",
            "e1",
            "2024-10-05T00:00:00Z",
            json!({"id": "B-1"}),
        );
        let remembered = ProcessedEvent {
            source: e.headers.source.clone(),
            event_id: e.headers.id.clone(),
            digest: e.digest.clone(),
            products: vec![id(7)],
        };
        assert_eq!(check_replay(&e, Some(&remembered)), Ok(Some(vec![id(7)])));
        let changed = event(
            "billing",
            "e1",
            "2024-10-05T00:00:00Z",
            json!({"id": "B-1", "x": 1}),
        );
        assert_eq!(
            check_replay(&changed, Some(&remembered)),
            Err(PlanError::EventIdReused)
        );
        assert_eq!(check_replay(&e, None), Ok(None));
    }

    #[test]
    fn a_digest_of_text_longer_than_its_buffer_is_that_of_the_whole_text() {
        let long = "x".repeat(20_000);
        let v = json!({"b": long, "a": [1, 2]});
        let text = format!(r#"{{"a":[1,2],"b":"{long}"}}"#);
        assert_eq!(digest(&v), hex(&Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn the_digest_is_of_the_json_text_with_keys_sorted_at_every_depth() {
        // Parsed from text: `json!` would turn 1.50 into the f64 1.5.
        let v: Value = serde_json::from_str(
            r#"{"b": 1.50, "a": [{"d": "x\"y", "c": null}], "é": true, "Z": 10}"#,
        )
        .unwrap();
        let text = r#"{"Z":10,"a":[{"c":null,"d":"x\"y"}],"b":1.50,"é":true}"#;
        let expected: String = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest(&v), expected);
        // Exact number text: 1.50 and 1.5 are different events.
        let n = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
        assert_ne!(digest(&n(r#"{"n": 1.50}"#)), digest(&n(r#"{"n": 1.5}"#)));
        let package = [json!({"b": 1, "a": 2}), json!({"d": 3, "c": 4})];
        let package_text = r#"[{"a":2,"b":1},{"c":4,"d":3}]"#;
        let expected: String = Sha256::digest(package_text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest_of_package(&package), expected);
    }

    #[test]
    fn objects_of_every_size_are_sorted_on_the_stack_or_off_it() {
        // Around `Canonical`'s stack buffer (16 entries): keys sent in reverse order.
        for size in [0, 1, 15, 16, 17, 40] {
            let keys: Vec<String> = (0..size).rev().map(|n| format!("k{n:02}")).collect();
            let object = |keys: &[String]| -> Value {
                Value::Object(keys.iter().map(|k| (k.clone(), json!(k))).collect())
            };
            let mut sorted = keys.clone();
            sorted.sort();
            let v = json!({"outer": object(&keys), "n": size});
            let text =
                serde_json::to_string(&json!({"n": size, "outer": object(&sorted)})).unwrap();
            assert_eq!(
                digest(&v),
                hex(&Sha256::digest(text.as_bytes())),
                "{size} keys"
            );
        }
    }

    #[test]
    fn the_same_event_with_its_keys_reordered_is_the_same_event() {
        let value =
            json!({"id": "B-1", "name": "n", "characteristic": [{"value": 1, "name": "x"}]});
        let reordered =
            json!({"characteristic": [{"name": "x", "value": 1}], "name": "n", "id": "B-1"});
        let first = event("billing", "e1", "2024-10-05T00:00:00Z", value);
        let again = event("billing", "e1", "2024-10-05T00:00:00Z", reordered);
        let remembered = ProcessedEvent {
            source: first.headers.source.clone(),
            event_id: first.headers.id.clone(),
            digest: first.digest.clone(),
            products: vec![id(7)],
        };
        assert_eq!(again.digest, first.digest);
        assert_eq!(
            check_replay(&again, Some(&remembered)),
            Ok(Some(vec![id(7)]))
        );
    }

    #[test]
    fn an_event_remembered_with_a_legacy_digest_is_still_recognised() {
        // The legacy digest: SHA-256 of the JSON text with the keys as they came.
        let value = json!({"name": "n", "id": "B-1"});
        let legacy: String = Sha256::digest(br#"{"name":"n","id":"B-1"}"#)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let e = event("billing", "e1", "2024-10-05T00:00:00Z", value);
        assert_ne!(
            e.digest, legacy,
            "the test needs a key order that sorting changes"
        );
        let remembered = ProcessedEvent {
            source: e.headers.source.clone(),
            event_id: e.headers.id.clone(),
            digest: legacy,
            products: vec![id(7)],
        };
        assert_eq!(check_replay(&e, Some(&remembered)), Ok(Some(vec![id(7)])));
        let changed = event(
            "billing",
            "e1",
            "2024-10-05T00:00:00Z",
            json!({"name": "m", "id": "B-1"}),
        );
        assert_eq!(
            check_replay(&changed, Some(&remembered)),
            Err(PlanError::EventIdReused)
        );
    }

    #[test]
    fn keys_of_two_products_are_an_identity_conflict() {
        let e = event(
            "billing",
            "e1",
            "2024-10-05T00:00:00Z",
            json!({"id": "B-1",
            "externalReference": [{"externalIdentifierType": "CircuitID", "id": "C1"}]}),
        );
        let mut owners = BTreeMap::new();
        owners.insert(MatchKey::local(&e.headers.source, "B-1"), id(1));
        owners.insert(MatchKey::external("CircuitID", "C1"), id(2));
        assert_eq!(
            identify(&e, &owners),
            Err(PlanError::IdentityConflict(vec![id(1), id(2)]))
        );
    }

    #[test]
    fn a_package_links_its_parts_by_pinv_id_and_records_the_root() {
        let mut world = World::default();
        let plan = world.post(&event(
            "billing",
            "e1",
            "2024-10-05T00:00:00Z",
            json!([
                product("adi", "PR-ADI-X", &["acc", "port"]),
                product("acc", "PR-ACCESS-X", &["adi"]),
                product("port", "PR-PORT-X", &[]),
            ]),
        ));
        let [adi, acc, port] = [plan.posted[0], plan.posted[1], plan.posted[2]];
        let rel_ids: Vec<_> = world.merged(adi)["productRelationship"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(rel_ids.len(), 2);
        assert!(rel_ids.contains(&acc.to_string()) && rel_ids.contains(&port.to_string()));
        assert_eq!(
            world.merged(acc)["productRelationship"][0]["href"],
            adi.href()
        );
        for p in [adi, acc, port] {
            assert_eq!(world.snapshot.records[&p].package_root, Some(adi));
        }
        assert!(plan.write.add_waiters.is_empty());
    }

    #[test]
    fn a_part_arriving_late_rewrites_the_documents_that_waited_for_it() {
        let mut world = World::default();
        let first = world.post(&event(
            "billing",
            "e1",
            "2024-10-05T00:00:00Z",
            product("adi", "PR-ADI-X", &["acc"]),
        ));
        let adi = first.posted[0];
        assert_eq!(
            first.write.add_waiters,
            vec![(
                MatchKey::local(&Source::parse("billing").unwrap(), "acc"),
                adi
            )]
        );
        assert_eq!(world.merged(adi)["productRelationship"][0]["id"], "acc");

        let second = world.post(&event(
            "billing",
            "e2",
            "2024-10-05T00:00:01Z",
            product("acc", "PR-ACCESS-X", &[]),
        ));
        let acc = second.posted[0];
        assert_eq!(second.changed_others, vec![adi]);
        assert_eq!(
            world.merged(adi)["productRelationship"][0]["id"],
            acc.to_string()
        );
        assert_eq!(
            second.documents[&adi].clone().into_value(),
            *world.merged(adi)
        );
        assert_eq!(second.write.clear_waiters.len(), 1);
        assert!(world.snapshot.waiters.is_empty());
        assert_eq!(world.snapshot.records[&acc].package_root, Some(adi));
        assert_eq!(world.snapshot.records[&adi].package_root, Some(adi));
    }

    #[test]
    fn an_adi_posted_after_its_part_becomes_the_parts_root() {
        let mut world = World::default();
        let acc = world
            .post(&event(
                "billing",
                "e1",
                "2024-10-05T00:00:00Z",
                product("acc", "PR-ACCESS-X", &[]),
            ))
            .posted[0];
        let plan = world.post(&event(
            "billing",
            "e2",
            "2024-10-05T00:00:01Z",
            product("adi", "PR-ADI-X", &["acc"]),
        ));
        let adi = plan.posted[0];
        assert_eq!(
            world.merged(adi)["productRelationship"][0]["id"],
            acc.to_string()
        );
        assert_eq!(world.snapshot.records[&acc].package_root, Some(adi));
        assert!(
            plan.changed_others.is_empty(),
            "the part's document did not change"
        );
    }

    #[test]
    fn a_posted_external_identifier_is_refused_at_its_pointer() {
        let headers = event("billing", "e1", "2024-10-05T00:00:00Z", json!({"id": "x"})).headers;
        let forged =
            json!([{"owner": "provisioning", "externalIdentifierType": "id", "id": "PROV-1"}]);
        let mut single = json!({"id": "B-1"});
        single["externalIdentifier"] = forged.clone();
        let v = prepare(
            Envelope {
                headers: headers.clone(),
                payload: Payload::Single(single),
            },
            &rules(),
        )
        .unwrap_err();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/value/externalIdentifier");
        assert!(v[0].message.contains("is set by PINV"), "{v:?}");

        let mut port = product("p", "PR-PORT-X", &[]);
        port["externalIdentifier"] = forged;
        let package = Envelope {
            headers,
            payload: Payload::Package(vec![
                product("a", "PR-ADI-X", &[]),
                port,
                product("c", "PR-ACCESS-X", &[]),
            ]),
        };
        let v = prepare(package, &rules()).unwrap_err();
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/value/1/externalIdentifier"]);
    }

    #[test]
    fn invalid_packages_and_keyless_documents_are_refused() {
        let headers = event("billing", "e1", "2024-10-05T00:00:00Z", json!({"id": "x"})).headers;
        let bad = Envelope {
            headers: headers.clone(),
            payload: Payload::Package(vec![
                product("a", "PR-ADI-X", &[]),
                product("b", "PR-ADI-X", &[]),
                product("a", "PR-PORT-X", &[]),
            ]),
        };
        let v = prepare(bad, &rules()).unwrap_err();
        let msgs: Vec<_> = v
            .iter()
            .map(|v| format!("{} {}", v.pointer, v.message))
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("exactly one ADI part, found 2")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("/value/2 shares the match key 'local:billing:a'")),
            "{msgs:?}"
        );
        let keyless = Envelope {
            headers,
            payload: Payload::Single(json!({"name": "x"})),
        };
        let v = prepare(keyless, &rules()).unwrap_err();
        assert_eq!(v[0].pointer, "/value");
        assert!(v[0].message.contains("no id"), "{v:?}");
    }
}
