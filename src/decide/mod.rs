//! The decision core: a plain function from plain data (policy, workloads,
//! observation history, status, `now`) to a [`Plan`]. No I/O, no clock, no async —
//! so every rule is tested without a cluster or a database. `docs/decisions.md`
//! lists, scenario by scenario, when poolwarden restarts something and when it refuses.

pub mod budget;
pub mod conditions;
pub mod env;
pub mod evidence;
mod full;
pub mod input;
pub mod keeping;
pub mod measure;
pub mod recurrence;
pub mod remediation;
pub mod sizing;
pub mod summary;
pub mod verdict;

use std::collections::BTreeMap;

use jiff::Timestamp;

pub use input::{
    Container, DatabaseLimits, Env, EnvConflict, EnvValue, GovernedElsewhere, Instance, Kind, PlanInput, PoolerLimits,
    Workload, WorkloadKey, WorkloadRef,
};
pub use remediation::{Remediation, SkipReason, Skipped};
pub use verdict::Verdict;

use crate::policy::condition::{reason, type_};
use crate::{
    observation::{Measured, PodSample},
    policy::{
        ConnectionCounts, ExceedingPod, PoolPolicyStatus, RemediationRecord, RemediationState, WorkloadStatus,
        sizing::SizingStatus,
    },
};
use conditions::Wanted;
use remediation::{Candidate, WorkloadGate};

/// The env one workload must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvChange {
    pub workload: WorkloadRef,
    /// Per container, the owned entries that differ from what it has.
    pub containers: BTreeMap<String, BTreeMap<String, EnvValue>>,
    /// Every env entry poolwarden owns on the workload, per selected container, as it
    /// must be (entries another manager owns left out): what a server-side apply
    /// carries, since an applier gives up the fields it leaves out.
    pub owned: BTreeMap<String, BTreeMap<String, EnvValue>>,
}

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum About {
    /// The policy itself.
    Policy,
    /// One of its workloads (the Event goes on the policy too, as the related object).
    Workload(WorkloadRef),
}

/// Why an Event is emitted: its `reason`, one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    PoolEnvUpdated,
    /// Env due but not written (paused, dry run).
    PoolEnvSkipped,
    /// A restart is about to be made. A target that reports each restart's outcome
    /// (Kubernetes: `Restarted`, `RemediationSkipped`) publishes that instead.
    Remediating,
    RemediationSkipped,
    /// A leak left alone because restarting did not help.
    LeakRecurring,
    /// The database refuses poolwarden's connection: it is full.
    DatabaseFull,
    /// The pools on the database may open more connections than it allows.
    BudgetExceeded,
}

impl EventReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::PoolEnvUpdated => "PoolEnvUpdated",
            EventReason::PoolEnvSkipped => "PoolEnvSkipped",
            EventReason::Remediating => "Remediating",
            EventReason::RemediationSkipped => "RemediationSkipped",
            EventReason::LeakRecurring => "LeakRecurring",
            EventReason::DatabaseFull => "DatabaseFull",
            EventReason::BudgetExceeded => "BudgetExceeded",
        }
    }
}

impl PartialEq<&str> for EventReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An Event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub about: About,
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
}

impl PlannedEvent {
    /// The kind of object it is about, `Policy` for the policy.
    pub fn object_kind(&self) -> &'static str {
        match &self.about {
            About::Policy => "Policy",
            About::Workload(w) => w.kind.as_str(),
        }
    }
}

/// Everything the plan says of one selected workload.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadPlan {
    pub workload: WorkloadRef,
    /// Per instance name (or the workload's own name, when it is judged as a whole).
    pub verdicts: BTreeMap<String, Verdict>,
}

