//! The Prometheus metrics (`poolwarden_*`, OpenMetrics text at `/metrics`).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::policy::{ConnectionCounts, PoolPolicyStatus, WorkloadStatus};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub namespace: String,
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub policy: String,
    pub kind: String,
    pub workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub namespace: String,
    pub policy: String,
    pub kind: String,
    pub workload: String,
    /// One of five fixed states: static, as there are five series per workload.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyStateLabels {
    pub namespace: String,
    pub policy: String,
    /// A backend state (`poolwarden_policy_connections`) or a workload's standing
    /// against the limit (`poolwarden_policy_workloads`): a handful of fixed values.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub namespace: String,
    pub policy: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub namespace: String,
    pub policy: String,
    pub action: String,
    pub measure: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub policy: String,
    /// The condition's type (`Ready`, `DatabaseReachable`, `Conflict`, ...).
    pub condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    /// The database's identity, `user@host:port/db` (see
    /// [`crate::observe::conninfo::DatabaseIdentity`]), never the connection string.
    pub database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseErrorLabels {
    pub database: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub namespace: String,
    pub policy: String,
    pub result: String,
}

/// Few buckets, a decade apart: a histogram is one series per bucket for every policy
/// (or database), so twelve buckets were most of `/metrics` at a thousand policies. A
/// pass or a sample is judged by its order of magnitude (the pass deadline is seconds,
/// a sample's statement timeout 5 s); `histogram_quantile` interpolates within one.
fn seconds_buckets() -> Histogram {
    Histogram::new([0.01, 0.1, 1.0, 10.0])
}

/// Every metric poolwarden exports.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<StateLabels, Gauge>,
    pub discrepancy: Family<WorkloadLabels, Gauge>,
    pub discrepancy_limit: Family<WorkloadLabels, Gauge>,
    pub env_in_sync: Family<WorkloadLabels, Gauge>,
    pub restarts: Family<RestartLabels, Counter>,
    pub skipped_remediations: Family<ReasonLabels, Counter>,
    pub env_writes: Family<ResultLabels, Counter>,
    pub reconcile_duration: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub database_sample_duration: Family<DatabaseLabels, Histogram, fn() -> Histogram>,
    pub database_sample_errors: Family<DatabaseErrorLabels, Counter>,
    pub scrape_errors: Family<PolicyLabels, Counter>,
    pub leader: Gauge,
    /// 1 while a policy's condition is True, 0 while False: what alerts key on.
    pub policy_condition: Family<ConditionLabels, Gauge>,
    pub workload_pods: Family<WorkloadLabels, Gauge>,
    /// Per policy, every workload together: what stays when a workload has no series.
    pub policy_connections: Family<PolicyStateLabels, Gauge>,
    pub policy_workloads: Family<PolicyStateLabels, Gauge>,
    pub policy_workloads_env_out_of_sync: Family<PolicyLabels, Gauge>,
    pub policy_pods: Family<PolicyLabels, Gauge>,
    /// The workloads each policy has per-workload series for, so that a workload
    /// leaving view (or the policy) takes its series with it.
    in_view: Mutex<HashMap<PolicyLabels, HashSet<(String, String)>>>,
    pub pool_max_size: Family<PolicyLabels, Gauge>,
    /// The policy's database as of its last sample (series removed while unknown).
    pub database_backends: Family<PolicyLabels, Gauge>,
    pub database_connection_limit: Family<PolicyLabels, Gauge>,
    /// 1 while the policy's database refuses poolwarden's connection for want of a
    /// slot (53300/53400), 0 otherwise.
    pub database_full: Family<PolicyLabels, Gauge>,
    /// `spec.sizing`'s recommendations.
    pub sizing: super::sizing::SizingMetrics,
    /// The database-wide connection budget under its tightest limit: the
    /// connections the pools counted there may open, and what the limit allows.
    pub budget_need: Family<PolicyLabels, Gauge>,
    pub budget_have: Family<PolicyLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("poolwarden");
        let m = Metrics {
            connections: Family::default(),
            discrepancy: Family::default(),
            discrepancy_limit: Family::default(),
            env_in_sync: Family::default(),
            restarts: Family::default(),
            skipped_remediations: Family::default(),
            env_writes: Family::default(),
            reconcile_duration: Family::new_with_constructor(seconds_buckets),
            reconcile_errors: Family::default(),
            database_sample_duration: Family::new_with_constructor(seconds_buckets),
            database_sample_errors: Family::default(),
            scrape_errors: Family::default(),
            leader: Gauge::default(),
            policy_condition: Family::default(),
            workload_pods: Family::default(),
            policy_connections: Family::default(),
            policy_workloads: Family::default(),
            policy_workloads_env_out_of_sync: Family::default(),
            policy_pods: Family::default(),
            in_view: Mutex::default(),
            pool_max_size: Family::default(),
            database_backends: Family::default(),
            database_connection_limit: Family::default(),
            database_full: Family::default(),
            sizing: Default::default(),
            budget_need: Family::default(),
            budget_have: Family::default(),
            registry: Registry::default(),
        };
        register_workload_metrics(&mut registry, &m);
        register_pass_metrics(&mut registry, &m);
        register_database_metrics(&mut registry, &m);
        m.sizing.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A database sample's duration, and its error by reason, when the call took one
    /// (a sample served from the shared cache is not counted again).
    pub fn record_sample(&self, sampled: &crate::observe::shared::Sampled) {
        let Some(took) = sampled.took else { return };
        let db = DatabaseLabels {
            database: sampled.database.clone(),
        };
        self.database_sample_duration
            .get_or_create(&db)
            .observe(took.as_secs_f64());
        if let Err(e) = &sampled.result {
            self.database_sample_errors
                .get_or_create(&DatabaseErrorLabels {
                    database: db.database,
                    reason: e.metric_label().to_owned(),
                })
                .inc();
        }
    }

    /// The metrics of one policy (`namespace` is `fly:<app>` for a Fly policy).
    pub fn policy<'a>(&'a self, namespace: &str, policy: &str) -> PolicyMetrics<'a> {
        PolicyMetrics {
            metrics: self,
            labels: PolicyLabels {
                namespace: namespace.to_owned(),
                policy: policy.to_owned(),
            },
        }
    }
}

