//! Hub subscriptions and the outbox: what every store keeps so that each committed change
//! reaches each matching subscriber.
//!
//! A store writes the outbox entries of a write set in the same transaction as the set
//! ([`entries_for`] makes them), one entry per (subscription, event). With no subscription
//! nothing extra is written. An entry's key orders it by subscription, product and
//! revision, so the dispatcher delivers each product's events to each subscriber in commit
//! order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::event::{events_for, HubQuery};
use crate::core::record::{JsonText, WriteSet};
use crate::core::PinvId;

/// A registered listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// The hub id (a UUID).
    pub id: String,
    /// Where events are POSTed (`http` or `https`).
    pub callback: String,
    /// The TMF query choosing events (validated at registration).
    pub query: String,
    /// Key of the HMAC-SHA256 body signature, if the subscriber asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When it was registered.
    pub created: DateTime<Utc>,
    /// How delivery went.
    #[serde(default)]
    pub status: DeliveryStatus,
}

/// The delivery record of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// Events delivered.
    pub delivered: u64,
    /// Events given up undelivered because the outbox passed `PINV_HUB_OUTBOX_MAX`.
    #[serde(default)]
    pub overflowed: u64,
    /// When the last delivery succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
}

/// One event waiting for one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The subscription.
    pub subscription: String,
    /// The product.
    pub product: PinvId,
    /// The revision of the change.
    pub revision: u64,
    /// Position among the events of that change.
    pub seq: u32,
    /// The event id (also in `event`).
    pub event_id: String,
    /// The TMF `Event` body.
    pub event: EventJson,
    /// When the change was committed.
    pub committed_at: DateTime<Utc>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not before this instant.
    pub next_attempt: DateTime<Utc>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Given up: kept to be seen, never delivered again.
    #[serde(default)]
    pub dead: bool,
}

/// A TMF `Event` body as JSON text. It is written once, when its change commits (one text
/// shared by every subscription that takes it), then stored, read back and sent as it is:
/// the dispatcher never builds its tree. Building it (and dropping it) on every read was
/// the largest part of what the outbox cost with a subscriber (BENCHMARKS.md, round 12).
pub type EventJson = JsonText;

impl OutboxEntry {
    /// The storage key: sorts by subscription, product, revision, position.
    pub fn key(&self) -> String {
        entry_key(&self.subscription, &self.product, self.revision, self.seq)
    }
}

/// See [`OutboxEntry::key`].
pub fn entry_key(subscription: &str, product: &PinvId, revision: u64, seq: u32) -> String {
    format!("{subscription}/{product}/{revision:020}/{seq:03}")
}

/// The first key of a subscription's entries and the first key after them.
pub fn key_range(subscription: &str) -> (String, String) {
    (format!("{subscription}/"), format!("{subscription}0"))
}

/// Pending and dead entries of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Not yet delivered.
    pub pending: u64,
    /// Given up.
    pub dead: u64,
}

/// What the dispatcher decided about one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Delivered: the entry goes.
    Delivered(String),
    /// To try again, or dead: the entry is replaced by this one.
    Keep(OutboxEntry),
}

/// The outbox entries of `set` for `subscriptions`: one per event of each history entry
/// that the subscription's query accepts.
pub fn entries_for(
    set: &WriteSet,
    subscriptions: &[Subscription],
    now: DateTime<Utc>,
) -> Vec<OutboxEntry> {
    if subscriptions.is_empty() || set.history.is_empty() {
        return Vec::new();
    }
    let queries: Vec<(&Subscription, HubQuery)> = subscriptions
        .iter()
        .filter_map(|s| HubQuery::parse(&s.query).ok().map(|q| (s, q)))
        .collect();
    let mut out = Vec::new();
    for entry in &set.history {
        let product = set
            .products
            .iter()
            .find(|w| w.record.id == entry.product && w.record.revision == entry.revision)
            .map(|w| &w.record.merged)
            .or_else(|| {
                // A deletion reports the product as it was last.
                set.delete_products
                    .iter()
                    .find(|d| d.id == entry.product && d.expected_revision + 1 == entry.revision)
                    .map(|d| &d.last)
            });
        for (seq, event) in events_for(entry, product, now).into_iter().enumerate() {
            let mut text: Option<EventJson> = None;
            for (sub, query) in &queries {
                if query.matches(&event) {
                    let text = text.get_or_insert_with(|| EventJson::of(&event));
                    out.push(OutboxEntry {
                        subscription: sub.id.clone(),
                        product: event.product,
                        revision: event.revision,
                        seq: u32::try_from(seq).unwrap_or(u32::MAX),
                        event_id: event.event_id.clone(),
                        event: text.clone(),
                        committed_at: now,
                        attempts: 0,
                        next_attempt: now,
                        last_error: None,
                        dead: false,
                    });
                }
            }
        }
    }
    out
}

/// Why [`overflow`] gave up on an entry.
pub const OVERFLOW_ERROR: &str = "outbox full (PINV_HUB_OUTBOX_MAX): given up undelivered";

