//! Why a merged document says what it says: for every leaf, the contribution it came from
//! and the rule that chose it.
//!
//! The explanation re-runs the merge with a trace ([`crate::core::merge`] records every
//! value it takes and where it lands), so it is exactly the merge's own choice, never a
//! guess from comparing values afterwards. The write paths never pay for it.
//!
//! An [`Explanation`] is compact: per value the merge took, a few indices into tables
//! (each contribution's [`From`] and each rule's [`RuleUsed`] once, not once per leaf) and
//! how many leaves it holds; leaf values stay in the document, and leaf pointers are
//! written when first asked for. [`Explanation::leaves`] and [`Explanation::elements`]
//! lend them out as [`Leaf`] and [`Element`] views, which serialise to the provenance
//! route's JSON.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::core::merge::{merge_traced, Token, Trace, Traced};
use crate::core::package::Links;
use crate::core::record::{Contribution, HistoryEntry, ProductRecord};
use crate::core::rules::{ElementStrategy, FieldRule, Rules, Strategy};
use crate::core::{push_index_token, push_pointer_token, EventId, PinvId, Source};

/// "None" in the index fields of [`LeafRun`] and [`ElementEntry`].
const NONE: u32 = u32::MAX;

/// Where every leaf of a merged document came from.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The merged document explained (the same as the merge makes).
    document: Value,
    /// The leaves of `document` (scalars, empty arrays and empty objects) in runs that share
    /// one provenance, in document order: the leaves of a depth-first walk, `count` by
    /// `count`.
    leaves: Vec<LeafRun>,
    /// How many leaves the runs hold.
    leaf_count: usize,
    /// The pointers of the leaves and elements: written when first asked for.
    pointers: OnceLock<Written>,
    /// One entry per element of every `union` array, in the merge's order.
    elements: Vec<ElementEntry>,
    /// The contributors of each element (indices into `froms`), back to back.
    element_whos: Vec<usize>,
    /// The [`From`] of each contribution, in the merge's order.
    froms: Vec<From>,
    /// Each rule that chose a leaf, once.
    rules: Vec<RuleUsed>,
    /// The key fields of each `union` rule an element was matched by, once.
    keys: Vec<Vec<String>>,
    /// Each reason PINV gives for a value it set, once.
    reasons: Vec<String>,
}

/// Leaves in a row that share one provenance (those of one value the merge took, or a
/// single leaf), as [`explain`] records them: indices into the [`Explanation`]'s tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeafRun {
    /// How many leaves.
    count: u32,
    /// `None` for leaves no take covers (not listed; the merge covers every leaf).
    set_by: Option<SetBy>,
    /// Index into `froms`.
    from: u32,
    /// Index into `rules`.
    rule: u32,
    /// Index into `reasons`.
    reason: u32,
}

/// An element as [`explain`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ElementEntry {
    /// Its position in a depth-first, pre-order walk of the document (`NONE`: not found
    /// there, which the merge never leaves; then `pointer` says where the merge put it).
    node: u32,
    pointer: Option<String>,
    /// Index into `keys` of its rule's key fields (`NONE`: no rule at the array's path).
    key: u32,
    /// Its contributors: `element_whos[whos.0..whos.1]`.
    whos: (u32, u32),
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

/// One leaf of the merged document and where it came from (borrowed from an
/// [`Explanation`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaf<'e> {
    /// JSON pointer of the leaf in the merged document.
    pub pointer: &'e str,
    /// The leaf's value.
    pub value: &'e Value,
    /// Whether a source or PINV set it.
    pub set_by: SetBy,
    /// The contribution it came from (for PINV's values, the one they are about, if any).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub from: Option<&'e From>,
    /// The rule that chose it (source values only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'e RuleUsed>,
    /// Why PINV set it (PINV's values only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'e str>,
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
    /// or the default precedence (one list shared by every rule that follows it).
    #[serde(serialize_with = "slice")]
    pub precedence: Arc<[Source]>,
}