/// What poolwarden should do now: the whole instruction. A target translates it and
/// decides nothing again.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Env writes to make (empty in dry run and for paused workloads).
    pub env: Vec<EnvChange>,
    /// Env writes that were due but not made, with why.
    pub env_skipped: Vec<(EnvChange, SkipReason)>,
    pub remediations: Vec<Remediation>,
    pub skipped: Vec<Skipped>,
    /// The status to publish; equal to the input status when nothing changed. It shows
    /// the worst workloads only ([`summary`]); `rows` has every one.
    pub status: PoolPolicyStatus,
    /// Every selected workload's row, as the status would show it (for the metrics).
    pub rows: Vec<WorkloadStatus>,
    pub status_changed: bool,
    pub events: Vec<PlannedEvent>,
    /// One per input workload, in the same order.
    pub workloads: Vec<WorkloadPlan>,
    /// The workloads whose env carries new sizes from sizing's Auto mode now.
    pub sized: Vec<WorkloadRef>,
}

impl Plan {
    /// Records what became of this plan's remediations, all `Pending` in the status
    /// until now: the ones that did not happen (refused, failed) are taken out, so
    /// budgets and cooldowns count only restarts that took place; the others are
    /// `Done`.
    pub fn record_outcomes(&mut self, refused: &[RemediationRecord]) {
        let done: Vec<RemediationRecord> = self
            .remediations
            .iter()
            .map(|r| &r.record)
            .filter(|r| !refused.contains(r))
            .cloned()
            .collect();
        let status = &mut self.status;
        status.remediations.retain(|h| !refused.contains(h));
        for h in &mut status.remediations {
            if done.contains(h) {
                h.state = RemediationState::Done;
            }
        }
        for r in &mut self.remediations {
            if done.contains(&r.record) {
                r.record.state = RemediationState::Done;
            }
        }
        status.refresh_last_remediations();
    }

    /// The env change for one workload, written or skipped.
    pub fn env_change(&self, w: &WorkloadRef) -> Option<&EnvChange> {
        self.env
            .iter()
            .chain(self.env_skipped.iter().map(|(c, _)| c))
            .find(|c| &c.workload == w)
    }

    /// True when carrying it out would write something.
    pub fn changes(&self) -> bool {
        !self.env.is_empty() || !self.remediations.is_empty()
    }
}

impl Workload {
    pub fn reference(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.kind,
            name: self.name.clone(),
        }
    }

    /// Its reference, borrowed.
    pub fn key(&self) -> WorkloadKey<'_> {
        WorkloadKey {
            kind: self.kind,
            name: &self.name,
        }
    }
}

/// Rule 1's result for every workload, in input order.
struct EnvStep {
    writes: Vec<EnvChange>,
    skipped: Vec<(EnvChange, SkipReason)>,
    gates: Vec<WorkloadGate>,
    in_sync: Vec<bool>,
    events: Vec<PlannedEvent>,
}

/// Makes the plan.
pub fn plan(input: &PlanInput) -> Plan {
    let mut sizing = sizing::step::step(input);
    let env = env_step(input, &sizing.pools);
    let verdicts = judge_all(input);
    // Rules 3 and 4: remediation, against the record of what was done (records left
    // pending by a controller that died are settled first).
    let settled = remediation::settle_records(&input.status.remediations, input.workloads, input.now);
    let keep_for = summary::keep_for(input.policy.remediation.cooldown);
    let history = summary::compact_records(settled, keep_for, input.now);
    let (chosen, skipped) = remediate(input, &verdicts, &env.gates, &history);
    // A restart is made only with its record in the status, so only if it fits.
    let (remediations, skipped) = summary::admit(chosen, skipped, &history);
    let mut events = env.events;
    events.extend(remediation_events(&remediations, &skipped, input.now));
    events.extend(full::event(input));
    let (status, rows) = build_status(
        input,
        &history,
        &verdicts,
        (&remediations, &skipped),
        &env.writes,
        &env.in_sync,
        (std::mem::take(&mut sizing.rows), &sizing.refused),
    );
    let sized = input
        .workloads
        .iter()
        .zip(&sizing.writes)
        .filter(|(w, wrote)| {
            **wrote
                && env
                    .writes
                    .iter()
                    .any(|c| c.workload.name == w.name && c.workload.kind == w.kind)
        })
        .map(|(w, _)| w.reference())
        .collect();
    events.extend(budget_event(input, &status.conditions));
    let status_changed = &status != input.status;
    let workloads = input
        .workloads
        .iter()
        .zip(verdicts)
        .map(|(w, verdicts)| WorkloadPlan {
            workload: w.reference(),
            verdicts,
        })
        .collect();
    Plan {
        env: env.writes,
        env_skipped: env.skipped,
        remediations,
        skipped,
        status,
        rows,
        status_changed,
        events,
        workloads,
        sized,
    }
}

