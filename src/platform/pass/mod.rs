//! One pass of one policy, whatever the target: read → observe → decide → execute →
//! report. The Kubernetes controller, the Fly reconciler, `poolwarden plan` and
//! `poolwarden fly plan` all call [`run`]; a target supplies what it reads of its
//! platform ([`Target::read`]) and how it carries a plan out ([`Target::execute`]).
//! The plan commands are the same pass with a target that writes nothing.

mod budget;
pub mod observe;
mod url_problems;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::Timestamp;
use kube::ResourceExt;

pub use observe::{Subject, SubjectInstance};

use super::report::{self, PlanReport, Words};
use crate::{
    decide::{self, EnvConflict, GovernedElsewhere, Plan, PlanInput, Workload},
    observation::{DatabaseFull, LastSeen, Measured},
    observe::{
        history::History,
        pool_stats::Scraper,
        postgres::{SampleError, Snapshot},
        shared::SharedSamplers,
    },
    policy::{
        PAUSED_ANNOTATION, PoolPolicy, PoolPolicyStatus, RemediationRecord, ResolvedPolicy, validate::ResolvedPooler,
    },
    telemetry::metrics::{Metrics, PolicyMetrics},
};

/// What every pass of a target shares: the database samplers (one sample per
/// database and half interval, whatever the number of policies on it), the
/// pod-stats scraper, the metrics and each policy's sample history.
pub struct Shared {
    pub samplers: SharedSamplers,
    pub scraper: Scraper,
    pub metrics: Arc<Metrics>,
    /// Samples per policy (see [`Scope::key`]), for `sustainedFor`.
    pub histories: Mutex<HashMap<String, History>>,
    /// Sizing histories per policy (see [`Scope::key`]), and their peak window.
    pub sizing: super::sizing::SizingState,
    /// Why each policy's database URL could not be read, as last logged.
    url_problems: url_problems::UrlProblems,
    /// Every policy's share of its database's connection budget.
    pub ledger: super::budget::Ledger,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_sizing_window(metrics, crate::decide::sizing::WINDOW)
    }

    /// With sizing's peak window shortened (tests: docs/sizing.md).
    pub fn with_sizing_window(metrics: Arc<Metrics>, sizing_window: Duration) -> Self {
        Shared {
            samplers: SharedSamplers::default(),
            // Pod-stats scrapes in flight at once, across all policies.
            scraper: Scraper::new(64),
            metrics,
            histories: Mutex::new(HashMap::new()),
            sizing: super::sizing::SizingState::new(sizing_window),
            url_problems: url_problems::UrlProblems::default(),
            ledger: super::budget::Ledger::default(),
        }
    }
}

/// The policy a pass is for, as its target names it.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The metrics' `namespace` label: the policy's namespace, or `fly:<app>`.
    pub namespace: String,
    pub policy: String,
    pub generation: i64,
    /// The policy carries the pause annotation.
    pub paused: bool,
}

impl Scope {
    /// A policy as the target names it (`namespace`: its namespace, or `fly:<app>`).
    pub fn new(policy: &PoolPolicy, namespace: String) -> Self {
        Scope {
            namespace,
            policy: policy.name_any(),
            generation: policy.metadata.generation.unwrap_or(0),
            paused: policy.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true"),
        }
    }

    /// The key of the policy's sample history.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.policy)
    }
}

/// What a target read of its platform for one pass.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// The workloads the policy governs, with their instances.
    pub subjects: Vec<Subject>,
    /// The policy's last status: remediation history and conditions.
    pub status: PoolPolicyStatus,
    /// Where the remediation history came from, for the report.
    pub history_source: String,
    /// Env entries other managers own.
    pub conflicts: Vec<EnvConflict>,
    /// Remediations other policies recorded for the workloads this one governs.
    pub other_remediations: Vec<RemediationRecord>,
    /// Selected workloads another policy governs.
    pub governed_elsewhere: Vec<GovernedElsewhere>,
}

/// A platform a pass reads and writes.
pub trait Target {
    /// What carrying out a plan came to.
    type Outcome;
    /// Why the platform could not be read.
    type Error;

