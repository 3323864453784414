//! Semantic validation of a policy, and the resolved form the rest of poolwarden uses.
//!
//! This is the one place the rules live. The controller reports a failure as a
//! status condition, `poolwarden check` prints it with the line it comes from, and
//! the rules the API server can check by itself are also CEL rules in the CRD (a
//! test keeps the two in step over the same fixtures).

use std::time::Duration;

use serde::Serialize;

use super::{
    Attribution, DiscrepancyRule, FlySecrets, FlyTarget, HumanDuration, Measure, PoolPolicySpec, PoolSettings,
    PoolStatsSource, Pooler, PoolerType, QueryEvidence, RemediationAction, SecretKeyRef, StatsFormat, WorkloadSelector,
};

/// One thing wrong with a policy: the field (dotted path from the document root,
/// e.g. `spec.pool.minSize`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A policy that passed validation, with durations parsed and defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPolicy {
    pub target: Target,
    pub database_url: UrlSource,
    pub containers: Vec<String>,
    pub interval: Duration,
    pub attribution: Attribution,
    /// The pooler the apps connect through, when `spec.database.pooler` is set.
    pub pooler: Option<ResolvedPooler>,
    pub pool: PoolSettings,
    pub pool_stats: Option<ResolvedPoolStats>,
    pub discrepancy: Option<ResolvedDiscrepancy>,
    pub remediation: ResolvedRemediation,
    /// `spec.evidence.queries`.
    pub queries: QueryEvidence,
    /// `spec.sizing`.
    pub sizing: super::sizing::ResolvedSizing,
}

/// What the policy governs.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Kubernetes(WorkloadSelector),
    Fly(FlyTarget),
}

/// Where the database URL comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum UrlSource {
    /// A Secret key in the policy's namespace (Kubernetes).
    Secret(SecretKeyRef),
    /// An environment variable of the reconciler (Fly).
    Env(String),
}

impl ResolvedPolicy {
    /// The Kubernetes selector; `None` for a policy with another target, which then
    /// selects nothing in a cluster.
    pub fn selector(&self) -> Option<&WorkloadSelector> {
        match &self.target {
            Target::Kubernetes(s) => Some(s),
            Target::Fly(_) => None,
        }
    }

    pub fn fly(&self) -> Option<&FlyTarget> {
        match &self.target {
            Target::Fly(f) => Some(f),
            Target::Kubernetes(_) => None,
        }
    }
}

/// `spec.database.pooler`, with its admin URL's source for the policy's target.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPooler {
    pub kind: PoolerType,
    pub admin_url: UrlSource,
    /// Labels of the pooler's pods (Kubernetes): every selected pod's console is read.
    pub pod_selector: Option<std::collections::BTreeMap<String, String>>,
}

/// `spec.poolStats` with its timeout parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPoolStats {
    pub port: u16,
    pub path: String,
    pub format: StatsFormat,
    pub checked_out: String,
    pub tracked_active: String,
    pub timeout: Duration,
}

/// `spec.discrepancy` with its durations parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedDiscrepancy {
    pub measure: Measure,
    pub max: u32,
    pub sustained_for: Duration,
    pub grace: Duration,
}

/// `spec.remediation` with its durations parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRemediation {
    pub action: RemediationAction,
    pub dry_run: bool,
    pub cooldown: Duration,
    pub max_restarts_per_hour: u32,
    pub min_available_replicas: u32,
    pub recurrence: ResolvedRecurrence,
}

/// `spec.remediation.recurrence` with its window parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedRecurrence {
    pub count: u32,
    pub within: Duration,
}

/// The env var the attribution env is delivered in (libpq reads it as
/// application_name; a library whose driver does not gets a binding of it, see
/// [`super::library::LibraryFacts::application_name_binding`]).
pub const APPLICATION_NAME_ENV: &str = super::library::PGAPPNAME;

