//! The wiring: the watches (Deployments, StatefulSets and Pods into the selection
//! index, PoolPolicies into a reflector), a kube-runtime Controller over PoolPolicy
//! triggered by the workloads and pods its policies select, leader election, the
//! telemetry endpoint, and shutdown.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::Pod,
};
use kube::{
    Api, Client,
    runtime::{
        Controller, Predicate, WatchStreamExt,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef, Store},
        utils::Backoff,
        watcher,
    },
};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    cache::{CachedAutoscaler, CachedPod, CachedWorkload, convert},
    decoded::Decoded,
    follow, index,
    reconcile::{Context, error_policy, reconcile},
    validated::ValidatedPolicies,
};
use crate::{
    policy::{PoolPolicy, WorkloadKind},
    telemetry::{
        http::{Health, Liveness, serve},
        metrics::Metrics,
    },
};

/// Objects per page of a watch's list: each page is held whole, as full objects,
/// before it is converted to the cached forms.
const LIST_PAGE: u32 = 100;

/// Policies reconciled at the same time.
const PASS_CONCURRENCY: u16 = 4;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch one namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease; without it this replica always writes.
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    /// Seconds a lease is valid after its last renewal.
    pub lease_duration: u64,
    pub identity: String,
    /// The sizing histories' peak window (a minute; shorter in tests: docs/sizing.md).
    pub sizing_window: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("serving telemetry on {0}: {1}")]
    Telemetry(SocketAddr, #[source] std::io::Error),
    #[error("leader election: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// How long a stop waits for the passes in flight to end on their own.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` resolves (SIGTERM, Ctrl-C, or a test's signal).
pub async fn run(
    client: Client,
    evict_client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (health, server) = start_telemetry(options.metrics_addr).await?;
    let leadership = Leadership::start(&client, &options, health.metrics.clone()).await?;
    let (caches, triggers) = watch_all(&client, &options.namespace);
    let synced = spawn_readiness(health.clone(), &caches);
    let ctx = context(
        client,
        evict_client,
        (&options.identity, options.sizing_window),
        &caches,
        &health,
        &leadership,
        synced,
    );

    let (deployments, statefulsets, pods, autoscalers, policy_stream) = triggers;
    let controller = Controller::for_stream(policy_stream, caches.policies.clone());
    let controller = configure(controller)
        .reconcile_on(deployments)
        .reconcile_on(statefulsets)
        .reconcile_on(pods)
        .reconcile_on(autoscalers)
        .reconcile_all_on(became_leader(leadership.leading.clone()))
        .graceful_shutdown_on(stopped(leadership.stop_rx.clone()))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(log_controller_error);

    let due_keeper = spawn_due_keeper(
        caches.validated.clone(),
        leadership.leading.clone(),
        ctx.synced.clone(),
        health.liveness.clone(),
    );
    let sweeper = spawn_sweeper(ctx);

    tokio::pin!(controller);
    tokio::select! {
        _ = &mut controller => {}
        _ = shutdown => {
            info!("shutting down: no more writes");
            // Stop writing at once, then give in-flight passes a moment to finish (they
            // write nothing now). A pass still reading (a database sample, a pod's stats
            // endpoint up to its timeout) is dropped: it has nothing left to do, and
            // waiting for it would hold SIGTERM for up to 30 s.
            leadership.leading_tx.send_replace(false);
            leadership.stop_tx.send_replace(true);
            if tokio::time::timeout(STOP_GRACE, &mut controller).await.is_err() {
                info!("passes still reading dropped on the way out");
            }
        }
    }
    leadership.finish().await;
    sweeper.abort();
    due_keeper.abort();
    server.abort();
    Ok(())
}

/// Serves /metrics, /healthz and /readyz; not ready until the caches have listed.
async fn start_telemetry(addr: SocketAddr) -> Result<(Arc<Health>, tokio::task::JoinHandle<()>), RunError> {
    let health = Arc::new(Health {
        metrics: Arc::new(Metrics::new()),
        ready: false.into(),
        liveness: Arc::new(Liveness::default()),
    });
    let (bound, server) = serve(addr, health.clone())
        .await
        .map_err(|e| RunError::Telemetry(addr, e))?;
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok((health, server))
}

/// Leadership: `leading` is true only while this replica holds the lease and is not
/// shutting down.
struct Leadership {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    leading_tx: watch::Sender<bool>,
    leading: watch::Receiver<bool>,
    lease_task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// Without leader election this replica leads from the start.
    async fn start(client: &Client, options: &Options, metrics: Arc<Metrics>) -> Result<Self, RunError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (leading_tx, leading) = watch::channel(!options.leader_election);
        let lease_task = if options.leader_election {
            Some(follow_lease(client, options, metrics, leading_tx.clone(), stop_rx.clone()).await?)
        } else {
            metrics.leader.set(1);
            None
        };
        Ok(Leadership {
            stop_tx,
            stop_rx,
            leading_tx,
            leading,
            lease_task,
        })
    }

    /// Stops leading and waits until the lease is released.
    async fn finish(mut self) {
        self.stop_tx.send_replace(true);
        let _ = self.stop_rx.borrow_and_update();
        if let Some(task) = self.lease_task {
            let _ = task.await;
        }
    }
}