/// The gauges of each policy and workload: what dashboards and alerts read.
fn register_workload_metrics(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "connections",
        "Live backends in pg_stat_activity attributed to a workload, by state",
        m.connections.clone(),
    );
    registry.register(
        "discrepancy",
        "The worst pod's value of the policy's discrepancy measure",
        m.discrepancy.clone(),
    );
    registry.register(
        "discrepancy_limit",
        "The policy's per-pod discrepancy limit",
        m.discrepancy_limit.clone(),
    );
    registry.register(
        "env_in_sync",
        "1 when the workload's pool env equals the policy",
        m.env_in_sync.clone(),
    );
    registry.register(
        "policy_condition",
        "1 while the policy's condition is True, 0 while it is False",
        m.policy_condition.clone(),
    );
    registry.register(
        "workload_pods",
        "Pods of the workload the policy measures",
        m.workload_pods.clone(),
    );
    register_policy_totals(registry, m);
}

/// Every workload of a policy together: the series that exist whatever the number
/// of workloads (the per-workload ones exist only for the workloads in view).
fn register_policy_totals(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "policy_connections",
        "Live backends in pg_stat_activity attributed to the policy's workloads, by state",
        m.policy_connections.clone(),
    );
    registry.register(
        "policy_workloads",
        "The policy's workloads by their worst pod against the limit (within_limit, exceeding, unknown)",
        m.policy_workloads.clone(),
    );
    registry.register(
        "policy_workloads_env_out_of_sync",
        "The policy's workloads whose pool env differs from the policy",
        m.policy_workloads_env_out_of_sync.clone(),
    );
    registry.register("policy_pods", "Pods of the policy's workloads", m.policy_pods.clone());
}

/// What passes did: writes, restarts, skips, errors, durations.
fn register_pass_metrics(registry: &mut Registry, m: &Metrics) {
    registry.register("restarts", "Restarts poolwarden carried out", m.restarts.clone());
    registry.register(
        "remediations_skipped",
        "Remediations that were due but not carried out, by reason",
        m.skipped_remediations.clone(),
    );
    registry.register(
        "env_writes",
        "Server-side applies of pool env, by result",
        m.env_writes.clone(),
    );
    registry.register(
        "reconcile_duration_seconds",
        "Time of one reconcile pass of a policy",
        m.reconcile_duration.clone(),
    );
    registry.register(
        "reconcile_errors",
        "Reconcile passes that failed, by reason",
        m.reconcile_errors.clone(),
    );
    registry.register(
        "pool_stats_scrape_errors",
        "Pool-stats endpoint scrapes that failed",
        m.scrape_errors.clone(),
    );
    registry.register(
        "leader",
        "1 while this replica holds the leader lease",
        m.leader.clone(),
    );
}

