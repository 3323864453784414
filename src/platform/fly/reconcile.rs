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

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::Value;
use tracing::{info, warn};

use super::{
    api::{ApiError, Lease, Machine, MachinesApi, Waited},
    group::{self, Group},
};
use crate::{
    decide::{self, EnvConflict, EnvValue, Plan, PlanInput, env::desired_env},
    observation::Measured,
    observe::{history::History, pass, pool_stats::Scraper, shared::SharedSamplers},
    platform::report::{self, Report},
    policy::{
        FlySecrets, FlyTarget, PAUSED_ANNOTATION, PoolPolicy, PoolPolicyStatus, RemediationAction, RemediationRecord,
        ResolvedPolicy, validate, validate::UrlSource,
    },
    telemetry::metrics::{Metrics, ReasonLabels, RestartLabels, ResultLabels},
};

/// What every pass shares.
pub struct FlyContext {
    pub api: MachinesApi,
    pub samplers: SharedSamplers,
    pub scraper: Scraper,
    pub metrics: Arc<Metrics>,
    /// Whether this pass may write (false for `poolwarden fly plan`).
    pub write: bool,
    /// Longest wait for a machine to start after an update or restart.
    pub start_timeout: Duration,
    /// Samples per policy name, for `sustainedFor`.
    pub histories: Mutex<HashMap<String, History>>,
    /// Last status per policy name (conditions' transition times).
    pub statuses: Mutex<HashMap<String, PoolPolicyStatus>>,
}

impl FlyContext {
    pub fn new(api: MachinesApi, metrics: Arc<Metrics>, write: bool) -> Self {
        Self {
            api,
            samplers: SharedSamplers::default(),
            scraper: Scraper::new(64),
            metrics,
            write,
            start_timeout: Duration::from_secs(60),
            histories: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
        }
    }
}

