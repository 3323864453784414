//! The PoolPolicy's status: what poolwarden last observed and did, bounded so that it
//! stays small whatever a policy selects (see `decide::summary`).

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Measure, RemediationAction, recorded_time};

/// What poolwarden last observed and did.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolPolicyStatus {
    /// The policy generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Degraded, DatabaseReachable, Conflict, BudgetExceeded, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Number of workloads the selector matches.
    #[serde(default)]
    pub workload_count: u32,

    /// Number of pods currently above the discrepancy limit (with User attribution,
    /// workloads).
    #[serde(default)]
    pub leaking_pods: u32,

    /// Pods of the selected workloads.
    #[serde(default)]
    pub pod_count: u32,

    /// Selected workloads whose pool env differs from the policy.
    #[serde(default)]
    pub out_of_sync_count: u32,

    /// Selected workloads with a pod (with User attribution, the workload) above the
    /// discrepancy limit now, sustained or not.
    #[serde(default)]
    pub exceeding_count: u32,

    /// Selected workloads whose measure is unknown (database or stats unreadable, pods
    /// that cannot be told apart yet): never counted as within the limit.
    #[serde(default)]
    pub unknown_count: u32,

    /// This policy's restarts recorded within the last hour (the hourly budget's count).
    #[serde(default)]
    pub restarts_last_hour: u32,

    /// The workloads with the most to say, at most 20 and within the status's size
    /// bound, chosen by severity (above the limit, unknown, env out of sync, nearest
    /// the limit) and listed by kind and name. workloadCount is the total; the others
    /// are in the metrics and Events, and `kubectl poolwarden plan` lists every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadStatus>,

    /// True when workloads lists fewer rows than workloadCount.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workloads_truncated: bool,

    /// Remediations carried out, newest last, kept long enough to enforce cooldowns,
    /// the hourly budget and the recurrence guard across controller restarts. Within
    /// the status's size bound: older records lose their evidence first, and a restart
    /// whose record would not fit is not made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediations: Vec<RemediationRecord>,

    /// When this status was last known to be current (RFC 3339): refreshed when it
    /// changes and at least every 10 minutes while passes run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "recorded_time::deserialize_option"
    )]
    #[schemars(with = "Option<String>")]
    pub observed_at: Option<jiff::Timestamp>,

    /// After this time (RFC 3339) the status is stale: no pass has refreshed it for
    /// 10 minutes plus three intervals, so its figures no longer describe the world.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "recorded_time::deserialize_option"
    )]
    #[schemars(with = "Option<String>")]
    pub stale_after: Option<jiff::Timestamp>,
}

impl PoolPolicyStatus {
    /// Sets each workload row's `lastRemediation` to its newest record, after the
    /// records changed (a pass's outcomes, or a merge with another writer's).
    pub fn refresh_last_remediations(&mut self) {
        for row in &mut self.workloads {
            row.last_remediation = self
                .remediations
                .iter()
                .filter(|h| h.workload == row.name && h.kind == row.kind)
                .max_by(|a, b| a.at.cmp(&b.at))
                .cloned();
        }
    }
}

/// The state of one selected workload.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Deployment or StatefulSet.
    pub kind: String,
    /// Workload name.
    pub name: String,
    /// Whether every selected container carries the policy's pool env.
    pub env_in_sync: bool,
    /// Pods observed.
    pub pods: u32,
    /// Connections the database attributes to the workload, by state; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionCounts>,
    /// The measure compared with the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<Measure>,
    /// The limit: per pod, or with User attribution (which judges the workload as a
    /// whole) discrepancy.max times the workload's ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Largest current value of the measure over the workload's pods (with User
    /// attribution, the workload's value); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_value: Option<u32>,
    /// Pods above the limit now, with since when (with User attribution, the workload
    /// itself, under its own name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceeding: Vec<ExceedingPod>,
    /// The evidence of each leaking pod (at most 3 pods, the worst first): what its
    /// overrunning backends are doing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<PodEvidence>,
    /// The last remediation of this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_remediation: Option<RemediationRecord>,
    /// A short human-readable explanation (why unknown, why skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The recommended pool size (spec.sizing Recommend or Auto), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<super::sizing::SizingStatus>,
    /// When this row was observed (RFC 3339): refreshed when the row changes and at
    /// least every 10 minutes; older than the status's staleAfter, it is stale.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "recorded_time::deserialize_option"
    )]
    #[schemars(with = "Option<String>")]
    pub observed_at: Option<jiff::Timestamp>,
}

