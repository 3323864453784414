//! The safety rails under a seeded schedule of faults, against the real controller
//! process: leaking pods in several workloads under two overlapping policies, while
//! the API server drops watches, forgets its history, answers 409/429/500 in bursts
//! on every verb and resource, slows down, and the controller is SIGKILLed and
//! restarted; one policy's database also becomes unreachable for a while.
//!
//! The invariants are read from the sandbox's own record of evictions and writes,
//! never from the controller's status:
//!
//! - per policy, evictions in any rolling hour ≤ `maxRestartsPerHour`;
//! - per workload, successive evictions ≥ `cooldown` apart, across policies;
//! - no eviction of a workload while its data is unknown (its database unreachable);
//! - every eviction has its record in the governing policy's status at the end, and
//!   no record claims a restart that did not happen;
//! - Deployment writes stay bounded (no fight between the policies);
//! - after the faults stop, the env converges and the writes fall to zero.
//!
//! Three seeds run by default (in parallel, about a minute each);
//! `POOLWARDEN_CHAOS_SEEDS=N` runs N more, two at a time (`POOLWARDEN_CHAOS_FIRST_SEED`
//! picks where they start).

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use poolwarden::{decide::remediation::PENDING_EXPIRY, policy::RemediationState};
use poolwarden_sandbox::apiserver::store::Eviction;
use serde_json::json;
use support::e2e::{Cluster, ControllerProcess, app_get, database_url, eventually};

const COOLDOWN: Duration = Duration::from_secs(20);
const BUDGET: usize = 3;
/// How long faults are injected.
const FAULT_PHASE: Duration = Duration::from_secs(30);
/// From the database becoming reachable again to the first verdict that can be
/// known-leaking: sustainedFor plus a sample.
const KNOWN_AGAIN: Duration = Duration::from_secs(2);
/// A pass that decided before the database went away may still carry out its
/// eviction this much later (requests slowed by the injected delays).
const IN_FLIGHT_SLACK: Duration = Duration::from_secs(3);

fn policy(name: &str, selector: &str, max_size: u32, secret: &str) -> String {
    format!(
        "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{{selector}: 'yes'}}}}
  interval: 1s
  database: {{urlSecretRef: {{name: {secret}, key: url}}}}
  pool: {{minSize: 0, maxSize: {max_size}, maxIdleSeconds: 2, maxLifetimeSeconds: 3}}
  discrepancy: {{measure: LifetimeOverrun, max: 1, sustainedFor: 2s, grace: 1s}}
  remediation: {{action: RestartPod, cooldown: 20s, maxRestartsPerHour: {BUDGET}, minAvailableReplicas: 0}}
"
    )
}

fn env(max_size: &'static str) -> [(&'static str, &'static str); 5] {
    [
        ("PGAPPNAME", "fieldRef:metadata.name"),
        ("DB_POOL_MIN", "0"),
        ("DB_POOL_MAX", max_size),
        ("DB_POOL_MAX_IDLE", "2"),
        ("DB_POOL_MAX_LIFETIME", "3"),
    ]
}

/// The workloads: (name, replicas, labels, governing policy, its maxSize). `web`
/// is selected by both policies; pol-a is the older, so it governs it.
const WORKLOADS: [(&str, i32, &[&str], &str, &str); 3] = [
    ("web", 2, &["a", "b"], "pol-a", "5"),
    ("worker", 1, &["a"], "pol-a", "5"),
    ("settle", 1, &["b"], "pol-b", "6"),
];

/// splitmix64: a small seeded generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

const VERBS: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];
const RESOURCES: [&str; 9] = [
    "poolpolicies",
    "poolpolicies/status",
    "pods",
    "pods/eviction",
    "deployments",
    "events",
    "secrets",
    "leases",
    "replicasets",
];

/// Leaks an untracked pool in every ready pod of the namespace not leaked yet, so
/// a replaced pod leaks again.
async fn feed_leaks(cluster: &Cluster, leaked: &mut Vec<String>) {
    for (name, ..) in WORKLOADS {
        for pod in cluster.ready_pods(name).await {
            let pod_name = pod.name_any();
            if !leaked.contains(&pod_name) && app_get(&pod, "/untracked?n=3").await.is_some() {
                leaked.push(pod_name);
            }
        }
    }
}

fn workload_of(e: &Eviction) -> String {
    e.owner.as_ref().map(|(_, n)| n.clone()).unwrap_or_default()
}

fn governor(workload: &str) -> &'static str {
    WORKLOADS.iter().find(|w| w.0 == workload).map(|w| w.3).unwrap_or("?")
}

async fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let cluster = Cluster::start(&format!("chaos{seed}")).await;
    // The schedule is the sandbox's fault injection and the invariants its own record.
    let Some(sandbox) = cluster.sandbox() else {
        eprintln!("skipped: the fault schedule needs the sandbox's fault injection and eviction record");
        return;
    };
    let url = database_url();
    cluster.database_secret("pg-a", &url).await;
    cluster.database_secret("pg-b", &url).await;
    for (name, replicas, labels, _, max_size) in WORKLOADS {
        let mut l: BTreeMap<&str, &str> = labels.iter().map(|k| (*k, "yes")).collect();
        l.insert("chaos", "yes");
        cluster.create_deployment(name, &l, replicas, &env(max_size)).await;
    }
    let ready = eventually(Duration::from_secs(40), || async {
        let mut all = true;
        for (name, replicas, ..) in WORKLOADS {
            all &= cluster.ready_pods(name).await.len() == replicas as usize;
        }
        all
    })
    .await;
    assert!(ready, "seed {seed}: workloads ready");
    cluster.create_policy(&policy("pol-a", "a", 5, "pg-a")).await;
    // creationTimestamp has a resolution of a second: pol-a is the older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cluster.create_policy(&policy("pol-b", "b", 6, "pg-b")).await;
    let deployment_writes_at_start = sandbox.writes("deployments");
    let mut leaked = Vec::new();
    feed_leaks(&cluster, &mut leaked).await;

    let mut controller = Some(ControllerProcess::spawn(&cluster, "chaos", false));
    let mut restarts = 0;
    // When pol-b's database was unreachable: (from, to).
    let mut unknown: Vec<(SystemTime, SystemTime)> = Vec::new();
    let mut broken_since: Option<(SystemTime, Instant)> = None;
    let mut schedule = Vec::new();
    let started = Instant::now();
    while started.elapsed() < FAULT_PHASE {
        feed_leaks(&cluster, &mut leaked).await;
        let step = rng.below(100);
        let what = match step {
            0..=9 => {
                sandbox.drop_watches();
                "drop_watches".to_owned()
            }
            10..=17 => {
                sandbox.expire_history();
                "expire_history".to_owned()
            }
            18..=59 => {
                let verb = *rng.pick(&VERBS);
                let resource = *rng.pick(&RESOURCES);
                let code = *rng.pick(&[409u16, 429, 500]);
                let times = 1 + rng.below(5) as usize;
                sandbox.fail_next(Some(verb), Some(resource), code, times);
                format!("{code}×{times} {verb} {resource}")
            }
            60..=64 => {
                // A long policy outage: the cache goes stale for seconds.
                sandbox.fail_next(Some("watch"), Some("poolpolicies"), 500, 30);
                sandbox.fail_next(Some("list"), Some("poolpolicies"), 500, 30);
                sandbox.drop_watches();
                "policy outage".to_owned()
            }
            65..=74 => {
                let d = rng.millis(0, 300);
                sandbox.set_delay(d);
                format!("delay {d:?}")
            }
            75..=84 => {
                if let Some(c) = controller.take() {
                    c.kill();
                }
                tokio::time::sleep(rng.millis(0, 1500)).await;
                controller = Some(ControllerProcess::spawn(&cluster, "chaos", false));
                restarts += 1;
                "SIGKILL + restart".to_owned()
            }
            _ => {
                // pol-b's database becomes unreachable, or reachable again.
                let secrets = cluster.api::<k8s_openapi::api::core::v1::Secret>();
                let to = match broken_since {
                    None => "postgres://postgres@127.0.0.1:1/postgres".to_owned(),
                    Some(_) => url.clone(),
                };
                let patch = json!({"stringData": {"url": to}});
                if secrets
                    .patch("pg-b", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    match broken_since.take() {
                        None => broken_since = Some((SystemTime::now(), Instant::now())),
                        Some((from, _)) => unknown.push((from, SystemTime::now())),
                    }
                }
                format!("pol-b database {}", if broken_since.is_some() { "down" } else { "up" })
            }
        };
        schedule.push(format!("{:>5.1}s {what}", started.elapsed().as_secs_f64()));
        tokio::time::sleep(rng.millis(300, 1500)).await;
    }
    // The faults stop.
    sandbox.faults().clear();
    sandbox.set_delay(Duration::ZERO);
    if let Some((from, _)) = broken_since.take() {
        let secrets = cluster.api::<k8s_openapi::api::core::v1::Secret>();
        secrets
            .patch(
                "pg-b",
                &PatchParams::default(),
                &Patch::Merge(&json!({"stringData": {"url": url}})),
            )
            .await
            .expect("pol-b's database back");
        unknown.push((from, SystemTime::now()));
    }
    let report = || {
        format!(
            "seed {seed}, {restarts} controller restarts; schedule:\n{}\nevictions: {:#?}",
            schedule.join("\n"),
            sandbox.evictions()
        )
    };

    // Env converges to the governing policy's.
    let converged = eventually(Duration::from_secs(30), || async {
        let mut all = true;
        for (name, _, _, _, max_size) in WORKLOADS {
            let env = cluster.template_env("Deployment", name).await;
            all &= env.get("DB_POOL_MAX").and_then(|v| v.as_str()) == Some(max_size);
        }
        all
    })
    .await;
    assert!(converged, "env converges\n{}", report());
    // Every eviction the controller decided on is carried out and recorded: wait
    // until no pod is left pending in a status, then for a quiet window. A SIGKILL
    // between recording a restart and evicting leaves its record Pending until
    // PENDING_EXPIRY has passed (the next controller cannot know the eviction is not
    // still on its way), so the wait outlasts that expiry plus a few passes.
    let expiry = Duration::try_from(PENDING_EXPIRY).expect("a positive expiry");
    let settled = eventually(expiry + Duration::from_secs(30), || async {
        let mut pending = 0;
        for p in ["pol-a", "pol-b"] {
            pending += cluster
                .policy(p)
                .await
                .status
                .map(|s| {
                    s.remediations
                        .iter()
                        .filter(|r| r.state == RemediationState::Pending)
                        .count()
                })
                .unwrap_or(0);
        }
        pending == 0
    })
    .await;
    assert!(settled, "no remediation left pending\n{}", report());
    // The writes fall to zero: Deployments at once (they are in sync), the status
    // once the last replaced pods have connected (each such change is one write).
    let writes = sandbox.writes("deployments");
    let quiet = eventually(Duration::from_secs(30), || async {
        let status_writes = sandbox.writes("poolpolicies/status");
        tokio::time::sleep(Duration::from_secs(4)).await;
        sandbox.writes("poolpolicies/status") == status_writes
    })
    .await;
    assert!(quiet, "status writes fall to zero\n{}", report());
    assert_eq!(
        sandbox.writes("deployments"),
        writes,
        "no Deployment writes once the faults stopped\n{}",
        report()
    );
    if let Some(c) = controller.take() {
        c.kill();
    }

    let all = sandbox.evictions();
    // Deployment writes bounded: in sync from the start, at most a few applies each
    // (a 409 or 500 answer, or a kill, can cost a retry), never a fight.
    let deployment_writes = sandbox.writes("deployments") - deployment_writes_at_start;
    assert!(
        deployment_writes <= 2 * WORKLOADS.len() as u64,
        "{deployment_writes} Deployment writes\n{}",
        report()
    );
    // Per policy, evictions in any rolling hour (the whole run) ≤ the budget.
    for p in ["pol-a", "pol-b"] {
        let n = all.iter().filter(|e| governor(&workload_of(e)) == p).count();
        assert!(n <= BUDGET, "{p}: {n} evictions, budget {BUDGET}\n{}", report());
    }
    // Per workload, cooldown between successive evictions, across policies.
    for (name, ..) in WORKLOADS {
        let times: Vec<SystemTime> = all.iter().filter(|e| workload_of(e) == name).map(|e| e.at).collect();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
            assert!(
                gap + Duration::from_secs(1) >= COOLDOWN,
                "{name}: evictions {gap:?} apart, cooldown {COOLDOWN:?}\n{}",
                report()
            );
        }
    }
    // No eviction while the data was unknown.
    for e in all.iter().filter(|e| governor(&workload_of(e)) == "pol-b") {
        for (from, to) in &unknown {
            let blind_from = *from + IN_FLIGHT_SLACK;
            let blind_to = *to + KNOWN_AGAIN;
            assert!(
                !(e.at > blind_from && e.at < blind_to),
                "{} evicted while its database was unreachable\n{}",
                e.pod,
                report()
            );
        }
    }
    // Every eviction has its record; no record claims a restart that did not happen.
    for p in ["pol-a", "pol-b"] {
        let status = cluster.policy(p).await.status.unwrap_or_default();
        for e in all.iter().filter(|e| governor(&workload_of(e)) == p) {
            assert!(
                status
                    .remediations
                    .iter()
                    .any(|r| r.pod.as_deref() == Some(e.pod.as_str()) && r.state == RemediationState::Done),
                "{p}: eviction of {} has no Done record: {:#?}\n{}",
                e.pod,
                status.remediations,
                report()
            );
        }
        for r in status.remediations.iter().filter(|r| r.state == RemediationState::Done) {
            assert!(
                all.iter().any(|e| Some(e.pod.as_str()) == r.pod.as_deref()),
                "{p}: phantom record {r:?}\n{}",
                report()
            );
        }
    }
    eprintln!(
        "chaos seed {seed}: {} evictions, {restarts} controller restarts, {deployment_writes} Deployment writes, {} steps",
        all.len(),
        schedule.len()
    );
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_1() {
    run_seed(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_2() {
    run_seed(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_3() {
    run_seed(3).await;
}

/// `POOLWARDEN_CHAOS_SEEDS=N`: N more seeds, from `POOLWARDEN_CHAOS_FIRST_SEED`
/// (default 100), two at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_more_seeds() {
    let n: u64 = std::env::var("POOLWARDEN_CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let first: u64 = std::env::var("POOLWARDEN_CHAOS_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut seed = first;
    while seed < first + n {
        let a = tokio::spawn(run_seed(seed));
        let b = (seed + 1 < first + n).then(|| tokio::spawn(run_seed(seed + 1)));
        a.await.expect("seed");
        if let Some(b) = b {
            b.await.expect("seed");
        }
        seed += 2;
    }
}
