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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(identity: &str) -> Rules {
        let text = format!(
            "{identity}\n[events]\naccepted_types = [\"t\"]\n[package.roles]\nADI = [\"A*\"]\nACCESS = [\"B*\"]\nPORT = [\"C*\"]\nDD = [\"D*\"]\n"
        );
        Rules::from_files(&[("rules.toml".to_owned(), text)]).unwrap()
    }

    fn circuit_rules() -> Rules {
        rules("[identity]\nexternal_reference_types = [\"CircuitID\"]")
    }

    fn billing() -> Source {
        Source::parse("billing").unwrap()
    }

    fn strs(keys: &[MatchKey]) -> Vec<&str> {
        keys.iter().map(MatchKey::as_str).collect()
    }

    /// The identity-relevant part of the seed example.
    fn seed() -> Value {
        json!({
            "id": "41-1234567",
            "externalReference": [
                {"@type": "ExternalIdentifier", "id": ".BMEC.123456..ATI.",
                 "externalIdentifierType": "CircuitID", "owner": "INSTAR"},
                {"@type": "ExternalIdentifier", "id": "192837465",
                 "externalIdentifierType": "SiteID", "owner": "INSTAR"}
            ]
        })
    }

    #[test]
    fn seed_gives_local_and_circuit_keys_but_not_site_id() {
        let keys = match_keys(&billing(), &seed(), &circuit_rules());
        assert_eq!(
            strs(&keys),
            [
                "ext:CircuitID:.BMEC.123456..ATI.",
                "local:billing:41-1234567"
            ]
        );
    }

    #[test]
    fn local_key_is_scoped_by_source() {
        let inventory = Source::parse("inventory").unwrap();
        let keys = match_keys(&inventory, &json!({"id": "41-1234567"}), &circuit_rules());
        assert_eq!(strs(&keys), ["local:inventory:41-1234567"]);
    }

    #[test]
    fn without_identity_types_only_the_local_key_remains() {
        let keys = match_keys(&billing(), &seed(), &rules(""));
        assert_eq!(strs(&keys), ["local:billing:41-1234567"]);
    }

    #[test]
    fn configured_types_other_than_circuit_id_are_keys() {
        let r = rules("[identity]\nexternal_reference_types = [\"CircuitID\", \"SiteID\"]");
        let keys = match_keys(&billing(), &seed(), &r);
        assert_eq!(
            strs(&keys),
            [
                "ext:CircuitID:.BMEC.123456..ATI.",
                "ext:SiteID:192837465",
                "local:billing:41-1234567"
            ]
        );
    }

    #[test]
    fn missing_empty_or_non_string_id_gives_no_local_key() {
        let r = circuit_rules();
        for doc in [
            json!({}),
            json!({"id": ""}),
            json!({"id": 41}),
            json!({"id": null}),
            json!({"id": ["41"]}),
        ] {
            assert!(match_keys(&billing(), &doc, &r).is_empty(), "{doc}");
        }
    }

    #[test]
    fn unusable_external_references_are_skipped() {
        let doc = json!({"externalReference": [
            {"externalIdentifierType": "CircuitID", "id": ""},
            {"externalIdentifierType": "CircuitID", "id": 7},
            {"externalIdentifierType": "CircuitID"},
            {"id": "X"},
            "CircuitID",
            {"externalIdentifierType": "circuitid", "id": "X"},
            {"externalIdentifierType": "CircuitID", "id": "OK"}
        ]});
        let keys = match_keys(&billing(), &doc, &circuit_rules());
        assert_eq!(strs(&keys), ["ext:CircuitID:OK"]);
        let not_array =
            json!({"externalReference": {"externalIdentifierType": "CircuitID", "id": "X"}});
        assert!(match_keys(&billing(), &not_array, &circuit_rules()).is_empty());
    }

    #[test]
    fn keys_are_sorted_without_duplicates() {
        let doc = json!({
            "id": "a",
            "externalReference": [
                {"externalIdentifierType": "CircuitID", "id": "Z", "owner": "INSTAR"},
                {"externalIdentifierType": "CircuitID", "id": "B", "owner": "INSTAR"},
                {"externalIdentifierType": "CircuitID", "id": "Z", "owner": "OTHER"}
            ]
        });
        let keys = match_keys(&billing(), &doc, &circuit_rules());
        assert_eq!(
            strs(&keys),
            ["ext:CircuitID:B", "ext:CircuitID:Z", "local:billing:a"]
        );
    }

    #[test]
    fn lookup_keys_add_the_pinv_key_for_uuid_ids_only() {
        let r = circuit_rules();
        let doc = json!({"id": "9FFB3182409D48CBA2661379117BFF58"});
        assert_eq!(
            strs(&lookup_keys(&billing(), &doc, &r)),
            [
                "local:billing:9FFB3182409D48CBA2661379117BFF58",
                "pinv:9ffb3182-409d-48cb-a266-1379117bff58"
            ]
        );
        // The PINV key is looked up, never claimed.
        assert_eq!(
            strs(&match_keys(&billing(), &doc, &r)),
            ["local:billing:9FFB3182409D48CBA2661379117BFF58"]
        );
        assert_eq!(
            lookup_keys(&billing(), &seed(), &r),
            match_keys(&billing(), &seed(), &r)
        );
        assert!(lookup_keys(&billing(), &json!({"id": ""}), &r).is_empty());
    }
}