/// Each database's samples and limits.
fn register_database_metrics(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "database_sample_duration_seconds",
        "Time of one pg_stat_activity sample",
        m.database_sample_duration.clone(),
    );
    registry.register(
        "database_sample_errors",
        "Samples of a database that failed, by reason",
        m.database_sample_errors.clone(),
    );
    registry.register(
        "pool_max_size",
        "The policy's pool maxSize (per pod)",
        m.pool_max_size.clone(),
    );
    registry.register(
        "database_backends",
        "Client backends in the policy's database at its last sample, poolwarden's own excluded",
        m.database_backends.clone(),
    );
    registry.register(
        "database_connection_limit",
        "max_connections minus the reserved connections of the policy's database",
        m.database_connection_limit.clone(),
    );
    registry.register(
        "policy_database_full",
        "1 while the policy's database refuses poolwarden's connection because it is full (SQLSTATE 53300 or 53400)",
        m.database_full.clone(),
    );
    registry.register(
        "database_budget_need_connections",
        "Connections every pool on the policy's database may open (all policies, HPA maxReplicas, surge, terminating pods, processes per pod, unattributed backends), under the tightest limit",
        m.budget_need.clone(),
    );
    registry.register(
        "database_budget_limit_connections",
        "What the tightest limit on the policy's database allows those connections (max_connections - reserved, datconnlimit, rolconnlimit, the pooler's max_client_conn)",
        m.budget_have.clone(),
    );
}

/// One policy's metrics, with a method per thing a pass records.
pub struct PolicyMetrics<'a> {
    metrics: &'a Metrics,
    labels: PolicyLabels,
}

