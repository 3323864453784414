//! Addressing one sample in Prometheus text exposition: `name` or
//! `name{label="value",other="value"}`.

use std::collections::BTreeMap;

/// A metric name with exact-match label matchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSelector {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a metric selector ({why}); write name or name{{label=\"value\"}}")]
pub struct SelectorError {
    input: String,
    why: &'static str,
}

impl MetricSelector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let fail = |why| SelectorError {
            input: input.to_owned(),
            why,
        };
        let text = input.trim();
        let (name, rest) = match text.find('{') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        if !is_metric_name(name) {
            return Err(fail("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        if let Some(rest) = rest {
            let body = rest.strip_suffix('}').ok_or_else(|| fail("missing closing }"))?;
            for matcher in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let (label, value) = matcher.split_once('=').ok_or_else(|| fail("a label matcher needs ="))?;
                let label = label.trim();
                let value = value.trim();
                if !is_label_name(label) {
                    return Err(fail("bad label name"));
                }
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| fail("label values are quoted"))?;
                labels.insert(label.to_owned(), value.to_owned());
            }
        }
        Ok(Self {
            name: name.to_owned(),
            labels,
        })
    }
}

fn is_metric_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_bare_name_and_a_name_with_labels() {
        assert_eq!(MetricSelector::parse("pool_checked_out").unwrap().labels.len(), 0);
        let s = MetricSelector::parse(r#"pool_checked_out{pool="main", db="x"}"#).unwrap();
        assert_eq!(s.name, "pool_checked_out");
        assert_eq!(s.labels["pool"], "main");
        assert_eq!(s.labels["db"], "x");
    }

    #[test]
    fn refuses_what_is_not_a_selector() {
        for bad in ["", "/checks/x", "1abc", "a{b=c}", "a{b=\"c\"", "a{=\"c\"}"] {
            assert!(MetricSelector::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
