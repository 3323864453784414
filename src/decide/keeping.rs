//! What a healthy pool keeps open past a limit, so that the lifetime and idle
//! measures count only the backends a pool of the policy's library would not keep.
//!
//! Many pools recycle lazily (docs/decisions.md, "Lifetime overruns of real pools"):
//! SQLAlchemy checks a connection's lifetime when it is checked out, psycopg_pool when
//! it is returned, so a quiet pool keeps its idle connections past their lifetime;
//! psycopg_pool closes one idle connection per max_idle, so after a burst it keeps
//! more than minSize for a while. What no healthy pool does is *use* a connection past
//! its lifetime and grace in a way its library forbids, hold one idle in a transaction
//! past it, or keep more idle connections than its library's closing allows. Pure.

use std::time::Duration;

use jiff::Timestamp;

use crate::{
    observation::Backend,
    policy::{
        PoolLibrary, PoolSettings,
        library::{IdleClosing, Recycling},
    },
};

/// How the policy's library keeps connections, as the measures need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keeping {
    pub recycling: Recycling,
    /// psycopg_pool's shrinking, one idle connection per period.
    pub shrink: Option<Shrink>,
    /// The policy's grace: slack for a checkout in progress and for sampling.
    pub grace: Duration,
}

/// A pool that closes one idle connection beyond its minimum per `period`, the
/// longest idle first (psycopg_pool's `ShrinkPool`, every max_idle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shrink {
    pub period: Duration,
    /// The most connections one pool opens (maxSize).
    pub max_size: u32,
}

/// What a measure makes of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Within the limit, or past it in a way a healthy pool is.
    Within,
    /// Past the limit in a way no pool of the library allows: a leak.
    Over,
    /// Idle past the limit: the pool may be keeping it, up to what it keeps
    /// ([`Keeping::excess`]).
    Kept,
}

impl Keeping {
    /// A pool that closes every connection at its lifetime and every idle one past
    /// its timeout beyond minSize (the Generic library, and `inspect` without one).
    pub const AT_LIMITS: Keeping = Keeping {
        recycling: Recycling::AtLifetime,
        shrink: None,
        grace: Duration::ZERO,
    };

    /// How a pool of `pool`'s library keeps connections.
    pub fn of(pool: &PoolSettings, grace: Duration) -> Keeping {
        let max_idle = pool.max_idle_seconds.map(|s| Duration::from_secs(s.into()));
        Keeping::for_library(pool.library, max_idle, pool.max_size, grace)
    }

    /// How a pool of `library` keeps connections, with its idle timeout (else the
    /// library's own) and its maxSize.
    pub fn for_library(library: PoolLibrary, max_idle: Option<Duration>, max_size: u32, grace: Duration) -> Keeping {
        let facts = library.facts();
        let shrink = match facts.idle_closing {
            IdleClosing::AllPastTimeout => None,
            IdleClosing::OnePerTimeout => max_idle
                .or(facts.default_max_idle)
                .map(|period| Shrink { period, max_size }),
        };
        Keeping {
            recycling: facts.recycling,
            shrink,
            grace,
        }
    }

    /// A backend older than its lifetime's `deadline` (backend_start + lifetime +
    /// grace).
    pub fn past_lifetime(&self, b: &Backend, deadline: Timestamp, now: Timestamp) -> Judgement {
        let idle = b.state.as_deref() == Some("idle");
        match self.recycling {
            Recycling::AtLifetime => Judgement::Over,
            // Idle since before its deadline: resting in the pool, which closes it at
            // the next checkout or return. Used after it: the pool would not have
            // handed it out (checkout) or would have closed it when it came back (return).
            Recycling::AtCheckout | Recycling::OnReturn if idle => match b.state_change {
                Some(t) if t <= deadline => Judgement::Kept,
                _ => Judgement::Over,
            },
            // A checkout held across the deadline for longer than the grace.
            Recycling::AtCheckout => Judgement::Over,
            // An expired connection may be handed out: in use now, it is over only when
            // its transaction (or, outside one, its statement) began more than a grace ago.
            Recycling::OnReturn => match b.xact_start.or(b.state_change) {
                Some(t) if age(t, now) <= self.grace => Judgement::Within,
                _ => Judgement::Over,
            },
        }
    }

    /// Of the `kept` backends (each with how long it has been idle), the ones beyond
    /// what the pool keeps, longest idle first. `idle_ages` are every idle backend's,
    /// `open` counts every backend; `allowance` is minSize times the pods summarised
    /// together.
    pub fn excess<'b>(
        &self,
        mut kept: Vec<(Duration, &'b Backend)>,
        idle_ages: &[Duration],
        open: usize,
        allowance: u32,
        pods: u32,
    ) -> Vec<&'b Backend> {
        kept.sort_by_key(|k| std::cmp::Reverse(k.0));
        let Some(shrink) = self.shrink else {
            let beyond = kept.len().saturating_sub(allowance as usize);
            return kept.into_iter().take(beyond).map(|(_, b)| b).collect();
        };
        // The pool shrinks only while it has more connections than its minimum (busy
        // ones count): at most the backends beyond it.
        let room = open.saturating_sub(allowance as usize);
        kept.into_iter()
            .filter(|(idle, _)| {
                let rank = idle_ages.iter().filter(|a| *a >= idle).count();
                *idle > shrink.longest_kept(rank, pods).saturating_add(self.grace)
            })
            .take(room)
            .map(|(_, b)| b)
            .collect()
    }
}

