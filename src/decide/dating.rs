//! Since when a sample above its limit has been above it, from its backends' own
//! timestamps rather than from the pass that first saw it.
//!
//! A backend's row proves some of its past: it has existed since `backend_start`, it
//! has been in its state since `state_change`, and a backend in a transaction has
//! been in one since `xact_start`. Judged with only what the row proves of an
//! earlier instant (a state it does not prove is one the measure does not count,
//! a backend that may not have existed is not there), the measure's value then is a
//! lower bound of what a sample would have counted; it only grows with the instant
//! (`the_lower_bound_only_grows_and_is_the_sample_at_its_end`), so the earliest
//! instant it is above the limit is found by bisection. So `sustainedFor` is timed
//! from when the leak went above the limit, which the rows prove, not up to an
//! interval later — and never from before it did. Pure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{
    keeping::Judgement,
    measure::{Age, BackendLimit, Judged, counted, ran_a_statement},
};
use crate::{observation::Backend, policy::library::Recycling};

/// The instant after which `backends` prove the measure of `limit` above `above`
/// (to the nanosecond: at it they do not, at every later one they do); `now` when
/// they prove it only now.
pub fn above_since(limit: &BackendLimit, backends: &[&Backend], pods: u32, above: u32, now: Timestamp) -> Timestamp {
    let Some(first) = backends.iter().filter_map(|b| b.backend_start).min() else {
        return now;
    };
    let proves = |at: Timestamp| lower_bound(limit, backends, pods, at) > above as usize;
    if first >= now || !proves(now) {
        return now;
    }
    // Before the first backend started nothing was there: nothing above the limit.
    let tick = SignedDuration::from_nanos(1);
    let (mut within, mut above_at) = (first - tick, now);
    while above_at.duration_since(within) > tick {
        let mid = within + above_at.duration_since(within) / 2;
        if proves(mid) {
            above_at = mid;
        } else {
            within = mid;
        }
    }
    within
}

/// The measure's value at `at` (at most the sample's `now`), counted from what each
/// backend's row proves of that instant.
pub fn lower_bound(limit: &BackendLimit, backends: &[&Backend], pods: u32, at: Timestamp) -> usize {
    let mut transacting = Vec::new();
    let mut judged = Vec::new();
    for b in backends {
        match b.backend_start {
            Some(start) if start <= at => {}
            // Not there yet, or not known to be.
            _ => continue,
        }
        let idle = b.state.as_deref() == Some("idle");
        match (b.state_change, b.xact_start) {
            // In this state since then.
            (Some(changed), _) if changed <= at => judged.push(Judged {
                backend: b,
                judgement: limit.judge(b, at),
                idle_age: idle.then(|| age(changed, at)),
                used: ran_a_statement(b),
            }),
            // In this transaction since then: busy (active or idle in it), which
            // state exactly the row does not say.
            (_, Some(began)) if !idle && began <= at => transacting.push(Backend {
                pid: b.pid,
                backend_start: b.backend_start,
                state: Some("active".to_owned()),
                state_change: Some(began),
                xact_start: Some(began),
                ..Backend::default()
            }),
            // Its state then is unknown: counted only by a measure that does not read it.
            _ => judged.push(Judged {
                backend: b,
                judgement: if limit.age == Age::Connected && limit.keeping.recycling == Recycling::AtLifetime {
                    limit.judge(b, at)
                } else {
                    Judgement::Within
                },
                idle_age: None,
                used: false,
            }),
        }
    }
    // A transaction begins with a statement.
    judged.extend(transacting.iter().map(|b| Judged {
        backend: b,
        judgement: limit.judge(b, at),
        idle_age: None,
        used: true,
    }));
    let open = judged.len();
    let (over, excess) = counted(limit, &judged, open, pods);
    over.len() + excess.len()
}

