//! One pass of one Fly policy: read (machines, app secret names, the shared database
//! sample, pool stats), decide (the pure core), act (unless planning), report.
//!
//! Writes go one machine at a time per group, each under a lease: update the config
//! env (or restart), wait until the new instance is started, release. A group is
//! never taken below `fly.minStarted` started machines; a failed or timed-out step
//! stops that group's writes for this pass.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::SignedDuration;
use kube::ResourceExt;
use serde_json::Value;
use tracing::{info, warn};

use super::{
    api::{ApiError, Lease, Machine, MachineState, MachinesApi, Waited},
    group::{self, Group},
};
use crate::{
    decide::{About, EnvValue, Plan, env::desired_env},
    observe::postgres::Snapshot,
    platform::{
        pass::{self, Reading, Scope},
        report::{PlanReport, Words},
    },
    policy::{
        FlySecrets, FlyTarget, PoolPolicy, PoolPolicyStatus, RemediationAction, RemediationRecord, ResolvedPolicy,
        validate,
        validate::{ResolvedPooler, UrlSource},
    },
    telemetry::metrics::{Metrics, PolicyMetrics},
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
}

impl FlyContext {
    pub fn new(api: MachinesApi, metrics: Arc<Metrics>, write: bool) -> Self {
        Self {
            api,
            shared: pass::Shared::new(metrics),
            write,
            start_timeout: Duration::from_secs(60),
            statuses: Mutex::new(HashMap::new()),
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
            let applied = g
                .machines
                .iter()
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
        };
        if let Err(why) = &found.secrets {
            w.not_done.push(format!("{why}: pool env left alone this pass"));
        }
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

/// Carries a plan out on the app's machines, one at a time per group.
struct Writer<'a> {
    ctx: &'a FlyContext,
    app: &'a str,
    policy: &'a str,
    target: &'a FlyTarget,
    metrics: PolicyMetrics<'a>,
    done: Vec<String>,
    not_done: Vec<String>,
}

/// Why one machine step did not complete.
enum StepError {
    /// The group is at its minimum of started machines.
    MinStarted(String),
    Api(String),
}

impl Writer<'_> {
    /// Started machines of the group, from the pass's one list: machines are taken
    /// down one at a time and each is back up, checks passing, before the next, so
    /// the count holds for the whole pass (and Fly's rate limits are not spent on
    /// listing again before every step).
    fn started(&self, group: &Group) -> usize {
        group
            .machines
            .iter()
            .filter(|m| m.is_active() && m.state == MachineState::Started)
            .count()
    }

    /// Refuses to take a started machine down when that would leave the group below
    /// its minimum.
    async fn check_min_started(&self, group: &Group, m: &Machine) -> Result<(), StepError> {
        if m.state != MachineState::Started {
            return Ok(());
        }
        let started = self.started(group);
        let min = self.target.min_started as usize;
        if started.saturating_sub(1) < min {
            return Err(StepError::MinStarted(format!(
                "group {} has {started} started machine(s) and minStarted is {min}",
                group.name
            )));
        }
        Ok(())
    }

    /// Runs `step` under a lease on the machine, releasing it whatever happens.
    async fn leased<F, Fut>(&self, m: &Machine, step: F) -> Result<(), StepError>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<(), ApiError>>,
    {
        let ttl = self.ctx.start_timeout + Duration::from_secs(60);
        let lease = self
            .ctx
            .api
            .acquire_lease(self.app, &m.id, ttl)
            .await
            .map_err(|e| StepError::Api(format!("lease on machine {}: {e}", m.id)))?;
        let result = step(lease.clone()).await;
        if let Err(e) = self.ctx.api.release_lease(self.app, &m.id, &lease).await {
            warn!(machine = %m.id, error = %e, "releasing the lease");
        }
        result.map_err(|e| StepError::Api(e.to_string()))
    }