impl Shrink {
    /// How long the `rank`-th longest idle connection (1 = the longest) may stay
    /// idle in a healthy pool. While it is idle the pool always has an idle
    /// connection, so every whole period closes the then longest idle one; only the
    /// first period may be lost (the pool was empty before it came back). It is still
    /// there, so every close went to a connection idle for longer that is gone now —
    /// at most `max_size − rank` of them existed, the rank − 1 longer-idle ones being
    /// still there. Hence fewer than `max_size − rank + 2` periods.
    fn longest_kept(&self, rank: usize, pods: u32) -> Duration {
        let pool = u64::from(self.max_size) * u64::from(pods.max(1));
        let periods = (pool + 2).saturating_sub(rank as u64);
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.period.saturating_mul(periods)
    }
}

/// `now - t`, zero for a time after `now`.
fn age(t: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn shrinking(period: u64, max_size: u32) -> Keeping {
        Keeping {
            recycling: Recycling::OnReturn,
            shrink: Some(Shrink {
                period: secs(period),
                max_size,
            }),
            grace: secs(10),
        }
    }

    #[test]
    fn without_shrinking_the_longest_idle_beyond_the_allowance_are_excess() {
        let bs: Vec<Backend> = (1..=4)
            .map(|pid| Backend {
                pid,
                ..Backend::default()
            })
            .collect();
        let kept: Vec<(Duration, &Backend)> = bs.iter().zip([5, 50, 20, 90]).map(|(b, a)| (secs(a), b)).collect();
        let ages: Vec<Duration> = kept.iter().map(|k| k.0).collect();
        let excess = Keeping::AT_LIMITS.excess(kept, &ages, 4, 2, 1);
        assert_eq!(excess.iter().map(|b| b.pid).collect::<Vec<_>>(), vec![4, 2]);
    }

    #[test]
    fn a_shrinking_pool_may_keep_its_kth_longest_idle_for_max_size_minus_k_plus_2_periods() {
        let k = shrinking(10, 10);
        assert_eq!(k.shrink.unwrap().longest_kept(1, 1), secs(110));
        assert_eq!(k.shrink.unwrap().longest_kept(10, 1), secs(20));
        assert_eq!(k.shrink.unwrap().longest_kept(12, 1), Duration::ZERO);
        let b = Backend::default();
        // Seven connections left of a burst of ten, idle 45 s: the pool has closed three.
        let ages = vec![secs(45); 7];
        let kept: Vec<(Duration, &Backend)> = ages.iter().map(|a| (*a, &b)).collect();
        assert!(k.excess(kept, &ages, 7, 2, 1).is_empty());
        // Twelve idle for 25 s in a pool of at most ten: more than a pool has closed,
        // all but the two it keeps count.
        let ages = vec![secs(25); 12];
        let kept: Vec<(Duration, &Backend)> = ages.iter().map(|a| (*a, &b)).collect();
        assert_eq!(k.excess(kept, &ages, 12, 2, 1).len(), 10);
        // ... capped at the backends beyond the minimum, busy ones included.
        let ages = vec![secs(500); 3];
        let kept: Vec<(Duration, &Backend)> = ages.iter().map(|a| (*a, &b)).collect();
        assert_eq!(k.excess(kept.clone(), &ages, 3, 2, 1).len(), 1);
        assert_eq!(k.excess(kept, &ages, 9, 2, 1).len(), 3);
    }

    #[test]
    fn an_expired_connection_in_use_is_a_leak_only_past_a_grace_for_a_pool_that_recycles_on_return() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |s: i64| Some(now - SignedDuration::from_secs(s));
        let deadline = now - SignedDuration::from_secs(100);
        let backend = |state: &str, changed: i64, xact: Option<i64>| Backend {
            state: Some(state.to_owned()),
            state_change: ago(changed),
            xact_start: xact.and_then(ago),
            ..Backend::default()
        };
        let on_return = shrinking(10, 10);
        let at_checkout = Keeping {
            recycling: Recycling::AtCheckout,
            ..on_return
        };
        let cases = [
            (backend("idle", 200, None), Judgement::Kept, Judgement::Kept),
            (backend("idle", 50, None), Judgement::Over, Judgement::Over),
            (backend("active", 5, Some(5)), Judgement::Within, Judgement::Over),
            (
                backend("idle in transaction", 5, Some(300)),
                Judgement::Over,
                Judgement::Over,
            ),
            (
                backend("idle in transaction", 3, Some(8)),
                Judgement::Within,
                Judgement::Over,
            ),
        ];
        for (b, returned, checked_out) in cases {
            assert_eq!(on_return.past_lifetime(&b, deadline, now), returned, "{b:?}");
            assert_eq!(at_checkout.past_lifetime(&b, deadline, now), checked_out, "{b:?}");
            assert_eq!(Keeping::AT_LIMITS.past_lifetime(&b, deadline, now), Judgement::Over);
        }
    }
}
