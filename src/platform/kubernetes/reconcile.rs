//! One reconcile pass of one policy: read (caches, Secret, shared database sample,
//! pool stats), decide (the pure core), act (only as leader), report.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
    },
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    actions::{self, EnvOutcome, EvictOutcome},
    gather::{self, Selected},
    index::SelectionIndex,
    ownership,
    validated::ValidatedPolicies,
};
use crate::{
    decide::{self, About, EnvConflict, EventReason, Kind, Plan, WorkloadRef},
    observe::postgres::Snapshot,
    platform::{
        pass::{self, Reading, Scope},
        report::Words,
    },
    policy::{
        PoolPolicy, PoolPolicyStatus, RemediationAction, RemediationRecord, ResolvedPolicy, SecretKeyRef, WorkloadKind,
        validate::{ResolvedPooler, UrlSource},
        validate_for_kubernetes,
    },
    telemetry::metrics::PolicyMetrics,
};

/// How long poolwarden stays away from an env entry another manager owns before it
/// tries again (the try is an apply that fails without writing).
const CONFLICT_RETRY: Duration = Duration::from_secs(300);

/// The longest a pass may take; it is cancelled after that (a pod-stats scrape is at
/// most 30 s, a database sample has its own timeout). Shorter than
/// `remediation::PENDING_EXPIRY`, so a live pass confirms what it recorded first.
pub const PASS_DEADLINE_MAX: Duration = Duration::from_secs(60);

/// A pass's deadline: two intervals, between 10 s and [`PASS_DEADLINE_MAX`].
pub fn pass_deadline(interval: Duration) -> Duration {
    interval
        .saturating_mul(2)
        .clamp(Duration::from_secs(10), PASS_DEADLINE_MAX)
}

/// Env applies and Events of one pass in flight at once. One at a time, a pass over
/// 10,000 Deployments waited on 20,000 round trips in a row; the API server serves
/// many at once (`--max-mutating-requests-inflight`, 200 by default).
pub const WRITE_CONCURRENCY: usize = 16;

/// Writes of the status retried after a 409 (re-read, merged) before the pass gives up.
const STATUS_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the policy: {0}")]
    Read(#[source] kube::Error),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("the pass took longer than its deadline of {0:?}")]
    Deadline(Duration),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read(_) => "policy_read",
            Error::Status(_) => "status_write",
            Error::Deadline(_) => "deadline",
        }
    }
}

/// An env entry another manager owns, and when that was learned.
pub type KnownConflict = (EnvConflict, Instant);

/// What every pass shares.
pub struct Context {
    pub client: Client,
    /// A client that does not retry 429 answers, for evictions.
    pub evict_client: Client,
    /// The cached workloads and pods, indexed for selection.
    pub selection: SelectionIndex,
    /// Samplers, scraper, metrics and sample histories.
    pub shared: pass::Shared,
    /// Publishes warnings, which can repeat pass after pass: kube's recorder turns a
    /// repeat into a series on the first Event, and keeps each for 6 minutes to do so.
    pub recorder: Recorder,
    /// Who publishes; one-off Events (a write done) go through a recorder that keeps
    /// nothing, so thousands of env writes do not sit in memory for 6 minutes.
    pub reporter: Reporter,
    /// True while this replica may write (it holds the lease and is not stopping).
    pub leading: watch::Receiver<bool>,
    /// The cached valid policies, to tell which one governs a workload.
    pub validated: ValidatedPolicies,
    /// When a pass last finished, for `/healthz`.
    pub liveness: Arc<crate::telemetry::http::Liveness>,
    /// True once every cache a pass reads (policies, Deployments, StatefulSets, Pods)
    /// has listed. Pooler pods are listed by each pass itself.
    pub synced: watch::Receiver<bool>,
    /// Failed passes in a row, per policy.
    pub failing: super::failing::Streaks,
    /// Env entries other managers own, per policy, and when that was learned.
    pub conflicts: Mutex<HashMap<ObjectRef<PoolPolicy>, Vec<KnownConflict>>>,
}

