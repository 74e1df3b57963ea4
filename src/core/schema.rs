//! The JSON Schemas of `schemas/`, compiled once.
//!
//! The envelope schema checks the body's shape; the product schema (derived from the TMF637 v5
//! `Product` model, with the AT&T extensions) checks each product. Both are extensible the TMF
//! way: unknown attributes pass, known ones are type-checked. Semantic header checks (time
//! syntax, source characters, accepted types, content type) live in [`crate::core::envelope`],
//! not in the schemas, so that each problem is reported once.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;

use crate::core::{pointer_token, Violation, Violations};

/// File name of the envelope schema.
pub const ENVELOPE_FILE: &str = "envelope.schema.json";
/// File name of the product schema (the example's `@schemaLocation` names it).
pub const PRODUCT_FILE: &str = "AttProduct_tmf637.schema.json";

/// The schema files served under `/schema/{file}`: (file name, contents).
pub const FILES: &[(&str, &str)] = &[
    (
        ENVELOPE_FILE,
        include_str!("../../schemas/envelope.schema.json"),
    ),
    (
        PRODUCT_FILE,
        include_str!("../../schemas/AttProduct_tmf637.schema.json"),
    ),
];

/// Longest excerpt of an offending value quoted in a message.
const MAX_EXCERPT: usize = 80;

/// The product schema's `DateTime` pattern, named in messages instead of the raw regex.
const DATE_TIME_PATTERN: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";
/// The product schema's `Decimal` pattern (decimals sent as strings).
const DECIMAL_PATTERN: &str = "^-?[0-9]+(\\.[0-9]+)?$";

/// Compiled validators for the envelope and the TMF637 product.
pub struct Schemas {
    envelope: Validator,
    product: Validator,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").finish_non_exhaustive()
    }
}

impl Schemas {
    /// Compiles the bundled schemas.
    pub fn compile() -> Result<Self, String> {
        // Built here so that the first merge does not pay for reading the schema.
        crate::core::order::KeyOrder::product();
        Ok(Self {
            envelope: compile_file(ENVELOPE_FILE)?,
            product: compile_file(PRODUCT_FILE)?,
        })
    }

    /// Violations of the envelope schema by a whole body (pointers from the body root).
    pub fn validate_envelope(&self, body: &Value) -> Violations {
        violations(&self.envelope, body, "")
    }

    /// Violations of the product schema by one product; `prefix` is the product's pointer
    /// in the body (e.g. `/value` or `/value/2`) and starts every reported pointer.
    pub fn validate_product(&self, product: &Value, prefix: &str) -> Violations {
        violations(&self.product, product, prefix)
    }
}

/// The contents of a schema file by name.
pub fn file(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

fn compile_file(name: &str) -> Result<Validator, String> {
    let text = file(name).ok_or_else(|| format!("schema {name} is not bundled"))?;
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("schema {name} is not JSON: {e}"))?;
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .build(&schema)
        .map_err(|e| format!("schema {name} does not compile: {e}"))
}

fn violations(validator: &Validator, instance: &Value, prefix: &str) -> Violations {
    let mut out = Violations::new();
    // The common case is a valid document; `is_valid` short-circuits without building errors.
    if validator.is_valid(instance) {
        return out;
    }
    for error in validator.iter_errors(instance) {
        out.push_with(|| to_violation(&error, prefix));
    }
    out
}