/// Rule 1: the env each workload must get, written unless paused or in dry run.
fn env_step(input: &PlanInput, sized: &[Option<crate::policy::PoolSettings>]) -> EnvStep {
    let policy = input.policy;
    let dry_run = policy.remediation.dry_run;
    let policy_env = env::desired_env(policy);
    let mut step = EnvStep {
        writes: Vec::new(),
        skipped: Vec::new(),
        gates: Vec::new(),
        in_sync: Vec::new(),
        events: Vec::new(),
    };
    for (i, w) in input.workloads.iter().enumerate() {
        // Sizing's Auto mode gives a workload its own sizes.
        let own = sized
            .get(i)
            .and_then(Option::as_ref)
            .map(|p| env::desired_env_with(policy, p));
        let desired = own.as_ref().unwrap_or(&policy_env);
        let mut containers = env::env_changes(policy, desired, w, input.conflicts);
        // All or nothing: with one owned entry in another manager's hands, writing the
        // others could leave a pair validation refuses (DB_POOL_MIN above DB_POOL_MAX).
        let in_conflict = input.env_all_or_nothing && input.conflicts.iter().any(|c| c.workload == w.name);
        step.in_sync.push(containers.is_empty() && !in_conflict);
        if in_conflict {
            containers.clear();
        }
        let paused = input.policy_paused || w.paused;
        step.gates.push(WorkloadGate {
            paused,
            env_change_pending: !containers.is_empty() && !paused && !dry_run,
        });
        if containers.is_empty() {
            continue;
        }
        let change = EnvChange {
            workload: w.reference(),
            containers,
            // Only for a change: a workload in sync needs no apply body.
            owned: env::owned_env(policy, desired, w, input.conflicts),
        };
        let names: Vec<String> = change.containers.values().flat_map(|c| c.keys().cloned()).collect();
        let about = About::Workload(w.reference());
        if paused || dry_run {
            let why = if paused { SkipReason::Paused } else { SkipReason::DryRun };
            let message = format!("would set {} ({})", names.join(", "), why.label());
            step.events
                .push(event(about, true, EventReason::PoolEnvSkipped, message));
            step.skipped.push((change, why));
        } else {
            let message = format!("setting {}", names.join(", "));
            step.events
                .push(event(about, false, EventReason::PoolEnvUpdated, message));
            step.writes.push(change);
        }
    }
    step
}

/// Rule 2: a verdict per instance of every workload (or one per workload judged as
/// a whole), in input order.
fn judge_all(input: &PlanInput) -> Vec<BTreeMap<String, Verdict>> {
    let policy = input.policy;
    let now = input.now;
    input
        .workloads
        .iter()
        .map(|w| {
            if let (Some(samples), Some(rule)) = (&w.workload_samples, &policy.discrepancy) {
                // Attribution cannot tell the pods apart: one verdict, under the workload's name.
                return BTreeMap::from([(w.name.clone(), verdict::judge_workload(w, samples, rule, now))]);
            }
            w.instances
                .iter()
                .map(|i| {
                    let v = match &policy.discrepancy {
                        Some(rule) => verdict::judge(i, rule, now),
                        None => Verdict::Unknown("no discrepancy rule".to_owned()),
                    };
                    (i.name.clone(), v)
                })
                .collect()
        })
        .collect()
}