/// Why `attribution: User` and `action: RestartPod` do not go together (the CRD's CEL
/// rule on `PoolPolicySpec` carries the same message).
pub const USER_CANNOT_RESTART_POD: &str = "attribution User cannot tell a workload's pods apart (one database role per workload), so RestartPod cannot pick the leaking pod: use RolloutRestart or None";

/// Environment variables a policy may not write: the ones that change how a process
/// loads or runs rather than what it is configured to do — shell and search paths,
/// the dynamic loader, language runtimes' start-up hooks, and libpq's own variables
/// (which would point the app at another server, credentials or TLS mode). Without
/// this rule, permission to write a PoolPolicy would be permission to run code in
/// every selected workload (`LD_PRELOAD`, `NODE_OPTIONS=--require …`). The same
/// regular expression is the CRD's CEL rule (RE2 and the regex crate agree on it).
/// Names are case-sensitive, as on Linux.
pub const REFUSED_ENV_PATTERN: &str = "^(PATH|HOME|SHELL|ENV|BASH_ENV|IFS|CDPATH|PS4|PROMPT_COMMAND|GCONV_PATH|GLIBC_TUNABLES|LOCPATH|NLSPATH|HOSTALIASES|MALLOC_.*|LD_.*|DYLD_.*|NODE_OPTIONS|NODE_PATH|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|CLASSPATH|PYTHON.*|PERL5OPT|PERL5LIB|PERLLIB|PERL5DB|RUBYOPT|RUBYLIB|LUA_INIT.*|PG[A-Z0-9]*)$";

/// Why a name matching [`REFUSED_ENV_PATTERN`] is refused (the CEL rule's message;
/// the Rust rule adds the name).
pub const REFUSED_ENV_MESSAGE: &str = "refused by the loader-and-runtime rule: a policy may not write a variable that changes how a process loads or runs (PATH, HOME, SHELL, ENV, BASH_ENV, IFS, LD_*, DYLD_*, GCONV_PATH, GLIBC_TUNABLES, NODE_OPTIONS, JAVA_TOOL_OPTIONS, _JAVA_OPTIONS, PYTHON*, PERL5OPT, RUBYOPT, libpq's PG* and others; see docs/operations.md)";

/// The CEL form of the loader-and-runtime rule, for every env name field.
pub fn env_name_rule() -> kube::core::Rule {
    kube::core::Rule::new(format!("!self.matches('{REFUSED_ENV_PATTERN}')")).message(REFUSED_ENV_MESSAGE)
}

/// Whether a policy may write the variable `name` (see [`REFUSED_ENV_PATTERN`]).
pub fn env_name_is_refused(name: &str) -> bool {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    // The pattern is a constant that a test compiles; were it ever broken, every
    // name is refused rather than none.
    RE.get_or_init(|| regex::Regex::new(REFUSED_ENV_PATTERN).ok())
        .as_ref()
        .is_none_or(|re| re.is_match(name))
}

/// [`validate`], for the Kubernetes controller: a Fly policy applied to a cluster is
/// reported, not reconciled.
pub fn validate_for_kubernetes(spec: &PoolPolicySpec) -> Result<ResolvedPolicy, Vec<Problem>> {
    let resolved = validate(spec)?;
    match resolved.fly() {
        None => Ok(resolved),
        Some(fly) => Err(vec![Problem::new(
            "spec.fly",
            format!(
                "this policy targets the Fly app {:?}: `poolwarden fly` reconciles it, the Kubernetes controller leaves it alone",
                fly.app
            ),
        )]),
    }
}

