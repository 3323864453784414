//! Why a policy's database URL could not be read (a Secret that is missing, has no
//! such key, or that the controller may not read: RBAC's 403), logged once per
//! change per policy. The status carries the reason on every pass; the log says when
//! it starts, changes and ends, as it does for every other reason a database cannot
//! be read, without a line per pass.

use std::{collections::HashMap, sync::Mutex};

use crate::policy::validate::UrlSource;

/// The last reason logged per policy (its history key).
#[derive(Default)]
pub struct UrlProblems {
    last: Mutex<HashMap<String, String>>,
}

impl UrlProblems {
    /// Logs `read` for the policy `key` when it differs from what was logged last.
    pub fn observe(&self, key: &str, source: &UrlSource, read: Result<&str, &str>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Err(why) => {
                if last.get(key).map(String::as_str) != Some(why) {
                    tracing::warn!(policy = %key, source = %describe(source), error = %why, "database URL not read");
                    last.insert(key.to_owned(), why.to_owned());
                }
            }
            Ok(_) => {
                if last.remove(key).is_some() {
                    tracing::info!(policy = %key, source = %describe(source), "database URL read again");
                }
            }
        }
    }
}

/// Where the URL comes from, by name only (never its value).
fn describe(source: &UrlSource) -> String {
    match source {
        UrlSource::Secret(r) => format!("Secret {} key {}", r.name, r.key),
        UrlSource::Env(var) => format!("env {var}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_remembered_until_it_changes_or_ends() {
        let problems = UrlProblems::default();
        let source = UrlSource::Env("DB".into());
        let last = |p: &UrlProblems| p.last.lock().unwrap().get("ns/p").cloned();
        problems.observe("ns/p", &source, Err("forbidden (403)"));
        assert_eq!(last(&problems).as_deref(), Some("forbidden (403)"));
        problems.observe("ns/p", &source, Err("not found (404)"));
        assert_eq!(last(&problems).as_deref(), Some("not found (404)"));
        problems.observe("ns/p", &source, Ok("postgres://"));
        assert_eq!(last(&problems), None);
    }
}
