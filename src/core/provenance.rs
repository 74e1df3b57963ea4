//! Why a merged document says what it says: for every leaf, the contribution it came from
//! and the rule that chose it.
//!
//! The explanation re-runs the merge with a trace ([`crate::core::merge`] records every
//! value it takes and where it lands), so it is exactly the merge's own choice, never a
//! guess from comparing values afterwards. The write paths never pay for it.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::core::merge::{merge_traced, Take, Trace, Traced};
use crate::core::package::Links;
use crate::core::record::{Contribution, HistoryEntry, ProductRecord};
use crate::core::rules::{ElementStrategy, Rules, Strategy};
use crate::core::{push_pointer_token, EventId, PinvId, Source};

/// Where every leaf of a merged document came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The merged document explained (the same as the merge makes).
    pub document: Value,
    /// One entry per leaf (scalar, empty array or empty object), in document order.
    pub leaves: Vec<Leaf>,
    /// One entry per element of every `union` array.
    pub elements: Vec<Element>,
}

/// Who set a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetBy {
    /// A source's contribution, as sent.
    Source,
    /// PINV itself: `id`, `href`, the `externalIdentifier` crosswalk, resolved
    /// relationship ids.
    Pinv,
}

/// One leaf of the merged document and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaf {
    /// JSON pointer of the leaf in the merged document.
    pub pointer: String,
    /// The leaf's value.
    pub value: Value,
    /// Whether a source or PINV set it.
    pub set_by: SetBy,
    /// The contribution it came from (for PINV's values, the one they are about, if any).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub from: Option<From>,
    /// The rule that chose it (source values only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleUsed>,
    /// Why PINV set it (PINV's values only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A contribution, as named in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct From {
    /// The source.
    pub source: Source,
    /// The event that carried the contribution.
    pub event_id: EventId,
    /// `headers.time` of that event.
    pub time: DateTime<Utc>,
}

/// The rule that decided a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleUsed {
    /// The rule's dotted path; `None` for the default (priority by the default precedence).
    pub path: Option<String>,
    /// Its strategy.
    pub strategy: Strategy,
    /// For `union` rules, how matched elements were combined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_strategy: Option<ElementStrategy>,
    /// The source order that applied: the rule's own precedence, its owners (`owner`),
    /// or the default precedence.
    pub precedence: Vec<Source>,
}

/// One element of a `union` array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Element {
    /// JSON pointer of the element in the merged document.
    pub pointer: String,
    /// The values of the rule's key fields, when the element has them all (else the
    /// element matched others by whole value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<serde_json::Map<String, Value>>,
    /// Every source that sent a matching element, in the merge's order.
    pub sources: Vec<Source>,
}

/// Merges the contributions of product `id` as [`crate::core::merge::merge_document`]
/// does and explains every leaf of the result.
pub fn explain(
    id: &PinvId,
    contributions: &[Contribution],
    links: &Links,
    rules: &Rules,
) -> Explanation {
    let Traced {
        document,
        ranked,
        trace,
    } = merge_traced(id, contributions, links, rules);
    let mut takes: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    takes.reserve(trace.takes.len());
    for (i, take) in trace.takes.iter().enumerate() {
        takes.insert(trace.text(&take.pointer), i);
    }
    let mut walk = Walk {
        rules,
        links,
        ranked: &ranked,
        froms: ranked.iter().map(|c| from(c)).collect(),
        trace: &trace,
        takes,
        rules_used: foldhash::HashMap::default(),
        pointer: String::with_capacity(128),
        leaves: Vec::with_capacity(trace.takes.len() + 8),
    };
    if let Some(object) = document.as_object() {
        for (key, value) in object {
            walk.pointer.clear();
            walk.pointer.push('/');
            push_pointer_token(&mut walk.pointer, key);
            match key.as_str() {
                "id" | "href" => {
                    let pointer = walk.pointer.clone();
                    walk.pinv(pointer, value, None, "the PINV id of the product")
                }
                "externalIdentifier" => walk.crosswalk(value),
                _ => walk.node(value, None),
            }
        }
    }
    let elements = trace
        .elements
        .iter()
        .map(|(pointer, whos)| {
            let pointer = trace.text(pointer);
            let mut sources: Vec<Source> = Vec::with_capacity(whos.len());
            for &who in whos {
                if !sources.contains(&ranked[who].source) {
                    sources.push(ranked[who].source.clone());
                }
            }
            Element {
                key: element_key(&document, pointer, rules),
                pointer: pointer.to_owned(),
                sources,
            }
        })
        .collect();
    let leaves = walk.leaves;
    Explanation {
        document,
        leaves,
        elements,
    }
}