/// Validates a policy spec; every problem is reported, not only the first.
pub fn validate(spec: &PoolPolicySpec) -> Result<ResolvedPolicy, Vec<Problem>> {
    let mut problems = Vec::new();
    let target = resolve_target(spec, &mut problems);
    let interval = duration_at_least(&spec.interval, "spec.interval", Duration::from_secs(1), &mut problems);
    let database_url = target.as_ref().and_then(|t| resolve_url(spec, t, &mut problems));
    let pooler = target.as_ref().and_then(|t| resolve_pooler(spec, t, &mut problems));
    check_pool(&spec.pool, &mut problems);
    let pool_stats = spec
        .pool_stats
        .as_ref()
        .and_then(|s| resolve_pool_stats(s, &mut problems));
    let discrepancy = spec
        .discrepancy
        .as_ref()
        .and_then(|d| resolve_discrepancy(spec, d, &mut problems));
    let remediation = resolve_remediation(spec, &mut problems);
    check_duration_maxima(spec, &mut problems);
    let sizing = super::sizing::resolve(&spec.sizing, spec.pool.max_size, &mut problems);
    match (problems.is_empty(), target, database_url, interval, remediation, sizing) {
        (true, Some(target), Some(database_url), Some(interval), Some(remediation), Some(sizing)) => {
            Ok(ResolvedPolicy {
                target,
                database_url,
                containers: spec.containers.clone(),
                interval,
                attribution: spec.database.attribution,
                pooler,
                pool: spec.pool.clone(),
                pool_stats,
                discrepancy,
                remediation,
                queries: spec.evidence.queries,
                sizing,
            })
        }
        _ => Err(problems),
    }
}

/// `spec.discrepancy`, and whether the pool settings or stats its measure reads are given.
fn resolve_discrepancy(
    spec: &PoolPolicySpec,
    d: &DiscrepancyRule,
    problems: &mut Vec<Problem>,
) -> Option<ResolvedDiscrepancy> {
    let measure_needs = |what: &str, path: &str, problems: &mut Vec<Problem>| {
        problems.push(Problem::new(
            path,
            format!("discrepancy.measure {:?} needs {what}", d.measure),
        ));
    };
    match d.measure {
        Measure::LifetimeOverrun if spec.pool.max_lifetime_seconds.is_none() => {
            measure_needs("pool.maxLifetimeSeconds", "spec.pool.maxLifetimeSeconds", problems)
        }
        Measure::IdleOverrun if spec.pool.max_idle_seconds.is_none() => {
            measure_needs("pool.maxIdleSeconds", "spec.pool.maxIdleSeconds", problems)
        }
        Measure::DatabaseMinusTracked | Measure::PoolMinusTracked if spec.pool_stats.is_none() => {
            problems.push(Problem::new(
                "spec.poolStats",
                "discrepancy.measure DatabaseMinusTracked and PoolMinusTracked read the app's own pool stats: set spec.poolStats",
            ))
        }
        _ => {}
    }
    let sustained_for = duration_at_least(
        &d.sustained_for,
        "spec.discrepancy.sustainedFor",
        Duration::from_millis(1),
        problems,
    );
    let grace = match &d.grace {
        Some(grace) => duration_at_least(grace, "spec.discrepancy.grace", Duration::ZERO, problems),
        None => Some(super::library::default_grace(&spec.pool)),
    };
    Some(ResolvedDiscrepancy {
        measure: d.measure,
        max: d.max,
        sustained_for: sustained_for?,
        grace: grace?,
    })
}

/// `spec.remediation`, and whether its action can act at all.
fn resolve_remediation(spec: &PoolPolicySpec, problems: &mut Vec<Problem>) -> Option<ResolvedRemediation> {
    let r = &spec.remediation;
    let cooldown = duration_at_least(
        &r.cooldown,
        "spec.remediation.cooldown",
        Duration::from_millis(1),
        problems,
    );
    let within = duration_at_least(
        &r.recurrence.within,
        "spec.remediation.recurrence.within",
        Duration::from_millis(1),
        problems,
    );
    if r.recurrence.count == 0 {
        problems.push(Problem::new(
            "spec.remediation.recurrence.count",
            "recurrence.count must be at least 1",
        ));
    }
    if r.action != RemediationAction::None {
        if r.max_restarts_per_hour == 0 {
            problems.push(Problem::new(
                "spec.remediation.maxRestartsPerHour",
                "maxRestartsPerHour is 0, so remediation could never act: raise it or set action None",
            ));
        }
        if spec.discrepancy.is_none() {
            problems.push(Problem::new(
                "spec.discrepancy",
                "remediation.action restarts leaking pods, which needs spec.discrepancy to say what a leak is",
            ));
        }
    }
    if spec.database.attribution == Attribution::User && r.action == RemediationAction::RestartPod {
        problems.push(Problem::new("spec.remediation.action", USER_CANNOT_RESTART_POD));
    }
    Some(ResolvedRemediation {
        action: r.action,
        dry_run: r.dry_run,
        cooldown: cooldown?,
        max_restarts_per_hour: r.max_restarts_per_hour,
        min_available_replicas: r.min_available_replicas,
        recurrence: ResolvedRecurrence {
            count: r.recurrence.count,
            within: within?,
        },
    })
}

