//! The Prometheus metrics (`poolwarden_*`, OpenMetrics text at `/metrics`).

use crate::policy::{PoolPolicyStatus, WorkloadStatus};
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
    pub pool_max_size: Family<PolicyLabels, Gauge>,
    /// The policy's database as of its last sample (series removed while unknown).
    pub database_backends: Family<PolicyLabels, Gauge>,
    pub database_connection_limit: Family<PolicyLabels, Gauge>,
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
            pool_max_size: Family::default(),
            database_backends: Family::default(),
            database_connection_limit: Family::default(),
            registry: Registry::default(),
        };
        register_workload_metrics(&mut registry, &m);
        register_pass_metrics(&mut registry, &m);
        register_database_metrics(&mut registry, &m);
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
}

/// One policy's metrics, with a method per thing a pass records.
pub struct PolicyMetrics<'a> {
    metrics: &'a Metrics,
    labels: PolicyLabels,
}

impl PolicyMetrics<'_> {
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

    /// The policy's pool maxSize and its database's backends and limit; an unknown
    /// database removes its series: unknown is not zero.
    pub fn record_database(&self, pool_max_size: u32, database: Option<&crate::observe::postgres::Snapshot>) {
        let m = self.metrics;
        let p = &self.labels;
        m.pool_max_size.get_or_create(p).set(i64::from(pool_max_size));
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

    /// The gauges of one pass's status: conditions, then per workload env in sync,
    /// discrepancy and limit, connections by state. An unknown value removes its
    /// series: unknown is not zero.
    pub fn record_plan(&self, status: &PoolPolicyStatus) {
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
        for row in &status.workloads {
            self.record_row(row);
        }
    }

    fn record_row(&self, row: &WorkloadStatus) {
        let m = self.metrics;
        let w = self.workload(&row.kind, &row.name);
        m.workload_pods.get_or_create(&w).set(i64::from(row.pods));
        m.env_in_sync.get_or_create(&w).set(i64::from(row.env_in_sync));
        if let Some(limit) = row.limit {
            m.discrepancy_limit.get_or_create(&w).set(i64::from(limit));
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
        // In the order of STATES.
        let counts = row.connections.as_ref().map(|c| {
            [
                c.active,
                c.idle,
                c.idle_in_transaction,
                c.idle_in_transaction_aborted,
                c.other,
            ]
        });
        for (i, state) in STATES.into_iter().enumerate() {
            let l = StateLabels {
                namespace: w.namespace.clone(),
                policy: w.policy.clone(),
                kind: w.kind.clone(),
                workload: w.workload.clone(),
                state,
            };
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
}

/// The backend states `poolwarden_connections` is labelled with.
const STATES: [&str; 5] = [
    "active",
    "idle",
    "idle_in_transaction",
    "idle_in_transaction_aborted",
    "other",
];

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
}
