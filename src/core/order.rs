//! The order of keys in a merged document, as a TMF637 reader expects it: `id`, `href`,
//! `@type` first, then the properties the product schema defines for that object (those it
//! inherits through `$ref` first, as TMF lists a base class's attributes before a
//! subclass's), then any other key alphabetically.
//!
//! The table is built once from the bundled product schema
//! ([`crate::core::schema::PRODUCT_FILE`]); ordering an object is then a few binary searches
//! per key, and an object already in order is left as it is.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::core::schema;

/// Keys that lead every object, in this order, whatever its schema says.
const LEADING: [&str; 3] = ["id", "href", "@type"];

/// The key order of every object type of the product schema.
#[derive(Debug)]
pub struct KeyOrder {
    types: Vec<ObjectType>,
    root: usize,
}

/// One object type: its known keys, sorted by name for lookup.
#[derive(Debug, Default)]
struct ObjectType {
    keys: Vec<KnownKey>,
}

#[derive(Debug)]
struct KnownKey {
    name: String,
    rank: u16,
    /// The object type of the key's value (or of its array's elements), if the schema
    /// gives it properties.
    child: Option<usize>,
}

/// Where an object is in the schema: the object type its keys are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectNode(usize);

static PRODUCT: LazyLock<KeyOrder> = LazyLock::new(|| {
    let text = schema::file(schema::PRODUCT_FILE).expect("the product schema is bundled");
    let schema: Value = serde_json::from_str(text).expect("the bundled product schema is JSON");
    KeyOrder::from_schema(&schema).expect("the bundled product schema names its root type")
});

