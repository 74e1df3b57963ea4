//! Identity: the match keys under which a document's product can be found.
//! STUB: signatures are fixed; bodies are being written.

use serde_json::Value;

use crate::core::rules::Rules;
use crate::core::{MatchKey, Source};

/// The keys a document gives its product: `local:<source>:<id>` when the document has
/// a non-empty string `id`, and `ext:<type>:<id>` for each `externalReference` entry
/// whose `externalIdentifierType` is an identity type of the rules. Sorted, no duplicates.
pub fn match_keys(source: &Source, product: &Value, rules: &Rules) -> Vec<MatchKey> {
    let _ = (source, product, rules);
    todo!()
}

/// [`match_keys`] plus `pinv:<id>` when the document's `id` is a PINV id (looked up, never claimed).
pub fn lookup_keys(source: &Source, product: &Value, rules: &Rules) -> Vec<MatchKey> {
    let _ = (source, product, rules);
    todo!()
}
