//! The TMF630 query language of the list routes: filters on dotted paths with comparison
//! operators, `sort`, `offset`, `limit` and `fields`.
//!
//! [`Query::parse`] reads a raw query string once (so a symbol operator such as `>=`, which
//! a form decoder would split as the name `startDate>`, is seen as written);
//! [`Filter::matches`] evaluates the filters on any JSON document, so other readers of
//! TMF queries (hub subscriptions) can use the parser on its own.
//!
//! Values are typed by what they can mean: a query value is always text, and also a number
//! when it is a JSON number, a date when it is an RFC 3339 date-time or a `YYYY-MM-DD` date
//! (midnight UTC), a boolean when it is `true` or `false`. A document leaf has one kind: a
//! number, a boolean, a date (a string that is a date) or other text. A leaf compares with
//! a query value only in the leaf's kind: numbers as numbers, dates as instants, text as
//! text (bytewise), so `startDate.gte=2024-01-01` never compares a date with a name.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// Attributes every list item carries, whatever `fields=` asks for.
pub const ALWAYS_PROJECTED: [&str; 3] = ["id", "href", "@type"];

/// Parameters of the list routes that are not filters.
pub const RESERVED: [&str; 4] = ["fields", "sort", "offset", "limit"];

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1000;

/// Operator names of other query dialects (and TMF630 ones PINV does not support): a path
/// ending in one is refused rather than read as an attribute that no product has.
const UNSUPPORTED_OPERATORS: [&str; 14] = [
    "eq",
    "in",
    "nin",
    "like",
    "regex",
    "contains",
    "exists",
    "after",
    "before",
    "ge",
    "le",
    "startsWith",
    "endsWith",
    "between",
];

/// A query parameter PINV cannot read: the parameter's name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter '{parameter}': {message}")]
pub struct QueryError {
    /// The parameter as the client wrote it (decoded where it could be).
    pub parameter: String,
    /// What is wrong with it.
    pub message: String,
}

impl QueryError {
    fn new(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `path=v` (any of a comma list).
    Eq,
    /// `path.ne=v`, `path!=v`: no value at the path equals any of the list (an absent path
    /// matches).
    Ne,
    /// `path.gt=v`, `path>v`.
    Gt,
    /// `path.gte=v`, `path>=v`.
    Gte,
    /// `path.lt=v`, `path<v`.
    Lt,
    /// `path.lte=v`, `path<=v`.
    Lte,
}

impl Op {
    fn from_suffix(name: &str) -> Option<Self> {
        Some(match name {
            "ne" => Self::Ne,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            _ => return None,
        })
    }

    /// Whether this operator bounds a range (rather than testing equality).
    pub fn is_range(self) -> bool {
        matches!(self, Self::Gt | Self::Gte | Self::Lt | Self::Lte)
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering == Ordering::Equal,
            Self::Ne => ordering != Ordering::Equal,
            Self::Gt => ordering == Ordering::Greater,
            Self::Gte => ordering != Ordering::Less,
            Self::Lt => ordering == Ordering::Less,
            Self::Lte => ordering != Ordering::Greater,
        }
    }
}

/// The kind of a document leaf, which decides how it compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A JSON number.
    Number,
    /// A string that is an RFC 3339 date-time or a `YYYY-MM-DD` date.
    Date,
    /// Any other string.
    Text,
    /// `true` or `false`.
    Bool,
}

/// A value in one kind, comparable with others of that kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// A number, compared as a 64-bit float.
    Number(f64),
    /// An instant.
    Date(DateTime<Utc>),
    /// Text, compared bytewise.
    Text(String),
    /// A boolean (`false` before `true`).
    Bool(bool),
}

