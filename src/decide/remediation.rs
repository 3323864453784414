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
    validate::{ResolvedDiscrepancy, ResolvedPolicy, ResolvedRemediation},
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
            let expired = now.duration_since(r.at) >= PENDING_EXPIRY;
            if r.state != RemediationState::Pending || !expired {
                return r.clone();
            }
            let still_running = r.pod.as_ref().is_some_and(|pod| {
                workloads
                    .iter()
                    .filter(|w| w.name == r.workload && w.kind == r.kind)
                    .flat_map(|w| &w.instances)
                    .any(|i| &i.name == pod && same_incarnation(i.started_at, r.at))
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
fn same_incarnation(started: Option<Timestamp>, at: Timestamp) -> bool {
    started.is_none_or(|started| started <= at)
}

/// A leaking instance — or workload judged as a whole, under its own name — the
/// verdicts found.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<'a> {
    pub workload: &'a Workload,
    /// What the workload's state allows.
    pub gate: WorkloadGate,
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
    /// The status has no room for the restart's record ([`super::summary`]).
    NoRoomForRecord,
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
            SkipReason::NoRoomForRecord => "no_room_for_record",
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadGate {
    pub paused: bool,
    pub env_change_pending: bool,
}

/// Decides, worst offender first, which candidates are remediated. `history` is
/// the policy's own record (the hourly budget); `others` what other policies
/// recorded about the same workloads (with it, the cooldown and the one-in-flight
/// rule are per workload).
pub fn choose(
    policy: &ResolvedPolicy,
    rule: &ResolvedDiscrepancy,
    mut candidates: Vec<Candidate>,
    history: &[RemediationRecord],
    others: &[RemediationRecord],
    generation: i64,
    now: Timestamp,
) -> (Vec<Remediation>, Vec<Skipped>) {
    let r = &policy.remediation;
    sort_worst_first(&mut candidates);
    let mut budget_left = r
        .max_restarts_per_hour
        .saturating_sub(restarts_in_last_hour(history, now));
    // The workloads remediated in this pass, by kind and name.
    let mut acted_on: Vec<(&str, &str)> = Vec::new();
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for c in &candidates {
        let workload = c.workload;
        let key = (workload.kind.as_str(), workload.name.as_str());
        let whole = workload.workload_samples.is_some();
        let action = action_for(r, whole);
        // Per workload, whichever policy recorded it.
        let last = last_remediation(workload, history.iter().chain(others));
        let chain = recurrence::check(
            &r.recurrence,
            workload,
            &leak_of(c, whole),
            last.map(|(_, h)| h),
            history,
            generation,
        );
        let record = pending_record(rule, workload, c, action, &chain, generation, now);
        let turn = Turn {
            remediation: r,
            workload,
            gate: &c.gate,
            whole,
            action,
            acted_on: acted_on.contains(&key),
            last,
            chain: &chain,
            budget_left,
            ready_after: ready_after_restart(workload, &c.instance),
            now,
        };
        match SKIP_RULES.iter().find_map(|rule| rule(&turn)) {
            Some((why, detail)) => skipped.push(Skipped { record, why, detail }),
            None => {
                budget_left -= 1;
                acted_on.push(key);
                done.push(Remediation { record });
            }
        }
    }
    (done, skipped)
}

/// The worst offender first: the highest value, then the longest running, then by name
/// (so that ties are broken the same way every pass).
fn sort_worst_first(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        b.value
            .cmp(&a.value)
            .then(a.since.cmp(&b.since))
            .then(a.instance.cmp(&b.instance))
    });
}

/// The policy's own remediations that count and were recorded within the last hour.
fn restarts_in_last_hour(history: &[RemediationRecord], now: Timestamp) -> u32 {
    let hour_ago = now.checked_sub(SignedDuration::from_hours(1)).unwrap_or(Timestamp::MIN);
    history.iter().filter(|h| counts(h)).filter(|h| h.at > hour_ago).count() as u32
}

/// A workload judged as a whole can only be rolled; `None` still names what would
/// have been done.
fn action_for(r: &ResolvedRemediation, whole: bool) -> RemediationAction {
    if whole {
        RemediationAction::RolloutRestart
    } else if r.action == RemediationAction::None {
        RemediationAction::RestartPod
    } else {
        r.action
    }
}

/// The latest counting record about `workload`, with its time.
fn last_remediation<'a>(
    workload: &Workload,
    records: impl Iterator<Item = &'a RemediationRecord>,
) -> Option<(Timestamp, &'a RemediationRecord)> {
    records
        .filter(|h| counts(h))
        .filter(|h| h.workload == workload.name && h.kind == workload.kind)
        .map(|h| (h.at, h))
        .max_by_key(|(t, _)| *t)
}

fn leak_of<'a>(c: &'a Candidate<'_>, whole: bool) -> recurrence::Leak<'a> {
    recurrence::Leak {
        instance: (!whole).then_some(c.instance.as_str()),
        since: c.since,
        since_is_return: c.since_is_return,
    }
}

/// The workload's ready replicas once `instance` is restarted.
fn ready_after_restart(workload: &Workload, instance: &str) -> u32 {
    workload.ready_replicas.saturating_sub(u32::from(
        workload.instances.iter().any(|i| i.name == instance && i.ready),
    ))
}

