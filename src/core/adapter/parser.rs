//! The adapter file parser: walks each file's TOML and names every problem (file, field,
//! reason), so one run of `pinv check-adapters` lists them all.

use std::collections::BTreeMap;

use toml::{Table, Value as Toml};

use super::{Adapter, Adapters, Expr, Field, Kind, Origin, Transform};
use crate::core::Source;

/// A problem in an adapter file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {problem}")]
pub struct AdapterProblem {
    /// The file name.
    pub file: String,
    /// The field (TOML path) at fault, e.g. `field[3].transform`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem found in an adapters directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid adapters:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct AdaptersError(pub Vec<AdapterProblem>);

/// Keys of an expression table.
const ORIGINS: [&str; 6] = ["from", "payload", "header", "constant", "concat", "first"];
const EXPR_KEYS: [&str; 9] = [
    "from",
    "payload",
    "header",
    "constant",
    "concat",
    "first",
    "separator",
    "map",
    "transform",
];
const TOP_KEYS: [&str; 7] = [
    "source", "kind", "products", "secrets", "event", "find", "field",
];
/// Fields PINV sets itself or refuses from sources.
const FORBIDDEN_TARGETS: [&str; 2] = ["/href", "/externalIdentifier"];

impl Adapters {
    /// Parses adapter files given as `(file name, contents)`; the system is the file name
    /// without `.toml`. Every problem of every file is reported.
    pub fn from_files(files: &[(String, String)]) -> Result<Adapters, AdaptersError> {
        let mut p = Parser::default();
        let mut out = Adapters::default();
        for (name, content) in files {
            let system = name.strip_suffix(".toml").unwrap_or(name).to_owned();
            if Source::parse(&system).is_err() {
                p.problem(
                    name,
                    "(file name)",
                    "a system name (the file name without .toml) is 1 to 64 of A-Z a-z 0-9 . _ -",
                );
            }
            match toml::from_str::<Table>(content) {
                Ok(table) => {
                    if let Some(a) = p.adapter(name, system.clone(), &table) {
                        out.by_system.insert(system, a);
                    }
                }
                Err(e) => p.problem(
                    name,
                    "(syntax)",
                    format!("TOML syntax error: {}", e.message().trim()),
                ),
            }
        }
        if p.problems.is_empty() {
            Ok(out)
        } else {
            Err(AdaptersError(p.problems))
        }
    }
}

#[derive(Default)]
struct Parser {
    problems: Vec<AdapterProblem>,
}

impl Parser {
    fn problem(&mut self, file: &str, field: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(AdapterProblem {
            file: file.to_owned(),
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn check_keys(&mut self, file: &str, at: &str, t: &Table, allowed: &[&str]) {
        for key in t.keys() {
            if !allowed.contains(&key.as_str()) {
                let field = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                self.problem(
                    file,
                    field,
                    format!("unknown key; expected one of {}", allowed.join(", ")),
                );
            }
        }
    }

    fn string<'t>(&mut self, file: &str, at: &str, v: Option<&'t Toml>) -> Option<&'t str> {
        match v {
            None => {
                self.problem(file, at, "required");
                None
            }
            Some(Toml::String(s)) => Some(s),
            Some(_) => {
                self.problem(file, at, "must be a string");
                None
            }
        }
    }

    fn pointer(&mut self, file: &str, at: &str, v: Option<&Toml>) -> Option<String> {
        let s = self.string(file, at, v)?;
        if s.is_empty() || s.starts_with('/') {
            Some(s.to_owned())
        } else {
            self.problem(
                file,
                at,
                format!("'{s}' is not a JSON Pointer; it must start with '/' (or be \"\")"),
            );
            None
        }
    }

    fn adapter(&mut self, file: &str, system: String, t: &Table) -> Option<Adapter> {
        let before = self.problems.len();
        self.check_keys(file, "", t, &TOP_KEYS);
        let source = self.string(file, "source", t.get("source")).and_then(|s| {
            Source::parse(s)
                .map_err(|e| self.problem(file, "source", e.to_string()))
                .ok()
        });
        let products = self.pointer(file, "products", t.get("products"));
        let secrets = match t.get("secrets") {
            None => Vec::new(),
            Some(Toml::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.pointer(file, &format!("secrets[{i}]"), Some(v)))
                .collect(),
            Some(_) => {
                self.problem(file, "secrets", "must be an array of JSON Pointers");
                Vec::new()
            }
        };
        let (event_id, event_time) = match t.get("event") {
            Some(Toml::Table(e)) => {
                self.check_keys(file, "event", e, &["id", "time"]);
                let id = self.expr_at(file, "event.id", e.get("id"));
                let time = e
                    .get("time")
                    .and_then(|v| self.expr_at(file, "event.time", Some(v)));
                (id, time)
            }
            Some(_) => {
                self.problem(
                    file,
                    "event",
                    "must be a table with id (and optionally time)",
                );
                (None, None)
            }
            None => {
                self.problem(
                    file,
                    "event",
                    "required: [event] id = { ... } says where the event id comes from",
                );
                (None, None)
            }
        };
        let kind = match (self.string(file, "kind", t.get("kind")), t.get("find")) {
            (Some("snapshot"), None) => Some(Kind::Snapshot),
            (Some("snapshot"), Some(_)) => {
                self.problem(file, "find", "only a change adapter finds products; a snapshot identifies them by its fields");
                None
            }
            (Some("change"), Some(Toml::Table(f))) => {
                let mut keys: Vec<&str> = EXPR_KEYS.to_vec();
                keys.push("type");
                self.check_keys(file, "find", f, &keys);
                let ty = self
                    .string(file, "find.type", f.get("type"))
                    .map(str::to_owned);
                let expr = self.expr(file, "find", f);
                match (ty, expr) {
                    (Some(identity_type), Some(identity)) => Some(Kind::Change {
                        identity_type,
                        identity,
                    }),
                    _ => None,
                }
            }
            (Some("change"), _) => {
                self.problem(file, "find", "required for a change adapter: a table with type (an identity externalIdentifierType) and where its id comes from");
                None
            }
            (Some(other), _) => {
                self.problem(
                    file,
                    "kind",
                    format!("unknown kind '{other}'; expected snapshot or change"),
                );
                None
            }
            (None, _) => None,
        };
        let mut fields = Vec::new();
        match t.get("field") {
            None => self.problem(file, "field", "at least one [[field]] is required"),
            Some(Toml::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let at = format!("field[{i}]");
                    match v {
                        Toml::Table(f) => {
                            if let Some(f) = self.field(file, &at, f) {
                                fields.push(f);
                            }
                        }
                        _ => self.problem(file, at, "must be a table"),
                    }
                }
            }
            Some(_) => self.problem(file, "field", "must be an array of tables ([[field]])"),
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Adapter {
            system,
            source: source?,
            kind: kind?,
            products: products?,
            secrets,
            event_id: event_id?,
            event_time,
            fields,
        })
    }

