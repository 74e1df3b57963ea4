//! Declarative merge rules, loaded from the TOML files of `merge-rules/`.
//!
//! The parsed [`Rules`] value is what every other part of the core consumes;
//! reading the files from disk is the caller's business ([`Rules::from_files`] takes
//! their names and contents).

use std::collections::BTreeMap;

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
    /// STUB: being written.
    pub fn from_files(files: &[(String, String)]) -> Result<Rules, RulesError> {
        let _ = files;
        todo!()
    }

    /// The rank of `source` in `order` (lower is stronger): named sources by position, the
    /// rest after them by name.
    pub fn rank<'a>(order: &[Source], source: &'a Source) -> (usize, &'a str) {
        match order.iter().position(|s| s == source) {
            Some(i) => (i, ""),
            None => (order.len(), source.as_str()),
        }
    }
}
