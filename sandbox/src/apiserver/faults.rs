//! Fault injection and request accounting, so tests can make the server misbehave
//! the ways real ones do (dropped watches, 409/429/500, latency) and count the
//! writes a controller makes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// Answer `code` to the next `remaining` requests matching `verb` and `resource`
/// (None matches any). `resource` is the plural, or `plural/subresource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub code: u16,
    pub remaining: usize,
}

#[derive(Debug)]
pub struct Faults {
    watch_generation: watch::Sender<u64>,
    rules: Mutex<Vec<FaultRule>>,
    delay: Mutex<Duration>,
    counters: Mutex<BTreeMap<(String, String), u64>>,
}

pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Default for Faults {
    fn default() -> Self {
        Faults {
            watch_generation: watch::channel(0).0,
            rules: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            counters: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Faults {
    /// Ends every open watch stream (clients see a clean end of stream and re-watch).
    pub fn drop_watches(&self) {
        self.watch_generation.send_modify(|g| *g += 1);
    }

    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.watch_generation.subscribe()
    }

    pub fn fail_next(&self, verb: Option<&str>, resource: Option<&str>, code: u16, times: usize) {
        let rule = FaultRule {
            verb: verb.map(str::to_string),
            resource: resource.map(str::to_string),
            code,
            remaining: times,
        };
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(rule);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = Duration::ZERO;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    pub fn delay(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status code to answer instead of serving, if a rule matches.
    pub fn take_fault(&self, verb: &str, resource: &str) -> Option<u16> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let idx = rules.iter().position(|r| {
            r.remaining > 0
                && r.verb.as_deref().is_none_or(|v| v == verb)
                && r.resource.as_deref().is_none_or(|res| res == resource)
        })?;
        rules[idx].remaining -= 1;
        let code = rules[idx].code;
        rules.retain(|r| r.remaining > 0);
        Some(code)
    }

    pub fn count(&self, verb: &str, resource: &str) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((resource.to_string(), verb.to_string())).or_default() += 1;
    }

    /// Requests received for `resource` (plural or `plural/subresource`) and `verb`.
    pub fn requests(&self, resource: &str, verb: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.get(&(resource.to_string(), verb.to_string())).copied().unwrap_or(0)
    }

    /// All write requests (create/update/patch/delete) received for a resource,
    /// subresources included.
    pub fn writes(&self, resource: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|((r, v), _)| {
                (r == resource || r.starts_with(&format!("{resource}/"))) && WRITE_VERBS.contains(&v.as_str())
            })
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn counters(&self) -> BTreeMap<(String, String), u64> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn reset_counters(&self) {
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
