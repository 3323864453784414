//! What sizing (`spec.sizing`) costs: `cargo bench --bench sizing`. For 10,000
//! workloads × 3 pods it times a pass of the decision core — feeding the pass's
//! samples into the histories (`decide::sizing::observe`) and `decide::plan` — with
//! sizing Off and with Recommend, passes 30 s apart, and prints the median of each
//! and their ratio (the bound: at most 1.10). Then it reports the
//! histories' heap per workload after a day of one-minute peaks whose counts wander
//! over 0..40 (40 distinct buckets, more than a real pool's history holds), against
//! the bound of 1 KiB per workload, computed from the histories' capacities.
//!
//! It also times a whole pure pass as the controller makes it (the database's answer
//! attributed to the pods, their sample history, sizing, the plan: [`whole_pass`]);
//! `SIZING_BENCH_PARTS=1` prints each pass's two parts.
//!
//! `--pass` runs only the passes, `--heap` only the day of peaks: the heap is then the
//! histories' alone, to be measured with heaptrack (docs/sizing.md has the command).

use std::{fmt::Write, time::Duration};

use jiff::{SignedDuration, Timestamp};
use poolwarden::{
    decide::{
        self, Container, DatabaseLimits, Instance, PlanInput, Workload,
        sizing::{self, Histories, SizingInput},
    },
    observation::{Backend, Measured, PodConnections, PodSample},
    observe::{history::History as SampleHistory, postgres::Snapshot},
    platform::pass::observe::{Subject, SubjectInstance},
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

/// This thread's CPU time: on a shared machine, wall time would count the moments
/// another process had the core.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write to, and the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One pass: the sizing histories fed, then the plan.
fn pass(policy: &ResolvedPolicy, histories: &mut Histories, ws: &[Workload], now: Timestamp) -> Duration {
    let status = PoolPolicyStatus::default();
    let start = thread_cpu();
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
    let took = thread_cpu() - start;
    assert_eq!(plan.rows.len(), WORKLOADS);
    took
}

/// The database's answer at pass `pass`: every pod's backends (three idle, and
/// `in_use % 8` active, none past its lifetime), named after the pod as PGAPPNAME
/// makes them.
fn snapshot(pass: i64, now: Timestamp) -> Snapshot {
    let mut backends = Vec::new();
    for w in 0..WORKLOADS {
        for p in 0..3 {
            let active = in_use(w, p, pass) % 8;
            for b in 0..3 + active {
                backends.push(Backend {
                    pid: backends.len() as i32,
                    database: Some("app".into()),
                    user: Some("app".into()),
                    application_name: format!("app-{w}-{p}"),
                    client_addr: Some(pod_ip(w, p)),
                    // Within the policy's 600 s lifetime: a healthy fleet.
                    backend_start: Some(now - SignedDuration::from_mins(5)),
                    state: Some(if b < 3 { "idle" } else { "active" }.into()),
                    state_change: Some(now - SignedDuration::from_secs(1)),
                    ..Default::default()
                });
            }
        }
    }
    Snapshot {
        now,
        max_connections: 1_000_000,
        reserved: 3,
        backends,
        pooler: None,
        slots: Default::default(),
        conn_limits: None,
    }
}

fn pod_ip(w: usize, p: usize) -> std::net::IpAddr {
    let n = (w * 3 + p) as u32;
    std::net::Ipv4Addr::from(0x0a00_0000 | n).into()
}

/// The subjects a pass gathers from the index: every workload and its pods, with
/// no samples yet (the sample history adds them).
fn subjects(policy: &ResolvedPolicy, now: Timestamp) -> Vec<Subject> {
    let mut ws = fleet(policy, 0, now);
    ws.iter_mut()
        .map(|w| {
            for i in &mut w.instances {
                i.samples = Vec::new();
            }
            Subject {
                workload: std::mem::take(w),
                instances: (0..3)
                    .map(|_| SubjectInstance {
                        ip: None,
                        names_itself: true,
                        pool: None,
                    })
                    .collect(),
                database_user: "app".into(),
                key: String::new(),
            }
        })
        .enumerate()
        .map(|(w, mut s)| {
            for (p, i) in s.instances.iter_mut().enumerate() {
                i.ip = Some(pod_ip(w, p));
            }
            s.key = s.workload.name.clone();
            s
        })
        .collect()
}

/// The pure part of a pass as the controller makes it (`platform::pass`): the
/// database's answer attributed to the pods and recorded in their sample history
/// (`platform::pass::observe::observe`), then sizing and the plan. The answer and the
/// subjects are made untimed: reading them is I/O.
fn whole_pass(
    policy: &ResolvedPolicy,
    histories: &mut Histories,
    samples: &mut SampleHistory,
    pass_no: i64,
    now: Timestamp,
) -> Duration {
    let (snapshot, subjects) = (snapshot(pass_no, now), subjects(policy, now));
    let start = thread_cpu();
    let (ws, _) = poolwarden::platform::pass::observe::observe(policy, subjects, Ok(&snapshot), samples, now);
    let took = thread_cpu() - start;
    let decided = pass(policy, histories, &ws, now);
    if std::env::var_os("SIZING_BENCH_PARTS").is_some() {
        eprintln!("{:?}: observe {took:?}, sizing + plan {decided:?}", policy.sizing.mode);
    }
    took + decided
}

/// Median whole-pass time over `runs` passes, 30 s apart, starting at pass `from`.
fn median_whole(
    policy: &ResolvedPolicy,
    histories: &mut Histories,
    samples: &mut SampleHistory,
    from: i64,
    runs: i64,
) -> Duration {
    let t0 = Timestamp::from_second(1_800_000_000).expect("timestamp");
    let mut times: Vec<Duration> = (from..from + runs)
        .map(|i| {
            whole_pass(
                policy,
                histories,
                samples,
                i,
                t0 + SignedDuration::from_secs(INTERVAL * i),
            )
        })
        .collect();
    times.sort();
    times[times.len() / 2]
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
    let args: Vec<String> = std::env::args().collect();
    let only = |a: &str| args.iter().any(|x| x == a);
    let both = !only("--pass") && !only("--heap");
    if both || only("--pass") {
        passes();
        whole_passes();
    }
    if both || only("--heap") {
        day();
    }
}

/// Off against Recommend, a pass at a time.
fn passes() {
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
            let start = thread_cpu();
            let sized = sizing::observe(&mut histories, &recommend, &ws, now, sizing::WINDOW);
            let took = thread_cpu() - start;
            assert_eq!(sized.len(), WORKLOADS);
            took
        })
        .collect();
    observe.sort();
    let t_observe = observe[observe.len() / 2];
    println!(
        "a pass (sizing::observe + decide::plan), {WORKLOADS} workloads x 3 pods, best of 2 medians of {runs} passes, thread CPU time:\n  \
         Off       {:>8.1} ms\n  Recommend {:>8.1} ms (of which sizing::observe {:.1} ms, median of {runs})\n  ratio     {:>8.3} (bound 1.10)",
        t_off.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() * 1e3,
        t_observe.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() / t_off.as_secs_f64()
    );
}