/// The entries to keep as dead when more than `max` of `pending` wait: the oldest commits
/// first (ties in key order), marked dead with [`OVERFLOW_ERROR`], until `max - max / 10`
/// stay. The tenth of slack means the whole outbox is read to find the oldest once per
/// tenth of `max` new events, not once per check while a listener stays down.
pub fn overflow(mut pending: Vec<OutboxEntry>, max: usize) -> Vec<OutboxEntry> {
    pending.retain(|e| !e.dead);
    if pending.len() <= max {
        return Vec::new();
    }
    let excess = pending.len() - (max - max / 10);
    pending.sort_by_key(|a| (a.committed_at, a.key()));
    pending.truncate(excess);
    for entry in &mut pending {
        entry.dead = true;
        entry.last_error = Some(OVERFLOW_ERROR.to_owned());
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{EventRef, HistoryEntry, ProductWrite};
    use crate::store::conformance::{id, record};
    use serde_json::json;

    fn sub(id: &str, query: &str) -> Subscription {
        Subscription {
            id: id.into(),
            callback: "http://x".into(),
            query: query.into(),
            secret: None,
            created: Utc::now(),
            status: DeliveryStatus::default(),
        }
    }

    fn created(n: u128) -> WriteSet {
        WriteSet {
            products: vec![ProductWrite {
                record: record(id(n), 1, json!({"status": "active"})),
                expected_revision: None,
                contributions_unchanged: false,
                changed_attributes: None,
                merged_json: None,
            }],
            history: vec![HistoryEntry {
                product: id(n),
                revision: 1,
                time: Utc::now(),
                event: EventRef {
                    source: "s".into(),
                    id: "e".into(),
                },
                rules_hash: String::new(),
                patch: json!([]),
                deleted: false,
            }],
            ..WriteSet::default()
        }
    }

    #[test]
    fn no_subscription_means_no_entry() {
        assert!(entries_for(&created(1), &[], Utc::now()).is_empty());
    }

    #[test]
    fn each_matching_subscription_gets_the_event_with_the_merged_product() {
        let subs = [
            sub("a", ""),
            sub("b", "eventType=ProductDeleteEvent"),
            sub("c", "event.product.status=active"),
        ];
        let entries = entries_for(&created(1), &subs, Utc::now());
        let who: Vec<&str> = entries.iter().map(|e| e.subscription.as_str()).collect();
        assert_eq!(who, ["a", "c"]);
        assert_eq!(
            entries[0].event.to_value()["event"]["product"]["status"],
            "active"
        );
        assert_eq!(entries[0].event_id, entries[1].event_id);
        assert_eq!(entries[0].event, entries[1].event);
    }

    #[test]
    fn a_deletion_reports_the_product_as_it_was_last() {
        let last = json!({"id": "x", "status": "suspended"});
        let mut set = created(1);
        set.products.clear();
        set.history[0].revision = 4;
        set.history[0].deleted = true;
        set.delete_products = vec![crate::core::record::ProductDelete {
            id: id(1),
            expected_revision: 3,
            last: last.clone(),
        }];
        let entries = entries_for(&set, &[sub("a", "")], Utc::now());
        assert_eq!(entries.len(), 1);
        let event = entries[0].event.to_value();
        assert_eq!(event["eventType"], "ProductDeleteEvent");
        assert_eq!(event["event"]["product"], last);
    }

    #[test]
    fn overflow_gives_up_the_oldest_commits_beyond_the_bound() {
        let t0 = Utc::now();
        let entry = |product: u128, seconds: i64| OutboxEntry {
            subscription: "s".into(),
            product: id(product),
            revision: 1,
            seq: 0,
            event_id: format!("{product}"),
            event: EventJson::of(&json!({})),
            committed_at: t0 + chrono::Duration::seconds(seconds),
            attempts: 0,
            next_attempt: t0,
            last_error: None,
            dead: false,
        };
        // Key order (by product) is not commit order.
        let pending = vec![entry(1, 30), entry(2, 10), entry(3, 20), entry(4, 0)];
        assert!(overflow(pending.clone(), 4).is_empty());
        assert!(overflow(pending.clone(), 9).is_empty());
        let dead = overflow(pending.clone(), 2);
        let who: Vec<&str> = dead.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(who, ["4", "2"]);
        assert!(dead.iter().all(|e| e.dead));
        assert_eq!(dead[0].last_error.as_deref(), Some(OVERFLOW_ERROR));
        let mut already = pending;
        already[3].dead = true;
        let who: Vec<String> = overflow(already, 2)
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(who, ["2"], "dead entries are not counted or given up again");
        // Past a larger bound, down to nine tenths of it.
        let many: Vec<OutboxEntry> = (0..21).map(|n| entry(n, n as i64)).collect();
        assert!(overflow(many.clone(), 21).is_empty());
        let dead = overflow(many, 20);
        let who: Vec<&str> = dead.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(who, ["0", "1", "2"]);
    }

    #[test]
    fn keys_sort_by_subscription_product_and_revision() {
        let k = |rev| entry_key("s", &id(1), rev, 0);
        assert!(k(9) < k(10));
        let (lo, hi) = key_range("s");
        assert!(lo < k(1) && k(u64::MAX) < hi);
        assert!(entry_key("s0", &id(1), 1, 0) >= hi || entry_key("s0", &id(1), 1, 0) < lo);
    }
}