impl Typed {
    /// The kind of this value.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Number(_) => Kind::Number,
            Self::Date(_) => Kind::Date,
            Self::Text(_) => Kind::Text,
            Self::Bool(_) => Kind::Bool,
        }
    }

    /// The leaf `value` as a typed value, or `None` for null, arrays and objects.
    pub fn of_leaf(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Number(n) => Self::Number(n.as_f64()?),
            Value::Bool(b) => Self::Bool(*b),
            Value::String(s) => parse_date(s).map_or_else(|| Self::Text(s.clone()), Self::Date),
            Value::Null | Value::Array(_) | Value::Object(_) => return None,
        })
    }

    /// Compares two values; values of different kinds order by kind.
    pub fn compare(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Number(a), Self::Number(b)) => a.total_cmp(b),
            (Self::Date(a), Self::Date(b)) => a.cmp(b),
            (Self::Text(a), Self::Text(b)) => a.cmp(b),
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (a, b) => a.kind().cmp(&b.kind()),
        }
    }
}

/// One value of a filter: the text as given, and each kind it can be read as.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryValue {
    /// The decoded text.
    pub text: String,
    /// Its readings: always [`Typed::Text`], plus a number, date or boolean when it is one.
    pub readings: Vec<Typed>,
}

impl QueryValue {
    /// Reads `text` in every kind it can be.
    pub fn new(text: &str) -> Self {
        let mut readings = vec![Typed::Text(text.to_owned())];
        if let Some(n) = parse_number(text) {
            readings.push(Typed::Number(n));
        }
        if let Some(d) = parse_date(text) {
            readings.push(Typed::Date(d));
        }
        match text {
            "true" => readings.push(Typed::Bool(true)),
            "false" => readings.push(Typed::Bool(false)),
            _ => {}
        }
        Self {
            text: text.to_owned(),
            readings,
        }
    }

    /// This value read in `kind`, if it can be.
    pub fn reading(&self, kind: Kind) -> Option<&Typed> {
        self.readings.iter().find(|r| r.kind() == kind)
    }
}

/// One filter: all of a query's filters must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The dotted path, split into attribute names (arrays are transparent).
    pub path: Vec<String>,
    /// The operator.
    pub op: Op,
    /// The values: any of them (`Eq`, range operators) or none of them (`Ne`).
    pub values: Vec<QueryValue>,
}

impl Filter {
    /// The dotted path as written.
    pub fn dotted_path(&self) -> String {
        self.path.join(".")
    }

    /// Whether `doc` satisfies this filter.
    pub fn matches(&self, doc: &Value) -> bool {
        let mut leaves = Vec::new();
        collect_leaves(doc, &self.path, &mut leaves);
        let hit = |op: Op| {
            leaves.iter().any(|leaf| {
                self.values.iter().any(|v| {
                    v.reading(leaf.kind())
                        .is_some_and(|q| op.holds(leaf.compare(q)))
                })
            })
        };
        match self.op {
            Op::Ne => !hit(Op::Eq),
            op => hit(op),
        }
    }
}

/// One sort key: a path, ascending or descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The dotted path, split.
    pub path: Vec<String>,
    /// `-path`.
    pub descending: bool,
}

/// A parsed list query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Filters, all of which must hold.
    pub filters: Vec<Filter>,
    /// Sort keys, most significant first; empty keeps PINV id order.
    pub sort: Vec<SortKey>,
    /// Matching documents to skip.
    pub offset: u64,
    /// At most this many documents.
    pub limit: u64,
    /// `fields=` projection (dotted paths, split), if asked.
    pub fields: Option<Vec<Vec<String>>>,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            filters: Vec::new(),
            sort: Vec::new(),
            offset: 0,
            limit: DEFAULT_LIMIT,
            fields: None,
        }
    }
}

