//! The decision core: a plain function from plain data (policy, workloads,
//! observation history, status, `now`) to a [`Plan`]. No I/O, no clock, no async —
//! so every rule is tested without a cluster or a database. `docs/decisions.md`
//! lists, scenario by scenario, when poolwarden restarts something and when it refuses.

pub mod conditions;
pub mod env;
pub mod evidence;
pub mod input;
pub mod recurrence;
pub mod remediation;
pub mod verdict;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

pub use input::{
    Container, DatabaseLimits, EnvConflict, EnvValue, GovernedElsewhere, Instance, PlanInput, PoolerLimits, Workload,
};
pub use remediation::{Remediation, SkipReason, Skipped};
pub use verdict::Verdict;

use crate::{
    observation::{Measured, PodSample},
    policy::{ConnectionCounts, ExceedingPod, PoolPolicyStatus, RemediationRecord, RemediationState, WorkloadStatus},
};
use conditions::Wanted;
use remediation::{Candidate, WorkloadGate};

/// The env one workload must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvChange {
    pub kind: String,
    pub workload: String,
    /// Per container, the owned entries to set.
    pub containers: BTreeMap<String, BTreeMap<String, EnvValue>>,
}

/// An Event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// `Policy`, or the workload's kind.
    pub object_kind: String,
    pub object_name: String,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What poolwarden should do now.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Env writes to make (empty in dry run and for paused workloads).
    pub env: Vec<EnvChange>,
    /// Env writes that were due but not made, with why.
    pub env_skipped: Vec<(EnvChange, SkipReason)>,
    pub remediations: Vec<Remediation>,
    pub skipped: Vec<Skipped>,
    /// The status to publish; equal to the input status when nothing changed.
    pub status: PoolPolicyStatus,
    pub status_changed: bool,
    pub events: Vec<PlannedEvent>,
    /// Verdict per workload index and instance name, for metrics and `plan` output.
    pub verdicts: Vec<BTreeMap<String, Verdict>>,
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
}

