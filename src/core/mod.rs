//! The merge core: pure functions over `serde_json::Value` and PINV's own types.
//!
//! Nothing in here does I/O or knows about HTTP or a store; the service (`api`),
//! the stores (`store`) and the command line are thin shells around it.

#![deny(missing_docs)]

pub mod adapter;
pub mod envelope;
pub mod event;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod identity;
pub mod ids;
pub mod index;
pub mod ingest;
pub mod merge;
pub mod order;
pub mod package;
pub mod phone;
pub mod provenance;
pub mod query;
pub mod read_plan;
pub mod record;
pub mod remerge;
pub mod retract;
pub mod rules;
pub mod schema;
pub mod traceparent;
pub mod value;

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

/// Most violations one request reports. A body can hold thousands of bad places (90,000
/// `$` keys fit in a megabyte) and the error response must stay bounded; past the limit
/// violations are only counted, and the last entry says how many were left out.
pub const MAX_VIOLATIONS: usize = 100;

/// The violations of one request: the first [`MAX_VIOLATIONS`] kept, the rest counted.
///
/// Every check of a request reports into one of these, so a request's error lists at most
/// [`MAX_VIOLATIONS`] problems however many checks found how many. Derefs to the kept ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    shown: Vec<Violation>,
    hidden: usize,
}

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the limit is reached: another violation would only be counted.
    pub fn is_full(&self) -> bool {
        self.shown.len() >= MAX_VIOLATIONS
    }

    /// Reports a violation.
    pub fn push(&mut self, v: Violation) {
        self.push_with(|| v);
    }

    /// Reports a violation built by `make`, called only when it will be kept: past the
    /// limit, building messages and pointers would be the amplification the limit prevents.
    pub fn push_with(&mut self, make: impl FnOnce() -> Violation) {
        if self.is_full() {
            self.hidden += 1;
        } else {
            self.shown.push(make());
        }
    }

    /// Reports every violation of `other`, counted ones included.
    pub fn append(&mut self, other: Violations) {
        let hidden = other.hidden;
        self.extend(other.shown);
        self.hidden += hidden;
    }

    /// Keeps the kept violations that satisfy `keep` (counted ones cannot be inspected).
    pub fn retain(&mut self, keep: impl FnMut(&Violation) -> bool) {
        self.shown.retain(keep);
    }

    /// Re-roots the kept violations' pointers: `prefix` at their start becomes `with` (a
    /// document checked inside an envelope built for it is reported against the document
    /// the client sent).
    pub fn rebase(&mut self, prefix: &str, with: &str) {
        for v in &mut self.shown {
            if let Some(rest) = v.pointer.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    v.pointer = format!("{with}{rest}");
                }
            }
        }
    }

    /// How many violations were reported, counted ones included.
    pub fn total(&self) -> usize {
        self.shown.len() + self.hidden
    }

    /// The kept violations, then, if any were only counted, one saying how many.
    pub fn into_vec(self) -> Vec<Violation> {
        let mut out = self.shown;
        if self.hidden > 0 {
            out.push(Violation::new(
                "",
                format!("{} more violations not shown", self.hidden),
            ));
        }
        out
    }
}

impl std::ops::Deref for Violations {
    type Target = [Violation];
    fn deref(&self) -> &[Violation] {
        &self.shown
    }
}

impl Extend<Violation> for Violations {
    fn extend<I: IntoIterator<Item = Violation>>(&mut self, iter: I) {
        for v in iter {
            self.push(v);
        }
    }
}

impl From<Vec<Violation>> for Violations {
    fn from(vs: Vec<Violation>) -> Self {
        let mut out = Self::new();
        out.extend(vs);
        out
    }
}

impl PartialEq<Vec<Violation>> for Violations {
    fn eq(&self, other: &Vec<Violation>) -> bool {
        self.hidden == 0 && self.shown == *other
    }
}

/// Escapes one reference token of a JSON Pointer (`~` -> `~0`, `/` -> `~1`).
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Appends [`pointer_token`] of `token` to `out`, without allocating when nothing needs
/// escaping.
pub fn push_pointer_token(out: &mut String, token: &str) {
    // Bytes, not chars: a `[char]` pattern decodes every char of every key.
    if token.bytes().any(|b| b == b'~' || b == b'/') {
        for c in token.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(token);
    }
}

/// Appends the pointer token of array index `index` (`/3`) to `out`.
pub fn push_index_token(out: &mut String, index: usize) {
    out.push('/');
    if index < 10 {
        out.push(char::from(b'0' + index as u8));
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{index}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_past_the_limit_are_counted_not_kept() {
        let mut v = Violations::new();
        let mut built = 0;
        for i in 0..MAX_VIOLATIONS + 250 {
            v.push_with(|| {
                built += 1;
                Violation::new(format!("/{i}"), "bad")
            });
        }
        assert_eq!(built, MAX_VIOLATIONS);
        assert_eq!(v.total(), MAX_VIOLATIONS + 250);
        let mut other = Violations::from(vec![Violation::new("/x", "also bad")]);
        other.append(v);
        assert_eq!(other.total(), MAX_VIOLATIONS + 251);
        let out = other.into_vec();
        assert_eq!(out.len(), MAX_VIOLATIONS + 1);
        assert_eq!(out[0].pointer, "/x");
        assert_eq!(
            out[MAX_VIOLATIONS],
            Violation::new("", "251 more violations not shown")
        );
    }

    #[test]
    fn rebasing_replaces_a_whole_leading_segment_only() {
        let mut v = Violations::from(vec![
            Violation::new("/value", "a"),
            Violation::new("/value/status", "b"),
            Violation::new("/values/x", "c"),
            Violation::new("/headers/id", "d"),
        ]);
        v.rebase("/value", "");
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["", "/status", "/values/x", "/headers/id"]);
    }

    #[test]
    fn violations_within_the_limit_are_all_kept() {
        let v = Violations::from(vec![Violation::new("/a", "x"); 3]);
        assert_eq!(v.total(), 3);
        assert_eq!(v.into_vec(), vec![Violation::new("/a", "x"); 3]);
    }
}
