//! What sizing (`spec.sizing`) costs: `cargo bench --bench sizing`. For 10,000
//! workloads × 3 pods it times a pass of the decision core — feeding the pass's
//! samples into the histories (`decide::sizing::observe`) and `decide::plan` — with
//! sizing Off and with Recommend, passes 30 s apart, and prints the median of each
//! and their ratio (the bound: at most 1.10). Then it reports the
//! histories' heap per workload after a day of one-minute peaks whose counts wander
//! over 0..40 (40 distinct buckets, more than a real pool's history holds), against
//! the bound of 1 KiB per workload. Heap bytes are computed from the histories'
//! capacities (`History::heap_bytes`), not measured with heaptrack.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use poolwarden::{
    decide::{
        self, Container, DatabaseLimits, Instance, PlanInput, Workload,
        sizing::{self, Histories, SizingInput},
    },
    observation::{Measured, PodConnections, PodSample},
    policy::{ConnectionCounts, Measure, PoolPolicyStatus, ResolvedPolicy, validate},
};

const WORKLOADS: usize = 10_000;
const INTERVAL: i64 = 30;

fn policy(mode: &str) -> ResolvedPolicy {
    let spec = serde_json::json!({
        "selector": {"matchLabels": {"app": "x"}},
        "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        "pool": {"minSize": 0, "maxSize": 20, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600},
        "discrepancy": {"sustainedFor": "10m"},
        "remediation": {"action": "RestartPod", "maxRestartsPerHour": 50},
        "sizing": {"mode": mode, "maxAllowed": 40},
    });
    validate(&serde_json::from_value(spec).expect("spec")).expect("valid")
}

/// A pseudo-random count in 0..40 for pod `p` of workload `w` at pass `pass`.
fn in_use(w: usize, p: usize, pass: i64) -> u32 {
    let x = (w as u64).wrapping_mul(2_654_435_761) ^ (p as u64).wrapping_mul(40_503) ^ (pass as u64).wrapping_mul(97);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u32 % 40
}

/// The fleet with 21 samples per pod (sustainedFor at 30 s), the newest at `now`.
fn fleet(policy: &ResolvedPolicy, pass: i64, now: Timestamp) -> Vec<Workload> {
    let env: decide::Env = decide::env::desired_env(policy).into_iter().collect();
    (0..WORKLOADS)
        .map(|w| Workload {
            kind: decide::Kind::Deployment,
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
                    samples: (0..21)
                        .map(|s| PodSample {
                            at: now - SignedDuration::from_secs(INTERVAL * (20 - s)),
                            database: Measured::Known(PodConnections {
                                counts: ConnectionCounts {
                                    total: 4 + in_use(w, p, pass),
                                    idle: 3,
                                    active: in_use(w, p, pass),
                                    ..Default::default()
                                },
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

/// One pass: the sizing histories fed, then the plan.
fn pass(policy: &ResolvedPolicy, histories: &mut Histories, ws: &[Workload], now: Timestamp) -> Duration {
    let status = PoolPolicyStatus::default();
    let start = Instant::now();
    let sized = sizing::observe(histories, policy, ws, now, sizing::WINDOW);
    let plan = decide::plan(&PlanInput {
        policy,
        generation: 1,
        policy_paused: false,
        status: &status,
        workloads: ws,
        database: Measured::Known(DatabaseLimits {
            max_connections: 1_000_000,
            reserved: 3,
            pooler: None,
        }),
        database_full: None,
        conflicts: &[],
        env_all_or_nothing: true,
        other_remediations: &[],
        governed_elsewhere: &[],
        sizing: SizingInput {
            workloads: &sized,
            window: sizing::WINDOW,
        },
        budget: None,
        now,
    });
    let took = start.elapsed();
    assert_eq!(plan.rows.len(), WORKLOADS);
    took
}

/// Median pass time over `runs` passes, 30 s apart, starting at pass `from`.
fn median(policy: &ResolvedPolicy, histories: &mut Histories, from: i64, runs: i64) -> Duration {
    let t0 = Timestamp::from_second(1_800_000_000).expect("timestamp");
    let mut times: Vec<Duration> = (from..from + runs)
        .map(|i| {
            let now = t0 + SignedDuration::from_secs(INTERVAL * i);
            let ws = fleet(policy, i, now);
            pass(policy, histories, &ws, now)
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let runs = 9;
    let (off, recommend) = (policy("Off"), policy("Recommend"));
    let mut none = Histories::new();
    let mut histories = Histories::new();
    // Interleaved, so that both see the same machine: Off, Recommend, Off, Recommend.
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..2 {
        times[0].push(median(&off, &mut none, round * runs, runs));
        times[1].push(median(&recommend, &mut histories, round * runs, runs));
    }
    let (t_off, t_rec) = (*times[0].iter().min().unwrap(), *times[1].iter().min().unwrap());
    // Of which the histories alone (sizing::observe, no plan), on histories as warm.
    let t0 = Timestamp::from_second(1_800_000_000).expect("timestamp");
    let mut observe: Vec<Duration> = (2 * runs..3 * runs)
        .map(|i| {
            let now = t0 + SignedDuration::from_secs(INTERVAL * i);
            let ws = fleet(&recommend, i, now);
            let start = Instant::now();
            let sized = sizing::observe(&mut histories, &recommend, &ws, now, sizing::WINDOW);
            let took = start.elapsed();
            assert_eq!(sized.len(), WORKLOADS);
            took
        })
        .collect();
    observe.sort();
    let t_observe = observe[observe.len() / 2];
    println!(
        "a pass (sizing::observe + decide::plan), {WORKLOADS} workloads x 3 pods, best of 2 medians of {runs} passes:\n  \
         Off       {:>8.1} ms\n  Recommend {:>8.1} ms (of which sizing::observe {:.1} ms, median of {runs})\n  ratio     {:>8.3} (bound 1.10)",
        t_off.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() * 1e3,
        t_observe.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() / t_off.as_secs_f64()
    );

    // A day of one-minute peaks, fed straight into the histories (no plan): the
    // counts wander over 0..40 per pod.
    let mut day = Histories::new();
    let start = Timestamp::from_second(1_800_000_000).expect("timestamp");
    let refs: Vec<decide::WorkloadRef> = (0..WORKLOADS)
        .map(|w| decide::WorkloadRef {
            kind: decide::Kind::Deployment,
            name: format!("app-{w}"),
        })
        .collect();
    for minute in 0..1440i64 {
        let at = start + SignedDuration::from_mins(minute);
        for (w, r) in refs.iter().enumerate() {
            let h = day.entry(r.clone()).or_default();
            for p in 0..3 {
                h.observe(&format!("p{p}"), in_use(w, p, minute), at, sizing::WINDOW);
            }
        }
    }
    let heap: usize = day.values().map(|h| h.heap_bytes()).sum();
    let inline = std::mem::size_of::<sizing::History>();
    let buckets: usize = day.values().map(|h| h.histogram.len()).sum();
    println!(
        "histories after a day of minute peaks over 0..40, {WORKLOADS} workloads x 3 pods:\n  \
         {:.0} buckets a workload; heap {:.0} B + {inline} B inline = {:.0} B a workload (bound 1024)",
        buckets as f64 / WORKLOADS as f64,
        heap as f64 / WORKLOADS as f64,
        (heap + inline * WORKLOADS) as f64 / WORKLOADS as f64
    );
}
