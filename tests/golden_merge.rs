//! Golden test: the seed billing document merged with a provisioning document under the
//! shipped `merge-rules/`, compared with `tests/golden/expected-merged.json`.
//!
//! Also the provenance of the three seed contributions (`core::provenance::explain`),
//! serialised as `GET /products/{id}/provenance` serialises it, compared byte for byte with
//! `tests/golden/expected-explanation.json`.
//!
//! `PINV_BLESS=1 cargo test --test golden_merge` rewrites the expected files; read the
//! diff before committing them.

use serde_json::Value;

use pinv::core::merge::merge;
use pinv::testing::rules::shipped_rules;
use pinv::testing::seed::{golden, seed_product};

/// Every JSON Pointer where `expected` and `actual` differ, with both values.
fn differences(pointer: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            for k in keys {
                let p = format!("{pointer}/{}", pinv::core::pointer_token(k));
                match (e.get(k), a.get(k)) {
                    (Some(ev), Some(av)) => differences(&p, ev, av, out),
                    (Some(ev), None) => out.push(format!("{p}: missing (expected {ev})")),
                    (None, Some(av)) => out.push(format!("{p}: unexpected {av}")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                differences(&format!("{pointer}/{i}"), ev, av, out);
            }
        }
        _ if expected != actual => {
            out.push(format!("{pointer}: expected {expected}, got {actual}"));
        }
        _ => {}
    }
}

#[test]
fn billing_and_provisioning_merge_to_the_expected_document() {
    let rules = shipped_rules();
    // Billing and provisioning; one of provisioning's relationships names a known product.
    let seed = seed_product();
    let merged = merge(&seed.id, &seed.contributions[..2], &seed.links, &rules);
    let actual = serde_json::to_string_pretty(&merged.document).unwrap() + "\n";

    assert_golden(
        "expected-merged.json",
        "merged document",
        &actual,
        &merged.document,
    );
}

/// Compares `actual` (the pretty text of `value`) with the expected file `name`, naming
/// each differing pointer; `PINV_BLESS=1` rewrites the file instead.
fn assert_golden(name: &str, what: &str, actual: &str, value: &Value) {
    let path = golden(name);
    if std::env::var_os("PINV_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected_text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with PINV_BLESS=1 to create it)",
            path.display()
        )
    });
    let expected: Value = serde_json::from_str(&expected_text).unwrap();
    let mut diff = Vec::new();
    differences("", &expected, value, &mut diff);
    assert!(
        diff.is_empty() && expected_text == actual,
        "{what} differs from {} (PINV_BLESS=1 rewrites it):\n  {}",
        path.display(),
        if diff.is_empty() {
            "formatting only".to_owned()
        } else {
            diff.join("\n  ")
        }
    );
}

/// The explanation of the three seed contributions, serialised exactly as the provenance
/// route does (`leaves` and `elements` through `serde_json::json!`), pins the JSON shape of
/// every `Leaf` and `Element`: a change to those types must leave these bytes alone.
#[test]
fn the_seed_explanation_serialises_to_the_expected_json() {
    let rules = shipped_rules();
    let seed = seed_product();
    let e = pinv::core::provenance::explain(&seed.id, &seed.contributions, &seed.links, &rules);
    // Straight to text, as `api::provenance` serialises its answer.
    #[derive(serde::Serialize)]
    struct Answer<'e> {
        leaves: Vec<pinv::core::provenance::Leaf<'e>>,
        elements: Vec<pinv::core::provenance::Element<'e>>,
    }
    let direct = Answer {
        leaves: e.leaves(),
        elements: e.elements(),
    };
    let actual = serde_json::to_string_pretty(&direct).unwrap() + "\n";
    // Through a `Value` (as the route did before), the same bytes.
    let answer = serde_json::json!({
        "leaves": e.leaves(),
        "elements": e.elements(),
    });
    assert_eq!(
        serde_json::to_string_pretty(&answer).unwrap() + "\n",
        actual
    );
    // The explanation's own serialisation says the same.
    let whole: Value = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(whole["leaves"], answer["leaves"]);
    assert_eq!(whole["elements"], answer["elements"]);
    assert_eq!(&whole["document"], e.document());

    assert_golden("expected-explanation.json", "explanation", &actual, &answer);
}
