//! The `PoolPolicy` API (`poolwarden.io/v1alpha1`): what a team commits to Git.
//!
//! Every doc comment on a field becomes `kubectl explain` text, so it is written for
//! the policy's author. Semantic rules live in [`validate`]; the ones the API server
//! can enforce by itself are also carried in the CRD as CEL rules (`#[x_kube]`).

pub mod condition;
pub mod duration;
pub mod library;
pub mod metric_selector;
pub mod recorded_time;
pub mod sizing;
pub mod status;
pub mod validate;
pub mod warnings;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use condition::Condition;
pub use duration::HumanDuration;
pub use library::PoolLibrary;
pub use status::{
    ConnectionCounts, EvidenceGroup, ExceedingPod, PodEvidence, PoolPolicyStatus, RemediationRecord, RemediationState,
    WorkloadStatus,
};
pub use validate::{Problem, ResolvedPolicy, validate, validate_for_kubernetes};

/// API group of every poolwarden resource and the prefix of its annotations.
pub const GROUP: &str = "poolwarden.io";
/// Annotation that stops every write poolwarden would make to a workload or policy.
pub const PAUSED_ANNOTATION: &str = "poolwarden.io/paused";
/// Workload annotation naming the database role its pods log in as, for `User`
/// attribution; without it the role is the workload's name.
pub const DATABASE_USER_ANNOTATION: &str = "poolwarden.io/database-user";
/// Pod-template annotation poolwarden sets to roll a workload (like `kubectl rollout restart`).
pub const RESTARTED_AT_ANNOTATION: &str = "poolwarden.io/restartedAt";

