//! In-memory store, for tests: nothing survives a restart.
//! STUB: signatures are fixed; bodies are being written.

/// A store in a `Mutex`ed map.
#[derive(Default)]
pub struct MemoryStore {}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {}
    }
}