/// Rules 3 and 4: the leaking instances become candidates, and the guards choose.
fn remediate(
    input: &PlanInput,
    verdicts: &[BTreeMap<String, Verdict>],
    gates: &[WorkloadGate],
    history: &[RemediationRecord],
) -> (Vec<Remediation>, Vec<Skipped>) {
    let Some(rule) = &input.policy.discrepancy else {
        return (Vec::new(), Vec::new());
    };
    let others = remediation::settle_records(input.other_remediations, input.workloads, input.now);
    let candidates = verdicts
        .iter()
        .zip(input.workloads)
        .zip(gates)
        .flat_map(|((vs, w), gate)| {
            vs.iter().filter_map(move |(name, v)| match v {
                Verdict::Leaking { value, since, values } => Some(Candidate {
                    workload: w,
                    gate: *gate,
                    instance: name.clone(),
                    value: *value,
                    since: *since,
                    values: values.clone(),
                    evidence: evidence_of(input, w, name),
                    since_is_return: run_follows_a_sample_within(w, name, *since, rule),
                }),
                _ => None,
            })
        })
        .collect();
    remediation::choose(
        input.policy,
        rule,
        candidates,
        history,
        &others,
        input.generation,
        input.now,
    )
}

/// The Events of the remediations made and skipped.
fn remediation_events(remediations: &[Remediation], skipped: &[Skipped], now: Timestamp) -> Vec<PlannedEvent> {
    let mut events = Vec::new();
    let about = |r: &RemediationRecord| match Kind::parse(&r.kind) {
        Some(kind) => About::Workload(WorkloadRef {
            kind,
            name: r.workload.clone(),
        }),
        None => About::Policy,
    };
    for r in remediations {
        let target = r.record.pod.clone().unwrap_or_else(|| r.record.workload.clone());
        let message = format!(
            "restarting {target}: {}{}",
            r.record.reason,
            evidence_suffix(r.record.evidence.as_ref(), Some(now))
        );
        events.push(event(About::Policy, false, EventReason::Remediating, message.clone()));
        events.push(event(about(&r.record), false, EventReason::Remediating, message));
    }
    for s in skipped.iter().filter(|s| s.why == SkipReason::LeakRecurring) {
        let message = format!(
            "not restarting {}/{}: {}{}",
            s.record.kind,
            s.record.workload,
            s.detail,
            evidence_suffix(s.record.evidence.as_ref(), None)
        );
        events.push(event(About::Policy, true, EventReason::LeakRecurring, message.clone()));
        events.push(event(about(&s.record), true, EventReason::LeakRecurring, message));
    }
    for s in skipped.iter().filter(|s| s.why != SkipReason::LeakRecurring) {
        let target = s.record.pod.clone().unwrap_or_else(|| s.record.workload.clone());
        let message = format!(
            "would restart {target} ({}): {}; {}",
            s.why.label(),
            s.detail,
            s.record.reason
        );
        events.push(event(about(&s.record), true, EventReason::RemediationSkipped, message));
    }
    events
}

/// The evidence of a leaking instance (or, judged as a whole, workload) `name`.
fn evidence_of(input: &PlanInput, w: &Workload, name: &str) -> Option<crate::policy::PodEvidence> {
    let queries = input.policy.queries;
    match &w.workload_samples {
        Some(samples) => evidence::of_samples(name, samples, None, queries, input.now),
        None => {
            let i = w.instances.iter().find(|i| i.name == name)?;
            evidence::of_samples(name, &i.samples, i.started_at, queries, input.now)
        }
    }
}

/// Whether a known sample within the limit comes before `since` in the history of
/// instance (or workload judged as a whole) `name`: then `since` is when it began
/// to exceed, not just where its history starts.
fn run_follows_a_sample_within(
    w: &Workload,
    name: &str,
    since: Timestamp,
    rule: &crate::policy::validate::ResolvedDiscrepancy,
) -> bool {
    let (samples, limit) = match &w.workload_samples {
        Some(samples) => (samples.as_slice(), verdict::workload_limit(w, rule)),
        None => match w.instances.iter().find(|i| i.name == name) {
            Some(i) => (i.samples.as_slice(), rule.max),
            None => return false,
        },
    };
    samples
        .iter()
        .filter(|s| s.at < since)
        .any(|s| matches!(measure::value(rule.measure, s), Measured::Known(v) if v <= limit))
}

