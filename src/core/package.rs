//! ADI packages: roles of parts, valid combinations, and relationship ids
//! (`docs/reference.md` §5).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::rules::{Role, Rules};
use crate::core::{MatchKey, PinvId, Source, Violation};

/// Relationship ids resolved to PINV ids, per source: `links[source][raw id] = PINV id`.
///
/// A relationship id is only meaningful together with the source that sent it
/// (`local:<source>:<id>`), hence the two levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Links(pub BTreeMap<Source, BTreeMap<String, PinvId>>);

impl Links {
    /// The PINV id `raw` resolves to when `source` sent it, if known.
    pub fn resolve(&self, source: &Source, raw: &str) -> Option<PinvId> {
        self.0.get(source).and_then(|m| m.get(raw)).copied()
    }

    /// Records that `raw`, sent by `source`, names `target`. Returns true when that is new.
    pub fn insert(&mut self, source: &Source, raw: &str, target: PinvId) -> bool {
        self.0
            .entry(source.clone())
            .or_default()
            .insert(raw.to_owned(), target)
            != Some(target)
    }

    /// Replaces everything known for `source` (its new contribution's resolutions).
    pub fn replace_source(&mut self, source: &Source, resolved: BTreeMap<String, PinvId>) {
        if resolved.is_empty() {
            self.0.remove(source);
        } else {
            self.0.insert(source.clone(), resolved);
        }
    }

    /// Every PINV id some link points at.
    pub fn targets(&self) -> BTreeSet<PinvId> {
        self.0.values().flat_map(|m| m.values().copied()).collect()
    }
}

/// The role of a product, from its `productSpecification.id` and the rules' role globs.
pub fn role_of(product: &Value, rules: &Rules) -> Option<Role> {
    rules.role_of(product.pointer("/productSpecification/id")?.as_str()?)
}

/// Sorts parts of a package into the order they are listed in (POST and GET with
/// `as-adi-package`): by role in package order (ADI, ACCESS, PORT, DD), parts without a
/// recognised role last, then by PINV id. `merged` gives a part's merged document.
pub fn sort_members<T>(parts: &mut [T], merged: impl Fn(&T) -> (&Value, PinvId), rules: &Rules) {
    parts.sort_by_cached_key(|part| {
        let (document, id) = merged(part);
        let role = role_of(document, rules);
        (role.is_none(), role, id)
    });
}

/// Checks that the roles of a package's parts form a valid package: exactly one `ADI`,
/// one `ACCESS`, one `PORT`, at most one `DD`, and every part recognised.
///
/// `roles[i]` is the role of part `i` (`None`: not recognised); `pointer` is where the
/// parts are in the body (`/value`).
pub fn check_package(roles: &[Option<Role>], pointer: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut counts: BTreeMap<Role, usize> = BTreeMap::new();
    for (i, role) in roles.iter().enumerate() {
        match role {
            Some(r) => *counts.entry(*r).or_default() += 1,
            None => violations.push(Violation::new(
                format!("{pointer}/{i}/productSpecification/id"),
                "a package part must have a productSpecification.id matching the ADI, ACCESS, PORT or DD role globs of the merge rules",
            )),
        }
    }
    for role in Role::ALL {
        let n = counts.get(&role).copied().unwrap_or(0);
        let (min, max) = if role == Role::Dd { (0, 1) } else { (1, 1) };
        if n < min || n > max {
            let wanted = if role == Role::Dd {
                "at most one"
            } else {
                "exactly one"
            };
            violations.push(Violation::new(
                pointer,
                format!("a package needs {wanted} {} part, found {n}", role.as_str()),
            ));
        }
    }
    violations
}