/// Joins the lease election and mirrors the lease into `leading_tx` (and the leader
/// gauge) until `stop` turns true, then releases the lease.
async fn follow_lease(
    client: &Client,
    options: &Options,
    metrics: Arc<Metrics>,
    leading_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&options.lease_namespace)
        .with_parameters(
            LeaseParams::new(
                &options.identity,
                options.lease_duration,
                (options.lease_duration / 3).max(1),
            )
            .with_field_manager(format!("poolwarden-{}", options.identity)),
        )
        .build()
        .await
        .map_err(RunError::Lease)?;
    let (mut lease_rx, lease_handle) = manager.watch().await;
    let identity = options.identity.clone();
    Ok(tokio::spawn(async move {
        loop {
            let held = *lease_rx.borrow_and_update() && !*stop.borrow();
            metrics.leader.set(i64::from(held));
            if held != *leading_tx.borrow() {
                info!(%identity, leader = held, "leadership changed");
            }
            leading_tx.send_replace(held);
            tokio::select! {
                changed = lease_rx.changed() => if changed.is_err() { break },
                _ = stop.changed() => {
                    leading_tx.send_replace(false);
                    metrics.leader.set(0);
                    break;
                }
            }
        }
        // Dropping the receiver makes the lease manager release the lease.
        drop(lease_rx);
        match lease_handle.await {
            Ok(Ok(_)) => info!("lease released"),
            Ok(Err(e)) => warn!(error = %e, "releasing the lease"),
            Err(e) => warn!(error = %e, "lease task"),
        }
    }))
}