/// "; evidence: …" for an Event's note, or nothing.
fn evidence_suffix(e: Option<&crate::policy::PodEvidence>, now: Option<Timestamp>) -> String {
    e.map(|e| format!("; evidence: {}", evidence::words(e, now)))
        .unwrap_or_default()
}

fn event(about: About, warning: bool, reason: EventReason, message: String) -> PlannedEvent {
    PlannedEvent {
        about,
        warning,
        reason,
        message,
    }
}

/// The status (bounded: [`summary`]) and every workload's row.
fn build_status(
    input: &PlanInput,
    settled: &[RemediationRecord],
    verdicts: &[BTreeMap<String, Verdict>],
    (remediations, skipped): (&[Remediation], &[Skipped]),
    env_writes: &[EnvChange],
    in_sync: &[bool],
    (sizing_rows, sizing_refused): (Vec<Option<SizingStatus>>, &[String]),
) -> (PoolPolicyStatus, Vec<WorkloadStatus>) {
    let now = input.now;
    let kept = kept_history(input, settled, remediations);
    let rows: Vec<WorkloadStatus> = input
        .workloads
        .iter()
        .zip(verdicts)
        .zip(in_sync)
        .zip(sizing_rows.into_iter().chain(std::iter::repeat(None)))
        .map(|(((w, vs), in_sync), sizing)| WorkloadStatus {
            sizing,
            ..workload_row(input, w, vs, *in_sync, &kept)
        })
        .collect();
    let leaking = verdicts
        .iter()
        .flat_map(|vs| vs.values())
        .filter(|v| matches!(v, Verdict::Leaking { .. }))
        .count() as u32;
    let mut wanted = wanted_conditions(input, env_writes, skipped, leaking);
    wanted.extend(sizing::step::condition(input.policy, sizing_refused));
    let mut conditions = conditions::settle(wanted, &input.status.conditions, input.generation, now);
    for c in &mut conditions {
        c.message = summary::cut(std::mem::take(&mut c.message));
    }
    let mut status = PoolPolicyStatus {
        observed_generation: Some(input.generation),
        conditions,
        leaking_pods: leaking,
        restarts_last_hour: summary::restarts_last_hour(&kept, now),
        remediations: kept,
        ..Default::default()
    };
    summary::set_totals(&mut status, &rows, verdicts);
    let previous: BTreeMap<(&str, &str), &WorkloadStatus> = input
        .status
        .workloads
        .iter()
        .map(|p| ((p.kind.as_str(), p.name.as_str()), p))
        .collect();
    let candidates = summary::by_severity(&rows, verdicts)
        .into_iter()
        .take(summary::MAX_ROWS)
        .map(|i| {
            let mut row = rows[i].clone();
            let before = previous.get(&(row.kind.as_str(), row.name.as_str())).copied();
            row.observed_at = Some(refreshed(before.map(|p| (p, p.observed_at)), &row, now));
            row
        })
        .collect();
    summary::fill_rows(&mut status, candidates);
    let observed = refreshed(Some((input.status, input.status.observed_at)), &status, now);
    let stale = HEARTBEAT.saturating_add(input.policy.interval.saturating_mul(3));
    status.stale_after = Some(crate::timing::after(observed, stale));
    status.observed_at = Some(observed);
    (status, rows)
}

/// The remediation history to keep: what was there plus what is done now, pruned to
/// what cooldown and the hourly budget still need, keeping the last record of every
/// workload.
fn kept_history(
    input: &PlanInput,
    settled: &[RemediationRecord],
    remediations: &[Remediation],
) -> Vec<RemediationRecord> {
    let mut history = settled.to_vec();
    history.extend(remediations.iter().map(|r| r.record.clone()));
    let keep_for = summary::keep_for(input.policy.remediation.cooldown);
    let newest_per_workload = |h: &RemediationRecord| {
        !history
            .iter()
            .any(|o| o.workload == h.workload && o.kind == h.kind && o.at > h.at)
    };
    history
        .iter()
        .filter(|h| input.now.duration_since(h.at) < keep_for || newest_per_workload(h))
        .cloned()
        .collect()
}