impl Context {
    fn may_write(&self) -> bool {
        *self.leading.borrow()
    }
}

pub async fn reconcile(policy: Arc<PoolPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.may_write() {
        // Followers keep their caches warm and do nothing else; a new leader
        // reconciles every policy at once.
        return Ok(Action::await_change());
    }
    // No pass before the caches it reads have listed: a pass over a Deployment cache
    // still listing would find no workload and write workloadCount 0,
    // NoWorkloadsSelected. kube's Controller waits for the policy store only.
    if !*ctx.synced.borrow() {
        let mut synced = ctx.synced.clone();
        if synced.wait_for(|s| *s).await.is_err() {
            return Ok(Action::await_change());
        }
    }
    let started = Instant::now();
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let metrics = ctx.shared.metrics.policy(&namespace, &name);
    let span = tracing::info_span!("reconcile", policy = %name, namespace = %namespace);
    let _enter = span.enter();
    let interval = policy.spec.interval.parse().unwrap_or(Duration::from_secs(30));
    let deadline = pass_deadline(interval);
    let result = match tokio::time::timeout(deadline, pass(&policy, &ctx, &namespace, &name)).await {
        Ok(r) => r,
        // What was recorded before the cut stays Pending; the next pass settles it.
        Err(_) => Err(Error::Deadline(deadline)),
    };
    // Liveness is the process turning passes, not the cluster accepting their
    // writes: a failed pass finished too (a restart would not make it succeed).
    ctx.liveness.pass_finished();
    metrics.pass_took(started.elapsed().as_secs_f64());
    let failures = ctx.failing.record(&ObjectRef::from_obj(&*policy), result.is_err());
    if let Err(e) = &result {
        metrics.pass_failed(e.metric_label());
        if super::failing::reported(failures) {
            super::failing::report(&ctx, &policy, failures, &e.to_string()).await;
        }
    }
    result
}

pub fn error_policy(_policy: Arc<PoolPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The words of a Kubernetes report.
pub fn words() -> Words {
    Words {
        instance: "pod",
        instance_name: "fieldRef metadata.name".to_owned(),
    }
}

async fn pass(cached: &PoolPolicy, ctx: &Context, namespace: &str, name: &str) -> Result<Action, Error> {
    // The record of what was done is the policy's status on the server: read it fresh
    // before deciding. The cache may be minutes old (a watch outage), and a budget or
    // cooldown counted from it would be bypassed.
    let api: Api<PoolPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let fresh = match api.get_opt(name).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => return Err(Error::Read(e)),
    };
    if fresh.metadata.uid != cached.metadata.uid {
        return Ok(Action::await_change());
    }
    let resolved = match validate_for_kubernetes(&fresh.spec) {
        Ok(r) => r,
        Err(problems) => return report_invalid(ctx, &api, &fresh, &problems).await,
    };
    let policy_ref = ObjectRef::from_obj(&fresh);
    let mut target = Cluster {
        client: &ctx.client,
        namespace,
        policy: &fresh,
        selection: &ctx.selection,
        governance: Some(&ctx.validated),
        status: fresh.status.clone().unwrap_or_default(),
        history_source: "from the policy's live status".to_owned(),
        known_conflicts: known_conflicts(ctx, &policy_ref),
        interval: resolved.interval,
        database_url: None,
        writer: Some(ctx),
        selected: Vec::new(),
    };
    let scope = Scope::new(&fresh, namespace.to_owned());
    let checkpoints = super::checkpoints::Checkpoints::new(ctx, &fresh, &scope, &resolved);
    checkpoints.load().await;
    let passed = pass::run(&ctx.shared, &mut target, &scope, &resolved).await?;
    checkpoints.save().await;
    let (action, learned) = passed.outcome?;
    if !learned.is_empty() {
        let mut all = ctx.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        all.entry(policy_ref)
            .or_default()
            .extend(learned.into_iter().map(|c| (c, now)));
    }
    Ok(action)
}