/// A Fly policy's pool variables can be app secrets, which are app-wide: managing
/// them is refused unless the policy governs every process group.
pub const MANAGE_SECRETS_NEEDS_ALL_GROUPS: &str = "secrets Manage changes app-wide secrets, which would change the process groups this policy does not govern: leave processGroups empty (every group) or use Report";

/// Spring Boot's application name refers to PGAPPNAME as `$(PGAPPNAME)`, which only
/// Kubernetes expands (the CRD's CEL rule carries the same message).
pub const FLY_CANNOT_BIND_APPLICATION_NAME: &str = "library SpringBoot learns the instance's name through $(PGAPPNAME), which Kubernetes expands and Fly does not: on Fly use attribution ClientAddress";

fn resolve_target(spec: &PoolPolicySpec, problems: &mut Vec<Problem>) -> Option<Target> {
    match (&spec.selector, &spec.fly) {
        (Some(selector), None) => {
            check_selector(selector, problems);
            Some(Target::Kubernetes(selector.clone()))
        }
        (None, Some(fly)) => {
            if fly.app.is_empty() {
                problems.push(Problem::new("spec.fly.app", "app must not be empty"));
            }
            if fly.secrets == FlySecrets::Manage && !fly.process_groups.is_empty() {
                problems.push(Problem::new("spec.fly.secrets", MANAGE_SECRETS_NEEDS_ALL_GROUPS));
            }
            if !spec.containers.is_empty() {
                problems.push(Problem::new(
                    "spec.containers",
                    "containers names Kubernetes containers; a Fly machine has one env: leave containers out",
                ));
            }
            if spec.database.attribution == Attribution::User {
                problems.push(Problem::new(
                    "spec.database.attribution",
                    "attribution User is for Kubernetes workloads; on Fly use ApplicationName (poolwarden sets PGAPPNAME per machine), ClientAddress or Auto",
                ));
            }
            if spec.pool.library.facts().application_name_binding.is_some()
                && matches!(
                    spec.database.attribution,
                    Attribution::ApplicationName | Attribution::Auto
                )
            {
                problems.push(Problem::new(
                    "spec.database.attribution",
                    FLY_CANNOT_BIND_APPLICATION_NAME,
                ));
            }
            Some(Target::Fly(fly.clone()))
        }
        _ => {
            problems.push(Problem::new(
                "spec",
                "give exactly one target: selector (Kubernetes workloads) or fly (a Fly.io app's process groups)",
            ));
            None
        }
    }
}

fn resolve_url(spec: &PoolPolicySpec, target: &Target, problems: &mut Vec<Problem>) -> Option<UrlSource> {
    let db = &spec.database;
    match (target, &db.url_secret_ref, &db.url_from_env) {
        (Target::Kubernetes(_), Some(secret), _) => {
            if secret.name.is_empty() {
                problems.push(Problem::new(
                    "spec.database.urlSecretRef.name",
                    "name must not be empty",
                ));
            }
            if secret.key.is_empty() {
                problems.push(Problem::new("spec.database.urlSecretRef.key", "key must not be empty"));
            }
            Some(UrlSource::Secret(secret.clone()))
        }
        (Target::Kubernetes(_), None, _) => {
            problems.push(Problem::new(
                "spec.database.urlSecretRef",
                "a Kubernetes policy reads its database URL from a Secret: set database.urlSecretRef",
            ));
            None
        }
        // The name is never echoed: a connection string pasted here by mistake must not
        // reach `check` output or status.
        (Target::Fly(_), _, Some(var)) if !is_env_name(var) => {
            problems.push(Problem::new(
                "spec.database.urlFromEnv",
                "urlFromEnv must be an environment variable name",
            ));
            None
        }
        (Target::Fly(_), _, Some(var)) => Some(UrlSource::Env(var.clone())),
        (Target::Fly(_), _, _) => {
            problems.push(Problem::new(
                "spec.database.urlFromEnv",
                "a Fly policy reads its database URL from the reconciler's environment: set database.urlFromEnv",
            ));
            None
        }
    }
}