/// Desired connection-pool settings for a set of workloads, and what to do about leaks.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "poolwarden.io",
    version = "v1alpha1",
    kind = "PoolPolicy",
    plural = "poolpolicies",
    shortname = "ppol",
    namespaced,
    status = "PoolPolicyStatus",
    printcolumn = r#"{"name":"Workloads","type":"integer","jsonPath":".status.workloadCount"}"#,
    printcolumn = r#"{"name":"Leaking","type":"integer","jsonPath":".status.leakingPods","description":"Pods whose discrepancy is above the limit"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Observed","type":"date","jsonPath":".status.observedAt","description":"When the status was last known to be current; stale after .status.staleAfter"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A PoolPolicy keeps the connection-pool settings of the selected workloads equal to spec.pool, measures their live PostgreSQL connections per pod, and (when spec.remediation says so) restarts pods whose leaked connections stay above spec.discrepancy.max.",
    cel
)]
#[x_kube(
    validation = Rule::new("!has(self.discrepancy) || !(self.discrepancy.measure in ['DatabaseMinusTracked', 'PoolMinusTracked']) || has(self.poolStats)").message("discrepancy.measure DatabaseMinusTracked and PoolMinusTracked read the app's own pool stats: set spec.poolStats").field_path(".poolStats"),
    validation = Rule::new("!has(self.discrepancy) || self.discrepancy.measure != 'IdleOverrun' || has(self.pool.maxIdleSeconds)").message("discrepancy.measure IdleOverrun needs pool.maxIdleSeconds").field_path(".pool.maxIdleSeconds"),
    validation = Rule::new("!has(self.discrepancy) || self.discrepancy.measure != 'LifetimeOverrun' || has(self.pool.maxLifetimeSeconds)").message("discrepancy.measure LifetimeOverrun needs pool.maxLifetimeSeconds").field_path(".pool.maxLifetimeSeconds"),
    validation = Rule::new("!has(self.remediation) || self.remediation.action == 'None' || has(self.discrepancy)").message("remediation.action restarts leaking pods, which needs spec.discrepancy to say what a leak is").field_path(".discrepancy"),
    validation = Rule::new("!(has(self.database.attribution) && self.database.attribution == 'User' && has(self.remediation) && has(self.remediation.action) && self.remediation.action == 'RestartPod')").message("attribution User cannot tell a workload's pods apart (one database role per workload), so RestartPod cannot pick the leaking pod: use RolloutRestart or None").field_path(".remediation.action"),
    validation = Rule::new("has(self.selector) != has(self.fly)").message("give exactly one target: selector (Kubernetes workloads) or fly (a Fly.io app's process groups)"),
    validation = Rule::new("!has(self.selector) || has(self.database.urlSecretRef)").message("a Kubernetes policy reads its database URL from a Secret: set database.urlSecretRef").field_path(".database.urlSecretRef"),
    validation = Rule::new("!has(self.fly) || has(self.database.urlFromEnv)").message("a Fly policy reads its database URL from the reconciler's environment: set database.urlFromEnv").field_path(".database.urlFromEnv"),
    validation = Rule::new("!has(self.fly) || !has(self.containers) || size(self.containers) == 0").message("containers names Kubernetes containers; a Fly machine has one env: leave containers out").field_path(".containers"),
    validation = Rule::new("!has(self.poolStats) || duration(self.poolStats.timeout) <= duration(self.interval)").message("poolStats.timeout must not exceed interval").field_path(".poolStats.timeout"),
    validation = Rule::new("!has(self.fly) || !has(self.pool.library) || self.pool.library != 'SpringBoot' || (has(self.database.attribution) && self.database.attribution in ['ClientAddress', 'User'])").message("library SpringBoot learns the instance's name through $(PGAPPNAME), which Kubernetes expands and Fly does not: on Fly use attribution ClientAddress").field_path(".database.attribution"),
    validation = Rule::new("!has(self.fly) || !has(self.database.attribution) || self.database.attribution != 'User'").message("attribution User is for Kubernetes workloads; on Fly use ApplicationName (poolwarden sets PGAPPNAME per machine), ClientAddress or Auto").field_path(".database.attribution"),
    validation = Rule::new("!has(self.selector) || !has(self.database.pooler) || has(self.database.pooler.adminUrlSecretRef)").message("a Kubernetes policy reads the pooler's admin console URL from a Secret: set database.pooler.adminUrlSecretRef").field_path(".database.pooler.adminUrlSecretRef"),
    validation = Rule::new("!has(self.fly) || !has(self.database.pooler) || has(self.database.pooler.adminUrlFromEnv)").message("a Fly policy reads the pooler's admin console URL from the reconciler's environment: set database.pooler.adminUrlFromEnv").field_path(".database.pooler.adminUrlFromEnv"),
    validation = Rule::new("!has(self.fly) || !has(self.database.pooler) || !has(self.database.pooler.podSelector)").message("podSelector selects Kubernetes pods; on Fly give one admin URL per pooler: leave podSelector out").field_path(".database.pooler.podSelector")
)]
#[serde(rename_all = "camelCase")]
pub struct PoolPolicySpec {
    /// Which Kubernetes workloads in this policy's namespace the policy governs.
    /// Exactly one of selector and fly is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,

    /// The Fly.io app and process groups the policy governs, for `poolwarden fly`.
    /// Exactly one of selector and fly is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fly: Option<FlyTarget>,

    /// Names of the containers whose pool settings are managed. Empty means every
    /// container of the pod template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,

    /// How often live connections are sampled and the policy is re-evaluated.
    #[serde(default = "defaults::interval")]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('1s')").message("interval must be at least 1s"),
        validation = Rule::new("duration(self) <= duration('1h')").message("interval must be at most 1h")
    )]
    pub interval: HumanDuration,

    /// The database whose `pg_stat_activity` is sampled, and how its backends are
    /// attributed to pods.
    pub database: DatabaseRef,

    /// The pool settings every selected container must run with, delivered as
    /// environment variables.
    pub pool: PoolSettings,

    /// Where the app publishes its own view of its pool (optional). Needed by the
    /// DatabaseMinusTracked and PoolMinusTracked measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_stats: Option<PoolStatsSource>,

    /// What counts as a leak. Without it poolwarden reconciles settings and reports
    /// connections, but never judges a pod leaking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrepancy: Option<DiscrepancyRule>,

    /// What poolwarden does about a leaking pod. Defaults to observing only.
    #[serde(default)]
    pub remediation: Remediation,

    /// What a leaking pod's evidence may show of its backends' statements.
    #[serde(default)]
    pub evidence: EvidenceSettings,

    /// Pool sizes recommended from measured use, and whether they are applied.
    #[serde(default, skip_serializing_if = "sizing::Sizing::is_off_by_default")]
    pub sizing: sizing::Sizing,
}