/// The conflicts learned of late (older ones are tried again).
fn known_conflicts(ctx: &Context, policy: &ObjectRef<PoolPolicy>) -> Vec<EnvConflict> {
    let mut all = ctx.conflicts.lock().unwrap_or_else(|e| e.into_inner());
    let list = all.entry(policy.clone()).or_default();
    list.retain(|(_, at)| at.elapsed() < CONFLICT_RETRY);
    list.iter().map(|(c, _)| c.clone()).collect()
}

/// An invalid policy: its status says why (once), with a Warning Event.
async fn report_invalid(
    ctx: &Context,
    api: &Api<PoolPolicy>,
    policy: &PoolPolicy,
    problems: &[crate::policy::validate::Problem],
) -> Result<Action, Error> {
    let message: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    let message = message.join("; ");
    let current = policy.status.clone().unwrap_or_default();
    let status = invalid_status(&current, policy.metadata.generation.unwrap_or(0), &message);
    if status != current {
        warn!(problems = %message, "invalid policy");
        publish(ctx, policy, None, EventType::Warning, "InvalidPolicy", &message).await;
        let version = policy.metadata.resource_version.clone();
        let namespace = policy.namespace().unwrap_or_default();
        write_status_merged(ctx, api, &namespace, &policy.name_any(), status, &[], version).await?;
    }
    Ok(Action::await_change())
}

/// The Kubernetes target of a pass: the policy's namespace, read from the
/// controller's caches (or, for `plan`, from one listing), written to only with
/// the controller's context.
pub struct Cluster<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub policy: &'a PoolPolicy,
    pub selection: &'a SelectionIndex,
    /// The cached valid policies, to tell which one governs a workload; `None`: this
    /// policy governs all it selects.
    pub governance: Option<&'a ValidatedPolicies>,
    /// The status as read; [`pass::Target::read`] hands it to the pass.
    pub status: PoolPolicyStatus,
    pub history_source: String,
    pub known_conflicts: Vec<EnvConflict>,
    pub interval: Duration,
    /// The database URL when the caller has it already (`plan` reads it once, or
    /// is given `--database-url`); `None` reads the policy's Secret each pass.
    pub database_url: Option<String>,
    /// The controller's context, when the pass may write; `None` writes nothing.
    pub writer: Option<&'a Context>,
    /// What [`pass::Target::read`] selected.
    pub selected: Vec<Selected>,
}

/// What carrying a plan out came to: when to pass again, and the env conflicts the
/// API server reported.
pub type Executed = Result<(Action, Vec<EnvConflict>), Error>;

/// Why a write stopped short.
enum Halt {
    /// This replica lost the lease (or is stopping): it writes nothing more.
    LeaseLost,
    /// Someone wrote the status since it was read: decide again.
    StatusChanged,
    Failed(Error),
}

impl Halt {
    fn into_action(self) -> Executed {
        match self {
            Halt::LeaseLost => Ok((Action::await_change(), Vec::new())),
            Halt::StatusChanged => Ok((Action::requeue(Duration::from_millis(500)), Vec::new())),
            Halt::Failed(e) => Err(e),
        }
    }
}

