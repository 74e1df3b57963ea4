//! Adapters: declarative mappings from a native payload of a system that does not speak
//! TMF637 (an activation request, a care order) to what PINV takes.
//!
//! An adapter is data (one TOML file per system, parsed by [`parser`]): which part of the
//! payload lists the products, the source they are sent as, the event id and time, the
//! secrets to drop, and field by field where each value of the product comes from, with a
//! closed set of transforms. A *snapshot* adapter yields envelopes exactly like
//! `POST /products` bodies; a *change* adapter yields a JSON merge patch (RFC 7386) of the
//! source's own contribution and the identity key that finds the product.
//!
//! Everything here is pure: the shell gives the payload, its HTTP headers and the time of
//! arrival, and gets back what to send, or violations pointing into the native payload.

pub mod parser;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::core::{pointer_token, Source, Violation, Violations};

pub use parser::{AdapterProblem, AdaptersError};

/// Every adapter of an adapters directory, by system name.
#[derive(Debug, Clone, Default)]
pub struct Adapters {
    /// System name (the file name without `.toml`) -> its adapter.
    pub by_system: BTreeMap<String, Adapter>,
}

impl Adapters {
    /// The adapter of `system`, if there is one.
    pub fn get(&self, system: &str) -> Option<&Adapter> {
        self.by_system.get(system)
    }
}

/// One system's mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// The system's name, from its file name: `activation` for `activation.toml`.
    pub system: String,
    /// The source its products are sent as (`headers.source`).
    pub source: Source,
    /// Snapshot or change.
    pub kind: Kind,
    /// JSON Pointer to the payload's products: an array (each element one product) or an
    /// object (one product).
    pub products: String,
    /// JSON Pointers of values dropped before anything else happens; a `*` token stands for
    /// every element of an array (or member of an object).
    pub secrets: Vec<String>,
    /// The event id of each product (evaluated with the product as item).
    pub event_id: Expr,
    /// The event time of each product; the time of arrival when absent.
    pub event_time: Option<Expr>,
    /// The field mappings, in file order.
    pub fields: Vec<Field>,
}

/// What an adapter makes of a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Each product is a whole contribution: an envelope like a `POST /products` body.
    Snapshot,
    /// Each product is a merge patch of the source's contribution to a stored product,
    /// found by an identity-bearing external reference.
    Change {
        /// The `externalIdentifierType` of the key that finds the product (e.g. `MSISDN`).
        identity_type: String,
        /// The key's id.
        identity: Expr,
    },
}

/// Where a value comes from, and what is done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// The origin of the value.
    pub from: Origin,
    /// An enum map: the value (as text) -> what it becomes. A value the map does not list
    /// is an error; a value mapped to `""` is dropped.
    pub map: Option<BTreeMap<String, Value>>,
    /// A transform applied last.
    pub transform: Option<Transform>,
}

/// The origin of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A JSON Pointer into the product's element of the payload.
    Item(String),
    /// A JSON Pointer into the whole payload.
    Payload(String),
    /// An HTTP request header (name compared case-insensitively; stored lowercase).
    Header(String),
    /// A constant.
    Constant(Value),
    /// The parts' text joined by the separator, empty parts skipped.
    Concat(Vec<Expr>, String),
    /// The first part that has a value.
    First(Vec<Expr>),
}

/// The closed set of transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// `2025-03-29` -> `2025-03-29T00:00:00Z`; a date-time with an offset is kept.
    DateToDateTime,
    /// A phone number to E.164 (`1234567890` -> `+11234567890`).
    E164,
}

/// One field mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// JSON Pointer into the product document; a last token `-` appends to an array.
    pub to: String,
    /// The value (ignored with `each`).
    pub expr: Expr,
    /// With `each`: a pointer (into the item) to an array; every element becomes one
    /// element of `to`, built from `wrap`, where `"$/ptr"` is a pointer into the element.
    pub each: Option<String>,
    /// An object template: the string `"$"` is replaced by the value (with `each`, by the
    /// element) and `"$/ptr"` by what the pointer finds in it; members (and array elements)
    /// that come out empty are dropped, and a template that found nothing adds nothing.
    pub wrap: Option<Value>,
    /// A missing value is an error instead of leaving the field out.
    pub required: bool,
}

/// One product of a payload, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// JSON Pointer of the product's element in the native payload.
    pub at: String,
    /// The event id.
    pub event_id: String,
    /// For a snapshot: the envelope (`{"headers", "value"}`); for a change: the merge patch.
    pub body: Value,
    /// For a change: the event time (RFC 3339).
    pub time: String,
    /// For a change: the identity type and normalised id that find the product.
    pub find: Option<(String, String)>,
    /// Where values came from: pointer in the body -> pointer in the native payload, so
    /// problems found later point into what the caller sent.
    pub origins: Vec<(String, String)>,
}