/// The string ids of a product's `productRelationship` entries, in order.
pub fn relationship_ids(product: &Value) -> Vec<&str> {
    product
        .get("productRelationship")
        .and_then(Value::as_array)
        .map(|rels| {
            rels.iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str))
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The stored keys under which a relationship id `raw` sent by `source` could name a
/// product: its PINV id (when `raw` is a UUID), then the source's local id.
pub fn candidate_keys(source: &Source, raw: &str) -> Vec<MatchKey> {
    let mut keys = Vec::with_capacity(2);
    if let Ok(id) = PinvId::parse(raw) {
        keys.push(MatchKey::pinv(&id));
    }
    keys.push(MatchKey::local(source, raw));
    keys
}

/// What a relationship id resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A known product.
    Resolved(PinvId),
    /// Nothing yet: remember the product waiting under this key.
    Pending(MatchKey),
}

/// Resolves a relationship id sent by `source`, in the order of `docs/reference.md` §5: a local id of
/// another part of the same package post (`in_post`), a PINV id, a stored product's
/// `local:<source>:<id>` key (`owners` maps keys to their products).
pub fn resolve(
    source: &Source,
    raw: &str,
    in_post: &BTreeMap<&str, PinvId>,
    owners: &BTreeMap<MatchKey, PinvId>,
) -> Resolution {
    if let Some(id) = in_post.get(raw) {
        return Resolution::Resolved(*id);
    }
    let candidates = candidate_keys(source, raw);
    for key in &candidates {
        if let Some(id) = owners.get(key) {
            return Resolution::Resolved(*id);
        }
    }
    // The last candidate is always the local key: that is the one a later arrival claims.
    Resolution::Pending(candidates.into_iter().next_back().expect("local key"))
}

/// The products whose relationships must be rewritten when a product claims `claimed`
/// keys: each waiting product with the keys it waited on.
pub fn pending_rewrites(
    claimed: &[MatchKey],
    waiters: &BTreeMap<MatchKey, Vec<PinvId>>,
) -> BTreeMap<PinvId, Vec<MatchKey>> {
    let mut out: BTreeMap<PinvId, Vec<MatchKey>> = BTreeMap::new();
    for key in claimed {
        for w in waiters.get(key).into_iter().flatten() {
            out.entry(*w).or_default().push(key.clone());
        }
    }
    out
}