impl Query {
    /// A query of equality filters only (every document when `pairs` is empty), with no
    /// paging limit: what `pinv remerge --filter` and the admin route select by.
    pub fn equalities<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            filters: pairs
                .into_iter()
                .map(|(path, value)| Filter {
                    path: path.split('.').map(str::to_owned).collect(),
                    op: Op::Eq,
                    values: vec![QueryValue::new(value)],
                })
                .collect(),
            limit: u64::MAX,
            ..Self::default()
        }
    }

    /// Parses a raw (still percent-encoded) query string. Every parameter other than
    /// [`RESERVED`] is a filter; `ignored` names parameters the caller reads itself.
    pub fn parse(raw: &str, ignored: &[&str]) -> Result<Self, QueryError> {
        let mut query = Self::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, symbol, value) = split_pair(pair)?;
            if ignored.contains(&name.as_str()) {
                continue;
            }
            if RESERVED.contains(&name.as_str()) {
                if symbol != Some(Op::Eq) {
                    return Err(QueryError::new(
                        &name,
                        "takes a value after '=' and no comparison operator",
                    ));
                }
                query.read_reserved(&name, &value)?;
                continue;
            }
            query.filters.push(parse_filter(&name, symbol, &value)?);
        }
        Ok(query)
    }

    fn read_reserved(&mut self, name: &str, value: &str) -> Result<(), QueryError> {
        match name {
            "fields" => {
                let list = comma_paths(name, value)?;
                self.fields = Some(list);
            }
            "sort" => {
                let mut keys = Vec::new();
                for item in value.split(',') {
                    let item = item.trim();
                    let (descending, path) = match item.strip_prefix('-') {
                        Some(rest) => (true, rest),
                        None => (false, item.strip_prefix('+').unwrap_or(item)),
                    };
                    keys.push(SortKey {
                        path: parse_path(name, path)?,
                        descending,
                    });
                }
                self.sort = keys;
            }
            "offset" => {
                self.offset = value.parse().map_err(|e: std::num::ParseIntError| {
                    let problem = match e.kind() {
                        std::num::IntErrorKind::PosOverflow => {
                            format!("'{value}' is too large (at most {})", u64::MAX)
                        }
                        _ => format!("'{value}' is not a whole number from 0"),
                    };
                    QueryError::new("offset", problem)
                })?;
            }
            _ => {
                self.limit = match value.parse::<u64>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(QueryError::new(
                            "limit",
                            format!("'{value}' is not a number from 1 to {MAX_LIMIT}"),
                        ))
                    }
                };
            }
        }
        Ok(())
    }

    /// Whether every filter holds for `doc`.
    pub fn matches(&self, doc: &Value) -> bool {
        self.filters.iter().all(|f| f.matches(doc))
    }

    /// The page of `docs` (matching documents, in PINV id order) this query asks for, and
    /// how many there are in all. Sorting is stable (ties keep id order), absent values last
    /// in either direction. Only `offset + limit` documents are kept at a time.
    pub fn page(&self, docs: impl IntoIterator<Item = Value>) -> (Vec<Value>, u64) {
        let mut pager = self.pager();
        for doc in docs {
            pager.push(doc);
        }
        pager.finish()
    }

    /// [`Self::page`] one document at a time, for documents that arrive asynchronously.
    pub fn pager(&self) -> Pager<'_> {
        Pager {
            query: self,
            keep: usize::try_from(self.offset.saturating_add(self.limit)).unwrap_or(usize::MAX),
            total: 0,
            items: Vec::new(),
            sorted: Vec::new(),
        }
    }

    /// The sort values of `doc`: per key, the first leaf at the path, if any.
    pub fn sort_values(&self, doc: &Value) -> Vec<Option<Typed>> {
        self.sort
            .iter()
            .map(|key| {
                let mut leaves = Vec::new();
                collect_leaves(doc, &key.path, &mut leaves);
                leaves.into_iter().next()
            })
            .collect()
    }

    /// Orders two documents' [`Self::sort_values`].
    pub fn compare_sort_values(&self, a: &[Option<Typed>], b: &[Option<Typed>]) -> Ordering {
        for ((key, x), y) in self.sort.iter().zip(a).zip(b) {
            let ordering = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) if key.descending => y.compare(x),
                (Some(x), Some(y)) => x.compare(y),
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }

    fn sort_entries(&self, entries: &mut [SortEntry]) {
        entries.sort_by(|a, b| {
            self.compare_sort_values(&a.0, &b.0)
                .then_with(|| a.1.cmp(&b.1))
        });
    }

    /// `doc` projected to `fields=`, or as it is when none were asked.
    pub fn project(&self, doc: Value) -> Value {
        match &self.fields {
            Some(fields) => project(&doc, fields),
            None => doc,
        }
    }
}

