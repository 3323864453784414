//! Label selectors (matchLabels + matchExpressions), with the API server's meaning:
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#resources-that-support-set-based-requirements>.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

/// Whether `labels` satisfy every requirement. An empty selector matches everything
/// (callers that must not select everything refuse empty selectors themselves).
pub fn matches(
    match_labels: &BTreeMap<String, String>,
    match_expressions: &[LabelSelectorRequirement],
    labels: &BTreeMap<String, String>,
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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
        assert!(matches(&labels(&[("app", "web")]), &[], &l));
        assert!(!matches(&labels(&[("app", "worker")]), &[], &l));
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