/// What the evidence of a leak (in status, Events and `plan`) shows of statements.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceSettings {
    /// Normalized shows each group's last statement with its literals removed (as
    /// pg_stat_statements does); Fingerprint only a stable hash of that text; None
    /// neither. Literals are never shown, whatever this says.
    #[serde(default)]
    pub queries: QueryEvidence,
}

/// How much of a statement the evidence shows.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum QueryEvidence {
    /// The normalised text: literals replaced by `$1`, `$2`, ..., comments dropped
    /// (their sqlcommenter tags kept).
    #[default]
    Normalized,
    /// A stable hash of the normalised text, and no text: for teams that keep even
    /// table and column names out of the cluster.
    Fingerprint,
    /// No statement at all; states, counts, ages and tags only.
    None,
}

/// Selects workloads by label, like a Deployment's own selector, and by kind.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("selector is empty: it would select every workload in the namespace; give matchLabels or matchExpressions")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must carry (all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,

    /// Set-based label requirements (In, NotIn, Exists, DoesNotExist), all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,

    /// Which kinds of workload are selected.
    #[serde(default = "defaults::kinds")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("kinds must name at least one workload kind"))]
    pub kinds: Vec<WorkloadKind>,
}

/// A Fly.io app whose machines poolwarden manages through the Machines API: each
/// process group is a workload and each machine an instance.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.secrets) || self.secrets != 'Manage' || !has(self.processGroups) || size(self.processGroups) == 0").message("secrets Manage changes app-wide secrets, which would change the process groups this policy does not govern: leave processGroups empty (every group) or use Report").field_path(".secrets")
)]
#[serde(rename_all = "camelCase")]
pub struct FlyTarget {
    /// The app's name.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9-]*$')").message("app must be a Fly app name (lowercase letters, digits and dashes)"))]
    pub app: String,

    /// The process groups governed (`fly_process_group` of the machines). Empty means
    /// every group of the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process_groups: Vec<String>,

    /// Machines of a group that must stay started while poolwarden updates or
    /// restarts one of them; a group with fewer is left alone and reported.
    #[serde(default = "defaults::min_started")]
    pub min_started: u32,

    /// What to do when a pool variable is also an app secret (a secret overrides the
    /// machine env of the same name, so an env change would do nothing).
    #[serde(default)]
    pub secrets: FlySecrets,
}

/// How pool variables that are also app secrets are handled.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlySecrets {
    /// Report the conflict (a `Conflict` condition) and leave those variables alone.
    #[default]
    Report,
    /// Set the app secrets to the policy's values and update the running machines one
    /// at a time with `min_secrets_version`, so they boot with them (as `fly secrets
    /// deploy` does). Secrets are app-wide: only allowed when the policy governs every
    /// process group.
    Manage,
}

/// A kind of workload poolwarden can manage.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// The database to sample and how to tell whose connection is whose.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRef {
    /// The Secret key (in the policy's namespace) holding a PostgreSQL connection URL
    /// for a role with `pg_monitor`. `sslmode` and `sslrootcert` in the URL are honoured.
    /// Kubernetes policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,

    /// The environment variable of the `poolwarden fly` process holding the connection
    /// URL (a Fly secret of the app poolwarden runs in). Fly policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("urlFromEnv must be an environment variable name"))]
    pub url_from_env: Option<String>,

    /// How a backend in `pg_stat_activity` is matched to a pod. Behind a pooler, how
    /// a pooler's client connection is matched to a pod.
    #[serde(default)]
    pub attribution: Attribution,

    /// A connection pooler between the apps and the database (optional). When set,
    /// each pod's connections are read on the pooler's client side (its admin
    /// console's `SHOW CLIENTS`) and joined to the server backends they hold; the
    /// database URL above is still sampled for the backends' states and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<Pooler>,
}

