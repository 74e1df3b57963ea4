//! ADI packages: roles of parts, valid combinations, and relationship ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::{PinvId, Source};

/// Relationship ids resolved to PINV ids, per source: `links[source][raw id] = PINV id`.
///
/// A relationship id is only meaningful together with the source that sent it
/// (`local:<source>:<id>`), hence the two levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Links(pub BTreeMap<Source, BTreeMap<String, PinvId>>);

impl Links {
    /// The PINV id `raw` resolves to when `source` sent it, if known.
    pub fn resolve(&self, source: &Source, raw: &str) -> Option<PinvId> {
        self.0.get(source).and_then(|m| m.get(raw)).copied()
    }

    /// Records that `raw`, sent by `source`, names `target`. Returns true when that is new.
    pub fn insert(&mut self, source: &Source, raw: &str, target: PinvId) -> bool {
        self.0
            .entry(source.clone())
            .or_default()
            .insert(raw.to_owned(), target)
            != Some(target)
    }
}