/// Splits a `local:<source>:<id>` key into its source and id.
pub fn parse_local_key(key: &MatchKey) -> Option<(Source, &str)> {
    let rest = key.as_str().strip_prefix("local:")?;
    let (source, id) = rest.split_once(':')?;
    Some((Source::parse(source).ok()?, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src(s: &str) -> Source {
        Source::parse(s).unwrap()
    }

    fn id(n: u128) -> PinvId {
        PinvId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn members_sort_by_role_then_unrecognised_then_by_id() {
        let rules = Rules::from_files(&[(
            "rules.toml".into(),
            "[events]\naccepted_types = [\"t\"]\n[package.roles]\nADI = [\"PR-ADI\"]\nACCESS = [\"PR-ACCESS\"]\nPORT = [\"PR-PORT\"]\nDD = [\"PR-DD\"]\n"
                .into(),
        )])
        .unwrap();
        let part = |n: u128, spec: &str| (json!({"productSpecification": {"id": spec}}), id(n));
        let mut parts = vec![
            part(1, "other"),
            part(2, "PR-DD"),
            part(9, "PR-PORT"),
            part(3, "PR-PORT"),
            part(4, "PR-ACCESS"),
            part(8, "PR-ADI"),
            (json!({}), id(0)),
        ];
        sort_members(&mut parts, |(v, i)| (v, *i), &rules);
        let order: Vec<PinvId> = parts.iter().map(|p| p.1).collect();
        assert_eq!(order, [8, 4, 3, 9, 2, 0, 1].map(id));
    }

    #[test]
    fn valid_packages_have_one_adi_access_port_and_optional_dd() {
        use Role::*;
        assert!(check_package(&[Some(Adi), Some(Access), Some(Port)], "/value").is_empty());
        assert!(
            check_package(&[Some(Port), Some(Dd), Some(Adi), Some(Access)], "/value").is_empty()
        );
    }

    #[test]
    fn invalid_packages_name_what_is_missing_or_doubled() {
        use Role::*;
        let v = check_package(&[Some(Adi), Some(Adi), Some(Port)], "/value");
        let msgs: Vec<_> = v.iter().map(|v| v.message.as_str()).collect();
        assert!(
            msgs.contains(&"a package needs exactly one ADI part, found 2"),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(&"a package needs exactly one ACCESS part, found 0"),
            "{msgs:?}"
        );
        let v = check_package(&[Some(Adi), Some(Access), Some(Port), None], "/value");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pointer, "/value/3/productSpecification/id");
        let v = check_package(&[Some(Adi), Some(Access), Some(Dd), Some(Dd)], "/value");
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn resolution_prefers_parts_of_the_same_post_then_pinv_ids_then_local_keys() {
        let s = src("billing");
        let mut in_post = BTreeMap::new();
        in_post.insert("A-1", id(1));
        let mut owners = BTreeMap::new();
        owners.insert(MatchKey::local(&s, "A-1"), id(2));
        owners.insert(MatchKey::local(&s, "B-1"), id(3));
        owners.insert(MatchKey::pinv(&id(4)), id(4));
        assert_eq!(
            resolve(&s, "A-1", &in_post, &owners),
            Resolution::Resolved(id(1))
        );
        assert_eq!(
            resolve(&s, "B-1", &in_post, &owners),
            Resolution::Resolved(id(3))
        );
        assert_eq!(
            resolve(&s, &id(4).to_string(), &in_post, &owners),
            Resolution::Resolved(id(4))
        );
        assert_eq!(
            resolve(&s, "C-1", &in_post, &owners),
            Resolution::Pending(MatchKey::local(&s, "C-1"))
        );
        // Another source's local id does not resolve.
        assert_eq!(
            resolve(&src("provisioning"), "B-1", &BTreeMap::new(), &owners),
            Resolution::Pending(MatchKey::local(&src("provisioning"), "B-1"))
        );
    }

    #[test]
    fn pending_rewrites_groups_waiting_products() {
        let s = src("billing");
        let k1 = MatchKey::local(&s, "A");
        let k2 = MatchKey::local(&s, "B");
        let mut waiters = BTreeMap::new();
        waiters.insert(k1.clone(), vec![id(1), id(2)]);
        waiters.insert(k2.clone(), vec![id(2)]);
        let out = pending_rewrites(&[k1.clone(), k2.clone()], &waiters);
        assert_eq!(out[&id(1)], vec![k1.clone()]);
        assert_eq!(out[&id(2)], vec![k1, k2]);
    }

    #[test]
    fn local_keys_split_back_into_source_and_id() {
        let s = src("billing");
        let key = MatchKey::local(&s, "x:y");
        assert_eq!(parse_local_key(&key), Some((s, "x:y")));
        assert_eq!(parse_local_key(&MatchKey::external("CircuitID", "1")), None);
    }

    #[test]
    fn relationship_ids_skip_missing_and_empty_ids() {
        let p = json!({"productRelationship": [{"id": "a"}, {"id": ""}, {"href": "x"}, {"id": 3}, {"id": "b"}]});
        assert_eq!(relationship_ids(&p), vec!["a", "b"]);
        assert!(relationship_ids(&json!({})).is_empty());
    }

    #[test]
    fn links_replace_and_resolve_per_source() {
        let (a, b) = (src("a"), src("b"));
        let mut links = Links::default();
        assert!(links.insert(&a, "x", id(1)));
        assert!(!links.insert(&a, "x", id(1)));
        assert_eq!(links.resolve(&a, "x"), Some(id(1)));
        assert_eq!(links.resolve(&b, "x"), None);
        links.replace_source(&a, BTreeMap::new());
        assert_eq!(links.resolve(&a, "x"), None);
    }
}
