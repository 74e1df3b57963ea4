//! The merge rules the re-merge tests switch between (`tests/remerge.rs`,
//! `tests/remerge_mongo.rs`).

use std::path::Path;

use crate::app::rules_loader::load_rules_dir;
use crate::core::rules::Rules;

fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/merge-rules"))
}

/// The shipped `merge-rules/`.
pub fn shipped_rules() -> Rules {
    load_rules_dir(rules_dir()).unwrap()
}

/// The shipped rules with billing ahead of provisioning for `name`.
pub fn billing_names_first() -> Rules {
    let mut files: Vec<(String, String)> = std::fs::read_dir(rules_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let mut text = std::fs::read_to_string(&p).unwrap();
            if name == "20-fields.toml" {
                let edited = text.replace(
                    "path = \"name\"\nstrategy = \"priority\"",
                    "path = \"name\"\nstrategy = \"priority\"\nprecedence = [\"billing\", \"provisioning\"]",
                );
                assert_ne!(edited, text, "the shipped name rule is where the tests expect it");
                text = edited;
            }
            (name, text)
        })
        .collect();
    files.sort();
    Rules::from_files(&files).unwrap()
}
