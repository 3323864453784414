//! Rules 3 and 4 — which leaking instances are restarted now, and why the others
//! are not: modes (None, dry run, paused), a pending env change, a rollout in
//! progress, a remediation still in flight, cooldown, the hourly budget, and the
//! least number of ready instances. The worst offender goes first.
//!
//! A workload judged as a whole (`User` attribution) has no pod to single out: its
//! only remediation is a rollout restart, under the same rails.

use jiff::{SignedDuration, Timestamp};

use super::{input::Workload, verdict::workload_limit};
use crate::policy::{
    RemediationAction, RemediationRecord,
    validate::{ResolvedDiscrepancy, ResolvedPolicy},
};

/// A leaking instance — or workload judged as a whole, under its own name — the
/// verdicts found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub workload: usize,
    pub instance: String,
    pub value: u32,
    pub since: Timestamp,
    pub values: Vec<u32>,
}

/// Why a remediation poolwarden would have made was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    ObserveOnly,
    DryRun,
    Paused,
    EnvChangePending,
    RolloutInProgress,
    InFlight,
    Cooldown,
    HourlyBudget,
    TooFewAvailable,
    OnePerWorkload,
    PodsIndistinguishable,
}

impl SkipReason {
    /// Stable label for metrics and Event reasons.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::ObserveOnly => "observe_only",
            SkipReason::DryRun => "dry_run",
            SkipReason::Paused => "paused",
            SkipReason::EnvChangePending => "env_change_pending",
            SkipReason::RolloutInProgress => "rollout_in_progress",
            SkipReason::InFlight => "in_flight",
            SkipReason::Cooldown => "cooldown",
            SkipReason::HourlyBudget => "hourly_budget",
            SkipReason::TooFewAvailable => "too_few_available",
            SkipReason::OnePerWorkload => "one_per_workload",
            SkipReason::PodsIndistinguishable => "pods_indistinguishable",
        }
    }
}

/// A remediation to carry out, with its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remediation {
    pub record: RemediationRecord,
}

/// A remediation not carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub record: RemediationRecord,
    pub why: SkipReason,
    pub detail: String,
}

/// What the per-workload state allows, known before budgets are counted.
pub struct WorkloadGate {
    pub paused: bool,
    pub env_change_pending: bool,
}

/// Decides, worst offender first, which candidates are remediated.
pub fn choose(
    policy: &ResolvedPolicy,
    rule: &ResolvedDiscrepancy,
    workloads: &[Workload],
    gates: &[WorkloadGate],
    mut candidates: Vec<Candidate>,
    history: &[RemediationRecord],
    now: Timestamp,
) -> (Vec<Remediation>, Vec<Skipped>) {
    let r = &policy.remediation;
    let measure = rule.measure;
    candidates.sort_by(|a, b| {
        b.value
            .cmp(&a.value)
            .then(a.since.cmp(&b.since))
            .then(a.instance.cmp(&b.instance))
    });
    let hour_ago = now - SignedDuration::from_hours(1);
    let mut budget_left = r.max_restarts_per_hour.saturating_sub(
        history
            .iter()
            .filter(|h| parse(&h.at).is_some_and(|t| t > hour_ago))
            .count() as u32,
    );
    let cooldown = SignedDuration::try_from(r.cooldown).unwrap_or(SignedDuration::MAX);
    let mut acted_on: Vec<usize> = Vec::new();
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for c in candidates {
        let workload = &workloads[c.workload];
        let whole = workload.workload_samples.is_some();
        let action = if whole {
            RemediationAction::RolloutRestart
        } else if r.action == RemediationAction::None {
            RemediationAction::RestartPod
        } else {
            r.action
        };
        let (limit, per_pod) = if whole {
            let ready = workload.instances.iter().filter(|i| i.ready).count();
            (
                workload_limit(workload, rule),
                format!(" ({} per pod × {ready} ready pods)", rule.max),
            )
        } else {
            (rule.max, String::new())
        };
        let record = RemediationRecord {
            at: now.to_string(),
            action,
            kind: workload.kind.clone(),
            workload: workload.name.clone(),
            pod: (action == RemediationAction::RestartPod).then(|| c.instance.clone()),
            reason: format!(
                "{measure:?} {} > {limit}{per_pod} in every sample since {} ({} samples)",
                c.value,
                c.since,
                c.values.len()
            ),
            measure,
            values: c.values.clone(),
            limit,
            since: c.since.to_string(),
        };
        let last = history
            .iter()
            .filter(|h| h.workload == workload.name && h.kind == workload.kind)
            .filter_map(|h| parse(&h.at).map(|t| (t, h)))
            .max_by_key(|(t, _)| *t);
        let ready_after = workload.ready_replicas.saturating_sub(u32::from(
            workload.instances.iter().any(|i| i.name == c.instance && i.ready),
        ));
        let skip = if r.action == RemediationAction::None {
            Some((SkipReason::ObserveOnly, "remediation.action is None".to_owned()))
        } else if whole && r.action == RemediationAction::RestartPod {
            // Validation refuses User attribution with RestartPod; never evict a guessed pod.
            Some((
                SkipReason::PodsIndistinguishable,
                "RestartPod needs a pod, and User attribution cannot tell the pods apart: use RolloutRestart or None"
                    .to_owned(),
            ))
        } else if gates[c.workload].paused {
            Some((
                SkipReason::Paused,
                "paused by the poolwarden.io/paused annotation".to_owned(),
            ))
        } else if gates[c.workload].env_change_pending {
            Some((
                SkipReason::EnvChangePending,
                "the pending env change rolls the pods already".to_owned(),
            ))
        } else if workload.rollout_in_progress {
            Some((SkipReason::RolloutInProgress, "a rollout is in progress".to_owned()))
        } else if acted_on.contains(&c.workload) {
            Some((
                SkipReason::OnePerWorkload,
                "one remediation per workload at a time".to_owned(),
            ))
        } else if let Some((_, h)) = last.filter(|(_, h)| {
            h.pod
                .as_ref()
                .is_some_and(|p| workload.instances.iter().any(|i| &i.name == p))
        }) {
            Some((
                SkipReason::InFlight,
                format!(
                    "{} is still running after its restart at {}",
                    h.pod.as_deref().unwrap_or_default(),
                    h.at
                ),
            ))
        } else if let Some((t, _)) = last.filter(|(t, _)| now.duration_since(*t) < cooldown) {
            Some((
                SkipReason::Cooldown,
                format!(
                    "last remediation at {t}, cooldown {}",
                    crate::policy::duration::render(r.cooldown)
                ),
            ))
        } else if budget_left == 0 {
            Some((
                SkipReason::HourlyBudget,
                format!("maxRestartsPerHour {} used up", r.max_restarts_per_hour),
            ))
        } else if action == RemediationAction::RestartPod && ready_after < r.min_available_replicas {
            Some((
                SkipReason::TooFewAvailable,
                format!(
                    "{ready_after} ready would remain, minAvailableReplicas is {}",
                    r.min_available_replicas
                ),
            ))
        } else if r.dry_run {
            Some((SkipReason::DryRun, "dry run".to_owned()))
        } else {
            None
        };
        match skip {
            Some((why, detail)) => skipped.push(Skipped { record, why, detail }),
            None => {
                budget_left -= 1;
                acted_on.push(c.workload);
                done.push(Remediation { record });
            }
        }
    }
    (done, skipped)
}

pub(crate) fn parse(at: &str) -> Option<Timestamp> {
    at.parse().ok()
}
