//! sqlcommenter tags (<https://google.github.io/sqlcommenter/spec/>): a comment
//! `/*key='value',key2='value2'*/` appended by SQLAlchemy, Django and psycopg
//! integrations, each key and value URL-encoded and `'` escaped as `\'`.
//!
//! A comment that is not entirely in that form is not sqlcommenter, and is ignored
//! whole: an ordinary comment may carry anything, including a literal.

use std::collections::BTreeMap;

/// Tags poolwarden keeps at most per comment, and longest key or value.
const MAX_TAGS: usize = 8;
const MAX_LEN: usize = 80;

/// Per-request identifiers: they name a request, not the code, and would change the
/// evidence (and so the status) with every request.
const PER_REQUEST: [&str; 2] = ["traceparent", "tracestate"];

/// The tags of one comment's body (without `/*` and `*/`), or none.
pub fn tags(comment: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in comment.trim().split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return BTreeMap::new();
        };
        let Some(value) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) else {
            return BTreeMap::new();
        };
        let (Some(key), Some(value)) = (decode(key), decode(&value.replace("\\'", "'"))) else {
            return BTreeMap::new();
        };
        if key.is_empty()
            || key.len() > MAX_LEN
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return BTreeMap::new();
        }
        if !PER_REQUEST.contains(&key.as_str()) && out.len() < MAX_TAGS {
            out.insert(key, value.chars().take(MAX_LEN).collect());
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s.trim())
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_specs_example_and_leaves_out_trace_context() {
        let t = tags(
            "action='%2Fparam*d',controller='index',framework='spring',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'",
        );
        assert_eq!(
            t,
            BTreeMap::from([
                ("action".to_owned(), "/param*d".to_owned()),
                ("controller".to_owned(), "index".to_owned()),
                ("framework".to_owned(), "spring".to_owned()),
            ])
        );
        assert_eq!(tags("route='it\\'s'")["route"], "it's");
    }

    #[test]
    fn an_ordinary_comment_yields_no_tags() {
        assert!(tags(" the password is 'x' ").is_empty());
        assert!(tags("route='/a', note").is_empty());
        assert!(tags("").is_empty());
    }
}