fn resolve_pooler(spec: &PoolPolicySpec, target: &Target, problems: &mut Vec<Problem>) -> Option<ResolvedPooler> {
    let pooler = spec.database.pooler.as_ref()?;
    let before = problems.len();
    let admin_url = pooler_admin_url(pooler, target, problems);
    if let Some(selector) = &pooler.pod_selector {
        if matches!(target, Target::Fly(_)) {
            problems.push(Problem::new(
                "spec.database.pooler.podSelector",
                "podSelector selects Kubernetes pods; on Fly give one admin URL per pooler: leave podSelector out",
            ));
        } else if selector.match_labels.is_empty() {
            problems.push(Problem::new(
                "spec.database.pooler.podSelector.matchLabels",
                "podSelector.matchLabels must name at least one label",
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(ResolvedPooler {
        kind: pooler.kind,
        admin_url: admin_url?,
        pod_selector: pooler.pod_selector.as_ref().map(|s| s.match_labels.clone()),
    })
}

/// Where the pooler's admin console URL is read: a Secret on Kubernetes, the
/// reconciler's environment on Fly.
fn pooler_admin_url(pooler: &Pooler, target: &Target, problems: &mut Vec<Problem>) -> Option<UrlSource> {
    match (target, &pooler.admin_url_secret_ref, &pooler.admin_url_from_env) {
        (Target::Kubernetes(_), Some(secret), _) => {
            for (value, field) in [(&secret.name, "name"), (&secret.key, "key")] {
                if value.is_empty() {
                    problems.push(Problem::new(
                        format!("spec.database.pooler.adminUrlSecretRef.{field}"),
                        format!("{field} must not be empty"),
                    ));
                }
            }
            Some(UrlSource::Secret(secret.clone()))
        }
        (Target::Kubernetes(_), None, _) => {
            problems.push(Problem::new(
                "spec.database.pooler.adminUrlSecretRef",
                "a Kubernetes policy reads the pooler's admin console URL from a Secret: set database.pooler.adminUrlSecretRef",
            ));
            None
        }
        // As for urlFromEnv, the value is never echoed.
        (Target::Fly(_), _, Some(var)) if !is_env_name(var) => {
            problems.push(Problem::new(
                "spec.database.pooler.adminUrlFromEnv",
                "adminUrlFromEnv must be an environment variable name",
            ));
            None
        }
        (Target::Fly(_), _, Some(var)) => Some(UrlSource::Env(var.clone())),
        (Target::Fly(_), _, None) => {
            problems.push(Problem::new(
                "spec.database.pooler.adminUrlFromEnv",
                "a Fly policy reads the pooler's admin console URL from the reconciler's environment: set database.pooler.adminUrlFromEnv",
            ));
            None
        }
    }
}

fn check_selector(selector: &WorkloadSelector, problems: &mut Vec<Problem>) {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        problems.push(Problem::new(
            "spec.selector",
            "selector is empty: it would select every workload in the namespace; give matchLabels or matchExpressions",
        ));
    }
    if selector.kinds.is_empty() {
        problems.push(Problem::new(
            "spec.selector.kinds",
            "kinds must name at least one workload kind",
        ));
    }
    for (i, req) in selector.match_expressions.iter().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        match req.operator.as_str() {
            "In" | "NotIn" if !has_values => problems.push(Problem::new(
                format!("{path}.values"),
                format!("operator {} needs values", req.operator),
            )),
            "Exists" | "DoesNotExist" if has_values => problems.push(Problem::new(
                format!("{path}.values"),
                format!("operator {} takes no values", req.operator),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => problems.push(Problem::new(
                format!("{path}.operator"),
                format!("unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"),
            )),
        }
    }
}

fn check_pool(pool: &PoolSettings, problems: &mut Vec<Problem>) {
    if pool.max_size < 1 {
        problems.push(Problem::new("spec.pool.maxSize", "maxSize must be at least 1"));
    }
    if let Some(min) = pool.min_size
        && min > pool.max_size
    {
        problems.push(Problem::new(
            "spec.pool.minSize",
            format!(
                "minSize must not exceed maxSize (minSize {min} > maxSize {})",
                pool.max_size
            ),
        ));
    }
    for (value, field) in [
        (pool.processes_per_pod, "processesPerPod"),
        (pool.max_idle_seconds, "maxIdleSeconds"),
        (pool.max_lifetime_seconds, "maxLifetimeSeconds"),
        (pool.health_check_period_seconds, "healthCheckPeriodSeconds"),
    ] {
        if value == Some(0) {
            problems.push(Problem::new(
                format!("spec.pool.{field}"),
                format!("{field} must be at least 1"),
            ));
        }
    }
    check_min_size_for_library(pool, problems);
    let mut seen: Vec<&str> = vec![APPLICATION_NAME_ENV];
    seen.extend(pool.library.facts().application_name_binding.map(|b| b.name));
    let settings = super::library::pool_env(pool);
    for setting in &settings {
        if let Some(name) = &setting.name {
            check_env_name(name, &format!("spec.pool.env.{}", setting.field), &mut seen, problems);
        }
    }
    for (i, entry) in pool.extra_env.iter().enumerate() {
        check_env_name(
            &entry.name,
            &format!("spec.pool.extraEnv[{i}].name"),
            &mut seen,
            problems,
        );
    }
}

/// A library that reads minSize 0 as "no limit" (SQLAlchemy's QueuePool, pool_size
/// 0), or that takes maxSize as an overflow above minSize, needs a minSize of at
/// least 1.
fn check_min_size_for_library(pool: &PoolSettings, problems: &mut Vec<Problem>) {
    let facts = pool.library.facts();
    let overflow = facts.max_size.format == super::library::Format::OverflowAboveMinSize;
    let library = pool.library;
    match pool.min_size {
        None if overflow && pool.env.max_size.is_none() => problems.push(Problem::new(
            "spec.pool.minSize",
            format!("{library:?} takes maxSize as an overflow above minSize (max_overflow = maxSize - minSize): set minSize"),
        )),
        Some(0) if facts.min_size_zero_unbounded => problems.push(Problem::new(
            "spec.pool.minSize",
            format!("{library:?} reads a pool size of 0 as no limit at all (QueuePool pool_size=0): set minSize to at least 1"),
        )),
        _ => {}
    }
}

fn is_env_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_env_name<'a>(name: &'a str, path: &str, seen: &mut Vec<&'a str>, problems: &mut Vec<Problem>) {
    if !is_env_name(name) {
        problems.push(Problem::new(
            path,
            format!("{name:?} is not an environment variable name"),
        ));
    } else if env_name_is_refused(name) {
        problems.push(Problem::new(path, format!("{REFUSED_ENV_MESSAGE}: {name}")));
    } else if seen.contains(&name) {
        problems.push(Problem::new(path, format!("{name} is set twice by this policy")));
    } else {
        seen.push(name);
    }
}

fn resolve_pool_stats(stats: &PoolStatsSource, problems: &mut Vec<Problem>) -> Option<ResolvedPoolStats> {
    if stats.port == 0 {
        problems.push(Problem::new("spec.poolStats.port", "port must be between 1 and 65535"));
    }
    if !stats.path.starts_with('/') {
        problems.push(Problem::new("spec.poolStats.path", "path must start with /"));
    }
    for (value, field) in [
        (&stats.checked_out, "checkedOut"),
        (&stats.tracked_active, "trackedActive"),
    ] {
        let path = format!("spec.poolStats.{field}");
        match stats.format {
            StatsFormat::Json if !value.starts_with('/') => problems.push(Problem::new(
                path,
                format!("{value:?} is not a JSON pointer (it starts with /, e.g. /checks/database_pool/checked_out)"),
            )),
            StatsFormat::Prometheus => {
                if let Err(why) = super::metric_selector::MetricSelector::parse(value) {
                    problems.push(Problem::new(path, why.to_string()));
                }
            }
            StatsFormat::Json => {}
        }
    }
    let timeout = duration_at_least(
        &stats.timeout,
        "spec.poolStats.timeout",
        Duration::from_millis(1),
        problems,
    )?;
    Some(ResolvedPoolStats {
        port: stats.port,
        path: stats.path.clone(),
        format: stats.format,
        checked_out: stats.checked_out.clone(),
        tracked_active: stats.tracked_active.clone(),
        timeout,
    })
}

/// The longest `interval`: a pass at least this often keeps the status and the
/// samples fresh enough to act on.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest `sustainedFor`, `grace` and `cooldown` (30 days): beyond it a window
/// or a cooldown means "never", and time arithmetic on it could overflow.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest `poolStats.timeout`; it is also at most `interval`, so a slow
/// endpoint cannot hold a reconcile slot for longer than a pass.
pub const MAX_POOL_STATS_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bounds on every duration (the CRD carries the same rules as CEL). A
/// duration that does not parse is reported elsewhere.
fn check_duration_maxima(spec: &PoolPolicySpec, problems: &mut Vec<Problem>) {
    let mut at_most = |value: &HumanDuration, path: &str, max: Duration, words: &str| {
        if let Ok(d) = value.parse()
            && d > max
        {
            let field = path.rsplit('.').next().unwrap_or(path);
            problems.push(Problem::new(path, format!("{field} must be at most {words}")));
        }
    };
    at_most(&spec.interval, "spec.interval", MAX_INTERVAL, "1h");
    if let Some(d) = &spec.discrepancy {
        at_most(
            &d.sustained_for,
            "spec.discrepancy.sustainedFor",
            MAX_WINDOW,
            "720h (30 days)",
        );
        if let Some(grace) = &d.grace {
            at_most(grace, "spec.discrepancy.grace", MAX_WINDOW, "720h (30 days)");
        }
    }
    at_most(
        &spec.remediation.cooldown,
        "spec.remediation.cooldown",
        MAX_WINDOW,
        "720h (30 days)",
    );
    at_most(
        &spec.remediation.recurrence.within,
        "spec.remediation.recurrence.within",
        MAX_WINDOW,
        "720h (30 days)",
    );
    if let Some(stats) = &spec.pool_stats {
        at_most(&stats.timeout, "spec.poolStats.timeout", MAX_POOL_STATS_TIMEOUT, "30s");
        if let (Ok(timeout), Ok(interval)) = (stats.timeout.parse(), spec.interval.parse())
            && timeout > interval
        {
            problems.push(Problem::new(
                "spec.poolStats.timeout",
                "poolStats.timeout must not exceed interval: a scrape longer than a pass would hold a reconcile slot",
            ));
        }
    }
}

pub(super) fn duration_at_least(
    value: &HumanDuration,
    path: &str,
    least: Duration,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    match value.parse() {
        Err(why) => {
            problems.push(Problem::new(path, why.to_string()));
            None
        }
        Ok(d) if d < least => {
            let field = path.rsplit('.').next().unwrap_or(path);
            let bound = if least <= Duration::from_millis(1) {
                "positive".to_owned()
            } else {
                format!("at least {}", super::duration::render(least))
            };
            problems.push(Problem::new(path, format!("{field} must be {bound}")));
            None
        }
        Ok(d) => Some(d),
    }
}
