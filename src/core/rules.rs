//! Declarative merge rules, loaded from the TOML files of `merge-rules/`.
//!
//! The parsed [`Rules`] value is what every other part of the core consumes;
//! reading the files from disk is the caller's business ([`Rules::from_files`] takes
//! their names and contents).

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::core::Source;

/// How a field's value is chosen among the contributions that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The value of the first source in the precedence order that has one.
    Priority,
    /// The value from the contribution with the newest `headers.time`.
    Recency,
    /// The value from the contribution with the oldest `headers.time`.
    Oldest,
    /// Only the named owners may set the field (in the order listed).
    Owner,
    /// Arrays: elements from every source, matched by key fields.
    Union,
}

/// How two elements of a `union` array that share a key are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementStrategy {
    /// Field by field, recursively, each field by the rules that apply at its path
    /// (`priority` where none does).
    Merge,
    /// The whole element from the first source in precedence order.
    Priority,
    /// The whole element from the newest contribution.
    Recency,
    /// The whole element from the oldest contribution.
    Oldest,
}

/// The rule for one field path (`status`, `productSpecification.name`, `relatedParty.partyOrPartyRole`).
///
/// Paths are dotted attribute names; arrays are transparent, so `relatedParty.role`
/// names the `role` of every `relatedParty` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// Dotted path of the field.
    pub path: String,
    /// How the field's value is chosen.
    pub strategy: Strategy,
    /// Per-field precedence (for `priority`, tie-breaks elsewhere); `None` uses the default order.
    pub precedence: Option<Vec<Source>>,
    /// The sources allowed to set the field (`owner` only; non-empty there).
    pub owners: Vec<Source>,
    /// Key fields that match elements of a `union` array across sources (non-empty there).
    pub key: Vec<String>,
    /// How matched `union` elements are combined.
    pub element_strategy: ElementStrategy,
    /// When true, `null`, `""`, `[]` and `{}` count as values rather than as absent.
    pub keep_empty: bool,
    /// The file that declared the rule, for messages.
    pub declared_in: String,
}

/// Product roles within an ADI package.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// AT&T Dedicated Internet: the package root.
    #[serde(rename = "ADI")]
    Adi,
    /// The access circuit.
    #[serde(rename = "ACCESS")]
    Access,
    /// The port.
    #[serde(rename = "PORT")]
    Port,
    /// Dynamic Defense (optional).
    #[serde(rename = "DD")]
    Dd,
}

impl Role {
    /// Every role, in package order.
    pub const ALL: [Role; 4] = [Role::Adi, Role::Access, Role::Port, Role::Dd];

    /// The role's name as written in rules and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Adi => "ADI",
            Role::Access => "ACCESS",
            Role::Port => "PORT",
            Role::Dd => "DD",
        }
    }
}

/// Everything the merge rules declare, validated.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Default source precedence, highest first. Sources not named rank after all
    /// named ones, ordered by name.
    pub precedence: Vec<Source>,
    /// Field rules by dotted path.
    pub fields: BTreeMap<String, FieldRule>,
    /// `externalReference[].externalIdentifierType` values that identify a product
    /// (default `CircuitID`).
    pub identity_types: Vec<String>,
    /// Glob patterns over `productSpecification.id`, per role.
    pub role_globs: BTreeMap<Role, Vec<String>>,
    /// Compiled role globs (kept beside the patterns so matching is cheap).
    pub role_matchers: Vec<(Role, globset::GlobSet)>,
    /// Accepted `headers.type` values.
    pub accepted_types: Vec<String>,
    /// Hex SHA-256 over the rule files' names and contents, so a merged document can
    /// be traced to the rules that made it.
    pub hash: String,
}

/// A problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {problem}")]
pub struct RuleProblem {
    /// The file name.
    pub file: String,
    /// The field (TOML path) at fault, e.g. `field[3].strategy`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem found in a rules directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid merge rules:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct RulesError(pub Vec<RuleProblem>);

impl Rules {
    /// Parses and validates rule files given as `(file name, contents)`, in the order given
    /// (callers pass them sorted by name). Every problem in every file is reported.
    ///
    /// Sections may be split across files in any way, but each singleton section
    /// (`[precedence]`, `[identity]`, `[events]`, `[package.roles]`) may be declared only
    /// once across all files, and a field path only once.
    pub fn from_files(files: &[(String, String)]) -> Result<Rules, RulesError> {
        let mut parser = Parser::default();
        for (name, content) in files {
            match toml::from_str::<Table>(content) {
                Ok(table) => parser.file(name, &table),
                Err(e) => parser.syntax_error(name, content, &e),
            }
        }
        parser.finish(files)
    }

    /// The rank of `source` in `order` (lower is stronger): named sources by position, the
    /// rest after them by name.
    pub fn rank<'a>(order: &[Source], source: &'a Source) -> (usize, &'a str) {
        match order.iter().position(|s| s == source) {
            Some(i) => (i, ""),
            None => (order.len(), source.as_str()),
        }
    }

    /// The rule declared for exactly this dotted path, if any.
    pub fn field(&self, path: &str) -> Option<&FieldRule> {
        self.fields.get(path)
    }

    /// The precedence order that applies to `rule`: its own when it declares one,
    /// otherwise the default.
    pub fn precedence_for<'a>(&'a self, rule: &'a FieldRule) -> &'a [Source] {
        rule.precedence.as_deref().unwrap_or(&self.precedence)
    }