/// One workload's status row (without its `observedAt`).
fn workload_row(
    input: &PlanInput,
    w: &Workload,
    vs: &BTreeMap<String, Verdict>,
    in_sync: bool,
    kept: &[RemediationRecord],
) -> WorkloadStatus {
    let policy = input.policy;
    let exceeding: Vec<ExceedingPod> = vs
        .iter()
        .filter_map(|(pod, v)| match v {
            Verdict::Exceeding { value, since, .. } | Verdict::Leaking { value, since, .. } => Some(ExceedingPod {
                pod: pod.clone(),
                value: *value,
                since: *since,
            }),
            _ => None,
        })
        .collect();
    let unknown: Vec<String> = vs
        .iter()
        .filter_map(|(pod, v)| match v {
            Verdict::Unknown(why) => Some(format!("{pod}: {why}")),
            _ => None,
        })
        .collect();
    let known_all = unknown.is_empty() && !vs.is_empty();
    WorkloadStatus {
        kind: w.kind.to_string(),
        name: w.name.clone(),
        env_in_sync: in_sync,
        pods: w.instances.len() as u32,
        connections: match &w.workload_samples {
            Some(samples) => newest_counts(samples, input.now),
            None => instance_counts(w, input.now),
        },
        measure: policy.discrepancy.as_ref().map(|d| d.measure),
        limit: policy.discrepancy.as_ref().map(|d| match &w.workload_samples {
            Some(_) => verdict::workload_limit(w, d),
            None => d.max,
        }),
        worst_value: if known_all && policy.discrepancy.is_some() {
            vs.values().filter_map(Verdict::value).max()
        } else {
            None
        },
        exceeding,
        evidence: row_evidence(input, w, vs),
        last_remediation: kept
            .iter()
            .filter(|h| h.workload == w.name && h.kind == w.kind)
            .max_by(|a, b| a.at.cmp(&b.at))
            .cloned(),
        message: (!unknown.is_empty() && policy.discrepancy.is_some())
            .then(|| format!("unknown: {}", unknown.join("; "))),
        observed_at: None,
        sizing: None,
    }
}

/// The connections of a workload's instances by state, summed over their newest
/// samples; unknown when any instance's is (or it has none).
fn instance_counts(w: &Workload, now: Timestamp) -> Option<ConnectionCounts> {
    if w.instances.is_empty() {
        return None;
    }
    let mut total = ConnectionCounts::default();
    for i in &w.instances {
        let newest = i.samples.iter().filter(|s| s.at <= now).max_by_key(|s| s.at);
        match newest.map(|s| &s.database) {
            Some(Measured::Known(c)) => add(&mut total, &c.counts),
            _ => return None,
        }
    }
    Some(total)
}

/// Every condition the status should carry now, before transition times are settled.
fn wanted_conditions(input: &PlanInput, env_writes: &[EnvChange], skipped: &[Skipped], leaking: u32) -> Vec<Wanted> {
    let db_reachable = matches!(input.database, Measured::Known(_));
    let conflict = conflict_state(input);
    let reconciling = !env_writes.is_empty() || input.workloads.iter().any(|w| w.rollout_in_progress);
    let none_selected = input.workloads.is_empty() && input.governed_elsewhere.is_empty();
    vec![
        database_condition(input),
        Wanted {
            type_: type_::CONFLICT,
            status: conflict.is_some(),
            reason: conflict.as_ref().map_or(reason::NO_CONFLICT, |c| c.reason),
            message: conflict.as_ref().map(|c| c.message.clone()).unwrap_or_default(),
        },
        budget_condition(input),
        Wanted {
            type_: type_::RECONCILING,
            status: reconciling,
            reason: if reconciling { reason::PROGRESSING } else { reason::IDLE },
            message: if reconciling {
                "pool env being applied or rolled out".to_owned()
            } else {
                String::new()
            },
        },
        Wanted {
            type_: type_::STALLED,
            status: conflict.is_some(),
            reason: conflict.as_ref().map_or(reason::NOT_STALLED, |c| c.reason),
            message: conflict.as_ref().map(|c| c.message.clone()).unwrap_or_default(),
        },
        leak_recurring(skipped),
        degraded_condition(db_reachable, full::is_full(input).is_some(), leaking),
        ready_condition(db_reachable && conflict.is_none() && !reconciling, none_selected),
    ]
}