/// One element of a `union` array (borrowed from an [`Explanation`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Element<'e> {
    /// JSON pointer of the element in the merged document.
    pub pointer: &'e str,
    /// The values of the rule's key fields, in the rule's order, when the element has them
    /// all (else the element matched others by whole value). Serialised as an object.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "key_as_object"
    )]
    pub key: Option<Vec<(&'e str, &'e Value)>>,
    /// Every source that sent a matching element, in the merge's order.
    pub sources: Vec<&'e Source>,
}

/// Serialises an `Arc<[T]>` as its slice (serde's `rc` feature would do it for every
/// crate that links serde, and rebuild them all).
fn slice<S: Serializer, T: Serialize>(items: &Arc<[T]>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter())
}

fn key_as_object<S: Serializer>(
    key: &Option<Vec<(&str, &Value)>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(key.iter().flatten().map(|(k, v)| (*k, *v)))
}

impl Explanation {
    /// The merged document explained (the same as the merge makes).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// One entry per leaf (scalar, empty array or empty object), in document order.
    pub fn leaves(&self) -> Vec<Leaf<'_>> {
        let Written {
            text,
            leaf_ends: ends,
            ..
        } = self.written();
        let mut nodes = Nodes::new(&[], self.leaf_count);
        nodes.visit(&self.document);
        debug_assert_eq!(nodes.leaves.len(), self.leaf_count);
        debug_assert_eq!(ends.len(), self.leaf_count);
        let at = |i: u32| (i != NONE).then_some(i as usize);
        let mut out = Vec::with_capacity(self.leaf_count);
        let mut i = 0;
        for run in &self.leaves {
            let end = i + run.count as usize;
            if let Some(set_by) = run.set_by {
                let from = at(run.from).map(|i| &self.froms[i]);
                let rule = at(run.rule).map(|i| &self.rules[i]);
                let reason = at(run.reason).map(|i| self.reasons[i].as_str());
                for leaf in i..end {
                    let start = if leaf == 0 { 0 } else { ends[leaf - 1] };
                    out.push(Leaf {
                        pointer: &text[start as usize..ends[leaf] as usize],
                        value: nodes.leaves[leaf],
                        set_by,
                        from,
                        rule,
                        reason,
                    });
                }
            }
            i = end;
        }
        out
    }

    /// One entry per element of every `union` array.
    pub fn elements(&self) -> Vec<Element<'_>> {
        let wanted = self.element_nodes();
        let mut found: Vec<Option<&Value>> = vec![None; self.elements.len()];
        let mut nodes = Nodes::new(&wanted, 0);
        nodes.found = &mut found;
        nodes.visit(&self.document);
        let written = self.written();
        self.elements
            .iter()
            .zip(found)
            .zip(&written.elements)
            .map(|((e, value), &(start, end))| {
                let mut sources: Vec<&Source> = Vec::with_capacity((e.whos.1 - e.whos.0) as usize);
                for &who in &self.element_whos[e.whos.0 as usize..e.whos.1 as usize] {
                    let source = &self.froms[who].source;
                    if !sources.contains(&source) {
                        sources.push(source);
                    }
                }
                let key = match (value.and_then(Value::as_object), e.key) {
                    (Some(element), key) if key != NONE => self.keys[key as usize]
                        .iter()
                        .map(|k| element.get(k).map(|v| (k.as_str(), v)))
                        .collect(),
                    _ => None,
                };
                Element {
                    pointer: match &e.pointer {
                        Some(pointer) => pointer,
                        None => &written.element_text[start as usize..end as usize],
                    },
                    key,
                    sources,
                }
            })
            .collect()
    }

    /// (trace node, element index) of every element found in the document, by node.
    fn element_nodes(&self) -> Vec<(u32, usize)> {
        let mut wanted: Vec<(u32, usize)> = self
            .elements
            .iter()
            .enumerate()
            .filter(|(_, e)| e.node != NONE)
            .map(|(i, e)| (e.node, i))
            .collect();
        wanted.sort_unstable();
        wanted
    }

    /// The pointers of the leaves and elements, written on the first call.
    fn written(&self) -> &Written {
        self.pointers.get_or_init(|| {
            let wanted = self.element_nodes();
            let mut pointers = Pointers {
                next: 0,
                wanted: &wanted,
                pointer: String::with_capacity(128),
                written: Written {
                    text: String::with_capacity(self.leaf_count * 32),
                    leaf_ends: Vec::with_capacity(self.leaf_count),
                    element_text: String::new(),
                    elements: vec![(0, 0); self.elements.len()],
                },
            };
            pointers.visit(&self.document);
            pointers.written
        })
    }
}

