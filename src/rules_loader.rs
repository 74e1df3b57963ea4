//! Reads a merge-rules directory from disk and hands the files to the core.
//! STUB: signatures are fixed; bodies are being written.

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
pub fn load_rules_dir(dir: &Path) -> Result<Rules, LoadRulesError> {
    let _ = dir;
    todo!()
}