/// A connection pooler the apps connect through, and how to read its admin console.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pooler {
    /// The pooler's kind. Only PgBouncer (1.18 or later) exposes which client holds
    /// which server connection.
    #[serde(rename = "type")]
    pub kind: PoolerType,

    /// The Secret key (in the policy's namespace) holding the URL of the pooler's
    /// admin console: the `pgbouncer` database, as a role listed in `stats_users`
    /// (e.g. `postgres://pgb-stats:…@pooler:6432/pgbouncer`). Kubernetes policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url_secret_ref: Option<SecretKeyRef>,

    /// The environment variable of the `poolwarden fly` process holding the admin
    /// console URL. Fly policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("adminUrlFromEnv must be an environment variable name"))]
    pub admin_url_from_env: Option<String>,

    /// The pooler's pods, for several instances behind one Service (e.g. a
    /// CloudNativePG Pooler): each selected pod's admin console is queried at its pod
    /// IP, with the admin URL's port and credentials, and the results combined. Without
    /// it the admin URL's host is the one instance. Kubernetes policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<PoolerPodSelector>,
}

/// The pooler's pods, by label, in the policy's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolerPodSelector {
    /// Labels a pooler pod carries (all of them).
    #[x_kube(validation = Rule::new("size(self) > 0").message("podSelector.matchLabels must name at least one label"))]
    pub match_labels: BTreeMap<String, String>,
}

/// A kind of connection pooler.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolerType {
    PgBouncer,
}

/// A key in a Secret of the policy's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("name must not be empty"))]
    pub name: String,
    /// Key within the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("key must not be empty"))]
    pub key: String,
}

/// How backends are attributed to pods.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Attribution {
    /// `application_name` is the pod name: poolwarden sets `PGAPPNAME` from the
    /// downward API so libpq-based clients report it.
    #[default]
    ApplicationName,
    /// `client_addr` is the pod IP (not through NAT or an external pooler).
    ClientAddress,
    /// One database role per workload: the role named by the workload's
    /// `poolwarden.io/database-user` annotation, or the workload's name.
    User,
    /// Application name where it names a pod, client address otherwise.
    Auto,
}

/// The database role a workload's pods log in as, for `User` attribution: the
/// workload's [`DATABASE_USER_ANNOTATION`], or its name when the annotation is absent
/// or empty. PostgreSQL compares role names exactly (`usename`), so the value is used
/// verbatim, case included.
pub fn database_user<'a>(workload_name: &'a str, annotations: Option<&'a BTreeMap<String, String>>) -> &'a str {
    annotations
        .and_then(|a| a.get(DATABASE_USER_ANNOTATION))
        .map(String::as_str)
        .filter(|user| !user.is_empty())
        .unwrap_or(workload_name)
}

/// The pool settings, each delivered to the containers as an environment variable.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.minSize) || self.minSize <= self.maxSize").message("minSize must not exceed maxSize").field_path(".minSize"),
    validation = Rule::new("!has(self.library) || self.library != 'SQLAlchemy' || has(self.minSize) || (has(self.env) && has(self.env.maxSize))").message("SQLAlchemy takes maxSize as an overflow above minSize (max_overflow = maxSize - minSize): set minSize").field_path(".minSize"),
    validation = Rule::new("!has(self.library) || self.library != 'SQLAlchemy' || !has(self.minSize) || self.minSize >= 1").message("SQLAlchemy reads a pool size of 0 as no limit at all (QueuePool pool_size=0): set minSize to at least 1").field_path(".minSize")
)]
#[serde(rename_all = "camelCase")]
pub struct PoolSettings {
    /// The pool library the selected containers use. It decides the default variable
    /// names, the unit of each value (seconds, milliseconds, Go durations), which
    /// settings exist, the default grace, how its connections are attributed and
    /// which old connections a healthy pool of it keeps (see docs/libraries.md).
    #[serde(default)]
    pub library: PoolLibrary,