/// What a pass found and did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub report: Report,
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
    let app = target.app.clone();
    let ns = scope(&target);

    let machines = ctx
        .api
        .list_machines(&app)
        .await
        .map_err(|e| format!("listing the machines of {app}: {e}"))?;
    let groups = group::groups(&target, &machines);
    let desired = desired_env(&resolved);
    let owned: BTreeSet<String> = desired.keys().cloned().collect();
    // Unknown secrets are not "no secrets": without the list, no env is written.
    let secrets: Result<BTreeSet<String>, String> = ctx
        .api
        .secret_names(&app)
        .await
        .map(|names| names.into_iter().collect())
        .map_err(|e| format!("listing the secrets of {app}: {e}"));
    let secret_keys: BTreeSet<String> = match &secrets {
        Ok(s) => owned.intersection(s).cloned().collect(),
        Err(_) => BTreeSet::new(),
    };
    let managed_secrets: BTreeMap<String, String> = match target.secrets {
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
    let secrets_digest = digest(&managed_secrets);
    let conflicts: Vec<EnvConflict> = match target.secrets {
        FlySecrets::Report => group::secret_conflicts(&groups, &desired, &secret_keys),
        FlySecrets::Manage => Vec::new(),
    };

    let mut subjects: Vec<pass::Subject> = groups.iter().map(|g| group::subject(&app, g, &owned)).collect();
    if !managed_secrets.is_empty() {
        // A managed secret is in place on a group when every machine started with it.
        for (s, g) in subjects.iter_mut().zip(&groups) {
            let applied = g
                .machines
                .iter()
                .all(|m| m.metadata().get(group::SECRETS_KEY) == Some(&secrets_digest));
            for (k, v) in &managed_secrets {
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
    }

    // The database, through the reconciler's environment.
    let url = match &resolved.database_url {
        UrlSource::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
        UrlSource::Secret(_) => Err("database.urlSecretRef is for Kubernetes; a Fly policy uses urlFromEnv".to_owned()),
    };
    let sampled = crate::platform::sample_database(
        &ctx.samplers,
        &ctx.metrics,
        url.as_deref().map_err(String::as_str),
        resolved.interval,
    )
    .await;
    // Behind a pooler the machines' connections are the pooler's clients.
    let sampled = match &resolved.pooler {
        None => sampled,
        Some(pooler) => {
            let admin_url = match &pooler.admin_url {
                UrlSource::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
                UrlSource::Secret(_) => Err(
                    "database.pooler.adminUrlSecretRef is for Kubernetes; a Fly policy uses adminUrlFromEnv".to_owned(),
                ),
            };
            crate::platform::pooler::sample_through_pooler(sampled, admin_url, None).await
        }
    };
    let now = sampled.as_ref().map(|s| s.now).unwrap_or_else(|_| Timestamp::now());
    let claims = match &resolved.pool_stats {
        None => None,
        Some(source) => {
            let ips: Vec<_> = subjects.iter().flat_map(|s| s.instances.iter()).map(|i| i.ip).collect();
            Some(ctx.scraper.scrape_instances(source, &ips).await)
        }
    };
    let workloads = {
        let mut histories = ctx.histories.lock().unwrap_or_else(|e| e.into_inner());
        let history = histories.entry(name.clone()).or_default();
        pass::observe(
            &resolved,
            subjects,
            sampled.as_deref().map_err(String::as_str),
            claims.as_deref(),
            history,
            now,
        )
    };

    // Budgets and cooldowns count the restarts recorded on the machines themselves.
    let mut current = ctx
        .statuses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned()
        .unwrap_or_default();
    current.remediations = group::restart_history(&groups);
    let input = PlanInput {
        policy: &resolved,
        generation: policy.metadata.generation.unwrap_or(1),
        policy_paused: policy.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true"),
        status: &current,
        workloads: &workloads,
        database: Measured::from(sampled.as_ref().map(|s| s.limits()).map_err(Clone::clone)),
        conflicts: &conflicts,
        env_all_or_nothing: false,
        other_remediations: &[],
        governed_elsewhere: &[],
        now,
    };
    let mut plan = decide::plan(&input);
    ctx.metrics.record_plan(&ns, &name, &plan);
    ctx.metrics
        .record_database(&ns, &name, resolved.pool.max_size, sampled.as_deref().ok());
    for e in &plan.events {
        if e.warning {
            warn!(policy = %name, group = %e.object_name, reason = %e.reason, "{}", e.message);
        } else {
            info!(policy = %name, group = %e.object_name, reason = %e.reason, "{}", e.message);
        }
    }

    let mut done = Vec::new();
    let mut not_done = Vec::new();
    if let Err(why) = &secrets {
        not_done.push(format!("{why}: pool env left alone this pass"));
    }
    if ctx.write {
        let mut w = Writer {
            ctx,
            app: &app,
            policy: &name,
            ns: &ns,
            target: &target,
            done: &mut done,
            not_done: &mut not_done,
        };
        if secrets.is_ok() {
            w.reconcile_env(&plan, &groups, &desired, &secret_keys).await;
            if !managed_secrets.is_empty() {
                w.apply_secrets(&plan, &groups, &managed_secrets, &secrets_digest).await;
            }
        }
        let refused = w.remediate(&plan, &groups, now).await;
        plan.record_outcomes(&refused);
    }
    let status = plan.status.clone();
    if ctx.write {
        ctx.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), status.clone());
    }
    let database = report::database_line(sampled.as_deref().map_err(String::as_str));
    let report = report::report(
        &name,
        &ns,
        database,
        "from the machines' metadata".to_owned(),
        &workloads,
        &plan,
        resolved.discrepancy.as_ref().map(|d| d.max),
    );
    Ok(Outcome {
        report,
        status,
        done,
        not_done,
    })
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

struct Writer<'a> {
    ctx: &'a FlyContext,
    app: &'a str,
    policy: &'a str,
    ns: &'a str,
    target: &'a FlyTarget,
    done: &'a mut Vec<String>,
    not_done: &'a mut Vec<String>,
}

