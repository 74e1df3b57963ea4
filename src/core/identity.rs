//! Identity: the match keys under which a document's product can be found.

use serde_json::Value;

use crate::core::rules::Rules;
use crate::core::{EventId, MatchKey, PinvId, Source, Violation, Violations};

/// Longest id that may become part of a match key: a product's `id`, a
/// `productRelationship` id, an identity-bearing `externalReference` id. The same bound as
/// `headers.id`: a key is stored, indexed and compared on every POST that names it.
pub const MAX_ID_LEN: usize = EventId::MAX_LEN;

/// Most identity keys one product of a POST may carry: its `id`, its identity-bearing
/// `externalReference` entries and its `productRelationship` ids together. Each is looked up,
/// claimed or remembered in the store on every POST; a real product has a handful.
pub const MAX_IDENTITY_KEYS: usize = 100;

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
                    keys.push(external_key(kind, id, rules));
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The key of an identity-bearing external reference: `ext:<type>:<id>`, the id of a phone
/// number type (rules' `phone_number_types`) in E.164 form when it is a phone number (else
/// as sent, so a malformed number still identifies what it always did).
pub fn external_key(kind: &str, id: &str, rules: &Rules) -> MatchKey {
    if rules.phone_number_types.iter().any(|t| t == kind) {
        if let Some(number) = crate::core::phone::to_e164(id) {
            return MatchKey::external(kind, &number);
        }
    }
    MatchKey::external(kind, id)
}

/// Whether `key` is given up by a product whose merged status is `terminated`: an
/// `ext:<type>:` key of a type in the rules' `released_when_terminated`.
pub fn released_when_terminated(key: &MatchKey, rules: &Rules) -> bool {
    key.as_str().strip_prefix("ext:").is_some_and(|rest| {
        rules.released_when_terminated.iter().any(|t| {
            rest.strip_prefix(t.as_str())
                .is_some_and(|r| r.starts_with(':'))
        })
    })
}

/// Whether a merged document's `status` is `terminated`.
pub fn is_terminated(merged: &Value) -> bool {
    merged.get("status").and_then(Value::as_str) == Some("terminated")
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

/// Reports ids longer than [`MAX_ID_LEN`] and more than [`MAX_IDENTITY_KEYS`] identity keys
/// in `product`, whose pointer in the body is `pointer`.
pub fn check_limits(pointer: &str, product: &Value, rules: &Rules, out: &mut Violations) {
    let mut keys = 0usize;
    let mut check = |at: String, id: &str| {
        keys += 1;
        if id.len() > MAX_ID_LEN {
            out.push_with(|| {
                Violation::new(
                    at,
                    format!(
                        "the id is {} bytes long; ids that identify products may be at most \
                         {MAX_ID_LEN} bytes",
                        id.len()
                    ),
                )
            });
        }
    };
    if let Some(id) = non_empty_str(product.get("id")) {
        check(format!("{pointer}/id"), id);
    }
    let array = |name: &str| product.get(name).and_then(Value::as_array);
    for (i, r) in array("externalReference").into_iter().flatten().enumerate() {
        let kind = r.get("externalIdentifierType").and_then(Value::as_str);
        if let (Some(kind), Some(id)) = (kind, non_empty_str(r.get("id"))) {
            if rules.identity_types.iter().any(|t| t == kind) {
                check(format!("{pointer}/externalReference/{i}/id"), id);
            }
        }
    }
    for (i, r) in array("productRelationship")
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(id) = non_empty_str(r.get("id")) {
            check(format!("{pointer}/productRelationship/{i}/id"), id);
        }
    }
    if keys > MAX_IDENTITY_KEYS {
        out.push(Violation::new(
            pointer,
            format!(
                "the product has {keys} identity keys (its id, identity-bearing \
                 externalReference ids and productRelationship ids); at most \
                 {MAX_IDENTITY_KEYS} are allowed per product"
            ),
        ));
    }
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

    fn limit_violations(product: &Value) -> Vec<Violation> {
        let mut out = Violations::new();
        check_limits("/value/1", product, &circuit_rules(), &mut out);
        out.into_vec()
    }

    #[test]
    fn ids_that_identify_may_be_256_bytes_long() {
        let ok = "x".repeat(MAX_ID_LEN);
        let long = "x".repeat(MAX_ID_LEN + 1);
        let doc = |id: &str| {
            json!({
                "id": id,
                "externalReference": [
                    {"externalIdentifierType": "SiteID", "id": "x".repeat(1000)},
                    {"externalIdentifierType": "CircuitID", "id": id}
                ],
                "productRelationship": [{"relationshipType": "bundles", "id": id}]
            })
        };
        assert_eq!(limit_violations(&doc(&ok)), vec![]);
        let v = limit_violations(&doc(&long));
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/value/1/id",
                "/value/1/externalReference/1/id",
                "/value/1/productRelationship/0/id"
            ]
        );
        assert!(v[0].message.contains("at most 256 bytes"), "{v:?}");
    }

    #[test]
    fn a_product_may_carry_at_most_100_identity_keys() {
        let refs = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"externalIdentifierType": "CircuitID", "id": format!("C{i}")}))
                .collect()
        };
        let ok = json!({"id": "a", "externalReference": refs(MAX_IDENTITY_KEYS - 1)});
        assert_eq!(limit_violations(&ok), vec![]);
        let many = json!({"id": "a", "externalReference": refs(15_000)});
        let v = limit_violations(&many);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/value/1");
        assert!(v[0].message.contains("15001 identity keys"), "{v:?}");
        assert!(v[0].message.contains("at most 100"), "{v:?}");
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

    fn mobile_rules() -> Rules {
        rules(
            "[identity]\nexternal_reference_types = [\"CircuitID\", \"MSISDN\"]\n\
             phone_number_types = [\"MSISDN\"]\nreleased_when_terminated = [\"MSISDN\"]",
        )
    }

    #[test]
    fn subscriber_numbers_are_one_key_in_any_form() {
        let r = mobile_rules();
        let doc =
            |n: &str| json!({"externalReference": [{"externalIdentifierType": "MSISDN", "id": n}]});
        for n in ["1234567890", "+11234567890", "(123) 456-7890"] {
            assert_eq!(
                strs(&match_keys(&billing(), &doc(n), &r)),
                ["ext:MSISDN:+11234567890"],
                "{n}"
            );
        }
        // Not a number: kept as sent. Other types are never rewritten.
        assert_eq!(
            strs(&match_keys(&billing(), &doc("n/a"), &r)),
            ["ext:MSISDN:n/a"]
        );
        assert_eq!(
            external_key("CircuitID", "1234567890", &r).as_str(),
            "ext:CircuitID:1234567890"
        );
    }

    #[test]
    fn only_keys_of_released_types_are_released() {
        let r = mobile_rules();
        assert!(released_when_terminated(
            &MatchKey::external("MSISDN", "+11234567890"),
            &r
        ));
        assert!(!released_when_terminated(
            &MatchKey::external("CircuitID", "x"),
            &r
        ));
        assert!(!released_when_terminated(
            &MatchKey::external("MSISDNX", "x"),
            &r
        ));
        assert!(!released_when_terminated(
            &MatchKey::local(&billing(), "MSISDN:x"),
            &r
        ));
        assert!(is_terminated(&json!({"status": "terminated"})));
        assert!(!is_terminated(&json!({"status": "suspended"})));
    }
}
