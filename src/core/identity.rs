//! Identity: the match keys under which a document's product can be found.

use serde_json::Value;

use crate::core::rules::Rules;
use crate::core::{MatchKey, PinvId, Source};

/// The keys a document gives its product: `local:<source>:<id>` when the document has
/// a non-empty string `id`, and `ext:<type>:<id>` for each `externalReference` entry
/// whose `externalIdentifierType` is an identity type of the rules. Sorted, no duplicates.
///
/// These are the keys the product claims once the document is stored.
pub fn match_keys(source: &Source, product: &Value, rules: &Rules) -> Vec<MatchKey> {
    let mut keys = Vec::new();
    if let Some(id) = non_empty_str(product.get("id")) {
        keys.push(MatchKey::local(source, id));
    }
    if let Some(refs) = product.get("externalReference").and_then(Value::as_array) {
        for r in refs {
            let kind = r.get("externalIdentifierType").and_then(Value::as_str);
            let id = non_empty_str(r.get("id"));
            if let (Some(kind), Some(id)) = (kind, id) {
                if rules.identity_types.iter().any(|t| t == kind) {
                    keys.push(MatchKey::external(kind, id));
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The keys under which to look the document's product up: [`match_keys`], plus
/// `pinv:<id>` when the document's `id` is a PINV id (a source may address a product
/// it learnt from PINV by that id). Sorted, no duplicates.
///
/// The `pinv:` key is only looked up, never claimed: PINV ids are given by PINV, so a
/// document must not be able to reserve one.
pub fn lookup_keys(source: &Source, product: &Value, rules: &Rules) -> Vec<MatchKey> {
    let mut keys = match_keys(source, product, rules);
    if let Some(Ok(id)) = non_empty_str(product.get("id")).map(PinvId::parse) {
        keys.push(MatchKey::pinv(&id));
        keys.sort();
        keys.dedup();
    }
    keys
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}
