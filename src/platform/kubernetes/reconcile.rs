//! One reconcile pass of one policy: read (caches, Secret, shared database sample,
//! pool stats), decide (the pure core), act (only as leader), report.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
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
    workloads::kind_name,
};
use crate::{
    decide::{self, EnvConflict, PlanInput, env::desired_env},
    observation::Measured,
    observe::{history::History, pool_stats::Scraper, shared::SharedSamplers},
    policy::{
        PAUSED_ANNOTATION, PoolPolicy, PoolPolicyStatus, RemediationAction, ResolvedPolicy, SecretKeyRef, WorkloadKind,
        validate::UrlSource, validate_for_kubernetes,
    },
    telemetry::metrics::{Metrics, PolicyLabels, ReasonLabels, RestartLabels, ResultLabels},
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
    pub samplers: SharedSamplers,
    pub scraper: Scraper,
    pub metrics: Arc<Metrics>,
    /// Publishes warnings, which can repeat pass after pass: kube's recorder turns a
    /// repeat into a series on the first Event, and keeps each for 6 minutes to do so.
    pub recorder: Recorder,
    /// Who publishes; one-off Events (a write done) go through a recorder that keeps
    /// nothing, so thousands of env writes do not sit in memory for 6 minutes.
    pub reporter: Reporter,
    /// True while this replica may write (it holds the lease and is not stopping).
    pub leading: watch::Receiver<bool>,
    /// Every policy (the cache), to tell which one governs a workload.
    pub policies: Store<PoolPolicy>,
    /// Each cached policy's validation, once per version.
    pub validated: ValidatedPolicies,
    /// When a pass last finished, for `/healthz`.
    pub liveness: Arc<crate::telemetry::http::Liveness>,
    pub histories: Mutex<HashMap<ObjectRef<PoolPolicy>, History>>,
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
    let started = Instant::now();
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let labels = PolicyLabels {
        namespace: namespace.clone(),
        policy: name.clone(),
    };
    let span = tracing::info_span!("reconcile", policy = %name, namespace = %namespace);
    let _enter = span.enter();
    let interval = policy.spec.interval.parse().unwrap_or(Duration::from_secs(30));
    let deadline = pass_deadline(interval);
    let result = match tokio::time::timeout(deadline, pass(&policy, &ctx, &namespace, &name)).await {
        Ok(r) => r,
        // What was recorded before the cut stays Pending; the next pass settles it.
        Err(_) => Err(Error::Deadline(deadline)),
    };
    if result.is_ok() {
        ctx.liveness.pass_finished();
    }
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ReasonLabels {
                namespace,
                policy: name,
                reason: e.metric_label().to_owned(),
            })
            .inc();
    }
    result
}

