//! End to end, pool sizing from measured use (docs/sizing.md): the leaky-app holds a
//! known number of transactions open (`/load`), at three levels one after another;
//! the test measures each level's peak per window itself from `pg_stat_activity`,
//! and the recommendation in the policy's status converges to within one
//! connection of it: at least the peak and at most one more (its target is the
//! 95th percentile plus one spare).
//!
//! Time scale: the in-process controller's peak window is one second (the harness
//! sets it), so a "minute" of the recommender is a second here; the recommender's
//! arithmetic is the production one, counted in windows.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::Value;
use support::e2e::{Cluster, app_get, database_url, eventually, pg};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: sizing}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: sizing}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 10}
  sizing: {mode: Recommend, maxAllowed: 20}
";

/// The recommendation of `web` in the policy's status: (target, lower, upper, current).
async fn recommendation(cluster: &Cluster) -> Option<(u64, u64, u64, Option<u64>)> {
    let policy = cluster.policy("sizing").await;
    let status = serde_json::to_value(policy.status?).ok()?;
    let row = status["workloads"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "web")?
        .clone();
    let s: &Value = &row["sizing"];
    Some((
        s["target"].as_u64()?,
        s["lowerBound"].as_u64()?,
        s["upperBound"].as_u64()?,
        s["current"].as_u64(),
    ))
}

/// Keeps `n` transactions open on the pod, call after call, until `stop`.
/// One Deployment `web` of a single replica, selected by [`POLICY`].
async fn web_under_the_policy(cluster: &Cluster) {
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "sizing")]);
    cluster.create_deployment("web", &part_of, 1, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(POLICY).await;
}

/// The one ready pod of `web` once it runs with the policy's pool of 10.
async fn rolled_pod(cluster: &Cluster) -> Pod {
    let rolled = eventually(Duration::from_secs(60), || async {
        let pods = cluster.ready_pods("web").await;
        pods.len() == 1 && runs_with_max(&pods[0], "10")
    })
    .await;
    assert!(rolled, "web runs with the policy's pool");
    cluster.ready_pods("web").await[0].clone()
}

/// Whether this pod itself runs with the policy's pool: right after the template
/// changes, the one ready pod may still be the old one the rollout is about to
/// replace, and load sent to it would be lost with it.
fn runs_with_max(pod: &Pod, max: &str) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| {
            c.env
                .iter()
                .flatten()
                .any(|e| e.name == "DB_POOL_MAX" && e.value.as_deref() == Some(max))
        })
    })
}

fn drive(pod: Pod, n: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            if app_get(&pod, &format!("/load?n={n}&ms=1500")).await.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
}

