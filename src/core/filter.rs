//! `GET /products` filters and `fields=` projection over merged documents.
//! STUB: signatures are fixed; bodies are being written.

use serde_json::Value;

/// True when every `(dotted path, value)` filter holds for `doc`. A path walks objects by
/// attribute and is transparent through arrays (any element may match); a leaf matches
/// when it is a string equal to the value, or a number or boolean whose JSON text equals it.
pub fn matches(doc: &Value, filters: &[(String, String)]) -> bool {
    let _ = (doc, filters);
    todo!()
}

/// Keeps only the named top-level attributes of `doc` (plus `id`, `href` and `@type`, which
/// TMF lists always carry).
pub fn project(doc: &Value, fields: &[String]) -> Value {
    let _ = (doc, fields);
    todo!()
}