    /// How the report names the target's things.
    fn words(&self) -> Words;
    /// With one owned env entry in another manager's hands, write none of the
    /// workload's (see [`PlanInput::env_all_or_nothing`]).
    fn env_all_or_nothing(&self) -> bool;
    /// The workloads, the last status, the conflicts known.
    fn read(&mut self, policy: &ResolvedPolicy) -> impl Future<Output = Result<Reading, Self::Error>> + Send;
    /// The policy's database URL, or why it cannot be read.
    fn database_url(&self, policy: &ResolvedPolicy) -> impl Future<Output = Result<String, String>> + Send;
    /// The database sample as the apps see it through the policy's pooler.
    fn through_pooler(
        &self,
        pooler: &ResolvedPooler,
        sampled: Result<Arc<Snapshot>, String>,
    ) -> impl Future<Output = Result<Arc<Snapshot>, String>> + Send;
    /// Carries the plan out, recording in it what did not happen; `read` is what
    /// [`Target::read`] returned (its subjects taken).
    fn execute(&mut self, plan: &mut Plan, read: &Reading) -> impl Future<Output = Self::Outcome> + Send;
}

/// What a pass decided and did.
#[derive(Debug)]
pub struct Passed<O> {
    pub plan: Plan,
    /// The workloads as decided on, with their samples.
    pub workloads: Vec<Workload>,
    /// The database sample's line for the report.
    pub database: String,
    pub history_source: String,
    pub outcome: O,
}

impl<O> Passed<O> {
    /// What the pass would do (or did), for `plan` and `fly plan`.
    pub fn report(&self, scope: &Scope, policy: &ResolvedPolicy, words: &Words) -> PlanReport {
        report::report(
            &report::Heading {
                policy: &scope.policy,
                namespace: &scope.namespace,
                database: &self.database,
                history: &self.history_source,
                limit: policy.discrepancy.as_ref().map(|d| d.max),
                sizing: policy.sizing.mode != crate::policy::sizing::SizingMode::Off,
            },
            words,
            &self.workloads,
            &self.plan,
        )
    }
}

/// One pass of one policy.
pub async fn run<T: Target>(
    shared: &Shared,
    target: &mut T,
    scope: &Scope,
    policy: &ResolvedPolicy,
) -> Result<Passed<T::Outcome>, T::Error> {
    let metrics = shared.metrics.policy(&scope.namespace, &scope.policy);
    let mut reading = target.read(policy).await?;
    let Sample {
        view: sampled,
        server,
        full,
        url,
    } = sample(shared, target, scope, policy).await;
    let now = sampled.as_ref().map(|s| s.now).unwrap_or_else(|_| Timestamp::now());
    let subjects = scrape(&shared.scraper, &metrics, policy, std::mem::take(&mut reading.subjects)).await;
    let (workloads, attributed) = {
        let mut histories = shared.histories.lock().unwrap_or_else(|e| e.into_inner());
        let history = histories.entry(scope.key()).or_default();
        let database = sampled.as_deref().map_err(String::as_str);
        observe::observe(policy, subjects, database, history, now)
    };
    let sizing = shared.sizing.observe(&scope.key(), policy, &workloads, now);
    let budget = budget::database_budget(
        &shared.ledger,
        (scope, policy),
        (&workloads, attributed),
        (url.as_deref().ok(), &server, &sampled),
    );
    let mut plan = decide(
        scope,
        policy,
        &reading,
        (&workloads, budget.as_ref()),
        (&sampled, full.as_ref()),
        (target.env_all_or_nothing(), &sizing, shared.sizing.window),
        now,
    );
    metrics.record_budget(budget.as_ref());
    metrics.record_plan(&plan.status, &plan.rows);
    metrics.record_sizing(&plan.rows);
    metrics.record_database(policy.pool.max_size, sampled.as_deref().ok(), full.is_some());
    let outcome = target.execute(&mut plan, &reading).await;
    shared.sizing.wrote(&scope.key(), &plan.sized, now);
    for s in &plan.skipped {
        metrics.remediation_skipped(s.why.label());
    }
    Ok(Passed {
        database: report::database_line(sampled.as_deref().map_err(String::as_str)),
        history_source: reading.history_source,
        plan,
        workloads,
        outcome,
    })
}

