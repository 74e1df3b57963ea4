//! The conformance suite every store must pass. STUB: being written.