/// The pointers of an [`Explanation`]'s leaves and elements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// The leaves' pointers, back to back.
    text: String,
    /// Where the pointer of each leaf ends (each starts where the one before ends).
    leaf_ends: Vec<u32>,
    /// The elements' pointers.
    element_text: String,
    /// The span of each element's pointer in `element_text`.
    elements: Vec<(u32, u32)>,
}

/// Explanations are equal when they explain the same document the same way.
impl PartialEq for Explanation {
    fn eq(&self, other: &Self) -> bool {
        self.document == other.document
            && self.leaves() == other.leaves()
            && self.elements() == other.elements()
    }
}

impl Serialize for Explanation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Explanation", 3)?;
        s.serialize_field("document", &self.document)?;
        s.serialize_field("leaves", &self.leaves())?;
        s.serialize_field("elements", &self.elements())?;
        s.end()
    }
}

/// A depth-first, pre-order walk of a document, as [`explain`] walks it: collects the
/// leaves in order, and the nodes at the positions `wanted` names.
struct Nodes<'v, 'w> {
    /// Position of the next node.
    next: u32,
    leaves: Vec<&'v Value>,
    /// (position, index into `found`), by position.
    wanted: &'w [(u32, usize)],
    found: &'w mut [Option<&'v Value>],
}

impl<'v, 'w> Nodes<'v, 'w> {
    fn new(wanted: &'w [(u32, usize)], leaves: usize) -> Self {
        Self {
            next: 0,
            leaves: Vec::with_capacity(leaves),
            wanted,
            found: &mut [],
        }
    }

    fn visit(&mut self, value: &'v Value) {
        let here = self.next;
        self.next += 1;
        while let Some(&(node, i)) = self.wanted.first() {
            if node != here {
                break;
            }
            self.found[i] = Some(value);
            self.wanted = &self.wanted[1..];
        }
        match value {
            Value::Object(o) if !o.is_empty() => o.values().for_each(|v| self.visit(v)),
            Value::Array(a) if !a.is_empty() => a.iter().for_each(|v| self.visit(v)),
            _ => self.leaves.push(value),
        }
    }
}

/// The same walk as [`Nodes`], writing the pointer of every leaf and of the nodes at the
/// positions `wanted` names.
struct Pointers<'w> {
    /// Position of the next node.
    next: u32,
    /// (position, index into `written.elements`), by position.
    wanted: &'w [(u32, usize)],
    pointer: String,
    written: Written,
}