/// Makes the plan.
pub fn plan(input: &PlanInput) -> Plan {
    let policy = input.policy;
    let now = input.now;
    let dry_run = policy.remediation.dry_run;
    let mut events = Vec::new();

    // Rule 1: env.
    let mut env_writes = Vec::new();
    let mut env_skipped = Vec::new();
    let mut gates = Vec::new();
    let mut in_sync = Vec::new();
    let desired = env::desired_env(policy);
    for w in input.workloads {
        let mut containers = env::env_changes(policy, &desired, w, input.conflicts);
        // All or nothing: with one owned entry in another manager's hands, writing the
        // others could leave a pair validation refuses (DB_POOL_MIN above DB_POOL_MAX).
        let in_conflict = input.env_all_or_nothing && input.conflicts.iter().any(|c| c.workload == w.name);
        in_sync.push(containers.is_empty() && !in_conflict);
        if in_conflict {
            containers.clear();
        }
        let paused = input.policy_paused || w.paused;
        gates.push(WorkloadGate {
            paused,
            env_change_pending: !containers.is_empty() && !paused && !dry_run,
        });
        if containers.is_empty() {
            continue;
        }
        let change = EnvChange {
            kind: w.kind.clone(),
            workload: w.name.clone(),
            containers,
        };
        let names: Vec<String> = change.containers.values().flat_map(|c| c.keys().cloned()).collect();
        if paused || dry_run {
            let why = if paused { SkipReason::Paused } else { SkipReason::DryRun };
            events.push(event(
                &w.kind,
                &w.name,
                true,
                "PoolEnvSkipped",
                format!("would set {} ({})", names.join(", "), why.label()),
            ));
            env_skipped.push((change, why));
        } else {
            events.push(event(
                &w.kind,
                &w.name,
                false,
                "PoolEnvUpdated",
                format!("setting {}", names.join(", ")),
            ));
            env_writes.push(change);
        }
    }

    // Rule 2: verdicts.
    let verdicts: Vec<BTreeMap<String, Verdict>> = input
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
        .collect();

    // Rules 3 and 4: remediation, against the record of what was done (records left
    // pending by a controller that died are settled first).
    let history = remediation::settle_records(&input.status.remediations, input.workloads, now);
    let others = remediation::settle_records(input.other_remediations, input.workloads, now);
    let (remediations, skipped) = match &policy.discrepancy {
        None => (Vec::new(), Vec::new()),
        Some(rule) => {
            let candidates = verdicts
                .iter()
                .enumerate()
                .flat_map(|(wi, vs)| {
                    let gates = &gates;
                    vs.iter().filter_map(move |(name, v)| match v {
                        Verdict::Leaking { value, since, values } => Some(Candidate {
                            workload: &input.workloads[wi],
                            gate: gates[wi],
                            instance: name.clone(),
                            value: *value,
                            since: *since,
                            values: values.clone(),
                            evidence: evidence_of(input, &input.workloads[wi], name),
                            since_is_return: run_follows_a_sample_within(&input.workloads[wi], name, *since, rule),
                        }),
                        _ => None,
                    })
                })
                .collect();
            remediation::choose(policy, rule, candidates, &history, &others, input.generation, now)
        }
    };
    for r in &remediations {
        let target = r.record.pod.clone().unwrap_or_else(|| r.record.workload.clone());
        let message = format!(
            "restarting {target}: {}{}",
            r.record.reason,
            evidence_suffix(r.record.evidence.as_ref(), Some(now))
        );
        events.push(event("Policy", "", false, "Remediating", message.clone()));
        events.push(event(&r.record.kind, &r.record.workload, false, "Remediating", message));
    }
    for s in skipped.iter().filter(|s| s.why == SkipReason::LeakRecurring) {
        let message = format!(
            "not restarting {}/{}: {}{}",
            s.record.kind,
            s.record.workload,
            s.detail,
            evidence_suffix(s.record.evidence.as_ref(), None)
        );
        events.push(event("Policy", "", true, "LeakRecurring", message.clone()));
        events.push(event(
            &s.record.kind,
            &s.record.workload,
            true,
            "LeakRecurring",
            message,
        ));
    }
    for s in skipped.iter().filter(|s| s.why != SkipReason::LeakRecurring) {
        let target = s.record.pod.clone().unwrap_or_else(|| s.record.workload.clone());
        let message = format!(
            "would restart {target} ({}): {}; {}",
            s.why.label(),
            s.detail,
            s.record.reason
        );
        events.push(event(
            &s.record.kind,
            &s.record.workload,
            true,
            "RemediationSkipped",
            message,
        ));
    }

    let status = build_status(
        input,
        &history,
        &verdicts,
        &remediations,
        &skipped,
        &env_writes,
        &in_sync,
    );
    let status_changed = &status != input.status;
    Plan {
        env: env_writes,
        env_skipped,
        remediations,
        skipped,
        status,
        status_changed,
        events,
        verdicts,
    }
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
        .any(|s| matches!(verdict::measure_value(rule.measure, s), Measured::Known(v) if v <= limit))
}

/// "; evidence: …" for an Event's note, or nothing.
fn evidence_suffix(e: Option<&crate::policy::PodEvidence>, now: Option<Timestamp>) -> String {
    e.map(|e| format!("; evidence: {}", evidence::words(e, now)))
        .unwrap_or_default()
}

fn event(kind: &str, name: &str, warning: bool, reason: &str, message: String) -> PlannedEvent {
    PlannedEvent {
        object_kind: kind.to_owned(),
        object_name: name.to_owned(),
        warning,
        reason: reason.to_owned(),
        message,
    }
}

