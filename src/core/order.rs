//! The order of keys in a merged document, as a TMF637 reader expects it: `id`, `href`,
//! `@type` first, then the properties the product schema defines for that object (those it
//! inherits through `$ref` first, as TMF lists a base class's attributes before a
//! subclass's), then any other key alphabetically.
//!
//! The table is built once from the bundled product schema
//! ([`crate::core::schema::PRODUCT_FILE`]); ordering an object is then one hash lookup
//! per key, and an object already in order is left as it is.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::core::schema;

/// Keys that lead every object, in this order, whatever its schema says.
const LEADING: [&str; 3] = ["id", "href", "@type"];

/// The key order of every object type of the product schema.
#[derive(Debug)]
pub struct KeyOrder {
    /// Every key name any type defines -> its column in `types` (one hash per key looked
    /// up, instead of a search per object type).
    columns: foldhash::HashMap<String, usize>,
    /// Per object type, per column: where the key goes, if the type defines it.
    types: Vec<Vec<Option<Place>>>,
    root: usize,
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
        let ranked: Vec<BTreeMap<&str, Place>> = (0..names.len())
            .map(|def| {
                let mut ranked: BTreeMap<&str, Place> = BTreeMap::new();
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
                        let child = def_of(property)
                            .filter(|&d| has_properties(d))
                            .map(ObjectNode);
                        ranked.insert(name, Place { rank, child });
                    }
                }
                ranked
            })
            .collect();
        let root = def_of(schema).filter(|&d| has_properties(d))?;
        let mut columns = foldhash::HashMap::default();
        for name in ranked.iter().flat_map(BTreeMap::keys) {
            let next = columns.len();
            columns.entry((*name).to_owned()).or_insert(next);
        }
        let types = ranked
            .iter()
            .map(|places| {
                let mut row = vec![None; columns.len()];
                for (name, place) in places {
                    row[columns[*name]] = Some(*place);
                }
                row
            })
            .collect();
        Some(Self {
            columns,
            types,
            root,
        })
    }

    /// The node of the schema's root type (the product).
    pub fn root(&self) -> ObjectNode {
        ObjectNode(self.root)
    }

    /// Where `key` goes in an object at `node`: its rank (every key the schema does not
    /// define shares the last rank, and goes by name), and the node of the objects below it.
    pub fn place(&self, node: ObjectNode, key: &str) -> Place {
        self.columns
            .get(key)
            .and_then(|&column| self.types[node.0][column])
            .unwrap_or(Place::UNDESCRIBED)
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

    /// A copy of `value` (an object at `node`, or an array of them, or anything else) as
    /// [`Self::order`] would leave a clone of it, key order included; but each map is built
    /// once, in order, where a clone then ordered would build most maps twice (hashing every
    /// key again). What a merge takes from a contribution is copied this way.
    pub fn ordered_clone(&self, node: ObjectNode, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(self.ordered_map(node, map)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| match item {
                        Value::Object(map) => Value::Object(self.ordered_map(node, map)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn ordered_map(&self, node: ObjectNode, map: &Map<String, Value>) -> Map<String, Value> {
        // Sorted by reference, then cloned: sorting the clones would move whole values.
        let mut entries: Vec<(Place, &String, &Value)> = map
            .iter()
            .map(|(key, value)| (self.place(node, key), key, value))
            .collect();
        sort_by_place(&mut entries);
        let mut out = Map::with_capacity(entries.len());
        for (place, key, value) in entries {
            let value = match place.child {
                Some(child) => self.ordered_clone(child, value),
                None => value.clone(),
            };
            out.insert(key.clone(), value);
        }
        out
    }

    /// [`Self::order`] of the value at each place below an object whose keys are in order.
    fn order_below(&self, places: &[Place], map: &mut Map<String, Value>) {
        for (place, value) in places.iter().zip(map.values_mut()) {
            if let Some(child) = place.child {
                self.order(child, value);
            }
        }
    }

    /// Whether the keys of `map`, an object at `node`, are in order: one lookup per key,
    /// each key's place handed to `each` in the map's order.
    fn in_order(
        &self,
        node: ObjectNode,
        map: &Map<String, Value>,
        mut each: impl FnMut(Place),
    ) -> bool {
        let mut in_order = true;
        let mut previous: Option<(u16, &str)> = None;
        for key in map.keys() {
            let place = self.place(node, key);
            let here = place.sort_key(key);
            in_order &= previous.is_none_or(|p| p <= here);
            previous = Some(here);
            each(place);
        }
        in_order
    }

    fn order_object(&self, node: ObjectNode, map: &mut Map<String, Value>) {
        // One lookup per key; a map already in order (the common case: a source that sends
        // TMF637 order) is not rebuilt, as rebuilding hashes every key again.
        let mut places = Vec::with_capacity(map.len());
        if self.in_order(node, map, |place| places.push(place)) {
            self.order_below(&places, map);
            return;
        }
        let entries = places
            .into_iter()
            .zip(std::mem::take(map))
            .map(|(place, (key, mut value))| {
                if let Some(child) = place.child {
                    self.order(child, &mut value);
                }
                (place, key, value)
            })
            .collect();
        *map = map_in_order(entries);
    }
}

/// Sorts an object's entries, each with its key's place, into the order. The keys of one
/// object are distinct, so an unstable sort is exact.
fn sort_by_place<K: AsRef<str>, V>(entries: &mut [(Place, K, V)]) {
    entries.sort_unstable_by(|a, b| a.0.sort_key(a.1.as_ref()).cmp(&b.0.sort_key(b.1.as_ref())));
}

/// The object made of `entries` (each key with its place, see [`KeyOrder::place`]), its
/// keys in order.
pub fn map_in_order<K: AsRef<str> + Into<String>>(
    mut entries: Vec<(Place, K, Value)>,
) -> Map<String, Value> {
    sort_by_place(&mut entries);
    let mut out = Map::with_capacity(entries.len());
    for (_, key, value) in entries {
        out.insert(key.into(), value);
    }
    out
}

/// Where a key goes in its object: see [`KeyOrder::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Lower ranks come first; keys of equal rank go by name.
    pub rank: u16,
    /// The node of the objects under the key, if the schema orders them.
    pub child: Option<ObjectNode>,
}

impl Place {
    /// The place of a key the schema does not define: after every key it defines, by name,
    /// with nothing ordered below it.
    pub const UNDESCRIBED: Place = Place {
        rank: u16::MAX,
        child: None,
    };

    /// Where `key`, at this place, sorts in its object: by rank, then by name.
    pub fn sort_key<'k>(&self, key: &'k str) -> (u16, &'k str) {
        (self.rank, key)
    }
}

/// A value at `node`, serialised as it would be once [`KeyOrder::order`]ed, without
/// ordering it: each object's entries are sorted by reference as they are written, so no map
/// is rebuilt (no key hashed again, nothing moved).
pub struct Ordered<'a> {
    order: &'a KeyOrder,
    node: Option<ObjectNode>,
    value: &'a Value,
}

impl<'a> Ordered<'a> {
    /// `value`, an object at `node` (or an array of them, or anything else).
    pub fn new(order: &'a KeyOrder, node: ObjectNode, value: &'a Value) -> Self {
        Self {
            order,
            node: Some(node),
            value,
        }
    }
}

impl<'a> Ordered<'a> {
    /// `value` at `node` (`None`: written as it is), in the same order.
    fn at(&self, node: Option<ObjectNode>, value: &'a Value) -> Self {
        Self {
            order: self.order,
            node,
            value,
        }
    }
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(node) = self.node else {
            return self.value.serialize(serializer);
        };
        match self.value {
            // Already in order: written as it is, looking up again only the keys that hold
            // something to descend into.
            Value::Object(map) if self.order.in_order(node, map, |_| ()) => {
                serializer.collect_map(map.iter().map(|(key, value)| {
                    let child = match value {
                        Value::Object(_) | Value::Array(_) => self.order.place(node, key).child,
                        _ => None,
                    };
                    (key, self.at(child, value))
                }))
            }
            Value::Object(map) => {
                let mut entries: Vec<(Place, &String, &Value)> = map
                    .iter()
                    .map(|(key, value)| (self.order.place(node, key), key, value))
                    .collect();
                sort_by_place(&mut entries);
                serializer.collect_map(
                    entries
                        .into_iter()
                        .map(|(place, key, value)| (key, self.at(place.child, value))),
                )
            }
            // As `KeyOrder::order` does: the objects of an array are at its node; anything
            // else in it (an array of arrays) is left as it is.
            Value::Array(items) => serializer.collect_seq(
                items
                    .iter()
                    .map(|value| self.at(value.is_object().then_some(node), value)),
            ),
            other => other.serialize(serializer),
        }
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

    /// JSON whose keys are mostly ones the product schema orders, at any depth.
    fn tmf_like() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "id",
            "href",
            "@type",
            "name",
            "status",
            "relatedParty",
            "partyOrPartyRole",
            "role",
            "productRelationship",
            "relationshipType",
            "productCharacteristic",
            "value",
            "externalReference",
            "zeta",
            "alpha",
        ]);
        let leaf = prop_oneof![Just(Value::Null), "[a-z]{0,3}".prop_map(Value::String)];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..8).prop_map(|entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// `value` cloned and put in order ([`KeyOrder::order`]), as text (`Map`'s equality
    /// ignores key order): what the shortcuts below must give.
    fn ordered_text(value: &Value) -> String {
        let order = KeyOrder::product();
        let mut ordered = value.clone();
        order.order(order.root(), &mut ordered);
        serde_json::to_string(&ordered).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn ordered_serialises_as_the_ordered_value(value in tmf_like()) {
            let order = KeyOrder::product();
            proptest::prop_assert_eq!(
                serde_json::to_string(&Ordered::new(order, order.root(), &value)).unwrap(),
                ordered_text(&value)
            );
        }

        #[test]
        fn ordered_clone_is_a_clone_put_in_order(value in tmf_like()) {
            let order = KeyOrder::product();
            proptest::prop_assert_eq!(
                serde_json::to_string(&order.ordered_clone(order.root(), &value)).unwrap(),
                ordered_text(&value)
            );
        }
    }

    #[test]
    fn ordered_writes_nested_objects_in_order_without_touching_the_value() {
        let order = KeyOrder::product();
        let value = json!({
            "productRelationship": [{"relationshipType": "bundles", "id": "r"}],
            "@type": "Product", "id": "i",
        });
        assert_eq!(
            serde_json::to_string(&Ordered::new(order, order.root(), &value)).unwrap(),
            r#"{"id":"i","@type":"Product","productRelationship":[{"id":"r","relationshipType":"bundles"}]}"#
        );
        assert_eq!(keys(&value), ["productRelationship", "@type", "id"]);
    }
}
