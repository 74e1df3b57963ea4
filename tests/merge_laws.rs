//! Laws of the merge, checked on generated contributions (`docs/reference.md` §6).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use pinv::core::merge::{merge, merge_document_nested_unordered};
use pinv::core::order::KeyOrder;
use pinv::core::package::Links;
use pinv::core::record::Contribution;
use pinv::core::rules::{ElementStrategy, FieldRule, Rules, Strategy as S};
use pinv::core::{EventId, PinvId, Source};

const SOURCES: [&str; 4] = ["billing", "provisioning", "inventory", "zeta"];
const PRECEDENCE: [&str; 2] = ["billing", "provisioning"];
const RAW_IDS: [&str; 3] = ["r1", "r2", "r3"];
/// Fields that PINV sets itself, so they are left out where a law compares sources' values.
const SERVICE_OWNED: [&str; 3] = ["id", "href", "externalIdentifier"];

fn src(name: &str) -> Source {
    Source::parse(name).unwrap()
}

fn pid(n: u128) -> PinvId {
    PinvId::from_uuid(uuid::Uuid::from_u128(n))
}

fn rule(path: &str, strategy: S) -> FieldRule {
    FieldRule {
        path: path.to_owned(),
        strategy,
        precedence: None,
        owners: Vec::new(),
        key: Vec::new(),
        element_strategy: ElementStrategy::Merge,
        keep_empty: false,
        declared_in: "laws.toml".to_owned(),
    }
}

fn union(path: &str, key: &[&str]) -> FieldRule {
    FieldRule {
        key: key.iter().map(|k| (*k).to_owned()).collect(),
        ..rule(path, S::Union)
    }
}

/// Rules with every strategy; `with_owner` adds an owner rule (which, by design, drops
/// a non-owner's value even when it is the only one).
fn rules(with_owner: bool) -> Rules {
    let mut fields = vec![
        rule("name", S::Recency),
        rule("startDate", S::Oldest),
        rule("productSpecification.name", S::Recency),
        union("productCharacteristic", &["name"]),
        union("relatedParty", &["role"]),
        FieldRule {
            precedence: Some(vec![src("zeta"), src("provisioning")]),
            ..rule("relatedParty.partyOrPartyRole.name", S::Priority)
        },
        union("productRelationship", &["relationshipType", "id"]),
        FieldRule {
            element_strategy: ElementStrategy::Recency,
            ..union("place", &["role"])
        },
    ];
    if with_owner {
        fields.push(FieldRule {
            owners: vec![src("provisioning"), src("inventory")],
            ..rule("note", S::Owner)
        });
    }
    Rules {
        precedence: PRECEDENCE.iter().map(|s| src(s)).collect(),
        fields: fields.into_iter().map(|r| (r.path.clone(), r)).collect(),
        identity_types: vec!["CircuitID".to_owned()],
        phone_number_types: Vec::new(),
        released_when_terminated: Vec::new(),
        role_globs: BTreeMap::new(),
        role_matchers: Vec::new(),
        accepted_types: Vec::new(),
        hash: "laws".to_owned(),
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!("")),
        Just(json!([])),
        Just(json!({})),
        "[a-c]{1,2}".prop_map(Value::String),
        (0i64..3).prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
    ]
}

/// An object with some of `keys`, each with a scalar.
fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    proptest::sample::subsequence(keys, 0..=keys.len()).prop_flat_map(|ks| {
        proptest::collection::vec(scalar(), ks.len())
            .prop_map(move |vs| Value::Object(ks.iter().map(|k| k.to_string()).zip(vs).collect()))
    })
}

/// Unkeyed elements that union arrays may hold (deduplicated by whole value).
fn loose() -> Vec<Value> {
    vec![json!({"x": 1}), json!("s"), json!({}), json!(null)]
}

/// A union array: elements with distinct keys from `key_values` (each made by `element`),
/// then some unkeyed ones.
fn keyed_array(
    key: &'static str,
    key_values: &'static [&'static str],
    element: fn() -> BoxedStrategy<Value>,
) -> impl Strategy<Value = Value> {
    let keyed =
        proptest::sample::subsequence(key_values, 0..=key_values.len()).prop_flat_map(move |ks| {
            proptest::collection::vec(element(), ks.len()).prop_map(move |es| {
                ks.iter()
                    .zip(es)
                    .map(|(k, mut e)| {
                        e.as_object_mut()
                            .expect("elements are objects")
                            .insert(key.to_owned(), json!(k));
                        e
                    })
                    .collect::<Vec<_>>()
            })
        });
    (keyed, proptest::sample::subsequence(loose(), 0..=2)).prop_map(|(mut keyed, loose)| {
        keyed.extend(loose);
        Value::Array(keyed)
    })
}