fn build_status(
    input: &PlanInput,
    settled: &[RemediationRecord],
    verdicts: &[BTreeMap<String, Verdict>],
    remediations: &[Remediation],
    skipped: &[Skipped],
    env_writes: &[EnvChange],
    in_sync: &[bool],
) -> PoolPolicyStatus {
    let policy = input.policy;
    let now = input.now;
    // History: what was there plus what is done now, pruned to what cooldown and the
    // hourly budget still need, keeping the last record of every workload.
    let mut history = settled.to_vec();
    history.extend(remediations.iter().map(|r| r.record.clone()));
    let keep_for = SignedDuration::try_from(policy.remediation.cooldown)
        .unwrap_or(SignedDuration::MAX)
        .max(SignedDuration::from_hours(1));
    let newest_per_workload = |h: &crate::policy::RemediationRecord| {
        !history
            .iter()
            .any(|o| o.workload == h.workload && o.kind == h.kind && o.at > h.at)
    };
    let kept: Vec<_> = history
        .iter()
        .filter(|h| now.duration_since(h.at) < keep_for || newest_per_workload(h))
        .cloned()
        .collect();

    let mut rows = Vec::new();
    let mut leaking = 0u32;
    for ((w, vs), in_sync) in input.workloads.iter().zip(verdicts).zip(in_sync) {
        let mut counts: Option<ConnectionCounts> = Some(ConnectionCounts::default());
        for i in &w.instances {
            let newest = i.samples.iter().filter(|s| s.at <= now).max_by_key(|s| s.at);
            match newest.map(|s| &s.database) {
                Some(Measured::Known(c)) => {
                    if let Some(total) = counts.as_mut() {
                        add(total, &c.counts);
                    }
                }
                _ => counts = None,
            }
        }
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
        leaking += vs.values().filter(|v| matches!(v, Verdict::Leaking { .. })).count() as u32;
        let unknown: Vec<String> = vs
            .iter()
            .filter_map(|(pod, v)| {
                if let Verdict::Unknown(why) = v {
                    Some(format!("{pod}: {why}"))
                } else {
                    None
                }
            })
            .collect();
        let known_all = unknown.is_empty() && !vs.is_empty();
        rows.push(WorkloadStatus {
            kind: w.kind.clone(),
            name: w.name.clone(),
            env_in_sync: *in_sync,
            pods: w.instances.len() as u32,
            connections: match &w.workload_samples {
                Some(samples) => newest_counts(samples, now),
                None => counts.filter(|_| !w.instances.is_empty()),
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
        });
    }
    rows.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    for row in &mut rows {
        let previous = input
            .status
            .workloads
            .iter()
            .find(|p| p.kind == row.kind && p.name == row.name);
        row.observed_at = Some(refreshed(previous.map(|p| (p, p.observed_at.as_deref())), row, now));
    }

    let db_reachable = matches!(input.database, Measured::Known(_));
    let mut wanted = vec![Wanted {
        type_: "DatabaseReachable",
        status: db_reachable,
        reason: if db_reachable { "Sampled" } else { "SampleFailed" },
        message: match &input.database {
            Measured::Known(_) => "pg_stat_activity sampled".to_owned(),
            Measured::Unknown(why) => why.clone(),
        },
    }];
    let elsewhere = !input.governed_elsewhere.is_empty();
    let conflict = !input.conflicts.is_empty() || elsewhere;
    let conflict_msg: Vec<String> = input
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
    let conflict_reason = if elsewhere {
        "GovernedByOtherPolicy"
    } else if conflict {
        "FieldOwnedByOtherManager"
    } else {
        "NoConflict"
    };
    wanted.push(Wanted {
        type_: "Conflict",
        status: conflict,
        reason: conflict_reason,
        message: conflict_msg.join("; "),
    });
    let (over_budget, budget_msg) = connection_budget(input);
    wanted.push(Wanted {
        type_: "BudgetExceeded",
        status: over_budget,
        reason: if over_budget {
            "OverMaxConnections"
        } else {
            "WithinMaxConnections"
        },
        message: budget_msg,
    });
    let reconciling = !env_writes.is_empty() || input.workloads.iter().any(|w| w.rollout_in_progress);
    wanted.push(Wanted {
        type_: "Reconciling",
        status: reconciling,
        reason: if reconciling { "Progressing" } else { "Idle" },
        message: if reconciling {
            "pool env being applied or rolled out".to_owned()
        } else {
            String::new()
        },
    });
    wanted.push(Wanted {
        type_: "Stalled",
        status: conflict,
        reason: if conflict { conflict_reason } else { "NotStalled" },
        message: conflict_msg.join("; "),
    });
    wanted.push(leak_recurring(skipped));
    let degraded = !db_reachable || leaking > 0;
    wanted.push(Wanted {
        type_: "Degraded",
        status: degraded,
        reason: if !db_reachable {
            "DatabaseUnreachable"
        } else if leaking > 0 {
            "LeakingPods"
        } else {
            "Healthy"
        },
        message: if leaking > 0 {
            format!("{leaking} pod(s) above the discrepancy limit")
        } else {
            String::new()
        },
    });
    let none_selected = input.workloads.is_empty() && !elsewhere;
    let ready = db_reachable && !conflict && !reconciling && !none_selected;
    wanted.push(Wanted {
        type_: "Ready",
        status: ready,
        reason: if ready {
            "Reconciled"
        } else if none_selected {
            "NoWorkloadsSelected"
        } else {
            "NotReconciled"
        },
        message: if none_selected {
            "the selector matches no workload in this namespace".to_owned()
        } else {
            String::new()
        },
    });
    let mut status = PoolPolicyStatus {
        observed_generation: Some(input.generation),
        conditions: conditions::settle(wanted, &input.status.conditions, input.generation, now),
        workload_count: input.workloads.len() as u32,
        leaking_pods: leaking,
        workloads: rows,
        remediations: kept,
        observed_at: None,
        stale_after: None,
    };
    let observed = refreshed(Some((input.status, input.status.observed_at.as_deref())), &status, now);
    status.stale_after = remediation::parse(&observed).map(|t| {
        let stale = HEARTBEAT.saturating_add(policy.interval.saturating_mul(3));
        crate::timing::after(t, stale).to_string()
    });
    status.observed_at = Some(observed);
    status
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
        type_: "LeakRecurring",
        status: !recurring.is_empty(),
        reason: if recurring.is_empty() {
            "NoRecurringLeak"
        } else {
            "RestartsDoNotHelp"
        },
        message: recurring.join("; "),
    }
}

