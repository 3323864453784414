//! One pass of one Fly policy: read (machines, app secret names, the shared database
//! sample, pool stats), decide (the pure core), act (unless planning), report.
//!
//! Writes ([`super::writer`]) go one machine at a time per group, each under a lease:
//! update the config env (or restart), wait until the new version is started,
//! release. A group is never taken below `fly.minStarted` started machines; a failed
//! or timed-out step stops that group's writes for this pass.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::ResourceExt;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{
    api::MachinesApi,
    group::{self, Group},
    writer::Writer,
};
use crate::{
    decide::{About, EnvValue, Plan, env::desired_env},
    observe::postgres::Snapshot,
    platform::{
        pass::{self, Reading, Scope},
        report::{PlanReport, Words},
    },
    policy::{
        FlySecrets, FlyTarget, PoolPolicy, PoolPolicyStatus, ResolvedPolicy, validate,
        validate::{ResolvedPooler, UrlSource},
    },
    telemetry::metrics::Metrics,
};

/// What every pass shares.
pub struct FlyContext {
    pub api: MachinesApi,
    /// Samplers, scraper, metrics and sample histories.
    pub shared: pass::Shared,
    /// Whether this pass may write (false for `poolwarden fly plan`).
    pub write: bool,
    /// Longest wait for a machine to start after an update or restart.
    pub start_timeout: Duration,
    /// Last status per policy name (conditions' transition times).
    pub statuses: Mutex<HashMap<String, PoolPolicyStatus>>,
    /// Lease releases started by a pass that was cancelled mid-step.
    releases: Mutex<Vec<JoinHandle<()>>>,
}

impl FlyContext {
    pub fn new(api: MachinesApi, metrics: Arc<Metrics>, write: bool) -> Self {
        Self {
            api,
            shared: pass::Shared::new(metrics),
            write,
            start_timeout: Duration::from_secs(60),
            statuses: Mutex::new(HashMap::new()),
            releases: Mutex::new(Vec::new()),
        }
    }

    /// Runs a lease release on its own, for [`FlyContext::finish_releases`] to await.
    pub fn spawn_release(&self, release: impl Future<Output = ()> + Send + 'static) {
        let mut releases = self.releases.lock().unwrap_or_else(|e| e.into_inner());
        releases.retain(|h| !h.is_finished());
        releases.push(tokio::spawn(release));
    }

    /// Waits (at most `within`) for the releases of leases a cancelled pass held.
    pub async fn finish_releases(&self, within: Duration) {
        let pending: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.releases.lock().unwrap_or_else(|e| e.into_inner()));
        let all = futures::future::join_all(pending);
        if tokio::time::timeout(within, all).await.is_err() {
            warn!("leases not released in time: they expire by their TTL");
        }
    }
}

/// What a pass found and did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub report: PlanReport,
    pub status: PoolPolicyStatus,
    /// Writes carried out, in words.
    pub done: Vec<String>,
    /// Writes that were due but not carried out, and why.
    pub not_done: Vec<String>,
}

/// The label namespace of a Fly policy's metrics: `fly:<app>`.
fn scope(target: &FlyTarget) -> String {
    format!("fly:{}", target.app)
}

/// The words of a Fly report.
pub fn words(app: &str) -> Words {
    Words {
        instance: "machine",
        instance_name: group::instance_name(app, "{workload}", "<machine id>"),
    }
}

/// One pass. `Err` when nothing could be read (invalid policy, the API unreachable).
pub async fn pass(ctx: &FlyContext, policy: &PoolPolicy) -> Result<Outcome, String> {
    let name = policy.name_any();
    let resolved = validate(&policy.spec).map_err(|ps| {
        let lines: Vec<String> = ps.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
        format!("policy {name}: {}", lines.join("; "))
    })?;
    let Some(target) = resolved.fly().cloned() else {
        return Err(format!("policy {name} targets Kubernetes workloads, not a Fly app"));
    };
    let scope = Scope::new(policy, scope(&target));
    let mut app = App {
        ctx,
        target: &target,
        policy: &name,
        read: None,
    };
    let passed = pass::run(&ctx.shared, &mut app, &scope, &resolved).await?;
    let status = passed.plan.status.clone();
    if ctx.write {
        ctx.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), status.clone());
    }
    let report = passed.report(&scope, &resolved, &words(&target.app));
    let (done, not_done) = passed.outcome;
    Ok(Outcome {
        report,
        status,
        done,
        not_done,
    })
}