fn relationships() -> impl Strategy<Value = Value> {
    let all: Vec<Value> = ["bundles", "reliesOn"]
        .iter()
        .flat_map(|t| {
            RAW_IDS
                .iter()
                .map(move |id| json!({"relationshipType": t, "id": id}))
        })
        .collect();
    proptest::sample::subsequence(all, 0..=3).prop_map(Value::Array)
}

/// One source's document: a few fields, each present or not.
fn document() -> impl Strategy<Value = Value> {
    let fields = (
        proptest::option::of("[a-c]{0,2}".prop_map(Value::String)),
        proptest::option::of(scalar()),
        proptest::option::of(scalar()),
        proptest::option::of(scalar()),
        proptest::option::of(scalar()),
        proptest::option::of(object(&["id", "name", "version"])),
        proptest::option::of(keyed_array("name", &["Speed", "Vendor", "Model"], || {
            object(&["value"]).boxed()
        })),
        proptest::option::of(keyed_array("role", &["Customer", "User"], || {
            object(&["name", "status"])
                .prop_map(|p| json!({ "partyOrPartyRole": p }))
                .boxed()
        })),
        proptest::option::of(relationships()),
        proptest::option::of(keyed_array("role", &["Service", "Billing"], || {
            object(&["city"]).boxed()
        })),
        proptest::option::of(scalar()),
    );
    fields.prop_map(
        |(id, status, name, start, note, spec, chars, parties, rels, place, href)| {
            let named = [
                ("id", id),
                ("status", status),
                ("name", name),
                ("startDate", start),
                ("note", note),
                ("productSpecification", spec),
                ("productCharacteristic", chars),
                ("relatedParty", parties),
                ("productRelationship", rels),
                ("place", place),
                ("href", href),
            ];
            Value::Object(
                named
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                    .collect(),
            )
        },
    )
}

fn time(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// Contributions from 1..=4 distinct sources; times collide often, to exercise ties.
fn contributions() -> impl Strategy<Value = Vec<Contribution>> {
    proptest::sample::subsequence(SOURCES.to_vec(), 1..=SOURCES.len()).prop_flat_map(|sources| {
        let n = sources.len();
        (
            proptest::collection::vec((document(), 0i64..3), n),
            Just(sources),
        )
            .prop_map(|(docs, sources)| {
                sources
                    .iter()
                    .zip(docs)
                    .map(|(s, (value, secs))| Contribution {
                        source: src(s),
                        event_id: EventId::parse(&format!("{s}-{secs}")).unwrap(),
                        time: time(secs),
                        received_at: time(secs + 100),
                        value: value.into(),
                    })
                    .collect()
            })
    })
}

/// Links that resolve some raw relationship ids of some sources.
fn links() -> impl Strategy<Value = Links> {
    proptest::collection::vec(
        (
            proptest::sample::select(SOURCES.to_vec()),
            proptest::sample::select(RAW_IDS.to_vec()),
            1u128..4,
        ),
        0..6,
    )
    .prop_map(|entries| {
        let mut links = Links::default();
        for (s, raw, target) in entries {
            links.insert(&src(s), raw, pid(target));
        }
        links
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Null)
        || v.as_str() == Some("")
        || v.as_array().is_some_and(Vec::is_empty)
        || v.as_object().is_some_and(Map::is_empty)
}

/// Sources ranked as the rules rank them by default.
fn ranked(cs: &[Contribution]) -> Vec<&Contribution> {
    let mut out: Vec<&Contribution> = cs.iter().collect();
    out.sort_by(|a, b| {
        Rules::rank(&rules(true).precedence, &a.source)
            .cmp(&Rules::rank(&rules(true).precedence, &b.source))
    });
    out
}

/// The key values of the non-empty, keyed elements of `field` (`key` present).
fn keys_of<'v>(array: Option<&'v Value>, key: &str) -> Vec<&'v Value> {
    array
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get(key))
        .collect()
}

fn without_service_owned(v: &Value) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    for k in SERVICE_OWNED {
        m.remove(k);
    }
    Value::Object(m)
}

