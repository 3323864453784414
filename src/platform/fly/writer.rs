//! Carries a pass's plan out on the app's machines: one machine at a time per group,
//! each step under a lease, every state-dependent choice made from the machine as
//! read under that lease. A machine that changed since the pass listed it is left for
//! the next pass (which plans from a new list); a failed machine, or one whose config
//! cannot be read whole, is reported and never written.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use jiff::SignedDuration;
use serde_json::Value;
use tracing::{info, warn};

use super::{
    api::{ApiError, Lease, Machine, MachineState, Update, Waited},
    group::{self, Group},
    reconcile::FlyContext,
    writes,
};
use crate::{
    decide::Plan,
    policy::{FlyTarget, RemediationAction, RemediationRecord},
    telemetry::metrics::PolicyMetrics,
};

/// Carries a plan out on the app's machines, one at a time per group.
pub struct Writer<'a> {
    pub ctx: &'a FlyContext,
    pub app: &'a str,
    pub policy: &'a str,
    pub target: &'a FlyTarget,
    pub metrics: PolicyMetrics<'a>,
    pub done: Vec<String>,
    pub not_done: Vec<String>,
    /// The state and version poolwarden's own steps of this pass left each machine
    /// in: a later step of the pass expects those, not the list's.
    pub moved: std::sync::Mutex<BTreeMap<String, (MachineState, String)>>,
}

/// Why one machine step did not complete.
pub enum StepError {
    /// The group is at its minimum of started machines.
    MinStarted(String),
    /// The machine is not as the pass listed it: planned again next pass.
    Changed(String),
    Api(String),
}

impl From<ApiError> for StepError {
    fn from(e: ApiError) -> Self {
        StepError::Api(e.to_string())
    }
}

impl StepError {
    fn words(&self) -> &str {
        match self {
            StepError::MinStarted(w) | StepError::Changed(w) | StepError::Api(w) => w,
        }
    }
}

/// A lease that is released when dropped too: a pass cancelled by SIGTERM in the
/// middle of a step leaves no lease behind (the release is spawned and awaited by
/// [`FlyContext::finish_releases`]).
struct LeaseGuard<'a> {
    ctx: &'a FlyContext,
    app: &'a str,
    id: &'a str,
    lease: Option<Lease>,
}

impl LeaseGuard<'_> {
    async fn release(mut self) {
        if let Some(lease) = self.lease.take()
            && let Err(e) = self.ctx.api.release_lease(self.app, self.id, &lease).await
        {
            warn!(machine = %self.id, error = %e, "releasing the lease");
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let (api, app, id) = (self.ctx.api.clone(), self.app.to_owned(), self.id.to_owned());
            self.ctx.spawn_release(async move {
                if let Err(e) = api.release_lease(&app, &id, &lease).await {
                    warn!(machine = %id, error = %e, "releasing the lease on the way out");
                }
            });
        }
    }
}