impl Pointers<'_> {
    fn visit(&mut self, value: &Value) {
        let here = self.next;
        self.next += 1;
        while let Some(&(node, i)) = self.wanted.first() {
            if node != here {
                break;
            }
            let start = self.written.element_text.len() as u32;
            self.written.element_text.push_str(&self.pointer);
            self.written.elements[i] = (start, self.written.element_text.len() as u32);
            self.wanted = &self.wanted[1..];
        }
        let len = self.pointer.len();
        match value {
            Value::Object(o) if !o.is_empty() => {
                for (k, v) in o {
                    self.pointer.push('/');
                    push_pointer_token(&mut self.pointer, k);
                    self.visit(v);
                    self.pointer.truncate(len);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    push_index_token(&mut self.pointer, i);
                    self.visit(v);
                    self.pointer.truncate(len);
                }
            }
            _ => {
                self.written.text.push_str(&self.pointer);
                self.written.leaf_ends.push(self.written.text.len() as u32);
            }
        }
    }
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
    // Trace nodes by parent and key.
    let mut children: foldhash::HashMap<(u32, Key<'_>), u32> = foldhash::HashMap::default();
    children.reserve(trace.nodes.len());
    for (i, node) in trace.nodes.iter().enumerate().skip(1) {
        let key = match node.token {
            Token::Index(index) => Key::Index(index),
            token => Key::Name(trace.key(token).unwrap_or_default()),
        };
        children.insert((node.parent, key), i as u32);
    }
    let mut walk = Walk {
        rules,
        links,
        ranked: &ranked,
        trace: &trace,
        children,
        found_rules: Vec::with_capacity(16),
        rules_used: Vec::with_capacity(16),
        default_precedence: None,
        element_nodes: vec![NONE; trace.elements.len()],
        reasons: Vec::with_capacity(8),
        top: Top::Merged,
        id_reason: NONE,
        entry: (NONE, NONE),
        pointer: String::new(),
        depth: 0,
        next: 0,
        leaf_count: 0,
        leaves: Vec::with_capacity(trace.nodes.len() + 16),
    };
    walk.visit(&document, 0);
    let Walk {
        leaves,
        leaf_count,
        rules_used,
        element_nodes,
        reasons,
        ..
    } = walk;

    // The key fields of each union rule, once.
    let mut keys: Vec<Vec<String>> = Vec::new();
    let mut key_rules: Vec<&FieldRule> = Vec::new();
    let elements = trace
        .elements
        .iter()
        .zip(element_nodes)
        .map(|(e, node)| {
            let key = match e.rule {
                Some(rule) => match key_rules.iter().position(|r| std::ptr::eq(*r, rule)) {
                    Some(i) => i as u32,
                    None => {
                        key_rules.push(rule);
                        keys.push(rule.key.clone());
                        (keys.len() - 1) as u32
                    }
                },
                None => NONE,
            };
            ElementEntry {
                node,
                pointer: (node == NONE).then(|| trace_pointer(&trace, e.node)),
                key,
                whos: (e.whos.start as u32, e.whos.end as u32),
            }
        })
        .collect();
    let froms = ranked.iter().map(|c| from(c)).collect();
    Explanation {
        document,
        leaves,
        leaf_count,
        pointers: OnceLock::new(),
        elements,
        element_whos: trace.whos,
        froms,
        rules: rules_used,
        keys,
        reasons,
    }
}

/// The JSON pointer of trace node `node`.
fn trace_pointer(trace: &Trace<'_>, node: u32) -> String {
    let mut tokens = Vec::new();
    let mut at = node;
    while at != 0 && at != Trace::NONE {
        tokens.push(trace.nodes[at as usize].token);
        at = trace.nodes[at as usize].parent;
    }
    let mut pointer = String::new();
    for token in tokens.into_iter().rev() {
        match token {
            Token::Index(index) => push_index_token(&mut pointer, index as usize),
            token => {
                pointer.push('/');
                push_pointer_token(&mut pointer, trace.key(token).unwrap_or_default());
            }
        }
    }
    pointer
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

/// The top-level field a walk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    /// `id` or `href`: PINV's own.
    Id,
    /// `externalIdentifier`: PINV's crosswalk.
    Crosswalk,
    /// `productRelationship`: merged, with ids PINV may have resolved.
    Relationships,
    /// Any other field: merged.
    Merged,
}

/// How a node hangs below its parent, as the walk looks trace nodes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    Name(&'a str),
    Index(u32),
}