/// A document's sort values, its position among the matches, and the document.
type SortEntry = (Vec<Option<Typed>>, u64, Value);

/// Builds a page from matching documents pushed in PINV id order; see [`Query::page`].
#[derive(Debug)]
pub struct Pager<'q> {
    query: &'q Query,
    keep: usize,
    total: u64,
    items: Vec<Value>,
    sorted: Vec<SortEntry>,
}

impl Pager<'_> {
    /// Counts `doc` and keeps it if it may be on the page.
    pub fn push(&mut self, doc: Value) {
        let query = self.query;
        if query.sort.is_empty() {
            if self.total >= query.offset && (self.items.len() as u64) < query.limit {
                self.items.push(doc);
            }
        } else {
            let keys = query.sort_values(&doc);
            self.sorted.push((keys, self.total, doc));
            // Trim at twice the page: n log(page) time, page-sized memory.
            if self.sorted.len() >= self.keep.saturating_mul(2).max(64) {
                query.sort_entries(&mut self.sorted);
                self.sorted.truncate(self.keep);
            }
        }
        self.total += 1;
    }

    /// The page, and how many documents were pushed.
    pub fn finish(mut self) -> (Vec<Value>, u64) {
        let query = self.query;
        if query.sort.is_empty() {
            return (self.items, self.total);
        }
        query.sort_entries(&mut self.sorted);
        let items = self
            .sorted
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
            .map(|(_, _, doc)| doc)
            .collect();
        (items, self.total)
    }
}

/// Keeps only the attributes at the `fields` paths (dotted paths, split; arrays are
/// transparent, so `relatedParty.role` keeps each party's role), plus the top-level `id`,
/// `href` and `@type`. A `doc` that is not an object is returned unchanged.
pub fn project(doc: &Value, fields: &[Vec<String>]) -> Value {
    let Value::Object(map) = doc else {
        return doc.clone();
    };
    let mut tree = FieldTree::default();
    for path in fields {
        tree.insert(path);
    }
    for name in ALWAYS_PROJECTED {
        tree.children.insert(name.to_owned(), FieldTree::whole());
    }
    Value::Object(tree.select(map))
}

/// The `fields=` paths as a tree: a node with `whole` keeps its value entire.
#[derive(Debug, Default)]
struct FieldTree {
    whole: bool,
    children: BTreeMap<String, FieldTree>,
}

impl FieldTree {
    fn whole() -> Self {
        Self {
            whole: true,
            children: BTreeMap::new(),
        }
    }

    fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.whole = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn select(&self, map: &Map<String, Value>) -> Map<String, Value> {
        map.iter()
            .filter_map(|(name, value)| {
                let node = self.children.get(name)?;
                let kept = node.apply(value)?;
                Some((name.clone(), kept))
            })
            .collect()
    }

    fn apply(&self, value: &Value) -> Option<Value> {
        if self.whole {
            return Some(value.clone());
        }
        match value {
            Value::Object(map) => Some(Value::Object(self.select(map))),
            Value::Array(items) => Some(Value::Array(
                items.iter().filter_map(|item| self.apply(item)).collect(),
            )),
            // A scalar has no attributes to select from.
            _ => None,
        }
    }
}

/// The typed leaves at `path` below `node`, arrays entered at every level, in document
/// order.
pub fn collect_leaves(node: &Value, path: &[String], out: &mut Vec<Typed>) {
    match node {
        Value::Array(items) => {
            for item in items {
                collect_leaves(item, path, out);
            }
        }
        Value::Object(map) => {
            if let Some((first, rest)) = path.split_first() {
                if let Some(child) = map.get(first) {
                    collect_leaves(child, rest, out);
                }
            }
        }
        leaf if path.is_empty() => out.extend(Typed::of_leaf(leaf)),
        _ => {}
    }
}