/// Off against Recommend, a whole pass at a time (see [`whole_pass`]).
fn whole_passes() {
    let runs = 9;
    let (off, recommend) = (policy("Off"), policy("Recommend"));
    let mut state = [
        (Histories::new(), SampleHistory::default()),
        (Histories::new(), SampleHistory::default()),
    ];
    let mut times = [Vec::new(), Vec::new()];
    // Three rounds, the first mode alternating, so that neither always runs on the
    // heap the other just left.
    for round in 0..3 {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            let (h, s) = &mut state[m];
            times[m].push(median_whole([&off, &recommend][m], h, s, round * runs, runs));
        }
    }
    let (t_off, t_rec) = (*times[0].iter().min().unwrap(), *times[1].iter().min().unwrap());
    println!(
        "a whole pass (attribution of {} backends, the sample history, sizing::observe, decide::plan), thread CPU time, best of 3 medians of {runs}:\n  \
         Off       {:>8.1} ms\n  Recommend {:>8.1} ms\n  ratio     {:>8.3} (bound 1.10)",
        snapshot(0, Timestamp::UNIX_EPOCH).backends.len(),
        t_off.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() / t_off.as_secs_f64()
    );
}

/// A day of one-minute peaks, fed straight into the histories (no plan): the
/// counts wander over 0..40 per pod. Nothing else of size is allocated, so that
/// heaptrack's peak is the histories' (map, keys and all).
fn day() {
    let mut day = Histories::new();
    let start = Timestamp::from_second(1_800_000_000).expect("timestamp");
    let mut name = String::new();
    for minute in 0..1440i64 {
        let at = start + SignedDuration::from_mins(minute);
        for w in 0..WORKLOADS {
            name.clear();
            write!(name, "app-{w}").expect("a String takes it");
            let key = decide::WorkloadKey {
                kind: decide::Kind::Deployment,
                name: &name,
            };
            let h = day.entry_ref(&key).or_default();
            for (p, pod) in ["p0", "p1", "p2"].into_iter().enumerate() {
                h.observe(pod, in_use(w, p, minute), at, sizing::WINDOW);
            }
        }
    }
    let heap: usize = day.values().map(|h| h.heap_bytes()).sum();
    // The map's own table: a slot (key and history) and a control byte per bucket.
    let table = day.capacity() * (std::mem::size_of::<(decide::WorkloadRef, sizing::History)>() + 1);
    let names: usize = day.keys().map(|k| k.name.capacity()).sum();
    let buckets: usize = day.values().map(|h| h.histogram.len()).sum();
    println!(
        "histories after a day of minute peaks over 0..40, {WORKLOADS} workloads x 3 pods:\n  \
         {:.0} buckets a workload; histograms and open windows {:.0} B + map table {:.0} B + names {:.0} B = {:.0} B a workload, computed (bound 1024)",
        buckets as f64 / WORKLOADS as f64,
        heap as f64 / WORKLOADS as f64,
        table as f64 / WORKLOADS as f64,
        names as f64 / WORKLOADS as f64,
        (heap + table + names) as f64 / WORKLOADS as f64
    );
}