fn to_violation(error: &ValidationError<'_>, prefix: &str) -> Violation {
    let pointer = format!("{prefix}{}", error.instance_path().as_str());
    let instance = error.instance();
    let subject = subject(&pointer);
    match error.kind() {
        // Point at the missing member itself, the way the envelope parser does.
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            Violation::new(
                format!("{pointer}/{}", pointer_token(name)),
                format!("\"{}\" is required", excerpt_str(name)),
            )
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected
                .iter()
                .take(10)
                .map(|n| format!("\"{}\"", excerpt_str(n)))
                .collect();
            let what = if unexpected.len() == 1 {
                "is not an allowed property"
            } else {
                "are not allowed properties"
            };
            Violation::new(pointer, format!("{} {what}", names.join(", ")))
        }
        kind => {
            let value = excerpt(instance);
            let text = match kind {
                ValidationErrorKind::Type { kind } => {
                    format!("{value} is not {}", expected_types(kind))
                }
                ValidationErrorKind::Enum { options } => {
                    format!("{value} is not one of {}", excerpt(options))
                }
                ValidationErrorKind::Pattern { pattern } if pattern == DATE_TIME_PATTERN => {
                    format!("{value} is not an RFC 3339 date-time (pattern)")
                }
                ValidationErrorKind::Pattern { pattern } if pattern == DECIMAL_PATTERN => {
                    format!("{value} is not a decimal number (pattern)")
                }
                ValidationErrorKind::MinItems { limit } => format!(
                    "has {} items; at least {limit} are required (minItems)",
                    array_len(instance)
                ),
                ValidationErrorKind::MaxItems { limit } => format!(
                    "has {} items; at most {limit} are allowed (maxItems)",
                    array_len(instance)
                ),
                // Kinds the bundled schemas do not use; the library's wording, bounded.
                other => format!("{} ({})", excerpt_str(&error.to_string()), other.keyword()),
            };
            Violation::new(pointer, format!("{subject}: {text}"))
        }
    }
}

/// How a message names the value at `pointer`: `"status"`, `"relatedParty"[1]`, or `the body`.
fn subject(pointer: &str) -> String {
    let mut tokens = pointer.rsplit('/');
    let last = tokens.next().unwrap_or_default();
    if pointer.is_empty() {
        return "the body".to_owned();
    }
    let unescape = |t: &str| t.replace("~1", "/").replace("~0", "~");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(parent) = tokens.next().filter(|p| !p.is_empty()) {
            return format!("\"{}\"[{last}]", excerpt_str(&unescape(parent)));
        }
    }
    format!("\"{}\"", excerpt_str(&unescape(last)))
}

fn expected_types(kind: &TypeKind) -> String {
    let names: Vec<String> = match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    };
    let with_article: Vec<String> = names
        .iter()
        .map(|n| match n.as_bytes().first() {
            Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {n}"),
            _ => format!("a {n}"),
        })
        .collect();
    with_article.join(" or ")
}

fn array_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// The value as compact JSON, cut to [`MAX_EXCERPT`] characters.
pub(crate) fn excerpt(v: &Value) -> String {
    excerpt_str(&v.to_string())
}

