//! The merge: contributions + rules -> one merged TMF637 document.
//!
//! The merge walks the contributions' values by reference and clones only what ends
//! up in the output. Contributions are ranked once (by the default precedence); a field
//! with its own precedence re-sorts just the few candidates it has. Rule paths are looked
//! up in a small tree of the rule paths built once per merge, so the hot loop builds no
//! path strings, and a field without any rule at or below its path is taken whole
//! instead of walked.
//!
//! The merged document's keys come in TMF637 order ([`crate::core::order`]): every object
//! is built in that order as the merge takes or assembles it, so no map is built twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::core::order::{map_in_order, KeyOrder, ObjectNode, Place};
use crate::core::package::Links;
use crate::core::record::Contribution;
use crate::core::rules::{ElementStrategy, FieldRule, Rules, Strategy};
use crate::core::{PinvId, Source};

/// Which source won what.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Provenance {
    /// Top-level field -> the source whose value was taken (for `union` fields, every
    /// source that contributed an element, in order).
    pub fields: BTreeMap<String, Vec<Source>>,
}

/// A merged document and where its parts came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The merged TMF637 document, with service-owned fields set.
    pub document: Value,
    /// Which source won each top-level field.
    pub provenance: Provenance,
}

/// Top-level fields that PINV sets itself; the sources' values for them never merge.
const ID: &str = "id";
const HREF: &str = "href";
const EXTERNAL_IDENTIFIER: &str = "externalIdentifier";
const PRODUCT_RELATIONSHIP: &str = "productRelationship";

/// Merges the contributions of product `id` under `rules`.
///
/// Relationship ids in each contribution are first resolved through `links`
/// (resolved ones become PINV ids with `href`); then every field is chosen by its rule;
/// then the service-owned fields are set: `id`, `href`, and one crosswalk
/// `externalIdentifier` entry per contribution. The result depends only on the inputs,
/// never on the order of `contributions`.
pub fn merge(id: &PinvId, contributions: &[Contribution], links: &Links, rules: &Rules) -> Merged {
    merge_with(id, contributions, links, rules, true)
}

/// [`merge`] without the provenance: the merged document alone. The write paths (POST,
/// re-merge) store only the document, and building the provenance map costs a few dozen
/// small allocations per merge.
pub fn merge_document(
    id: &PinvId,
    contributions: &[Contribution],
    links: &Links,
    rules: &Rules,
) -> Value {
    merge_with(id, contributions, links, rules, false).document
}

/// [`merge_document`] with only the top-level keys in TMF637 order: the objects below keep
/// the order of the contributions they came from. Equal to [`merge_document`] as a value;
/// [`crate::core::order::Ordered`] serialises it as [`merge_document`]'s would be. Putting
/// the nested keys in order rebuilds a few dozen small maps (about 40% of a merge): a
/// re-merge that only compares with the stored text need not do it.
pub fn merge_document_nested_unordered(
    id: &PinvId,
    contributions: &[Contribution],
    links: &Links,
    rules: &Rules,
) -> Value {
    merge_inner(id, contributions, links, rules, false, false, None)
        .0
        .document
}

/// A merge with every value it took recorded where it landed: what
/// [`crate::core::provenance`] explains. `ranked` is the contributions in the merge's
/// order; `who` in the trace is an index into it.
pub(crate) struct Traced<'c> {
    /// The merged document, as [`merge_document`] makes it.
    pub document: Value,
    /// The contributions in the default precedence order.
    pub ranked: Vec<&'c Contribution>,
    /// What the merge took, and where.
    pub trace: Trace<'c>,
}

/// The merge's record of its choices, kept only when explaining (see [`Traced`]).
///
/// A tree of the output nodes the merge entered (object keys and array elements), each
/// with the rule in force there and, when the merge took the value there whole, the
/// contribution it came from. No pointer or rule path is built: an explanation finds a
/// document node's trace node from its parent's and its key.
pub(crate) struct Trace<'r> {
    /// Every node entered, in the merge's order; node 0 is the document itself.
    pub nodes: Vec<TraceNode<'r>>,
    /// The node being built.
    current: u32,
    /// The object keys of the nodes, back to back.
    pub text: String,
    /// Every element of every `union` array, in the merge's order.
    pub elements: Vec<TracedElement<'r>>,
    /// The contributors of the elements (see [`TracedElement::whos`]), back to back.
    pub whos: Vec<usize>,
}

impl Default for Trace<'_> {
    /// An empty trace, sized for a seed-sized product (about 80 nodes, 30 union elements,
    /// 600 bytes of keys): growing each buffer from empty cost a few dozen reallocations.
    fn default() -> Self {
        let mut nodes = Vec::with_capacity(128);
        nodes.push(TraceNode {
            parent: Trace::NONE,
            token: Token::Index(0),
            rule: None,
            take: Trace::NONE,
            element: Trace::NONE,
        });
        Self {
            nodes,
            current: 0,
            text: String::with_capacity(1024),
            elements: Vec::with_capacity(32),
            whos: Vec::with_capacity(64),
        }
    }
}

/// How a trace node hangs below its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// An object key: a span of [`Trace::text`].
    Key(u32, u32),
    /// An array index.
    Index(u32),
}

/// One output node the merge entered.
pub(crate) struct TraceNode<'r> {
    /// Its parent (`Trace::NONE` for the document).
    pub parent: u32,
    pub token: Token,
    /// The rule in force there: the nearest at or above it (a rule above a taken value
    /// can only be a `union` whose elements were merged); `None` for the default.
    pub rule: Option<&'r FieldRule>,
    /// When the merge took the value here whole: the ranked contribution it came from
    /// (else `Trace::NONE`). Taken values are disjoint and cover every leaf the merge
    /// chose.
    pub take: u32,
    /// When it is an element of a `union` array: its index in [`Trace::elements`].
    pub element: u32,
}

/// One element of a `union` array.
pub(crate) struct TracedElement<'r> {
    /// Its trace node.
    pub node: u32,
    /// The `union` rule of its array.
    pub rule: Option<&'r FieldRule>,
    /// Every ranked contribution that sent a matching element, in order: a range of
    /// [`Trace::whos`].
    pub whos: std::ops::Range<usize>,
}

impl<'r> Trace<'r> {
    /// "None" in the `u32` fields.
    pub const NONE: u32 = u32::MAX;

    /// The text of `token`'s key (`None` for an index).
    pub fn key(&self, token: Token) -> Option<&str> {
        match token {
            Token::Key(start, end) => Some(&self.text[start as usize..end as usize]),
            Token::Index(_) => None,
        }
    }

    fn enter(&mut self, token: Token, rule: Option<&'r FieldRule>) {
        let parent = self.current;
        let rule = rule.or(self.nodes[parent as usize].rule);
        self.current = self.nodes.len() as u32;
        self.nodes.push(TraceNode {
            parent,
            token,
            rule,
            take: Self::NONE,
            element: Self::NONE,
        });
    }

    /// Descends into object key `key`, whose rule (if any) is `rule`.
    fn enter_key(&mut self, key: &str, rule: Option<&'r FieldRule>) {
        let start = self.text.len() as u32;
        self.text.push_str(key);
        self.enter(Token::Key(start, self.text.len() as u32), rule);
    }

    /// Descends into array element `index` (arrays are transparent to rules).
    fn enter_index(&mut self, index: usize) {
        self.enter(Token::Index(index as u32), None);
    }