    /// The package role of a product whose `productSpecification.id` is `spec_id`: the
    /// first role, in [`Role::ALL`] order, with a matching glob.
    pub fn role_of(&self, spec_id: &str) -> Option<Role> {
        self.role_matchers
            .iter()
            .find(|(_, set)| set.is_match(spec_id))
            .map(|(role, _)| *role)
    }

    /// Whether `headers.type` is one of the accepted event types.
    pub fn accepts_type(&self, event_type: &str) -> bool {
        self.accepted_types.iter().any(|t| t == event_type)
    }
}

/// Paths PINV writes itself; a rule there would fight the service.
const SERVICE_OWNED: [&str; 5] = [
    "id",
    "href",
    "externalIdentifier",
    "productRelationship.id",
    "productRelationship.href",
];

/// Keys allowed in a `[[field]]` table.
const FIELD_KEYS: [&str; 7] = [
    "path",
    "strategy",
    "key",
    "element_strategy",
    "precedence",
    "owners",
    "keep_empty",
];

/// Walks the parsed files, collecting values and every problem found on the way.
///
/// The files are walked as plain TOML tables rather than deserialised with serde so
/// that one run can report every problem instead of stopping at the first.
#[derive(Default)]
struct Parser {
    problems: Vec<RuleProblem>,
    /// Singleton section name -> file that declared it first.
    declared: BTreeMap<&'static str, String>,
    precedence: Option<Vec<Source>>,
    identity_types: Option<Vec<String>>,
    /// `Some` once `[events]` is declared; the inner `None` when its list is invalid.
    accepted_types: Option<Option<Vec<String>>>,
    roles: Option<BTreeMap<Role, Vec<String>>>,
    /// Field path -> (file, TOML path of the rule), for duplicate detection.
    field_sites: BTreeMap<String, (String, String)>,
    fields: BTreeMap<String, FieldRule>,
}