impl pass::Target for Cluster<'_> {
    type Outcome = Executed;
    type Error = Error;

    fn words(&self) -> Words {
        words()
    }

    fn env_all_or_nothing(&self) -> bool {
        true
    }

    async fn read(&mut self, policy: &ResolvedPolicy) -> Result<Reading, Error> {
        let selected = self.selection.select(policy, self.namespace);
        // One owner per workload: the ones another policy governs are left out of the
        // decision (nothing is written to them) and reported.
        let (selected, elsewhere, other_remediations) = match &self.governance {
            None => (selected, Vec::new(), Vec::new()),
            Some(validated) => {
                let o = ownership::partition(self.policy, selected, validated);
                (o.governed, o.elsewhere, o.other_remediations)
            }
        };
        let subjects = gather::subjects(policy, &selected);
        self.selected = selected;
        Ok(Reading {
            subjects,
            status: std::mem::take(&mut self.status),
            history_source: std::mem::take(&mut self.history_source),
            conflicts: self.known_conflicts.clone(),
            other_remediations,
            governed_elsewhere: elsewhere,
        })
    }

    async fn database_url(&self, policy: &ResolvedPolicy) -> Result<String, String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => policy_database_url(self.client, self.namespace, policy).await,
        }
    }

    async fn through_pooler(
        &self,
        pooler: &ResolvedPooler,
        sampled: Result<Arc<Snapshot>, String>,
    ) -> Result<Arc<Snapshot>, String> {
        super::pooler::sample(self.client, self.namespace, pooler, sampled).await
    }

    async fn execute(&mut self, plan: &mut Plan, read: &Reading) -> Executed {
        let Some(ctx) = self.writer else {
            return Ok((Action::await_change(), Vec::new()));
        };
        let writer = Writer {
            ctx,
            cluster: self,
            read: &read.status,
            metrics: ctx.shared.metrics.policy(self.namespace, &self.policy.name_any()),
        };
        match writer.carry_out(plan).await {
            Ok(done) => Ok(done),
            Err(halt) => halt.into_action(),
        }
    }
}

/// Carries a plan out on the cluster. Every write checks the lease again: a replica
/// that lost it stops at once.
struct Writer<'a> {
    ctx: &'a Context,
    cluster: &'a Cluster<'a>,
    /// The status as the pass read it from the server.
    read: &'a PoolPolicyStatus,
    metrics: PolicyMetrics<'a>,
}