impl<'a> PolicyMetrics<'a> {
    pub(super) fn metrics(&self) -> &'a Metrics {
        self.metrics
    }

    pub(super) fn labels(&self) -> &PolicyLabels {
        &self.labels
    }

    pub(super) fn workload_labels(&self, kind: &str, workload: &str) -> WorkloadLabels {
        self.workload(kind, workload)
    }

    fn reason(&self, reason: &str) -> ReasonLabels {
        ReasonLabels {
            namespace: self.labels.namespace.clone(),
            policy: self.labels.policy.clone(),
            reason: reason.to_owned(),
        }
    }

    fn workload(&self, kind: &str, workload: &str) -> WorkloadLabels {
        WorkloadLabels {
            namespace: self.labels.namespace.clone(),
            policy: self.labels.policy.clone(),
            kind: kind.to_owned(),
            workload: workload.to_owned(),
        }
    }

    /// How long a pass took.
    pub fn pass_took(&self, seconds: f64) {
        self.metrics
            .reconcile_duration
            .get_or_create(&self.labels)
            .observe(seconds);
    }

    /// A pass that failed, by its error's label.
    pub fn pass_failed(&self, reason: &str) {
        self.metrics.reconcile_errors.get_or_create(&self.reason(reason)).inc();
    }

    /// Pool-stats scrapes that failed this pass.
    pub fn scrape_errors(&self, errors: u64) {
        if errors > 0 {
            self.metrics.scrape_errors.get_or_create(&self.labels).inc_by(errors);
        }
    }

    /// An env write, by result (`applied`, `conflict`, `error`).
    pub fn env_write(&self, result: &str) {
        let l = ResultLabels {
            namespace: self.labels.namespace.clone(),
            policy: self.labels.policy.clone(),
            result: result.to_owned(),
        };
        self.metrics.env_writes.get_or_create(&l).inc();
    }

    /// A restart carried out.
    pub fn restarted(&self, action: &str, measure: &str) {
        let l = RestartLabels {
            namespace: self.labels.namespace.clone(),
            policy: self.labels.policy.clone(),
            action: action.to_owned(),
            measure: measure.to_owned(),
        };
        self.metrics.restarts.get_or_create(&l).inc();
    }

    /// A remediation not carried out, by reason.
    pub fn remediation_skipped(&self, reason: &str) {
        self.metrics
            .skipped_remediations
            .get_or_create(&self.reason(reason))
            .inc();
    }

    /// The database budget's need and limit under its tightest known limit; no
    /// budget, or no known limit, removes the series: unknown is not zero.
    pub fn record_budget(&self, budget: Option<&crate::decide::budget::Budget>) {
        let m = self.metrics;
        let p = &self.labels;
        let assessment = budget.map(crate::decide::budget::Budget::assess);
        match assessment.as_ref().and_then(|a| a.tightest()) {
            Some(check) => {
                m.budget_need.get_or_create(p).set(clamp(check.need));
                if let crate::observation::Measured::Known(have) = check.limit.allows {
                    m.budget_have.get_or_create(p).set(clamp(have));
                }
            }
            None => {
                m.budget_need.remove(p);
                m.budget_have.remove(p);
            }
        }
    }

    /// The policy's pool maxSize and its database's backends and limit; an unknown
    /// database removes its series: unknown is not zero.
    pub fn record_database(
        &self,
        pool_max_size: u32,
        database: Option<&crate::observe::postgres::Snapshot>,
        full: bool,
    ) {
        let m = self.metrics;
        let p = &self.labels;
        m.pool_max_size.get_or_create(p).set(i64::from(pool_max_size));
        m.database_full.get_or_create(p).set(i64::from(full));
        match database {
            Some(s) => {
                m.database_backends.get_or_create(p).set(s.backends.len() as i64);
                m.database_connection_limit
                    .get_or_create(p)
                    .set(i64::from(s.max_connections.saturating_sub(s.reserved)));
            }
            None => {
                m.database_backends.remove(p);
                m.database_connection_limit.remove(p);
            }
        }
    }

    /// The gauges of one pass: the status's conditions, the policy's totals over
    /// `rows` (every selected workload's, not only those the bounded status shows),
    /// and the per-workload series of the workloads in view (see [`in_view`]); a
    /// workload that left view loses its series. An unknown value removes its series:
    /// unknown is not zero.
    pub fn record_plan(&self, status: &PoolPolicyStatus, rows: &[WorkloadStatus]) {
        for c in &status.conditions {
            let l = ConditionLabels {
                namespace: self.labels.namespace.clone(),
                policy: self.labels.policy.clone(),
                condition: c.type_.clone(),
            };
            self.metrics
                .policy_condition
                .get_or_create(&l)
                .set(i64::from(c.is_true()));
        }
        self.record_totals(rows);
        let shown = in_view(rows);
        let keys: HashSet<(String, String)> = shown.iter().map(|r| (r.kind.clone(), r.name.clone())).collect();
        let left: Vec<(String, String)> = {
            let mut views = self.metrics.in_view.lock().unwrap_or_else(|e| e.into_inner());
            let before = views.insert(self.labels.clone(), keys).unwrap_or_default();
            let now = &views[&self.labels];
            before.into_iter().filter(|k| !now.contains(k)).collect()
        };
        for (kind, name) in left {
            self.remove_workload(&self.workload(&kind, &name));
        }
        for row in shown {
            self.record_row(row);
        }
    }

    /// Every workload together: connections by state (absent while no workload's
    /// are known), workloads by standing against the limit, out of sync, pods.
    fn record_totals(&self, rows: &[WorkloadStatus]) {
        let m = self.metrics;
        let labels = |state| PolicyStateLabels {
            namespace: self.labels.namespace.clone(),
            policy: self.labels.policy.clone(),
            state,
        };
        // None while no workload's connections are known.
        let mut sums: Option<[i64; 5]> = None;
        for c in rows.iter().filter_map(|r| r.connections.as_ref()) {
            let sums = sums.get_or_insert_default();
            for (sum, n) in sums.iter_mut().zip(by_state(c)) {
                *sum += i64::from(n);
            }
        }
        for (i, state) in STATES.into_iter().enumerate() {
            match sums {
                Some(sums) => {
                    m.policy_connections.get_or_create(&labels(state)).set(sums[i]);
                }
                None => {
                    m.policy_connections.remove(&labels(state));
                }
            }
        }
        for state in STANDINGS {
            let n = rows.iter().filter(|r| standing(r) == state).count() as i64;
            m.policy_workloads.get_or_create(&labels(state)).set(n);
        }
        let out_of_sync = rows.iter().filter(|r| !r.env_in_sync).count() as i64;
        m.policy_workloads_env_out_of_sync
            .get_or_create(&self.labels)
            .set(out_of_sync);
        let pods: i64 = rows.iter().map(|r| i64::from(r.pods)).sum();
        m.policy_pods.get_or_create(&self.labels).set(pods);
    }

    fn record_row(&self, row: &WorkloadStatus) {
        let m = self.metrics;
        let w = self.workload(&row.kind, &row.name);
        m.workload_pods.get_or_create(&w).set(i64::from(row.pods));
        m.env_in_sync.get_or_create(&w).set(i64::from(row.env_in_sync));
        match row.limit {
            Some(limit) => {
                m.discrepancy_limit.get_or_create(&w).set(i64::from(limit));
            }
            None => {
                m.discrepancy_limit.remove(&w);
            }
        }
        match row.worst_value {
            Some(v) => {
                m.discrepancy.get_or_create(&w).set(i64::from(v));
            }
            // Unknown is not zero: the series goes away instead.
            None => {
                m.discrepancy.remove(&w);
            }
        }
        let counts = row.connections.as_ref().map(by_state);
        for (i, state) in STATES.into_iter().enumerate() {
            let l = state_labels(&w, state);
            match counts.map(|c| c[i]) {
                Some(v) => {
                    m.connections.get_or_create(&l).set(i64::from(v));
                }
                None => {
                    m.connections.remove(&l);
                }
            }
        }
    }

    /// Every per-workload series of a workload that left view.
    fn remove_workload(&self, w: &WorkloadLabels) {
        let m = self.metrics;
        m.workload_pods.remove(w);
        m.env_in_sync.remove(w);
        m.discrepancy_limit.remove(w);
        m.discrepancy.remove(w);
        for state in STATES {
            m.connections.remove(&state_labels(w, state));
        }
    }
}

