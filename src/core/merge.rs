//! The merge: contributions + rules -> one merged TMF637 document.
//! STUB: signatures are fixed; bodies are being written.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::core::package::Links;
use crate::core::record::Contribution;
use crate::core::rules::Rules;
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

/// Merges the contributions of product `id` under `rules`.
///
/// Relationship ids in each contribution are first resolved through `links`
/// (resolved ones become PINV ids with `href`); then every field is chosen by its rule;
/// then the service-owned fields are set: `id`, `href`, and one crosswalk
/// `externalIdentifier` entry per contribution. The result depends only on the inputs,
/// never on the order of `contributions`.
pub fn merge(id: &PinvId, contributions: &[Contribution], links: &Links, rules: &Rules) -> Merged {
    let _ = (id, contributions, links, rules);
    todo!()
}