impl Mapped {
    /// The native-payload pointer for a pointer into [`Mapped::body`]: the origin of the
    /// longest mapped prefix, else the product's element.
    pub fn native_pointer(&self, body_pointer: &str) -> String {
        self.origins
            .iter()
            .filter(|(to, _)| {
                body_pointer == to
                    || body_pointer
                        .strip_prefix(to.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(to, _)| to.len())
            .map(|(_, from)| from.clone())
            .unwrap_or_else(|| self.at.clone())
    }
}

/// What a mapping needs besides the payload.
pub struct Input<'a> {
    /// The native payload.
    pub payload: &'a Value,
    /// HTTP request headers, names lowercase.
    pub headers: &'a BTreeMap<String, String>,
    /// The time of arrival (RFC 3339), the event time when the adapter names none.
    pub received: &'a str,
    /// The envelope's `headers.type`.
    pub event_type: &'a str,
}

impl Adapter {
    /// Removes the secret paths from `payload`, in place. Called before anything else, so
    /// no secret reaches a mapping, an error message, the store or the log.
    pub fn drop_secrets(&self, payload: &mut Value) {
        for path in &self.secrets {
            let tokens: Vec<String> = path.split('/').skip(1).map(unescape).collect();
            drop_path(payload, &tokens);
        }
    }