/// The most workloads of one policy with per-workload series, so that `/metrics`
/// stays small whatever a policy selects (a thousand series per policy at most).
pub const WORKLOADS_IN_VIEW: usize = 100;

/// The workloads that get per-workload series: those whose worst pod has any
/// discrepancy (the measure above zero) or whose env is out of sync — the ones a
/// dashboard or an alert has something to say about — at most
/// [`WORKLOADS_IN_VIEW`], the furthest above their limit first. A healthy workload is
/// counted in the policy's totals only.
pub fn in_view(rows: &[WorkloadStatus]) -> Vec<&WorkloadStatus> {
    let mut shown: Vec<&WorkloadStatus> = rows
        .iter()
        .filter(|r| !r.env_in_sync || r.worst_value.is_some_and(|v| v > 0))
        .collect();
    let over = |r: &WorkloadStatus| {
        let value = i64::from(r.worst_value.unwrap_or(0));
        value - i64::from(r.limit.unwrap_or(0))
    };
    shown.sort_by(|a, b| {
        over(b)
            .cmp(&over(a))
            .then_with(|| a.env_in_sync.cmp(&b.env_in_sync))
            .then_with(|| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)))
    });
    shown.truncate(WORKLOADS_IN_VIEW);
    shown
}

/// The values of `poolwarden_policy_workloads`'s `state`.
const STANDINGS: [&str; 3] = ["within_limit", "exceeding", "unknown"];

/// A workload's worst pod against the limit, one of [`STANDINGS`].
fn standing(row: &WorkloadStatus) -> &'static str {
    match (row.worst_value, row.limit) {
        (Some(v), Some(limit)) if v > limit => "exceeding",
        (Some(_), _) => "within_limit",
        (None, _) => "unknown",
    }
}

/// The counts in the order of [`STATES`].
fn by_state(c: &ConnectionCounts) -> [u32; 5] {
    [
        c.active,
        c.idle,
        c.idle_in_transaction,
        c.idle_in_transaction_aborted,
        c.other,
    ]
}

fn state_labels(w: &WorkloadLabels, state: &'static str) -> StateLabels {
    StateLabels {
        namespace: w.namespace.clone(),
        policy: w.policy.clone(),
        kind: w.kind.clone(),
        workload: w.workload.clone(),
        state,
    }
}

/// The backend states `poolwarden_connections` is labelled with.
const STATES: [&str; 5] = [
    "active",
    "idle",
    "idle_in_transaction",
    "idle_in_transaction_aborted",
    "other",
];

