//! The stored objects, ordered by (group, plural, namespace, name), with a count per
//! (group, plural, namespace). The order makes the objects of one kind (and of one
//! namespace of it) a contiguous range, so a list page is a range read of the page's
//! own length rather than a scan of every stored object; the counts give a list's
//! `remainingItemCount` without walking what follows the page.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::Arc,
};

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// Which objects of one kind a read covers: one namespace, or all of them.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    /// `None`: every namespace (and the cluster-scoped objects, stored under "").
    pub namespace: Option<&'a str>,
}

impl Scope<'_> {
    fn holds(&self, k: &ObjKey) -> bool {
        k.group == self.group && k.plural == self.plural && self.namespace.is_none_or(|n| n == k.namespace)
    }
}

/// Each object is shared (`Arc`) between the map, the watch history and the pages
/// and events being served, so a read or an event costs a pointer, not a deep copy.
#[derive(Default)]
pub struct Objects {
    map: BTreeMap<ObjKey, Arc<Value>>,
    counts: HashMap<(String, String), BTreeMap<String, usize>>,
}

impl Objects {
    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.map.get(key).map(Arc::as_ref)
    }

    pub fn get_shared(&self, key: &ObjKey) -> Option<&Arc<Value>> {
        self.map.get(key)
    }

    pub fn contains_key(&self, key: &ObjKey) -> bool {
        self.map.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &ObjKey> {
        self.map.keys()
    }

    /// Stores `obj` under `key` and gives back the shared copy now stored.
    pub fn insert(&mut self, key: ObjKey, obj: Value) -> Arc<Value> {
        let kind = (key.group.clone(), key.plural.clone());
        let namespace = key.namespace.clone();
        let shared = Arc::new(obj);
        if self.map.insert(key, shared.clone()).is_none() {
            *self.counts.entry(kind).or_default().entry(namespace).or_default() += 1;
        }
        shared
    }

    pub fn remove(&mut self, key: &ObjKey) {
        if self.map.remove(key).is_some()
            && let Some(by_ns) = self.counts.get_mut(&(key.group.clone(), key.plural.clone()))
            && let Some(n) = by_ns.get_mut(&key.namespace)
        {
            *n -= 1;
            if *n == 0 {
                by_ns.remove(&key.namespace);
            }
        }
    }

    /// The scope's objects in (namespace, name) order, starting after `after`.
    pub fn range<'a>(
        &'a self,
        scope: Scope<'a>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        let key = |namespace: &str, name: &str| ObjKey {
            group: scope.group.to_owned(),
            plural: scope.plural.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let first = key(scope.namespace.unwrap_or(""), "");
        let start = match after {
            Some((ns, name)) if key(ns, name) >= first => Bound::Excluded(key(ns, name)),
            _ => Bound::Included(first),
        };
        self.map
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| scope.holds(k))
            .map(|(_, v)| v)
    }

    /// How many objects the scope holds.
    pub fn count(&self, scope: Scope<'_>) -> usize {
        let Some(by_ns) = self.counts.get(&(scope.group.to_owned(), scope.plural.to_owned())) else {
            return 0;
        };
        match scope.namespace {
            Some(ns) => by_ns.get(ns).copied().unwrap_or(0),
            None => by_ns.values().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(plural: &str, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            group: String::new(),
            plural: plural.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn names<'a>(it: impl Iterator<Item = &'a Arc<Value>>) -> Vec<String> {
        it.map(|v| v["n"].as_str().unwrap_or_default().to_owned()).collect()
    }

    #[test]
    fn a_range_holds_only_its_kind_and_namespace_in_order_and_counts_follow_writes() {
        let mut o = Objects::default();
        for (plural, ns, name) in [
            ("pods", "b", "x"),
            ("pods", "a", "y"),
            ("pods", "a", "x"),
            ("secrets", "a", "s"),
        ] {
            o.insert(key(plural, ns, name), json!({"n": format!("{ns}/{name}")}));
        }
        o.insert(key("pods", "a", "x"), json!({"n": "a/x"})); // an update: no new count
        let pods = |namespace| Scope {
            group: "",
            plural: "pods",
            namespace,
        };
        assert_eq!(names(o.range(pods(None), None)), ["a/x", "a/y", "b/x"]);
        assert_eq!(names(o.range(pods(None), Some(("a", "y")))), ["b/x"]);
        assert_eq!(names(o.range(pods(Some("a")), None)), ["a/x", "a/y"]);
        assert_eq!(names(o.range(pods(Some("b")), Some(("a", "y")))), ["b/x"]);
        assert_eq!((o.count(pods(None)), o.count(pods(Some("a")))), (3, 2));
        o.remove(&key("pods", "a", "x"));
        o.remove(&key("pods", "a", "x"));
        assert_eq!((o.count(pods(None)), o.count(pods(Some("a")))), (2, 1));
    }
}