/// The walk of the merged document that gives each leaf its provenance ([`LeafRun`]).
///
/// It follows the merge's trace down from the document, key by key, only as far as the
/// values the merge took: a taken value's leaves share its provenance, so below it they
/// are only counted.
struct Walk<'a> {
    rules: &'a Rules,
    links: &'a Links,
    ranked: &'a [&'a Contribution],
    trace: &'a Trace<'a>,
    /// Trace nodes by (parent, key).
    children: foldhash::HashMap<(u32, Key<'a>), u32>,
    /// The rule each entry of `rules_used` names (`None`: the default).
    found_rules: Vec<Option<&'a FieldRule>>,
    rules_used: Vec<RuleUsed>,
    /// The default precedence, once a rule needs it.
    default_precedence: Option<Arc<[Source]>>,
    /// The walk position of each element (`NONE` until found).
    element_nodes: Vec<u32>,
    reasons: Vec<String>,
    /// The reason of `id` and `href`, once pushed.
    id_reason: u32,
    top: Top,
    /// The crosswalk entry being walked: (from, reason).
    entry: (u32, u32),
    /// The pointer of the node being walked, kept in `productRelationship` only (where a
    /// leaf's pointer says whether PINV resolved it).
    pointer: String,
    depth: usize,
    /// The walk position of the next node.
    next: u32,
    leaf_count: usize,
    leaves: Vec<LeafRun>,
}

impl<'a> Walk<'a> {
    /// Walks `value`, whose trace node is `node` (`NONE`: the merge did not make it). The
    /// order is that of [`Nodes::visit`], which finds the values again by position.
    fn visit(&mut self, value: &'a Value, node: u32) {
        let here = self.next;
        self.next += 1;
        if node != NONE {
            let traced = &self.trace.nodes[node as usize];
            if traced.element != NONE {
                self.element_nodes[traced.element as usize] = here;
            }
            if traced.take != NONE {
                self.taken(value, node);
                return;
            }
        }
        let len = self.pointer.len();
        match value {
            Value::Object(o) if !o.is_empty() => {
                for (k, v) in o {
                    if self.depth == 0 {
                        self.top = match k.as_str() {
                            "id" | "href" => Top::Id,
                            "externalIdentifier" => Top::Crosswalk,
                            "productRelationship" => Top::Relationships,
                            _ => Top::Merged,
                        };
                        self.entry = (NONE, NONE);
                    }
                    let child = self.child(node, Key::Name(k));
                    if self.top == Top::Relationships {
                        self.pointer.push('/');
                        push_pointer_token(&mut self.pointer, k);
                    }
                    self.depth += 1;
                    self.visit(v, child);
                    self.depth -= 1;
                    self.pointer.truncate(len);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    if self.depth == 1 && self.top == Top::Crosswalk {
                        self.crosswalk_entry(v);
                    }
                    let child = self.child(node, Key::Index(i as u32));
                    if self.top == Top::Relationships {
                        push_index_token(&mut self.pointer, i);
                    }
                    self.depth += 1;
                    self.visit(v, child);
                    self.depth -= 1;
                    self.pointer.truncate(len);
                }
            }
            _ => {
                let mut run = LeafRun {
                    count: 1,
                    set_by: Some(SetBy::Pinv),
                    from: NONE,
                    rule: NONE,
                    reason: NONE,
                };
                match self.top {
                    Top::Id => {
                        if self.id_reason == NONE {
                            self.id_reason = self.reason("the PINV id of the product".to_owned());
                        }
                        run.reason = self.id_reason;
                    }
                    Top::Crosswalk => (run.from, run.reason) = self.entry,
                    // No take covers it: not listed.
                    Top::Relationships | Top::Merged => run.set_by = None,
                }
                self.push(run);
            }
        }
    }

    /// The trace node below `node` at `key` (`NONE` when there is none; PINV's own fields
    /// are not looked up).
    fn child(&self, node: u32, key: Key<'a>) -> u32 {
        if node == NONE || matches!(self.top, Top::Id | Top::Crosswalk) {
            return NONE;
        }
        self.children.get(&(node, key)).copied().unwrap_or(NONE)
    }

    /// The leaves of `value`, the value the merge took whole at trace node `node`.
    fn taken(&mut self, value: &Value, node: u32) {
        let traced = &self.trace.nodes[node as usize];
        let (who, found) = (traced.take, traced.rule);
        let run = LeafRun {
            count: 0,
            set_by: Some(SetBy::Source),
            from: who,
            rule: self.rule_of(found),
            reason: NONE,
        };
        if self.top == Top::Relationships {
            // Leaf by leaf: PINV may have put a resolved id in place of the source's.
            self.relationship(value, run);
        } else {
            let (nodes, leaves) = count(value);
            self.next += nodes - 1;
            self.push(LeafRun {
                count: leaves,
                ..run
            });
        }
    }