impl Parser {
    fn problem(&mut self, file: &str, field: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(RuleProblem {
            file: file.to_owned(),
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn syntax_error(&mut self, file: &str, content: &str, e: &toml::de::Error) {
        let at = e
            .span()
            .map(|span| {
                let before = &content[..span.start.min(content.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        self.problem(
            file,
            "(syntax)",
            format!("TOML syntax error{at}: {}", e.message().trim()),
        );
    }

    /// Records that `file` declares the singleton `section`; false (and a problem) when
    /// another file already did.
    fn declare(&mut self, file: &str, section: &'static str) -> bool {
        if let Some(first) = self.declared.get(section) {
            let problem = format!(
                "[{section}] is already declared in {first}; declare it once across all rule files"
            );
            self.problem(file, section, problem);
            false
        } else {
            self.declared.insert(section, file.to_owned());
            true
        }
    }

    fn file(&mut self, file: &str, table: &Table) {
        for (key, value) in table {
            match key.as_str() {
                "precedence" => self.precedence_section(file, value),
                "identity" => self.identity_section(file, value),
                "events" => self.events_section(file, value),
                "package" => self.package_section(file, value),
                "field" => self.field_array(file, value),
                _ => self.problem(
                    file,
                    join("", key),
                    "unknown key; expected one of precedence, identity, events, package, field",
                ),
            }
        }
    }

    fn precedence_section(&mut self, file: &str, value: &Value) {
        let first = self.declare(file, "precedence");
        let Some(t) = self.table(file, "precedence", value) else {
            return;
        };
        self.check_keys(file, "precedence", t, &["default"]);
        let list = t
            .get("default")
            .and_then(|v| self.sources(file, "precedence.default", v, false));
        if first {
            self.precedence = list;
        }
    }

    fn identity_section(&mut self, file: &str, value: &Value) {
        let first = self.declare(file, "identity");
        let Some(t) = self.table(file, "identity", value) else {
            return;
        };
        self.check_keys(file, "identity", t, &["external_reference_types"]);
        let path = "identity.external_reference_types";
        let list = t.get("external_reference_types").and_then(|v| {
            let list = self.strings(file, path, v, false)?;
            for (i, ty) in list.iter().enumerate() {
                // `ext:<type>:<id>` keys would become ambiguous if a type held the separator.
                if ty.contains(':') {
                    self.problem(file, format!("{path}[{i}]"), "must not contain ':'");
                }
            }
            Some(list)
        });
        if first {
            self.identity_types = list;
        }
    }

    fn events_section(&mut self, file: &str, value: &Value) {
        let first = self.declare(file, "events");
        let Some(t) = self.table(file, "events", value) else {
            return;
        };
        self.check_keys(file, "events", t, &["accepted_types"]);
        let list = match t.get("accepted_types") {
            Some(v) => self.strings(file, "events.accepted_types", v, true),
            None => {
                self.problem(
                    file,
                    "events.accepted_types",
                    "required: the list of accepted headers.type values",
                );
                None
            }
        };
        if first {
            self.accepted_types = Some(list);
        }
    }

    fn package_section(&mut self, file: &str, value: &Value) {
        let Some(t) = self.table(file, "package", value) else {
            return;
        };
        self.check_keys(file, "package", t, &["roles"]);
        let Some(roles) = t.get("roles") else {
            return;
        };
        let first = self.declare(file, "package.roles");
        let Some(roles) = self.table(file, "package.roles", roles) else {
            return;
        };
        let mut globs = BTreeMap::new();
        for (name, patterns) in roles {
            let path = join("package.roles", name);
            let Some(role) = Role::ALL.into_iter().find(|r| r.as_str() == name) else {
                self.problem(
                    file,
                    path,
                    "unknown role; expected one of ADI, ACCESS, PORT, DD",
                );
                continue;
            };
            let Some(patterns) = self.strings(file, &path, patterns, true) else {
                continue;
            };
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = compile_glob(p) {
                    self.problem(file, format!("{path}[{i}]"), format!("invalid glob: {e}"));
                }
            }
            globs.insert(role, patterns);
        }
        for role in Role::ALL {
            if !roles.contains_key(role.as_str()) {
                self.problem(
                    file,
                    join("package.roles", role.as_str()),
                    "missing; every role needs at least one glob over productSpecification.id",
                );
            }
        }
        if first {
            self.roles = Some(globs);
        }
    }

    fn field_array(&mut self, file: &str, value: &Value) {
        let Some(rules) = value.as_array() else {
            self.problem(
                file,
                "field",
                "must be an array of tables, written [[field]]",
            );
            return;
        };
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("field[{i}]");
            if let Some(t) = self.table(file, &at, rule) {
                self.field_rule(file, &at, t);
            }
        }
    }

    fn field_rule(&mut self, file: &str, at: &str, t: &Table) {
        self.check_keys(file, at, t, &FIELD_KEYS);
        let sub = |k: &str| format!("{at}.{k}");

        let path = match t.get("path") {
            None => {
                self.problem(file, sub("path"), "required: the dotted path of the field");
                None
            }
            Some(v) => match v.as_str() {
                None => {
                    self.problem(file, sub("path"), "must be a string");
                    None
                }
                Some(p) => match path_problem(p) {
                    Some(problem) => {
                        self.problem(file, sub("path"), problem);
                        None
                    }
                    None => Some(p.to_owned()),
                },
            },
        };

        let strategy = match t.get("strategy") {
            None => {
                self.problem(
                    file,
                    sub("strategy"),
                    "required: one of priority, recency, oldest, owner, union",
                );
                None
            }
            Some(v) => self.strategy(file, &sub("strategy"), v),
        };
        let union = strategy.map(|s| s == Strategy::Union);
        let owner = strategy.map(|s| s == Strategy::Owner);

        let key = match t.get("key") {
            Some(v) => {
                if union == Some(false) {
                    self.problem(file, sub("key"), "only allowed with strategy = \"union\"");
                }
                self.key_list(file, &sub("key"), v)
            }
            None => {
                if union == Some(true) {
                    self.problem(
                        file,
                        sub("key"),
                        "required with strategy = \"union\": the element fields that match elements across sources",
                    );
                }
                None
            }
        };

        let element_strategy = match t.get("element_strategy") {
            Some(v) => {
                if union == Some(false) {
                    self.problem(
                        file,
                        sub("element_strategy"),
                        "only allowed with strategy = \"union\"",
                    );
                }
                self.element_strategy(file, &sub("element_strategy"), v)
            }
            None => Some(ElementStrategy::Merge),
        };

        let owners = match t.get("owners") {
            Some(v) => {
                if owner == Some(false) {
                    self.problem(
                        file,
                        sub("owners"),
                        "only allowed with strategy = \"owner\"",
                    );
                }
                self.sources(file, &sub("owners"), v, true)
            }
            None => {
                if owner == Some(true) {
                    self.problem(
                        file,
                        sub("owners"),
                        "required with strategy = \"owner\": the sources allowed to set the field",
                    );
                }
                None
            }
        };

        let precedence = match t.get("precedence") {
            Some(v) => self.sources(file, &sub("precedence"), v, false).map(Some),
            None => Some(None),
        };

        let keep_empty = match t.get("keep_empty") {
            None => Some(false),
            Some(Value::Boolean(b)) => Some(*b),
            Some(_) => {
                self.problem(file, sub("keep_empty"), "must be true or false");
                None
            }
        };

        let Some(path) = path else { return };
        if let Some((first_file, first_at)) = self.field_sites.get(&path) {
            let problem = format!("a rule for \"{path}\" is already declared in {first_file} ({first_at}); declare each path once");
            self.problem(file, sub("path"), problem);
            return;
        }
        self.field_sites
            .insert(path.clone(), (file.to_owned(), at.to_owned()));
        // Any missing part was reported above; the rule is then never used.
        if let (Some(strategy), Some(element_strategy), Some(precedence), Some(keep_empty)) =
            (strategy, element_strategy, precedence, keep_empty)
        {
            let rule = FieldRule {
                path: path.clone(),
                strategy,
                precedence,
                owners: owners.unwrap_or_default(),
                key: key.unwrap_or_default(),
                element_strategy,
                keep_empty,
                declared_in: file.to_owned(),
            };
            self.fields.insert(path, rule);
        }
    }

    fn strategy(&mut self, file: &str, at: &str, v: &Value) -> Option<Strategy> {
        match v.as_str() {
            Some("priority") => Some(Strategy::Priority),
            Some("recency") => Some(Strategy::Recency),
            Some("oldest") => Some(Strategy::Oldest),
            Some("owner") => Some(Strategy::Owner),
            Some("union") => Some(Strategy::Union),
            other => {
                let shown = other.map_or_else(|| v.to_string(), |s| format!("\"{s}\""));
                self.problem(
                    file,
                    at,
                    format!("unknown strategy {shown}; expected one of priority, recency, oldest, owner, union"),
                );
                None
            }
        }
    }

    fn element_strategy(&mut self, file: &str, at: &str, v: &Value) -> Option<ElementStrategy> {
        match v.as_str() {
            Some("merge") => Some(ElementStrategy::Merge),
            Some("priority") => Some(ElementStrategy::Priority),
            Some("recency") => Some(ElementStrategy::Recency),
            Some("oldest") => Some(ElementStrategy::Oldest),
            other => {
                let shown = other.map_or_else(|| v.to_string(), |s| format!("\"{s}\""));
                self.problem(
                    file,
                    at,
                    format!("unknown element strategy {shown}; expected one of merge, priority, recency, oldest"),
                );
                None
            }
        }
    }

    /// A union key: non-empty list of distinct, non-empty attribute names.
    fn key_list(&mut self, file: &str, at: &str, v: &Value) -> Option<Vec<String>> {
        let list = self.strings(file, at, v, true)?;
        for (i, k) in list.iter().enumerate() {
            if list[..i].contains(k) {
                self.problem(
                    file,
                    format!("{at}[{i}]"),
                    format!("duplicate key field \"{k}\""),
                );
            }
        }
        Some(list)
    }

    /// A list of distinct, valid source names.
    fn sources(&mut self, file: &str, at: &str, v: &Value, non_empty: bool) -> Option<Vec<Source>> {
        let names = self.strings(file, at, v, non_empty)?;
        let mut out: Vec<Source> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            match Source::parse(name) {
                Ok(s) if out.contains(&s) => self.problem(
                    file,
                    format!("{at}[{i}]"),
                    format!("duplicate source \"{name}\""),
                ),
                Ok(s) => out.push(s),
                Err(e) => self.problem(
                    file,
                    format!("{at}[{i}]"),
                    format!("invalid source name \"{name}\": {e}"),
                ),
            }
        }
        Some(out)
    }

    /// An array of non-empty strings; `None` when `v` is not an array at all.
    fn strings(&mut self, file: &str, at: &str, v: &Value, non_empty: bool) -> Option<Vec<String>> {
        let Some(items) = v.as_array() else {
            self.problem(file, at, "must be an array of strings");
            return None;
        };
        if non_empty && items.is_empty() {
            self.problem(file, at, "must not be empty");
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some("") => self.problem(file, format!("{at}[{i}]"), "must not be empty"),
                Some(s) => out.push(s.to_owned()),
                None => self.problem(file, format!("{at}[{i}]"), "must be a string"),
            }
        }
        Some(out)
    }

    fn table<'t>(&mut self, file: &str, at: &str, v: &'t Value) -> Option<&'t Table> {
        let t = v.as_table();
        if t.is_none() {
            self.problem(file, at, "must be a table");
        }
        t
    }

    fn check_keys(&mut self, file: &str, at: &str, t: &Table, allowed: &[&str]) {
        for key in t.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(
                    file,
                    join(at, key),
                    format!("unknown key; expected one of {}", allowed.join(", ")),
                );
            }
        }
    }

    fn finish(mut self, files: &[(String, String)]) -> Result<Rules, RulesError> {
        let everywhere = if files.is_empty() {
            "(no rule files)".to_owned()
        } else {
            files
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.accepted_types.is_none() {
            self.problem(
                &everywhere,
                "events",
                "missing: declare [events] accepted_types in one of the rule files",
            );
        }
        if self.roles.is_none() {
            self.problem(
                &everywhere,
                "package.roles",
                "missing: declare [package.roles] with globs for ADI, ACCESS, PORT and DD in one of the rule files",
            );
        }
        if !self.problems.is_empty() {
            return Err(RulesError(self.problems));
        }
        let accepted_types = self.accepted_types.flatten().unwrap_or_default();
        let role_globs = self.roles.unwrap_or_default();
        let role_matchers = Role::ALL
            .into_iter()
            .map(|role| {
                let mut set = GlobSetBuilder::new();
                for p in role_globs.get(&role).into_iter().flatten() {
                    // Every pattern compiled during validation, so this cannot fail.
                    if let Ok(g) = compile_glob(p) {
                        set.add(g);
                    }
                }
                (role, set.build().unwrap_or_else(|_| GlobSet::empty()))
            })
            .collect();
        Ok(Rules {
            precedence: self.precedence.unwrap_or_default(),
            fields: self.fields,
            identity_types: self.identity_types.unwrap_or_default(),
            role_globs,
            role_matchers,
            accepted_types,
            hash: hash_files(files),
        })
    }
}

