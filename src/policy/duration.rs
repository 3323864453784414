//! Human-readable durations (`90s`, `10m`, `1h30m`) as policy fields.
//!
//! The field keeps the text the author wrote, so a policy read from the cluster and
//! written back is byte-for-byte the same, and a malformed value never makes the whole
//! object undeserializable: it is reported by validation with its path instead.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The schema pattern, also enforced by [`HumanDuration::parse`]: one or more
/// `<integer><unit>` groups with units `h`, `m`, `s` or `ms`, the subset of Go's
/// `time.ParseDuration` that the API server's CEL `duration()` also understands.
pub const DURATION_PATTERN: &str = "^([0-9]+(h|m|s|ms))+$";

/// A duration written as text, e.g. `30s`, `10m`, `1h`, `1h30m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(pub String);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("`{0}` is not a duration: write a number and a unit (h, m, s, ms), e.g. 90s, 10m, 1h30m")]
    Malformed(String),
}

impl HumanDuration {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Parses the text with Kubernetes' own `metav1.Duration` rules, restricted to
    /// the units the schema pattern admits.
    pub fn parse(&self) -> Result<Duration, DurationError> {
        let malformed = || DurationError::Malformed(self.0.clone());
        if !matches_pattern(&self.0) {
            return Err(malformed());
        }
        let parsed = kube::core::Duration::from_str(&self.0).map_err(|_| malformed())?;
        Ok(parsed.into())
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for HumanDuration {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// Renders a duration the way a person would write it in a policy (`1h30m`, `45s`).
pub fn render(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    let millis = duration.subsec_millis();
    if secs == 0 {
        return format!("{millis}ms");
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

fn matches_pattern(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "h", "m", "s"].into_iter().find(|u| rest.starts_with(u));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_units_a_policy_author_writes() {
        assert_eq!(HumanDuration::from("90s").parse(), Ok(Duration::from_secs(90)));
        assert_eq!(HumanDuration::from("10m").parse(), Ok(Duration::from_secs(600)));
        assert_eq!(HumanDuration::from("1h30m").parse(), Ok(Duration::from_secs(5400)));
        assert_eq!(HumanDuration::from("250ms").parse(), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_what_the_schema_pattern_refuses() {
        for bad in ["", "10", "ten minutes", "-5m", "1.5h", "5 m", "1d", "m"] {
            assert!(HumanDuration::from(bad).parse().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn renders_back_to_what_parses_to_the_same_duration() {
        for secs in [1, 59, 60, 61, 3599, 3600, 5400, 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(HumanDuration::new(render(d)).parse(), Ok(d));
        }
        assert_eq!(render(Duration::from_millis(1500)), "1s500ms");
    }
}