    /// Connections each pool keeps open even when idle. Unset leaves the variable alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,

    /// Most connections each pool may open.
    #[x_kube(validation = Rule::new("self >= 1").message("maxSize must be at least 1"))]
    pub max_size: u32,

    /// Processes in each pod that each open their own pool (gunicorn or uwsgi
    /// workers, several process groups): the database budget counts pods ×
    /// processesPerPod × maxSize. Not written to any variable. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("processesPerPod must be at least 1"))]
    pub processes_per_pod: Option<u32>,

    /// Seconds an idle connection may stay open before the pool closes it. Unset
    /// leaves the variable alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxIdleSeconds must be at least 1"))]
    pub max_idle_seconds: Option<u32>,

    /// Seconds after which the pool replaces a connection, busy or not. Unset leaves
    /// the variable alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxLifetimeSeconds must be at least 1"))]
    pub max_lifetime_seconds: Option<u32>,

    /// Up to this many seconds added at random to each connection's lifetime, so
    /// that connections opened together are not all replaced together (pgx's
    /// MaxConnLifetimeJitter). Widens the library's default grace. Unset leaves the
    /// variable alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_jitter_seconds: Option<u32>,

    /// Seconds between the pool's health checks, which is when it closes expired
    /// idle connections (pgx's HealthCheckPeriod; pgx's default is 60). Widens the
    /// library's default grace. Unset leaves the variable alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("healthCheckPeriodSeconds must be at least 1"))]
    pub health_check_period_seconds: Option<u32>,

    /// The environment variable each setting is written to, where it differs from
    /// the library's (docs/libraries.md lists each library's names).
    #[serde(default)]
    pub env: PoolEnvNames,

    /// More environment variables to set on the selected containers, verbatim (at
    /// most 64).
    // The bounds (here and on the names) keep the CEL name rule within the API
    // server's cost budget: unbounded, it is estimated over a 3 MB string and a list
    // as long as a request allows, and the CRD is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub extra_env: Vec<EnvEntry>,
}

/// Environment variable names for each pool setting; each one left out is the
/// library's own name (Generic: DB_POOL_MIN, DB_POOL_MAX, DB_POOL_MAX_IDLE,
/// DB_POOL_MAX_LIFETIME).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolEnvNames {
    /// Variable receiving minSize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub min_size: Option<String>,
    /// Variable receiving maxSize (with SQLAlchemy, maxSize - minSize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub max_size: Option<String>,
    /// Variable receiving maxIdleSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub max_idle_seconds: Option<String>,
    /// Variable receiving maxLifetimeSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub max_lifetime_seconds: Option<String>,
    /// Variable receiving maxLifetimeJitterSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub max_lifetime_jitter_seconds: Option<String>,
    /// Variable receiving healthCheckPeriodSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub health_check_period_seconds: Option<String>,
}

