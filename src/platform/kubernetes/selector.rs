//! Label selectors (matchLabels + matchExpressions), with the API server's meaning:
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#resources-that-support-set-based-requirements>.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

/// An object's labels, sorted by key. A cached workload keeps these rather than a
/// `BTreeMap`, whose first node holds room for eleven entries (about 540 bytes for a
/// single label).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Labels(Box<[(String, String)]>);

impl Labels {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        // A BTreeMap iterates in key order, so the slice is sorted.
        Labels(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// Whether `labels` satisfy every requirement. An empty selector matches everything
/// (callers that must not select everything refuse empty selectors themselves).
pub fn matches(
    match_labels: &BTreeMap<String, String>,
    match_expressions: &[LabelSelectorRequirement],
    labels: &Labels,
) -> bool {
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && match_expressions.iter().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => labels.get(&r.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&r.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&r.key),
                "DoesNotExist" => !labels.contains_key(&r.key),
                // Validation refuses other operators; an unknown one selects nothing.
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from(&map(pairs))
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn every_operator() {
        let l = labels(&[("app", "web"), ("tier", "api")]);
        let none = BTreeMap::new();
        assert!(matches(&map(&[("app", "web")]), &[], &l));
        assert!(!matches(&map(&[("app", "worker")]), &[], &l));
        assert!(!matches(&map(&[("zzz", "web")]), &[], &l));
        assert!(matches(&none, &[req("app", "In", &["web", "x"])], &l));
        assert!(!matches(&none, &[req("app", "In", &["x"])], &l));
        assert!(matches(&none, &[req("app", "NotIn", &["x"])], &l));
        assert!(matches(&none, &[req("missing", "NotIn", &["x"])], &l));
        assert!(!matches(&none, &[req("app", "NotIn", &["web"])], &l));
        assert!(matches(&none, &[req("tier", "Exists", &[])], &l));
        assert!(!matches(&none, &[req("tier", "DoesNotExist", &[])], &l));
        assert!(!matches(&none, &[req("tier", "Bogus", &[])], &l));
    }
}