    /// The leaves of `value` (at `self.pointer`) in `productRelationship`, covered by a
    /// take whose provenance is `run`.
    fn relationship(&mut self, value: &Value, run: LeafRun) {
        let len = self.pointer.len();
        match value {
            Value::Object(o) if !o.is_empty() => {
                for (k, v) in o {
                    self.next += 1;
                    self.pointer.push('/');
                    push_pointer_token(&mut self.pointer, k);
                    self.relationship(v, run);
                    self.pointer.truncate(len);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    self.next += 1;
                    push_index_token(&mut self.pointer, i);
                    self.relationship(v, run);
                    self.pointer.truncate(len);
                }
            }
            _ => {
                let who = run.from as usize;
                let source = &self.ranked[who].source;
                match self.resolved_relationship(value, source) {
                    Some(raw) => {
                        let reason = self.reason(format!(
                            "relationship id '{raw}' sent by {source} resolved to this PINV product"
                        ));
                        self.push(LeafRun {
                            count: 1,
                            set_by: Some(SetBy::Pinv),
                            rule: NONE,
                            reason,
                            ..run
                        });
                    }
                    None => self.push(LeafRun { count: 1, ..run }),
                }
            }
        }
    }

    /// Appends `run`, joining it to the last run when their provenance is the same.
    fn push(&mut self, run: LeafRun) {
        self.leaf_count += run.count as usize;
        if let Some(last) = self.leaves.last_mut() {
            let same = (last.set_by, last.from, last.rule, last.reason)
                == (run.set_by, run.from, run.rule, run.reason);
            if same {
                last.count += run.count;
                return;
            }
        }
        self.leaves.push(run);
    }

    fn reason(&mut self, reason: String) -> u32 {
        self.reasons.push(reason);
        (self.reasons.len() - 1) as u32
    }

    /// Sets `self.entry` for the crosswalk entry `entry`: the contribution it is about.
    fn crosswalk_entry(&mut self, entry: &Value) {
        let owner = entry.get("owner").and_then(Value::as_str).unwrap_or("");
        let about = self
            .ranked
            .iter()
            .rposition(|c| c.source.as_str() == owner)
            .map_or(NONE, |who| who as u32);
        let reason = self.reason(format!("crosswalk entry for the local id {owner} sent"));
        self.entry = (about, reason);
    }

    /// The index into `rules_used` of `found` (`None`: the default).
    fn rule_of(&mut self, found: Option<&'a FieldRule>) -> u32 {
        let same = |r: &Option<&FieldRule>| match (r, found) {
            (Some(a), Some(b)) => std::ptr::eq(*a, b),
            (None, None) => true,
            _ => false,
        };
        match self.found_rules.iter().position(same) {
            Some(i) => i as u32,
            None => {
                self.found_rules.push(found);
                let rule = rule_used(self.rules, found, &mut self.default_precedence);
                self.rules_used.push(rule);
                (self.rules_used.len() - 1) as u32
            }
        }
    }