/// How long an unchanged status or row keeps its `observedAt`: a pass that changes
/// nothing writes nothing, except this often, so a reader can tell a current status
/// from one no pass has refreshed (`staleAfter`).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// The `observedAt` of `new`: the previous one when nothing else changed within the
/// heartbeat, else `now`.
fn refreshed<T: Clone + PartialEq + Observed>(previous: Option<(&T, Option<&str>)>, new: &T, now: Timestamp) -> String {
    if let Some((old, Some(at))) = previous
        && let Some(t) = remediation::parse(at)
        && now.duration_since(t) < crate::timing::signed(HEARTBEAT)
        && t <= now
        && old.without_observation() == new.without_observation()
    {
        return at.to_owned();
    }
    now.to_string()
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

/// Rule 5 — Σ (replicas + maxSurge) × maxSize against max_connections minus reserved.
/// It only reports; it never restarts anything.
fn connection_budget(input: &PlanInput) -> (bool, String) {
    let Measured::Known(limits) = &input.database else {
        return (false, "database limits unknown".to_owned());
    };
    let contributors = largest_pools(input);
    let total: u64 = contributors.iter().map(|(n, _)| n).sum();
    let available = u64::from(limits.max_connections.saturating_sub(limits.reserved));
    let largest = || {
        contributors
            .iter()
            .take(3)
            .map(|(n, name)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Behind a pooler the apps' pools open client connections to it, and only the
    // pooler's own server pools reach PostgreSQL.
    if let Some(pooler) = limits.pooler {
        return pooler_budget(&pooler, total, available, largest);
    }
    if total <= available {
        return (false, format!("{total} of {available} connections"));
    }
    (
        true,
        format!(
            "pools may open {total} connections, database allows {available}; largest: {}",
            largest()
        ),
    )
}

/// The connections each workload's pools may open at most (every replica and every
/// surge pod at `pool.maxSize`), the largest first.
fn largest_pools<'a>(input: &PlanInput<'a>) -> Vec<(u64, &'a str)> {
    let max_size = input.policy.pool.max_size;
    let mut contributors: Vec<(u64, &str)> = input
        .workloads
        .iter()
        .map(|w| {
            (
                u64::from(w.replicas + w.max_surge) * u64::from(max_size),
                w.name.as_str(),
            )
        })
        .collect();
    contributors.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    contributors
}

/// The budget behind a pooler: the apps' client connections against its
/// max_client_conn, its server connections against the database's.
fn pooler_budget(pooler: &PoolerLimits, total: u64, available: u64, largest: impl Fn() -> String) -> (bool, String) {
    let clients_over = total > pooler.max_client_conn;
    let servers_over = pooler.server_connections > available;
    if !clients_over && !servers_over {
        return (
            false,
            format!(
                "{total} of {} client connections (max_client_conn, {} pooler instances); the pooler may open {} of {available} server connections",
                pooler.max_client_conn, pooler.instances, pooler.server_connections
            ),
        );
    }
    let mut over = Vec::new();
    if clients_over {
        over.push(format!(
            "pools may open {total} client connections, the pooler accepts {} (max_client_conn over {} instances); largest: {}",
            pooler.max_client_conn,
            pooler.instances,
            largest()
        ));
    }
    if servers_over {
        over.push(format!(
            "the pooler may open {} server connections (default_pool_size × pools × instances), database allows {available}",
            pooler.server_connections
        ));
    }
    (true, over.join("; "))
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

/// `now` minus a whole number of seconds, for tests and callers building histories.
pub fn seconds_before(now: Timestamp, secs: i64) -> Timestamp {
    now - SignedDuration::from_secs(secs)
}