/// A Fly app as a pass reads and writes it.
struct App<'a> {
    ctx: &'a FlyContext,
    target: &'a FlyTarget,
    policy: &'a str,
    /// What [`pass::Target::read`] found.
    read: Option<Machines>,
}

/// The app's machines by group and what its secrets mean for the env.
struct Machines {
    groups: Vec<Group>,
    /// The app's secret names, or why they could not be listed (then no env is written).
    secrets: Result<BTreeSet<String>, String>,
    /// Owned variables that are app secrets: never written as machine env.
    secret_keys: BTreeSet<String>,
    /// With `secrets: Manage`, the values poolwarden keeps as app secrets.
    managed_secrets: BTreeMap<String, String>,
    secrets_digest: String,
}

impl App<'_> {
    /// The app's machines and secret names.
    async fn machines(&self, desired: &BTreeMap<String, EnvValue>) -> Result<Machines, String> {
        let app = &self.target.app;
        let machines = self
            .ctx
            .api
            .list_machines(app)
            .await
            .map_err(|e| format!("listing the machines of {app}: {e}"))?;
        // Unknown secrets are not "no secrets": without the list, no env is written.
        let secrets: Result<BTreeSet<String>, String> = self
            .ctx
            .api
            .secret_names(app)
            .await
            .map(|names| names.into_iter().collect())
            .map_err(|e| format!("listing the secrets of {app}: {e}"));
        let secret_keys: BTreeSet<String> = match &secrets {
            Ok(s) => desired.keys().filter(|k| s.contains(*k)).cloned().collect(),
            Err(_) => BTreeSet::new(),
        };
        let managed_secrets: BTreeMap<String, String> = match self.target.secrets {
            FlySecrets::Manage => desired
                .iter()
                .filter(|(k, _)| secret_keys.contains(*k))
                .filter_map(|(k, v)| match v {
                    EnvValue::Literal(s) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
            FlySecrets::Report => BTreeMap::new(),
        };
        Ok(Machines {
            groups: group::groups(self.target, &machines),
            secrets_digest: digest(&managed_secrets),
            secrets,
            secret_keys,
            managed_secrets,
        })
    }
}

impl Machines {
    /// The groups as the pass measures them. A managed secret is in place on a group
    /// when every machine started with it.
    fn subjects(&self, app: &str, owned: &BTreeSet<String>) -> Vec<pass::Subject> {
        let mut subjects: Vec<pass::Subject> = self.groups.iter().map(|g| group::subject(app, g, owned)).collect();
        if self.managed_secrets.is_empty() {
            return subjects;
        }
        for (s, g) in subjects.iter_mut().zip(&self.groups) {
            // Machines that do not run are not asked to run the secrets (see
            // `Writer::apply_secrets`).
            let applied = g
                .machines
                .iter()
                .filter(|m| m.is_up())
                .all(|m| m.metadata().get(group::SECRETS_KEY) == Some(&self.secrets_digest));
            for (k, v) in &self.managed_secrets {
                let value = if applied {
                    EnvValue::Literal(v.clone())
                } else {
                    EnvValue::Other("app secret not yet read by every machine".to_owned())
                };
                if let Some(c) = s.workload.containers.first_mut() {
                    c.env.insert(k.clone(), value);
                }
            }
        }
        subjects
    }
}

/// The database URL (or a pooler's admin URL) from the reconciler's environment.
fn url_from_env(source: &UrlSource, field: &str) -> Result<String, String> {
    match source {
        UrlSource::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
        UrlSource::Secret(_) => Err(format!(
            "{field}SecretRef is for Kubernetes; a Fly policy uses {}FromEnv",
            field.rsplit('.').next().unwrap_or(field)
        )),
    }
}

impl pass::Target for App<'_> {
    /// Writes done and not done, in words.
    type Outcome = (Vec<String>, Vec<String>);
    type Error = String;

    fn words(&self) -> Words {
        words(&self.target.app)
    }

    fn env_all_or_nothing(&self) -> bool {
        false
    }

    async fn read(&mut self, policy: &ResolvedPolicy) -> Result<Reading, String> {
        let desired = desired_env(policy);
        let found = self.machines(&desired).await?;
        let owned: BTreeSet<String> = desired.keys().cloned().collect();
        let conflicts = match self.target.secrets {
            FlySecrets::Report => group::secret_conflicts(&found.groups, &desired, &found.secret_keys),
            FlySecrets::Manage => Vec::new(),
        };
        // Budgets and cooldowns count the restarts recorded on the machines themselves.
        let mut status = self
            .ctx
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(self.policy)
            .cloned()
            .unwrap_or_default();
        status.remediations = group::restart_history(&found.groups);
        let reading = Reading {
            subjects: found.subjects(&self.target.app, &owned),
            status,
            history_source: "from the machines' metadata".to_owned(),
            conflicts,
            other_remediations: Vec::new(),
            governed_elsewhere: Vec::new(),
        };
        self.read = Some(found);
        Ok(reading)
    }

    async fn database_url(&self, policy: &ResolvedPolicy) -> Result<String, String> {
        url_from_env(&policy.database_url, "database.url")
    }

    async fn through_pooler(
        &self,
        pooler: &ResolvedPooler,
        sampled: Result<Arc<Snapshot>, String>,
    ) -> Result<Arc<Snapshot>, String> {
        let admin_url = url_from_env(&pooler.admin_url, "database.pooler.adminUrl");
        crate::platform::pooler::sample_through_pooler(sampled, admin_url, None).await
    }

    async fn execute(&mut self, plan: &mut Plan, _read: &Reading) -> (Vec<String>, Vec<String>) {
        for e in &plan.events {
            let group = match &e.about {
                About::Workload(w) => w.name.as_str(),
                About::Policy => "",
            };
            if e.warning {
                warn!(policy = %self.policy, %group, reason = %e.reason.as_str(), "{}", e.message);
            } else {
                info!(policy = %self.policy, %group, reason = %e.reason.as_str(), "{}", e.message);
            }
        }
        let Some(found) = self.read.take() else {
            return (Vec::new(), Vec::new());
        };
        let mut w = Writer {
            ctx: self.ctx,
            app: &self.target.app,
            target: self.target,
            metrics: self.ctx.shared.metrics.policy(&scope(self.target), self.policy),
            policy: self.policy,
            done: Vec::new(),
            not_done: Vec::new(),
            moved: Default::default(),
        };
        if let Err(why) = &found.secrets {
            w.not_done.push(format!("{why}: pool env left alone this pass"));
        }
        w.report_unwritable(&found.groups);
        if self.ctx.write {
            if found.secrets.is_ok() {
                w.reconcile_env(plan, &found.groups, &found.secret_keys).await;
                if !found.managed_secrets.is_empty() {
                    w.apply_secrets(plan, &found.groups, &found.managed_secrets, &found.secrets_digest)
                        .await;
                }
            }
            let refused = w.remediate(plan, &found.groups).await;
            plan.record_outcomes(&refused);
        }
        (w.done, w.not_done)
    }
}

/// A stable digest of the managed secret values, recorded on each machine that
/// started with them (FNV-1a: stable across builds, unlike std's hasher).
fn digest(values: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in values {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The interval of the policies' next pass: the shortest of theirs.
pub fn interval(policies: &[PoolPolicy]) -> Duration {
    policies
        .iter()
        .filter_map(|p| validate(&p.spec).ok())
        .map(|r: ResolvedPolicy| r.interval)
        .min()
        .unwrap_or(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_stable_and_tells_values_apart() {
        let a = BTreeMap::from([("DB_POOL_MAX".to_owned(), "10".to_owned())]);
        let b = BTreeMap::from([("DB_POOL_MAX".to_owned(), "1".to_owned())]);
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a).len(), 16);
    }
}