/// The caches a pass reads, and what the watch mappers read to find the policies an
/// object's change concerns.
struct Caches {
    policies: Store<PoolPolicy>,
    /// What each pass selects from, kept by the workload and pod streams.
    selection: index::SelectionIndex,
    validated: ValidatedPolicies,
    /// Whether each watch has listed once (deployments, statefulsets, pods,
    /// horizontalpodautoscalers, policies).
    listed: [(&'static str, Listed); 5],
}

/// Whether a watch has listed once, as its own events say (`InitDone` once the
/// reflector has stored the list). Readiness waits on this, not on the stores'
/// `wait_until_ready`: that future keeps the waker of the task that polled it last,
/// and kube's Controller waits on the policy store before its first pass. A readiness
/// check that polled after the Controller took its wake-up, and in a cluster where
/// nothing changed after the caches listed, the Controller never ran a pass.
#[derive(Clone)]
struct Listed(watch::Sender<bool>);

impl Listed {
    fn new() -> Self {
        Listed(watch::channel(false).0)
    }

    /// The watch's list is stored.
    fn mark(&self) {
        self.0.send_replace(true);
    }

    /// What the watch stream calls on each event, once it is stored.
    fn follow<K>(&self) -> impl FnMut(&watcher::Event<K>) + Send + use<K> {
        let listed = self.clone();
        move |event| {
            if matches!(event, watcher::Event::InitDone) {
                listed.mark();
            }
        }
    }

    async fn wait(&self) {
        // The sender is held by `self`, so the channel cannot close while this waits.
        let _ = self.0.subscribe().wait_for(|l| *l).await;
    }
}

/// Starts the five watches: the caches they fill, and their streams of the policies
/// their changes concern (deployments, statefulsets, pods, the autoscalers whose
/// `maxReplicas` the connection budget counts) or of the policies themselves.
#[allow(clippy::type_complexity)]
fn watch_all(
    client: &Client,
    ns: &Option<String>,
) -> (
    Caches,
    (
        impl futures::Stream<Item = ObjectRef<PoolPolicy>> + Send + 'static,
        impl futures::Stream<Item = ObjectRef<PoolPolicy>> + Send + 'static,
        impl futures::Stream<Item = ObjectRef<PoolPolicy>> + Send + 'static,
        impl futures::Stream<Item = ObjectRef<PoolPolicy>> + Send + 'static,
        impl futures::Stream<Item = Result<PoolPolicy, watcher::Error>> + Send + 'static,
    ),
) {
    // Paged lists rather than one list from the watch cache:
    // a whole namespace of pods in one response is the controller's memory peak.
    let wc = watcher::Config::default().page_size(LIST_PAGE);
    let selection = index::SelectionIndex::default();
    let validated = ValidatedPolicies::default();
    let listed = [
        ("deployments", Listed::new()),
        ("statefulsets", Listed::new()),
        ("pods", Listed::new()),
        ("horizontalpodautoscalers", Listed::new()),
        ("poolpolicies", Listed::new()),
    ];
    let deploy_stream = object_triggers(
        watcher(api::<Decoded<Deployment>>(client, ns), wc.clone())
            .map_ok(convert::<Decoded<Deployment>, CachedWorkload>),
        follow::workloads(selection.clone(), validated.clone(), WorkloadKind::Deployment),
        listed[0].clone(),
    );
    let sts_stream = object_triggers(
        watcher(api::<Decoded<StatefulSet>>(client, ns), wc.clone())
            .map_ok(convert::<Decoded<StatefulSet>, CachedWorkload>),
        follow::workloads(selection.clone(), validated.clone(), WorkloadKind::StatefulSet),
        listed[1].clone(),
    );
    let pod_stream = object_triggers(
        watcher(api::<Decoded<Pod>>(client, ns), wc.clone()).map_ok(convert::<Decoded<Pod>, CachedPod>),
        follow::pods(selection.clone(), validated.clone()),
        listed[2].clone(),
    );
    let hpa_stream = object_triggers(
        watcher(api::<HorizontalPodAutoscaler>(client, ns), wc.clone())
            .map_ok(convert::<HorizontalPodAutoscaler, CachedAutoscaler>),
        follow::autoscalers(selection.clone(), validated.clone()),
        listed[3].clone(),
    );
    let (policies, policy_stream) = policy_triggers(api(client, ns), wc, (validated.clone(), listed[4].1.clone()));
    let caches = Caches {
        policies,
        selection,
        validated,
        listed,
    };
    (
        caches,
        (deploy_stream, sts_stream, pod_stream, hpa_stream, policy_stream),
    )
}

/// A watch of workloads or pods, each event stored in the selection index by
/// `follow`, as the stream of the policies its changes concern. Its errors are
/// logged and retried with backoff; the watch says it has listed once the index holds
/// the list.
fn object_triggers<T: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
    mut follow: impl FnMut(watcher::Event<T>) -> Vec<ObjectRef<PoolPolicy>> + Send + 'static,
    (kind, listed): (&'static str, Listed),
) -> impl futures::Stream<Item = ObjectRef<PoolPolicy>> + Send + 'static {
    events
        .backoff(WatchBackoff::default())
        .filter_map(move |event| {
            future::ready(match event {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    let refs = follow(event);
                    if done {
                        listed.mark();
                    }
                    Some(futures::stream::iter(refs))
                }
                Err(e) => {
                    warn!(error = %e, kind, "watch");
                    None
                }
            })
        })
        .flatten()
}

/// The policy cache and the stream of policy changes that trigger passes.
fn policy_triggers(
    api: Api<PoolPolicy>,
    wc: watcher::Config,
    (validated, listed): (ValidatedPolicies, Listed),
) -> (
    Store<PoolPolicy>,
    impl futures::Stream<Item = Result<PoolPolicy, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, wc)
        .backoff(WatchBackoff::default())
        .modify(|p: &mut PoolPolicy| p.metadata.managed_fields = None)
        .reflect(writer)
        .inspect_ok(listed.follow())
        .inspect_ok(super::validated::follow(validated, reader.clone()))
        .touched_objects()
        // Our own status writes do not trigger a pass; spec and annotation changes do.
        .predicate_filter(
            predicates::generation.combine(predicates::annotations),
            Default::default(),
        );
    (reader, stream)
}

/// What every pass shares.
fn context(
    client: Client,
    evict_client: Client,
    (identity, sizing_window): (&str, std::time::Duration),
    caches: &Caches,
    health: &Health,
    leadership: &Leadership,
    synced: watch::Receiver<bool>,
) -> Arc<Context> {
    let reporter = Reporter {
        controller: "poolwarden".into(),
        instance: Some(identity.to_string()),
    };
    Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter.clone()),
        client,
        evict_client,
        selection: caches.selection.clone(),
        shared: crate::platform::pass::Shared::with_sizing_window(health.metrics.clone(), sizing_window),
        reporter,
        leading: leadership.leading.clone(),
        validated: caches.validated.clone(),
        liveness: health.liveness.clone(),
        synced,
        failing: Default::default(),
        conflicts: Mutex::new(HashMap::new()),
    })
}

