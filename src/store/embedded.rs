//! The embedded store (default): a redb database in a directory, durable when a write returns.
//! STUB: signatures are fixed; bodies are being written.

use std::path::Path;

use crate::store::StoreResult;

/// A store in `<dir>/pinv.redb`.
pub struct EmbeddedStore {}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let _ = dir;
        todo!()
    }
}
