//! The sizing metrics (`spec.sizing` Recommend and Auto): per policy, how many
//! workloads run with a maxSize below the recommended target or above the upper
//! bound; per workload (at most [`super::metrics::WORKLOADS_IN_VIEW`] a policy, the
//! mis-sized first), the recommendation and the maxSize it runs with.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use super::metrics::{PolicyLabels, PolicyMetrics, WORKLOADS_IN_VIEW, WorkloadLabels};
use crate::policy::{WorkloadStatus, sizing::SizingStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoundLabels {
    pub namespace: String,
    pub policy: String,
    pub kind: String,
    pub workload: String,
    /// `target`, `lower` or `upper`.
    pub bound: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StandingLabels {
    pub namespace: String,
    pub policy: String,
    /// One of [`STANDINGS`].
    pub state: &'static str,
}

/// A workload's maxSize against its recommendation.
const STANDINGS: [&str; 4] = ["undersized", "oversized", "within", "unknown"];

#[derive(Default)]
pub struct SizingMetrics {
    pub recommended_max: Family<BoundLabels, Gauge>,
    pub recommended_min: Family<WorkloadLabels, Gauge>,
    pub configured_max: Family<WorkloadLabels, Gauge>,
    pub confidence_hours: Family<WorkloadLabels, Gauge>,
    pub workloads: Family<StandingLabels, Gauge>,
    in_view: Mutex<HashMap<PolicyLabels, HashSet<(String, String)>>>,
}

impl SizingMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sizing_recommended_max",
            "Recommended pool maxSize per pod (target, lower and upper bound)",
            self.recommended_max.clone(),
        );
        registry.register(
            "sizing_recommended_min",
            "Recommended pool minSize per pod",
            self.recommended_min.clone(),
        );
        registry.register(
            "sizing_configured_max",
            "The pool maxSize a workload's env carries now",
            self.configured_max.clone(),
        );
        registry.register(
            "sizing_confidence_hours",
            "Length of the history a recommendation rests on, in whole hours",
            self.confidence_hours.clone(),
        );
        registry.register(
            "sizing_workloads",
            "Workloads by their maxSize against the recommendation: undersized (below the target), oversized (above the upper bound), within, unknown",
            self.workloads.clone(),
        );
    }
}

/// Where a workload's maxSize stands against its recommendation.
fn standing(s: Option<&SizingStatus>) -> &'static str {
    match s.map(|s| (s, s.current)) {
        Some((s, Some(c))) if c < s.target => "undersized",
        Some((s, Some(c))) if c > s.upper_bound => "oversized",
        Some((_, Some(_))) => "within",
        _ => "unknown",
    }
}

impl PolicyMetrics<'_> {
    /// The sizing gauges of one pass; nothing (and no series) while no row has a
    /// recommendation, as with sizing Off.
    pub fn record_sizing(&self, rows: &[WorkloadStatus]) {
        let m = &self.metrics().sizing;
        let labels = self.labels();
        let sized: Vec<&WorkloadStatus> = rows.iter().filter(|r| r.sizing.is_some()).collect();
        for state in STANDINGS {
            let l = StandingLabels {
                namespace: labels.namespace.clone(),
                policy: labels.policy.clone(),
                state,
            };
            if sized.is_empty() {
                m.workloads.remove(&l);
            } else {
                let n = rows.iter().filter(|r| standing(r.sizing.as_ref()) == state).count() as i64;
                m.workloads.get_or_create(&l).set(n);
            }
        }
        let mut shown = sized;
        shown.sort_by_key(|r| {
            let s = standing(r.sizing.as_ref());
            (s == "within" || s == "unknown", r.kind.clone(), r.name.clone())
        });
        shown.truncate(WORKLOADS_IN_VIEW);
        let keys: HashSet<(String, String)> = shown.iter().map(|r| (r.kind.clone(), r.name.clone())).collect();
        let left: Vec<(String, String)> = {
            let mut views = m.in_view.lock().unwrap_or_else(|e| e.into_inner());
            let before = views.insert(labels.clone(), keys).unwrap_or_default();
            let now = &views[labels];
            before.into_iter().filter(|k| !now.contains(k)).collect()
        };
        for (kind, name) in left {
            remove(m, &self.workload_labels(&kind, &name));
        }
        for r in shown {
            let Some(s) = &r.sizing else { continue };
            let w = self.workload_labels(&r.kind, &r.name);
            for (bound, v) in [("target", s.target), ("lower", s.lower_bound), ("upper", s.upper_bound)] {
                m.recommended_max
                    .get_or_create(&bound_labels(&w, bound))
                    .set(i64::from(v));
            }
            m.recommended_min.get_or_create(&w).set(i64::from(s.min_size));
            m.confidence_hours.get_or_create(&w).set(i64::from(s.confidence_hours));
            match s.current {
                Some(c) => {
                    m.configured_max.get_or_create(&w).set(i64::from(c));
                }
                // Unread is not zero.
                None => {
                    m.configured_max.remove(&w);
                }
            }
        }
    }
}

fn bound_labels(w: &WorkloadLabels, bound: &'static str) -> BoundLabels {
    BoundLabels {
        namespace: w.namespace.clone(),
        policy: w.policy.clone(),
        kind: w.kind.clone(),
        workload: w.workload.clone(),
        bound,
    }
}

fn remove(m: &SizingMetrics, w: &WorkloadLabels) {
    for bound in ["target", "lower", "upper"] {
        m.recommended_max.remove(&bound_labels(w, bound));
    }
    m.recommended_min.remove(w);
    m.configured_max.remove(w);
    m.confidence_hours.remove(w);
}

#[cfg(test)]
mod tests {
    use super::super::metrics::Metrics;
    use super::*;

    fn row(name: &str, current: Option<u32>) -> WorkloadStatus {
        WorkloadStatus {
            kind: "Deployment".to_owned(),
            name: name.to_owned(),
            sizing: Some(SizingStatus {
                target: 6,
                lower_bound: 4,
                upper_bound: 12,
                min_size: 4,
                current,
                confidence_hours: 30,
                message: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn recommendations_and_standings_are_exported_and_a_workload_leaving_takes_its_series() {
        let metrics = Metrics::new();
        let p = metrics.policy("shop", "pools");
        p.record_sizing(&[row("web", Some(40)), row("worker", Some(2)), row("cron", None)]);
        let text = metrics.render();
        for line in [
            r#"poolwarden_sizing_recommended_max{namespace="shop",policy="pools",kind="Deployment",workload="web",bound="upper"} 12"#,
            r#"poolwarden_sizing_configured_max{namespace="shop",policy="pools",kind="Deployment",workload="web"} 40"#,
            r#"poolwarden_sizing_workloads{namespace="shop",policy="pools",state="oversized"} 1"#,
            r#"poolwarden_sizing_workloads{namespace="shop",policy="pools",state="undersized"} 1"#,
            r#"poolwarden_sizing_workloads{namespace="shop",policy="pools",state="unknown"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            !text.contains(
                r#"poolwarden_sizing_configured_max{namespace="shop",policy="pools",kind="Deployment",workload="cron"}"#
            ),
            "unread is not zero"
        );
        p.record_sizing(&[row("web", Some(8))]);
        let text = metrics.render();
        assert!(!text.contains(r#"workload="worker""#), "{text}");
        assert!(
            text.contains(r#"poolwarden_sizing_workloads{namespace="shop",policy="pools",state="within"} 1"#),
            "{text}"
        );
        p.record_sizing(&[]);
        assert!(
            !metrics.render().contains("poolwarden_sizing_workloads{"),
            "sizing Off: no series"
        );
    }
}
