//! Identifier newtypes, each parsed once at the edge so the rest of the code can rely on them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("must be a non-empty string")]
    Empty,
    /// The string is longer than allowed.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The longest allowed length.
        max: usize,
    },
    /// A source name holds a character that could forge a match key.
    #[error("may contain only letters, digits, '.', '_' and '-'")]
    BadCharacter,
    /// The string holds a control character.
    #[error("must not contain control characters")]
    ControlCharacter,
    /// The string is not a UUID.
    #[error("must be a UUID")]
    NotUuid,
}

/// The system that sent a document (`headers.source`), e.g. `billing`.
///
/// Restricted to `[A-Za-z0-9._-]{1,64}` because it is embedded in match keys
/// (`local:<source>:<id>`) and must not be able to forge another source's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Source(String);

impl Source {
    /// Longest accepted source name.
    pub const MAX_LEN: usize = 64;

    /// Parses a source name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(IdError::TooLong { max: Self::MAX_LEN });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(IdError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    /// The source name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Source {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Source> for String {
    fn from(s: Source) -> String {
        s.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id a source gave an event (`headers.id`); unique per source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    /// Longest accepted event id.
    pub const MAX_LEN: usize = 256;

    /// Parses an event id: non-empty, at most [`Self::MAX_LEN`] bytes, no control characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(IdError::TooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::ControlCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    /// The event id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<EventId> for String {
    fn from(s: EventId) -> String {
        s.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id PINV gives a product when it first stores it: a UUID (v4 or v7, as the store
/// chooses: `Store::product_ids`), always in lowercase hyphenated form so that equal ids are
/// equal strings. Any UUID parses: stores keep the ids earlier builds gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PinvId(uuid::Uuid);

impl PinvId {
    /// A fresh random id.
    pub fn new_v4() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// A fresh time-ordered id (UUID v7: 48 bits of Unix milliseconds, then 74 random
    /// bits), greater than every id this process made before it. Ids made close together
    /// sort together, so a store keyed on them inserts a batch into a few neighbouring pages.
    pub fn new_v7() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Wraps an existing UUID (tests and generators use this for determinism).
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Self(u)
    }

    /// Parses a UUID string (any case, hyphenated or not).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::NotUuid)
    }

    /// The UUID's 16 bytes; their order is the ids' order (stores key on them).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// `/products/{id}`.
    pub fn href(&self) -> String {
        format!("/products/{}", self.0.hyphenated())
    }
}

impl TryFrom<String> for PinvId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<PinvId> for String {
    fn from(s: PinvId) -> String {
        s.to_string()
    }
}

impl fmt::Display for PinvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A string under which a product can be found; belongs to at most one product, ever.
///
/// Forms: `local:<source>:<local id>`, `pinv:<PINV id>`, `ext:<type>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MatchKey(String);

impl MatchKey {
    /// The key of a source's own id for a product.
    pub fn local(source: &Source, local_id: &str) -> Self {
        Self(format!("local:{source}:{local_id}"))
    }

    /// The key of a PINV id.
    pub fn pinv(id: &PinvId) -> Self {
        Self(format!("pinv:{id}"))
    }

    /// The key of an identity-bearing external reference, e.g. `ext:CircuitID:.BMEC.123456..ATI.`.
    pub fn external(kind: &str, id: &str) -> Self {
        Self(format!("ext:{kind}:{id}"))
    }

    /// Rebuilds a key read back from a store. Only stores call this; keys are
    /// otherwise made by the constructors above.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_sort_in_the_order_they_were_made_and_v4_ids_do_not_claim_to() {
        let ids: Vec<PinvId> = (0..10_000).map(|_| PinvId::new_v7()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id.0.get_version_num() == 7));
        assert_eq!(PinvId::new_v4().0.get_version_num(), 4);
        // A v7 id read back from its text is the same id: stores key on the bytes.
        let id = ids[0];
        assert_eq!(PinvId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn source_accepts_plain_names_and_refuses_separators() {
        assert!(Source::parse("billing").is_ok());
        assert!(Source::parse("net-inv_2.0").is_ok());
        assert_eq!(Source::parse(""), Err(IdError::Empty));
        assert_eq!(Source::parse("a:b"), Err(IdError::BadCharacter));
        assert_eq!(Source::parse("a b"), Err(IdError::BadCharacter));
        assert!(matches!(
            Source::parse(&"x".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn event_id_refuses_empty_long_and_control_characters() {
        assert!(EventId::parse("41-1234567").is_ok());
        assert_eq!(EventId::parse(""), Err(IdError::Empty));
        assert_eq!(EventId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert!(EventId::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn pinv_id_is_normalised_to_lowercase_hyphenated() {
        let id = PinvId::parse("9FFB3182409D48CBA2661379117BFF58").unwrap();
        assert_eq!(id.to_string(), "9ffb3182-409d-48cb-a266-1379117bff58");
        assert_eq!(id.href(), "/products/9ffb3182-409d-48cb-a266-1379117bff58");
        assert_eq!(PinvId::parse("41-1234567"), Err(IdError::NotUuid));
    }

    #[test]
    fn match_keys_have_their_documented_forms() {
        let s = Source::parse("billing").unwrap();
        assert_eq!(MatchKey::local(&s, "41-1").as_str(), "local:billing:41-1");
        assert_eq!(
            MatchKey::external("CircuitID", ".B.").as_str(),
            "ext:CircuitID:.B."
        );
    }
}