fn database_condition(input: &PlanInput) -> Wanted {
    if let Some(full) = full::is_full(input) {
        return full::condition(full);
    }
    match &input.database {
        Measured::Known(_) => Wanted {
            type_: type_::DATABASE_REACHABLE,
            status: true,
            reason: reason::SAMPLED,
            message: "pg_stat_activity sampled".to_owned(),
        },
        Measured::Unknown(why) => Wanted {
            type_: type_::DATABASE_REACHABLE,
            status: false,
            reason: reason::SAMPLE_FAILED,
            message: why.clone(),
        },
    }
}

/// Why the policy is in conflict (another policy governs a selected workload, another
/// manager owns an env entry), if it is.
struct ConflictState {
    reason: &'static str,
    message: String,
}

fn conflict_state(input: &PlanInput) -> Option<ConflictState> {
    let elsewhere = !input.governed_elsewhere.is_empty();
    if !elsewhere && input.conflicts.is_empty() {
        return None;
    }
    let message: Vec<String> = input
        .governed_elsewhere
        .iter()
        .map(|g| {
            format!(
                "{}/{} is governed by policy {} (the oldest policy selecting it); this policy writes nothing to it",
                g.kind, g.workload, g.policy
            )
        })
        .chain(
            input
                .conflicts
                .iter()
                .map(|c| format!("{} on {}/{} is owned by {}", c.env, c.workload, c.container, c.manager)),
        )
        .collect();
    Some(ConflictState {
        reason: if elsewhere {
            reason::GOVERNED_BY_OTHER_POLICY
        } else {
            reason::FIELD_OWNED_BY_OTHER_MANAGER
        },
        message: summary::join_bounded(&message),
    })
}

/// Rule 5 — the database's connection budget (`budget`): it only reports, it never
/// restarts anything.
fn budget_condition(input: &PlanInput) -> Wanted {
    let (over_budget, message) = connection_budget(input);
    Wanted {
        type_: type_::BUDGET_EXCEEDED,
        status: over_budget,
        reason: if over_budget {
            reason::OVER_MAX_CONNECTIONS
        } else {
            reason::WITHIN_MAX_CONNECTIONS
        },
        message,
    }
}

/// Whether the database-wide budget (or, without one, this policy's own) is
/// exceeded, and the arithmetic in words.
fn connection_budget(input: &PlanInput) -> (bool, String) {
    let own;
    let budget = match input.budget {
        Some(b) => b,
        None => {
            own = budget::build::of_policy(input);
            &own
        }
    };
    let assessment = budget.assess();
    (assessment.exceeded(), budget::message(budget, &assessment))
}

/// A Warning Event on the policy when the budget has just become exceeded: the
/// previous status did not say so.
fn budget_event(input: &PlanInput, conditions: &[crate::policy::Condition]) -> Option<PlannedEvent> {
    let now = conditions
        .iter()
        .find(|c| c.type_ == type_::BUDGET_EXCEEDED && c.is_true())?;
    let before = input
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == type_::BUDGET_EXCEEDED && c.is_true());
    (!before).then(|| PlannedEvent {
        about: About::Policy,
        warning: true,
        reason: EventReason::BudgetExceeded,
        message: now.message.clone(),
    })
}

fn degraded_condition(db_reachable: bool, db_full: bool, leaking: u32) -> Wanted {
    Wanted {
        type_: type_::DEGRADED,
        status: !db_reachable || leaking > 0,
        reason: if db_full {
            reason::DATABASE_FULL
        } else if !db_reachable {
            reason::DATABASE_UNREACHABLE
        } else if leaking > 0 {
            reason::LEAKING_PODS
        } else {
            reason::HEALTHY
        },
        message: if leaking > 0 {
            format!("{leaking} pod(s) above the discrepancy limit")
        } else {
            String::new()
        },
    }
}