impl Writer<'_> {
    fn lease(&self) -> Result<(), Halt> {
        if self.ctx.may_write() {
            Ok(())
        } else {
            Err(Halt::LeaseLost)
        }
    }

    async fn carry_out(&self, plan: &mut Plan) -> Result<(Action, Vec<EnvConflict>), Halt> {
        let learned = self.apply_env(plan).await?;
        let (pending, version) = self.record_pending(plan).await?;
        let refused = self.remediate(plan).await?;
        plan.record_outcomes(&refused);
        self.publish_events(plan).await;
        // What the server holds now: the pending records, or the status as read.
        if &plan.status != pending.as_ref().unwrap_or(self.read) {
            self.lease()?;
            let (namespace, name) = (self.cluster.namespace, self.cluster.policy.name_any());
            let api: Api<PoolPolicy> = Api::namespaced(self.ctx.client.clone(), namespace);
            write_status_merged(self.ctx, &api, namespace, &name, plan.status.clone(), &refused, version)
                .await
                .map_err(Halt::Failed)?;
        }
        if !learned.is_empty() {
            // Report the conflict now rather than one interval later.
            return Ok((Action::requeue(Duration::from_millis(200)), learned));
        }
        Ok((Action::requeue(self.cluster.interval), learned))
    }

    /// Applies each workload's owned env, [`WRITE_CONCURRENCY`] at a time, the lease
    /// checked before each; returns the conflicts the API server found.
    async fn apply_env(&self, plan: &Plan) -> Result<Vec<EnvConflict>, Halt> {
        // A loop rather than a stream combinator: a closure held across the awaits
        // trips rustc's check that the trait's future is Send (rust-lang/rust#64552).
        let mut in_flight = FuturesUnordered::new();
        let mut changes = plan.env.iter();
        let mut learned = Vec::new();
        loop {
            while in_flight.len() < WRITE_CONCURRENCY {
                let Some(change) = changes.next() else { break };
                in_flight.push(self.apply_one(change));
            }
            match in_flight.next().await {
                Some(outcome) => learned.extend(outcome?),
                None => break,
            }
        }
        Ok(learned)
    }

    async fn apply_one(&self, change: &decide::EnvChange) -> Result<Vec<EnvConflict>, Halt> {
        self.lease()?;
        let Some(s) = self.selected(&change.workload) else {
            return Ok(Vec::new());
        };
        let namespace = self.cluster.namespace;
        let body = actions::env_apply_body(s.view.kind, &s.view.name, namespace, &change.owned);
        let outcome = actions::apply_env(&self.ctx.client, s.view.kind, namespace, &s.view.name, &body).await;
        let (result, learned) = match outcome {
            EnvOutcome::Applied => {
                info!(workload = %s.view.name, kind = %change.workload.kind, "pool env applied");
                ("applied", Vec::new())
            }
            EnvOutcome::Conflicts(found) => {
                self.report_conflicts(&change.workload, &found).await;
                ("conflict", found)
            }
            EnvOutcome::Failed(e) => {
                warn!(workload = %s.view.name, error = %e, "pool env apply failed");
                ("error", Vec::new())
            }
        };
        self.metrics.env_write(result);
        Ok(learned)
    }

    async fn report_conflicts(&self, workload: &WorkloadRef, found: &[EnvConflict]) {
        let text: Vec<String> = found
            .iter()
            .map(|c| format!("{} on {}/{} is owned by {}", c.env, c.workload, c.container, c.manager))
            .collect();
        warn!(workload = %workload.name, conflicts = %text.join("; "), "pool env owned by another manager; not forcing");
        let about = self.workload_ref(workload);
        publish(
            self.ctx,
            self.cluster.policy,
            Some(about),
            EventType::Warning,
            "Conflict",
            &text.join("; "),
        )
        .await;
    }

    /// Remediations are recorded (Pending) in the status before they happen, written
    /// only if nobody wrote the status since it was read; so a controller killed
    /// between the two cannot restart the same thing again within the cooldown, and
    /// two writers cannot both spend one budget. Returns the status written, if one
    /// was, and the policy's version now.
    async fn record_pending(&self, plan: &Plan) -> Result<(Option<PoolPolicyStatus>, Option<String>), Halt> {
        let version = self.cluster.policy.metadata.resource_version.clone();
        if plan.remediations.is_empty() {
            return Ok((None, version));
        }
        self.lease()?;
        let (namespace, name) = (self.cluster.namespace, self.cluster.policy.name_any());
        match actions::write_status(&self.ctx.client, namespace, &name, &plan.status, version.as_deref()).await {
            Ok(v) => Ok((Some(plan.status.clone()), v)),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                info!("the status changed since it was read; deciding again before restarting anything");
                Err(Halt::StatusChanged)
            }
            Err(e) => Err(Halt::Failed(Error::Status(e))),
        }
    }

    /// Carries out each restart; returns the records of those that did not happen
    /// (taken out of the status again, so budgets count only real restarts).
    async fn remediate(&self, plan: &Plan) -> Result<Vec<RemediationRecord>, Halt> {
        let mut refused = Vec::new();
        for r in &plan.remediations {
            self.lease()?;
            let record = &r.record;
            let about = match &record.pod {
                Some(pod) => actions::reference("v1", "Pod", self.cluster.namespace, pod, None),
                None => self.record_ref(record),
            };
            match self.restart(record).await {
                Ok(message) => {
                    info!(workload = %record.workload, pod = ?record.pod, reason = %record.reason, "restarted");
                    self.metrics
                        .restarted(&format!("{:?}", record.action), &format!("{:?}", record.measure));
                    publish(
                        self.ctx,
                        self.cluster.policy,
                        Some(about),
                        EventType::Normal,
                        "Restarted",
                        &message,
                    )
                    .await;
                }
                Err((reason, message)) => {
                    warn!(workload = %record.workload, pod = ?record.pod, %message, "remediation not carried out");
                    self.metrics.remediation_skipped(reason);
                    let policy = self.cluster.policy;
                    publish(
                        self.ctx,
                        policy,
                        Some(about),
                        EventType::Warning,
                        "RemediationSkipped",
                        &message,
                    )
                    .await;
                    refused.push(record.clone());
                }
            }
        }
        Ok(refused)
    }

    /// One restart: the pod evicted (PodDisruptionBudgets decide) or the workload
    /// rolled; the words of the Event, or the metric label and words of the refusal.
    async fn restart(&self, record: &RemediationRecord) -> Result<String, (&'static str, String)> {
        let namespace = self.cluster.namespace;
        if let (RemediationAction::RestartPod, Some(pod)) = (record.action, &record.pod) {
            return match actions::evict(&self.ctx.evict_client, namespace, pod).await {
                EvictOutcome::Evicted => Ok(format!("evicted pod {pod}: {}", record.reason)),
                EvictOutcome::Gone => Err(("pod_gone", format!("pod {pod} is already gone"))),
                EvictOutcome::Blocked(why) => Err(("disruption_budget", format!("eviction of {pod} refused: {why}"))),
                EvictOutcome::Failed(e) => Err(("eviction_failed", format!("eviction of {pod} failed: {e}"))),
            };
        }
        let kind = match Kind::parse(&record.kind) {
            Some(Kind::Deployment) => WorkloadKind::Deployment,
            Some(Kind::StatefulSet) => WorkloadKind::StatefulSet,
            // Never a guess: an unknown kind is not taken for a Deployment.
            _ => {
                return Err((
                    "unknown_kind",
                    format!("{} is not a kind poolwarden restarts", record.kind),
                ));
            }
        };
        let at = record.at.to_string();
        match actions::rollout_restart(&self.ctx.client, kind, namespace, &record.workload, &at).await {
            Ok(()) => Ok(format!("rollout restart of {}: {}", record.workload, record.reason)),
            Err(e) => Err((
                "rollout_failed",
                format!("rollout restart of {} failed: {e}", record.workload),
            )),
        }
    }

    /// The plan's Events; a restart's is published with its outcome instead. One
    /// about a workload goes on the workload (the policy related); the policy gets
    /// one Event per reason for the pass that names them all ([`policy_summaries`]),
    /// so a pass that writes 500 workloads records 501 Events, not 1,000, and
    /// `kubectl describe poolpolicy` stays readable.
    async fn publish_events(&self, plan: &Plan) {
        let events: Vec<_> = plan
            .events
            .iter()
            .filter(|e| e.reason != EventReason::Remediating)
            .collect();
        let mut in_flight = FuturesUnordered::new();
        let mut about_workloads = events.iter();
        loop {
            while in_flight.len() < WRITE_CONCURRENCY {
                let Some(e) = about_workloads.next() else { break };
                if let About::Workload(w) = &e.about {
                    in_flight.push(self.emit_on_workload(e, w));
                }
            }
            if in_flight.next().await.is_none() {
                break;
            }
        }
        for (reason, warning, message) in policy_summaries(&events) {
            publish(
                self.ctx,
                self.cluster.policy,
                None,
                event_type(warning),
                reason.as_str(),
                &message,
            )
            .await;
        }
    }

    /// An Event about a workload, on the workload, the policy related.
    async fn emit_on_workload(&self, e: &decide::PlannedEvent, w: &WorkloadRef) {
        let regarding = self.workload_ref(w);
        let related = Some(self.cluster.policy.object_ref(&()));
        let message = workload_message(w, &e.message);
        emit(
            self.ctx,
            &regarding,
            related,
            event_type(e.warning),
            e.reason.as_str(),
            &message,
        )
        .await;
    }

    /// The selected workload `w`. The selection is sorted by kind and name
    /// ([`SelectionIndex::select`]): a pass over 10,000 workloads looks each up once
    /// per write and Event, and a scan each time cost 10⁸ comparisons.
    fn selected(&self, w: &WorkloadRef) -> Option<&Selected> {
        fn key(s: &Selected) -> (Kind, &str) {
            (Kind::from(s.view.kind), s.view.name.as_str())
        }
        let selected = &self.cluster.selected;
        match selected.binary_search_by(|s| key(s).cmp(&(w.kind, w.name.as_str()))) {
            Ok(i) => selected.get(i),
            // Not where the order puts it: a selection in another order still finds it.
            Err(_) => selected.iter().find(|s| key(s) == (w.kind, w.name.as_str())),
        }
    }

    fn workload_ref(&self, w: &WorkloadRef) -> ObjectReference {
        let uid = self.selected(w).and_then(|s| s.view.uid.clone());
        actions::reference("apps/v1", w.kind.as_str(), self.cluster.namespace, &w.name, uid)
    }

    fn record_ref(&self, record: &RemediationRecord) -> ObjectReference {
        match Kind::parse(&record.kind) {
            Some(kind) => self.workload_ref(&WorkloadRef {
                kind,
                name: record.workload.clone(),
            }),
            None => actions::reference("apps/v1", &record.kind, self.cluster.namespace, &record.workload, None),
        }
    }
}