/// Connections by `pg_stat_activity.state`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCounts {
    /// All backends.
    pub total: u32,
    /// Running a query.
    pub active: u32,
    /// Waiting for a command.
    pub idle: u32,
    /// Inside a transaction, waiting.
    pub idle_in_transaction: u32,
    /// Inside a failed transaction, waiting.
    pub idle_in_transaction_aborted: u32,
    /// Any other state (fastpath function call, disabled).
    pub other: u32,
}

/// A pod (or, with User attribution, a whole workload) above the limit.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExceedingPod {
    /// Pod name; the workload's name with User attribution.
    pub pod: String,
    /// Current value of the measure.
    pub value: u32,
    /// Start of the unbroken run of samples above the limit (RFC 3339).
    #[serde(deserialize_with = "recorded_time::deserialize")]
    #[schemars(with = "String")]
    pub since: jiff::Timestamp,
}

/// Where a remediation stands (docs/decisions.md says what each state means for a
/// controller that finds it).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RemediationState {
    /// Recorded before it was attempted, not confirmed yet. Counts against the budget
    /// and the cooldown, and blocks its workload, until it is confirmed or expires
    /// (2 minutes, longer than any pass).
    Pending,
    /// The API server accepted the eviction or the rollout restart.
    #[default]
    Done,
    /// Pending past its expiry while its pod was still the one it named: the
    /// remediation never happened (its controller died first). Counts for nothing.
    Abandoned,
}

/// One remediation, with its evidence.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRecord {
    /// When it was decided and recorded (RFC 3339).
    #[serde(deserialize_with = "recorded_time::deserialize")]
    #[schemars(with = "String")]
    pub at: jiff::Timestamp,
    /// Pending (recorded, not yet confirmed), Done or Abandoned.
    #[serde(default)]
    pub state: RemediationState,
    /// RestartPod or RolloutRestart.
    pub action: RemediationAction,
    /// Workload kind.
    pub kind: String,
    /// Workload name.
    pub workload: String,
    /// The restarted pod (RestartPod only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Why, in words, with the numbers.
    pub reason: String,
    /// The measure that judged the pod leaking.
    pub measure: Measure,
    /// Its values over the window, oldest first.
    pub values: Vec<u32>,
    /// The limit they exceeded.
    pub limit: u32,
    /// Since when they exceeded it (RFC 3339).
    #[serde(deserialize_with = "recorded_time::deserialize")]
    #[schemars(with = "String")]
    pub since: jiff::Timestamp,
    /// What the pod's overrunning backends were doing when it was restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<PodEvidence>,
    /// The workload's pod template (a digest, without restart annotations) when it was
    /// restarted: the recurrence guard counts only restarts of one release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The policy generation it was decided under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// For a restart of a leak that came back: how long after each earlier restart in
    /// the row (oldest first) the leak came back, in seconds. Empty for a first restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returned_after_seconds: Vec<u64>,
}

/// What one leaking pod's overrunning backends are doing, grouped by state and
/// normalised last statement. Bounded: at most 5 groups, statements cut at 200
/// characters, at most 8 tags per group.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodEvidence {
    /// The pod (with User attribution, the workload).
    pub pod: String,
    /// Overrunning backends, all groups together.
    pub backends: u32,
    /// The largest groups, largest first.
    pub groups: Vec<EvidenceGroup>,
    /// Backends in groups left out by the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backends_not_shown: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Backends of one pod in one state with one normalised last statement.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceGroup {
    /// Backends in the group.
    pub count: u32,
    /// `pg_stat_activity.state`: `idle in transaction` is a borrowed connection never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The last statement, literals removed (spec.evidence.queries Normalized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// A stable hash of the normalised statement (Normalized and Fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `pg_stat_activity.query_id`, to look up in pg_stat_statements (PostgreSQL 14+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<i64>,
    /// sqlcommenter tags of the statement (route, controller, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `wait_event_type:wait_event` of the group's oldest backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_event: Option<String>,
    /// The oldest backend's start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_backend_start: Option<String>,
    /// The oldest open transaction's start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_transaction_start: Option<String>,
    /// Since when the backend longest in this state has been in it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_state_since: Option<String>,
    /// Every backend of the group was opened within this many seconds of the pod's
    /// start (the pool opened them at start-up when small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_within_seconds_of_start: Option<u64>,
    /// The first and the last backend were opened this many seconds apart (one per
    /// health check spreads them out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_over_seconds: Option<u64>,
}
