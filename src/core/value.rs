//! Decoding JSON into [`serde_json::Value`] with each object's map built at its final size.
//!
//! serde_json's own `Value` decoder inserts an object's entries one by one into a map that
//! starts empty. With `preserve_order` (which `bson` turns on) that map is an `IndexMap`,
//! and each time it grows it reallocates and re-indexes its entries. Every POST body and
//! every stored contribution a re-merge reads (a million products' worth) is decoded here:
//! this decoder collects an object's entries first and builds its map once, at its size
//! (-1.8% of a POST's CPU, BENCHMARKS.md round 14). It yields exactly the `Value` serde_json
//! would: equal keys keep the first one's place and the last one's value, and numbers kept
//! as text (`arbitrary_precision`) stay text.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The key under which serde_json hands a number over as text (`arbitrary_precision`).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";
/// The key under which serde_json hands a raw value over (`raw_value`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// [`deserialize`], shared (for `#[serde(deserialize_with = ...)]`).
pub fn deserialize_shared<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::sync::Arc<Value>, D::Error> {
    deserialize(deserializer).map(std::sync::Arc::new)
}

/// Decodes any JSON value (for `#[serde(deserialize_with = ...)]`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    deserializer.deserialize_any(ValueSeed(&mut Scratch::default()))
}

/// Parses JSON text, as `serde_json::from_slice::<Value>` would.
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The entries and items of the objects and arrays being decoded, innermost last. One
/// buffer for the whole value: an object's entries wait at its end and are moved into the
/// object's map when it closes, so no object or array allocates more than its final size.
#[derive(Default)]
struct Scratch {
    entries: Vec<(String, Value)>,
    items: Vec<Value>,
}

struct ValueSeed<'s>(&'s mut Scratch);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let start = self.0.items.len();
        while let Some(item) = seq.next_element_seed(ValueSeed(&mut *self.0))? {
            self.0.items.push(item);
        }
        // `split_off` allocates exactly the items after `start`.
        Ok(Value::Array(self.0.items.split_off(start)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN || first == RAW_VALUE_TOKEN {
            // serde_json's own text of a number or raw value: it parses as serde_json would.
            let text: String = map.next_value()?;
            return serde_json::from_str(&text).map_err(A::Error::custom);
        }
        let start = self.0.entries.len();
        let value = map.next_value_seed(ValueSeed(&mut *self.0))?;
        self.0.entries.push((first, value));
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed(&mut *self.0))?;
            self.0.entries.push((key, value));
        }
        // Sized once from the exact length; equal keys behave as with `Map::insert`.
        let mut object = Map::with_capacity(self.0.entries.len() - start);
        object.extend(self.0.entries.drain(start..));
        Ok(Value::Object(object))
    }
}

/// Strategies for property tests over JSON.
#[cfg(test)]
pub(crate) mod strategy {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value: nested arrays and objects (with repeated keys, escapes, every kind
    /// of number).
    pub fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z\\\\\"é\u{1}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(("[a-e]{0,3}", inner), 0..10)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategy::json;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decodes_what_serde_json_decodes(value in json()) {
            let text = serde_json::to_string(&value).unwrap();
            let ours = from_slice(text.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn equal_keys_keep_the_first_place_and_the_last_value() {
        let text = r#"{"b": 1, "a": 2, "b": 3}"#;
        let ours = from_slice(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&ours).unwrap(), r#"{"b":3,"a":2}"#);
        assert_eq!(ours, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn numbers_keep_their_text() {
        let text = r#"[12345678901234567890123, 1.50, -0, 1e400, {"n": 0.1}]"#;
        let ours = from_slice(text.as_bytes()).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&theirs).unwrap()
        );
    }

    #[test]
    fn bad_text_is_refused_like_serde_json_refuses_it() {
        for text in [r#"{"a": }"#, "[1,]", "{} x", ""] {
            assert!(from_slice(text.as_bytes()).is_err(), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }
}