/// Why an earlier revision cannot be explained exactly (said to the client as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotExplainable(pub String);

/// Explains revision `at` of `record`, whose history (every entry, any order) is
/// `history`, under `rules` (the rules the caller runs).
///
/// PINV keeps each source's latest contribution and the patches of the merged document,
/// not every contribution ever sent. So revision `at` is rebuilt from the patches, merged
/// again from the contributions that had arrived by then, and explained only when that
/// merge reproduces it exactly; otherwise the error says why not.
pub fn explain_at(
    record: &ProductRecord,
    history: &[HistoryEntry],
    rules: &Rules,
    at: u64,
) -> Result<Explanation, NotExplainable> {
    let fail = |why: String| {
        Err(NotExplainable(format!(
            "revision {at} cannot be explained: {why}"
        )))
    };
    if at == 0 || at > record.revision {
        return fail(format!(
            "the product has revisions 1 to {}",
            record.revision
        ));
    }
    let mut entries: Vec<&HistoryEntry> = history.iter().collect();
    entries.sort_by_key(|e| e.revision);
    let (document, entry_hash, stored_at) = if at == record.revision {
        (record.merged.clone(), record.rules_hash.as_str(), None)
    } else {
        let mut document = Value::Object(Default::default());
        for expected in 1..=at {
            let Some(entry) = entries.iter().find(|e| e.revision == expected) else {
                return fail(format!("the history lacks revision {expected}"));
            };
            let applied = serde_json::from_value::<json_patch::Patch>(entry.patch.clone())
                .map_err(|e| e.to_string())
                .and_then(|patch| {
                    json_patch::patch(&mut document, &patch).map_err(|e| e.to_string())
                });
            if let Err(why) = applied {
                return fail(format!(
                    "the patch of revision {expected} does not apply: {why}"
                ));
            }
        }
        let entry = entries
            .iter()
            .find(|e| e.revision == at)
            .expect("replayed above");
        (document, entry.rules_hash.as_str(), Some(entry.time))
    };
    if entry_hash != rules.hash {
        return fail(format!(
            "it was merged under rules {entry_hash}, and the server runs rules {}",
            rules.hash
        ));
    }
    let mut contributions = Vec::with_capacity(record.contributions.len());
    for c in &record.contributions {
        match stored_at {
            Some(stored) if c.received_at > stored => {
                let earlier = entries
                    .iter()
                    .find(|e| e.revision <= at && e.event.source == c.source.as_str());
                if let Some(e) = earlier {
                    return fail(format!(
                        "{}'s contribution then (event {}) was replaced by event {}, and PINV keeps only the latest",
                        c.source, e.event.id, c.event_id
                    ));
                }
            }
            _ => contributions.push(c.clone()),
        }
    }
    let explanation = explain(&record.id, &contributions, &record.links, rules);
    if explanation.document != document {
        return fail(
            "the contributions and links PINV keeps no longer merge to it (a source's earlier value or an unresolved relationship id is not kept)".to_owned(),
        );
    }
    Ok(explanation)
}

struct Walk<'a> {
    rules: &'a Rules,
    links: &'a Links,
    ranked: &'a [&'a Contribution],
    /// [`From`] of each ranked contribution.
    froms: Vec<From>,
    trace: &'a Trace,
    /// The index in `trace.takes` of each take, by its pointer.
    takes: foldhash::HashMap<&'a str, usize>,
    /// The rule in force, by rule path.
    rules_used: foldhash::HashMap<&'a str, RuleUsed>,
    /// The pointer of the node being walked.
    pointer: String,
    leaves: Vec<Leaf>,
}