/// Globs over `productSpecification.id`, which is not a file path: `*` crosses `/`.
fn compile_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(false).build()
}

/// What is wrong with a field path, if anything.
fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain whitespace".to_owned());
    }
    if path.starts_with('.') || path.ends_with('.') {
        return Some("must not start or end with '.'".to_owned());
    }
    if path.split('.').any(str::is_empty) {
        return Some("must not have an empty segment ('..')".to_owned());
    }
    let owned = SERVICE_OWNED.iter().any(|o| {
        path == *o || (*o == "externalIdentifier" && path.starts_with("externalIdentifier."))
    });
    owned.then(|| format!("\"{path}\" is set by PINV itself; merge rules may not change it"))
}

/// `prefix.key`, quoting the key when it is not a bare TOML key.
fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// Hex SHA-256 over each file's name, a 0 byte, its content and a 0 byte, in order.
fn hash_files(files: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (name, content) in files {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(content.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "[events]\naccepted_types = [\"t.v1\"]\n";
    const ROLES: &str = r#"
[package.roles]
ADI = ["PR-ADI-*"]
ACCESS = ["PR-ACCESS-*"]
PORT = ["PR-PORT-*"]
DD = ["PR-DD-*"]
"#;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect()
    }

    fn shipped() -> Vec<(String, String)> {
        files(&[
            (
                "00-sources.toml",
                include_str!("../../merge-rules/00-sources.toml"),
            ),
            (
                "10-identity-and-packages.toml",
                include_str!("../../merge-rules/10-identity-and-packages.toml"),
            ),
            (
                "20-fields.toml",
                include_str!("../../merge-rules/20-fields.toml"),
            ),
        ])
    }

    /// Parses `extra` as `10-test.toml` beside valid events and roles files.
    fn with_base(extra: &str) -> Result<Rules, RulesError> {
        Rules::from_files(&files(&[
            ("00-events.toml", EVENTS),
            ("05-roles.toml", ROLES),
            ("10-test.toml", extra),
        ]))
    }

    fn problems(result: Result<Rules, RulesError>) -> Vec<RuleProblem> {
        match result {
            Ok(_) => panic!("rules were accepted"),
            Err(RulesError(p)) => p,
        }
    }

    /// The single problem `extra` causes; panics if there is not exactly one.
    fn only_problem(extra: &str) -> RuleProblem {
        let p = problems(with_base(extra));
        assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
        p.into_iter().next().unwrap()
    }

    fn assert_problem(p: &RuleProblem, file: &str, field: &str, contains: &str) {
        assert_eq!(p.file, file, "{p:?}");
        assert_eq!(p.field, field, "{p:?}");
        assert!(p.problem.contains(contains), "{p:?} lacks {contains:?}");
    }

    fn src(names: &[&str]) -> Vec<Source> {
        names.iter().map(|n| Source::parse(n).unwrap()).collect()
    }

    #[test]
    fn shipped_defaults_parse_with_expected_values() {
        let r = Rules::from_files(&shipped()).unwrap();
        assert_eq!(
            r.precedence,
            src(&["inventory", "provisioning", "billing", "ordering"])
        );
        assert_eq!(r.identity_types, ["CircuitID"]);
        assert_eq!(r.accepted_types, ["com.att.c360dataPrep.tmf637.post.v5"]);
        assert_eq!(r.role_globs[&Role::Adi], ["PR-ADI-*"]);
        assert_eq!(r.role_globs[&Role::Dd], ["PR-DD-*"]);
        assert_eq!(r.role_of("PR-ADI-EMBEDDED-BASE"), Some(Role::Adi));
        assert_eq!(r.role_of("PR-ACCESS-1"), Some(Role::Access));
        assert_eq!(r.role_of("PR-PORT-X"), Some(Role::Port));
        assert_eq!(r.role_of("PR-DD-X"), Some(Role::Dd));
        assert_eq!(r.role_of("PR-OTHER"), None);
        assert!(r.accepts_type("com.att.c360dataPrep.tmf637.post.v5"));
        assert!(!r.accepts_type("com.att.other"));

        let name = r.field("name").unwrap();
        assert_eq!(name.strategy, Strategy::Priority);
        assert_eq!(name.precedence, None);
        assert_eq!(name.declared_in, "20-fields.toml");
        assert_eq!(r.fields["status"].strategy, Strategy::Recency);

        let price = &r.fields["productPrice"];
        assert_eq!(price.strategy, Strategy::Union);
        assert_eq!(price.key, ["priceType"]);
        assert_eq!(price.precedence.as_ref().unwrap()[0].as_str(), "billing");
        assert_eq!(r.precedence_for(price)[0].as_str(), "billing");
        assert_eq!(r.precedence_for(name)[0].as_str(), "inventory");

        let unions = [
            ("relatedParty", vec!["role"]),
            ("place", vec!["role"]),
            ("productCharacteristic", vec!["name"]),
            ("externalReference", vec!["externalIdentifierType", "owner"]),
            ("realizingService", vec!["name"]),
            ("realizingResource", vec!["name"]),
            ("productRelationship", vec!["relationshipType", "id"]),
            (
                "relatedParty.partyOrPartyRole.contactMedium",
                vec!["contactType"],
            ),
        ];
        for (path, key) in unions {
            let rule = &r.fields[path];
            assert_eq!(rule.strategy, Strategy::Union, "{path}");
            assert_eq!(rule.key, key, "{path}");
            assert_eq!(rule.element_strategy, ElementStrategy::Merge, "{path}");
            assert!(!rule.keep_empty, "{path}");
        }
        assert_eq!(
            r.fields["productSpecification.version"].strategy,
            Strategy::Priority
        );
        assert_eq!(r.fields.len(), 12);
    }

    #[test]
    fn a_full_field_rule_is_parsed() {
        let r = with_base(
            r#"
[[field]]
path = "relatedParty"
strategy = "union"
key = ["role"]
element_strategy = "recency"
precedence = ["billing", "crm"]
keep_empty = true

[[field]]
path = "productSpecification.name"
strategy = "owner"
owners = ["inventory"]
"#,
        )
        .unwrap();
        let rp = &r.fields["relatedParty"];
        assert_eq!(rp.element_strategy, ElementStrategy::Recency);
        assert_eq!(rp.precedence, Some(src(&["billing", "crm"])));
        assert!(rp.keep_empty);
        assert_eq!(rp.declared_in, "10-test.toml");
        let owner = &r.fields["productSpecification.name"];
        assert_eq!(owner.strategy, Strategy::Owner);
        assert_eq!(owner.owners, src(&["inventory"]));
        // Optional sections absent: empty defaults.
        assert!(r.precedence.is_empty());
        assert!(r.identity_types.is_empty());
    }

    #[test]
    fn toml_syntax_error_is_reported_with_position() {
        let p = only_problem("[[field]]\npath = \"name\nstrategy = 1\n");
        assert_problem(&p, "10-test.toml", "(syntax)", "line 2");
    }

    #[test]
    fn unknown_top_level_key_is_refused() {
        let p = only_problem("colour = \"blue\"\n");
        assert_problem(&p, "10-test.toml", "colour", "unknown key");
    }

    #[test]
    fn unknown_key_in_a_section_is_refused() {
        let p = only_problem("[precedence]\ndefualt = [\"billing\"]\n");
        assert_problem(&p, "10-test.toml", "precedence.defualt", "unknown key");
        let p = only_problem("[identity]\ntypes = []\n");
        assert_problem(&p, "10-test.toml", "identity.types", "unknown key");
    }

    #[test]
    fn unknown_key_in_a_field_rule_is_refused() {
        let p = only_problem(
            "[[field]]\npath = \"name\"\nstrategy = \"priority\"\nkeep_emtpy = true\n",
        );
        assert_problem(&p, "10-test.toml", "field[0].keep_emtpy", "unknown key");
    }

    #[test]
    fn unknown_strategy_is_refused() {
        let p = only_problem("[[field]]\npath = \"name\"\nstrategy = \"newest\"\n");
        assert_problem(&p, "10-test.toml", "field[0].strategy", "\"newest\"");
    }

    #[test]
    fn missing_strategy_is_refused() {
        let p = only_problem("[[field]]\npath = \"name\"\n");
        assert_problem(&p, "10-test.toml", "field[0].strategy", "required");
    }

    #[test]
    fn unknown_element_strategy_is_refused() {
        let p = only_problem(
            "[[field]]\npath = \"place\"\nstrategy = \"union\"\nkey = [\"role\"]\nelement_strategy = \"union\"\n",
        );
        assert_problem(
            &p,
            "10-test.toml",
            "field[0].element_strategy",
            "unknown element strategy",
        );
    }

    #[test]
    fn key_on_a_non_union_rule_is_refused() {
        let p = only_problem(
            "[[field]]\npath = \"place\"\nstrategy = \"priority\"\nkey = [\"role\"]\n",
        );
        assert_problem(&p, "10-test.toml", "field[0].key", "only allowed");
    }

    #[test]
    fn element_strategy_on_a_non_union_rule_is_refused() {
        let p = only_problem(
            "[[field]]\npath = \"place\"\nstrategy = \"recency\"\nelement_strategy = \"merge\"\n",
        );
        assert_problem(
            &p,
            "10-test.toml",
            "field[0].element_strategy",
            "only allowed",
        );
    }

    #[test]
    fn owners_on_a_non_owner_rule_is_refused() {
        let p = only_problem(
            "[[field]]\npath = \"status\"\nstrategy = \"recency\"\nowners = [\"billing\"]\n",
        );
        assert_problem(&p, "10-test.toml", "field[0].owners", "only allowed");
    }

    #[test]
    fn union_without_key_is_refused() {
        let p = only_problem("[[field]]\npath = \"place\"\nstrategy = \"union\"\n");
        assert_problem(&p, "10-test.toml", "field[0].key", "required");
        let p = only_problem("[[field]]\npath = \"place\"\nstrategy = \"union\"\nkey = []\n");
        assert_problem(&p, "10-test.toml", "field[0].key", "must not be empty");
        let p = only_problem("[[field]]\npath = \"place\"\nstrategy = \"union\"\nkey = [\"\"]\n");
        assert_problem(&p, "10-test.toml", "field[0].key[0]", "must not be empty");
    }

    #[test]
    fn owner_without_owners_is_refused() {
        let p = only_problem("[[field]]\npath = \"status\"\nstrategy = \"owner\"\n");
        assert_problem(&p, "10-test.toml", "field[0].owners", "required");
        let p = only_problem("[[field]]\npath = \"status\"\nstrategy = \"owner\"\nowners = []\n");
        assert_problem(&p, "10-test.toml", "field[0].owners", "must not be empty");
    }

    #[test]
    fn invalid_source_names_are_refused() {
        let p = only_problem("[precedence]\ndefault = [\"billing\", \"bad source\"]\n");
        assert_problem(
            &p,
            "10-test.toml",
            "precedence.default[1]",
            "invalid source name \"bad source\"",
        );
        let p = only_problem(
            "[[field]]\npath = \"status\"\nstrategy = \"owner\"\nowners = [\"a:b\"]\n",
        );
        assert_problem(
            &p,
            "10-test.toml",
            "field[0].owners[0]",
            "invalid source name",
        );
        let p = only_problem(
            "[[field]]\npath = \"status\"\nstrategy = \"priority\"\nprecedence = [\"\"]\n",
        );
        assert_problem(
            &p,
            "10-test.toml",
            "field[0].precedence[0]",
            "must not be empty",
        );
    }

    #[test]
    fn duplicate_sources_are_refused() {
        let p = only_problem("[precedence]\ndefault = [\"billing\", \"crm\", \"billing\"]\n");
        assert_problem(
            &p,
            "10-test.toml",
            "precedence.default[2]",
            "duplicate source",
        );
        let p = only_problem(
            "[[field]]\npath = \"status\"\nstrategy = \"owner\"\nowners = [\"crm\", \"crm\"]\n",
        );
        assert_problem(&p, "10-test.toml", "field[0].owners[1]", "duplicate source");
        let p = only_problem(
            "[[field]]\npath = \"status\"\nstrategy = \"recency\"\nprecedence = [\"a\", \"a\"]\n",
        );
        assert_problem(
            &p,
            "10-test.toml",
            "field[0].precedence[1]",
            "duplicate source",
        );
    }

    #[test]
    fn duplicate_field_path_across_files_names_both_files() {
        let rule = "[[field]]\npath = \"status\"\nstrategy = \"recency\"\n";
        let p = problems(Rules::from_files(&files(&[
            ("00-events.toml", EVENTS),
            ("05-roles.toml", ROLES),
            ("10-a.toml", rule),
            ("20-b.toml", &format!("{rule}{rule}")),
        ])));
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_problem(
            &p[0],
            "20-b.toml",
            "field[0].path",
            "already declared in 10-a.toml",
        );
        assert_problem(
            &p[1],
            "20-b.toml",
            "field[1].path",
            "already declared in 10-a.toml",
        );
    }

    #[test]
    fn bad_path_syntax_is_refused() {
        for (path, why) in [
            ("", "must not be empty"),
            (".status", "start or end"),
            ("status.", "start or end"),
            ("relatedParty..role", "empty segment"),
            ("related Party", "whitespace"),
            ("status\t", "whitespace"),
        ] {
            let p = only_problem(&format!(
                "[[field]]\npath = {path:?}\nstrategy = \"priority\"\n"
            ));
            assert_problem(&p, "10-test.toml", "field[0].path", why);
        }
    }

    #[test]
    fn service_owned_paths_are_refused() {
        for path in [
            "id",
            "href",
            "externalIdentifier",
            "externalIdentifier.id",
            "productRelationship.id",
            "productRelationship.href",
        ] {
            let p = only_problem(&format!(
                "[[field]]\npath = \"{path}\"\nstrategy = \"priority\"\n"
            ));
            assert_problem(&p, "10-test.toml", "field[0].path", "set by PINV");
        }
        // Near misses are ordinary fields.
        for path in [
            "identifier",
            "externalIdentifiers",
            "productRelationship.relationshipType",
        ] {
            with_base(&format!(
                "[[field]]\npath = \"{path}\"\nstrategy = \"priority\"\n"
            ))
            .unwrap();
        }
    }

    #[test]
    fn invalid_glob_is_refused() {
        let roles = ROLES.replace("PR-ADI-*", "PR-[ADI");
        let p = problems(Rules::from_files(&files(&[
            ("00-events.toml", EVENTS),
            ("05-roles.toml", &roles),
        ])));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_problem(
            &p[0],
            "05-roles.toml",
            "package.roles.ADI[0]",
            "invalid glob",
        );
    }

    #[test]
    fn globs_match_across_slashes() {
        let roles = ROLES.replace("PR-ADI-*", "PR-ADI*");
        let r = Rules::from_files(&files(&[("a.toml", EVENTS), ("b.toml", &roles)])).unwrap();
        assert_eq!(r.role_of("PR-ADI/X/Y"), Some(Role::Adi));
        assert_eq!(r.role_matchers.len(), 4);
        assert_eq!(r.role_matchers[0].0, Role::Adi);
        assert_eq!(r.role_matchers[3].0, Role::Dd);
    }

    #[test]
    fn unknown_role_is_refused() {
        let roles = format!("{ROLES}VPN = [\"PR-VPN-*\"]\n");
        let p = problems(Rules::from_files(&files(&[
            ("00-events.toml", EVENTS),
            ("05-roles.toml", &roles),
        ])));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_problem(&p[0], "05-roles.toml", "package.roles.VPN", "unknown role");
    }

    #[test]
    fn missing_role_is_refused() {
        let roles = ROLES.replace("DD = [\"PR-DD-*\"]\n", "");
        let p = problems(Rules::from_files(&files(&[
            ("00-events.toml", EVENTS),
            ("05-roles.toml", &roles),
        ])));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_problem(&p[0], "05-roles.toml", "package.roles.DD", "missing");
        let roles = ROLES.replace("[\"PR-DD-*\"]", "[]");
        let p = problems(Rules::from_files(&files(&[
            ("a.toml", EVENTS),
            ("b.toml", &roles),
        ])));
        assert_problem(&p[0], "b.toml", "package.roles.DD", "must not be empty");
    }

    #[test]
    fn missing_package_roles_is_refused() {
        let p = problems(Rules::from_files(&files(&[("00-events.toml", EVENTS)])));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_problem(&p[0], "00-events.toml", "package.roles", "missing");
    }

    #[test]
    fn missing_events_section_is_refused() {
        let p = problems(Rules::from_files(&files(&[
            ("05-roles.toml", ROLES),
            ("10-other.toml", "[precedence]\n"),
        ])));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_problem(&p[0], "05-roles.toml, 10-other.toml", "events", "missing");
    }

    #[test]
    fn events_need_non_empty_accepted_types() {
        let only = |events: &str| {
            let p = problems(Rules::from_files(&files(&[
                ("a.toml", events),
                ("b.toml", ROLES),
            ])));
            assert_eq!(p.len(), 1, "{p:#?}");
            p.into_iter().next().unwrap()
        };
        assert_problem(
            &only("[events]\n"),
            "a.toml",
            "events.accepted_types",
            "required",
        );
        assert_problem(
            &only("[events]\naccepted_types = []\n"),
            "a.toml",
            "events.accepted_types",
            "must not be empty",
        );
        assert_problem(
            &only("[events]\naccepted_types = [\"t\", \"\"]\n"),
            "a.toml",
            "events.accepted_types[1]",
            "must not be empty",
        );
        assert_problem(
            &only("[events]\naccepted_types = [\"t\", 3]\n"),
            "a.toml",
            "events.accepted_types[1]",
            "must be a string",
        );
    }

    #[test]
    fn identity_types_may_not_contain_the_key_separator() {
        let p = only_problem("[identity]\nexternal_reference_types = [\"Circuit:ID\"]\n");
        assert_problem(
            &p,
            "10-test.toml",
            "identity.external_reference_types[0]",
            "':'",
        );
    }

    #[test]
    fn duplicate_singleton_across_files_names_both_files() {
        let p = problems(Rules::from_files(&files(&[
            ("00-events.toml", EVENTS),
            ("05-roles.toml", ROLES),
            ("10-more.toml", &format!("{EVENTS}{ROLES}[precedence]\n")),
            ("20-more.toml", "[precedence]\ndefault = [\"billing\"]\n"),
        ])));
        assert_eq!(p.len(), 3, "{p:#?}");
        assert_problem(
            &p[0],
            "10-more.toml",
            "events",
            "already declared in 00-events.toml",
        );
        assert_problem(
            &p[1],
            "10-more.toml",
            "package.roles",
            "already declared in 05-roles.toml",
        );
        assert_problem(
            &p[2],
            "20-more.toml",
            "precedence",
            "already declared in 10-more.toml",
        );
    }

    #[test]
    fn every_problem_of_every_file_is_reported() {
        let p = problems(Rules::from_files(&files(&[
            ("00-broken.toml", "[events\n"),
            (
                "10-fields.toml",
                r#"
[precedence]
default = ["a b", "x", "x"]

[[field]]
path = "id"
strategy = "union"
owners = ["billing"]

[[field]]
path = "status"
strategy = "sometimes"
"#,
            ),
        ])));
        let seen: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.file.as_str(), p.field.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("00-broken.toml", "(syntax)"),
                // Within a file, sections come in key order.
                ("10-fields.toml", "field[0].path"),
                ("10-fields.toml", "field[0].key"),
                ("10-fields.toml", "field[0].owners"),
                ("10-fields.toml", "field[1].strategy"),
                ("10-fields.toml", "precedence.default[0]"),
                ("10-fields.toml", "precedence.default[2]"),
                ("00-broken.toml, 10-fields.toml", "events"),
                ("00-broken.toml, 10-fields.toml", "package.roles"),
            ]
        );
        let shown = RulesError(p).to_string();
        assert!(shown.starts_with("invalid merge rules:\n  - 00-broken.toml: (syntax): "));
        assert_eq!(shown.lines().count(), 10);
    }

    #[test]
    fn wrongly_typed_values_are_refused() {
        let p = only_problem("field = 3\n");
        assert_problem(&p, "10-test.toml", "field", "[[field]]");
        let p = only_problem("precedence = [\"billing\"]\n");
        assert_problem(&p, "10-test.toml", "precedence", "must be a table");
        let p = only_problem("[[field]]\npath = 1\nstrategy = \"priority\"\n");
        assert_problem(&p, "10-test.toml", "field[0].path", "must be a string");
        let p =
            only_problem("[[field]]\npath = \"a\"\nstrategy = \"priority\"\nkeep_empty = \"no\"\n");
        assert_problem(&p, "10-test.toml", "field[0].keep_empty", "true or false");
    }

    #[test]
    fn unusual_keys_are_quoted_in_field_paths() {
        let p = only_problem("\"odd key\" = 1\n");
        assert_problem(&p, "10-test.toml", "\"odd key\"", "unknown key");
    }

    #[test]
    fn hash_follows_names_and_contents() {
        let base = shipped();
        let h = Rules::from_files(&base).unwrap().hash;
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(Rules::from_files(&shipped()).unwrap().hash, h);

        let mut edited = shipped();
        edited[2].1.push_str("\n# a comment\n");
        assert_ne!(Rules::from_files(&edited).unwrap().hash, h);

        let mut renamed = shipped();
        renamed[2].0 = "30-fields.toml".to_owned();
        assert_ne!(Rules::from_files(&renamed).unwrap().hash, h);
    }

    #[test]
    fn hash_is_sha256_of_names_and_contents_with_separators() {
        let r = Rules::from_files(&files(&[("a", EVENTS), ("b", ROLES)])).unwrap();
        let mut h = Sha256::new();
        h.update(format!("a\0{EVENTS}\0b\0{ROLES}\0").as_bytes());
        let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.hash, expected);
    }

    #[test]
    fn rank_puts_named_sources_first_then_the_rest_by_name() {
        let order = src(&["inventory", "billing"]);
        let mut all = src(&["zeta", "billing", "alpha", "inventory"]);
        all.sort_by(|a, b| Rules::rank(&order, a).cmp(&Rules::rank(&order, b)));
        assert_eq!(all, src(&["inventory", "billing", "alpha", "zeta"]));
        assert_eq!(Rules::rank(&order, &order[1]), (1, ""));
        assert_eq!(Rules::rank(&[], &order[0]), (0, "inventory"));
    }
}