    fn leave(&mut self) {
        self.current = self.nodes[self.current as usize].parent;
    }

    fn take(&mut self, who: usize) {
        self.nodes[self.current as usize].take = who as u32;
    }
}

/// [`merge_document`], recording each choice (slower; for explaining, not for writing).
pub(crate) fn merge_traced<'c>(
    id: &PinvId,
    contributions: &'c [Contribution],
    links: &Links,
    rules: &'c Rules,
) -> Traced<'c> {
    let mut trace = Trace::default();
    let (merged, ranked) = merge_inner(
        id,
        contributions,
        links,
        rules,
        false,
        true,
        Some(&mut trace),
    );
    Traced {
        document: merged.document,
        ranked,
        trace,
    }
}

fn merge_with(
    id: &PinvId,
    contributions: &[Contribution],
    links: &Links,
    rules: &Rules,
    with_provenance: bool,
) -> Merged {
    merge_inner(id, contributions, links, rules, with_provenance, true, None).0
}

fn merge_inner<'c, 'r>(
    id: &PinvId,
    contributions: &'c [Contribution],
    links: &Links,
    rules: &'r Rules,
    with_provenance: bool,
    order_nested: bool,
    trace: Option<&mut Trace<'r>>,
) -> (Merged, Vec<&'c Contribution>) {
    // Rank once by the default precedence; everything below refers to a contribution by
    // its index in this order, so "in order" is simply "by index". Two contributions of
    // the same source (callers keep one per source) are ordered by time and event id so
    // that the result still does not depend on the input order.
    let mut ranked: Vec<&'c Contribution> = contributions.iter().collect();
    ranked.sort_by(|a, b| {
        Rules::rank(&rules.precedence, &a.source)
            .cmp(&Rules::rank(&rules.precedence, &b.source))
            .then_with(|| a.time.cmp(&b.time))
            .then_with(|| a.event_id.cmp(&b.event_id))
    });

    // Only the productRelationship arrays that actually change are cloned.
    let rewritten: Vec<Option<Value>> = ranked
        .iter()
        .map(|c| rewrite_relationships(&c.source, &c.value, links))
        .collect();

    let inputs: Vec<Input<'_>> = ranked
        .iter()
        .zip(&rewritten)
        .map(|(c, rel)| Input {
            source: &c.source,
            time: c.time,
            fields: c.value.as_object(),
            relationships: rel.as_ref(),
        })
        .collect();

    let tree = RuleTree::new(rules);
    let order = KeyOrder::product();
    let mut merger = Merger {
        tree: &tree,
        inputs: &inputs,
        used: Vec::with_capacity(inputs.len()),
        trace,
        order: order_nested.then_some(order),
        here: None,
    };

    // Every top-level (key, value) of every contribution, sorted by key and then rank:
    // one pass instead of a map lookup per key and contribution.
    let total = inputs.iter().filter_map(|i| i.fields).map(Map::len).sum();
    let mut entries: Vec<(&str, Cand<'_>)> = Vec::with_capacity(total);
    for (who, input) in inputs.iter().enumerate() {
        for (k, v) in input.fields.into_iter().flatten() {
            let value = match (k.as_str(), input.relationships) {
                (ID | HREF | EXTERNAL_IDENTIFIER, _) => continue,
                (PRODUCT_RELATIONSHIP, Some(rewritten)) => rewritten,
                _ => v,
            };
            entries.push((k.as_str(), Cand { who, value }));
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.1.who.cmp(&b.1.who)));
    let mut flat: Vec<Cand<'_>> = entries.iter().map(|e| e.1).collect();

    // Built with each key's place and inserted in order once sorted (bson turns
    // serde_json's `preserve_order` on, so the insertion order is the order served).
    let mut fields: Vec<(Place, String, Value)> = Vec::with_capacity(entries.len() + 3);
    let mut provenance = Provenance::default();
    let mut start = 0;
    while start < entries.len() {
        let key = entries[start].0;
        let end = start + entries[start..].iter().take_while(|e| e.0 == key).count();
        let node = tree.child(RuleTree::ROOT, key);
        merger.used.clear();
        merger.enter(key, node);
        // The document's own keys are always put in order; what is below them only when
        // the merger orders (`here`).
        let place = order.place(order.root(), key);
        merger.here = merger.order.and(place.child);
        let merged = merger.merge_field(node, &mut flat[start..end]);
        merger.leave();
        if let Some(value) = merged {
            fields.push((place, key.to_owned(), value));
            if with_provenance {
                let sources = merger.contributors(tree.rule(node));
                provenance.fields.insert(key.to_owned(), sources);
            }
        }
        start = end;
    }

    if let Some((mut value, sources)) = external_identifiers(&inputs) {
        let place = order.place(order.root(), EXTERNAL_IDENTIFIER);
        // Made here, not by the merger, so not yet in order.
        if let (true, Some(child)) = (order_nested, place.child) {
            order.order(child, &mut value);
        }
        fields.push((place, EXTERNAL_IDENTIFIER.to_owned(), value));
        if with_provenance {
            provenance
                .fields
                .insert(EXTERNAL_IDENTIFIER.to_owned(), sources);
        }
    }
    for (key, value) in [(ID, id.to_string()), (HREF, id.href())] {
        fields.push((
            order.place(order.root(), key),
            key.to_owned(),
            Value::String(value),
        ));
    }
    // The order a TMF637 reader expects (see `order`): a function of the keys alone, so
    // the bytes stay the same whatever the order of the contributions. The merger built
    // the objects below in it already (`Merger::order`).
    let document = map_in_order(fields);

    (
        Merged {
            document: Value::Object(document),
            provenance,
        },
        ranked,
    )
}

/// Rewrites the `productRelationship` ids of one contribution that resolve in `links`.
/// `None` when nothing resolves, so the caller keeps borrowing the original.
fn rewrite_relationships(source: &Source, value: &Value, links: &Links) -> Option<Value> {
    let resolve = |element: &Value| {
        element
            .get(ID)
            .and_then(Value::as_str)
            .and_then(|raw| links.resolve(source, raw))
    };
    let array = value.get(PRODUCT_RELATIONSHIP)?.as_array()?;
    if !array.iter().any(|e| resolve(e).is_some()) {
        return None;
    }
    let mut array = array.clone();
    for element in &mut array {
        if let Some(target) = resolve(element) {
            if let Some(object) = element.as_object_mut() {
                object.insert(ID.to_owned(), Value::String(target.to_string()));
                object.insert(HREF.to_owned(), Value::String(target.href()));
            }
        }
    }
    Some(Value::Array(array))
}

/// The service-owned `externalIdentifier` array: one crosswalk entry per contribution with
/// a local id, sorted by source. What contributions carry in `externalIdentifier` is ignored.
fn external_identifiers(inputs: &[Input<'_>]) -> Option<(Value, Vec<Source>)> {
    // Only the crosswalk PINV builds: entries a contribution carries are ignored, since
    // a source that could write them could claim another source's ids (contributions
    // stored before POSTs refused the field may still hold some).
    let mut contributors: Vec<usize> = Vec::new();
    let mut out: Vec<Value> = Vec::new();

    let mut crosswalk: Vec<(usize, &str)> = inputs
        .iter()
        .enumerate()
        .filter_map(|(who, input)| {
            let local = input.fields?.get(ID)?.as_str()?;
            (!local.is_empty()).then_some((who, local))
        })
        .collect();
    crosswalk.sort_by(|a, b| {
        inputs[a.0]
            .source
            .cmp(inputs[b.0].source)
            .then_with(|| a.1.cmp(b.1))
    });
    for (who, local) in crosswalk {
        contributors.push(who);
        // Keys in sorted order, as without `preserve_order`.
        let mut entry = Map::new();
        entry.insert(
            "externalIdentifierType".to_owned(),
            Value::String(ID.to_owned()),
        );
        entry.insert(ID.to_owned(), Value::String(local.to_owned()));
        entry.insert(
            "owner".to_owned(),
            Value::String(inputs[who].source.as_str().to_owned()),
        );
        out.push(Value::Object(entry));
    }

    if out.is_empty() {
        return None;
    }
    contributors.sort_unstable();
    contributors.dedup();
    let sources = contributors
        .into_iter()
        .map(|who| inputs[who].source.clone())
        .collect();
    Some((Value::Array(out), sources))
}

/// One contribution as the merge sees it.
struct Input<'a> {
    source: &'a Source,
    time: DateTime<Utc>,
    /// The contribution's value, when it is an object (anything else contributes no field).
    fields: Option<&'a Map<String, Value>>,
    /// The rewritten `productRelationship` array, when any id in it resolved.
    relationships: Option<&'a Value>,
}

/// A value offered for a field by one contribution (index into the ranked inputs).
#[derive(Debug, Clone, Copy)]
struct Cand<'a> {
    who: usize,
    value: &'a Value,
}

