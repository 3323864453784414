//! End to end, an API server that lists slowly or keeps refusing a pass (issue 32): no
//! pass runs before the caches it reads have listed, and a policy whose passes keep
//! failing says so (a condition, an Event, the error metric) while `/healthz` stays
//! 200 — restarting the process would not make the cluster accept its requests.

mod support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::{
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use poolwarden::policy::{PoolPolicy, PoolPolicyStatus};
use support::e2e::{Cluster, database_url, eventually};
use tokio::task::JoinHandle;

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: pools}
spec:
  selector: {matchLabels: {team: slow}}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 4}
";

/// Every version of the policy's status the API server sent to a watch, in order.
struct Recorded {
    seen: Arc<Mutex<Vec<PoolPolicyStatus>>>,
    task: JoinHandle<()>,
}

impl Recorded {
    fn start(cluster: &Cluster) -> Recorded {
        let seen: Arc<Mutex<Vec<PoolPolicyStatus>>> = Arc::default();
        let api = cluster.api::<PoolPolicy>();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let stream = watcher(api, watcher::Config::default()).applied_objects();
                futures::pin_mut!(stream);
                while let Some(p) = stream.next().await {
                    if let Ok(p) = p {
                        let mut seen = seen.lock().unwrap();
                        let status = p.status.unwrap_or_default();
                        if seen.last() != Some(&status) {
                            seen.push(status);
                        }
                    }
                }
            }
        });
        Recorded { seen, task }
    }

    fn all(&self) -> Vec<PoolPolicyStatus> {
        self.seen.lock().unwrap().clone()
    }

    fn any(&self, f: impl Fn(&PoolPolicyStatus) -> bool) -> bool {
        self.seen.lock().unwrap().iter().any(f)
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn condition<'a>(s: &'a PoolPolicyStatus, type_: &str) -> Option<&'a poolwarden::policy::Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pass_runs_before_the_deployment_cache_has_listed() {
    let cluster = Cluster::start("first-pass").await;
    let Some(sandbox) = cluster.sandbox.as_ref() else {
        eprintln!("fault injection needs the sandbox; skipped on a real cluster");
        return;
    };
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "slow")]);
    cluster.create_deployment("web", &labels, 0, &[]).await;
    cluster.create_policy(POLICY).await;
    let recorded = Recorded::start(&cluster);
    // The Deployment list fails four times (the watch retries after 0.25, 0.5, 1 and
    // 2 s), while the policies list at once.
    sandbox.fail_next(Some("list"), Some("deployments"), 500, 4);
    let controller = cluster.controller("solo", false);
    let counted = eventually(Duration::from_secs(60), || async {
        recorded.any(|s| s.workload_count == 1 && condition(s, "Ready").is_some())
    })
    .await;
    assert!(counted, "statuses seen: {:#?}", recorded.all());
    let early: Vec<PoolPolicyStatus> = recorded
        .all()
        .into_iter()
        .filter(|s| {
            !s.conditions.is_empty()
                && (s.workload_count == 0 || condition(s, "Ready").is_some_and(|c| c.reason == "NoWorkloadsSelected"))
        })
        .collect();
    assert!(
        early.is_empty(),
        "a pass ran before the Deployments were listed: {early:#?}"
    );

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_that_keep_failing_are_reported_while_healthz_stays_ok() {
    let cluster = Cluster::start("failing").await;
    let Some(sandbox) = cluster.sandbox.as_ref() else {
        eprintln!("fault injection needs the sandbox; skipped on a real cluster");
        return;
    };
    cluster.database_secret("pg", &database_url()).await;
    let labels = BTreeMap::from([("team", "slow")]);
    cluster.create_deployment("web", &labels, 0, &[]).await;
    cluster.create_policy(POLICY).await;
    let recorded = Recorded::start(&cluster);
    let controller = cluster.controller("solo", false);
    let ready = eventually(Duration::from_secs(60), || async {
        recorded.any(|s| condition(s, "Ready").is_some_and(|c| c.status == "True"))
    })
    .await;
    assert!(ready, "statuses seen: {:#?}", recorded.all());

    // Every pass reads the policy fresh first; from now on that read fails. (The test
    // reads through its watch, which these faults do not touch.)
    sandbox.fail_next(Some("get"), Some("poolpolicies"), 500, 100_000);
    let failing_since = Instant::now();
    let stalled = eventually(Duration::from_secs(90), || async {
        recorded.any(|s| condition(s, "Stalled").is_some_and(|c| c.status == "True" && c.reason == "PassesFailing"))
    })
    .await;
    assert!(stalled, "statuses seen: {:#?}", recorded.all());
    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("PassesFailing")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("pools")),
        "{events:#?}"
    );
    let errors = r#"poolwarden_reconcile_errors_total{namespace="NS",policy="pools",reason="policy_read"}"#
        .replace("NS", &cluster.namespace);
    assert!(controller.metric(&errors).await.is_some_and(|n| n >= 3.0), "{errors}");

    // Past the time within which a pass is due (3 intervals + the longest pass, 63 s),
    // and passes still fail: the process is alive, and says so.
    let due = Duration::from_secs(3 + 60 + 5);
    while failing_since.elapsed() < due {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (code, body) = controller.get("/healthz").await.expect("serving");
    assert_eq!(code, 200, "{body}");

    // The API server answers again: the next pass clears Stalled.
    sandbox.faults().clear();
    let recovered = eventually(Duration::from_secs(60), || async {
        cluster
            .condition("pools", "Stalled")
            .await
            .is_some_and(|(status, _, _)| status == "False")
    })
    .await;
    assert!(recovered, "statuses seen: {:#?}", recorded.all());

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