impl Walk<'_> {
    /// Explains `value` at `self.pointer`; `taken` is the take it lies in, once found.
    fn node(&mut self, value: &Value, taken: Option<usize>) {
        let taken = taken.or_else(|| self.takes.get(self.pointer.as_str()).copied());
        let len = self.pointer.len();
        match value {
            Value::Object(o) if !o.is_empty() => {
                for (k, v) in o {
                    self.pointer.push('/');
                    push_pointer_token(&mut self.pointer, k);
                    self.node(v, taken);
                    self.pointer.truncate(len);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    let _ = write!(self.pointer, "/{i}");
                    self.node(v, taken);
                    self.pointer.truncate(len);
                }
            }
            _ => {
                if let Some(take) = taken {
                    self.leaf(value, take);
                }
            }
        }
    }

    fn leaf(&mut self, value: &Value, take: usize) {
        let trace = self.trace;
        let Take { rule_path, who, .. } = &trace.takes[take];
        let contribution = self.ranked[*who];
        let from = Some(self.froms[*who].clone());
        let pointer = self.pointer.clone();
        if let Some(raw) = self.resolved_relationship(&pointer, value, &contribution.source) {
            let reason = format!(
                "relationship id '{raw}' sent by {} resolved to this PINV product",
                contribution.source
            );
            self.leaves.push(Leaf {
                pointer,
                value: value.clone(),
                set_by: SetBy::Pinv,
                from,
                rule: None,
                reason: Some(reason),
            });
            return;
        }
        let rules = self.rules;
        let rule = self
            .rules_used
            .entry(trace.text(rule_path))
            .or_insert_with_key(|path| rule_used(rules, path))
            .clone();
        self.leaves.push(Leaf {
            pointer,
            value: value.clone(),
            set_by: SetBy::Source,
            from,
            rule: Some(rule),
            reason: None,
        });
    }

    /// The raw id a source sent, when `value` at `pointer` is the PINV id (or href) that
    /// PINV put in its place.
    fn resolved_relationship(
        &self,
        pointer: &str,
        value: &Value,
        source: &Source,
    ) -> Option<String> {
        let rest = pointer.strip_prefix("/productRelationship/")?;
        let (index, field) = rest.split_once('/')?;
        if index.parse::<usize>().is_err() || !matches!(field, "id" | "href") {
            return None;
        }
        let value = value.as_str()?;
        let resolved = self.links.0.get(source)?;
        resolved
            .iter()
            .find(|(_, target)| {
                if field == "id" {
                    target.to_string() == value
                } else {
                    target.href() == value
                }
            })
            .map(|(raw, _)| raw.clone())
    }

    fn pinv(&mut self, pointer: String, value: &Value, from: Option<From>, reason: &str) {
        self.leaves.push(Leaf {
            pointer,
            value: value.clone(),
            set_by: SetBy::Pinv,
            from,
            rule: None,
            reason: Some(reason.to_owned()),
        });
    }

    /// The crosswalk (at `self.pointer`): one entry per contribution's local id.
    fn crosswalk(&mut self, value: &Value) {
        let len = self.pointer.len();
        for (i, entry) in value.as_array().into_iter().flatten().enumerate() {
            let owner = entry.get("owner").and_then(Value::as_str).unwrap_or("");
            let about = self
                .ranked
                .iter()
                .rposition(|c| c.source.as_str() == owner)
                .map(|who| self.froms[who].clone());
            let reason = format!("crosswalk entry for the local id {owner} sent");
            for (k, v) in entry.as_object().into_iter().flatten() {
                let _ = write!(self.pointer, "/{i}/");
                push_pointer_token(&mut self.pointer, k);
                let pointer = self.pointer.clone();
                self.pointer.truncate(len);
                self.pinv(pointer, v, about.clone(), &reason);
            }
        }
    }
}

fn from(c: &Contribution) -> From {
    From {
        source: c.source.clone(),
        event_id: c.event_id.clone(),
        time: c.time,
    }
}

/// The rule in force at `rule_path`: the nearest rule at or above it (a rule above a
/// taken value can only be a `union` whose elements were merged), else the default.
fn rule_used(rules: &Rules, rule_path: &str) -> RuleUsed {
    let mut path = rule_path;
    loop {
        if let Some(rule) = rules.field(path) {
            let precedence = match rule.strategy {
                Strategy::Owner => rule.owners.clone(),
                _ => rule
                    .precedence
                    .clone()
                    .unwrap_or_else(|| rules.precedence.clone()),
            };
            return RuleUsed {
                path: Some(rule.path.clone()),
                strategy: rule.strategy,
                element_strategy: (rule.strategy == Strategy::Union)
                    .then_some(rule.element_strategy),
                precedence,
            };
        }
        match path.rsplit_once('.') {
            Some((parent, _)) => path = parent,
            None => break,
        }
    }
    RuleUsed {
        path: None,
        strategy: Strategy::Priority,
        element_strategy: None,
        precedence: rules.precedence.clone(),
    }
}