fn ready_condition(reconciled: bool, none_selected: bool) -> Wanted {
    let ready = reconciled && !none_selected;
    Wanted {
        type_: type_::READY,
        status: ready,
        reason: if ready {
            reason::RECONCILED
        } else if none_selected {
            reason::NO_WORKLOADS_SELECTED
        } else {
            reason::NOT_RECONCILED
        },
        message: if none_selected {
            "the selector matches no workload in this namespace".to_owned()
        } else {
            String::new()
        },
    }
}

/// The evidence a status row shows: its leaking pods', the worst first, bounded.
fn row_evidence(input: &PlanInput, w: &Workload, vs: &BTreeMap<String, Verdict>) -> Vec<crate::policy::PodEvidence> {
    let mut leaking: Vec<(&String, u32)> = vs
        .iter()
        .filter_map(|(pod, v)| match v {
            Verdict::Leaking { value, .. } => Some((pod, *value)),
            _ => None,
        })
        .collect();
    leaking.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    leaking
        .into_iter()
        .take(evidence::MAX_PODS_PER_ROW)
        .filter_map(|(pod, _)| evidence_of(input, w, pod))
        .collect()
}

/// `LeakRecurring`: True while a workload's leak is left alone because restarting
/// it did not help, with why and the evidence.
fn leak_recurring(skipped: &[Skipped]) -> Wanted {
    let recurring: Vec<String> = skipped
        .iter()
        .filter(|s| s.why == SkipReason::LeakRecurring)
        .map(|s| {
            format!(
                "{}/{}: {}{}",
                s.record.kind,
                s.record.workload,
                s.detail,
                evidence_suffix(s.record.evidence.as_ref(), None)
            )
        })
        .collect();
    Wanted {
        type_: type_::LEAK_RECURRING,
        status: !recurring.is_empty(),
        reason: if recurring.is_empty() {
            reason::NO_RECURRING_LEAK
        } else {
            reason::RESTARTS_DO_NOT_HELP
        },
        message: summary::join_bounded(&recurring),
    }
}

/// How long an unchanged status or row keeps its `observedAt`: a pass that changes
/// nothing writes nothing, except this often, so a reader can tell a current status
/// from one no pass has refreshed (`staleAfter`).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// The `observedAt` of `new`: the previous one when nothing else changed within the
/// heartbeat, else `now`.
fn refreshed<T: Clone + PartialEq + Observed>(
    previous: Option<(&T, Option<Timestamp>)>,
    new: &T,
    now: Timestamp,
) -> Timestamp {
    if let Some((old, Some(at))) = previous
        && now.duration_since(at) < crate::timing::signed(HEARTBEAT)
        && at <= now
        && old.without_observation() == new.without_observation()
    {
        return at;
    }
    now
}

/// A status part with observation times, compared without them.
trait Observed {
    fn without_observation(&self) -> Self;
}

impl Observed for WorkloadStatus {
    fn without_observation(&self) -> Self {
        WorkloadStatus {
            observed_at: None,
            ..self.clone()
        }
    }
}

impl Observed for PoolPolicyStatus {
    fn without_observation(&self) -> Self {
        PoolPolicyStatus {
            observed_at: None,
            stale_after: None,
            ..self.clone()
        }
    }
}

/// The counts of the newest sample at or before `now`, if it is known.
fn newest_counts(samples: &[PodSample], now: Timestamp) -> Option<ConnectionCounts> {
    match samples
        .iter()
        .filter(|s| s.at <= now)
        .max_by_key(|s| s.at)
        .map(|s| &s.database)
    {
        Some(Measured::Known(c)) => Some(c.counts.clone()),
        _ => None,
    }
}

fn add(total: &mut ConnectionCounts, c: &ConnectionCounts) {
    total.total += c.total;
    total.active += c.active;
    total.idle += c.idle;
    total.idle_in_transaction += c.idle_in_transaction;
    total.idle_in_transaction_aborted += c.idle_in_transaction_aborted;
    total.other += c.other;
}
