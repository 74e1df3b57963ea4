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