/// `s` cut to [`MAX_EXCERPT`] characters (on a character boundary), marked with `…`.
pub(crate) fn excerpt_str(s: &str) -> String {
    match s.char_indices().nth(MAX_EXCERPT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::core::MAX_VIOLATIONS;

    const SEED: &str = include_str!("../../docs/examples/seed-adi-request.json");

    fn seed() -> Value {
        serde_json::from_str(SEED).unwrap()
    }

    fn schemas() -> Schemas {
        Schemas::compile().unwrap()
    }

    #[test]
    fn schemas_can_be_shared_across_worker_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Schemas>();
    }

    #[test]
    fn files_are_served_by_name_and_declare_their_ids() {
        for (name, text) in FILES {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["$id"], json!(format!("/schema/{name}")));
            assert_eq!(
                v["$schema"],
                json!("https://json-schema.org/draft/2020-12/schema")
            );
        }
        assert!(file(PRODUCT_FILE).is_some());
        assert!(file(ENVELOPE_FILE).is_some());
        assert!(file("nope.json").is_none());
    }

    #[test]
    fn message_patterns_match_the_schema_file() {
        let product: Value = serde_json::from_str(file(PRODUCT_FILE).unwrap()).unwrap();
        assert_eq!(
            product["$defs"]["DateTime"]["pattern"],
            json!(DATE_TIME_PATTERN)
        );
        assert_eq!(
            product["$defs"]["Decimal"]["pattern"],
            json!(DECIMAL_PATTERN)
        );
    }

    #[test]
    fn the_example_request_passes_both_schemas() {
        let s = schemas();
        let body = seed();
        assert_eq!(s.validate_envelope(&body), vec![]);
        assert_eq!(s.validate_product(&body["value"], "/value"), vec![]);
    }

    #[test]
    fn bogus_status_is_reported_at_its_pointer_with_the_allowed_values() {
        let mut product = seed()["value"].clone();
        product["status"] = json!("bogus");
        let v = schemas().validate_product(&product, "/value");
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/value/status");
        assert!(
            v[0].message
                .starts_with("\"status\": \"bogus\" is not one of [\"created\""),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn package_prefix_starts_the_pointer() {
        let v = schemas().validate_product(&json!({"status": "bogus"}), "/value/2");
        assert_eq!(v[0].pointer, "/value/2/status");
    }

    #[test]
    fn related_party_must_be_an_array() {
        let mut product = seed()["value"].clone();
        product["relatedParty"] = json!({"role": "Customer"});
        let v = schemas().validate_product(&product, "/value");
        assert_eq!(
            v,
            vec![Violation::new(
                "/value/relatedParty",
                "\"relatedParty\": {\"role\":\"Customer\"} is not an array"
            )]
        );
    }

    #[test]
    fn characteristic_without_name_is_refused() {
        let product =
            json!({"productCharacteristic": [{"name": "speed", "value": 1}, {"value": 2}]});
        let v = schemas().validate_product(&product, "/value");
        assert_eq!(
            v,
            vec![Violation::new(
                "/value/productCharacteristic/1/name",
                "\"name\" is required"
            )]
        );
    }

    #[test]
    fn known_attributes_are_type_checked_deep_inside() {
        let product = json!({
            "isBundle": "yes",
            "name": 5,
            "place": [{"place": {"geographicSubAddress": [{"subUnit": [{"subUnitNumber": 200}]}]}}],
            "productRelationship": [{"relationshipType": "bundles"}],
            "startDate": "yesterday",
            "productPrice": [{"price": {"dutyFreeAmount": {"value": "12,00"}}}]
        });
        let v = schemas().validate_product(&product, "/value");
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        for p in [
            "/value/isBundle",
            "/value/name",
            "/value/place/0/place/geographicSubAddress/0/subUnit/0/subUnitNumber",
            "/value/productRelationship/0/id",
            "/value/startDate",
            "/value/productPrice/0/price/dutyFreeAmount/value",
        ] {
            assert!(pointers.contains(&p), "{p} missing from {v:?}");
        }
        assert_eq!(v.len(), 6, "{v:?}");
        let msg = |p: &str| v.iter().find(|v| v.pointer == p).unwrap().message.clone();
        assert_eq!(
            msg("/value/isBundle"),
            "\"isBundle\": \"yes\" is not a boolean"
        );
        assert_eq!(
            msg("/value/startDate"),
            "\"startDate\": \"yesterday\" is not an RFC 3339 date-time (pattern)"
        );
    }

    #[test]
    fn dates_accept_rfc3339_and_the_space_form() {
        let product = json!({"startDate": "2024-10-03T12:34:56Z",
                             "orderDate": "2024-10-03 12:34:56.123+02:00"});
        assert_eq!(schemas().validate_product(&product, "/value"), vec![]);
    }

    #[test]
    fn unknown_attributes_pass_and_top_level_id_is_optional() {
        let product = json!({
            "attCustomField": {"anything": [1, 2, 3]},
            "relatedParty": [{"role": "Customer", "extra": true,
                              "partyOrPartyRole": {"@type": "Organization", "whatever": null}}],
            "status": "active"
        });
        assert_eq!(schemas().validate_product(&product, "/value"), vec![]);
    }

    #[test]
    fn integers_beyond_u64_are_integers_and_fractions_are_not() {
        let with_priority = |text: &str| -> Value {
            serde_json::from_str(&format!(
                r#"{{"productPrice": [{{"priceAlteration": [{{"priority": {text}}}]}}]}}"#
            ))
            .unwrap()
        };
        for ok in [
            "1",
            "123456789012345678901234567890",
            "-9223372036854775809",
        ] {
            assert_eq!(
                schemas().validate_product(&with_priority(ok), "/value"),
                vec![],
                "{ok}"
            );
        }
        for bad in ["1.5", "0.10000000000000000001", "\"1\""] {
            let v = schemas().validate_product(&with_priority(bad), "/value");
            assert_eq!(v.len(), 1, "{bad}: {v:?}");
            assert_eq!(
                v[0].pointer,
                "/value/productPrice/0/priceAlteration/0/priority"
            );
        }
    }

    #[test]
    fn every_error_is_reported() {
        let product = json!({"status": "bogus", "relatedParty": "x"});
        let v = schemas().validate_product(&product, "/value");
        let mut pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        pointers.sort_unstable();
        assert_eq!(pointers, ["/value/relatedParty", "/value/status"]);
    }

    #[test]
    fn violations_are_capped_with_a_count_of_the_rest() {
        let chars: Vec<Value> = (0..150).map(|_| json!({})).collect();
        let v = schemas().validate_product(&json!({ "productCharacteristic": chars }), "/value");
        assert_eq!(v.total(), 150);
        let v = v.into_vec();
        assert_eq!(v.len(), MAX_VIOLATIONS + 1);
        assert_eq!(v[MAX_VIOLATIONS].message, "50 more violations not shown");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "é".repeat(10_000);
        let v = schemas().validate_product(&json!({ "status": long }), "/value");
        assert_eq!(v.len(), 1);
        assert!(v[0].message.chars().count() < 400, "{}", v[0].message);
        assert!(v[0].message.contains('…'));
    }

    #[test]
    fn nested_products_as_deep_as_the_structure_check_allows_validate() {
        // Each nested product costs two levels (the `product` array and the object).
        let mut product = json!({"status": "bogus"});
        for _ in 0..31 {
            product = json!({ "product": [product] });
        }
        let v = schemas().validate_product(&product, "/value");
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].pointer,
            format!("/value{}/status", "/product/0".repeat(31))
        );
    }

    #[test]
    fn envelope_refuses_extra_top_level_keys() {
        let mut body = seed();
        body["extra"] = json!(1);
        assert_eq!(
            schemas().validate_envelope(&body),
            vec![Violation::new("", "\"extra\" is not an allowed property")]
        );
    }

    #[test]
    fn envelope_requires_headers_and_value_and_types_headers() {
        let body = json!({"headers": {"id": "1", "source": "billing", "type": "t",
                                      "time": 5, "traceparent": 1}});
        let v = schemas().validate_envelope(&body);
        assert!(v.contains(&Violation::new("/value", "\"value\" is required")));
        assert!(v.contains(&Violation::new(
            "/headers/datacontenttype",
            "\"datacontenttype\" is required"
        )));
        assert!(v.contains(&Violation::new(
            "/headers/time",
            "\"time\": 5 is not a string"
        )));
        assert!(v.contains(&Violation::new(
            "/headers/traceparent",
            "\"traceparent\": 1 is not a string"
        )));
        assert_eq!(v.len(), 4, "{v:?}");
    }

    #[test]
    fn envelope_value_is_one_product_or_three_to_four() {
        let s = schemas();
        let mut body = seed();
        let product = body["value"].clone();
        for n in [3, 4] {
            body["value"] = Value::Array(vec![product.clone(); n]);
            assert_eq!(s.validate_envelope(&body), vec![], "{n} products");
        }
        body["value"] = Value::Array(vec![product.clone(); 2]);
        assert_eq!(
            s.validate_envelope(&body),
            vec![Violation::new(
                "/value",
                "\"value\": has 2 items; at least 3 are required (minItems)"
            )]
        );
        body["value"] = json!([{}, {}, 7]);
        assert_eq!(
            s.validate_envelope(&body),
            vec![Violation::new(
                "/value/2",
                "\"value\"[2]: 7 is not an object"
            )]
        );
        body["value"] = json!("x");
        assert_eq!(
            s.validate_envelope(&body),
            vec![Violation::new(
                "/value",
                "\"value\": \"x\" is not an array or an object"
            )]
        );
    }
}