/// One extra environment variable.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct EnvEntry {
    /// Variable name. Names that change how a process loads or runs (PATH, LD_*,
    /// NODE_OPTIONS, PYTHON*, PG*, …) are refused.
    #[x_kube(validation = validate::env_name_rule())]
    #[schemars(length(max = 256))]
    pub name: String,
    /// Variable value.
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// The app's own pool statistics endpoint, scraped on every pod.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatsSource {
    /// TCP port on the pod IP.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: u16,

    /// HTTP path, starting with `/`.
    #[serde(default = "defaults::stats_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must start with /"))]
    pub path: String,

    /// Response format.
    #[serde(default)]
    pub format: StatsFormat,

    /// Where the number of connections the pool has checked out is: a JSON pointer
    /// (`/checks/database_pool/checked_out`) or a Prometheus metric, optionally with
    /// label matchers (`pool_checked_out{pool="main"}`).
    pub checked_out: String,

    /// Where the number of connections the app's own tracking knows to be in use is,
    /// in the same notation as checkedOut.
    pub tracked_active: String,

    /// How long one scrape may take.
    #[serde(default = "defaults::stats_timeout")]
    #[x_kube(
        validation = Rule::new("duration(self) > duration('0s')").message("timeout must be positive"),
        validation = Rule::new("duration(self) <= duration('30s')").message("timeout must be at most 30s")
    )]
    pub timeout: HumanDuration,
}

/// Format of a pool statistics endpoint.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StatsFormat {
    /// A JSON document; values addressed by JSON pointer.
    #[default]
    Json,
    /// Prometheus text exposition; values addressed by metric name and labels.
    Prometheus,
}

/// What counts as a leak, per pod.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscrepancyRule {
    /// The per-pod figure compared with max.
    #[serde(default)]
    pub measure: Measure,

    /// Largest acceptable value of the measure per pod; a pod above it for
    /// sustainedFor is leaking.
    #[serde(default = "defaults::discrepancy_max")]
    pub max: u32,

    /// How long a pod must stay above max, in every sample, before it is judged leaking.
    #[serde(default = "defaults::sustained_for")]
    #[x_kube(
        validation = Rule::new("duration(self) > duration('0s')").message("sustainedFor must be positive"),
        validation = Rule::new("duration(self) <= duration('720h')").message("sustainedFor must be at most 720h (30 days)")
    )]
    pub sustained_for: HumanDuration,

    /// Slack added to maxLifetimeSeconds and maxIdleSeconds before a connection counts
    /// as overrunning them, and to sustainedFor before a new pod may be judged. It
    /// must cover the pool's own recycling delay and the longest checkout the app
    /// holds legitimately. Default: 60s, plus, for Pgx, the health-check period
    /// (healthCheckPeriodSeconds, else pgx's 60s) and maxLifetimeJitterSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('720h')").message("grace must be at most 720h (30 days)"))]
    pub grace: Option<HumanDuration>,
}

/// A per-pod leak measure.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Measure {
    /// Backends older than maxLifetimeSeconds + grace: the pool would have recycled
    /// them, so something else holds them. Needs nothing from the app.
    #[default]
    LifetimeOverrun,
    /// Idle backends older than maxIdleSeconds + grace, beyond minSize.
    IdleOverrun,
    /// Backends the database attributes to the pod minus the app's tracked-active count.
    DatabaseMinusTracked,
    /// The app's checked-out count minus its tracked-active count (both from poolStats).
    PoolMinusTracked,
}

/// What to do about a leaking pod, and the rails around it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.action == 'None' || self.maxRestartsPerHour >= 1").message("maxRestartsPerHour is 0, so remediation could never act: raise it or set action None").field_path(".maxRestartsPerHour")
)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// None observes and reports; RestartPod evicts the leaking pod; RolloutRestart
    /// rolls the whole workload.
    #[serde(default)]
    pub action: RemediationAction,

    /// Decide and report every remediation, but carry none out (and write no env).
    #[serde(default)]
    pub dry_run: bool,

    /// Least time between two remediations of the same workload.
    #[serde(default = "defaults::cooldown")]
    #[x_kube(
        validation = Rule::new("duration(self) > duration('0s')").message("cooldown must be positive"),
        validation = Rule::new("duration(self) <= duration('720h')").message("cooldown must be at most 720h (30 days)")
    )]
    pub cooldown: HumanDuration,

    /// Most remediations per policy in any hour.
    #[serde(default = "defaults::max_restarts_per_hour")]
    pub max_restarts_per_hour: u32,

    /// RestartPod never takes a workload below this many ready pods.
    #[serde(default = "defaults::min_available_replicas")]
    pub min_available_replicas: u32,

    /// When restarting does not help: a leak that comes back soon after each restart.
    #[serde(default)]
    pub recurrence: Recurrence,
}