/// Elements of a `union` array that match one another, as a chain through
/// [`Groups::next`] (most groups have one element, so no per-group allocation).
struct Group {
    /// Whether the elements match by key fields (else by whole value).
    keyed: bool,
    /// Index of the first and last element, in order of appearance.
    first: usize,
    last: usize,
    /// How many elements matched.
    len: usize,
}

/// `elements` sorted into groups of matching elements, groups in order of first appearance.
struct Groups<'a> {
    elements: Vec<Cand<'a>>,
    /// For each element, the next element of its group (`usize::MAX` ends the chain).
    next: Vec<usize>,
    groups: Vec<Group>,
}

impl<'a> Groups<'a> {
    /// Groups `elements` by the values of the `key` fields (compared exactly). Elements
    /// that are not objects or lack a key field match only equal whole values.
    fn new<K: AsRef<str>>(key: &[K], elements: Vec<Cand<'a>>) -> Self {
        let k = key.len();
        // Element i's key values are keys[i * k..(i + 1) * k], extracted once so that
        // matching compares slices instead of looking fields up again.
        let mut keys: Vec<&'a Value> = Vec::with_capacity(elements.len() * k);
        let mut keyed: Vec<bool> = Vec::with_capacity(elements.len());
        for e in &elements {
            let start = keys.len();
            let ok = k > 0
                && e.value.as_object().is_some_and(|o| {
                    key.iter()
                        .all(|f| small_get(o, f.as_ref()).map(|v| keys.push(v)).is_some())
                });
            if !ok {
                keys.truncate(start);
                keys.extend(std::iter::repeat_n(&Value::Null, k));
            }
            keyed.push(ok);
        }

        let mut next = vec![usize::MAX; elements.len()];
        let mut groups: Vec<Group> = Vec::with_capacity(elements.len());
        // Hashed, not searched: a linear search of the groups per element made large arrays
        // quadratic (30,000 elements took seconds).
        // foldhash, not std's SipHash: hashing the element values was a tenth of the merge.
        let mut by_key: foldhash::HashMap<&[&'a Value], usize> = Default::default();
        let mut by_value: foldhash::HashMap<&'a Value, usize> = Default::default();
        for (i, e) in elements.iter().enumerate() {
            let fresh = groups.len();
            let group = if keyed[i] {
                *by_key.entry(&keys[i * k..(i + 1) * k]).or_insert(fresh)
            } else {
                *by_value.entry(e.value).or_insert(fresh)
            };
            if group == fresh {
                groups.push(Group {
                    keyed: keyed[i],
                    first: i,
                    last: i,
                    len: 1,
                });
            } else {
                let g = &mut groups[group];
                next[g.last] = i;
                g.last = i;
                g.len += 1;
            }
        }
        Self {
            elements,
            next,
            groups,
        }
    }

    /// The elements of `group`, in order of appearance.
    fn members(&self, group: &Group) -> Vec<Cand<'a>> {
        let mut out = Vec::with_capacity(group.len);
        let mut i = group.first;
        while i != usize::MAX {
            out.push(self.elements[i]);
            i = self.next[i];
        }
        out
    }
}

/// `object[key]`. Array elements are small objects, where comparing a few keys is
/// cheaper than hashing one (serde_json's map is an `IndexMap` here, see `merge`).
fn small_get<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    if object.len() <= 8 {
        object.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        object.get(key)
    }
}

/// `null`, `""`, `[]` and `{}`: absent unless a rule keeps them.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The rule paths as a tree (`relatedParty` -> `partyOrPartyRole` -> `contactMedium`),
/// so that a walk finds the rule of a key, and whether any rule lies below it, by
/// comparing one short key per level. Stored flat (one allocation): rule sets are small.
struct RuleTree<'r> {
    nodes: Vec<RuleNode<'r>>,
}

struct RuleNode<'r> {
    parent: usize,
    key: &'r str,
    rule: Option<&'r FieldRule>,
    has_children: bool,
}

impl<'r> RuleTree<'r> {
    /// The document itself.
    const ROOT: usize = 0;

    fn new(rules: &'r Rules) -> Self {
        let mut tree = Self {
            nodes: Vec::with_capacity(rules.fields.len() * 2 + 1),
        };
        tree.nodes.push(RuleNode {
            parent: usize::MAX,
            key: "",
            rule: None,
            has_children: false,
        });
        for rule in rules.fields.values() {
            let mut node = Self::ROOT;
            for key in rule.path.split('.') {
                node = match tree.child(node, key) {
                    Some(child) => child,
                    None => {
                        tree.nodes[node].has_children = true;
                        tree.nodes.push(RuleNode {
                            parent: node,
                            key,
                            rule: None,
                            has_children: false,
                        });
                        tree.nodes.len() - 1
                    }
                };
            }
            tree.nodes[node].rule = Some(rule);
        }
        tree
    }

    /// The node of `key` below `node`; `None` when no rule is at or below it.
    fn child(&self, node: usize, key: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.parent == node && n.key == key)
    }

    fn rule(&self, node: Option<usize>) -> Option<&'r FieldRule> {
        node.and_then(|n| self.nodes[n].rule)
    }

    fn has_rules_below(&self, node: Option<usize>) -> bool {
        node.is_some_and(|n| self.nodes[n].has_children)
    }
}

/// State of one merge: the rules, the ranked inputs, and the inputs whose values made
/// the current top-level field.
struct Merger<'m, 'a, 'r> {
    tree: &'m RuleTree<'r>,
    inputs: &'m [Input<'a>],
    used: Vec<usize>,
    /// Only when explaining; `None` on the write paths.
    trace: Option<&'m mut Trace<'r>>,
    /// The key order every object the merge takes or builds is put in as it is made, so
    /// that no map is built and then rebuilt in order; `None` keeps the contributions'
    /// order (see [`merge_document_nested_unordered`]).
    order: Option<&'static KeyOrder>,
    /// Where the value being merged is in `order`'s schema; `None` where the schema does
    /// not describe it (its keys then stay as they are), and always without `order`.
    here: Option<ObjectNode>,
}