    fn field(&mut self, file: &str, at: &str, t: &Table) -> Option<Field> {
        let mut keys: Vec<&str> = EXPR_KEYS.to_vec();
        keys.extend(["to", "each", "wrap", "required"]);
        self.check_keys(file, at, t, &keys);
        let to = self.pointer(file, &format!("{at}.to"), t.get("to"));
        if let Some(to) = &to {
            if to.is_empty() {
                self.problem(
                    file,
                    format!("{at}.to"),
                    "must name a field of the product, not the whole product",
                );
            }
            for bad in FORBIDDEN_TARGETS {
                if to == bad || to.starts_with(&format!("{bad}/")) {
                    self.problem(
                        file,
                        format!("{at}.to"),
                        format!("{bad} is set by PINV, not by a source"),
                    );
                }
            }
        }
        let wrap = t.get("wrap").map(to_json);
        if wrap.as_ref().is_some_and(|w| !w.is_object()) {
            self.problem(
                file,
                format!("{at}.wrap"),
                "must be a table (the element template)",
            );
        }
        let required = match t.get("required") {
            None => false,
            Some(Toml::Boolean(b)) => *b,
            Some(_) => {
                self.problem(file, format!("{at}.required"), "must be true or false");
                false
            }
        };
        let (each, expr) = if t.contains_key("each") {
            let each = self.pointer(file, &format!("{at}.each"), t.get("each"));
            for k in ORIGINS
                .iter()
                .chain(["map", "transform", "separator"].iter())
            {
                if t.contains_key(*k) {
                    self.problem(file, format!("{at}.{k}"), "not allowed with each: the element's values come from wrap's \"$/pointer\" strings");
                }
            }
            if wrap.is_none() {
                self.problem(file, format!("{at}.wrap"), "required with each");
            }
            if !to.as_ref().is_some_and(|t| t.ends_with("/-")) {
                self.problem(
                    file,
                    format!("{at}.to"),
                    "with each, to must end with /- (elements are appended to an array)",
                );
            }
            (
                each,
                Some(Expr {
                    from: Origin::Constant(serde_json::Value::Null),
                    map: None,
                    transform: None,
                }),
            )
        } else {
            (None, self.expr(file, at, t))
        };
        Some(Field {
            to: to?,
            expr: expr?,
            each,
            wrap,
            required,
        })
    }