/// Decodes a raw `name<op>value` pair and splits it at its operator. Clients send a
/// symbol raw (`startDate>=x`) or percent-encoded (`startDate%3E=x`, as URL libraries
/// encode `<` and `>`): either way the decoded name ends in the symbol's first character
/// when the pair has an `=`, or holds the symbol and the value when it has none.
fn split_pair(pair: &str) -> Result<(String, Option<Op>, String), QueryError> {
    let (raw_name, raw_value) = match pair.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (pair, None),
    };
    let decoded = decode(raw_name).map_err(|why| QueryError::new(raw_name, why))?;
    let unknown = |name: &str, shown: &str| {
        QueryError::new(
            name,
            format!("unknown operator '{shown}' (use = != > >= < <=, or .gt .gte .lt .lte .ne)"),
        )
    };
    let Some(at) = decoded.find(['<', '>', '!']) else {
        let value = match raw_value {
            Some(v) => {
                // `==`, `=~`, `=<`...: not operators PINV knows (an encoded value may start so).
                if let Some(c) = v.chars().next().filter(|c| "=~<>!".contains(*c)) {
                    return Err(unknown(&decoded, &format!("={c}")));
                }
                decode(v).map_err(|why| QueryError::new(&decoded, why))?
            }
            None => String::new(),
        };
        return Ok((decoded, Some(Op::Eq), value));
    };
    let name = decoded[..at].to_owned();
    let symbol = &decoded[at..];
    match raw_value {
        Some(v) => {
            let op = match symbol {
                ">" => Op::Gte,
                "<" => Op::Lte,
                "!" => Op::Ne,
                _ => return Err(unknown(&name, &format!("{symbol}="))),
            };
            if let Some(c) = v.chars().next().filter(|c| "=~<>!".contains(*c)) {
                return Err(unknown(&name, &format!("{symbol}={c}")));
            }
            let value = decode(v).map_err(|why| QueryError::new(&name, why))?;
            Ok((name, Some(op), value))
        }
        None => {
            let op = match symbol.chars().next() {
                Some('>') => Op::Gt,
                Some('<') => Op::Lt,
                _ => return Err(unknown(&name, &symbol[..1])),
            };
            let value = symbol[1..].to_owned();
            if value.starts_with(['=', '~', '<', '>', '!']) {
                return Err(unknown(&name, &symbol[..2]));
            }
            Ok((name, Some(op), value))
        }
    }
}

fn parse_filter(name: &str, symbol: Option<Op>, value: &str) -> Result<Filter, QueryError> {
    if name == "as-adi-package" {
        return Err(QueryError::new(
            name,
            "has no meaning on a list (it applies to one product: GET /products/{id})",
        ));
    }
    let mut path = parse_path(name, name)?;
    let mut op = symbol.unwrap_or(Op::Eq);
    let last = path.last().map(String::as_str).unwrap_or_default();
    if path.len() > 1 {
        if let Some(suffix) = Op::from_suffix(last) {
            if op != Op::Eq {
                return Err(QueryError::new(
                    name,
                    "has two operators (a suffix and a symbol)",
                ));
            }
            op = suffix;
            path.pop();
        } else if UNSUPPORTED_OPERATORS.contains(&last) {
            return Err(QueryError::new(
                name,
                format!(
                    "unknown operator '.{last}' (use .gt .gte .lt .lte .ne, or = != > >= < <=)"
                ),
            ));
        }
    }
    let values: Vec<QueryValue> = if op.is_range() {
        if value.is_empty() {
            return Err(QueryError::new(name, "a comparison needs a value"));
        }
        if value.contains(',') {
            return Err(QueryError::new(
                name,
                "a comparison takes one value, not a comma list",
            ));
        }
        vec![QueryValue::new(value)]
    } else {
        value.split(',').map(QueryValue::new).collect()
    };
    Ok(Filter { path, op, values })
}

fn comma_paths(name: &str, value: &str) -> Result<Vec<Vec<String>>, QueryError> {
    let list: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if list.is_empty() {
        return Err(QueryError::new(name, "must name at least one field"));
    }
    list.into_iter().map(|p| parse_path(name, p)).collect()
}

/// A dotted attribute path: non-empty names, without characters that cannot be in one.
fn parse_path(parameter: &str, path: &str) -> Result<Vec<String>, QueryError> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    let bad = |s: &String| {
        s.is_empty()
            || s.chars()
                .any(|c| c.is_control() || c.is_whitespace() || "=<>!,~*()[]{}\"'".contains(c))
    };
    if segments.iter().any(bad) {
        return Err(QueryError::new(
            parameter,
            format!("'{path}' is not a dotted attribute path"),
        ));
    }
    Ok(segments)
}

