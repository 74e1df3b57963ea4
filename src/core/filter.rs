//! `GET /products` filters and `fields=` projection over merged documents.

use serde_json::{Map, Value};

/// Attributes every TMF list item carries, whatever `fields=` asks for.
const ALWAYS_PROJECTED: [&str; 3] = ["id", "href", "@type"];

/// True when every `(dotted path, value)` filter holds for `doc`. A path walks objects by
/// attribute and is transparent through arrays (any element may match); a leaf matches
/// when it is a string equal to the value, or a number or boolean whose JSON text equals it.
pub fn matches(doc: &Value, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(path, expected)| {
        let segments: Vec<&str> = path.split('.').collect();
        path_matches(doc, &segments, expected)
    })
}

/// Walks `segments` from `node`; arrays are entered at every level, so a filter on
/// `relatedParty.partyOrPartyRole.name` matches whichever party carries the name.
fn path_matches(node: &Value, segments: &[&str], expected: &str) -> bool {
    match node {
        Value::Array(items) => items
            .iter()
            .any(|item| path_matches(item, segments, expected)),
        Value::Object(map) => match segments.split_first() {
            Some((first, rest)) => map
                .get(*first)
                .is_some_and(|child| path_matches(child, rest, expected)),
            // The path ends on an object: an object is never equal to a query string.
            None => false,
        },
        leaf if segments.is_empty() => leaf_matches(leaf, expected),
        // A scalar with path left to walk: the attribute does not exist here.
        _ => false,
    }
}

fn leaf_matches(leaf: &Value, expected: &str) -> bool {
    match leaf {
        Value::String(s) => s == expected,
        // Query strings are untyped, so compare against the JSON text: `5`, `2.5`, `true`.
        Value::Number(n) => n.to_string() == expected,
        Value::Bool(b) => b.to_string() == expected,
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

/// Keeps only the named top-level attributes of `doc` (plus `id`, `href` and `@type`, which
/// TMF lists always carry).
///
/// Names that the document lacks are ignored; a `doc` that is not an object is returned
/// unchanged, since there is nothing to select from.
pub fn project(doc: &Value, fields: &[String]) -> Value {
    let Value::Object(map) = doc else {
        return doc.clone();
    };
    let keep = |name: &str| ALWAYS_PROJECTED.contains(&name) || fields.iter().any(|f| f == name);
    let projected: Map<String, Value> = map
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Value::Object(projected)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn seed() -> Value {
        json!({
            "id": "p1",
            "href": "/products/p1",
            "@type": "Product",
            "status": "active",
            "quantity": 5,
            "ratio": 2.5,
            "isBundle": false,
            "productSpecification": {"id": "PR-ADI-EMBEDDED-BASE", "name": "ADI"},
            "externalReference": [
                {"externalIdentifierType": "CircuitID", "id": "X"},
                {"externalIdentifierType": "Other", "id": "Z"}
            ],
            "relatedParty": [
                {"role": "customer", "partyOrPartyRole": {"name": "ACME"}},
                {"role": "owner", "partyOrPartyRole": [{"name": "Y"}, {"name": "W"}]}
            ],
            "tags": ["a", ["b", "c"]],
            "note": null
        })
    }

    #[test]
    fn top_level_string_equality() {
        assert!(matches(&seed(), &f(&[("status", "active")])));
        assert!(!matches(&seed(), &f(&[("status", "terminated")])));
    }

    #[test]
    fn all_filters_must_hold() {
        let doc = seed();
        assert!(matches(
            &doc,
            &f(&[
                ("status", "active"),
                ("productSpecification.id", "PR-ADI-EMBEDDED-BASE")
            ])
        ));
        assert!(!matches(
            &doc,
            &f(&[
                ("status", "active"),
                ("productSpecification.id", "PR-PORT-1")
            ])
        ));
    }

    #[test]
    fn no_filters_match_everything() {
        assert!(matches(&seed(), &[]));
        assert!(matches(&json!(null), &[]));
    }

    #[test]
    fn dotted_path_is_transparent_through_arrays() {
        let doc = seed();
        assert!(matches(&doc, &f(&[("externalReference.id", "X")])));
        assert!(matches(&doc, &f(&[("externalReference.id", "Z")])));
        assert!(!matches(&doc, &f(&[("externalReference.id", "Q")])));
    }

    #[test]
    fn arrays_are_transparent_at_every_level() {
        let doc = seed();
        assert!(matches(
            &doc,
            &f(&[("relatedParty.partyOrPartyRole.name", "ACME")])
        ));
        assert!(matches(
            &doc,
            &f(&[("relatedParty.partyOrPartyRole.name", "Y")])
        ));
        assert!(matches(&doc, &f(&[("tags", "c")])));
        assert!(!matches(
            &doc,
            &f(&[("relatedParty.partyOrPartyRole.name", "Nobody")])
        ));
    }

    #[test]
    fn numbers_and_booleans_match_their_json_text() {
        let doc = seed();
        assert!(matches(&doc, &f(&[("quantity", "5")])));
        assert!(matches(&doc, &f(&[("ratio", "2.5")])));
        assert!(matches(&doc, &f(&[("isBundle", "false")])));
        assert!(!matches(&doc, &f(&[("quantity", "5.0")])));
        assert!(!matches(&doc, &f(&[("isBundle", "False")])));
    }

    #[test]
    fn strings_do_not_match_numbers_text_loosely_and_objects_never_match() {
        let doc = seed();
        assert!(!matches(
            &doc,
            &f(&[("productSpecification", "PR-ADI-EMBEDDED-BASE")])
        ));
        assert!(!matches(&doc, &f(&[("note", "null")])));
        assert!(!matches(&doc, &f(&[("status.id", "active")])));
        assert!(!matches(&doc, &f(&[("missing", "x")])));
        assert!(!matches(&doc, &f(&[("status", "")])));
    }

    #[test]
    fn project_keeps_named_fields_and_the_tmf_identity() {
        let out = project(&seed(), &["status".to_owned(), "missing".to_owned()]);
        assert_eq!(
            out,
            json!({"id": "p1", "href": "/products/p1", "@type": "Product", "status": "active"})
        );
    }

    #[test]
    fn project_with_no_fields_keeps_only_identity() {
        assert_eq!(
            project(&seed(), &[]),
            json!({"id": "p1", "href": "/products/p1", "@type": "Product"})
        );
    }

    #[test]
    fn project_leaves_non_objects_alone() {
        assert_eq!(project(&json!([1, 2]), &["a".to_owned()]), json!([1, 2]));
    }
}