/// Drops empty elements of the union arrays (they are absent by rule, so a document
/// holding them cannot merge to itself).
fn without_empty_elements(mut v: Value) -> Value {
    for field in [
        "productCharacteristic",
        "relatedParty",
        "productRelationship",
        "place",
    ] {
        if let Some(Value::Array(a)) = v.get_mut(field) {
            a.retain(|e| !is_empty(e));
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_order_of_contributions_gives_the_same_bytes(
        (cs, shuffled) in contributions().prop_flat_map(|cs| (Just(cs.clone()), Just(cs).prop_shuffle())),
        links in links(),
    ) {
        let r = rules(true);
        let a = merge(&pid(9), &cs, &links, &r);
        let b = merge(&pid(9), &shuffled, &links, &r);
        prop_assert_eq!(bytes(&a.document), bytes(&b.document));
        prop_assert_eq!(a.provenance, b.provenance);
    }

    #[test]
    fn the_merged_document_is_in_tmf637_key_order_at_every_depth(
        cs in contributions(),
        links in links(),
    ) {
        // The merge builds its objects in order as it goes; putting a merge made without
        // the nested order into order afterwards must give the same bytes.
        let r = rules(true);
        let merged = merge(&pid(9), &cs, &links, &r).document;
        let mut reordered = merge_document_nested_unordered(&pid(9), &cs, &links, &r);
        let order = KeyOrder::product();
        order.order(order.root(), &mut reordered);
        prop_assert_eq!(bytes(&merged), bytes(&reordered));
    }

    #[test]
    fn reapplying_a_current_contribution_changes_nothing(
        cs in contributions(),
        links in links(),
        pick in any::<prop::sample::Index>(),
    ) {
        let r = rules(true);
        let before = merge(&pid(9), &cs, &links, &r);
        let i = pick.index(cs.len());
        let mut again = cs.clone();
        // The same event stored again (later), replacing the source's contribution by itself.
        again[i].received_at = time(1000);
        let after = merge(&pid(9), &again, &links, &r);
        prop_assert_eq!(bytes(&before.document), bytes(&after.document));
        prop_assert_eq!(before.provenance, after.provenance);
    }

    #[test]
    fn a_single_contribution_merges_to_itself(cs in contributions()) {
        let mut c = cs[0].clone();
        c.value = without_empty_elements(Value::clone(&c.value)).into();
        let merged = merge(&pid(9), std::slice::from_ref(&c), &Links::default(), &rules(false));
        prop_assert_eq!(without_service_owned(&merged.document), without_service_owned(&c.value));
        prop_assert_eq!(&merged.document["id"], &json!(pid(9).to_string()));
        prop_assert_eq!(&merged.document["href"], &json!(pid(9).href()));
    }

    #[test]
    fn a_priority_field_comes_from_the_first_ranked_source_that_has_it(cs in contributions()) {
        let merged = merge(&pid(9), &cs, &Links::default(), &rules(true));
        let ranked = ranked(&cs);
        let with_key: Vec<&Value> = ranked.iter().filter_map(|c| c.value.get("status")).collect();
        let expected = with_key
            .iter()
            .find(|v| !is_empty(v))
            .or(with_key.first())
            .copied();
        prop_assert_eq!(merged.document.get("status"), expected);
    }

    #[test]
    fn union_keeps_every_keyed_element_exactly_once(cs in contributions(), links in links()) {
        let merged = merge(&pid(9), &cs, &links, &rules(true));
        for (field, key) in [("productCharacteristic", "name"), ("relatedParty", "role"), ("place", "role")] {
            let input: BTreeSet<String> = cs
                .iter()
                .flat_map(|c| keys_of(c.value.get(field), key))
                .map(|k| k.to_string())
                .collect();
            let output: Vec<String> = keys_of(merged.document.get(field), key)
                .into_iter()
                .map(|k| k.to_string())
                .collect();
            let distinct: BTreeSet<String> = output.iter().cloned().collect();
            prop_assert_eq!(distinct.len(), output.len(), "duplicate keys in {}", field);
            prop_assert_eq!(distinct, input, "keys of {}", field);
        }
    }

    #[test]
    fn no_relationship_id_that_resolves_stays_unrewritten(cs in contributions(), links in links()) {
        let merged = merge(&pid(9), &cs, &links, &rules(true));
        let output = merged
            .document
            .get("productRelationship")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in &cs {
            for e in c.value.get("productRelationship").and_then(Value::as_array).into_iter().flatten() {
                let raw = e["id"].as_str().unwrap();
                if let Some(target) = links.resolve(&c.source, raw) {
                    let rewritten = json!({
                        "relationshipType": e["relationshipType"],
                        "id": target.to_string(),
                        "href": target.href(),
                    });
                    prop_assert!(output.contains(&rewritten), "{} not rewritten", raw);
                }
            }
        }
        // A raw id in the output was sent, unresolved, by some source.
        for e in &output {
            let id = e["id"].as_str().unwrap();
            if RAW_IDS.contains(&id) {
                let sent_unresolved = cs.iter().any(|c| {
                    links.resolve(&c.source, id).is_none()
                        && c.value.get("productRelationship").and_then(Value::as_array).is_some_and(|a| {
                            a.iter().any(|x| x["id"] == e["id"] && x["relationshipType"] == e["relationshipType"])
                        })
                });
                prop_assert!(sent_unresolved, "{} kept raw though it resolves", id);
            }
        }
    }
}

/// The values found at `rule_path` (dotted, arrays transparent) in `value`.
fn values_at<'v>(value: &'v Value, rule_path: &[&str], out: &mut Vec<&'v Value>) {
    match (value, rule_path) {
        (Value::Array(a), _) => {
            out.push(value);
            a.iter().for_each(|e| values_at(e, rule_path, out))
        }
        (v, []) => out.push(v),
        (Value::Object(o), [first, rest @ ..]) => {
            if let Some(v) = o.get(*first) {
                values_at(v, rest, out)
            }
        }
        _ => {}
    }
}

/// Every leaf (scalar, empty array, empty object) of `value`, by JSON pointer.
fn leaves(value: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(o) if !o.is_empty() => o.iter().for_each(|(k, v)| {
            leaves(
                v,
                format!("{pointer}/{}", pinv::core::pointer_token(k)),
                out,
            )
        }),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{pointer}/{i}"), out)),
        _ => out.push((pointer, value.clone())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every leaf has exactly one provenance entry, and a source's entry names a
    /// contribution that holds that very value at that path.
    #[test]
    fn every_leaf_has_one_provenance_entry_from_a_contribution_that_holds_it(
        cs in contributions(), links in links(), with_owner in any::<bool>()
    ) {
        use pinv::core::provenance::{explain, SetBy};
        let r = rules(with_owner);
        let e = explain(&pid(1), &cs, &links, &r);
        prop_assert_eq!(e.document(), &pinv::core::merge::merge_document(&pid(1), &cs, &links, &r));
        let mut all = Vec::new();
        leaves(e.document(), String::new(), &mut all);
        let explained: Vec<(String, Value)> =
            e.leaves().iter().map(|l| (l.pointer.to_owned(), l.value.clone())).collect();
        prop_assert_eq!(&explained, &all);
        for leaf in &e.leaves() {
            let top = leaf.pointer.split('/').nth(1).unwrap();
            match leaf.set_by {
                SetBy::Pinv => {
                    let rewritten = leaf.pointer.starts_with("/productRelationship/");
                    prop_assert!(SERVICE_OWNED.contains(&top) || rewritten, "{:?}", leaf);
                }
                SetBy::Source => {
                    prop_assert!(!SERVICE_OWNED.contains(&top), "{:?}", leaf);
                    let from = leaf.from.as_ref().unwrap();
                    let c = cs.iter().find(|c| c.source == from.source).unwrap();
                    prop_assert_eq!(&c.event_id, &from.event_id);
                    let path: Vec<String> = leaf
                        .pointer
                        .split('/')
                        .skip(1)
                        .filter(|t| t.parse::<usize>().is_err())
                        .map(str::to_owned)
                        .collect();
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    let mut found = Vec::new();
                    values_at(&c.value, &path, &mut found);
                    // The merge may empty an object or array by dropping empty elements
                    // or keys it may not take; the contribution then held a non-empty one.
                    let holds = found.contains(&leaf.value)
                        || (*leaf.value == json!([]) && found.iter().any(|v| v.is_array()))
                        || (*leaf.value == json!({}) && found.iter().any(|v| v.is_object()));
                    prop_assert!(holds, "{:?} not in {}", leaf, c.value);
                }
            }
        }
    }
}