/// The key values of the union element at `pointer`, by the rule of its array.
fn element_key(
    document: &Value,
    pointer: &str,
    rules: &Rules,
) -> Option<serde_json::Map<String, Value>> {
    let element = document.pointer(pointer)?.as_object()?;
    let array = &pointer[..pointer.rfind('/')?];
    let rule_path: Vec<String> = array
        .split('/')
        .skip(1)
        .filter(|t| t.parse::<usize>().is_err())
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let rule = rules.field(&rule_path.join("."))?;
    rule.key
        .iter()
        .map(|k| element.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::fixtures::{contribution, pid, rule, src};
    use crate::core::rules::FieldRule;

    fn rules(fields: Vec<FieldRule>) -> Rules {
        Rules {
            precedence: vec![src("a"), src("b")],
            fields: fields.into_iter().map(|r| (r.path.clone(), r)).collect(),
            identity_types: Vec::new(),
            phone_number_types: Vec::new(),
            released_when_terminated: Vec::new(),
            role_globs: Default::default(),
            role_matchers: Vec::new(),
            accepted_types: Vec::new(),
            hash: "h".to_owned(),
        }
    }

    fn leaf<'e>(e: &'e Explanation, pointer: &str) -> &'e Leaf {
        let found: Vec<&Leaf> = e.leaves.iter().filter(|l| l.pointer == pointer).collect();
        assert_eq!(found.len(), 1, "{pointer} in {:#?}", e.leaves);
        found[0]
    }

    /// (source, rule path, strategy) of the leaf at `pointer`.
    fn who(e: &Explanation, pointer: &str) -> (String, Option<String>, Strategy) {
        let l = leaf(e, pointer);
        assert_eq!(l.set_by, SetBy::Source);
        let rule = l.rule.clone().unwrap();
        (
            l.from.clone().unwrap().source.to_string(),
            rule.path,
            rule.strategy,
        )
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn each_scalar_strategy_names_its_winner_and_rule() {
        let r = rules(vec![
            rule("newest", Strategy::Recency),
            rule("first", Strategy::Oldest),
            FieldRule {
                owners: vec![src("b")],
                ..rule("owned", Strategy::Owner)
            },
            FieldRule {
                precedence: Some(vec![src("b"), src("a")]),
                ..rule("reversed", Strategy::Priority)
            },
        ]);
        let cs = [
            contribution(
                "a",
                1,
                json!({"plain": 1, "newest": "a", "first": "a", "owned": "a", "reversed": "a"}),
            ),
            contribution(
                "b",
                2,
                json!({"plain": 2, "newest": "b", "first": "b", "owned": "b", "reversed": "b", "only": ""}),
            ),
        ];
        let e = explain(&pid(1), &cs, &Links::default(), &r);
        assert_eq!(who(&e, "/plain"), (s("a"), None, Strategy::Priority));
        assert_eq!(
            who(&e, "/newest"),
            (s("b"), Some(s("newest")), Strategy::Recency)
        );
        assert_eq!(
            who(&e, "/first"),
            (s("a"), Some(s("first")), Strategy::Oldest)
        );
        assert_eq!(
            who(&e, "/owned"),
            (s("b"), Some(s("owned")), Strategy::Owner)
        );
        assert_eq!(
            leaf(&e, "/owned").rule.as_ref().unwrap().precedence,
            vec![src("b")]
        );
        assert_eq!(
            who(&e, "/reversed"),
            (s("b"), Some(s("reversed")), Strategy::Priority)
        );
        assert_eq!(
            leaf(&e, "/reversed").rule.as_ref().unwrap().precedence,
            vec![src("b"), src("a")]
        );
        // An empty value only one source sent still stands, and says whose it is.
        assert_eq!(who(&e, "/only"), (s("b"), None, Strategy::Priority));
        let plain = leaf(&e, "/plain").from.clone().unwrap();
        assert_eq!(plain.event_id, cs[0].event_id);
        assert_eq!(plain.time, cs[0].time);
    }

    #[test]
    fn union_elements_name_their_sources_and_leaves_follow_the_element_strategy() {
        let with = |element_strategy| {
            let r = rules(vec![FieldRule {
                key: vec![s("role")],
                element_strategy,
                ..rule("p", Strategy::Union)
            }]);
            let cs = [
                contribution(
                    "a",
                    1,
                    json!({"p": [{"role": "R", "x": "a"}, {"role": "A"}]}),
                ),
                contribution(
                    "b",
                    5,
                    json!({"p": [{"role": "R", "y": "b"}, {"role": "B"}]}),
                ),
            ];
            explain(&pid(1), &cs, &Links::default(), &r)
        };
        let merged = with(ElementStrategy::Merge);
        assert_eq!(
            merged.document["p"][0],
            json!({"role": "R", "x": "a", "y": "b"})
        );
        assert_eq!(
            who(&merged, "/p/0/role"),
            (s("a"), Some(s("p")), Strategy::Union)
        );
        assert_eq!(who(&merged, "/p/0/x").0, "a");
        assert_eq!(who(&merged, "/p/0/y").0, "b");
        assert_eq!(who(&merged, "/p/1/role").0, "a");
        assert_eq!(who(&merged, "/p/2/role").0, "b");
        assert_eq!(
            leaf(&merged, "/p/0/y")
                .rule
                .as_ref()
                .unwrap()
                .element_strategy,
            Some(ElementStrategy::Merge)
        );
        assert_eq!(
            merged.elements,
            vec![
                Element {
                    pointer: s("/p/0"),
                    key: Some(json!({"role": "R"}).as_object().unwrap().clone()),
                    sources: vec![src("a"), src("b")],
                },
                Element {
                    pointer: s("/p/1"),
                    key: Some(json!({"role": "A"}).as_object().unwrap().clone()),
                    sources: vec![src("a")],
                },
                Element {
                    pointer: s("/p/2"),
                    key: Some(json!({"role": "B"}).as_object().unwrap().clone()),
                    sources: vec![src("b")],
                },
            ]
        );
        let recency = with(ElementStrategy::Recency);
        assert_eq!(who(&recency, "/p/0/role").0, "b");
        assert_eq!(who(&recency, "/p/0/y").0, "b");
        assert_eq!(recency.elements[0].sources, vec![src("a"), src("b")]);
        let oldest = with(ElementStrategy::Oldest);
        assert_eq!(who(&oldest, "/p/0/x").0, "a");
        let priority = with(ElementStrategy::Priority);
        assert_eq!(who(&priority, "/p/0/x").0, "a");
        assert_eq!(
            leaf(&priority, "/p/0/x")
                .rule
                .as_ref()
                .unwrap()
                .element_strategy,
            Some(ElementStrategy::Priority)
        );
    }

    #[test]
    fn nested_rules_explain_each_key_of_a_merged_object() {
        let r = rules(vec![rule("spec.name", Strategy::Recency)]);
        let cs = [
            contribution("a", 1, json!({"spec": {"id": "A", "name": "old"}})),
            contribution(
                "b",
                2,
                json!({"spec": {"id": "B", "name": "new", "version": "2"}}),
            ),
        ];
        let e = explain(&pid(1), &cs, &Links::default(), &r);
        assert_eq!(who(&e, "/spec/id"), (s("a"), None, Strategy::Priority));
        assert_eq!(
            who(&e, "/spec/name"),
            (s("b"), Some(s("spec.name")), Strategy::Recency)
        );
        assert_eq!(who(&e, "/spec/version").0, "b");
    }

    #[test]
    fn pinv_values_say_so_and_rewritten_relationship_ids_name_the_raw_id() {
        let r = rules(vec![FieldRule {
            key: vec![s("relationshipType"), s("id")],
            ..rule("productRelationship", Strategy::Union)
        }]);
        let mut links = Links::default();
        links.insert(&src("b"), "b-port", pid(7));
        let cs = [
            contribution(
                "a",
                1,
                json!({"id": "a-1", "productRelationship": [{"relationshipType": "bundles", "id": "raw"}]}),
            ),
            contribution(
                "b",
                2,
                json!({"id": "b-1", "productRelationship": [{"relationshipType": "bundles", "id": "b-port"}]}),
            ),
        ];
        let e = explain(&pid(1), &cs, &links, &r);
        assert_eq!(leaf(&e, "/id").set_by, SetBy::Pinv);
        assert_eq!(leaf(&e, "/href").set_by, SetBy::Pinv);
        assert_eq!(
            e.document["productRelationship"][1]["id"],
            json!(pid(7).to_string())
        );
        for field in ["id", "href"] {
            let l = leaf(&e, &format!("/productRelationship/1/{field}"));
            assert_eq!(l.set_by, SetBy::Pinv);
            assert_eq!(l.from.as_ref().unwrap().source, src("b"));
            assert!(l.reason.as_ref().unwrap().contains("'b-port'"), "{l:?}");
        }
        // The unresolved id is the source's own.
        assert_eq!(who(&e, "/productRelationship/0/id").0, "a");
        assert_eq!(who(&e, "/productRelationship/1/relationshipType").0, "b");
        let crosswalk = leaf(&e, "/externalIdentifier/1/id");
        assert_eq!(
            (crosswalk.set_by, &crosswalk.value),
            (SetBy::Pinv, &json!("b-1"))
        );
        assert_eq!(crosswalk.from.as_ref().unwrap().source, src("b"));
    }

    #[test]
    fn the_explained_document_is_the_merged_document() {
        let r = rules(vec![rule("n", Strategy::Recency)]);
        let cs = [
            contribution("a", 1, json!({"id": "x", "n": 1, "o": {"k": [1, {}]}})),
            contribution("b", 2, json!({"n": 2})),
        ];
        let e = explain(&pid(1), &cs, &Links::default(), &r);
        assert_eq!(
            e.document,
            crate::core::merge::merge_document(&pid(1), &cs, &Links::default(), &r)
        );
        let pointers: Vec<&str> = e.leaves.iter().map(|l| l.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/id",
                "/href",
                "/externalIdentifier/0/id",
                "/externalIdentifier/0/owner",
                "/externalIdentifier/0/externalIdentifierType",
                "/n",
                "/o/k/0",
                "/o/k/1"
            ]
        );
    }

    fn record_after(steps: &[(&Contribution, &Rules)]) -> (ProductRecord, Vec<HistoryEntry>) {
        // Each step stores one contribution (replacing the source's), like POSTs do.
        let mut contributions: Vec<Contribution> = Vec::new();
        let mut history = Vec::new();
        let mut merged: Option<Value> = None;
        let mut hash = String::new();
        for (revision, (c, r)) in steps.iter().enumerate() {
            contributions.retain(|k| k.source != c.source);
            contributions.push((*c).clone());
            let doc =
                crate::core::merge::merge_document(&pid(1), &contributions, &Links::default(), r);
            history.push(HistoryEntry {
                product: pid(1),
                revision: revision as u64 + 1,
                time: c.received_at,
                event: crate::core::record::EventRef {
                    source: c.source.to_string(),
                    id: c.event_id.to_string(),
                },
                rules_hash: r.hash.clone(),
                patch: crate::core::record::patch_between(merged.as_ref(), &doc),
                deleted: false,
            });
            merged = Some(doc);
            hash = r.hash.clone();
        }
        let record = ProductRecord {
            id: pid(1),
            revision: steps.len() as u64,
            contributions,
            links: Links::default(),
            merged: merged.unwrap(),
            match_keys: Vec::new(),
            package_root: None,
            rules_hash: hash,
        };
        (record, history)
    }

    #[test]
    fn an_earlier_revision_is_explained_when_its_merge_can_be_reproduced() {
        let r = rules(vec![]);
        let a = contribution("a", 3, json!({"name": "from a"}));
        let b = contribution("b", 2, json!({"name": "from b", "status": "active"}));
        let (record, history) = record_after(&[(&b, &r), (&a, &r)]);
        let first = explain_at(&record, &history, &r, 1).unwrap();
        assert_eq!(first.document["name"], json!("from b"));
        assert_eq!(who(&first, "/name").0, "b");
        let now = explain_at(&record, &history, &r, 2).unwrap();
        assert_eq!(who(&now, "/name").0, "a");
        assert_eq!(now.document, record.merged);
        for bad in [0, 3] {
            let e = explain_at(&record, &history, &r, bad).unwrap_err();
            assert!(e.0.contains("revisions 1 to 2"), "{e}");
        }
    }

    #[test]
    fn a_replaced_contribution_or_other_rules_cannot_be_explained() {
        let r = rules(vec![]);
        let a1 = contribution("a", 1, json!({"name": "one"}));
        let mut a2 = contribution("a", 2, json!({"name": "two"}));
        a2.event_id = EventId::parse("a-ev2").unwrap();
        let (record, history) = record_after(&[(&a1, &r), (&a2, &r)]);
        let e = explain_at(&record, &history, &r, 1).unwrap_err();
        assert!(e.0.contains("replaced by event a-ev2"), "{e}");
        let other = Rules {
            hash: "other".to_owned(),
            ..rules(vec![])
        };
        let e = explain_at(&record, &history, &other, 2).unwrap_err();
        assert!(e.0.contains("merged under rules h"), "{e}");
    }
}
