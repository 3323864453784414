//! A workload's recommended pool size from its [`History`], after the Vertical Pod
//! Autoscaler's recommender (`pkg/recommender/logic/recommender.go`, `estimator.go`):
//! percentiles of the decayed per-window peaks, a confidence multiplier that widens
//! the bounds while the history is short, and the result capped to the policy's
//! `minAllowed`/`maxAllowed`.
//!
//! Where it differs from VPA's, and why (docs/sizing.md says more):
//! - target: the 95th percentile (VPA: 90th of memory peaks). An undersized pool
//!   makes requests queue; an oversized one only reserves connection slots.
//! - margin: one connection added, not 15%. A pool's count in use can never exceed
//!   its own maxSize, so a saturated pool would otherwise be recommended exactly
//!   its current size forever; one spare makes growth visible and is recommended
//!   past, a step per update. A fraction would be 0 for small pools and many
//!   connections for large ones.
//! - upper bound: the 99th percentile plus the margin (VPA: 95th), times
//!   `1 + 1/confidence` as VPA's; lower bound: the median times
//!   `(1 + 0.001/confidence)^-2`, as VPA's.
//! - minSize: the median peak (VPA has no floor to recommend): what the workload
//!   uses at least half the time is worth keeping open.

use serde::Serialize;

use super::history::History;

/// The percentile the target rests on.
pub const TARGET_PERCENTILE: f64 = 0.95;
pub const LOWER_PERCENTILE: f64 = 0.5;
pub const UPPER_PERCENTILE: f64 = 0.99;
/// Connections added to the target and upper bound (see the module comment).
pub const MARGIN: u32 = 1;

/// What the recommendation may range over (`spec.sizing.minAllowed/maxAllowed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    pub min: u32,
    pub max: u32,
}

/// A recommended pool size for every pod of one workload.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The maxSize to run with.
    pub target: u32,
    /// Below this maxSize the workload is short of connections (Auto raises it).
    pub lower: u32,
    /// Above this maxSize it reserves connections it does not use (Auto lowers it).
    pub upper: u32,
    /// The minSize to run with.
    pub min_size: u32,
    /// The history's length in days, as VPA's confidence.
    pub confidence: f64,
    /// Peaks the history holds (one per pod and window).
    pub samples: u64,
}

/// The recommendation, or `None` while the history is empty (missing is not zero).
pub fn recommend(history: &History, allowed: Allowed) -> Option<Recommendation> {
    let h = &history.histogram;
    let (median, p95, p99) = (
        h.percentile(LOWER_PERCENTILE)?,
        h.percentile(TARGET_PERCENTILE)?,
        h.percentile(UPPER_PERCENTILE)?,
    );
    let confidence = history.confidence();
    let cap = |v: u32| v.clamp(allowed.min, allowed.max.max(allowed.min));
    let lower = scale_down(median, (1.0 + 0.001 / confidence).powi(-2));
    let target = p95.saturating_add(MARGIN);
    let upper = scale_up(p99.saturating_add(MARGIN), 1.0 + 1.0 / confidence);
    let (lower, target, upper) = (cap(lower), cap(target), cap(upper));
    Some(Recommendation {
        target,
        lower,
        upper,
        min_size: median.min(target),
        confidence,
        samples: history.samples,
    })
}

/// `v × factor`, rounded down; a factor that is not a number (no history) gives 0.
fn scale_down(v: u32, factor: f64) -> u32 {
    let scaled = f64::from(v) * factor;
    if scaled.is_finite() { scaled.floor() as u32 } else { 0 }
}

/// `v × factor`, rounded up; an infinite factor (no history) gives `u32::MAX`,
/// which the cap brings to `maxAllowed`.
fn scale_up(v: u32, factor: f64) -> u32 {
    let scaled = (f64::from(v) * factor).ceil();
    if scaled.is_finite() && scaled < f64::from(u32::MAX) {
        scaled as u32
    } else {
        u32::MAX
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::Timestamp;
    use proptest::prelude::*;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const WIDE: Allowed = Allowed { min: 0, max: 1000 };

    /// A history of one pod with these per-minute peaks, one minute apart.
    fn history(peaks: &[u32]) -> History {
        let mut h = History::default();
        for (m, p) in (0..).zip(peaks) {
            h.observe("web-a", *p, Timestamp::from_second(m * 60).unwrap(), MINUTE);
        }
        h.close_before(Timestamp::from_second(peaks.len() as i64 * 60 + 60).unwrap(), MINUTE);
        h
    }

    #[test]
    fn a_steady_peak_is_recommended_with_one_spare_connection() {
        let r = recommend(&history(&[5; 120]), WIDE).unwrap();
        assert_eq!(r.target, 6);
        assert_eq!(r.min_size, 5);
        assert_eq!(r.samples, 120);
        // 119 minutes from the first window to the last is one whole hour of
        // confidence: VPA's multipliers are (1 + 0.024)^-2 ≈ 0.954 below and
        // 1 + 24 above.
        assert_eq!(r.lower, 4, "5 × 0.954, rounded down: {r:?}");
        assert_eq!(r.upper, 150, "6 × 25: {r:?}");
    }

    #[test]
    fn without_history_there_is_no_recommendation_and_a_short_one_is_bounded_by_max_allowed() {
        assert_eq!(recommend(&History::default(), WIDE), None);
        let r = recommend(&history(&[3]), Allowed { min: 2, max: 40 }).unwrap();
        assert_eq!((r.lower, r.target, r.upper), (2, 4, 40), "{r:?}");
    }

    #[test]
    fn a_day_of_history_narrows_the_upper_bound_to_twice_the_peak() {
        let r = recommend(&history(&[9; 1441]), WIDE).unwrap();
        assert!((r.confidence - 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.upper, 20, "(9 + 1) × (1 + 1/1)");
    }

    fn check(r: &Recommendation, allowed: Allowed) -> Result<(), TestCaseError> {
        prop_assert!(r.lower <= r.target && r.target <= r.upper, "{r:?}");
        prop_assert!(r.min_size <= r.target, "{r:?}");
        prop_assert!(r.lower >= allowed.min && r.upper <= allowed.max, "{r:?} {allowed:?}");
        Ok(())
    }

    proptest! {
        #[test]
        fn recommendations_are_ordered_and_within_the_allowed_range(
            peaks in prop::collection::vec(0u32..3000, 1..300),
            min in 0u32..50,
            span in 0u32..500,
        ) {
            let allowed = Allowed { min, max: min + span };
            let r = recommend(&history(&peaks), allowed).unwrap();
            check(&r, allowed)?;
        }

        #[test]
        fn recommendations_are_monotone_in_usage(
            peaks in prop::collection::vec(0u32..500, 1..200),
            more in prop::collection::vec(0u32..50, 200),
            max in 1u32..2000,
        ) {
            let allowed = Allowed { min: 1, max };
            let higher: Vec<u32> = peaks.iter().zip(&more).map(|(p, m)| p + m).collect();
            let a = recommend(&history(&peaks), allowed).unwrap();
            let b = recommend(&history(&higher), allowed).unwrap();
            prop_assert!(a.target <= b.target, "{a:?} {b:?}");
            prop_assert!(a.lower <= b.lower, "{a:?} {b:?}");
            prop_assert!(a.upper <= b.upper, "{a:?} {b:?}");
            prop_assert!(a.min_size <= b.min_size, "{a:?} {b:?}");
        }
    }
}