pub fn error_policy(_policy: Arc<PoolPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
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
    let policy = &fresh;
    let mut version = policy.metadata.resource_version.clone();
    let generation = policy.metadata.generation.unwrap_or(0);
    let current = policy.status.clone().unwrap_or_default();
    let resolved = match validate_for_kubernetes(&policy.spec) {
        Ok(r) => r,
        Err(problems) => {
            let message: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
            let status = invalid_status(&current, generation, &message.join("; "));
            if status != current {
                warn!(problems = %message.join("; "), "invalid policy");
                publish(
                    ctx,
                    policy,
                    None,
                    EventType::Warning,
                    "InvalidPolicy",
                    &message.join("; "),
                )
                .await;
                write_status_merged(ctx, &api, namespace, name, status, &[], version).await?;
            }
            return Ok(Action::await_change());
        }
    };
    let policy_ref = ObjectRef::from_obj(policy);
    let selected = ctx.selection.select(&resolved, namespace);
    // One owner per workload: the ones another policy governs are left out of the
    // decision (nothing is written to them) and reported.
    let ownership = ownership::partition(policy, selected, &ctx.policies.state(), &ctx.validated);
    let selected = ownership.governed;

    // The database, shared with every policy on the same one.
    let url = policy_database_url(&ctx.client, namespace, &resolved).await;
    let sampled = crate::platform::sample_database(
        &ctx.samplers,
        &ctx.metrics,
        url.as_deref().map_err(String::as_str),
        resolved.interval,
    )
    .await;
    // Behind a pooler the pods' connections are the pooler's clients.
    let sampled = match &resolved.pooler {
        None => sampled,
        Some(pooler) => super::pooler::sample(&ctx.client, namespace, pooler, sampled).await,
    };
    let now = sampled.as_ref().map(|s| s.now).unwrap_or_else(|_| Timestamp::now());

    let claims = match &resolved.pool_stats {
        None => None,
        Some(source) => {
            let ips: Vec<_> = selected.iter().flat_map(|s| s.pods.iter()).map(|p| p.ip).collect();
            let claims = ctx.scraper.scrape_instances(source, &ips).await;
            let errors = claims.iter().filter(|c| matches!(c, Measured::Unknown(_))).count();
            if errors > 0 {
                ctx.metrics
                    .scrape_errors
                    .get_or_create(&PolicyLabels {
                        namespace: namespace.to_owned(),
                        policy: name.to_owned(),
                    })
                    .inc_by(errors as u64);
            }
            Some(claims)
        }
    };

    let workloads = {
        let mut histories = ctx.histories.lock().unwrap_or_else(|e| e.into_inner());
        let history = histories.entry(policy_ref.clone()).or_default();
        gather::observe(
            &resolved,
            &selected,
            sampled.as_deref().map_err(String::as_str),
            claims.as_deref(),
            history,
            now,
        )
    };
    let conflicts: Vec<EnvConflict> = {
        let mut all = ctx.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.entry(policy_ref.clone()).or_default();
        list.retain(|(_, at)| at.elapsed() < CONFLICT_RETRY);
        list.iter().map(|(c, _)| c.clone()).collect()
    };
    let database = Measured::from(sampled.as_ref().map(|s| s.limits()).map_err(Clone::clone));
    let input = PlanInput {
        policy: &resolved,
        generation,
        policy_paused: policy.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true"),
        status: &current,
        workloads: &workloads,
        database,
        conflicts: &conflicts,
        env_all_or_nothing: true,
        other_remediations: &ownership.other_remediations,
        governed_elsewhere: &ownership.elsewhere,
        now,
    };
    let mut plan = decide::plan(&input);
    ctx.metrics.record_plan(namespace, name, &plan);
    ctx.metrics
        .record_database(namespace, name, resolved.pool.max_size, sampled.as_deref().ok());

    // Every write below checks the lease again: a replica that lost it stops at once.
    let mut new_conflicts = Vec::new();
    let desired = desired_env(&resolved);
    for change in &plan.env {
        if !ctx.may_write() {
            return Ok(Action::await_change());
        }
        let Some(s) = selected
            .iter()
            .find(|s| kind_name(s.view.kind) == change.kind && s.view.name == change.workload)
        else {
            continue;
        };
        let Some(w) = workloads
            .iter()
            .find(|w| w.kind == change.kind && w.name == change.workload)
        else {
            continue;
        };
        let owned = decide::env::owned_env(&resolved, &desired, w, &conflicts);
        let body = actions::env_apply_body(s.view.kind, &s.view.name, namespace, &owned);
        let outcome = actions::apply_env(&ctx.client, s.view.kind, namespace, &s.view.name, &body).await;
        let result = match &outcome {
            EnvOutcome::Applied => {
                info!(workload = %s.view.name, kind = %change.kind, "pool env applied");
                "applied"
            }
            EnvOutcome::Conflicts(found) => {
                let text: Vec<String> = found
                    .iter()
                    .map(|c| format!("{} on {}/{} is owned by {}", c.env, c.workload, c.container, c.manager))
                    .collect();
                warn!(workload = %s.view.name, conflicts = %text.join("; "), "pool env owned by another manager; not forcing");
                publish(
                    ctx,
                    policy,
                    Some(workload_ref(namespace, &change.kind, &change.workload, &selected)),
                    EventType::Warning,
                    "Conflict",
                    &text.join("; "),
                )
                .await;
                new_conflicts.extend(found.iter().cloned());
                "conflict"
            }
            EnvOutcome::Failed(e) => {
                warn!(workload = %s.view.name, error = %e, "pool env apply failed");
                "error"
            }
        };
        ctx.metrics
            .env_writes
            .get_or_create(&ResultLabels {
                namespace: namespace.to_owned(),
                policy: name.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    // Remediations. The status records them (Pending) before they happen, written
    // only if nobody wrote the status since it was read; so a controller killed
    // between the two cannot restart the same thing again within the cooldown, and
    // two writers cannot both spend one budget. A refused one is then taken out
    // again, the others confirmed (Done), so budgets count only real restarts.
    let mut published = current.clone();
    if !plan.remediations.is_empty() {
        if !ctx.may_write() {
            return Ok(Action::await_change());
        }
        match actions::write_status(&ctx.client, namespace, name, &plan.status, version.as_deref()).await {
            Ok(v) => version = v,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                info!("the status changed since it was read; deciding again before restarting anything");
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            Err(e) => return Err(Error::Status(e)),
        }
        published = plan.status.clone();
    }
    let mut refused = Vec::new();
    for r in &plan.remediations {
        if !ctx.may_write() {
            return Ok(Action::await_change());
        }
        let record = &r.record;
        let kind = if record.kind == "StatefulSet" {
            WorkloadKind::StatefulSet
        } else {
            WorkloadKind::Deployment
        };
        let about = match &record.pod {
            Some(pod) => actions::reference("v1", "Pod", namespace, pod, None),
            None => workload_ref(namespace, &record.kind, &record.workload, &selected),
        };
        let done = match (record.action, &record.pod) {
            (RemediationAction::RestartPod, Some(pod)) => match actions::evict(&ctx.evict_client, namespace, pod).await
            {
                EvictOutcome::Evicted => Ok(format!("evicted pod {pod}: {}", record.reason)),
                EvictOutcome::Gone => Err(("pod_gone", format!("pod {pod} is already gone"))),
                EvictOutcome::Blocked(why) => Err(("disruption_budget", format!("eviction of {pod} refused: {why}"))),
                EvictOutcome::Failed(e) => Err(("eviction_failed", format!("eviction of {pod} failed: {e}"))),
            },
            _ => match actions::rollout_restart(&ctx.client, kind, namespace, &record.workload, &record.at.to_string())
                .await
            {
                Ok(()) => Ok(format!("rollout restart of {}: {}", record.workload, record.reason)),
                Err(e) => Err((
                    "rollout_failed",
                    format!("rollout restart of {} failed: {e}", record.workload),
                )),
            },
        };
        match done {
            Ok(message) => {
                info!(workload = %record.workload, pod = ?record.pod, reason = %record.reason, "restarted");
                ctx.metrics
                    .restarts
                    .get_or_create(&RestartLabels {
                        namespace: namespace.to_owned(),
                        policy: name.to_owned(),
                        action: format!("{:?}", record.action),
                        measure: format!("{:?}", record.measure),
                    })
                    .inc();
                publish(
                    ctx,
                    policy,
                    Some(about.clone()),
                    EventType::Normal,
                    "Restarted",
                    &message,
                )
                .await;
            }
            Err((reason, message)) => {
                warn!(workload = %record.workload, pod = ?record.pod, %message, "remediation not carried out");
                ctx.metrics
                    .skipped_remediations
                    .get_or_create(&ReasonLabels {
                        namespace: namespace.to_owned(),
                        policy: name.to_owned(),
                        reason: reason.to_owned(),
                    })
                    .inc();
                publish(
                    ctx,
                    policy,
                    Some(about.clone()),
                    EventType::Warning,
                    "RemediationSkipped",
                    &message,
                )
                .await;
                refused.push(record.clone());
            }
        }
    }
    plan.record_outcomes(&refused);
    for s in &plan.skipped {
        ctx.metrics
            .skipped_remediations
            .get_or_create(&ReasonLabels {
                namespace: namespace.to_owned(),
                policy: name.to_owned(),
                reason: s.why.label().to_owned(),
            })
            .inc();
    }
    for e in &plan.events {
        if e.reason == "Remediating" {
            // Reported above with the outcome.
            continue;
        }
        let message = if e.object_kind == "Policy" || e.object_name.is_empty() {
            e.message.clone()
        } else {
            format!("{} {}: {}", e.object_kind, e.object_name, e.message)
        };
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let about = (e.object_kind != "Policy" && !e.object_name.is_empty())
            .then(|| workload_ref(namespace, &e.object_kind, &e.object_name, &selected));
        publish(ctx, policy, about, type_, &e.reason, &message).await;
    }

    if plan.status != published {
        if !ctx.may_write() {
            return Ok(Action::await_change());
        }
        write_status_merged(ctx, &api, namespace, name, plan.status.clone(), &refused, version).await?;
    }
    if !new_conflicts.is_empty() {
        let mut all = ctx.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.entry(policy_ref).or_default();
        let now = Instant::now();
        list.extend(new_conflicts.into_iter().map(|c| (c, now)));
        // Report the conflict now rather than one interval later.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(Action::requeue(resolved.interval))
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

/// An Event on the policy and, when it concerns one, on the workload or pod too
/// (with the policy as the related object), so `kubectl describe` shows it on both.
async fn publish(
    ctx: &Context,
    policy: &PoolPolicy,
    about: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    if !ctx.may_write() {
        return;
    }
    let policy_ref = policy.object_ref(&());
    let event = |secondary: Option<ObjectReference>| Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(message, 1000)),
        action: reason.to_owned(),
        secondary,
    };
    let one_off;
    let recorder = match type_ {
        EventType::Warning => &ctx.recorder,
        EventType::Normal => {
            one_off = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            &one_off
        }
    };
    if let Err(e) = recorder.publish(&event(about.clone()), &policy_ref).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
    if let Some(about) = about
        && let Err(e) = recorder.publish(&event(Some(policy_ref)), &about).await
    {
        warn!(error = %e, reason, "could not publish an Event");
    }
}

fn workload_ref(namespace: &str, kind: &str, name: &str, selected: &[Selected]) -> ObjectReference {
    let uid = selected
        .iter()
        .find(|s| kind_name(s.view.kind) == kind && s.view.name == name)
        .and_then(|s| s.view.uid.clone());
    actions::reference("apps/v1", kind, namespace, name, uid)
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
    use crate::decide::conditions::{Wanted, settle};
    let wanted = vec![
        Wanted {
            type_: "Ready",
            status: false,
            reason: "InvalidSpec",
            message: message.to_owned(),
        },
        Wanted {
            type_: "Stalled",
            status: true,
            reason: "InvalidSpec",
            message: message.to_owned(),
        },
        Wanted {
            type_: "Reconciling",
            status: false,
            reason: "InvalidSpec",
            message: String::new(),
        },
    ];
    PoolPolicyStatus {
        observed_generation: Some(generation),
        conditions: settle(wanted, &current.conditions, generation, Timestamp::now()),
        ..current.clone()
    }
}

/// The selected workloads' names, for logs and `plan` output.
pub fn describe(selected: &[Selected]) -> Vec<String> {
    selected
        .iter()
        .map(|s| format!("{}/{}", kind_name(s.view.kind), s.view.name))
        .collect()
}
