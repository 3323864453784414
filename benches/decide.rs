//! Plan time for large fleets: `cargo bench --bench decide`. Prints the median of
//! several runs for 10,000 workloads × 3 pods × 60 samples, and how it grows with the
//! number of workloads and the length of the history.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use poolwarden::{
    decide::{self, Container, DatabaseLimits, Instance, PlanInput, Workload},
    observation::{Measured, PodConnections, PodSample},
    policy::{ConnectionCounts, Measure, PoolPolicyStatus, validate},
};

fn fleet(
    policy: &poolwarden::policy::ResolvedPolicy,
    workloads: usize,
    samples: usize,
    now: Timestamp,
) -> Vec<Workload> {
    let env: decide::Env = decide::env::desired_env(policy).into_iter().collect();
    (0..workloads)
        .map(|w| Workload {
            kind: poolwarden::decide::Kind::Deployment,
            name: format!("app-{w}"),
            replicas: 3,
            ready_replicas: 3,
            max_surge: 1,
            containers: vec![Container {
                name: "app".into(),
                env: env.clone(),
            }],
            instances: (0..3)
                .map(|p| Instance {
                    name: format!("app-{w}-{p}"),
                    ready: true,
                    started_at: Some(now - SignedDuration::from_hours(3)),
                    samples: (0..samples)
                        .map(|s| PodSample {
                            // Oldest first, as a controller appends them.
                            at: now - SignedDuration::from_secs(30 * (samples - 1 - s) as i64),
                            database: Measured::Known(PodConnections {
                                counts: ConnectionCounts {
                                    total: 4,
                                    idle: 3,
                                    active: 1,
                                    ..Default::default()
                                },
                                // Every 100th workload leaks in its first pod.
                                overrun: if w % 100 == 0 && p == 0 { 15 } else { 0 },
                                measure: Some(Measure::LifetimeOverrun),
                                ..Default::default()
                            }),
                            pool: None,
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// The median of `runs` plan times: small fleets plan in milliseconds, where a few
/// runs swing with whatever else the machine does, so they get more.
fn median_plan_time(workloads: usize, samples: usize, runs: usize) -> Duration {
    let spec = serde_json::json!({
        "selector": {"matchLabels": {"app": "x"}},
        "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        "pool": {"minSize": 0, "maxSize": 20, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600},
        "discrepancy": {"sustainedFor": "10m"},
        "remediation": {"action": "RestartPod", "maxRestartsPerHour": 50},
    });
    let policy = validate(&serde_json::from_value(spec).expect("spec")).expect("valid");
    let now = Timestamp::from_second(1_800_000_000).expect("timestamp");
    let ws = fleet(&policy, workloads, samples, now);
    let status = PoolPolicyStatus::default();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let plan = decide::plan(&PlanInput {
                policy: &policy,
                generation: 1,
                policy_paused: false,
                status: &status,
                workloads: &ws,
                database: Measured::Known(DatabaseLimits {
                    max_connections: 10_000,
                    reserved: 3,
                    pooler: None,
                }),
                database_full: None,
                conflicts: &[],
                env_all_or_nothing: true,
                other_remediations: &[],
                governed_elsewhere: &[],
                sizing: Default::default(),
                budget: None,
                now,
            });
            let elapsed = start.elapsed();
            // Only a history covering sustainedFor (10 min at 30 s = 21 samples) can judge a leak.
            let leaks = if samples >= 21 { 50.min(workloads / 100) } else { 0 };
            assert_eq!(plan.remediations.len(), leaks);
            elapsed
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    println!("decide::plan, 3 pods per workload, median of N runs");
    for (workloads, samples) in [(1_000, 60), (5_000, 60), (10_000, 60), (10_000, 15), (10_000, 30)] {
        let runs = if workloads <= 1_000 { 51 } else { 7 };
        let t = median_plan_time(workloads, samples, runs);
        println!(
            "{workloads:>6} workloads x 3 pods x {samples:>2} samples: {:>8.1} ms (median of {runs})",
            t.as_secs_f64() * 1000.0
        );
    }
}