    /// The raw id a source sent, when `value` at `self.pointer` is the PINV id (or href)
    /// that PINV put in its place.
    fn resolved_relationship(&self, value: &Value, source: &Source) -> Option<String> {
        let rest = self.pointer.strip_prefix("/productRelationship/")?;
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
}

/// (nodes, leaves) of `value`.
fn count(value: &Value) -> (u32, u32) {
    match value {
        Value::Object(o) if !o.is_empty() => o.values().fold((1, 0), |(n, l), v| {
            let (vn, vl) = count(v);
            (n + vn, l + vl)
        }),
        Value::Array(a) if !a.is_empty() => a.iter().fold((1, 0), |(n, l), v| {
            let (vn, vl) = count(v);
            (n + vn, l + vl)
        }),
        _ => (1, 1),
    }
}

fn from(c: &Contribution) -> From {
    From {
        source: c.source.clone(),
        event_id: c.event_id.clone(),
        time: c.time,
    }
}

/// How `rule` (`None`: the default) is named in an explanation; `default` is the default
/// precedence, shared.
fn rule_used(
    rules: &Rules,
    rule: Option<&FieldRule>,
    default: &mut Option<Arc<[Source]>>,
) -> RuleUsed {
    let mut default = || {
        default
            .get_or_insert_with(|| rules.precedence.as_slice().into())
            .clone()
    };
    match rule {
        Some(rule) => {
            let precedence = match (rule.strategy, &rule.precedence) {
                (Strategy::Owner, _) => rule.owners.as_slice().into(),
                (_, Some(own)) => own.as_slice().into(),
                (_, None) => default(),
            };
            RuleUsed {
                path: Some(rule.path.clone()),
                strategy: rule.strategy,
                element_strategy: (rule.strategy == Strategy::Union)
                    .then_some(rule.element_strategy),
                precedence,
            }
        }
        None => RuleUsed {
            path: None,
            strategy: Strategy::Priority,
            element_strategy: None,
            precedence: default(),
        },
    }
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

    fn leaf<'e>(e: &'e Explanation, pointer: &str) -> Leaf<'e> {
        let found: Vec<Leaf> = e
            .leaves()
            .into_iter()
            .filter(|l| l.pointer == pointer)
            .collect();
        assert_eq!(found.len(), 1, "{pointer} in {:#?}", e.leaves());
        found[0]
    }

    /// (source, rule path, strategy) of the leaf at `pointer`.
    fn who(e: &Explanation, pointer: &str) -> (String, Option<String>, Strategy) {
        let l = leaf(e, pointer);
        assert_eq!(l.set_by, SetBy::Source);
        let rule = l.rule.unwrap();
        (
            l.from.unwrap().source.to_string(),
            rule.path.clone(),
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
            *leaf(&e, "/owned").rule.as_ref().unwrap().precedence,
            [src("b")]
        );
        assert_eq!(
            who(&e, "/reversed"),
            (s("b"), Some(s("reversed")), Strategy::Priority)
        );
        assert_eq!(
            *leaf(&e, "/reversed").rule.as_ref().unwrap().precedence,
            [src("b"), src("a")]
        );
        // An empty value only one source sent still stands, and says whose it is.
        assert_eq!(who(&e, "/only"), (s("b"), None, Strategy::Priority));
        let plain = leaf(&e, "/plain").from.unwrap();
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
            merged.document()["p"][0],
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
            serde_json::to_value(merged.elements()).unwrap(),
            json!([
                {"pointer": "/p/0", "key": {"role": "R"}, "sources": ["a", "b"]},
                {"pointer": "/p/1", "key": {"role": "A"}, "sources": ["a"]},
                {"pointer": "/p/2", "key": {"role": "B"}, "sources": ["b"]},
            ])
        );
        let (a, r) = (src("a"), json!("R"));
        assert_eq!(
            merged.elements()[0],
            Element {
                pointer: "/p/0",
                key: Some(vec![("role", &r)]),
                sources: vec![&a, &src("b")],
            }
        );
        let recency = with(ElementStrategy::Recency);
        assert_eq!(who(&recency, "/p/0/role").0, "b");
        assert_eq!(who(&recency, "/p/0/y").0, "b");
        assert_eq!(recency.elements()[0].sources, vec![&src("a"), &src("b")]);
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
            e.document()["productRelationship"][1]["id"],
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
            (crosswalk.set_by, crosswalk.value),
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
            *e.document(),
            crate::core::merge::merge_document(&pid(1), &cs, &Links::default(), &r)
        );
        let pointers: Vec<&str> = e.leaves().iter().map(|l| l.pointer).collect();
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
        assert_eq!(first.document()["name"], json!("from b"));
        assert_eq!(who(&first, "/name").0, "b");
        let now = explain_at(&record, &history, &r, 2).unwrap();
        assert_eq!(who(&now, "/name").0, "a");
        assert_eq!(*now.document(), record.merged);
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
