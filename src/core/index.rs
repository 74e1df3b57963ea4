//! The list index: which products have which value at the indexed paths, as ordered text
//! entries a store keeps beside its products, so that an equality or range filter on an
//! indexed path reads a few entries instead of every product.
//!
//! An entry is `path \u{1} kind value \u{1} product id`, where `kind value` encodes a leaf
//! in its [`Kind`](crate::core::query::Kind) so that text order is the kind's order (numbers and instants as
//! fixed-width hex of an order-preserving bit pattern, text as itself). A filter becomes
//! ranges of entries ([`IndexedPaths::candidates`]); the ranges may hold more products than
//! match (the query is evaluated on them afterwards), never fewer.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::core::query::{collect_leaves, Filter, Op, Query, Typed};
use crate::core::record::ProductWrite;
use crate::core::PinvId;

/// The paths indexed unless configured otherwise: those most used to find products.
pub const DEFAULT_PATHS: [&str; 7] = [
    "status",
    "externalReference.id",
    "externalIdentifier.id",
    "relatedParty.id",
    "productSpecification.id",
    "productOffering.id",
    "startDate",
];

/// Separates an entry's path, value and product id; below every character a query value
/// may carry into a range bound (see [`bound_safe`]).
const SEP: char = '\u{1}';
/// The character after [`SEP`]: an exclusive upper bound just above `... SEP id`.
const AFTER_SEP: char = '\u{2}';

/// The configured indexed paths.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexedPaths {
    paths: Vec<String>,
    /// Each path's names, split once here rather than for every product written.
    segments: Vec<Vec<String>>,
}

impl IndexedPaths {
    /// Parses dotted paths (non-empty names, no control characters).
    pub fn parse<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut out: Vec<String> = Vec::new();
        for path in paths {
            let path = path.trim();
            if path.split('.').any(str::is_empty) || path.chars().any(char::is_control) {
                return Err(format!("'{path}' is not a dotted attribute path"));
            }
            if !out.iter().any(|p| p == path) {
                out.push(path.to_owned());
            }
        }
        let segments = out
            .iter()
            .map(|path| path.split('.').map(str::to_owned).collect())
            .collect();
        Ok(Self {
            paths: out,
            segments,
        })
    }

    /// [`DEFAULT_PATHS`].
    pub fn standard() -> Self {
        Self::parse(DEFAULT_PATHS).expect("the default paths are valid")
    }

    /// The paths, in configured order.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// A text that changes whenever the set of paths does: a store that finds another one
    /// beside its index rebuilds the index.
    pub fn fingerprint(&self) -> String {
        let sorted: BTreeSet<&str> = self.paths.iter().map(String::as_str).collect();
        sorted.into_iter().collect::<Vec<_>>().join("\n")
    }

    /// Every entry of the product `id` whose merged document is `doc`.
    pub fn entries(&self, id: &PinvId, doc: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut leaves = Vec::new();
        for (path, segments) in self.paths.iter().zip(&self.segments) {
            collect_leaves(doc, segments, &mut leaves);
            for leaf in leaves.drain(..) {
                out.insert(format!("{path}{SEP}{}{SEP}{id}", encode(&leaf)));
            }
        }
        out
    }

    /// Whether `write` can change its product's [`Self::entries`]: unless it names the
    /// top-level attributes it changes ([`ProductWrite::changed_attributes`]) and no indexed
    /// path starts with one of them.
    pub fn may_change(&self, write: &ProductWrite) -> bool {
        let Some(changed) = &write.changed_attributes else {
            return true;
        };
        // A parsed path has at least one (non-empty) name.
        self.segments
            .iter()
            .any(|names| changed.iter().any(|a| names.first() == Some(a)))
    }

    /// Per filter the index can answer, the `[from, to)` entry ranges that hold every
    /// product the filter matches; `None` when no filter can use the index (the store
    /// scans). A product must appear in some range of each list.
    pub fn candidates(&self, query: &Query) -> Option<Vec<Vec<(String, String)>>> {
        let lists: Vec<_> = query
            .filters
            .iter()
            .filter_map(|f| self.ranges(f))
            .collect();
        (!lists.is_empty()).then_some(lists)
    }

    fn ranges(&self, filter: &Filter) -> Option<Vec<(String, String)>> {
        let path = filter.dotted_path();
        if filter.op == Op::Ne || !self.paths.contains(&path) {
            return None;
        }
        let mut out = Vec::new();
        for value in &filter.values {
            for reading in &value.readings {
                let encoded = encode(reading);
                if !bound_safe(&encoded) {
                    return None;
                }
                let kind = &encoded[..1];
                let next_kind = char::from(kind.as_bytes()[0] + 1);
                let range = match filter.op {
                    Op::Eq => (
                        format!("{path}{SEP}{encoded}{SEP}"),
                        format!("{path}{SEP}{encoded}{AFTER_SEP}"),
                    ),
                    Op::Gt | Op::Gte => (
                        format!("{path}{SEP}{encoded}"),
                        format!("{path}{SEP}{next_kind}"),
                    ),
                    Op::Lt | Op::Lte => (
                        format!("{path}{SEP}{kind}"),
                        format!("{path}{SEP}{encoded}{AFTER_SEP}"),
                    ),
                    Op::Ne => return None,
                };
                out.push(range);
            }
        }
        Some(out)
    }
}