fn age(t: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(t)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        decide::{
            keeping::Keeping,
            measure::{Limits, backend_limit, summarise},
        },
        policy::{Measure, PoolLibrary, PoolSettings},
    };

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn ago(s: i64) -> Timestamp {
        now() - SignedDuration::from_secs(s)
    }

    /// A backend that connected `started` s ago, in `state` since `changed` s ago,
    /// in its transaction since `xact` s ago.
    fn backend(started: i64, state: &str, changed: i64, xact: Option<i64>) -> Backend {
        Backend {
            backend_start: Some(ago(started)),
            state: Some(state.to_owned()),
            state_change: Some(ago(changed)),
            xact_start: xact.map(ago),
            ..Backend::default()
        }
    }

    fn pool(library: PoolLibrary, min: u32) -> PoolSettings {
        serde_json::from_value(serde_json::json!({
            "library": library, "minSize": min, "maxSize": 10,
            "maxIdleSeconds": 10, "maxLifetimeSeconds": 30
        }))
        .unwrap()
    }

    /// Each pod runs this one pool (psycopg_pool's FIFO rule applies).
    fn one_pool(library: PoolLibrary, min: u32) -> PoolSettings {
        PoolSettings {
            processes_per_pod: Some(1),
            ..pool(library, min)
        }
    }

    fn lifetime(library: PoolLibrary, min: u32) -> BackendLimit {
        backend_limit(Measure::LifetimeOverrun, &pool(library, min), Duration::from_secs(60)).unwrap()
    }

    fn since(limit: &BackendLimit, bs: &[Backend], above: u32) -> Timestamp {
        let refs: Vec<&Backend> = bs.iter().collect();
        above_since(limit, &refs, 1, above, now())
    }

    #[test]
    fn a_lifetime_overrun_is_dated_from_each_backends_deadline() {
        // Lifetime 30 s + grace 60 s: overrunning 10 s and 5 s ago.
        let bs = [backend(100, "idle", 1, None), backend(95, "active", 1, Some(1))];
        let generic = lifetime(PoolLibrary::Generic, 0);
        assert_eq!(since(&generic, &bs, 0), ago(10));
        assert_eq!(since(&generic, &bs, 1), ago(5));
        // Dated only as far as it is above: not above 2 now.
        assert_eq!(since(&generic, &bs, 2), now());
    }

    #[test]
    fn a_lazily_recycled_overrun_is_dated_from_what_made_it_one() {
        // Idle in transaction since 50 s ago, on a backend 200 s old (deadline 110 s ago).
        let itx = [backend(200, "idle in transaction", 40, Some(50))];
        // SQLAlchemy (checkout): over from its checkout, when its transaction began.
        // (A state counts from its first instant: dated the nanosecond before it.)
        let nano = SignedDuration::from_nanos(1);
        assert_eq!(since(&lifetime(PoolLibrary::SQLAlchemy, 2), &itx, 0), ago(50) - nano);
        // psycopg_pool (return): over once that transaction is older than the grace.
        let psycopg = lifetime(PoolLibrary::PsycopgPool, 2);
        assert_eq!(
            since(&psycopg, &[backend(200, "idle in transaction", 40, Some(100))], 0),
            ago(40)
        );
        assert_eq!(
            since(&psycopg, &itx, 0),
            now(),
            "not over yet: began 50 s ago, grace 60 s"
        );
        // Three resting idle since before their deadlines (100, 95, 92 s old, so 10, 5
        // and 2 s past them), minSize 2: the third one beyond the allowance is over
        // since it became one of three.
        let kept = [
            backend(100, "idle", 99, None),
            backend(95, "idle", 94, None),
            backend(92, "idle", 91, None),
        ];
        assert_eq!(since(&lifetime(PoolLibrary::SQLAlchemy, 2), &kept, 0), ago(2));
    }

    #[test]
    fn a_state_the_row_does_not_prove_is_not_counted() {
        // Idle only since 2 s ago: before that it may have been in use, which a lazy
        // pool may do with an old connection as long as it began before the deadline.
        let bs = [backend(200, "idle", 2, None)];
        let sqlalchemy = lifetime(PoolLibrary::SQLAlchemy, 0);
        // Used after its deadline (110 s ago): over, but dated only from its return.
        assert_eq!(since(&sqlalchemy, &bs, 0), ago(2) - SignedDuration::from_nanos(1));
        // A pool that closes at the lifetime: over whatever its state, since the deadline.
        assert_eq!(since(&lifetime(PoolLibrary::Generic, 0), &bs, 0), ago(110));
    }

    fn state() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "idle",
            "active",
            "idle in transaction",
            "idle in transaction (aborted)",
        ])
    }

    /// A backend: seconds since it connected, its state, seconds in that state and in
    /// its transaction (clamped to be consistent).
    fn arbitrary() -> impl Strategy<Value = Backend> {
        (0i64..400, state(), 0i64..400, 0i64..400, any::<bool>()).prop_map(|(started, state, changed, xact, ran)| {
            let changed = changed.min(started);
            let xact = (state != "idle").then_some(xact.clamp(changed, started));
            Backend {
                query: crate::observation::QueryText(if ran { "COMMIT".into() } else { String::new() }),
                ..backend(started, state, changed, xact)
            }
        })
    }

    proptest! {
        /// The lower bound never falls as the instant moves on, and at the sample's own
        /// instant it is the sample's count; the dated instant is the first it is above.
        #[test]
        fn the_lower_bound_only_grows_and_is_the_sample_at_its_end(
            bs in prop::collection::vec(arbitrary(), 0..14),
            library in prop::sample::select(PoolLibrary::ALL.to_vec()),
            idle in any::<bool>(),
            single in any::<bool>(),
            min in 1u32..4,
            above in 0u32..4,
        ) {
            let measure = if idle { Measure::IdleOverrun } else { Measure::LifetimeOverrun };
            let pool = if single { one_pool(library, min) } else { pool(library, min) };
            let Some(limit) = backend_limit(measure, &pool, Duration::from_secs(20)) else {
                return Ok(());
            };
            let refs: Vec<&Backend> = bs.iter().collect();
            let mut last = 0;
            for s in (0..=420).rev().step_by(3) {
                let lb = lower_bound(&limit, &refs, 1, ago(s));
                prop_assert!(lb >= last, "{lb} < {last} at {s} s ago");
                last = lb;
            }
            let limits = Limits { measure: Some(measure), backend: Some(limit), max: Some(above), ..Limits::default() };
            let sample = summarise(&limits, &refs, 1, now(), |_| Vec::new());
            prop_assert_eq!(lower_bound(&limit, &refs, 1, now()), sample.overrun as usize);
            match sample.above_since {
                Some(a) => {
                    prop_assert!(sample.overrun > above);
                    let after = a.since + SignedDuration::from_nanos(1);
                    prop_assert!(lower_bound(&limit, &refs, 1, after) > above as usize);
                    prop_assert!(a.since == now() || lower_bound(&limit, &refs, 1, a.since) <= above as usize);
                }
                None => prop_assert!(sample.overrun <= above),
            }
        }
    }

    #[test]
    fn a_connection_proven_out_of_a_fifo_queue_is_dated_from_the_proof() {
        // Borrowed 200 s ago and idle since 140 s ago (within psycopg's shrink
        // allowance); the pool's newer connection connected 20 s ago, used 1 s later.
        let mut bs = vec![backend(200, "idle", 140, None), backend(20, "idle", 19, None)];
        for b in &mut bs {
            b.query = crate::observation::QueryText("COMMIT".into());
        }
        let limit = backend_limit(
            Measure::LifetimeOverrun,
            &one_pool(PoolLibrary::PsycopgPool, 2),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(since(&limit, &bs, 0), ago(19) - SignedDuration::from_nanos(1));
    }

    #[test]
    fn keeping_at_limits_dates_like_the_generic_rule() {
        let limit = BackendLimit::lifetime(Duration::from_secs(90)).kept_by(Keeping::AT_LIMITS, 0);
        assert_eq!(since(&limit, &[backend(100, "idle", 99, None)], 0), ago(10));
    }
}