/// Samples the pod's connections in use (active or idle in a transaction) every
/// 100 ms and keeps the highest seen since the last reset: the test's own peak.
fn measure(pod: String, peak: Arc<AtomicI64>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let db = pg().await;
        while !stop.load(Ordering::SeqCst) {
            let n: i64 = db
                .query_one(
                    "select count(*) from pg_stat_activity where application_name = $1 \
                     and state in ('active', 'idle in transaction', 'idle in transaction (aborted)')",
                    &[&pod],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(-1);
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommendation_converges_to_each_load_levels_measured_peak_within_one_connection() {
    let cluster = Cluster::start("sizing").await;
    web_under_the_policy(&cluster).await;
    let _controller = cluster.controller("solo", false);
    let pod = rolled_pod(&cluster).await;
    let idle = eventually(Duration::from_secs(30), || async {
        recommendation(&cluster).await.is_some_and(|(target, ..)| target <= 1)
    })
    .await;
    assert!(
        idle,
        "an idle pod is recommended at most one connection: {:?}",
        recommendation(&cluster).await
    );

    let stop_measuring = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let measurer = measure(pod.name_any(), peak.clone(), stop_measuring.clone());
    for level in [2usize, 4, 7] {
        let stop = Arc::new(AtomicBool::new(false));
        let driver = drive(pod.clone(), level, stop.clone());
        let started = Instant::now();
        // The measured peak of this level: reset once the load is on.
        tokio::time::sleep(Duration::from_secs(2)).await;
        peak.store(0, Ordering::SeqCst);
        let converged = eventually(Duration::from_secs(60), || async {
            let measured = peak.load(Ordering::SeqCst);
            recommendation(&cluster)
                .await
                .is_some_and(|(target, ..)| measured > 0 && (measured..=measured + 1).contains(&(target as i64)))
        })
        .await;
        let measured = peak.load(Ordering::SeqCst);
        let seen = recommendation(&cluster).await;
        eprintln!(
            "level {level}: measured peak {measured}, recommendation (target, lower, upper, current) {seen:?} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(measured, level as i64, "the load holds {level} transactions open");
        assert!(
            converged,
            "level {level}: the target within one of the measured peak {measured}: {seen:?}"
        );
        let (target, lower, upper, current) = seen.unwrap_or_default();
        assert!(lower <= target && target <= upper && upper <= 20, "{seen:?}");
        assert!(target as i64 >= measured, "never below the peak: {seen:?}");
        assert_eq!(current, Some(10), "the pool it runs with");
        stop.store(true, Ordering::SeqCst);
        let _ = driver.await;
    }
    stop_measuring.store(true, Ordering::SeqCst);
    let _ = measurer.await;
}

const AUTO: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: sizing}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: sizing}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 3}
  sizing: {mode: Auto, maxAllowed: 12, updateInterval: 1s, minConfidence: 60s}
";

/// The Deployment's `metadata.generation` and its template's DB_POOL_MAX.
async fn generation_and_max(cluster: &Cluster) -> (i64, Option<Value>) {
    let d = cluster
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .get("web")
        .await
        .ok();
    let generation = d.and_then(|d| d.metadata.generation).unwrap_or(-1);
    (
        generation,
        cluster
            .template_env("Deployment", "web")
            .await
            .get("DB_POOL_MAX")
            .cloned(),
    )
}

/// Auto: a steady load of 3 transactions saturates a pool of 3, so the recommendation
/// is 4 (the peak plus one spare); once the history is an hour's worth (60 one-second
/// windows), Auto writes DB_POOL_MAX=4 — one rollout — and with updateInterval 1s
/// still writes nothing more while the load stays: 4 lies within the recommendation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rolls_a_saturated_workload_once_to_the_recommended_max_and_not_again_while_the_load_is_steady() {
    let cluster = Cluster::start("sizing-auto").await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "sizing")]);
    cluster.create_deployment("web", &part_of, 1, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(AUTO).await;
    let _controller = cluster.controller("solo", false);
    let rolled = eventually(Duration::from_secs(60), || async {
        cluster.ready_pods("web").await.len() == 1 && generation_and_max(&cluster).await.1 == Some("3".into())
    })
    .await;
    assert!(
        rolled,
        "web runs with the policy's pool of 3: {:?}",
        generation_and_max(&cluster).await
    );
    let (generation, _) = generation_and_max(&cluster).await;

    // The load, on whichever pod web runs, until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (cluster_pods, stop) = (cluster.api::<Pod>(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let pods = cluster_pods
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                let running: Vec<Pod> = pods
                    .into_iter()
                    .filter(|p| p.name_any().starts_with("web-") && p.metadata.deletion_timestamp.is_none())
                    .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
                    .collect();
                let mut calls = Vec::new();
                for p in running {
                    calls.push(tokio::spawn(async move { app_get(&p, "/load?n=3&ms=1500").await }));
                }
                if calls.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for c in calls {
                    let _ = c.await;
                }
            }
        })
    };
    let started = Instant::now();
    let wrote = eventually(Duration::from_secs(150), || async {
        generation_and_max(&cluster).await.1 == Some("4".into())
    })
    .await;
    let after = generation_and_max(&cluster).await;
    eprintln!(
        "Auto wrote {:?} after {:.1} s of load; recommendation {:?}",
        after.1,
        started.elapsed().as_secs_f64(),
        recommendation(&cluster).await
    );
    assert!(
        wrote,
        "Auto sets DB_POOL_MAX to the peak 3 plus one: {after:?}, {:?}",
        recommendation(&cluster).await
    );
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "not before minConfidence (an hour of one-second windows)"
    );
    assert_eq!(after.0, generation + 1, "one template change");
    // Steady load: for 20 s more (20 updateIntervals), nothing else is written.
    let new_pod = eventually(Duration::from_secs(60), || async {
        recommendation(&cluster)
            .await
            .is_some_and(|(.., current)| current == Some(4))
    })
    .await;
    assert!(
        new_pod,
        "the row reads the new size: {:?}",
        recommendation(&cluster).await
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = generation_and_max(&cluster).await;
    let seen = recommendation(&cluster).await;
    stop.store(true, Ordering::SeqCst);
    let _ = driver.await;
    assert_eq!(
        end, after,
        "no second rollout while the load is steady; recommendation {seen:?}"
    );
    assert!(seen.is_some_and(|(target, ..)| target == 4), "{seen:?}");
}

/// The history survives a controller restart: a second controller (a new process
/// state, as after a crash or a leader change) reads the checkpoints the first
/// wrote and recommends from the load it never saw; without them its history would
/// start empty and its target for an idle pod be 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_the_history_from_its_checkpoints() {
    let cluster = Cluster::start("sizing-restart").await;
    web_under_the_policy(&cluster).await;
    let first = cluster.controller("first", false);
    let pod = rolled_pod(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let driver = drive(pod.clone(), 4, stop.clone());
    let recommended = eventually(Duration::from_secs(60), || async {
        recommendation(&cluster).await.is_some_and(|(target, ..)| target == 5)
    })
    .await;
    assert!(recommended, "4 in use: target 5: {:?}", recommendation(&cluster).await);
    // A checkpoint is written every ten windows (ten seconds here): one after the
    // load began holds it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = driver.await;
    let checkpoints = cluster
        .api::<k8s_openapi::api::core::v1::ConfigMap>()
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=poolwarden"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    assert_eq!(checkpoints.len(), 1, "one checkpoint for one workload");
    first.stop().await;

    let second = cluster.controller("second", false);
    let series = format!(
        "poolwarden_sizing_recommended_max{{namespace=\"{}\",policy=\"sizing\",kind=\"Deployment\",workload=\"web\",bound=\"target\"}}",
        cluster.namespace
    );
    let kept = eventually(Duration::from_secs(30), || async {
        second.metric(&series).await == Some(5.0)
    })
    .await;
    assert!(
        kept,
        "the second controller recommends 5 from the first one's history: {:?}",
        second.metric(&series).await
    );
}