/// Writes `status` conditionally on `version`; when the policy changed in between
/// (409), reads it again and merges: every remediation record either side has
/// stays (minus `refused`, which did not happen), the rest is this pass's.
async fn write_status_merged(
    ctx: &Context,
    api: &Api<PoolPolicy>,
    namespace: &str,
    name: &str,
    mut status: PoolPolicyStatus,
    refused: &[crate::policy::RemediationRecord],
    mut version: Option<String>,
) -> Result<(), Error> {
    for _ in 1..STATUS_ATTEMPTS {
        match actions::write_status(&ctx.client, namespace, name, &status, version.as_deref()).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let server = api.get_status(name).await.map_err(Error::Read)?;
                version = server.metadata.resource_version.clone();
                let theirs = server.status.map(|s| s.remediations).unwrap_or_default();
                status.remediations = decide::remediation::merge_records(&theirs, &status.remediations, refused);
                status.refresh_last_remediations();
            }
            Err(e) => return Err(Error::Status(e)),
        }
    }
    actions::write_status(&ctx.client, namespace, name, &status, version.as_deref())
        .await
        .map(|_| ())
        .map_err(Error::Status)
}

/// The database URL of a Kubernetes policy, from its Secret.
pub async fn policy_database_url(client: &Client, namespace: &str, policy: &ResolvedPolicy) -> Result<String, String> {
    match &policy.database_url {
        UrlSource::Secret(r) => database_url(client, namespace, r).await,
        UrlSource::Env(var) => Err(format!(
            "database.urlFromEnv ({var}) is read by `poolwarden fly`; in a cluster use database.urlSecretRef"
        )),
    }
}

