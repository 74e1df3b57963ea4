//! TMF637 product events made from history entries, and the subscription queries that
//! choose which events a subscriber gets.
//!
//! An event is a pure function of one committed history entry and the merged product after
//! it, so every change path (POST, re-merge, relationship rewriting, the TMF write routes)
//! publishes the same way without code of its own.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::core::query::{Filter, Query};
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

    /// The TMF637 listener resource of this kind, e.g. `productCreateEvent`: events are
    /// POSTed to `{callback}/listener/<this>`.
    pub fn listener(self) -> &'static str {
        match self {
            Self::Create => "productCreateEvent",
            Self::AttributeValueChange => "productAttributeValueChangeEvent",
            Self::StateChange => "productStateChangeEvent",
            Self::Delete => "productDeleteEvent",
        }
    }

    /// The kind with this TMF name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The kind an event id made by [`events_for`] names (`<pinv id>/<revision>/<tag>`): the
    /// dispatcher reads it there rather than scan the event's text for its `eventType`
    /// (about 5 µs for a seed product's event).
    pub fn of_event_id(event_id: &str) -> Option<Self> {
        let tag = event_id.rsplit('/').next()?;
        Self::ALL.into_iter().find(|t| t.tag() == tag)
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

/// One product event, ready to deliver. It borrows the product rather than copying it
/// into its body: a change's product is already in its write set, and the event is only
/// matched against queries and written out once as text (BENCHMARKS.md, round 12).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductEvent<'p> {
    /// `<pinv id>/<revision>/<kind>`: unique per change and kind, the same on every
    /// redelivery.
    pub event_id: String,
    /// The kind.
    pub event_type: EventType,
    /// The product.
    pub product: PinvId,
    /// The revision the change produced.
    pub revision: u64,
    /// The TMF `Event` body but the product: an object whose `event` member is `null`.
    pub head: Value,
    /// The product the body carries as `event.product`.
    pub document: Cow<'p, Value>,
}

impl ProductEvent<'_> {
    /// The whole TMF `Event` body as a tree (a copy of the product included).
    pub fn body(&self) -> Value {
        let mut body = self.head.clone();
        body["event"] = json!({"product": self.document.as_ref()});
        body
    }
}

/// Serialises as [`ProductEvent::body`] would, without copying the product.
impl Serialize for ProductEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Carried<'a> {
            product: &'a Value,
        }
        let empty = Map::new();
        let head = self.head.as_object().unwrap_or(&empty);
        let mut map = serializer.serialize_map(Some(head.len()))?;
        for (key, value) in head {
            if key == "event" {
                map.serialize_entry(
                    key,
                    &Carried {
                        product: &self.document,
                    },
                )?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// True when `entry` records the removal of its product.
pub fn is_deletion(entry: &HistoryEntry) -> bool {
    entry.deleted
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
pub fn events_for<'p>(
    entry: &HistoryEntry,
    product: Option<&'p Value>,
    now: DateTime<Utc>,
) -> Vec<ProductEvent<'p>> {
    let document = match product {
        Some(product) => Cow::Borrowed(product),
        None => Cow::Owned(json!({"id": entry.product.to_string(), "@type": "Product"})),
    };
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
                "event": null,
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
                head: body,
                document: document.clone(),
            }
        })
        .collect()
}

/// Which events a subscription wants: a TMF630 query (the list routes' language,
/// [`crate::core::query`]) over the event: `eventType` and `event.product.*` dotted paths
/// (arrays transparent), with every operator of the list routes; all must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HubQuery {
    /// The `eventType` filters, evaluated on the event's body but its product.
    on_type: Vec<Filter>,
    /// The `event.product.*` filters with that prefix taken off: evaluated on the product
    /// itself, which an event does not copy into its body.
    on_product: Vec<Filter>,
}

/// Why a subscription query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub query: {0}")]
pub struct HubQueryError(pub String);

const PRODUCT_PREFIX: [&str; 2] = ["event", "product"];

impl HubQuery {
    /// Parses `eventType=A,B&event.product.status=suspended` (an empty query accepts
    /// everything). Paging, sorting and `fields` mean nothing for events and are refused.
    pub fn parse(query: &str) -> Result<Self, HubQueryError> {
        let parsed = Query::parse(query, &[]).map_err(|e| HubQueryError(e.to_string()))?;
        let paging = Query {
            filters: Vec::new(),
            ..parsed.clone()
        };
        if paging != Query::default() {
            return Err(HubQueryError(
                "sort, offset, limit and fields do not apply to events".to_owned(),
            ));
        }
        let mut query = Self::default();
        for mut filter in parsed.filters {
            if filter.path == ["eventType"] {
                if let Some(bad) = filter
                    .values
                    .iter()
                    .find(|v| EventType::parse(&v.text).is_none())
                {
                    return Err(HubQueryError(format!("unknown eventType '{}'", bad.text)));
                }
                query.on_type.push(filter);
            } else if filter.path.len() > 2 && filter.path[..2] == PRODUCT_PREFIX {
                filter.path.drain(..2);
                query.on_product.push(filter);
            } else {
                return Err(HubQueryError(format!(
                    "'{}' is neither eventType nor an event.product.* path",
                    filter.dotted_path()
                )));
            }
        }
        Ok(query)
    }

