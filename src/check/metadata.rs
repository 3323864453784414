//! `metadata.name` and `metadata.namespace` as the API server validates them, so that
//! `check` refuses what every cluster would refuse at apply time.
//!
//! A custom resource's name must be a lowercase RFC 1123 subdomain (at most 253
//! characters) and a namespace a lowercase RFC 1123 label (at most 63); the messages
//! are the API server's own (`k8s.io/apimachinery/pkg/util/validation`).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::policy::Problem;

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("a valid regex"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").expect("a valid regex")
});

/// The problems of a document's name and namespace (a missing name is reported by
/// the caller; a missing namespace is the default one).
pub fn metadata_problems(document: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(name) = document.pointer("/metadata/name").and_then(Value::as_str)
        && !name.is_empty()
        && let Some(message) = subdomain_problem(name)
    {
        problems.push(Problem {
            path: "metadata.name".into(),
            message,
        });
    }
    if let Some(namespace) = document.pointer("/metadata/namespace").and_then(Value::as_str)
        && let Some(message) = label_problem(namespace)
    {
        problems.push(Problem {
            path: "metadata.namespace".into(),
            message,
        });
    }
    problems
}

fn subdomain_problem(value: &str) -> Option<String> {
    if value.len() > 253 {
        return Some(format!("{value:?}: must be no more than 253 characters"));
    }
    (!DNS1123_SUBDOMAIN.is_match(value)).then(|| {
        format!(
            "{value:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
        )
    })
}

fn label_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some(format!("{value:?}: must be no more than 63 characters"));
    }
    (!DNS1123_LABEL.is_match(value)).then(|| {
        format!(
            "{value:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(doc: Value) -> Vec<String> {
        metadata_problems(&doc).into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn names_the_api_server_accepts_pass() {
        for name in ["billing", "a", "web-1", "team.billing", "0abc"] {
            assert!(
                paths(json!({"metadata": {"name": name, "namespace": "shop-2"}})).is_empty(),
                "{name}"
            );
        }
        assert!(paths(json!({"metadata": {"name": "x".repeat(253)}})).is_empty());
    }

    #[test]
    fn names_the_api_server_refuses_are_reported_at_their_field() {
        for name in [
            "Bad_Name",
            "UPPER",
            "-lead",
            "trail-",
            "a..b",
            "sp ace",
            &"x".repeat(254),
        ] {
            assert_eq!(paths(json!({"metadata": {"name": name}})), ["metadata.name"], "{name}");
        }
        for namespace in ["Shop", "team.billing", "under_score", "", &"n".repeat(64)] {
            assert_eq!(
                paths(json!({"metadata": {"name": "ok", "namespace": namespace}})),
                ["metadata.namespace"],
                "{namespace}"
            );
        }
    }
}
