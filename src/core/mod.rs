//! The merge core: pure functions over `serde_json::Value` and PINV's own types.
//!
//! Nothing in here does I/O or knows about HTTP or a store; the service (`api`),
//! the stores (`store`) and the command line are thin shells around it.

#![deny(missing_docs)]

pub mod envelope;
pub mod filter;
pub mod identity;
pub mod ids;
pub mod ingest;
pub mod merge;
pub mod package;
pub mod record;
pub mod remerge;
pub mod rules;
pub mod schema;
pub mod traceparent;

pub use ids::{EventId, IdError, MatchKey, PinvId, Source};

use serde::Serialize;

/// One thing wrong with an input, located by a JSON Pointer (RFC 6901) into the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where the problem is, e.g. `/value/status`; `""` is the whole body.
    pub pointer: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl Violation {
    /// A violation at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Escapes one reference token of a JSON Pointer (`~` -> `~0`, `/` -> `~1`).
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