/// The decision, from what was read and observed.
fn decide(
    scope: &Scope,
    policy: &ResolvedPolicy,
    reading: &Reading,
    (workloads, budget): (&[Workload], Option<&crate::decide::budget::Budget>),
    (sampled, full): (&Result<Arc<Snapshot>, String>, Option<&DatabaseFull>),
    (env_all_or_nothing, sizing, window): (bool, &[decide::sizing::WorkloadSizing], Duration),
    now: Timestamp,
) -> Plan {
    decide::plan(&PlanInput {
        policy,
        generation: scope.generation,
        policy_paused: scope.paused,
        status: &reading.status,
        workloads,
        database: Measured::from(sampled.as_ref().map(|s| s.limits()).map_err(Clone::clone)),
        database_full: full,
        conflicts: &reading.conflicts,
        env_all_or_nothing,
        other_remediations: &reading.other_remediations,
        governed_elsewhere: &reading.governed_elsewhere,
        sizing: decide::sizing::SizingInput {
            workloads: sizing,
            window,
        },
        budget,
        now,
    })
}

/// What a pass sampled of its database.
struct Sample {
    /// The sample as the policy's pods see the database: through its pooler when it
    /// names one.
    view: Result<Arc<Snapshot>, String>,
    /// The server's own sample (every backend of every database on it).
    server: Result<Arc<Snapshot>, String>,
    /// The database refused the sampler because it is full.
    full: Option<DatabaseFull>,
    url: Result<String, String>,
}

/// The policy's database sample (through its pooler when it names one), and whether
/// the database refused the sampler because it is full.
async fn sample<T: Target>(shared: &Shared, target: &T, scope: &Scope, policy: &ResolvedPolicy) -> Sample {
    let url = target.database_url(policy).await;
    shared.url_problems.observe(
        &scope.key(),
        &policy.database_url,
        url.as_deref().map_err(String::as_str),
    );
    let (sampled, full) = sample_database(&shared.samplers, &shared.metrics, url.as_deref(), policy.interval).await;
    // Behind a pooler the instances' connections are the pooler's clients.
    let view = match &policy.pooler {
        None => sampled.clone(),
        Some(pooler) => target.through_pooler(pooler, sampled.clone()).await,
    };
    Sample {
        view,
        server: sampled,
        full,
        url,
    }
}

/// A policy's database sample, through the samplers every policy shares (one younger
/// than half the policy's interval is reused), its duration and errors counted; the
/// reason the URL could not be read when it could not. Beside it, the database's
/// refusal when it is full, with its figures as last seen.
pub async fn sample_database(
    samplers: &SharedSamplers,
    metrics: &Metrics,
    url: Result<&str, &String>,
    interval: Duration,
) -> (Result<Arc<Snapshot>, String>, Option<DatabaseFull>) {
    let url = match url {
        Ok(url) => url,
        Err(why) => return (Err(why.clone()), None),
    };
    let sampled = samplers.sample(url, interval / 2).await;
    metrics.record_sample(&sampled);
    // Logged once per sample taken (not per cached copy), named by identity only.
    if sampled.took.is_some() {
        match &sampled.result {
            Ok(s) => tracing::debug!(database = %sampled.database, backends = s.backends.len(), "database sampled"),
            Err(e) => tracing::warn!(database = %sampled.database, error = %e, "database not sampled"),
        }
    }
    if let Some(warning) = &sampled.new_warning {
        tracing::warn!(database = %sampled.database, "{warning}");
    }
    let full = sampled
        .result
        .as_ref()
        .err()
        .and_then(SampleError::full_refusal)
        .map(|refusal| DatabaseFull {
            refusal,
            last_seen: sampled.last_seen.as_deref().map(|s| LastSeen {
                at: s.now,
                max_connections: s.max_connections,
                reserved: s.reserved,
                client_backends: s.backends.len() as u32,
            }),
        });
    (sampled.result.map_err(|e| e.to_string()), full)
}

