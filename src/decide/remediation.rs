//! Rules 3 and 4 — which leaking instances are restarted now, and why the others
//! are not: modes (None, dry run, paused), a pending env change, a rollout in
//! progress, a remediation still in flight, cooldown, the hourly budget, and the
//! least number of ready instances. The worst offender goes first.
//!
//! A workload judged as a whole (`User` attribution) has no pod to single out: its
//! only remediation is a rollout restart, under the same rails.

use jiff::{SignedDuration, Timestamp};

use super::{input::Workload, recurrence, verdict::workload_limit};
use crate::policy::{
    PodEvidence, RemediationAction, RemediationRecord, RemediationState,
    validate::{ResolvedDiscrepancy, ResolvedPolicy},
};

/// How long a `Pending` record blocks before it is settled: longer than any pass
/// (whose deadline is at most a minute), so a live controller confirms it first.
pub const PENDING_EXPIRY: SignedDuration = SignedDuration::from_secs(120);

/// Whether a record counts against budgets and cooldowns.
pub fn counts(record: &RemediationRecord) -> bool {
    record.state != RemediationState::Abandoned
}

/// Settles the `Pending` records older than [`PENDING_EXPIRY`]: a controller died
/// between recording and confirming them. A pod restart whose pod still runs, the
/// same pod (started before the record), never happened: `Abandoned`. Anything else
/// may have happened, and is counted: `Done`.
pub fn settle_records(records: &[RemediationRecord], workloads: &[Workload], now: Timestamp) -> Vec<RemediationRecord> {
    records
        .iter()
        .map(|r| {
            let expired = parse(&r.at).is_some_and(|t| now.duration_since(t) >= PENDING_EXPIRY);
            if r.state != RemediationState::Pending || !expired {
                return r.clone();
            }
            let still_running = r.pod.as_ref().is_some_and(|pod| {
                workloads
                    .iter()
                    .filter(|w| w.name == r.workload && w.kind == r.kind)
                    .flat_map(|w| &w.instances)
                    .any(|i| &i.name == pod && same_incarnation(i.started_at, &r.at))
            });
            RemediationRecord {
                state: if still_running {
                    RemediationState::Abandoned
                } else {
                    RemediationState::Done
                },
                ..r.clone()
            }
        })
        .collect()
}

/// Whether an instance started at `started` is the one that ran when `at` was
/// recorded (a StatefulSet's pod comes back under its old name); unknown counts as
/// the same.
fn same_incarnation(started: Option<Timestamp>, at: &str) -> bool {
    match (started, parse(at)) {
        (Some(started), Some(at)) => started <= at,
        _ => true,
    }
}

/// A leaking instance — or workload judged as a whole, under its own name — the
/// verdicts found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub workload: usize,
    pub instance: String,
    pub value: u32,
    pub since: Timestamp,
    pub values: Vec<u32>,
    /// What the instance's overrunning backends are doing.
    pub evidence: Option<PodEvidence>,
    /// A sample within the limit precedes the run (see [`recurrence::Leak`]).
    pub since_is_return: bool,
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
    LeakRecurring,
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
            SkipReason::LeakRecurring => "leak_recurring",
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

/// Decides, worst offender first, which candidates are remediated. `history` is
/// the policy's own record (the hourly budget); `others` what other policies
/// recorded about the same workloads (with it, the cooldown and the one-in-flight
/// rule are per workload).
#[allow(clippy::too_many_arguments)]
pub fn choose(
    policy: &ResolvedPolicy,
    rule: &ResolvedDiscrepancy,
    workloads: &[Workload],
    gates: &[WorkloadGate],
    mut candidates: Vec<Candidate>,
    history: &[RemediationRecord],
    others: &[RemediationRecord],
    generation: i64,
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
    let hour_ago = now.checked_sub(SignedDuration::from_hours(1)).unwrap_or(Timestamp::MIN);
    let mut budget_left = r.max_restarts_per_hour.saturating_sub(
        history
            .iter()
            .filter(|h| counts(h))
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
        // Per workload, whichever policy recorded it.
        let last = history
            .iter()
            .chain(others)
            .filter(|h| counts(h))
            .filter(|h| h.workload == workload.name && h.kind == workload.kind)
            .filter_map(|h| parse(&h.at).map(|t| (t, h)))
            .max_by_key(|(t, _)| *t);
        let leak = recurrence::Leak {
            instance: (!whole).then_some(c.instance.as_str()),
            since: c.since,
            since_is_return: c.since_is_return,
        };
        let chain = recurrence::check(
            &r.recurrence,
            workload,
            &leak,
            last.map(|(_, h)| h),
            history,
            generation,
        );
        let record = RemediationRecord {
            at: now.to_string(),
            state: RemediationState::Pending,
            action,
            kind: workload.kind.to_string(),
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
            evidence: c.evidence.clone(),
            template: workload.template.clone(),
            generation: Some(generation),
            returned_after_seconds: match &chain {
                recurrence::Chain::Returned(after) => after.clone(),
                _ => Vec::new(),
            },
        };
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
            h.pod.as_ref().is_some_and(|p| {
                workload
                    .instances
                    .iter()
                    .any(|i| &i.name == p && same_incarnation(i.started_at, &h.at))
            })
        }) {
            Some((
                SkipReason::InFlight,
                format!(
                    "{} is still running after its restart at {}",
                    h.pod.as_deref().unwrap_or_default(),
                    h.at
                ),
            ))
        } else if let recurrence::Chain::Recurring {
            returned_after,
            restarts,
        } = &chain
        {
            Some((SkipReason::LeakRecurring, recurrence::words(returned_after, restarts)))
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

/// The records to publish when the status changed under a pass (another pass or
/// process wrote it): every record either side has — the same remediation at the
/// further state (Pending, then Abandoned, then Done) — except the ones this pass
/// took out because they did not happen (`refused`). No writer drops a record
/// another wrote.
pub fn merge_records(
    server: &[RemediationRecord],
    ours: &[RemediationRecord],
    refused: &[RemediationRecord],
) -> Vec<RemediationRecord> {
    let key = |r: &RemediationRecord| {
        (
            r.at.clone(),
            r.kind.clone(),
            r.workload.clone(),
            r.pod.clone(),
            r.action,
        )
    };
    let rank = |s: RemediationState| match s {
        RemediationState::Pending => 0,
        RemediationState::Abandoned => 1,
        RemediationState::Done => 2,
    };
    let mut out: Vec<RemediationRecord> = Vec::new();
    for r in server.iter().chain(ours) {
        if refused.iter().any(|x| key(x) == key(r)) {
            continue;
        }
        match out.iter_mut().find(|o| key(o) == key(r)) {
            Some(o) if rank(r.state) > rank(o.state) => *o = r.clone(),
            Some(_) => {}
            None => out.push(r.clone()),
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.workload.cmp(&b.workload)));
    out
}