async fn database_url(client: &Client, namespace: &str, r: &SecretKeyRef) -> Result<String, String> {
    secret_value(client, namespace, r).await
}

/// A Secret key's value as text (a connection URL).
pub(super) async fn secret_value(client: &Client, namespace: &str, r: &SecretKeyRef) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(&r.name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{}: {}", r.name, short(&e)))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("Secret {namespace}/{} has no key {:?}", r.name, r.key))?;
    String::from_utf8(bytes).map_err(|_| format!("Secret {namespace}/{} key {:?} is not UTF-8", r.name, r.key))
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

fn event_type(warning: bool) -> EventType {
    if warning { EventType::Warning } else { EventType::Normal }
}

fn workload_message(w: &WorkloadRef, message: &str) -> String {
    format!("{} {}: {message}", w.kind, w.name)
}

/// The policy's Events for a pass's planned ones: each about the policy as it is,
/// and those about workloads one per (reason, type), in the order first planned,
/// naming every workload ("2 workloads: Deployment a: …; Deployment b: …"); a single
/// one reads as it would alone.
fn policy_summaries(events: &[&decide::PlannedEvent]) -> Vec<(EventReason, bool, String)> {
    let mut out: Vec<(EventReason, bool, String)> = Vec::new();
    let mut grouped: Vec<(EventReason, bool, Vec<String>)> = Vec::new();
    for e in events {
        match &e.about {
            About::Policy => out.push((e.reason, e.warning, e.message.clone())),
            About::Workload(w) => {
                let line = workload_message(w, &e.message);
                match grouped
                    .iter_mut()
                    .find(|(r, warn, _)| *r == e.reason && *warn == e.warning)
                {
                    Some((_, _, lines)) => lines.push(line),
                    None => grouped.push((e.reason, e.warning, vec![line])),
                }
            }
        }
    }
    out.extend(grouped.into_iter().map(|(reason, warning, lines)| {
        let message = match lines.len() {
            1 => lines.concat(),
            n => format!("{n} workloads: {}", lines.join("; ")),
        };
        (reason, warning, message)
    }));
    out
}

/// An Event on the policy and, when it concerns one, on the workload or pod too
/// (with the policy as the related object), so `kubectl describe` shows it on both.
pub(super) async fn publish(
    ctx: &Context,
    policy: &PoolPolicy,
    about: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    let policy_ref = policy.object_ref(&());
    emit(ctx, &policy_ref, about.clone(), type_, reason, message).await;
    if let Some(about) = about {
        emit(ctx, &about, Some(policy_ref), type_, reason, message).await;
    }
}

/// One Event on `regarding`, with `related` as its related object. Warnings go
/// through the recorder that aggregates repeats; a one-off (a write done) through
/// a new one, so it is never folded into an earlier one.
async fn emit(
    ctx: &Context,
    regarding: &ObjectReference,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    if !ctx.may_write() {
        return;
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(message, 1000)),
        action: reason.to_owned(),
        secondary: related,
    };
    let one_off;
    let recorder = match type_ {
        EventType::Warning => &ctx.recorder,
        EventType::Normal => {
            one_off = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            &one_off
        }
    };
    if let Err(e) = recorder.publish(&event, regarding).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn invalid_status(current: &PoolPolicyStatus, generation: i64, message: &str) -> PoolPolicyStatus {
    use crate::{
        decide::conditions::{Wanted, settle},
        policy::condition::{reason, type_},
    };
    let wanted = vec![
        Wanted {
            type_: type_::READY,
            status: false,
            reason: reason::INVALID_SPEC,
            message: message.to_owned(),
        },
        Wanted {
            type_: type_::STALLED,
            status: true,
            reason: reason::INVALID_SPEC,
            message: message.to_owned(),
        },
        Wanted {
            type_: type_::RECONCILING,
            status: false,
            reason: reason::INVALID_SPEC,
            message: String::new(),
        },
    ];
    PoolPolicyStatus {
        observed_generation: Some(generation),
        conditions: settle(wanted, &current.conditions, generation, Timestamp::now()),
        ..current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::PlannedEvent;

    fn about(name: &str, reason: EventReason, message: &str) -> PlannedEvent {
        PlannedEvent {
            about: About::Workload(WorkloadRef {
                kind: Kind::Deployment,
                name: name.into(),
            }),
            warning: false,
            reason,
            message: message.into(),
        }
    }

    #[test]
    fn the_policy_gets_one_event_per_reason_naming_every_workload() {
        let planned = [
            about("a", EventReason::PoolEnvUpdated, "setting DB_POOL_MAX"),
            PlannedEvent {
                about: About::Policy,
                warning: true,
                reason: EventReason::LeakRecurring,
                message: "on the policy".into(),
            },
            about("b", EventReason::PoolEnvUpdated, "setting DB_POOL_MIN"),
            about("c", EventReason::PoolEnvSkipped, "would set DB_POOL_MAX (dry run)"),
        ];
        let refs: Vec<&PlannedEvent> = planned.iter().collect();
        let summaries: Vec<(&str, bool, String)> = policy_summaries(&refs)
            .into_iter()
            .map(|(r, w, m)| (r.as_str(), w, m))
            .collect();
        assert_eq!(
            summaries,
            [
                ("LeakRecurring", true, "on the policy".to_owned()),
                (
                    "PoolEnvUpdated",
                    false,
                    "2 workloads: Deployment a: setting DB_POOL_MAX; Deployment b: setting DB_POOL_MIN".to_owned()
                ),
                (
                    "PoolEnvSkipped",
                    false,
                    "Deployment c: would set DB_POOL_MAX (dry run)".to_owned()
                ),
            ]
        );
    }
}
