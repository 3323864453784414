//! What dating a pod above its limit costs (`decide::dating`: a bisection, each step
//! re-counting the pod's backends): `cargo bench --bench dating`. Prints the median
//! time of one pod's summary with and without dating, for pods of 10, 100 and 1,000
//! backends that all overrun — an eager pool (Generic) and psycopg_pool said to run
//! one pool (its shrink allowance and FIFO rule, the most counting per step).

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use poolwarden::{
    decide::measure::{Limits, backend_limit, summarise},
    observation::{Backend, QueryText},
    policy::{Measure, PoolLibrary, PoolSettings},
};

/// `n` backends of one pod, connected over the last hour, idle since a while after.
fn pod(n: usize, now: Timestamp) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let started = 600 + (i as i64 * 3000) / n as i64;
            Backend {
                pid: i as i32,
                backend_start: Some(now - SignedDuration::from_secs(started)),
                state: Some("idle".into()),
                state_change: Some(now - SignedDuration::from_secs(started - 5)),
                query: QueryText("COMMIT".into()),
                ..Backend::default()
            }
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    println!("one pod's summary, all backends overrunning, median of 31 (µs)");
    for library in [PoolLibrary::Generic, PoolLibrary::PsycopgPool] {
        let pool: PoolSettings = serde_json::from_value(serde_json::json!({
            "library": library, "minSize": 2, "maxSize": 10, "maxIdleSeconds": 10,
            "maxLifetimeSeconds": 30, "processesPerPod": 1
        }))
        .expect("pool");
        let undated = Limits {
            measure: Some(Measure::LifetimeOverrun),
            backend: backend_limit(Measure::LifetimeOverrun, &pool, Duration::from_secs(60)),
            ..Limits::default()
        };
        let dated = Limits {
            max: Some(2),
            ..undated
        };
        for n in [10usize, 100, 1000] {
            let backends = pod(n, now);
            let refs: Vec<&Backend> = backends.iter().collect();
            let mut row = format!("{library:?} {n:>5} backends:");
            for (label, limits) in [("undated", undated), ("dated", dated)] {
                let times: Vec<Duration> = (0..31)
                    .map(|_| {
                        let start = Instant::now();
                        let c = summarise(&limits, &refs, 1, now, |_| Vec::new());
                        assert!(c.overrun > 2, "{library:?} {n}: {}", c.overrun);
                        std::hint::black_box(c);
                        start.elapsed()
                    })
                    .collect();
                row += &format!(" {label} {:>10.1}", median(times));
            }
            println!("{row}");
        }
    }
}
