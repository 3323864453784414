//! `spec.sizing`: whether poolwarden recommends pool sizes from measured use, and
//! whether it applies them (docs/sizing.md).

use std::time::Duration;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{HumanDuration, validate::Problem};

/// Pool sizing from measured use: a recommended maxSize (target, lower and upper
/// bound) and minSize per workload, from the peak per minute of each pod's
/// connections in use.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.minAllowed) || !has(self.maxAllowed) || self.minAllowed <= self.maxAllowed").message("sizing.minAllowed must not exceed sizing.maxAllowed").field_path(".minAllowed")
)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    /// Off keeps no history; Recommend shows recommendations (status, metrics,
    /// `plan`); Auto also writes them to the pool env, within minAllowed and
    /// maxAllowed, at most once per updateInterval, at minConfidence, and never
    /// above the database's connection budget.
    #[serde(default)]
    pub mode: SizingMode,

    /// The smallest maxSize recommended. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self >= 1").message("sizing.minAllowed must be at least 1"),
        validation = Rule::new("self <= 2000").message("sizing.minAllowed must be at most 2000")
    )]
    pub min_allowed: Option<u32>,

    /// The largest maxSize recommended. Default: pool.maxSize (at least minAllowed),
    /// so Auto only lowers what the policy gives unless this is set higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self >= 1").message("sizing.maxAllowed must be at least 1"),
        validation = Rule::new("self <= 2000").message("sizing.maxAllowed must be at most 2000")
    )]
    pub max_allowed: Option<u32>,

    /// Least time between two sizes Auto writes to one workload (each rolls it).
    #[serde(default = "default_update_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("sizing.updateInterval must be at least 1s"))]
    pub update_interval: HumanDuration,

    /// The confidence Auto needs before it writes, as a length of history: the
    /// lesser of the time from the first peak recorded to the last and the number
    /// of peaks at one a minute (the Vertical Pod Autoscaler's confidence).
    #[serde(default = "default_min_confidence")]
    pub min_confidence: HumanDuration,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            mode: SizingMode::Off,
            min_allowed: None,
            max_allowed: None,
            update_interval: default_update_interval(),
            min_confidence: default_min_confidence(),
        }
    }
}

impl Sizing {
    /// Left out of a serialized spec when untouched, so policies without sizing
    /// read back as they were written.
    pub fn is_off_by_default(&self) -> bool {
        self == &Sizing::default()
    }
}

fn default_update_interval() -> HumanDuration {
    "1h".into()
}

fn default_min_confidence() -> HumanDuration {
    "24h".into()
}

/// What poolwarden does with recommendations.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SizingMode {
    /// No history, no recommendation.
    #[default]
    Off,
    /// Recommend and report; write nothing.
    Recommend,
    /// Recommend and write the pool env.
    Auto,
}

/// A workload's recommended pool size, as its status row shows it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SizingStatus {
    /// The maxSize recommended.
    pub target: u32,
    /// Below this maxSize the workload runs short of connections.
    pub lower_bound: u32,
    /// Above this maxSize it holds connection slots it does not use.
    pub upper_bound: u32,
    /// The minSize recommended.
    pub min_size: u32,
    /// The maxSize its pods run with, when it could be read from its env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    /// The recommendation's confidence: its history's length in whole hours.
    pub confidence_hours: u32,
    /// What Auto did or why it did not, or why there is no recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The largest maxAllowed: the histogram's last bucket starts near it.
pub const MAX_ALLOWED: u32 = 2000;

/// `spec.sizing`, validated, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSizing {
    pub mode: SizingMode,
    pub min_allowed: u32,
    pub max_allowed: u32,
    pub update_interval: Duration,
    pub min_confidence: Duration,
}

impl ResolvedSizing {
    pub fn off() -> Self {
        ResolvedSizing {
            mode: SizingMode::Off,
            min_allowed: 1,
            max_allowed: MAX_ALLOWED,
            update_interval: Duration::from_secs(3600),
            min_confidence: Duration::from_secs(86_400),
        }
    }
}