/// Percent-decodes one name or value strictly: a malformed `%` escape or text that is not
/// UTF-8 once decoded is an error (a lenient decoder would filter on the wrong text).
pub fn decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            let shown: String = raw[i..].chars().take(3).collect();
            return Err(format!(
                "'{shown}' is not a percent-encoded byte (% and two hex digits)"
            ));
        }
    }
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| "is not UTF-8 once percent-decoded".to_owned())
}

/// A JSON number's value, when `text` is one.
fn parse_number(text: &str) -> Option<f64> {
    let n: serde_json::Number = serde_json::from_str(text).ok()?;
    n.as_f64().filter(|f| f.is_finite())
}

/// An RFC 3339 date-time, or a `YYYY-MM-DD` date at midnight UTC.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    // Cheap test first: most strings are not dates.
    let b = text.as_bytes();
    if b.len() < 10 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    if b.len() == 10 {
        let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some(day.and_hms_opt(0, 0, 0)?.and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(raw: &str) -> Query {
        Query::parse(raw, &[]).unwrap()
    }

    fn err(raw: &str) -> QueryError {
        Query::parse(raw, &[]).unwrap_err()
    }

    fn doc() -> Value {
        json!({
            "id": "p1", "href": "/products/p1", "@type": "Product",
            "name": "Fibre", "status": "active", "quantity": 5, "ratio": 2.50,
            "isBundle": false,
            "startDate": "2024-03-01T10:00:00+01:00",
            "externalReference": [{"id": "X"}, {"id": "12345"}],
            "relatedParty": [
                {"role": "customer", "partyOrPartyRole": {"id": "c1", "name": "ACME"}},
                {"role": "owner", "partyOrPartyRole": [{"id": "o1"}, {"id": "o2"}]}
            ]
        })
    }

    fn holds(raw: &str) -> bool {
        q(raw).matches(&doc())
    }

    #[test]
    fn equality_on_dotted_paths_through_arrays_and_any_of() {
        assert!(holds("status=active"));
        assert!(!holds("status=terminated"));
        assert!(holds("status=suspended,active"));
        assert!(holds("externalReference.id=12345"));
        assert!(holds("relatedParty.partyOrPartyRole.id=o2"));
        assert!(!holds("relatedParty.partyOrPartyRole.id=o3"));
        assert!(holds("status=active&name=Fibre"));
        assert!(!holds("status=active&name=Copper"));
    }

    #[test]
    fn symbols_and_suffixes_are_the_same_operators() {
        for (a, b) in [
            ("startDate>=2024-03-01", "startDate.gte=2024-03-01"),
            ("startDate>2024-03-01", "startDate.gt=2024-03-01"),
            ("quantity<=5", "quantity.lte=5"),
            ("quantity<5", "quantity.lt=5"),
            ("status!=active", "status.ne=active"),
        ] {
            assert_eq!(q(a).filters, q(b).filters, "{a} vs {b}");
        }
    }

    #[test]
    fn dates_compare_as_instants_whatever_the_offset() {
        assert!(holds("startDate=2024-03-01T09:00:00Z"));
        assert!(holds("startDate.gte=2024-03-01T09:00:00Z"));
        assert!(!holds("startDate.gt=2024-03-01T09:00:00Z"));
        assert!(holds("startDate.lt=2024-03-01T09:00:00.001Z"));
        assert!(holds("startDate>=2024-03-01"));
        assert!(!holds("startDate<2024-03-01"));
        // Text that is not a date never compares with a date.
        assert!(!holds("startDate.gte=a"));
    }

    #[test]
    fn numbers_compare_as_numbers_and_text_as_text() {
        assert!(holds("quantity=5.0"));
        assert!(holds("ratio=2.5"));
        assert!(holds("quantity.gt=4.5"));
        assert!(holds("quantity.lt=10"));
        assert!(!holds("quantity.gt=10"));
        assert!(holds("name.gt=Copper"));
        assert!(!holds("name.gt=G"));
        // A string of digits is text: it equals "12345" but does not compare as a number.
        let code = json!({"code": "12345"});
        assert!(!q("code.gt=20000").matches(&code));
        assert!(q("code.lt=2").matches(&code));
        assert!(holds("isBundle=false"));
        assert!(!holds("isBundle=0"));
    }

    #[test]
    fn ne_is_no_value_equal_and_holds_when_absent() {
        assert!(!holds("status!=active"));
        assert!(holds("status!=terminated"));
        assert!(!holds("status.ne=terminated,active"));
        assert!(holds("missing!=x"));
        assert!(!holds("externalReference.id!=X"));
    }

    #[test]
    fn reserved_parameters() {
        let p = q("fields=name,relatedParty.role&offset=5&limit=1000&sort=name,-startDate");
        assert_eq!(p.offset, 5);
        assert_eq!(p.limit, 1000);
        assert_eq!(
            p.fields,
            Some(vec![
                vec!["name".to_owned()],
                vec!["relatedParty".to_owned(), "role".to_owned()]
            ])
        );
        assert_eq!(
            p.sort,
            vec![
                SortKey {
                    path: vec!["name".to_owned()],
                    descending: false
                },
                SortKey {
                    path: vec!["startDate".to_owned()],
                    descending: true
                }
            ]
        );
        assert_eq!(q("").limit, DEFAULT_LIMIT);
        assert!(Query::parse("as-adi-package&status=a", &["as-adi-package"]).is_ok());
    }

    #[test]
    fn what_pinv_cannot_read_is_an_error_naming_it() {
        for (raw, parameter) in [
            ("limit=abc", "limit"),
            ("limit=1001", "limit"),
            ("limit=0", "limit"),
            ("offset=x", "offset"),
            ("offset=18446744073709551616", "offset"),
            ("fields=", "fields"),
            ("sort=", "sort"),
            ("sort=a,,b", "sort"),
            ("limit>=5", "limit"),
            ("a..b=1", "a..b"),
            ("status=~active", "status"),
            ("status==active", "status"),
            ("status!active", "status"),
            ("startDate.after=2024-01-01", "startDate.after"),
            ("status.eq=active", "status.eq"),
            ("startDate.gte>=2024-01-01", "startDate.gte"),
            ("startDate.gte=", "startDate.gte"),
            ("startDate>=a,b", "startDate"),
            ("as-adi-package", "as-adi-package"),
            ("status=%ZZ", "status"),
            ("s%ZZ=1", "s%ZZ"),
        ] {
            let e = err(raw);
            assert_eq!(e.parameter, parameter, "{raw}: {e}");
        }
        assert!(err("offset=18446744073709551616")
            .message
            .contains("too large"));
    }

    #[test]
    fn encoded_symbols_in_the_name_are_operators_as_url_libraries_send_them() {
        assert_eq!(q("startDate%3E=2024-01-01"), q("startDate>=2024-01-01"));
        assert_eq!(q("startDate%3C=2024-01-01"), q("startDate<=2024-01-01"));
        assert_eq!(q("startDate%3E2024-01-01"), q("startDate>2024-01-01"));
        assert_eq!(q("startDate%3C2024-01-01"), q("startDate.lt=2024-01-01"));
        assert_eq!(q("status%21=active"), q("status.ne=active"));
    }

    #[test]
    fn an_encoded_symbol_is_part_of_the_value() {
        let p = q("name=%3E%3Dx");
        assert_eq!(p.filters[0].values[0].text, ">=x");
        assert_eq!(p.filters[0].op, Op::Eq);
    }

    fn run(raw: &str, docs: Vec<Value>) -> (Vec<Value>, u64) {
        let query = q(raw);
        query.page(docs.into_iter().filter(|d| query.matches(d)))
    }

    fn ids(items: &[Value]) -> Vec<&str> {
        items.iter().map(|d| d["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn sort_is_stable_with_absent_values_last_both_ways() {
        let docs = vec![
            json!({"id": "1", "name": "b", "n": 2}),
            json!({"id": "2", "n": 10}),
            json!({"id": "3", "name": "a", "n": 2}),
            json!({"id": "4", "name": "b", "n": 1}),
        ];
        let (items, total) = run("sort=name", docs.clone());
        assert_eq!((ids(&items), total), (vec!["3", "1", "4", "2"], 4));
        let (items, _) = run("sort=-name", docs.clone());
        assert_eq!(ids(&items), ["1", "4", "3", "2"]);
        let (items, _) = run("sort=name,-n", docs.clone());
        assert_eq!(ids(&items), ["3", "1", "4", "2"]);
        let (items, _) = run("sort=n", docs.clone());
        assert_eq!(ids(&items), ["4", "1", "3", "2"]);
        let (items, total) = run("sort=-n&offset=1&limit=2&n.lt=10", docs);
        assert_eq!((ids(&items), total), (vec!["3", "4"], 3));
    }

    #[test]
    fn project_dotted_paths_into_objects_and_arrays() {
        let out =
            q("fields=name,relatedParty.role,relatedParty.partyOrPartyRole.id").project(doc());
        assert_eq!(
            out,
            json!({
                "id": "p1", "href": "/products/p1", "@type": "Product", "name": "Fibre",
                "relatedParty": [
                    {"role": "customer", "partyOrPartyRole": {"id": "c1"}},
                    {"role": "owner", "partyOrPartyRole": [{"id": "o1"}, {"id": "o2"}]}
                ]
            })
        );
        assert_eq!(
            q("fields=missing,status.id").project(doc()),
            json!({"id": "p1", "href": "/products/p1", "@type": "Product"})
        );
    }

    mod laws {
        use proptest::prelude::*;

        use super::*;

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                (-50i64..50).prop_map(|n| json!(n)),
                "[a-c]{0,2}".prop_map(Value::String),
                (0u32..40).prop_map(|d| json!(format!("2024-01-{:02}T00:00:00Z", d % 28 + 1))),
            ]
        }

        fn word() -> impl Strategy<Value = String> {
            prop_oneof![
                (-50i64..50).prop_map(|n| n.to_string()),
                "[a-c]{1,2}",
                (1u32..29).prop_map(|d| format!("2024-01-{d:02}")),
            ]
        }

        proptest! {
            #[test]
            fn ne_is_the_negation_of_eq(v in leaf(), w in word()) {
                let d = json!({"a": v});
                let eq = q(&format!("a={w}")).matches(&d);
                let ne = q(&format!("a!={w}")).matches(&d);
                prop_assert_eq!(eq, !ne);
            }

            #[test]
            fn ranges_split_into_lt_eq_gt(v in leaf(), w in word()) {
                let d = json!({"a": v});
                let m = |op: &str| q(&format!("a{op}{w}")).matches(&d);
                // gte is gt or eq, lte is lt or eq, and at most one of lt, eq, gt holds.
                prop_assert_eq!(m(">="), m(">") || m("="));
                prop_assert_eq!(m("<="), m("<") || m("="));
                prop_assert!(u8::from(m("<")) + u8::from(m("=")) + u8::from(m(">")) <= 1);
            }

            #[test]
            fn a_page_is_a_slice_of_the_whole_sorted_list(
                values in proptest::collection::vec(proptest::option::of(leaf()), 0..30),
                offset in 0u64..35, limit in 1u64..10, descending: bool,
            ) {
                let docs: Vec<Value> = values.iter().enumerate().map(|(i, v)| match v {
                    Some(v) => json!({"id": i.to_string(), "a": v}),
                    None => json!({"id": i.to_string()}),
                }).collect();
                let sort = if descending { "-a" } else { "a" };
                let (all, total) = run(&format!("sort={sort}&limit=1000"), docs.clone());
                let (page, t) = run(&format!("sort={sort}&offset={offset}&limit={limit}"), docs);
                prop_assert_eq!(total, t);
                let expected: Vec<Value> = all.into_iter().skip(offset as usize).take(limit as usize).collect();
                prop_assert_eq!(page, expected);
            }
        }
    }
}