/// The recurrence guard: a workload whose replacement pods leak again within
/// `within` of each of `count` restarts in a row is not restarted again (the policy
/// shows LeakRecurring=True with the evidence) until its pod template or the policy
/// changes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recurrence {
    /// Restarts in a row, each followed by the leak coming back within `within`,
    /// after which poolwarden stops restarting the workload.
    #[serde(default = "defaults::recurrence_count")]
    #[x_kube(validation = Rule::new("self >= 1").message("recurrence.count must be at least 1"))]
    pub count: u32,

    /// How soon after a restart a leak that comes back counts as the same leak
    /// (measured from the restart to the start of the replacement's run above the limit).
    #[serde(default = "defaults::recurrence_within")]
    #[x_kube(
        validation = Rule::new("duration(self) > duration('0s')").message("recurrence.within must be positive"),
        validation = Rule::new("duration(self) <= duration('720h')").message("recurrence.within must be at most 720h (30 days)")
    )]
    pub within: HumanDuration,
}

impl Default for Recurrence {
    fn default() -> Self {
        Self {
            count: defaults::recurrence_count(),
            within: defaults::recurrence_within(),
        }
    }
}

impl Default for Remediation {
    fn default() -> Self {
        Self {
            action: RemediationAction::None,
            dry_run: false,
            cooldown: defaults::cooldown(),
            max_restarts_per_hour: defaults::max_restarts_per_hour(),
            min_available_replicas: defaults::min_available_replicas(),
            recurrence: Recurrence::default(),
        }
    }
}

/// A remediation action.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RemediationAction {
    /// Observe and report only.
    #[default]
    None,
    /// Evict the leaking pod through the Eviction API (PodDisruptionBudgets apply).
    /// Not with User attribution, which cannot tell a workload's pods apart.
    RestartPod,
    /// Roll the whole workload by annotating its pod template.
    RolloutRestart,
}

/// Defaults, named so the CRD schema and the docs show them.
pub mod defaults {
    use super::{HumanDuration, WorkloadKind};

    pub fn interval() -> HumanDuration {
        "30s".into()
    }
    pub fn kinds() -> Vec<WorkloadKind> {
        vec![WorkloadKind::Deployment, WorkloadKind::StatefulSet]
    }
    pub fn stats_path() -> String {
        "/health/detailed".into()
    }
    pub fn stats_timeout() -> HumanDuration {
        "2s".into()
    }
    pub fn discrepancy_max() -> u32 {
        2
    }
    pub fn sustained_for() -> HumanDuration {
        "10m".into()
    }
    pub fn cooldown() -> HumanDuration {
        "1h".into()
    }
    pub fn min_started() -> u32 {
        1
    }
    pub fn max_restarts_per_hour() -> u32 {
        2
    }
    pub fn min_available_replicas() -> u32 {
        1
    }
    pub fn recurrence_count() -> u32 {
        3
    }
    pub fn recurrence_within() -> HumanDuration {
        "1h".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_user_is_the_annotation_or_else_the_workload_name() {
        let annotated = BTreeMap::from([(DATABASE_USER_ANNOTATION.to_owned(), "Odds_RW".to_owned())]);
        assert_eq!(database_user("worker-odds", Some(&annotated)), "Odds_RW");
        let other = BTreeMap::from([(PAUSED_ANNOTATION.to_owned(), "true".to_owned())]);
        assert_eq!(database_user("worker-odds", Some(&other)), "worker-odds");
        assert_eq!(database_user("worker-odds", None), "worker-odds");
        let empty = BTreeMap::from([(DATABASE_USER_ANNOTATION.to_owned(), String::new())]);
        assert_eq!(database_user("worker-odds", Some(&empty)), "worker-odds");
    }
}