/// The record of the remediation, as done (`Pending`) or as skipped.
fn pending_record(
    rule: &ResolvedDiscrepancy,
    workload: &Workload,
    c: &Candidate,
    action: RemediationAction,
    chain: &recurrence::Chain,
    generation: i64,
    now: Timestamp,
) -> RemediationRecord {
    let measure = rule.measure;
    let (limit, per_pod) = if workload.workload_samples.is_some() {
        let ready = workload.instances.iter().filter(|i| i.ready).count();
        (
            workload_limit(workload, rule),
            format!(" ({} per pod × {ready} ready pods)", rule.max),
        )
    } else {
        (rule.max, String::new())
    };
    RemediationRecord {
        at: now,
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
        since: c.since,
        evidence: c.evidence.clone(),
        template: workload.template.clone(),
        generation: Some(generation),
        returned_after_seconds: match chain {
            recurrence::Chain::Returned(after) => after.clone(),
            _ => Vec::new(),
        },
    }
}

/// What the skip rules see of one candidate's turn.
struct Turn<'a> {
    remediation: &'a ResolvedRemediation,
    workload: &'a Workload,
    gate: &'a WorkloadGate,
    /// Judged as a whole (`User` attribution): no pod to single out.
    whole: bool,
    action: RemediationAction,
    /// Another candidate of the same workload was remediated earlier in this pass.
    acted_on: bool,
    last: Option<(Timestamp, &'a RemediationRecord)>,
    chain: &'a recurrence::Chain,
    budget_left: u32,
    ready_after: u32,
    now: Timestamp,
}

/// A rule that, when it applies, says why the remediation is skipped.
type SkipRule = fn(&Turn) -> Option<(SkipReason, String)>;

/// The skip rules in the order they are asked; the first that applies is the reason
/// given. The order matters: a mode (None, paused) explains more than a budget does.
const SKIP_RULES: [SkipRule; 12] = [
    observe_only,
    pods_indistinguishable,
    paused,
    env_change_pending,
    rollout_in_progress,
    one_per_workload,
    in_flight,
    leak_recurring,
    cooldown,
    hourly_budget,
    too_few_available,
    dry_run,
];

fn observe_only(t: &Turn) -> Option<(SkipReason, String)> {
    (t.remediation.action == RemediationAction::None)
        .then(|| (SkipReason::ObserveOnly, "remediation.action is None".to_owned()))
}

fn pods_indistinguishable(t: &Turn) -> Option<(SkipReason, String)> {
    // Validation refuses User attribution with RestartPod; never evict a guessed pod.
    (t.whole && t.remediation.action == RemediationAction::RestartPod).then(|| {
        (
            SkipReason::PodsIndistinguishable,
            "RestartPod needs a pod, and User attribution cannot tell the pods apart: use RolloutRestart or None"
                .to_owned(),
        )
    })
}

fn paused(t: &Turn) -> Option<(SkipReason, String)> {
    t.gate.paused.then(|| {
        (
            SkipReason::Paused,
            "paused by the poolwarden.io/paused annotation".to_owned(),
        )
    })
}

fn env_change_pending(t: &Turn) -> Option<(SkipReason, String)> {
    t.gate.env_change_pending.then(|| {
        (
            SkipReason::EnvChangePending,
            "the pending env change rolls the pods already".to_owned(),
        )
    })
}

fn rollout_in_progress(t: &Turn) -> Option<(SkipReason, String)> {
    t.workload
        .rollout_in_progress
        .then(|| (SkipReason::RolloutInProgress, "a rollout is in progress".to_owned()))
}

fn one_per_workload(t: &Turn) -> Option<(SkipReason, String)> {
    t.acted_on.then(|| {
        (
            SkipReason::OnePerWorkload,
            "one remediation per workload at a time".to_owned(),
        )
    })
}

/// The pod last restarted is the same incarnation still running: the restart has
/// not happened yet.
fn in_flight(t: &Turn) -> Option<(SkipReason, String)> {
    let (_, h) = t.last?;
    let pod = h.pod.as_ref()?;
    let running = t
        .workload
        .instances
        .iter()
        .any(|i| &i.name == pod && same_incarnation(i.started_at, h.at));
    running.then(|| {
        (
            SkipReason::InFlight,
            format!("{pod} is still running after its restart at {}", h.at),
        )
    })
}

fn leak_recurring(t: &Turn) -> Option<(SkipReason, String)> {
    match t.chain {
        recurrence::Chain::Recurring {
            returned_after,
            restarts,
        } => Some((SkipReason::LeakRecurring, recurrence::words(returned_after, restarts))),
        _ => None,
    }
}

fn cooldown(t: &Turn) -> Option<(SkipReason, String)> {
    let (last, _) = t.last?;
    let cooldown = SignedDuration::try_from(t.remediation.cooldown).unwrap_or(SignedDuration::MAX);
    (t.now.duration_since(last) < cooldown).then(|| {
        (
            SkipReason::Cooldown,
            format!(
                "last remediation at {last}, cooldown {}",
                crate::policy::duration::render(t.remediation.cooldown)
            ),
        )
    })
}

fn hourly_budget(t: &Turn) -> Option<(SkipReason, String)> {
    (t.budget_left == 0).then(|| {
        (
            SkipReason::HourlyBudget,
            format!("maxRestartsPerHour {} used up", t.remediation.max_restarts_per_hour),
        )
    })
}

fn too_few_available(t: &Turn) -> Option<(SkipReason, String)> {
    let min = t.remediation.min_available_replicas;
    (t.action == RemediationAction::RestartPod && t.ready_after < min).then(|| {
        (
            SkipReason::TooFewAvailable,
            format!("{} ready would remain, minAvailableReplicas is {min}", t.ready_after),
        )
    })
}

fn dry_run(t: &Turn) -> Option<(SkipReason, String)> {
    t.remediation
        .dry_run
        .then(|| (SkipReason::DryRun, "dry run".to_owned()))
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
    let key = |r: &RemediationRecord| (r.at, r.kind.clone(), r.workload.clone(), r.pod.clone(), r.action);
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