    fn expr_at(&mut self, file: &str, at: &str, v: Option<&Toml>) -> Option<Expr> {
        match v {
            Some(Toml::Table(t)) => {
                self.check_keys(file, at, t, &EXPR_KEYS);
                self.expr(file, at, t)
            }
            Some(_) => {
                self.problem(file, at, "must be a table such as { from = \"/pointer\" }");
                None
            }
            None => {
                self.problem(file, at, "required");
                None
            }
        }
    }

    /// The expression keys of `t` (other keys are the caller's to check).
    fn expr(&mut self, file: &str, at: &str, t: &Table) -> Option<Expr> {
        let given: Vec<&str> = ORIGINS
            .iter()
            .copied()
            .filter(|k| t.contains_key(*k))
            .collect();
        if given.len() != 1 {
            self.problem(
                file,
                at,
                format!(
                    "needs exactly one of {} (found {})",
                    ORIGINS.join(", "),
                    if given.is_empty() {
                        "none".to_owned()
                    } else {
                        given.join(", ")
                    }
                ),
            );
            return None;
        }
        let key = given[0];
        let here = format!("{at}.{key}");
        let from = match key {
            "from" => self.pointer(file, &here, t.get(key)).map(Origin::Item),
            "payload" => self.pointer(file, &here, t.get(key)).map(Origin::Payload),
            "header" => self
                .string(file, &here, t.get(key))
                .map(|h| Origin::Header(h.to_ascii_lowercase())),
            "constant" => Some(Origin::Constant(to_json(&t[key]))),
            _ => {
                let parts = match t.get(key) {
                    Some(Toml::Array(a)) if !a.is_empty() => a
                        .iter()
                        .enumerate()
                        .map(|(i, v)| self.expr_at(file, &format!("{here}[{i}]"), Some(v)))
                        .collect::<Vec<_>>(),
                    _ => {
                        self.problem(file, &here, "must be a non-empty array of expressions");
                        return None;
                    }
                };
                let parts: Option<Vec<Expr>> = parts.into_iter().collect();
                if key == "concat" {
                    let sep = match t.get("separator") {
                        None => String::new(),
                        Some(Toml::String(s)) => s.clone(),
                        Some(_) => {
                            self.problem(file, format!("{at}.separator"), "must be a string");
                            String::new()
                        }
                    };
                    parts.map(|p| Origin::Concat(p, sep))
                } else {
                    parts.map(Origin::First)
                }
            }
        };
        if t.contains_key("separator") && key != "concat" {
            self.problem(file, format!("{at}.separator"), "only with concat");
        }
        let map = match t.get("map") {
            None => None,
            Some(Toml::Table(m)) if !m.is_empty() => Some(
                m.iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect::<BTreeMap<_, _>>(),
            ),
            Some(_) => {
                self.problem(
                    file,
                    format!("{at}.map"),
                    "must be a non-empty table of value = replacement",
                );
                None
            }
        };
        let transform = match t.get("transform") {
            None => None,
            Some(Toml::String(s)) => match s.as_str() {
                "date_to_datetime" => Some(Transform::DateToDateTime),
                "e164" => Some(Transform::E164),
                other => {
                    self.problem(
                        file,
                        format!("{at}.transform"),
                        format!("unknown transform '{other}'; expected one of date_to_datetime, e164 (constant, map, concat and dropping empty values are keys of their own)"),
                    );
                    None
                }
            },
            Some(_) => {
                self.problem(file, format!("{at}.transform"), "must be a string");
                None
            }
        };
        Some(Expr {
            from: from?,
            map,
            transform,
        })
    }
}

/// TOML -> JSON; dates and times become their RFC 3339 text.
fn to_json(v: &Toml) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Toml::String(s) => J::String(s.clone()),
        Toml::Integer(i) => J::from(*i),
        Toml::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Toml::Boolean(b) => J::Bool(*b),
        Toml::Datetime(d) => J::String(d.to_string()),
        Toml::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Toml::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}