/// A count as a gauge's value.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_prefix_and_labels() {
        let m = Metrics::new();
        m.restarts
            .get_or_create(&RestartLabels {
                namespace: "prod".into(),
                policy: "sportsbook".into(),
                action: "RestartPod".into(),
                measure: "LifetimeOverrun".into(),
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"poolwarden_restarts_total{namespace="prod",policy="sportsbook",action="RestartPod",measure="LifetimeOverrun"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    fn row(name: &str, worst: Option<u32>, env_in_sync: bool) -> WorkloadStatus {
        WorkloadStatus {
            kind: "Deployment".into(),
            name: name.into(),
            env_in_sync,
            pods: 3,
            connections: worst.map(|w| ConnectionCounts {
                total: 2 + w,
                idle: 2 + w,
                ..Default::default()
            }),
            limit: Some(2),
            worst_value: worst,
            ..Default::default()
        }
    }

    fn lines_of(text: &str, workload: &str) -> usize {
        let label = format!("workload=\"{workload}\"");
        text.lines().filter(|l| l.contains(&label)).count()
    }

    #[test]
    fn a_healthy_workload_is_in_the_totals_only_and_leaves_view_with_its_series() {
        let m = Metrics::new();
        let p = m.policy("prod", "sportsbook");
        p.record_plan(
            &PoolPolicyStatus::default(),
            &[
                row("calm", Some(0), true),
                row("leaky", Some(5), true),
                row("drifted", Some(0), false),
            ],
        );
        let text = m.render();
        assert_eq!(lines_of(&text, "calm"), 0, "{text}");
        // pods, env, limit, discrepancy and five states.
        assert_eq!(lines_of(&text, "leaky"), 9, "{text}");
        assert_eq!(lines_of(&text, "drifted"), 9, "{text}");
        for line in [
            r#"poolwarden_policy_connections{namespace="prod",policy="sportsbook",state="idle"} 11"#,
            r#"poolwarden_policy_workloads{namespace="prod",policy="sportsbook",state="exceeding"} 1"#,
            r#"poolwarden_policy_workloads{namespace="prod",policy="sportsbook",state="within_limit"} 2"#,
            r#"poolwarden_policy_workloads_env_out_of_sync{namespace="prod",policy="sportsbook"} 1"#,
            r#"poolwarden_policy_pods{namespace="prod",policy="sportsbook"} 9"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // The leak is restarted away, the env synced, a workload deleted.
        p.record_plan(
            &PoolPolicyStatus::default(),
            &[row("calm", Some(0), true), row("leaky", Some(0), true)],
        );
        let text = m.render();
        assert_eq!(lines_of(&text, "leaky") + lines_of(&text, "drifted"), 0, "{text}");
        assert!(
            text.contains(r#"poolwarden_policy_workloads{namespace="prod",policy="sportsbook",state="exceeding"} 0"#)
        );
    }

    #[test]
    fn an_unknown_database_is_no_connections_and_no_workload_standing() {
        let m = Metrics::new();
        let p = m.policy("prod", "sportsbook");
        p.record_plan(&PoolPolicyStatus::default(), &[row("leaky", Some(5), true)]);
        p.record_plan(&PoolPolicyStatus::default(), &[row("leaky", None, true)]);
        let text = m.render();
        assert!(!text.contains("poolwarden_policy_connections{"), "{text}");
        assert!(!text.contains("poolwarden_discrepancy{"), "{text}");
        assert!(
            text.contains(r#"poolwarden_policy_workloads{namespace="prod",policy="sportsbook",state="unknown"} 1"#)
        );
    }

    #[test]
    fn at_most_a_hundred_workloads_per_policy_are_in_view_the_furthest_above_first() {
        let rows: Vec<WorkloadStatus> = (0..250)
            .map(|i| row(&format!("w{i:03}"), Some(i % 50 + 1), true))
            .collect();
        let shown = in_view(&rows);
        assert_eq!(shown.len(), WORKLOADS_IN_VIEW);
        // Each value 1..=50 five times: the hundred shown are the values 31..=50.
        assert!(shown.iter().all(|r| r.worst_value >= Some(31)), "the worst first");
        let m = Metrics::new();
        m.policy("prod", "big").record_plan(&PoolPolicyStatus::default(), &rows);
        let text = m.render();
        let discrepancies = text
            .lines()
            .filter(|l| l.starts_with("poolwarden_discrepancy{"))
            .count();
        assert_eq!(discrepancies, WORKLOADS_IN_VIEW);
    }
}