impl Writer<'_> {
    /// Started machines of the group, from the pass's one list: machines are taken
    /// down one at a time and each is back up, checks passing, before the next, so
    /// the count holds for the whole pass (and Fly's rate limits are not spent on
    /// listing again before every step). A machine whose host is unreachable is not
    /// counted: nothing says it serves.
    fn started(&self, group: &Group) -> usize {
        group.machines.iter().filter(|m| m.is_up()).count()
    }

    /// Refuses to take a started machine down when that would leave the group below
    /// its minimum.
    fn check_min_started(&self, group: &Group, m: &Machine) -> Result<(), StepError> {
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

    /// Runs `step` under a lease on the machine with the machine as read under that
    /// lease, releasing the lease whatever happens. A machine whose state or version
    /// changed since the list, or whose config cannot be read whole, is not stepped on.
    async fn leased<F, Fut>(&self, m: &Machine, step: F) -> Result<(), StepError>
    where
        F: FnOnce(Lease, Machine) -> Fut,
        Fut: Future<Output = Result<(), StepError>>,
    {
        let ttl = self.ctx.start_timeout + Duration::from_secs(60);
        let lease = writes::acquire_lease(&self.ctx.api, self.app, &m.id, ttl)
            .await
            .map_err(|e| StepError::Api(format!("lease on machine {}: {e}", m.id)))?;
        let guard = LeaseGuard {
            ctx: self.ctx,
            app: self.app,
            id: &m.id,
            lease: Some(lease.clone()),
        };
        let result = async {
            let fresh = self.ctx.api.get_machine(self.app, &m.id).await?;
            if let Some(why) = fresh.incomplete() {
                return Err(StepError::Changed(format!("{why}: not written")));
            }
            let (state, version) = self
                .moved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&m.id)
                .cloned()
                .unwrap_or_else(|| (m.state, m.instance_id.clone()));
            if fresh.state != state || fresh.instance_id != version {
                return Err(StepError::Changed(format!(
                    "changed since the list ({}, version {version} -> {}, version {}): planned again next pass",
                    state.as_str(),
                    fresh.state.as_str(),
                    fresh.instance_id
                )));
            }
            step(lease, fresh).await
        }
        .await;
        guard.release().await;
        result
    }

    /// Waits until the machine's version is started and, when it declares health
    /// checks, until they pass (as `flyctl` does between machines); a timeout is an
    /// error, and the group's next machine is not touched.
    async fn wait_started(&self, id: &str, version: &str, checks: bool) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + self.ctx.start_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .ctx
                .api
                .wait(self.app, id, version, MachineState::Started, left)
                .await?
            {
                Waited::Reached if checks => return self.wait_checks(id, deadline).await,
                Waited::Reached => return Ok(()),
                Waited::TimedOut if left > Duration::from_secs(1) => continue,
                Waited::TimedOut => {
                    return Err(timed_out(
                        id,
                        "wait",
                        format!("not started within {} s", self.ctx.start_timeout.as_secs()),
                    ));
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
                return Err(timed_out(
                    id,
                    "checks",
                    format!("checks not passing within {} s", self.ctx.start_timeout.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Restarts the machine (lease, restart, wait for started, release). Only a
    /// machine that is started under the lease is restarted: restarting a stopped
    /// one would start it.
    async fn restart_machine(&self, group: &Group, m: &Machine) -> Result<(), StepError> {
        self.check_min_started(group, m)?;
        self.leased(m, |lease, fresh| async move {
            if fresh.state != MachineState::Started {
                return Err(StepError::Changed(format!(
                    "{}, not started: not restarted",
                    fresh.state.as_str()
                )));
            }
            writes::restart(&self.ctx.api, self.app, &fresh, &lease).await?;
            Ok(self.wait_started(&m.id, &fresh.instance_id, fresh.has_checks()).await?)
        })
        .await
    }

    /// Reports the machines that cannot be written (failed, in a state poolwarden
    /// does not know, or with a config that cannot be read whole): they are counted
    /// unavailable, left alone, and named every pass until they recover.
    pub fn report_unwritable(&mut self, groups: &[Group]) {
        for g in groups {
            for m in &g.machines {
                if let Some(why) = m.unwritable() {
                    warn!(policy = %self.policy, machine = %m.id, group = %g.name, %why, "machine left alone");
                    self.not_done
                        .push(format!("{}/{}: left alone, counted unavailable: {why}", g.name, m.id));
                }
            }
        }
    }

    /// Each writable machine of a group whose env is due gets the plan's owned env,
    /// its own name where the instance's name is wanted; app secrets win over machine
    /// env, so secret-backed variables are never written.
    pub async fn reconcile_env(&mut self, plan: &Plan, groups: &[Group], secret_keys: &BTreeSet<String>) {
        for change in &plan.env {
            let Some(g) = groups.iter().find(|g| g.name == change.workload.name) else {
                continue;
            };
            let owned = change.owned.get(&g.name).cloned().unwrap_or_default();
            for m in g.machines.iter().filter(|m| m.unwritable().is_none()) {
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
            Err(e) => {
                if let StepError::Api(why) = &e {
                    self.metrics.env_write("error");
                    warn!(policy = %self.policy, machine = %m.id, error = %why, "machine env update failed");
                }
                let what = match e {
                    StepError::Api(_) => "env update failed",
                    _ => "env not updated",
                };
                self.not_done
                    .push(format!("{}/{}: {what}: {}", g.name, m.id, e.words()));
                false
            }
        }
    }

    async fn update_env(&self, g: &Group, m: &Machine, diff: &BTreeMap<String, String>) -> Result<(), StepError> {
        self.check_min_started(g, m)?;
        self.leased(m, |lease, fresh| async move {
            // The whole config as it is now, changed only in env.
            let mut config = fresh.config.clone();
            if !config["env"].is_object() {
                config["env"] = Value::Object(Default::default());
            }
            for (k, v) in diff {
                config["env"][k] = Value::String(v.clone());
            }
            self.update_and_wait(&fresh, &config, None, &lease).await
        })
        .await
    }

    /// Sends `config` to the machine read under `lease` and waits for it when it
    /// runs. A machine that is not running (stopped, parked by autostop) stays so, as
    /// flyctl leaves it (`skip_launch` unless started or starting): it reads the new
    /// config at its next start.
    async fn update_and_wait(
        &self,
        fresh: &Machine,
        config: &Value,
        min_secrets_version: Option<u64>,
        lease: &Lease,
    ) -> Result<(), StepError> {
        let runs = matches!(fresh.state, MachineState::Started | MachineState::Starting);
        let update = Update {
            config,
            current_version: &fresh.instance_id,
            skip_launch: !runs,
            min_secrets_version,
        };
        let updated = writes::update(&self.ctx.api, self.app, fresh, &update, lease).await?;
        let state = if runs {
            self.wait_started(&fresh.id, &updated.instance_id, updated.has_checks())
                .await?;
            MachineState::Started
        } else {
            fresh.state
        };
        self.moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fresh.id.clone(), (state, updated.instance_id));
        Ok(())
    }

    /// Sets the managed app secrets, then updates each started machine that does not
    /// run them yet with its own config and `min_secrets_version` (as `fly secrets
    /// deploy` does), one at a time, recording the digest on it once it is up with
    /// them. A machine that is not running is left alone and not recorded: it does not
    /// run the secrets; once it runs, a later pass updates it.
    pub async fn apply_secrets(
        &mut self,
        plan: &Plan,
        groups: &[Group],
        values: &BTreeMap<String, String>,
        digest: &str,
    ) {
        let pending: Vec<(&Group, &Machine)> = groups
            .iter()
            .filter(|g| plan.env.iter().any(|c| c.workload.name == g.name))
            .flat_map(|g| g.machines.iter().map(move |m| (g, m)))
            .filter(|(_, m)| m.is_up() && m.unwritable().is_none())
            .filter(|(_, m)| m.metadata().get(group::SECRETS_KEY).map(String::as_str) != Some(digest))
            .collect();
        if pending.is_empty() {
            return;
        }
        let version = match self.ctx.api.set_secrets(self.app, values).await {
            Ok(v) => v,
            Err(e) => {
                self.not_done.push(format!("setting app secrets: {e}"));
                return;
            }
        };
        let names: Vec<&str> = values.keys().map(String::as_str).collect();
        self.done
            .push(format!("app secrets set: {} (version {version})", names.join(", ")));
        let mut stopped_groups = BTreeSet::new();
        for (g, m) in pending {
            if stopped_groups.contains(&g.name) {
                continue;
            }
            match self.secrets_on(g, m, version, digest).await {
                Ok(()) => self.done.push(format!(
                    "{}/{}: updated to run app secrets version {version}",
                    g.name, m.id
                )),
                Err(e) => {
                    self.not_done.push(format!(
                        "{}/{}: not updated for the secrets: {}",
                        g.name,
                        m.id,
                        e.words()
                    ));
                    stopped_groups.insert(g.name.clone());
                }
            }
        }
    }

    /// One machine updated to boot with secrets `version`, then the digest recorded.
    async fn secrets_on(&self, g: &Group, m: &Machine, version: u64, digest: &str) -> Result<(), StepError> {
        self.check_min_started(g, m)?;
        self.leased(m, |lease, fresh| async move {
            if fresh.state != MachineState::Started {
                return Err(StepError::Changed(format!(
                    "{}, not started: left for its next start",
                    fresh.state.as_str()
                )));
            }
            self.update_and_wait(&fresh, &fresh.config, Some(version), &lease).await
        })
        .await?;
        Ok(self
            .ctx
            .api
            .set_metadata(self.app, &m.id, group::SECRETS_KEY, digest)
            .await?)
    }

    /// Carries out the plan's restarts; returns the records of those that did not happen.
    pub async fn remediate(&mut self, plan: &Plan, groups: &[Group]) -> Vec<RemediationRecord> {
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
            _ => g.machines.iter().filter(|m| m.is_up()).collect(),
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
                Err(StepError::Changed(why)) => return (restarted, Some(("changed", format!("{}: {why}", m.id)))),
                Err(StepError::Api(why)) => return (restarted, Some(("restart_failed", why))),
            }
        }
        (restarted, None)
    }
}

fn timed_out(id: &str, what: &str, message: String) -> ApiError {
    ApiError::Status {
        method: hyper::Method::GET,
        path: format!("machine {id} {what}"),
        status: hyper::StatusCode::REQUEST_TIMEOUT,
        message,
    }
}
