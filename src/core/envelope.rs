//! The CloudEvents-style envelope around a POSTed TMF637 document or package.
//! STUB: signatures are fixed; bodies are being written.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::core::{EventId, Source, Violation};

/// Deepest nesting accepted anywhere in a body (the body itself is depth 1).
pub const MAX_DEPTH: usize = 64;

/// `headers.time`: the instant, and the text as sent (echoed back unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The instant, in UTC.
    pub instant: DateTime<Utc>,
    /// The string the source sent.
    pub raw: String,
}

/// The validated headers of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Headers {
    /// `headers.id`.
    pub id: EventId,
    /// `headers.source`.
    pub source: Source,
    /// `headers.type`, one of the accepted types.
    pub event_type: String,
    /// `headers.time`.
    pub time: EventTime,
    /// A well-formed W3C `traceparent`, if one was sent (malformed ones are dropped).
    pub traceparent: Option<String>,
    /// The headers object exactly as sent, for echoing in responses.
    pub raw: Map<String, Value>,
}

/// The body's `value`: one product or a package of products.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `value` was an object.
    Single(Value),
    /// `value` was an array of products.
    Package(Vec<Value>),
}

/// A parsed POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The headers.
    pub headers: Headers,
    /// The product(s).
    pub payload: Payload,
}

/// Finds object keys that start with `$` or contain NUL, and nesting deeper than
/// [`MAX_DEPTH`], anywhere in `body`; one violation per offending place.
pub fn check_structure(body: &Value) -> Vec<Violation> {
    let _ = body;
    todo!()
}

/// Parses a body into an envelope, checking every header rule. All violations are
/// reported, each with a JSON Pointer into the body.
pub fn parse(body: Value, accepted_types: &[String]) -> Result<Envelope, Vec<Violation>> {
    let _ = (body, accepted_types);
    todo!()
}