/// The pool stats of every instance, when the policy asks for them, put on the
/// instance they came from; failed scrapes are counted.
async fn scrape(
    scraper: &Scraper,
    metrics: &PolicyMetrics<'_>,
    policy: &ResolvedPolicy,
    mut subjects: Vec<Subject>,
) -> Vec<Subject> {
    let Some(source) = &policy.pool_stats else {
        return subjects;
    };
    let ips: Vec<_> = subjects.iter().flat_map(|s| s.instances.iter()).map(|i| i.ip).collect();
    let claims = scraper.scrape_instances(source, &ips).await;
    let errors = claims.iter().filter(|c| matches!(c, Measured::Unknown(_))).count();
    metrics.scrape_errors(errors as u64);
    let mut claims = claims.into_iter();
    for instance in subjects.iter_mut().flat_map(|s| s.instances.iter_mut()) {
        // One claim per address asked for; a missing one is unknown, never zero.
        instance.pool = Some(
            claims
                .next()
                .unwrap_or_else(|| Measured::Unknown("pool stats: not scraped".to_owned())),
        );
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Instance, Kind, Verdict};

    /// A target with one workload of one instance whose pool stats endpoint is a
    /// closed port, and no database: what every platform's pass gets from [`run`].
    struct Unreachable {
        executed: usize,
    }

    impl Target for Unreachable {
        type Outcome = usize;
        type Error = String;

        fn words(&self) -> Words {
            Words {
                instance: "instance",
                instance_name: "{workload}-<n>".to_owned(),
            }
        }

        fn env_all_or_nothing(&self) -> bool {
            false
        }

        async fn read(&mut self, _policy: &ResolvedPolicy) -> Result<Reading, String> {
            let workload = Workload {
                kind: Kind::Deployment,
                name: "web".to_owned(),
                replicas: 1,
                ready_replicas: 1,
                instances: vec![Instance {
                    name: "web-0".to_owned(),
                    ready: true,
                    started_at: Some(Timestamp::UNIX_EPOCH),
                    samples: Vec::new(),
                }],
                ..Default::default()
            };
            Ok(Reading {
                subjects: vec![Subject {
                    workload,
                    instances: vec![SubjectInstance {
                        ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                        names_itself: true,
                        pool: None,
                    }],
                    database_user: "web".to_owned(),
                    key: "Deployment/web".to_owned(),
                }],
                ..Default::default()
            })
        }

        async fn database_url(&self, _policy: &ResolvedPolicy) -> Result<String, String> {
            Err("no database in this test".to_owned())
        }

        async fn through_pooler(
            &self,
            _pooler: &ResolvedPooler,
            sampled: Result<Arc<Snapshot>, String>,
        ) -> Result<Arc<Snapshot>, String> {
            sampled
        }

        async fn execute(&mut self, _plan: &mut Plan, _read: &Reading) -> usize {
            self.executed += 1;
            self.executed
        }
    }

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    fn policy(port: u16) -> ResolvedPolicy {
        let yaml = format!(
            "selector: {{matchLabels: {{app: web}}}}
interval: 30s
database: {{urlSecretRef: {{name: pg, key: url}}, attribution: ApplicationName}}
pool: {{maxSize: 10}}
poolStats: {{port: {port}, path: /pool, format: Json, checkedOut: /out, trackedActive: /active, timeout: 1s}}
discrepancy: {{measure: PoolMinusTracked, max: 2, sustainedFor: 1m}}
remediation: {{action: RestartPod}}
"
        );
        let spec = serde_saphyr::from_str(&yaml).unwrap();
        crate::policy::validate(&spec).unwrap()
    }

    #[tokio::test]
    async fn every_target_counts_failed_scrapes_and_judges_their_instances_unknown() {
        let shared = Shared::new(Arc::new(Metrics::new()));
        let scope = Scope {
            namespace: "fly:sportsbook".to_owned(),
            policy: "pools".to_owned(),
            generation: 1,
            paused: false,
        };
        let policy = policy(closed_port());
        let mut target = Unreachable { executed: 0 };
        let passed = run(&shared, &mut target, &scope, &policy).await.unwrap();
        assert_eq!(passed.outcome, 1, "executed once");
        let verdicts = &passed.plan.workloads[0].verdicts;
        assert!(matches!(verdicts["web-0"], Verdict::Unknown(_)), "{verdicts:?}");
        let text = shared.metrics.render();
        assert!(
            text.contains(r#"poolwarden_pool_stats_scrape_errors_total{namespace="fly:sportsbook",policy="pools"} 1"#),
            "{text}"
        );
        // The history keeps the sample, unknown, under the instance's name.
        let histories = shared.histories.lock().unwrap();
        let samples = histories["fly:sportsbook/pools"].samples("web-0");
        assert_eq!(samples.len(), 1);
        assert!(matches!(samples[0].pool, Some(Measured::Unknown(_))), "{samples:?}");
    }
}
