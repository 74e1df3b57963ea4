//! Reads a merge-rules directory from disk and hands the files to the core.

use std::path::Path;

use crate::core::rules::{Rules, RulesError};

/// Why a rules directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadRulesError {
    /// The directory or a file could not be read.
    #[error("cannot read merge rules from {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The directory has no `*.toml` file.
    #[error("no merge-rules *.toml file in {0}")]
    Empty(String),
    /// The files are invalid.
    #[error(transparent)]
    Invalid(#[from] RulesError),
}

/// Loads every `*.toml` file of `dir`, sorted by file name.
///
/// Hidden files (names starting with `.`, such as editor lock files) are skipped, as a
/// shell's `*.toml` would; so are subdirectories and files with another extension.
pub fn load_rules_dir(dir: &Path) -> Result<Rules, LoadRulesError> {
    let io = |path: &Path, e: std::io::Error| LoadRulesError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_toml = path.extension().is_some_and(|x| x == "toml");
        if is_toml && !name.starts_with('.') && path.is_file() {
            paths.push((name, path));
        }
    }
    if paths.is_empty() {
        return Err(LoadRulesError::Empty(dir.display().to_string()));
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for (name, path) in paths {
        let content = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        files.push((name, content));
    }
    Ok(Rules::from_files(&files)?)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const EVENTS: &str = "[events]\naccepted_types = [\"t\"]\n";
    const ROLES: &str =
        "[package.roles]\nADI = [\"A*\"]\nACCESS = [\"B*\"]\nPORT = [\"C*\"]\nDD = [\"D*\"]\n";

    #[test]
    fn loads_toml_files_in_name_order_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        // Written out of order: the first-declared [precedence] must be 10-a's, and a
        // field path declared in both must be reported against 20-b.
        fs::write(
            dir.path().join("20-b.toml"),
            "[[field]]\npath = \"name\"\nstrategy = \"recency\"\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("10-a.toml"),
            format!("{EVENTS}{ROLES}[[field]]\npath = \"name\"\nstrategy = \"priority\"\n"),
        )
        .unwrap();
        fs::write(dir.path().join("README.md"), "not rules").unwrap();
        fs::write(dir.path().join("30-c.toml.bak"), "broken = [").unwrap();
        fs::write(dir.path().join(".#30-c.toml"), "broken = [").unwrap();
        fs::create_dir(dir.path().join("40-dir.toml")).unwrap();

        let Err(LoadRulesError::Invalid(e)) = load_rules_dir(dir.path()) else {
            panic!("duplicate path not reported");
        };
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].file, "20-b.toml");
        assert!(e.0[0].problem.contains("10-a.toml"), "{e}");

        fs::remove_file(dir.path().join("20-b.toml")).unwrap();
        let rules = load_rules_dir(dir.path()).unwrap();
        assert_eq!(rules.fields["name"].declared_in, "10-a.toml");
    }

    #[test]
    fn hash_covers_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.toml"), ROLES).unwrap();
        fs::write(dir.path().join("a.toml"), EVENTS).unwrap();
        let loaded = load_rules_dir(dir.path()).unwrap();
        let direct = Rules::from_files(&[
            ("a.toml".to_owned(), EVENTS.to_owned()),
            ("b.toml".to_owned(), ROLES.to_owned()),
        ])
        .unwrap();
        assert_eq!(loaded.hash, direct.hash);
    }

    #[test]
    fn directory_without_toml_files_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let err = load_rules_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, LoadRulesError::Empty(ref d) if d == &dir.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = load_rules_dir(&missing).unwrap_err();
        let LoadRulesError::Io { path, reason } = &err else {
            panic!("unexpected {err}");
        };
        assert_eq!(path, &missing.display().to_string());
        assert!(!reason.is_empty());
        assert!(err.to_string().starts_with("cannot read merge rules from "));
    }

    #[test]
    fn shipped_rules_directory_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("merge-rules");
        let rules = load_rules_dir(&dir).unwrap();
        assert_eq!(rules.identity_types, ["CircuitID", "MSISDN"]);
    }
}