    /// True when the event passes every condition.
    pub fn matches(&self, event: &ProductEvent) -> bool {
        self.on_type.iter().all(|f| f.matches(&event.head))
            && self.on_product.iter().all(|f| f.matches(&event.document))
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
            deleted: false,
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
        let body = &events[0].body();
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
        let product = json!({});
        let events = events_for(&entry(3, patch), Some(&product), Utc::now());
        assert_eq!(
            kinds(&events),
            [EventType::StateChange, EventType::AttributeValueChange]
        );
        assert_eq!(events[0].body()["fieldPath"], "status");
        assert_eq!(events[1].body()["fieldPath"], "name,status");
        assert_ne!(events[0].event_id, events[1].event_id);
    }

    #[test]
    fn an_event_serialises_as_its_body_with_the_product_in_place() {
        let product = json!({"id": "x", "status": "suspended", "name": "n"});
        let patch = json!([{"op": "replace", "path": "/status", "value": "suspended"}]);
        let mut events = events_for(&entry(2, patch), Some(&product), Utc::now());
        events.extend(events_for(&entry(1, json!([])), Some(&product), Utc::now()));
        for event in &events {
            // The text, not only the value: key order included (fieldPath after event).
            assert_eq!(
                serde_json::to_string(event).unwrap(),
                serde_json::to_string(&event.body()).unwrap()
            );
            assert_eq!(event.body()["event"]["product"], product);
        }
    }

    #[test]
    fn other_changes_name_their_fields_and_empty_ones_report_nothing() {
        let patch = json!([{"op": "remove", "path": "/a~1b/0"}]);
        let product = json!({});
        let events = events_for(&entry(2, patch), Some(&product), Utc::now());
        assert_eq!(kinds(&events), [EventType::AttributeValueChange]);
        assert_eq!(events[0].body()["description"], "changed: a/b");
        assert!(events_for(&entry(2, json!([])), Some(&json!({})), Utc::now()).is_empty());
    }

    #[test]
    fn a_deletion_entry_is_a_delete_event() {
        // The write path's deletion entry: a patch to `{}`, marked deleted.
        let patch = json!([{"op": "remove", "path": "/name"}]);
        let mut deleted = entry(5, patch);
        assert!(!is_deletion(&deleted));
        deleted.deleted = true;
        assert!(is_deletion(&deleted));
        let events = events_for(&deleted, None, Utc::now());
        assert_eq!(kinds(&events), [EventType::Delete]);
        assert_eq!(
            events[0].body()["event"]["product"]["id"],
            deleted.product.to_string()
        );
    }

    #[test]
    fn an_event_id_names_its_kind() {
        let status = json!([{"op": "replace", "path": "/status", "value": "x"}]);
        let mut deleted = entry(4, json!([]));
        deleted.deleted = true;
        let product = json!({});
        let events = [
            events_for(&entry(1, json!([])), Some(&product), Utc::now()),
            events_for(&entry(2, status), Some(&product), Utc::now()),
            events_for(&deleted, None, Utc::now()),
        ];
        let mut seen = Vec::new();
        for event in events.iter().flatten() {
            assert_eq!(
                EventType::of_event_id(&event.event_id),
                Some(event.event_type)
            );
            seen.push(event.event_type);
        }
        seen.sort();
        assert_eq!(seen, EventType::ALL);
        assert_eq!(EventType::of_event_id("x/1/other"), None);
    }

    #[test]
    fn listener_names_are_the_tmf_names_in_lower_camel_case() {
        for kind in EventType::ALL {
            let mut name = kind.name().to_owned();
            name[..1].make_ascii_lowercase();
            assert_eq!(kind.listener(), name);
        }
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
        for paging in ["sort=name", "limit=5", "offset=1", "fields=name"] {
            assert!(HubQuery::parse(paging).is_err(), "{paging}");
        }
        let q = HubQuery::parse(
            "event.product.name=a%20b&eventType=ProductCreateEvent,ProductDeleteEvent",
        )
        .unwrap();
        let named = |name: &str| json!({"name": name});
        let (a_b, a) = (named("a b"), named("a"));
        let created = events_for(&entry(1, json!([])), Some(&a_b), Utc::now());
        assert!(q.matches(&created[0]));
        let other = events_for(&entry(1, json!([])), Some(&a), Utc::now());
        assert!(!q.matches(&other[0]));
        let changed = events_for(
            &entry(2, json!([{"op": "add", "path": "/name", "value": "a b"}])),
            Some(&a_b),
            Utc::now(),
        );
        assert!(!q.matches(&changed[0]), "not one of the event types");
        // The list routes' operators work on events too.
        let q = HubQuery::parse("event.product.status!=active").unwrap();
        let active = json!({"status": "active"});
        assert!(!q.matches(&events_for(&entry(1, json!([])), Some(&active), Utc::now())[0]));
        assert!(q.matches(&created[0]));
    }
}