impl<'a> Merger<'_, 'a, '_> {
    /// The output descends into `token`, at rule-tree `node` (traced merges only).
    fn enter(&mut self, token: &str, node: Option<usize>) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.enter_key(token, self.tree.rule(node));
        }
    }

    fn leave(&mut self) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.leave();
        }
    }

    /// Chooses the value of the field at rule-tree `node` among `cands` (the values of
    /// every contribution that has the key, in default order). `None` omits the field.
    /// `cands` is scratch: it is reordered in place.
    fn merge_field(&mut self, node: Option<usize>, cands: &mut [Cand<'a>]) -> Option<Value> {
        let rule = self.tree.rule(node);
        let mut cands = cands;
        if let Some(rule) = rule {
            if rule.strategy == Strategy::Owner {
                let inputs = self.inputs;
                let owners = keep_first(cands, |c| rule.owners.contains(inputs[c.who].source));
                cands = &mut cands[..owners];
                // Stable, so elements keep their order within a contribution.
                cands.sort_by_key(|c| rule.owners.iter().position(|o| o == inputs[c.who].source));
            } else if let Some(order) = &rule.precedence {
                self.sort_by_order(cands, order);
            }
        }
        if !rule.is_some_and(|r| r.keep_empty) {
            let present = keep_first(cands, |c| !is_empty(c.value));
            if present == 0 {
                // Only empty values (or none): the first-ranked one stands, so a single
                // contribution merges to itself. `keep_first` left the rest in order.
                return cands.first().map(|&c| self.take(c));
            }
            cands = &mut cands[..present];
        }

        match rule.map(|r| r.strategy) {
            None => {
                if self.tree.has_rules_below(node) && cands.iter().all(|c| c.value.is_object()) {
                    Some(self.merge_objects(node.expect("rules below a node"), cands))
                } else {
                    Some(self.take(cands[0]))
                }
            }
            Some(Strategy::Priority | Strategy::Owner) => Some(self.take(cands[0])),
            Some(Strategy::Recency) => Some(self.take(self.by_time(cands, true))),
            Some(Strategy::Oldest) => Some(self.take(self.by_time(cands, false))),
            Some(Strategy::Union) => {
                let rule = rule.expect("a strategy comes from a rule");
                if cands.iter().all(|c| c.value.is_array()) {
                    Some(self.union(node, rule, cands))
                } else {
                    Some(self.take(cands[0]))
                }
            }
        }
    }

    /// Merges objects key by key, each key by the rules at its own path (below `node`).
    fn merge_objects(&mut self, node: usize, cands: &[Cand<'a>]) -> Value {
        if let [only] = cands {
            return self.walk_object(node, *only);
        }
        // Every (key, value) of every object, sorted by key: one pass instead of a map
        // lookup per key and object. The parent may have been in its own order; a key
        // has the default one (by `who`) unless its rule says otherwise, and equal `who`
        // keep their order (`seq`).
        let total = cands
            .iter()
            .map(|c| c.value.as_object().map_or(0, Map::len))
            .sum();
        let mut entries: Vec<(&'a str, usize, Cand<'a>)> = Vec::with_capacity(total);
        for (seq, c) in cands.iter().enumerate() {
            for (k, value) in c.value.as_object().into_iter().flatten() {
                entries.push((k.as_str(), seq, Cand { who: c.who, value }));
            }
        }
        entries
            .sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.2.who.cmp(&b.2.who)).then(a.1.cmp(&b.1)));
        // The candidates of all keys, side by side, so each key gets a slice of them.
        let mut flat: Vec<Cand<'a>> = entries.iter().map(|e| e.2).collect();

        let distinct = 1 + entries.windows(2).filter(|w| w[0].0 != w[1].0).count();
        let mut out = Vec::with_capacity(distinct);
        let mut start = 0;
        while start < entries.len() {
            let key = entries[start].0;
            let end = start + entries[start..].iter().take_while(|e| e.0 == key).count();
            if let (place, Some(value)) = self.merge_key(node, key, &mut flat[start..end]) {
                out.push((place, key, value));
            }
            start = end;
        }
        if out.is_empty() {
            self.emptied(cands[0].who);
        }
        Value::Object(Self::build(self.here.is_some(), out))
    }

    /// Merges the candidates of one key of an object at `node`: the key's place in that
    /// object, and its value (`None` when the rule leaves the key out). `here` is back at
    /// the object afterwards.
    #[inline]
    fn merge_key(
        &mut self,
        node: usize,
        key: &'a str,
        same_key: &mut [Cand<'a>],
    ) -> (Place, Option<Value>) {
        let here = self.here;
        let child = self.tree.child(node, key);
        self.enter(key, child);
        let place = self.descend(key);
        let merged = match child {
            // No rule at or below: plain priority.
            None => {
                let first = same_key.iter().find(|c| !is_empty(c.value));
                Some(self.take(*first.unwrap_or(&same_key[0])))
            }
            child => self.merge_field(child, same_key),
        };
        self.here = here;
        self.leave();
        (place, merged)
    }

    /// [`Self::merge_objects`] of a single object: its keys in their order, nothing to
    /// sort or gather. Only keys with rules at or below them are walked.
    fn walk_object(&mut self, node: usize, only: Cand<'a>) -> Value {
        let Some(object) = only.value.as_object() else {
            return self.take(only);
        };
        let mut out = Vec::with_capacity(object.len());
        for (key, value) in object {
            let cand = Cand {
                who: only.who,
                value,
            };
            if let (place, Some(value)) = self.merge_key(node, key, &mut [cand]) {
                out.push((place, key.as_str(), value));
            }
        }
        if out.is_empty() {
            self.emptied(only.who);
        }
        Value::Object(Self::build(self.here.is_some(), out))
    }

    /// Unions the arrays of `cands` (in order) under `rule`.
    fn union(&mut self, node: Option<usize>, rule: &FieldRule, cands: &[Cand<'a>]) -> Value {
        let total = cands
            .iter()
            .map(|c| c.value.as_array().map_or(0, Vec::len))
            .sum();
        let mut elements: Vec<Cand<'a>> = Vec::with_capacity(total);
        for c in cands {
            for value in c.value.as_array().into_iter().flatten() {
                if rule.keep_empty || !is_empty(value) {
                    elements.push(Cand { who: c.who, value });
                }
            }
        }
        let groups = Groups::new(&rule.key, elements);

        let walk_elements =
            rule.element_strategy == ElementStrategy::Merge && self.tree.has_rules_below(node);
        let node = node.expect("a union rule has a node");
        let mut out = Vec::with_capacity(groups.groups.len());
        for group in &groups.groups {
            let first = groups.elements[group.first];
            let merge = rule.element_strategy == ElementStrategy::Merge && group.keyed;
            if let Some(t) = self.trace.as_deref_mut() {
                t.enter_index(out.len());
                let start = t.whos.len();
                let mut i = group.first;
                while i != usize::MAX {
                    t.whos.push(groups.elements[i].who);
                    i = groups.next[i];
                }
                let node = t.current as usize;
                t.nodes[node].element = t.elements.len() as u32;
                t.elements.push(TracedElement {
                    node: node as u32,
                    rule: t.nodes[node].rule,
                    whos: start..t.whos.len(),
                });
            }
            let value = if group.len == 1 {
                // Walking one element still applies the rules below the path (an owner
                // rule may drop part of it); without any, the element stands as sent.
                if merge && walk_elements {
                    self.merge_objects(node, &[first])
                } else {
                    self.take(first)
                }
            } else {
                let members = groups.members(group);
                let all_equal = || members[1..].iter().all(|m| m.value == first.value);
                match rule.element_strategy {
                    // Sources often send the very same element: nothing to merge then.
                    ElementStrategy::Merge if group.keyed && (walk_elements || !all_equal()) => {
                        self.merge_objects(node, &members)
                    }
                    ElementStrategy::Merge | ElementStrategy::Priority => self.take(first),
                    ElementStrategy::Recency => self.take(self.by_time(&members, true)),
                    ElementStrategy::Oldest => self.take(self.by_time(&members, false)),
                }
            };
            self.leave();
            out.push(value);
        }
        if out.is_empty() {
            self.emptied(cands[0].who);
        }
        Value::Array(out)
    }

    /// The newest (or oldest) candidate; ties go to the first in order.
    fn by_time(&self, cands: &[Cand<'a>], newest: bool) -> Cand<'a> {
        let mut best = cands[0];
        for &c in &cands[1..] {
            let (t, b) = (self.inputs[c.who].time, self.inputs[best.who].time);
            if (newest && t > b) || (!newest && t < b) {
                best = c;
            }
        }
        best
    }

    /// Sorts candidates by `order` (named sources first, the rest by name), stably.
    fn sort_by_order(&self, cands: &mut [Cand<'a>], order: &[Source]) {
        cands.sort_by(|a, b| {
            Rules::rank(order, self.inputs[a.who].source)
                .cmp(&Rules::rank(order, self.inputs[b.who].source))
                .then(a.who.cmp(&b.who))
        });
    }

    /// An object or array the merge emptied (every key or element dropped) is a leaf
    /// no `take` covers: it is credited to `who`, the first candidate it was made from.
    fn emptied(&mut self, who: usize) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.take(who);
        }
    }

    /// Takes a candidate's value into the output, recording its source.
    fn take(&mut self, cand: Cand<'a>) -> Value {
        self.used.push(cand.who);
        if let Some(t) = self.trace.as_deref_mut() {
            t.take(cand.who);
        }
        match (self.order, self.here) {
            (Some(order), Some(node)) => order.ordered_clone(node, cand.value),
            _ => cand.value.clone(),
        }
    }

    /// Moves `here` to the objects under `key` of the object at `here`; returns the key's
    /// place there, to sort the object's keys by.
    fn descend(&mut self, key: &str) -> Place {
        let place = self
            .order
            .zip(self.here)
            .map_or(Place::UNDESCRIBED, |(order, node)| order.place(node, key));
        self.here = place.child;
        place
    }

    /// An object the merge built from its entries: in `order` when `ordered` (the object is
    /// at a place the schema describes), else with its keys as they were merged.
    fn build(ordered: bool, entries: Vec<(Place, &str, Value)>) -> Map<String, Value> {
        if ordered {
            return map_in_order(entries);
        }
        entries
            .into_iter()
            .map(|(_, key, value)| (key.to_owned(), value))
            .collect()
    }

    /// The sources recorded for the current top-level field, in its order.
    fn contributors(&mut self, rule: Option<&FieldRule>) -> Vec<Source> {
        let inputs = self.inputs;
        let used = &mut self.used;
        used.sort_unstable();
        used.dedup();
        match rule {
            Some(r) if r.strategy == Strategy::Owner => {
                used.sort_by_key(|&who| r.owners.iter().position(|o| o == inputs[who].source));
            }
            Some(FieldRule {
                precedence: Some(order),
                ..
            }) => used.sort_by(|&a, &b| {
                Rules::rank(order, inputs[a].source).cmp(&Rules::rank(order, inputs[b].source))
            }),
            _ => {}
        }
        used.iter().map(|&who| inputs[who].source.clone()).collect()
    }
}

/// Moves the elements that satisfy `keep` to the front, in their order, and returns how
/// many there are. When none does, the slice is left as it was.
fn keep_first<T: Copy>(items: &mut [T], keep: impl Fn(&T) -> bool) -> usize {
    let mut kept = 0;
    for i in 0..items.len() {
        if keep(&items[i]) {
            items.swap(kept, i);
            kept += 1;
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::fixtures::{contribution, pid, rule, src};

    fn union(path: &str, key: &[&str]) -> FieldRule {
        FieldRule {
            key: key.iter().map(|k| (*k).to_owned()).collect(),
            ..rule(path, Strategy::Union)
        }
    }

    fn rules(precedence: &[&str], fields: Vec<FieldRule>) -> Rules {
        Rules {
            precedence: precedence.iter().map(|s| src(s)).collect(),
            fields: fields.into_iter().map(|r| (r.path.clone(), r)).collect(),
            identity_types: vec!["CircuitID".to_owned()],
            phone_number_types: Vec::new(),
            released_when_terminated: Vec::new(),
            role_globs: BTreeMap::new(),
            role_matchers: Vec::new(),
            accepted_types: Vec::new(),
            hash: "test".to_owned(),
        }
    }

    fn merged(contributions: &[Contribution], rules: &Rules) -> Merged {
        merge(&pid(1), contributions, &Links::default(), rules)
    }

    fn field(contributions: &[Contribution], rules: &Rules, name: &str) -> Option<Value> {
        merged(contributions, rules).document.get(name).cloned()
    }

    fn shipped_rules() -> Rules {
        let file = |name: &str, text: &str| (name.to_owned(), text.to_owned());
        Rules::from_files(&[
            file(
                "00-sources.toml",
                include_str!("../../merge-rules/00-sources.toml"),
            ),
            file(
                "10-identity-and-packages.toml",
                include_str!("../../merge-rules/10-identity-and-packages.toml"),
            ),
            file(
                "20-fields.toml",
                include_str!("../../merge-rules/20-fields.toml"),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn shipped_rules_never_mix_two_sources_addresses() {
        let customer = |street: &str, city: &str, post_code: &str| {
            json!({"relatedParty": [{"role": "Customer", "partyOrPartyRole": {"contactMedium": [
                {"contactType": "ServiceAddress", "street1": street, "city": city,
                 "postCode": post_code}
            ]}}],
            "place": [{"role": "ServiceAddress", "street1": street, "city": city,
                       "postCode": post_code}]})
        };
        let cs = [
            contribution("billing", 1, customer("1 A ST", "DALLAS", "75201")),
            contribution("provisioning", 2, customer("2 B AVE", "HONOLULU", "")),
        ];
        let doc = merged(&cs, &shipped_rules()).document;
        // Provisioning ranks first: its address, whole, empty post code included.
        let expected = json!({"contactType": "ServiceAddress", "street1": "2 B AVE",
                              "city": "HONOLULU", "postCode": ""});
        assert_eq!(
            doc["relatedParty"][0]["partyOrPartyRole"]["contactMedium"],
            json!([expected])
        );
        let mut place = expected;
        place["role"] = json!("ServiceAddress");
        place.as_object_mut().unwrap().remove("contactType");
        assert_eq!(doc["place"], json!([place]));
    }

    #[test]
    fn priority_takes_the_first_ranked_source_whatever_the_input_order() {
        let r = rules(&["billing", "provisioning"], vec![]);
        let cs = [
            contribution("provisioning", 2, json!({"status": "pending"})),
            contribution("billing", 1, json!({"status": "active"})),
        ];
        assert_eq!(field(&cs, &r, "status"), Some(json!("active")));
    }

    #[test]
    fn empty_values_never_hide_real_ones() {
        let r = rules(&["billing", "provisioning"], vec![]);
        for empty in [json!(null), json!(""), json!([]), json!({})] {
            let cs = [
                contribution("billing", 1, json!({"name": empty})),
                contribution("provisioning", 2, json!({"name": "ADI"})),
            ];
            assert_eq!(field(&cs, &r, "name"), Some(json!("ADI")), "{empty}");
        }
    }

    #[test]
    fn when_every_value_is_empty_the_first_ranked_empty_value_stands() {
        let r = rules(&["billing", "provisioning"], vec![]);
        let cs = [
            contribution("provisioning", 2, json!({"name": []})),
            contribution("billing", 1, json!({"name": ""})),
        ];
        assert_eq!(field(&cs, &r, "name"), Some(json!("")));
    }

    #[test]
    fn keep_empty_lets_an_empty_value_win() {
        let r = rules(
            &["billing", "provisioning"],
            vec![FieldRule {
                keep_empty: true,
                ..rule("note", Strategy::Priority)
            }],
        );
        let cs = [
            contribution("billing", 1, json!({"note": ""})),
            contribution("provisioning", 2, json!({"note": "hello"})),
        ];
        assert_eq!(field(&cs, &r, "note"), Some(json!("")));
    }

    #[test]
    fn recency_takes_the_newest_and_breaks_ties_by_precedence() {
        let r = rules(&["a", "b", "c"], vec![rule("status", Strategy::Recency)]);
        let cs = [
            contribution("a", 1, json!({"status": "old"})),
            contribution("c", 5, json!({"status": "newest-c"})),
            contribution("b", 5, json!({"status": "newest-b"})),
        ];
        // b and c tie on time and b ranks first.
        assert_eq!(field(&cs, &r, "status"), Some(json!("newest-b")));
        let empty_newest = [
            contribution("a", 1, json!({"status": "real"})),
            contribution("b", 9, json!({"status": ""})),
        ];
        assert_eq!(field(&empty_newest, &r, "status"), Some(json!("real")));
    }

    #[test]
    fn oldest_takes_the_oldest_and_breaks_ties_by_precedence() {
        let r = rules(&["a", "b", "c"], vec![rule("startDate", Strategy::Oldest)]);
        let cs = [
            contribution("a", 7, json!({"startDate": "a"})),
            contribution("c", 3, json!({"startDate": "c"})),
            contribution("b", 3, json!({"startDate": "b"})),
        ];
        assert_eq!(field(&cs, &r, "startDate"), Some(json!("b")));
    }

    #[test]
    fn owner_counts_only_owners_in_their_order_and_omits_the_field_otherwise() {
        let r = rules(
            &["billing", "provisioning", "inventory"],
            vec![FieldRule {
                owners: vec![src("inventory"), src("provisioning")],
                ..rule("status", Strategy::Owner)
            }],
        );
        let all = [
            contribution("billing", 1, json!({"status": "billing"})),
            contribution("provisioning", 2, json!({"status": "provisioning"})),
            contribution("inventory", 3, json!({"status": "inventory"})),
        ];
        assert_eq!(field(&all, &r, "status"), Some(json!("inventory")));
        assert_eq!(field(&all[..2], &r, "status"), Some(json!("provisioning")));
        let m = merged(&all[..1], &r);
        assert_eq!(m.document.get("status"), None);
        assert!(!m.provenance.fields.contains_key("status"));
        // An owner's empty value does not hide another owner's real one.
        let empty_first = [
            contribution("inventory", 3, json!({"status": ""})),
            contribution("provisioning", 2, json!({"status": "provisioning"})),
        ];
        assert_eq!(
            field(&empty_first, &r, "status"),
            Some(json!("provisioning"))
        );
    }

    #[test]
    fn field_precedence_overrides_the_default_order() {
        let r = rules(
            &["billing", "provisioning"],
            vec![FieldRule {
                precedence: Some(vec![src("provisioning")]),
                ..rule("status", Strategy::Priority)
            }],
        );
        let cs = [
            contribution("billing", 1, json!({"status": "b", "name": "b"})),
            contribution("provisioning", 2, json!({"status": "p", "name": "p"})),
        ];
        let doc = merged(&cs, &r).document;
        assert_eq!(doc["status"], json!("p"));
        assert_eq!(doc["name"], json!("b"));
    }

    #[test]
    fn unnamed_sources_rank_after_named_ones_by_name() {
        let r = rules(&["billing"], vec![]);
        let cs = [
            contribution("zeta", 1, json!({"a": "zeta", "b": "zeta", "c": "zeta"})),
            contribution("alpha", 1, json!({"a": "alpha", "b": "alpha"})),
            contribution("billing", 1, json!({"a": "billing"})),
        ];
        let doc = merged(&cs, &r).document;
        assert_eq!(doc["a"], json!("billing"));
        assert_eq!(doc["b"], json!("alpha"));
        assert_eq!(doc["c"], json!("zeta"));
    }

    #[test]
    fn union_matches_by_key_merges_matches_and_keeps_first_appearance_order() {
        let r = rules(&["a", "b"], vec![union("productCharacteristic", &["name"])]);
        let cs = [
            contribution(
                "b",
                2,
                json!({"productCharacteristic": [
                    {"name": "Speed", "value": "10G", "valueType": "string"},
                    {"name": "Vendor", "value": "Cisco"},
                ]}),
            ),
            contribution(
                "a",
                1,
                json!({"productCharacteristic": [
                    {"name": "Interface", "value": "GigE"},
                    {"name": "Speed", "value": ""},
                ]}),
            ),
        ];
        let m = merged(&cs, &r);
        assert_eq!(
            m.document["productCharacteristic"],
            json!([
                {"name": "Interface", "value": "GigE"},
                // a's empty value does not hide b's; b adds valueType.
                {"name": "Speed", "value": "10G", "valueType": "string"},
                {"name": "Vendor", "value": "Cisco"},
            ])
        );
        assert_eq!(
            m.provenance.fields["productCharacteristic"],
            vec![src("a"), src("b")]
        );
    }

    #[test]
    fn union_dedupes_unkeyed_elements_by_whole_value_and_drops_empty_ones() {
        let r = rules(&["a", "b"], vec![union("items", &["k"])]);
        let cs = [
            contribution(
                "a",
                1,
                json!({"items": [{"x": 1}, "s", {}, {"k": 1, "v": "a"}, null]}),
            ),
            contribution(
                "b",
                1,
                json!({"items": [{"x": 1}, {"x": 2}, "s", {"k": 1, "v": "b"}, {"k": 1.0}]}),
            ),
        ];
        assert_eq!(
            field(&cs, &r, "items"),
            Some(json!([{"x": 1}, "s", {"k": 1, "v": "a"}, {"x": 2}, {"k": 1.0}]))
        );
    }

    #[test]
    fn union_of_large_arrays_matches_every_element_with_its_group() {
        let r = rules(&["a", "b"], vec![union("productCharacteristic", &["name"])]);
        let n = 5_000;
        let a: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("c{i}"), "value": format!("a{i}")}))
            .collect();
        // b sends the same names backwards plus as many new ones, each with an extra field.
        let b: Vec<Value> = (0..2 * n)
            .rev()
            .map(|i| json!({"name": format!("c{i}"), "value": format!("b{i}"), "unit": "u"}))
            .collect();
        let cs = [
            contribution("a", 1, json!({"productCharacteristic": a})),
            contribution("b", 1, json!({"productCharacteristic": b})),
        ];
        let merged = field(&cs, &r, "productCharacteristic").unwrap();
        let merged = merged.as_array().unwrap();
        assert_eq!(merged.len(), 2 * n);
        assert_eq!(merged[0], json!({"name": "c0", "value": "a0", "unit": "u"}));
        assert_eq!(merged[n - 1]["value"], format!("a{}", n - 1));
        // b's own elements follow, in b's order.
        assert_eq!(
            merged[n],
            json!({"name": format!("c{}", 2 * n - 1), "value": format!("b{}", 2 * n - 1), "unit": "u"})
        );
        assert_eq!(merged[2 * n - 1]["name"], format!("c{n}"));
    }

    #[test]
    fn union_keeps_empty_elements_with_keep_empty() {
        let r = rules(
            &["a", "b"],
            vec![FieldRule {
                keep_empty: true,
                ..union("items", &["k"])
            }],
        );
        let cs = [
            contribution("a", 1, json!({"items": [{}, {"k": 1}]})),
            contribution("b", 1, json!({"items": [{}, {"k": 1, "v": ""}]})),
        ];
        assert_eq!(
            field(&cs, &r, "items"),
            Some(json!([{}, {"k": 1, "v": ""}]))
        );
    }

    #[test]
    fn union_with_several_key_fields_needs_all_of_them_equal() {
        let r = rules(&["a", "b"], vec![union("ref", &["type", "owner"])]);
        let cs = [
            contribution(
                "a",
                1,
                json!({"ref": [{"type": "T", "owner": "X", "id": "1"}]}),
            ),
            contribution(
                "b",
                1,
                json!({"ref": [
                    {"type": "T", "owner": "Y", "id": "2"},
                    {"type": "T", "owner": "X", "id": "3"},
                ]}),
            ),
        ];
        assert_eq!(
            field(&cs, &r, "ref"),
            Some(json!([
                {"type": "T", "owner": "X", "id": "1"},
                {"type": "T", "owner": "Y", "id": "2"},
            ]))
        );
    }

    #[test]
    fn union_element_strategies_choose_whole_elements() {
        let cs = [
            contribution("a", 1, json!({"p": [{"role": "R", "x": "a"}]})),
            contribution("b", 5, json!({"p": [{"role": "R", "y": "b"}]})),
        ];
        let with = |element_strategy| {
            let r = rules(
                &["a", "b"],
                vec![FieldRule {
                    element_strategy,
                    ..union("p", &["role"])
                }],
            );
            field(&cs, &r, "p").unwrap()
        };
        assert_eq!(
            with(ElementStrategy::Priority),
            json!([{"role": "R", "x": "a"}])
        );
        assert_eq!(
            with(ElementStrategy::Recency),
            json!([{"role": "R", "y": "b"}])
        );
        assert_eq!(
            with(ElementStrategy::Oldest),
            json!([{"role": "R", "x": "a"}])
        );
        assert_eq!(
            with(ElementStrategy::Merge),
            json!([{"role": "R", "x": "a", "y": "b"}])
        );
    }

    #[test]
    fn union_falls_back_to_priority_when_a_value_is_not_an_array() {
        let r = rules(&["a", "b"], vec![union("p", &["k"])]);
        let cs = [
            contribution("a", 1, json!({"p": "scalar"})),
            contribution("b", 1, json!({"p": [{"k": 1}]})),
        ];
        assert_eq!(field(&cs, &r, "p"), Some(json!("scalar")));
    }

    #[test]
    fn nested_rules_merge_objects_key_by_key() {
        let r = rules(
            &["a", "b"],
            vec![rule("productSpecification.name", Strategy::Recency)],
        );
        let cs = [
            contribution(
                "a",
                1,
                json!({
                    "productSpecification": {"id": "PR-A", "name": "old", "version": ""},
                    "place": {"city": "A"},
                }),
            ),
            contribution(
                "b",
                2,
                json!({
                    "productSpecification": {"id": "PR-B", "name": "new", "version": "2"},
                    "place": {"city": "B", "street": "S"},
                }),
            ),
        ];
        let doc = merged(&cs, &r).document;
        assert_eq!(
            doc["productSpecification"],
            json!({"id": "PR-A", "name": "new", "version": "2"})
        );
        // No rule at or below `place`: the whole value of the first source.
        assert_eq!(doc["place"], json!({"city": "A"}));
    }

    #[test]
    fn a_nested_rule_applies_inside_union_elements() {
        let r = rules(
            &["a", "b"],
            vec![
                union("relatedParty", &["role"]),
                FieldRule {
                    owners: vec![src("b")],
                    ..rule("relatedParty.partyOrPartyRole", Strategy::Owner)
                },
            ],
        );
        let cs = [
            contribution(
                "a",
                1,
                json!({"relatedParty": [
                    {"role": "Customer", "partyOrPartyRole": {"name": "from a"}},
                    {"role": "User", "partyOrPartyRole": {"name": "only a"}, "x": 1},
                ]}),
            ),
            contribution(
                "b",
                1,
                json!({"relatedParty": [
                    {"role": "Customer", "partyOrPartyRole": {"name": "from b"}},
                ]}),
            ),
        ];
        assert_eq!(
            field(&cs, &r, "relatedParty"),
            Some(json!([
                {"role": "Customer", "partyOrPartyRole": {"name": "from b"}},
                // Even an unmatched element is walked, so a's party is dropped.
                {"role": "User", "x": 1},
            ]))
        );
    }

    #[test]
    fn service_owned_fields_are_set_and_only_local_ids_go_to_the_crosswalk() {
        let r = rules(&["billing", "provisioning"], vec![]);
        let cs = [
            contribution(
                "provisioning",
                2,
                json!({
                    "id": "p-1", "href": "/elsewhere/p-1",
                    "externalIdentifier": [
                        {"owner": "billing", "externalIdentifierType": "id", "id": "stale"},
                        {"owner": "CRM", "externalIdentifierType": "id", "id": "crm-9"},
                        {"owner": "CRM", "externalIdentifierType": "AccountID", "id": "7"},
                    ],
                }),
            ),
            contribution(
                "billing",
                1,
                json!({
                    "id": "41-1", "externalIdentifier": [
                        {"owner": "CRM", "externalIdentifierType": "AccountID", "id": "7"},
                    ],
                }),
            ),
            contribution("inventory", 1, json!({"id": "", "status": "x"})),
        ];
        let m = merged(&cs, &r);
        assert_eq!(m.document["id"], json!(pid(1).to_string()));
        assert_eq!(m.document["href"], json!(pid(1).href()));
        assert_eq!(
            m.document["externalIdentifier"],
            // Stored entries (a forged "billing" one among them) are ignored: only PINV
            // writes the crosswalk.
            json!([
                {"owner": "billing", "externalIdentifierType": "id", "id": "41-1"},
                {"owner": "provisioning", "externalIdentifierType": "id", "id": "p-1"},
            ])
        );
        assert_eq!(
            m.provenance.fields["externalIdentifier"],
            vec![src("billing"), src("provisioning")]
        );
        assert!(!m.provenance.fields.contains_key("id"));
    }

    #[test]
    fn external_identifier_is_omitted_when_there_is_nothing_to_say() {
        let r = rules(&[], vec![]);
        let doc = merged(&[contribution("a", 1, json!({"status": "x"}))], &r).document;
        assert_eq!(doc.get("externalIdentifier"), None);
        assert_eq!(doc["status"], json!("x"));
    }

    #[test]
    fn resolved_relationship_ids_become_pinv_ids_with_href_and_collapse() {
        let r = rules(
            &["billing", "provisioning"],
            vec![union("productRelationship", &["relationshipType", "id"])],
        );
        let mut links = Links::default();
        links.insert(&src("billing"), "b-port", pid(7));
        links.insert(&src("provisioning"), "p-port", pid(7));
        let cs = [
            contribution(
                "billing",
                1,
                json!({"productRelationship": [
                    {"relationshipType": "bundles", "id": "b-port"},
                    {"relationshipType": "bundles", "id": "unknown"},
                ]}),
            ),
            contribution(
                "provisioning",
                1,
                json!({"productRelationship": [
                    {"relationshipType": "bundles", "id": "p-port", "href": "/old"},
                    // The billing raw id means nothing when provisioning sends it.
                    {"relationshipType": "bundles", "id": "b-port"},
                ]}),
            ),
        ];
        let doc = merge(&pid(1), &cs, &links, &r).document;
        assert_eq!(
            doc["productRelationship"],
            json!([
                {"relationshipType": "bundles", "id": pid(7).to_string(), "href": pid(7).href()},
                {"relationshipType": "bundles", "id": "unknown"},
                {"relationshipType": "bundles", "id": "b-port"},
            ])
        );
        // The contributions themselves are untouched.
        assert_eq!(cs[0].value["productRelationship"][0]["id"], json!("b-port"));
    }

    #[test]
    fn keys_come_in_tmf637_order_id_href_type_first() {
        let r = rules(&["provisioning", "billing"], vec![]);
        let cs = vec![
            contribution(
                "billing",
                1,
                json!({"zz": 1, "status": "active", "name": "x", "@type": "Product",
                    "productRelationship": [{"relationshipType": "bundles", "id": "R-1"}],
                    "aa": 2, "id": "b"}),
            ),
            contribution(
                "provisioning",
                2,
                json!({"description": "d", "@baseType": "Product", "id": "p"}),
            ),
        ];
        let doc = merge(&pid(1), &cs, &Links::default(), &r).document;
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "href",
                "@type",
                "@baseType",
                "description",
                "name",
                "productRelationship",
                "status",
                "externalIdentifier",
                "aa",
                "zz"
            ]
        );
        let element: Vec<&str> = doc["productRelationship"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(element, ["id", "relationshipType"]);
        // The same bytes whatever the order of the contributions.
        let reversed: Vec<Contribution> = cs.iter().rev().cloned().collect();
        assert_eq!(
            serde_json::to_string(&merge(&pid(1), &reversed, &Links::default(), &r).document)
                .unwrap(),
            serde_json::to_string(&doc).unwrap()
        );
    }

    #[test]
    fn the_nested_unordered_merge_is_the_merge_before_its_nested_key_order() {
        let crate::testing::seed::SeedProduct {
            id,
            contributions,
            links,
        } = crate::testing::seed::seed_product();
        let rules = shipped_rules();
        let ordered = merge_document(&id, &contributions, &links, &rules);
        let unordered = merge_document_nested_unordered(&id, &contributions, &links, &rules);
        let (ordered_text, unordered_text) = (ordered.to_string(), unordered.to_string());
        // The seed's sources send `@type` before `id` and the like: the orders differ...
        assert_ne!(ordered_text, unordered_text);
        // ...the values do not, and written in order they are the same text.
        assert_eq!(ordered, unordered);
        let order = KeyOrder::product();
        assert_eq!(
            serde_json::to_string(&crate::core::order::Ordered::new(
                order,
                order.root(),
                &unordered
            ))
            .unwrap(),
            ordered_text
        );
    }

    #[test]
    fn the_document_alone_is_the_merged_document() {
        let r = rules(
            &["provisioning", "billing"],
            vec![union("productCharacteristic", &["name"])],
        );
        let cs = vec![
            contribution(
                "billing",
                1,
                json!({"id": "b", "name": "x",
                "productCharacteristic": [{"name": "a", "value": "1"}]}),
            ),
            contribution(
                "provisioning",
                2,
                json!({"id": "p", "status": "active",
                "productCharacteristic": [{"name": "a", "value": ""}, {"name": "b", "value": "2"}]}),
            ),
        ];
        let links = Links::default();
        assert_eq!(
            merge_document(&pid(1), &cs, &links, &r),
            merge(&pid(1), &cs, &links, &r).document
        );
    }

    #[test]
    fn provenance_names_the_winner_or_every_contributor() {
        let r = rules(
            &["a", "b", "c"],
            vec![union("u", &["k"]), rule("obj.n", Strategy::Recency)],
        );
        let cs = [
            contribution(
                "a",
                1,
                json!({"s": "a", "u": [{"k": 1}], "obj": {"n": 1, "m": ""}}),
            ),
            contribution("b", 2, json!({"s": "b", "u": [{"k": 1}], "obj": {"n": 2}})),
            contribution("c", 3, json!({"u": [{"k": 2}], "obj": {"m": "c"}})),
        ];
        let p = merged(&cs, &r).provenance;
        assert_eq!(p.fields["s"], vec![src("a")]);
        // b's element matched a's and added nothing: the values came from a and c.
        assert_eq!(p.fields["u"], vec![src("a"), src("c")]);
        assert_eq!(p.fields["obj"], vec![src("b"), src("c")]);
    }

    #[test]
    fn the_result_does_not_depend_on_the_input_order() {
        let r = rules(
            &["b"],
            vec![union("u", &["k"]), rule("t", Strategy::Recency)],
        );
        let cs = vec![
            contribution(
                "a",
                1,
                json!({"id": "1", "s": "a", "u": [{"k": 1, "v": "a"}, "x"], "t": 1}),
            ),
            contribution(
                "b",
                1,
                json!({"id": "2", "s": "", "u": ["x", {"k": 1, "w": "b"}], "t": 2}),
            ),
            contribution(
                "c",
                1,
                json!({"id": "3", "s": "c", "u": [{"k": 2}], "t": 3}),
            ),
        ];
        let expected = serde_json::to_vec(&merged(&cs, &r).document).unwrap();
        for perm in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let permuted: Vec<_> = perm.iter().map(|&i| cs[i].clone()).collect();
            assert_eq!(
                serde_json::to_vec(&merged(&permuted, &r).document).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn no_contributions_give_just_the_service_owned_fields() {
        let doc = merged(&[], &rules(&[], vec![])).document;
        assert_eq!(
            doc,
            json!({"id": pid(1).to_string(), "href": pid(1).href()})
        );
    }
}