/// Why one machine step did not complete.
enum StepError {
    /// The group is at its minimum of started machines.
    MinStarted(String),
    Api(String),
}

impl Writer<'_> {
    fn count(&self, result: &str) {
        self.ctx
            .metrics
            .env_writes
            .get_or_create(&ResultLabels {
                namespace: self.ns.to_owned(),
                policy: self.policy.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    fn skip(&self, reason: &str) {
        self.ctx
            .metrics
            .skipped_remediations
            .get_or_create(&ReasonLabels {
                namespace: self.ns.to_owned(),
                policy: self.policy.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Started machines of the group, from the pass's one list: machines are taken
    /// down one at a time and each is back up, checks passing, before the next, so
    /// the count holds for the whole pass (and Fly's rate limits are not spent on
    /// listing again before every step).
    fn started(&self, group: &Group) -> usize {
        group
            .machines
            .iter()
            .filter(|m| m.is_active() && m.state == "started")
            .count()
    }

    /// Refuses to take a started machine down when that would leave the group below
    /// its minimum.
    async fn check_min_started(&self, group: &Group, m: &Machine) -> Result<(), StepError> {
        if m.state != "started" {
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
            match self.ctx.api.wait(self.app, id, instance_id, "started", left).await? {
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

    async fn reconcile_env(
        &mut self,
        plan: &Plan,
        groups: &[Group],
        desired: &BTreeMap<String, EnvValue>,
        secret_keys: &BTreeSet<String>,
    ) {
        for change in &plan.env {
            let Some(g) = groups.iter().find(|g| g.name == change.workload) else {
                continue;
            };
            for m in &g.machines {
                let want = group::machine_env(desired, &group::instance_name(self.app, &g.name, &m.id));
                // Secret-backed variables are never written as env: the secret wins.
                let diff = group::env_diff(m, &want, secret_keys);
                if diff.is_empty() {
                    continue;
                }
                let keys: Vec<&str> = diff.keys().map(String::as_str).collect();
                match self.update_env(g, m, &diff).await {
                    Ok(()) => {
                        self.count("applied");
                        info!(policy = %self.policy, machine = %m.id, group = %g.name, env = %keys.join(","), "machine env updated");
                        self.done.push(format!("{}/{}: set {}", g.name, m.id, keys.join(", ")));
                    }
                    Err(StepError::MinStarted(why)) => {
                        self.not_done
                            .push(format!("{}/{}: env not updated: {why}", g.name, m.id));
                        break;
                    }
                    Err(StepError::Api(why)) => {
                        self.count("error");
                        warn!(policy = %self.policy, machine = %m.id, error = %why, "machine env update failed");
                        self.not_done
                            .push(format!("{}/{}: env update failed: {why}", g.name, m.id));
                        break;
                    }
                }
            }
        }
    }

    async fn update_env(&self, g: &Group, m: &Machine, diff: &BTreeMap<String, String>) -> Result<(), StepError> {
        self.check_min_started(g, m).await?;
        let was_started = m.state == "started";
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
            .filter(|g| plan.env.iter().any(|c| c.workload == g.name))
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
            if stopped_groups.contains(&g.name) || m.state != "started" {
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
    async fn remediate(&mut self, plan: &Plan, groups: &[Group], now: Timestamp) -> Vec<RemediationRecord> {
        let mut refused = Vec::new();
        // Records older than the budget's hour and any cooldown are not needed again.
        let keep_since = now - SignedDuration::from_hours(2);
        for r in &plan.remediations {
            let record = &r.record;
            let Some(g) = groups.iter().find(|g| g.name == record.workload) else {
                refused.push(record.clone());
                continue;
            };
            let targets: Vec<&Machine> = match (record.action, &record.pod) {
                (RemediationAction::RestartPod, Some(pod)) => {
                    g.machines.iter().filter(|m| m.id == group::machine_id(pod)).collect()
                }
                _ => g.machines.iter().collect(),
            };
            if targets.is_empty() {
                self.not_done
                    .push(format!("{}: machine of {:?} is gone", g.name, record.pod));
                self.skip("machine_gone");
                refused.push(record.clone());
                continue;
            }
            // The record goes on the machine before the restart, so a reconciler killed
            // in between cannot restart it again within the cooldown.
            let first = targets[0];
            if let Err(e) = self
                .ctx
                .api
                .set_metadata(
                    self.app,
                    &first.id,
                    group::RESTARTS_KEY,
                    &group::with_record(first, record, keep_since),
                )
                .await
            {
                self.not_done.push(format!(
                    "{}/{}: restart not recorded, not restarted: {e}",
                    g.name, first.id
                ));
                self.skip("record_failed");
                refused.push(record.clone());
                continue;
            }
            let mut restarted = 0;
            let mut failure = None;
            for m in &targets {
                match self.restart_machine(g, m).await {
                    Ok(()) => restarted += 1,
                    Err(StepError::MinStarted(why)) => {
                        failure = Some(("min_started", why));
                        break;
                    }
                    Err(StepError::Api(why)) => {
                        failure = Some(("restart_failed", why));
                        break;
                    }
                }
            }
            if restarted > 0 {
                self.ctx
                    .metrics
                    .restarts
                    .get_or_create(&RestartLabels {
                        namespace: self.ns.to_owned(),
                        policy: self.policy.to_owned(),
                        action: format!("{:?}", record.action),
                        measure: format!("{:?}", record.measure),
                    })
                    .inc();
                info!(policy = %self.policy, group = %g.name, machine = ?record.pod, reason = %record.reason, "restarted");
                self.done.push(format!(
                    "{}: restarted {} machine(s): {}",
                    g.name, restarted, record.reason
                ));
            }
            if let Some((label, why)) = failure {
                warn!(policy = %self.policy, group = %g.name, error = %why, "restart not carried out");
                self.skip(label);
                self.not_done
                    .push(format!("{}: restart not carried out: {why}", g.name));
                if restarted == 0 {
                    let _ = self
                        .ctx
                        .api
                        .set_metadata(
                            self.app,
                            &first.id,
                            group::RESTARTS_KEY,
                            &group::without_record(first, record),
                        )
                        .await;
                    refused.push(record.clone());
                }
            }
        }
        for s in &plan.skipped {
            self.skip(s.why.label());
        }
        refused
    }
}

/// Policies in files: every PoolPolicy document with a `fly` target under `paths`.
pub fn load_policies(paths: &[std::path::PathBuf]) -> Result<Vec<PoolPolicy>, LoadError> {
    let (files, mut errors) = crate::check::expand_paths(paths);
    if !errors.is_empty() {
        return Err(LoadError::Input(errors.swap_remove(0)));
    }
    let mut out = Vec::new();
    for file in files {
        let (name, text) = crate::check::read_source(&file)?;
        let (_, findings) = crate::check::check_source(&name, &text);
        if let Some(f) = findings.first() {
            return Err(LoadError::Invalid(f.to_string()));
        }
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| LoadError::Invalid(format!("{name}: {e}")))?;
        for doc in docs.into_iter().filter(|d| d["kind"] == "PoolPolicy") {
            let policy: PoolPolicy =
                serde_json::from_value(doc).map_err(|e| LoadError::Invalid(format!("{name}: {e}")))?;
            if policy.spec.fly.is_some() {
                out.push(policy);
            }
        }
    }
    out.sort_by_key(|p| p.name_any());
    Ok(out)
}

/// Why the policy files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path could not be read at all (exit status 2, as for `check`).
    #[error(transparent)]
    Input(#[from] crate::check::InputError),
    /// A policy is invalid (exit status 1).
    #[error("{0}")]
    Invalid(String),
}

impl LoadError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Input(_) => 2,
            LoadError::Invalid(_) => 1,
        }
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