impl KeyOrder {
    /// The order of the bundled TMF637 product schema, built on first use.
    pub fn product() -> &'static KeyOrder {
        &PRODUCT
    }

    /// Builds the order from a schema whose root is `{"$ref": "#/$defs/<Root>"}` and whose
    /// object types are `$defs` with `properties` (and a `$ref` to the type they extend).
    /// `None` when the root does not name a type with properties.
    pub fn from_schema(schema: &Value) -> Option<Self> {
        let defs = schema.get("$defs").and_then(Value::as_object)?;
        let names: Vec<&String> = defs.keys().collect();
        let index = |name: &str| names.iter().position(|n| *n == name);
        let def_of = |schema: &Value| -> Option<usize> {
            let target = schema
                .get("$ref")
                .or_else(|| schema.get("items").and_then(|items| items.get("$ref")))?;
            index(target.as_str()?.strip_prefix("#/$defs/")?)
        };
        // Own properties, then the base's, then its base's (a cycle stops the walk).
        let chain = |mut def: usize| -> Vec<&Map<String, Value>> {
            let mut seen = vec![def];
            let mut out = Vec::new();
            loop {
                if let Some(props) = defs[names[def]]
                    .get("properties")
                    .and_then(Value::as_object)
                {
                    out.push(props);
                }
                match def_of(&defs[names[def]]) {
                    Some(base) if !seen.contains(&base) => {
                        seen.push(base);
                        def = base;
                    }
                    _ => return out,
                }
            }
        };
        let has_properties = |def: usize| !chain(def).is_empty();
        let types = (0..names.len())
            .map(|def| {
                let mut ranked: BTreeMap<&str, KnownKey> = BTreeMap::new();
                let mut next = LEADING.len() as u16;
                for props in chain(def).into_iter().rev() {
                    for (name, property) in props {
                        if ranked.contains_key(name.as_str()) {
                            continue;
                        }
                        let rank = match LEADING.iter().position(|l| l == name) {
                            Some(leading) => leading as u16,
                            None => {
                                next += 1;
                                next - 1
                            }
                        };
                        let child = def_of(property).filter(|&d| has_properties(d));
                        ranked.insert(
                            name,
                            KnownKey {
                                name: name.clone(),
                                rank,
                                child,
                            },
                        );
                    }
                }
                ObjectType {
                    keys: ranked.into_values().collect(),
                }
            })
            .collect();
        let root = def_of(schema).filter(|&d| has_properties(d))?;
        Some(Self { types, root })
    }

    /// The node of the schema's root type (the product).
    pub fn root(&self) -> ObjectNode {
        ObjectNode(self.root)
    }

    fn known(&self, node: ObjectNode, key: &str) -> Option<&KnownKey> {
        let keys = &self.types[node.0].keys;
        keys.binary_search_by(|k| k.name.as_str().cmp(key))
            .ok()
            .map(|i| &keys[i])
    }

    /// Compares two keys of an object at `node`: known keys by rank, before the others,
    /// which go by name.
    pub fn compare(&self, node: ObjectNode, a: &str, b: &str) -> Ordering {
        let rank = |key| self.known(node, key).map_or(u16::MAX, |k| k.rank);
        rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
    }

    /// The node of the objects found under `key` of an object at `node` (directly or as
    /// array elements), if the schema orders them.
    pub fn child(&self, node: ObjectNode, key: &str) -> Option<ObjectNode> {
        self.known(node, key)?.child.map(ObjectNode)
    }

    /// Puts the keys of `value` (an object at `node`, or an array of them) in order, and
    /// those of every object below it that the schema knows.
    pub fn order(&self, node: ObjectNode, value: &mut Value) {
        match value {
            Value::Object(map) => self.order_object(node, map),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(map) = item {
                        self.order_object(node, map);
                    }
                }
            }
            _ => {}
        }
    }

    /// [`Self::order`] of the values of an object at `node` whose own keys are already in
    /// order.
    pub fn order_values(&self, node: ObjectNode, map: &mut Map<String, Value>) {
        for (key, value) in map.iter_mut() {
            if let Some(child) = self.child(node, key) {
                self.order(child, value);
            }
        }
    }

    fn order_object(&self, node: ObjectNode, map: &mut Map<String, Value>) {
        let in_order = map
            .keys()
            .zip(map.keys().skip(1))
            .all(|(a, b)| self.compare(node, a, b) != Ordering::Greater);
        if !in_order {
            let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            entries.sort_unstable_by(|a, b| self.compare(node, &a.0, &b.0));
            *map = entries.into_iter().collect();
        }
        self.order_values(node, map);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(value: &Value) -> Vec<&str> {
        value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn a_product_starts_with_id_href_type_then_follows_the_schema_then_the_alphabet() {
        let order = KeyOrder::product();
        let mut doc = json!({
            "zeta": 1, "status": "active", "@type": "Product", "name": "n", "alpha": 2,
            "href": "h", "@baseType": "b", "id": "i", "description": "d",
        });
        order.order(order.root(), &mut doc);
        assert_eq!(
            keys(&doc),
            [
                "id",
                "href",
                "@type",
                "@baseType",
                "description",
                "name",
                "status",
                "alpha",
                "zeta"
            ]
        );
    }

    #[test]
    fn nested_objects_and_array_elements_follow_their_own_type() {
        let order = KeyOrder::product();
        let mut doc = json!({
            "productRelationship": [{"relationshipType": "bundles", "x": 1, "id": "r"}],
            "productSpecification": {"version": "1", "name": "s", "id": "PR-1"},
            "productCharacteristic": [{"value": {"z": 1, "a": 2}, "name": "c"}],
            "product": [{"name": "inner", "id": "p"}],
        });
        order.order(order.root(), &mut doc);
        assert_eq!(
            keys(&doc["productRelationship"][0]),
            ["id", "relationshipType", "x"]
        );
        assert_eq!(
            keys(&doc["productSpecification"]),
            ["id", "name", "version"]
        );
        assert_eq!(keys(&doc["productCharacteristic"][0]), ["name", "value"]);
        // A value the schema does not describe keeps its order.
        assert_eq!(keys(&doc["productCharacteristic"][0]["value"]), ["z", "a"]);
        assert_eq!(keys(&doc["product"][0]), ["id", "name"]);
    }

    #[test]
    fn a_schema_without_a_root_type_gives_no_order() {
        assert!(KeyOrder::from_schema(&json!({"$defs": {}})).is_none());
        assert!(KeyOrder::from_schema(&json!({"$ref": "#/$defs/X", "$defs": {"X": {}}})).is_none());
    }
}
