//! TMF637 product events made from history entries, and the subscription queries that
//! choose which events a subscriber gets.
//!
//! An event is a pure function of one committed history entry and the merged product after
//! it, so every change path (POST, re-merge, relationship rewriting, the TMF write routes)
//! publishes the same way without code of its own.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::core::record::HistoryEntry;
use crate::core::PinvId;

/// The kinds of product event TMF637 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    /// The product's first merged document.
    Create,
    /// One or more top-level attributes changed.
    AttributeValueChange,
    /// `status` changed (also reported as an attribute value change).
    StateChange,
    /// The product was removed.
    Delete,
}

impl EventType {
    /// Every kind, in the order a change reports them.
    pub const ALL: [Self; 4] = [
        Self::Create,
        Self::AttributeValueChange,
        Self::StateChange,
        Self::Delete,
    ];

    /// The TMF name, e.g. `ProductCreateEvent`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "ProductCreateEvent",
            Self::AttributeValueChange => "ProductAttributeValueChangeEvent",
            Self::StateChange => "ProductStateChangeEvent",
            Self::Delete => "ProductDeleteEvent",
        }
    }

    /// The kind with this TMF name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// A short tag for ids.
    fn tag(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::AttributeValueChange => "attr",
            Self::StateChange => "state",
            Self::Delete => "delete",
        }
    }
}

/// One product event, ready to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductEvent {
    /// `<pinv id>/<revision>/<kind>`: unique per change and kind, the same on every
    /// redelivery.
    pub event_id: String,
    /// The kind.
    pub event_type: EventType,
    /// The product.
    pub product: PinvId,
    /// The revision the change produced.
    pub revision: u64,
    /// The whole TMF `Event` body.
    pub body: Value,
}

/// True when `entry` records the removal of its product: its patch removes the whole
/// document (`{"op": "remove", "path": ""}`).
pub fn is_deletion(entry: &HistoryEntry) -> bool {
    entry.patch.as_array().is_some_and(|ops| {
        ops.iter().any(|op| {
            op.get("op").and_then(Value::as_str) == Some("remove")
                && op.get("path").and_then(Value::as_str) == Some("")
        })
    })
}

/// The top-level attributes an RFC 6902 patch touches, sorted and deduplicated.
pub fn changed_fields(patch: &Value) -> Vec<String> {
    let mut fields: Vec<String> = patch
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|op| op.get("path").and_then(Value::as_str))
        .filter_map(|path| path.strip_prefix('/'))
        .map(|rest| {
            let token = rest.split('/').next().unwrap_or_default();
            token.replace("~1", "/").replace("~0", "~")
        })
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// The events one committed history entry reports, given the merged product after it
/// (`None` when the product is gone).
///
/// The first revision is a create; a deletion is a delete; any other change is an
/// attribute value change naming the changed top-level fields, plus a state change when
/// `status` is one of them. A change that touches nothing reports nothing.
pub fn events_for(
    entry: &HistoryEntry,
    product: Option<&Value>,
    now: DateTime<Utc>,
) -> Vec<ProductEvent> {
    let fallback = json!({"id": entry.product.to_string(), "@type": "Product"});
    let product = product.unwrap_or(&fallback);
    let mut kinds: Vec<(EventType, Option<Vec<String>>)> = Vec::new();
    if is_deletion(entry) {
        kinds.push((EventType::Delete, None));
    } else if entry.revision == 1 {
        kinds.push((EventType::Create, None));
    } else {
        let fields = changed_fields(&entry.patch);
        if fields.is_empty() {
            return Vec::new();
        }
        if fields.iter().any(|f| f == "status") {
            kinds.push((EventType::StateChange, Some(vec!["status".to_owned()])));
        }
        kinds.push((EventType::AttributeValueChange, Some(fields)));
    }
    kinds
        .into_iter()
        .map(|(kind, fields)| {
            let event_id = format!("{}/{}/{}", entry.product, entry.revision, kind.tag());
            let mut body = json!({
                "@type": kind.name(),
                "eventId": event_id,
                "eventTime": now.to_rfc3339_opts(SecondsFormat::Millis, true),
                "eventType": kind.name(),
                "correlationId": entry.event.id,
                "domain": "productInventory",
                "title": kind.name(),
                "event": {"product": product},
            });
            if let Some(fields) = fields {
                body["fieldPath"] = Value::from(fields.join(","));
                body["description"] = Value::from(format!("changed: {}", fields.join(", ")));
            }
            ProductEvent {
                event_id,
                event_type: kind,
                product: entry.product,
                revision: entry.revision,
                body,
            }
        })
        .collect()
}

/// Which events a subscription wants: a TMF630-style query of `eventType` and equality
/// on `event.product.*` dotted paths (arrays transparent), all of which must hold.
///
/// This is the small subset the hub needs; the shared TMF630 parser replaces
/// [`HubQuery::parse`] once it exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubQuery {
    /// Accepted kinds; empty accepts every kind.
    pub event_types: Vec<EventType>,
    /// `(path inside the product, value)` pairs.
    pub product_filters: Vec<(String, String)>,
}

/// Why a subscription query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub query: {0}")]
pub struct HubQueryError(pub String);

const PRODUCT_PREFIX: &str = "event.product.";