/// Readiness: every cache has listed once. Each cache says when it has, so a
/// readiness that never comes names the cache it waits for. The answer turns true
/// then too: passes wait for it.
fn spawn_readiness(health: Arc<Health>, caches: &Caches) -> watch::Receiver<bool> {
    let listed = caches.listed.clone();
    let (synced_tx, synced) = watch::channel(false);
    tokio::spawn(async move {
        future::join_all(listed.iter().map(|(name, l)| async move {
            l.wait().await;
            info!(cache = *name, "cache synced");
        }))
        .await;
        health.ready.store(true, Ordering::Relaxed);
        info!("caches synced");
        synced_tx.send_replace(true);
        // Kept open, so a pass never reads a closed channel as "not synced".
        synced_tx.closed().await;
    });
    synced
}

/// How passes are scheduled.
fn configure(controller: Controller<PoolPolicy>) -> Controller<PoolPolicy> {
    controller
        // Passes of different policies run side by side, but a bounded few: each holds
        // its workloads' views, samples and plan while it runs, and with every policy
        // at once that transient copy was the controller's memory peak.
        .with_config(
            ControllerConfig::default()
                .debounce(Duration::from_millis(200))
                .concurrency(PASS_CONCURRENCY),
        )
        // The trigger streams back off on errors too; kube's default would hold every
        // trigger for up to 30 s for two minutes after a burst of watch errors.
        .trigger_backoff(WatchBackoff::default())
}

/// A replica that becomes leader reconciles everything at once.
fn became_leader(leading: watch::Receiver<bool>) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::WatchStream::new(leading)
        .filter(|l| future::ready(*l))
        .map(|_| ())
}

/// Resolves once `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A missing policy is a deleted one, not worth a warning.
fn log_controller_error<T, E, U>(result: Result<T, kube::runtime::controller::Error<E, U>>) -> future::Ready<()>
where
    E: std::error::Error + 'static,
    U: std::error::Error + 'static,
{
    if let Err(e) = result {
        match e {
            kube::runtime::controller::Error::ObjectNotFound(_) => {}
            other => warn!(error = %other, "controller"),
        }
    }
    future::ready(())
}

/// Liveness: while this replica leads, its caches have listed and it has policies, a
/// pass (whatever its outcome) is due within three of the shortest interval plus the
/// longest a pass may take. Listing 20,000 Deployments can take longer than that.
fn spawn_due_keeper(
    validated: ValidatedPolicies,
    leading: watch::Receiver<bool>,
    synced: watch::Receiver<bool>,
    liveness: Arc<Liveness>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut was_leading = false;
        loop {
            let lead = *leading.borrow() && *synced.borrow();
            if lead && !was_leading {
                liveness.pass_finished();
            }
            was_leading = lead;
            let shortest = validated.shortest_interval();
            liveness.set_due(
                shortest
                    .filter(|_| lead)
                    .map(|i| i.saturating_mul(3).saturating_add(super::reconcile::PASS_DEADLINE_MAX)),
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

/// Forget databases no policy has asked about for a while.
fn spawn_sweeper(ctx: Arc<Context>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            ctx.shared.samplers.forget_unused(Duration::from_secs(600));
        }
    })
}

/// Retry delays of a failing watch: 250 ms doubling to 8 s, back to the start after
/// any success. kube's default keeps its 30 s ceiling for two minutes after the last
/// error, which leaves the caches stale that long after a short API server outage.
#[derive(Clone, Debug)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(8);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{WatchStreamExt, reflector, watcher};

    use super::*;

    /// kube's Controller waits for the policy store before its first pass, and the
    /// readiness check learns of the same listing: the Controller, which polled first
    /// (it starts before the caches list), must still be woken, and readiness too.
    #[tokio::test]
    async fn the_controller_learns_the_store_has_listed_though_readiness_asks_too() {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let listed = Listed::new();
        let controller = tokio::spawn({
            let reader = reader.clone();
            async move { reader.wait_until_ready().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let readiness = tokio::spawn({
            let listed = listed.clone();
            async move { listed.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (tx, events) = futures::channel::mpsc::unbounded::<Result<watcher::Event<ConfigMap>, watcher::Error>>();
        let watch = tokio::spawn(
            events
                .reflect(writer)
                .inspect_ok(listed.follow())
                .for_each(|_| async {}),
        );
        tx.unbounded_send(Ok(watcher::Event::Init)).unwrap();
        tx.unbounded_send(Ok(watcher::Event::InitDone)).unwrap();
        let both = tokio::time::timeout(Duration::from_secs(5), async {
            (controller.await.ok(), readiness.await.is_ok())
        })
        .await;
        assert!(matches!(both, Ok((Some(true), true))), "{both:?}");
        watch.abort();
    }
}
