//! The merge-rules parser: walks the TOML tables of every file and collects every problem,
//! so that one run of `pinv check-rules` names them all.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use super::*;

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
pub(super) struct Parser {
    problems: Vec<RuleProblem>,
    /// Singleton section name -> file that declared it first.
    declared: BTreeMap<&'static str, String>,
    precedence: Option<Vec<Source>>,
    identity_types: Option<Vec<String>>,
    phone_number_types: Vec<String>,
    released_when_terminated: Vec<String>,
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

    pub(super) fn syntax_error(&mut self, file: &str, content: &str, e: &toml::de::Error) {
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

    pub(super) fn file(&mut self, file: &str, table: &Table) {
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
        self.check_keys(
            file,
            "identity",
            t,
            &[
                "external_reference_types",
                "phone_number_types",
                "released_when_terminated",
            ],
        );
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
        // Both lists name identity types: a type listed there alone would do nothing.
        let mut subset = |key: &str| -> Vec<String> {
            let path = format!("identity.{key}");
            let Some(sub) = t.get(key).and_then(|v| self.strings(file, &path, v, false)) else {
                return Vec::new();
            };
            for (i, ty) in sub.iter().enumerate() {
                if !list.iter().flatten().any(|t| t == ty) {
                    self.problem(
                        file,
                        format!("{path}[{i}]"),
                        format!("'{ty}' is not one of identity.external_reference_types"),
                    );
                }
            }
            sub
        };
        let phones = subset("phone_number_types");
        let released = subset("released_when_terminated");
        if first {
            self.identity_types = list;
            self.phone_number_types = phones;
            self.released_when_terminated = released;
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
        let path = self.field_path(file, at, t);
        let strategy = self.field_strategy(file, at, t);
        let union = strategy.map(|s| s == Strategy::Union);
        let owner = strategy.map(|s| s == Strategy::Owner);
        let key = self.field_key(file, at, t, union);
        let element_strategy = self.field_element_strategy(file, at, t, union);
        let owners = self.field_owners(file, at, t, owner);
        let precedence = match t.get("precedence") {
            Some(v) => self
                .sources(file, &format!("{at}.precedence"), v, false)
                .map(Some),
            None => Some(None),
        };
        let keep_empty = match t.get("keep_empty") {
            None => Some(false),
            Some(Value::Boolean(b)) => Some(*b),
            Some(_) => {
                self.problem(file, format!("{at}.keep_empty"), "must be true or false");
                None
            }
        };

        let Some(path) = path else { return };
        if !self.declare_field(file, at, &path) {
            return;
        }
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

    /// `path`: required, a valid dotted path.
    fn field_path(&mut self, file: &str, at: &str, t: &Table) -> Option<String> {
        let sub = format!("{at}.path");
        match t.get("path") {
            None => {
                self.problem(file, sub, "required: the dotted path of the field");
                None
            }
            Some(v) => match v.as_str() {
                None => {
                    self.problem(file, sub, "must be a string");
                    None
                }
                Some(p) => match path_problem(p) {
                    Some(problem) => {
                        self.problem(file, sub, problem);
                        None
                    }
                    None => Some(p.to_owned()),
                },
            },
        }
    }

    /// `strategy`: required.
    fn field_strategy(&mut self, file: &str, at: &str, t: &Table) -> Option<Strategy> {
        let sub = format!("{at}.strategy");
        match t.get("strategy") {
            None => {
                self.problem(
                    file,
                    sub,
                    "required: one of priority, recency, oldest, owner, union",
                );
                None
            }
            Some(v) => self.strategy(file, &sub, v),
        }
    }

    /// `key`: required with `union` and only allowed there (`union`: whether the strategy
    /// is `union`, if known).
    fn field_key(
        &mut self,
        file: &str,
        at: &str,
        t: &Table,
        union: Option<bool>,
    ) -> Option<Vec<String>> {
        let sub = format!("{at}.key");
        match t.get("key") {
            Some(v) => {
                if union == Some(false) {
                    self.problem(file, &sub, "only allowed with strategy = \"union\"");
                }
                self.key_list(file, &sub, v)
            }
            None => {
                if union == Some(true) {
                    self.problem(
                        file,
                        sub,
                        "required with strategy = \"union\": the element fields that match elements across sources",
                    );
                }
                None
            }
        }
    }

    /// `element_strategy`: only allowed with `union`; `merge` when absent.
    fn field_element_strategy(
        &mut self,
        file: &str,
        at: &str,
        t: &Table,
        union: Option<bool>,
    ) -> Option<ElementStrategy> {
        let sub = format!("{at}.element_strategy");
        match t.get("element_strategy") {
            Some(v) => {
                if union == Some(false) {
                    self.problem(file, &sub, "only allowed with strategy = \"union\"");
                }
                self.element_strategy(file, &sub, v)
            }
            None => Some(ElementStrategy::Merge),
        }
    }

    /// `owners`: required with `owner` and only allowed there.
    fn field_owners(
        &mut self,
        file: &str,
        at: &str,
        t: &Table,
        owner: Option<bool>,
    ) -> Option<Vec<Source>> {
        let sub = format!("{at}.owners");
        match t.get("owners") {
            Some(v) => {
                if owner == Some(false) {
                    self.problem(file, &sub, "only allowed with strategy = \"owner\"");
                }
                self.sources(file, &sub, v, true)
            }
            None => {
                if owner == Some(true) {
                    self.problem(
                        file,
                        sub,
                        "required with strategy = \"owner\": the sources allowed to set the field",
                    );
                }
                None
            }
        }
    }

    /// Records where the rule for `path` is declared; false (and a problem) when another
    /// rule declared it first.
    fn declare_field(&mut self, file: &str, at: &str, path: &str) -> bool {
        if let Some((first_file, first_at)) = self.field_sites.get(path) {
            let problem = format!("a rule for \"{path}\" is already declared in {first_file} ({first_at}); declare each path once");
            self.problem(file, format!("{at}.path"), problem);
            return false;
        }
        self.field_sites
            .insert(path.to_owned(), (file.to_owned(), at.to_owned()));
        true
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

    pub(super) fn finish(mut self, files: &[(String, String)]) -> Result<Rules, RulesError> {
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
            phone_number_types: self.phone_number_types,
            released_when_terminated: self.released_when_terminated,
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