impl HubQuery {
    /// Parses `eventType=A,B&event.product.status=suspended` (percent-encoded values
    /// allowed; an empty query accepts everything).
    pub fn parse(query: &str) -> Result<Self, HubQueryError> {
        let mut parsed = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| HubQueryError(format!("'{pair}' is not name=value")))?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| HubQueryError(format!("'{s}' is not UTF-8")))
            };
            let (name, value) = (decode(name)?, decode(value)?);
            if name == "eventType" {
                for one in value.split(',') {
                    let kind = EventType::parse(one)
                        .ok_or_else(|| HubQueryError(format!("unknown eventType '{one}'")))?;
                    parsed.event_types.push(kind);
                }
            } else if let Some(path) = name.strip_prefix(PRODUCT_PREFIX) {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(HubQueryError(format!("'{name}' is not a dotted path")));
                }
                parsed.product_filters.push((path.to_owned(), value));
            } else {
                return Err(HubQueryError(format!(
                    "'{name}' is neither eventType nor an {PRODUCT_PREFIX}* path"
                )));
            }
        }
        Ok(parsed)
    }

    /// True when the event passes every condition.
    pub fn matches(&self, event: &ProductEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && crate::core::filter::matches(&event.body["event"]["product"], &self.product_filters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::EventRef;

    fn entry(revision: u64, patch: Value) -> HistoryEntry {
        HistoryEntry {
            product: PinvId::from_uuid(uuid::Uuid::from_u128(7)),
            revision,
            time: Utc::now(),
            event: EventRef {
                source: "crm".into(),
                id: "e-1".into(),
            },
            rules_hash: "h".into(),
            patch,
        }
    }

    fn kinds(events: &[ProductEvent]) -> Vec<EventType> {
        events.iter().map(|e| e.event_type).collect()
    }

    #[test]
    fn the_first_revision_is_a_create_carrying_the_product() {
        let product = json!({"id": "x", "status": "active"});
        let events = events_for(&entry(1, json!([])), Some(&product), Utc::now());
        assert_eq!(kinds(&events), [EventType::Create]);
        let body = &events[0].body;
        assert_eq!(body["eventType"], "ProductCreateEvent");
        assert_eq!(body["event"]["product"], product);
        assert_eq!(body["correlationId"], "e-1");
        assert_eq!(
            body["eventId"],
            "00000000-0000-0000-0000-000000000007/1/create"
        );
    }

    #[test]
    fn a_status_change_is_a_state_change_and_an_attribute_change() {
        let patch = json!([
            {"op": "replace", "path": "/status", "value": "suspended"},
            {"op": "add", "path": "/name/x", "value": 1}
        ]);
        let events = events_for(&entry(3, patch), Some(&json!({})), Utc::now());
        assert_eq!(
            kinds(&events),
            [EventType::StateChange, EventType::AttributeValueChange]
        );
        assert_eq!(events[0].body["fieldPath"], "status");
        assert_eq!(events[1].body["fieldPath"], "name,status");
        assert_ne!(events[0].event_id, events[1].event_id);
    }

    #[test]
    fn other_changes_name_their_fields_and_empty_ones_report_nothing() {
        let patch = json!([{"op": "remove", "path": "/a~1b/0"}]);
        let events = events_for(&entry(2, patch), Some(&json!({})), Utc::now());
        assert_eq!(kinds(&events), [EventType::AttributeValueChange]);
        assert_eq!(events[0].body["description"], "changed: a/b");
        assert!(events_for(&entry(2, json!([])), Some(&json!({})), Utc::now()).is_empty());
    }

    #[test]
    fn a_deletion_entry_is_a_delete_event() {
        let patch = json!([{"op": "remove", "path": ""}]);
        let deleted = entry(5, patch);
        assert!(is_deletion(&deleted));
        let events = events_for(&deleted, None, Utc::now());
        assert_eq!(kinds(&events), [EventType::Delete]);
        assert_eq!(
            events[0].body["event"]["product"]["id"],
            deleted.product.to_string()
        );
    }

    #[test]
    fn a_query_filters_by_type_and_product_fields() {
        let q = HubQuery::parse("eventType=ProductStateChangeEvent&event.product.status=suspended")
            .unwrap();
        let patch = json!([{"op": "replace", "path": "/status", "value": "suspended"}]);
        let suspended = json!({"status": "suspended"});
        let events = events_for(&entry(2, patch.clone()), Some(&suspended), Utc::now());
        let hits: Vec<_> = events.iter().filter(|e| q.matches(e)).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].event_type, EventType::StateChange);
        let active = json!({"status": "active"});
        let events = events_for(&entry(2, patch), Some(&active), Utc::now());
        assert!(!events.iter().any(|e| q.matches(e)));
        assert!(HubQuery::parse("").unwrap().matches(&events[0]));
    }

    #[test]
    fn bad_queries_are_refused() {
        for bad in [
            "eventType=Nope",
            "status=active",
            "event.product.",
            "event.product.a..b=1",
            "novalue",
        ] {
            assert!(HubQuery::parse(bad).is_err(), "{bad}");
        }
        let q = HubQuery::parse(
            "event.product.name=a%20b&eventType=ProductCreateEvent,ProductDeleteEvent",
        )
        .unwrap();
        assert_eq!(q.product_filters, [("name".to_owned(), "a b".to_owned())]);
        assert_eq!(q.event_types, [EventType::Create, EventType::Delete]);
    }
}