    /// Waits until the machine's instance is started and, when it declares health
    /// checks, until they pass (as `flyctl` does between machines); a timeout is an
    /// error, and the group's next machine is not touched.
    async fn wait_started(&self, id: &str, instance_id: &str, checks: bool) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + self.ctx.start_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .ctx
                .api
                .wait(self.app, id, instance_id, MachineState::Started, left)
                .await?
            {
                Waited::Reached if checks => return self.wait_checks(id, deadline).await,
                Waited::Reached => return Ok(()),
                Waited::TimedOut if left > Duration::from_secs(1) => continue,
                Waited::TimedOut => {
                    return Err(ApiError::Status {
                        method: hyper::Method::GET,
                        path: format!("machine {id} wait"),
                        status: hyper::StatusCode::REQUEST_TIMEOUT,
                        message: format!("not started within {} s", self.ctx.start_timeout.as_secs()),
                    });
                }
            }
        }
    }

    /// Polls the machine until every declared check passes.
    async fn wait_checks(&self, id: &str, deadline: tokio::time::Instant) -> Result<(), ApiError> {
        loop {
            let m = self.ctx.api.get_machine(self.app, id).await?;
            if m.checks_pass() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Status {
                    method: hyper::Method::GET,
                    path: format!("machine {id} checks"),
                    status: hyper::StatusCode::REQUEST_TIMEOUT,
                    message: format!("checks not passing within {} s", self.ctx.start_timeout.as_secs()),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Restarts the machine (lease, restart, wait for started, release).
    async fn restart_machine(&self, group: &Group, m: &Machine) -> Result<(), StepError> {
        self.check_min_started(group, m).await?;
        self.leased(m, |lease| async move {
            self.ctx.api.restart(self.app, &m.id, &lease).await?;
            let after = self.ctx.api.get_machine(self.app, &m.id).await?;
            self.wait_started(&m.id, &after.instance_id, after.has_checks()).await
        })
        .await
    }

    /// Each machine of a group whose env is due gets the plan's owned env, its own
    /// name where the instance's name is wanted; app secrets win over machine env, so
    /// secret-backed variables are never written.
    async fn reconcile_env(&mut self, plan: &Plan, groups: &[Group], secret_keys: &BTreeSet<String>) {
        for change in &plan.env {
            let Some(g) = groups.iter().find(|g| g.name == change.workload.name) else {
                continue;
            };
            let owned = change.owned.get(&g.name).cloned().unwrap_or_default();
            for m in &g.machines {
                let want = group::machine_env(&owned, &group::instance_name(self.app, &g.name, &m.id));
                let diff = group::env_diff(m, &want, secret_keys);
                if diff.is_empty() {
                    continue;
                }
                if !self.update_one(g, m, &diff).await {
                    break;
                }
            }
        }
    }

    /// One machine's env update; false when the group's next machine must wait.
    async fn update_one(&mut self, g: &Group, m: &Machine, diff: &BTreeMap<String, String>) -> bool {
        let keys: Vec<&str> = diff.keys().map(String::as_str).collect();
        match self.update_env(g, m, diff).await {
            Ok(()) => {
                self.metrics.env_write("applied");
                info!(policy = %self.policy, machine = %m.id, group = %g.name, env = %keys.join(","), "machine env updated");
                self.done.push(format!("{}/{}: set {}", g.name, m.id, keys.join(", ")));
                true
            }
            Err(StepError::MinStarted(why)) => {
                self.not_done
                    .push(format!("{}/{}: env not updated: {why}", g.name, m.id));
                false
            }
            Err(StepError::Api(why)) => {
                self.metrics.env_write("error");
                warn!(policy = %self.policy, machine = %m.id, error = %why, "machine env update failed");
                self.not_done
                    .push(format!("{}/{}: env update failed: {why}", g.name, m.id));
                false
            }
        }
    }

    async fn update_env(&self, g: &Group, m: &Machine, diff: &BTreeMap<String, String>) -> Result<(), StepError> {
        self.check_min_started(g, m).await?;
        let was_started = m.state == MachineState::Started;
        self.leased(m, |lease| async move {
            // The whole config as it is now, changed only in env.
            let fresh = self.ctx.api.get_machine(self.app, &m.id).await?;
            let mut config = fresh.config.clone();
            if !config["env"].is_object() {
                config["env"] = Value::Object(Default::default());
            }
            for (k, v) in diff {
                config["env"][k] = Value::String(v.clone());
            }
            // A machine that is not running (stopped, parked by autostop) stays so:
            // it reads the new env at its next start.
            let updated = self
                .ctx
                .api
                .update_machine(self.app, &fresh, &config, !was_started, &lease)
                .await?;
            if was_started {
                self.wait_started(&m.id, &updated.instance_id, updated.has_checks())
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Sets the managed app secrets, then restarts each machine that has not started
    /// with them, one at a time, recording the digest on it once it is up.
    async fn apply_secrets(&mut self, plan: &Plan, groups: &[Group], values: &BTreeMap<String, String>, digest: &str) {
        let pending: Vec<(&Group, &Machine)> = groups
            .iter()
            .filter(|g| plan.env.iter().any(|c| c.workload.name == g.name))
            .flat_map(|g| g.machines.iter().map(move |m| (g, m)))
            .filter(|(_, m)| m.metadata().get(group::SECRETS_KEY).map(String::as_str) != Some(digest))
            .collect();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.ctx.api.set_secrets(self.app, values).await {
            self.not_done.push(format!("setting app secrets: {e}"));
            return;
        }
        let names: Vec<&str> = values.keys().map(String::as_str).collect();
        self.done.push(format!("app secrets set: {}", names.join(", ")));
        let mut stopped_groups = BTreeSet::new();
        for (g, m) in pending {
            // A machine that is not running reads the secrets at its next start;
            // restarting it would start it.
            if stopped_groups.contains(&g.name) || m.state != MachineState::Started {
                continue;
            }
            let step = async {
                self.restart_machine(g, m).await?;
                self.ctx
                    .api
                    .set_metadata(self.app, &m.id, group::SECRETS_KEY, digest)
                    .await
                    .map_err(|e| StepError::Api(e.to_string()))
            };
            match step.await {
                Ok(()) => self
                    .done
                    .push(format!("{}/{}: restarted to read the app secrets", g.name, m.id)),
                Err(StepError::MinStarted(why)) | Err(StepError::Api(why)) => {
                    self.not_done
                        .push(format!("{}/{}: not restarted for the secrets: {why}", g.name, m.id));
                    stopped_groups.insert(g.name.clone());
                }
            }
        }
    }

    /// Carries out the plan's restarts; returns the records of those that did not happen.
    async fn remediate(&mut self, plan: &Plan, groups: &[Group]) -> Vec<RemediationRecord> {
        let mut refused = Vec::new();
        for r in &plan.remediations {
            if !self.restart_record(&r.record, groups).await {
                refused.push(r.record.clone());
            }
        }
        refused
    }

    /// One remediation: the record goes on the machine before the restart, so a
    /// reconciler killed in between cannot restart it again within the cooldown; it
    /// is taken off again when nothing was restarted. True when something restarted.
    async fn restart_record(&mut self, record: &RemediationRecord, groups: &[Group]) -> bool {
        let Some(g) = groups.iter().find(|g| g.name == record.workload) else {
            return false;
        };
        let targets: Vec<&Machine> = match (record.action, &record.pod) {
            (RemediationAction::RestartPod, Some(pod)) => {
                g.machines.iter().filter(|m| m.id == group::machine_id(pod)).collect()
            }
            _ => g.machines.iter().collect(),
        };
        let Some(first) = targets.first().copied() else {
            self.not_done
                .push(format!("{}: machine of {:?} is gone", g.name, record.pod));
            self.metrics.remediation_skipped("machine_gone");
            return false;
        };
        if let Err(e) = self.record_on(first, record).await {
            self.not_done.push(format!(
                "{}/{}: restart not recorded, not restarted: {e}",
                g.name, first.id
            ));
            self.metrics.remediation_skipped("record_failed");
            return false;
        }
        let (restarted, failure) = self.restart_all(g, &targets).await;
        if restarted > 0 {
            self.metrics
                .restarted(&format!("{:?}", record.action), &format!("{:?}", record.measure));
            info!(policy = %self.policy, group = %g.name, machine = ?record.pod, reason = %record.reason, "restarted");
            self.done.push(format!(
                "{}: restarted {} machine(s): {}",
                g.name, restarted, record.reason
            ));
        }
        if let Some((label, why)) = failure {
            warn!(policy = %self.policy, group = %g.name, error = %why, "restart not carried out");
            self.metrics.remediation_skipped(label);
            self.not_done
                .push(format!("{}: restart not carried out: {why}", g.name));
            if restarted == 0 {
                let records = group::without_record(first, record);
                let _ = self
                    .ctx
                    .api
                    .set_metadata(self.app, &first.id, group::RESTARTS_KEY, &records)
                    .await;
                return false;
            }
        }
        true
    }

    /// Puts the record among the machine's restart records (those older than the
    /// budget's hour and any cooldown are not needed again).
    async fn record_on(&self, m: &Machine, record: &RemediationRecord) -> Result<(), ApiError> {
        let keep_since = record
            .at
            .saturating_sub(SignedDuration::from_hours(2))
            .unwrap_or(record.at);
        let records = group::with_record(m, record, keep_since);
        self.ctx
            .api
            .set_metadata(self.app, &m.id, group::RESTARTS_KEY, &records)
            .await
    }

    /// Restarts the machines one at a time, stopping at the first that fails: how
    /// many restarted, and the failure's metric label and words.
    async fn restart_all(&self, g: &Group, targets: &[&Machine]) -> (usize, Option<(&'static str, String)>) {
        let mut restarted = 0;
        for m in targets {
            match self.restart_machine(g, m).await {
                Ok(()) => restarted += 1,
                Err(StepError::MinStarted(why)) => return (restarted, Some(("min_started", why))),
                Err(StepError::Api(why)) => return (restarted, Some(("restart_failed", why))),
            }
        }
        (restarted, None)
    }
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