/// Resolves `spec.sizing` against the pool's maxSize (maxAllowed's default).
pub(super) fn resolve(s: &Sizing, pool_max: u32, problems: &mut Vec<Problem>) -> Option<ResolvedSizing> {
    let before = problems.len();
    let (min_allowed, max_allowed) = bounds(s, pool_max, problems);
    let update_interval = super::validate::duration_at_least(
        &s.update_interval,
        "spec.sizing.updateInterval",
        Duration::from_secs(1),
        problems,
    );
    let min_confidence =
        super::validate::duration_at_least(&s.min_confidence, "spec.sizing.minConfidence", Duration::ZERO, problems);
    let ok = problems.len() == before;
    Some(ResolvedSizing {
        mode: s.mode,
        min_allowed,
        max_allowed,
        update_interval: update_interval?,
        min_confidence: min_confidence?,
    })
    .filter(|_| ok)
}

/// minAllowed and maxAllowed, defaults applied, their problems reported.
fn bounds(s: &Sizing, pool_max: u32, problems: &mut Vec<Problem>) -> (u32, u32) {
    let mut problem = |path: &str, message: String| {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        })
    };
    let min_allowed = s.min_allowed.unwrap_or(1);
    if min_allowed == 0 {
        problem(
            "spec.sizing.minAllowed",
            "sizing.minAllowed must be at least 1".to_owned(),
        );
    }
    if min_allowed > MAX_ALLOWED {
        problem(
            "spec.sizing.minAllowed",
            format!("sizing.minAllowed must be at most {MAX_ALLOWED}"),
        );
    }
    // The default follows pool.maxSize (whose own problems are reported on it) and
    // never falls below minAllowed.
    let Some(max) = s.max_allowed else {
        return (min_allowed, pool_max.max(min_allowed).clamp(1, MAX_ALLOWED));
    };
    if max == 0 {
        problem(
            "spec.sizing.maxAllowed",
            "sizing.maxAllowed must be at least 1".to_owned(),
        );
    }
    if max > MAX_ALLOWED {
        problem(
            "spec.sizing.maxAllowed",
            format!("sizing.maxAllowed must be at most {MAX_ALLOWED}"),
        );
    }
    if min_allowed > max {
        problem(
            "spec.sizing.minAllowed",
            format!(
                "sizing.minAllowed must not exceed sizing.maxAllowed (minAllowed {min_allowed} > maxAllowed {max})"
            ),
        );
    }
    (min_allowed, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_yaml(yaml: &str, pool_max: u32) -> Result<ResolvedSizing, Vec<Problem>> {
        let s: Sizing = serde_saphyr::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        resolve(&s, pool_max, &mut problems).ok_or(problems)
    }

    #[test]
    fn sizing_is_off_by_default_and_max_allowed_defaults_to_the_pool_max() {
        let r = resolve_yaml("{}", 20).unwrap();
        assert_eq!(r.mode, SizingMode::Off);
        assert_eq!((r.min_allowed, r.max_allowed), (1, 20));
        assert_eq!(r.update_interval, Duration::from_secs(3600));
        assert_eq!(r.min_confidence, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_bounds_and_durations_are_each_reported_on_their_field() {
        let problems = resolve_yaml(
            "{mode: Auto, minAllowed: 30, maxAllowed: 10, updateInterval: 0s, minConfidence: soon}",
            20,
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.sizing.minAllowed",
                "spec.sizing.updateInterval",
                "spec.sizing.minConfidence"
            ],
            "{problems:?}"
        );
        assert_eq!(
            resolve_yaml("{minAllowed: 30}", 20).unwrap().max_allowed,
            30,
            "the default maxAllowed never falls below minAllowed"
        );
        let problems = resolve_yaml("{maxAllowed: 5000}", 20).unwrap_err();
        assert!(problems[0].message.contains("at most 2000"), "{problems:?}");
    }
}