/// The product an entry is about.
pub fn product_of(entry: &str) -> Option<PinvId> {
    let (_, id) = entry.rsplit_once(SEP)?;
    PinvId::parse(id).ok()
}

/// A bound is exact only when no character of it sorts at or below [`SEP`]: a value with
/// such a character would sort before shorter values' separators.
fn bound_safe(encoded: &str) -> bool {
    encoded.chars().all(|c| c > AFTER_SEP)
}

/// A kind letter, then the value in an encoding whose text order is the kind's order.
fn encode(value: &Typed) -> String {
    match value {
        Typed::Number(n) => {
            let bits = n.to_bits();
            // Order-preserving: flip every bit of a negative, only the sign of a positive.
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            format!("n{ordered:016x}")
        }
        Typed::Date(d) => {
            let secs = (d.timestamp() as u64) ^ (1 << 63);
            format!("d{secs:016x}{:08x}", d.timestamp_subsec_nanos())
        }
        Typed::Text(s) => format!("t{s}"),
        Typed::Bool(b) => format!("b{}", u8::from(*b)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id(n: u8) -> PinvId {
        PinvId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
    }

    #[test]
    fn only_writes_that_may_touch_an_indexed_path_may_change_entries() {
        let paths = IndexedPaths::parse(["status", "relatedParty.id"]).unwrap();
        let write = |changed: Option<&[&str]>| ProductWrite {
            record: crate::core::record::ProductRecord {
                id: id(1),
                revision: 1,
                contributions: Vec::new(),
                links: Default::default(),
                merged: json!({}),
                match_keys: Vec::new(),
                package_root: None,
                rules_hash: String::new(),
            },
            expected_revision: None,
            contributions_unchanged: false,
            changed_attributes: changed.map(|c| c.iter().map(|a| a.to_string()).collect()),
            merged_json: None,
        };
        assert!(
            paths.may_change(&write(None)),
            "unknown changes may touch anything"
        );
        assert!(!paths.may_change(&write(Some(&["name", "description"]))));
        assert!(!paths.may_change(&write(Some(&[]))));
        assert!(paths.may_change(&write(Some(&["name", "status"]))));
        assert!(paths.may_change(&write(Some(&["relatedParty"]))));
        // A prefix of a name is another attribute.
        assert!(!paths.may_change(&write(Some(&["relatedParties", "state"]))));
    }

    /// The products the index proposes for `query`, as a store would compute them.
    fn candidates(paths: &IndexedPaths, docs: &[Value], query: &str) -> Option<BTreeSet<u8>> {
        let all: BTreeSet<String> = docs
            .iter()
            .enumerate()
            .flat_map(|(i, d)| paths.entries(&id(i as u8), d))
            .collect();
        let query = Query::parse(query, &[]).unwrap();
        let lists = paths.candidates(&query)?;
        let per_list = lists.iter().map(|ranges| {
            ranges
                .iter()
                .flat_map(|(from, to)| all.range(from.clone()..to.clone()))
                .map(|e| {
                    let p = product_of(e).unwrap();
                    (0..=255u8).find(|n| id(*n) == p).unwrap()
                })
                .collect::<BTreeSet<u8>>()
        });
        per_list.reduce(|a, b| a.intersection(&b).copied().collect())
    }

    fn docs() -> Vec<Value> {
        vec![
            json!({"status": "active", "startDate": "2024-01-01T00:00:00Z", "n": 5}),
            json!({"status": "suspended", "startDate": "2024-06-01T02:00:00+02:00", "n": -1.5}),
            json!({"status": "active", "startDate": "2023-12-31", "n": 10}),
            json!({"status": "activeX", "relatedParty": [{"id": "a"}, {"id": "b"}]}),
            json!({"status": "a\u{0}b"}),
        ]
    }

    #[test]
    fn the_index_proposes_exactly_the_matches_on_simple_data() {
        let paths = IndexedPaths::parse(["status", "startDate", "n", "relatedParty.id"]).unwrap();
        let docs = docs();
        for query in [
            "status=active",
            "status=active,suspended",
            "status.gte=active",
            "status.gt=active",
            "status.lt=b",
            "startDate.gte=2024-01-01",
            "startDate.lt=2024-06-01T00:00:00Z",
            "startDate.lte=2024-06-01T00:00:00Z",
            "startDate=2024-05-31T22:00:00Z",
            "n.gt=-2",
            "n.lt=5",
            "n.lte=5",
            "n=10.0",
            "relatedParty.id=b",
            "status=active&startDate.lt=2024-01-01",
        ] {
            let q = Query::parse(query, &[]).unwrap();
            let expected: BTreeSet<u8> = docs
                .iter()
                .enumerate()
                .filter(|(_, d)| q.matches(d))
                .map(|(i, _)| i as u8)
                .collect();
            let proposed = candidates(&paths, &docs, query).unwrap();
            assert!(
                proposed.is_superset(&expected),
                "{query}: {proposed:?} {expected:?}"
            );
            // Strict bounds are read inclusively (the query drops the equal ones after).
            if !query.contains(".gt=") && !query.contains(".lt=") {
                assert_eq!(proposed, expected, "{query}");
            }
        }
    }

    #[test]
    fn filters_the_index_cannot_answer_leave_a_scan() {
        let paths = IndexedPaths::parse(["status"]).unwrap();
        assert!(candidates(&paths, &docs(), "status!=active").is_none());
        assert!(candidates(&paths, &docs(), "name=x").is_none());
        assert!(candidates(&paths, &docs(), "status.lt=a%01").is_none());
        // One indexable filter is enough; the other is checked on the candidates.
        assert!(candidates(&paths, &docs(), "status=active&name=x").is_some());
    }

    #[test]
    fn number_and_date_encodings_keep_order() {
        let numbers = [-1e300, -2.5, -0.0, 0.0, 1e-9, 3.0, 1e300];
        for pair in numbers.windows(2) {
            assert!(
                encode(&Typed::Number(pair[0])) < encode(&Typed::Number(pair[1])),
                "{pair:?}"
            );
        }
        let dates = [
            "0001-01-01",
            "1969-12-31T23:59:59.5Z",
            "1970-01-01",
            "2024-01-01T00:00:00.000000001Z",
        ];
        for pair in dates.windows(2) {
            let a = crate::core::query::parse_date(pair[0]).unwrap();
            let b = crate::core::query::parse_date(pair[1]).unwrap();
            assert!(
                encode(&Typed::Date(a)) < encode(&Typed::Date(b)),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn paths_are_validated_and_fingerprinted_as_a_set() {
        assert!(IndexedPaths::parse(["a..b"]).is_err());
        assert!(IndexedPaths::parse([""]).is_err());
        let a = IndexedPaths::parse(["a", "b"]).unwrap();
        let b = IndexedPaths::parse(["b", "a", "a"]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            a.fingerprint(),
            IndexedPaths::parse(["a"]).unwrap().fingerprint()
        );
        assert_eq!(IndexedPaths::standard().paths().len(), 7);
    }
}