    /// Maps a payload (secrets already dropped) to its products. Every problem of every
    /// product is reported together, each pointing into the native payload.
    pub fn apply(&self, input: &Input<'_>) -> Result<Vec<Mapped>, Violations> {
        let mut problems = Violations::new();
        let items: Vec<(String, &Value)> = match input.payload.pointer(&self.products) {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}/{i}", self.products), v))
                .collect(),
            Some(v @ Value::Object(_)) => vec![(self.products.clone(), v)],
            _ => {
                problems.push(Violation::new(
                    self.products.clone(),
                    format!(
                        "the {} payload must have its products (an array or an object) here",
                        self.system
                    ),
                ));
                return Err(problems);
            }
        };
        if items.is_empty() {
            problems.push(Violation::new(
                self.products.clone(),
                "the payload lists no product",
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (at, item) in items {
            let ctx = Ctx {
                input,
                item,
                at: &at,
            };
            match self.apply_item(&ctx) {
                Ok(m) => out.push(m),
                // One bad value read by several mappings (the number in the id, the
                // reference and the event id) is one problem.
                Err(v) => {
                    for v in v.into_vec() {
                        if !problems.contains(&v) {
                            problems.push(v);
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    fn apply_item(&self, ctx: &Ctx<'_>) -> Result<Mapped, Violations> {
        let mut problems = Violations::new();
        let mut doc = Value::Object(Map::new());
        let mut origins = Vec::new();
        for field in &self.fields {
            if let Err(v) = field.apply(ctx, &mut doc, &mut origins) {
                problems.push(v);
            }
        }
        let event_id = match ctx.eval(&self.event_id) {
            Ok(Some((v, _))) => Some(text(&v)),
            Ok(None) => {
                problems.push(Violation::new(
                    ctx.at,
                    "the event id of this product is missing (see the adapter's [event] id)",
                ));
                None
            }
            Err(v) => {
                problems.push(v);
                None
            }
        };
        let time = match self.event_time.as_ref().map(|e| ctx.eval(e)) {
            None | Some(Ok(None)) => Some(ctx.input.received.to_owned()),
            Some(Ok(Some((v, _)))) => Some(text(&v)),
            Some(Err(v)) => {
                problems.push(v);
                None
            }
        };
        let find = match &self.kind {
            Kind::Snapshot => None,
            Kind::Change {
                identity_type,
                identity,
            } => match ctx.eval(identity) {
                Ok(Some((v, _))) => Some((identity_type.clone(), text(&v))),
                Ok(None) => {
                    problems.push(Violation::new(
                        ctx.at,
                        format!("the {identity_type} that finds the product is missing"),
                    ));
                    None
                }
                Err(v) => {
                    problems.push(v);
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let (event_id, time) = (event_id.unwrap_or_default(), time.unwrap_or_default());
        let body = match self.kind {
            Kind::Snapshot => {
                origins = origins
                    .into_iter()
                    .map(|(to, from)| (format!("/value{to}"), from))
                    .collect();
                serde_json::json!({
                    "headers": {
                        "id": event_id,
                        "source": self.source.as_str(),
                        "type": ctx.input.event_type,
                        "time": time,
                        "datacontenttype": "application/json",
                    },
                    "value": doc,
                })
            }
            Kind::Change { .. } => doc,
        };
        Ok(Mapped {
            at: ctx.at.to_owned(),
            event_id,
            body,
            time,
            find,
            origins,
        })
    }
}

impl Field {
    fn apply(
        &self,
        ctx: &Ctx<'_>,
        doc: &mut Value,
        origins: &mut Vec<(String, String)>,
    ) -> Result<(), Violation> {
        if let Some(each) = &self.each {
            let Some(elements) = ctx.item.pointer(each).and_then(Value::as_array) else {
                return Ok(());
            };
            let wrap = self.wrap.as_ref().unwrap_or(&Value::Null);
            for (j, element) in elements.iter().enumerate() {
                let built = fill(wrap, &|p| {
                    if p.is_empty() {
                        Some(element.clone())
                    } else {
                        element.pointer(p).cloned()
                    }
                });
                if let Some(v) = built {
                    let at = set(doc, &self.to, v);
                    origins.push((at, format!("{}{each}/{j}", ctx.at)));
                }
            }
            return Ok(());
        }
        match ctx.eval(&self.expr)? {
            Some((v, from)) => {
                let v = match &self.wrap {
                    Some(w) => match fill(w, &|p| {
                        if p.is_empty() {
                            Some(v.clone())
                        } else {
                            v.pointer(p).cloned()
                        }
                    }) {
                        Some(v) => v,
                        None => return Ok(()),
                    },
                    None => v,
                };
                let at = set(doc, &self.to, v);
                origins.push((at, from));
                Ok(())
            }
            None if self.required => Err(Violation::new(
                ctx.pointer_of(&self.expr),
                format!("a value is required here (mapped to {})", self.to),
            )),
            None => Ok(()),
        }
    }
}

struct Ctx<'a> {
    input: &'a Input<'a>,
    item: &'a Value,
    at: &'a str,
}

impl Ctx<'_> {
    /// The native pointer an expression reads, for error messages.
    fn pointer_of(&self, e: &Expr) -> String {
        match &e.from {
            Origin::Item(p) => format!("{}{p}", self.at),
            Origin::Payload(p) => p.clone(),
            Origin::Concat(parts, _) | Origin::First(parts) => parts
                .first()
                .map(|p| self.pointer_of(p))
                .unwrap_or_else(|| self.at.to_owned()),
            Origin::Header(_) | Origin::Constant(_) => self.at.to_owned(),
        }
    }

    /// The value of `e` and the native pointer it came from; `None` when empty.
    fn eval(&self, e: &Expr) -> Result<Option<(Value, String)>, Violation> {
        let raw = match &e.from {
            Origin::Item(p) => self
                .item
                .pointer(p)
                .cloned()
                .map(|v| (v, format!("{}{p}", self.at))),
            Origin::Payload(p) => self
                .input
                .payload
                .pointer(p)
                .cloned()
                .map(|v| (v, p.clone())),
            Origin::Header(h) => self
                .input
                .headers
                .get(h)
                .map(|v| (Value::String(v.clone()), self.at.to_owned())),
            Origin::Constant(v) => Some((v.clone(), self.at.to_owned())),
            Origin::Concat(parts, sep) => {
                let mut texts = Vec::new();
                let mut first = None;
                for p in parts {
                    if let Some((v, at)) = self.eval(p)? {
                        texts.push(text(&v));
                        first.get_or_insert(at);
                    }
                }
                first.map(|at| (Value::String(texts.join(sep)), at))
            }
            Origin::First(parts) => {
                let mut found = None;
                for p in parts {
                    if let Some(hit) = self.eval(p)? {
                        found = Some(hit);
                        break;
                    }
                }
                found
            }
        };
        let Some((mut v, at)) = raw.filter(|(v, _)| !is_empty(v)) else {
            return Ok(None);
        };
        if let Some(map) = &e.map {
            let key = text(&v);
            match map.get(&key) {
                Some(m) => v = m.clone(),
                None => {
                    let known: Vec<&str> = map.keys().map(String::as_str).collect();
                    return Err(Violation::new(
                        at,
                        format!(
                            "'{key}' is not a known value; expected one of {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
            if is_empty(&v) {
                return Ok(None);
            }
        }
        if let Some(t) = e.transform {
            v = t.apply(&v).map_err(|m| Violation::new(at.clone(), m))?;
        }
        Ok(Some((v, at)))
    }
}

impl Transform {
    /// Applies the transform, or says why the value does not fit it.
    pub fn apply(self, v: &Value) -> Result<Value, String> {
        let s = match v {
            Value::String(s) => s.as_str(),
            Value::Number(n) => return self.apply(&Value::String(n.to_string())),
            _ => return Err(format!("expected text, found {}", kind_of(v))),
        };
        match self {
            Transform::DateToDateTime => {
                if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10 {
                    Ok(Value::String(format!("{s}T00:00:00Z")))
                } else if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                    Ok(Value::String(s.to_owned()))
                } else {
                    Err(format!(
                        "'{s}' is not a date (YYYY-MM-DD) or an RFC 3339 date-time"
                    ))
                }
            }
            Transform::E164 => crate::core::phone::to_e164(s)
                .map(Value::String)
                .ok_or_else(|| format!("'{s}' is not a phone number")),
        }
    }

    /// The transform's name in adapter files.
    pub fn name(self) -> &'static str {
        match self {
            Transform::DateToDateTime => "date_to_datetime",
            Transform::E164 => "e164",
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `null`, `""`, `[]` and `{}`: dropped, as the merge treats them as absent.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A value as text: strings as they are, other values as their JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fills a template: `"$"` and `"$/ptr"` strings are looked up with `lookup` (`""` or the
/// pointer), other values kept. Empty members and elements are dropped, and so is every
/// object or array whose placeholders all found nothing: its constants alone (a `name`, a
/// `role`) would describe nothing. `None` when nothing is left.
fn fill(template: &Value, lookup: &dyn Fn(&str) -> Option<Value>) -> Option<Value> {
    /// The filled value, and whether the subtree has placeholders and found any.
    fn go(t: &Value, lookup: &dyn Fn(&str) -> Option<Value>) -> (Option<Value>, bool, bool) {
        match t {
            Value::String(s) if s == "$" || s.starts_with("$/") => {
                let v = lookup(&s[1..]).filter(|v| !is_empty(v));
                let found = v.is_some();
                (v, true, found)
            }
            Value::Array(_) | Value::Object(_) => {
                let (mut has, mut found) = (false, false);
                let mut take = |v: &Value| {
                    let (v, h, f) = go(v, lookup);
                    has |= h;
                    found |= f;
                    v
                };
                let v = match t {
                    Value::Array(a) => {
                        let kept: Vec<Value> = a.iter().filter_map(&mut take).collect();
                        (!kept.is_empty()).then_some(Value::Array(kept))
                    }
                    Value::Object(o) => {
                        let m: Map<String, Value> = o
                            .iter()
                            .filter_map(|(k, v)| take(v).map(|v| (k.clone(), v)))
                            .collect();
                        (!m.is_empty()).then_some(Value::Object(m))
                    }
                    _ => unreachable!("matched above"),
                };
                (v.filter(|_| !has || found), has, found)
            }
            other => (Some(other.clone()), false, false),
        }
    }
    if template.is_null() {
        return lookup("");
    }
    go(template, lookup).0
}

/// Sets `v` at `pointer` in `doc`, creating objects (and an array for a `-` token, which
/// appends); answers the concrete pointer written.
fn set(doc: &mut Value, pointer: &str, v: Value) -> String {
    let tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let mut at = String::new();
    let mut cur = doc;
    for (i, t) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        if t == "-" {
            if !cur.is_array() {
                *cur = Value::Array(Vec::new());
            }
            let a = cur.as_array_mut().expect("just made an array");
            at.push_str(&format!("/{}", a.len()));
            a.push(if last {
                v.clone()
            } else {
                Value::Object(Map::new())
            });
            cur = a.last_mut().expect("just pushed");
        } else {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            at.push('/');
            at.push_str(&pointer_token(t));
            let o = cur.as_object_mut().expect("just made an object");
            if last {
                o.insert(t.clone(), v.clone());
            }
            cur = o
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    at
}

fn unescape(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn drop_path(v: &mut Value, tokens: &[String]) {
    let Some((first, rest)) = tokens.split_first() else {
        return;
    };
    let wild = first == "*";
    match v {
        Value::Object(o) => {
            if rest.is_empty() {
                if wild {
                    o.clear();
                } else {
                    o.remove(first);
                }
            } else if wild {
                o.values_mut().for_each(|c| drop_path(c, rest));
            } else if let Some(c) = o.get_mut(first) {
                drop_path(c, rest);
            }
        }
        Value::Array(a) => {
            if wild {
                if rest.is_empty() {
                    a.clear();
                } else {
                    a.iter_mut().for_each(|c| drop_path(c, rest));
                }
            } else if let Ok(i) = first.parse::<usize>() {
                if rest.is_empty() {
                    if i < a.len() {
                        a.remove(i);
                    }
                } else if let Some(c) = a.get_mut(i) {
                    drop_path(c, rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
