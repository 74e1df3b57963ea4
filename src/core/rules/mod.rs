//! Declarative merge rules, loaded from the TOML files of `merge-rules/`.
//!
//! The parsed [`Rules`] value is what every other part of the core consumes;
//! reading the files from disk is the caller's business ([`Rules::from_files`] takes
//! their names and contents).

use std::collections::BTreeMap;

use toml::Table;

use crate::core::Source;

mod parser;
use parser::Parser;

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

/// Array fields whose elements each describe one thing (a postal address, a contact
/// medium, a place). Merged field by field, matched elements of two sources make one that
/// neither sent (one source's street with another's post code), so their `union` rules
/// should take each element whole (`element_strategy` other than `merge`).
pub const WHOLE_ELEMENT_FIELDS: &[&str] = &["contactMedium", "place"];

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
    /// Identity types whose ids are phone numbers (`MSISDN`): their keys use the E.164 form,
    /// so `1234567890` and `+11234567890` are one line.
    pub phone_number_types: Vec<String>,
    /// Identity types whose keys a product gives up when its merged `status` becomes
    /// `terminated`, so a new product may claim them (a subscriber number reassigned).
    pub released_when_terminated: Vec<String>,
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

    /// Valid rules that are probably wrong, for `pinv check-rules` to print: each `union`
    /// of a [`WHOLE_ELEMENT_FIELDS`] field whose matched elements are merged field by field.
    /// Not errors: merging is right when every source sends disjoint parts of the element.
    pub fn warnings(&self) -> Vec<RuleProblem> {
        self.fields
            .values()
            .filter(|r| r.strategy == Strategy::Union && r.element_strategy == ElementStrategy::Merge)
            .filter(|r| {
                let last = r.path.rsplit('.').next().unwrap_or_default();
                WHOLE_ELEMENT_FIELDS.contains(&last)
            })
            .map(|r| RuleProblem {
                file: r.declared_in.clone(),
                field: format!("field \"{}\".element_strategy", r.path),
                problem: "matched elements are merged field by field (the default, \"merge\"), so \
                          one element can mix two sources' addresses; use \"priority\", \"recency\" \
                          or \"oldest\" to take each element whole from one source"
                    .to_owned(),
            })
            .collect()
    }

    /// Whether `headers.type` is one of the accepted event types.
    pub fn accepts_type(&self, event_type: &str) -> bool {
        self.accepted_types.iter().any(|t| t == event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

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
                include_str!("../../../merge-rules/00-sources.toml"),
            ),
            (
                "10-identity-and-packages.toml",
                include_str!("../../../merge-rules/10-identity-and-packages.toml"),
            ),
            (
                "20-fields.toml",
                include_str!("../../../merge-rules/20-fields.toml"),
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
    fn field_by_field_merging_of_addresses_is_warned_about() {
        let r = with_base(
            "[[field]]\npath = \"relatedParty.partyOrPartyRole.contactMedium\"\nstrategy = \"union\"\nkey = [\"contactType\"]\n\
             [[field]]\npath = \"place\"\nstrategy = \"union\"\nkey = [\"role\"]\nelement_strategy = \"recency\"\n\
             [[field]]\npath = \"productCharacteristic\"\nstrategy = \"union\"\nkey = [\"name\"]\n",
        )
        .unwrap();
        let w = r.warnings();
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_problem(
            &w[0],
            "10-test.toml",
            "field \"relatedParty.partyOrPartyRole.contactMedium\".element_strategy",
            "merged field by field",
        );
    }

    #[test]
    fn shipped_rules_take_addresses_whole() {
        let r = Rules::from_files(&shipped()).unwrap();
        assert_eq!(r.warnings(), vec![]);
        for path in ["relatedParty.partyOrPartyRole.contactMedium", "place"] {
            assert_eq!(
                r.fields[path].element_strategy,
                ElementStrategy::Priority,
                "{path}"
            );
        }
    }

    #[test]
    fn shipped_defaults_parse_with_expected_values() {
        let r = Rules::from_files(&shipped()).unwrap();
        assert_eq!(
            r.precedence,
            src(&[
                "inventory",
                "provisioning",
                "billing",
                "care-order",
                "activation",
                "ordering"
            ])
        );
        assert_eq!(r.identity_types, ["CircuitID", "MSISDN"]);
        assert_eq!(r.phone_number_types, ["MSISDN"]);
        assert_eq!(r.released_when_terminated, ["MSISDN"]);
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
            // Addresses come whole from one source (shipped_rules_take_addresses_whole).
            if !WHOLE_ELEMENT_FIELDS.contains(&path.rsplit('.').next().unwrap_or_default()) {
                assert_eq!(rule.element_strategy, ElementStrategy::Merge, "{path}");
            }
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
    fn phone_and_released_types_must_be_identity_types() {
        let p = only_problem(
            "[identity]\nexternal_reference_types = [\"MSISDN\"]\nphone_number_types = [\"MSISDN\"]\n\
             released_when_terminated = [\"CTN\"]\n",
        );
        assert_problem(
            &p,
            "10-test.toml",
            "identity.released_when_terminated[0]",
            "'CTN' is not one of identity.external_reference_types",
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
