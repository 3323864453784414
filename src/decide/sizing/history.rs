//! One workload's sizing history: the peak per window (a minute in production) of
//! each pod's connections in use, fed into a [`DecayingHistogram`], with what the
//! confidence is made of (first and last window, sample count, as VPA's
//! `AggregateContainerState`). Pure: the caller gives the time.

use std::{hash::BuildHasher, time::Duration};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    histogram::DecayingHistogram,
    recommend::{self, Allowed, Recommendation},
};

/// Windows in a "day": the half-life and the unit of confidence. With one-minute
/// windows it is a day; a shorter window (tests) shrinks both with it.
pub const WINDOWS_PER_DAY: f64 = 1440.0;

/// The histogram's half-life, in windows (VPA's default is a day too).
pub const HALF_LIFE: f64 = WINDOWS_PER_DAY;

/// The window a time falls in, counted from the Unix epoch.
pub fn window_of(at: Timestamp, window: Duration) -> i64 {
    // Whole seconds (production's minute): in 64 bits, a pass computes it for
    // every pod. Seconds are floored as the nanoseconds would be.
    if window.subsec_nanos() == 0 && window.as_secs() > 0 {
        let secs = at.as_second() - i64::from(at.subsec_nanosecond() < 0);
        return secs.div_euclid(window.as_secs() as i64);
    }
    let nanos = at.as_nanosecond();
    let len = window.as_nanos().max(1) as i128;
    nanos.div_euclid(len) as i64
}

/// The history of one workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Per-pod window peaks, decayed.
    #[serde(rename = "h")]
    pub histogram: DecayingHistogram,
    /// The first and the last window a peak was recorded for.
    #[serde(rename = "first", default, skip_serializing_if = "Option::is_none")]
    pub first_window: Option<i64>,
    #[serde(rename = "last", default)]
    pub last_window: i64,
    /// Peaks recorded (one per pod and window).
    #[serde(rename = "n", default)]
    pub samples: u64,
    /// When Auto last wrote a size for the workload (updateInterval counts from it).
    #[serde(rename = "wrote", default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<Timestamp>,
    /// The window being collected, not yet in the histogram (not checkpointed: a
    /// restart loses at most one window).
    #[serde(skip)]
    open: Option<OpenWindow>,
    /// The last recommendation made from it (see [`History::recommendation`]).
    #[serde(skip)]
    recommended: Memo,
}

/// A recommendation and the allowed range it was made for. The histogram and the
/// confidence change only when a window closes ([`History::close`] forgets it), so
/// every pass between two closes — all but one a minute at a 30 s interval — reuses
/// it instead of three percentile scans per workload.
#[derive(Clone, Debug, Default)]
struct Memo(Option<(Allowed, Option<Recommendation>)>);

/// A memo is what the rest of the history already says, not part of its value: two
/// histories are equal whether or not either has been asked for a recommendation.
impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct OpenWindow {
    window: i64,
    /// Per pod (by a hash of its name): the highest count seen in the window.
    peaks: Vec<(u64, u32)>,
}

impl History {
    /// Records `in_use`, a pod's connections in use at `at`. A sample from a window
    /// already closed is ignored (it was, or could have been, counted).
    pub fn observe(&mut self, pod: &str, in_use: u32, at: Timestamp, window: Duration) {
        let w = window_of(at, window);
        if let Some(open) = &self.open
            && open.window < w
        {
            self.close();
        }
        if self.open.as_ref().is_some_and(|o| o.window > w) || self.first_window.is_some_and(|_| w <= self.last_window)
        {
            return;
        }
        let open = self.open.get_or_insert_with(|| OpenWindow {
            window: w,
            peaks: Vec::new(),
        });
        let key = pod_key(pod);
        match open.peaks.iter_mut().find(|(k, _)| *k == key) {
            Some((_, peak)) => *peak = (*peak).max(in_use),
            None => open.peaks.push((key, in_use)),
        }
    }

    /// Puts the open window's peaks into the histogram, if its window has ended
    /// by `now` (a pass with no sample still closes the minute before it).
    pub fn close_before(&mut self, now: Timestamp, window: Duration) {
        if self.open.as_ref().is_some_and(|o| o.window < window_of(now, window)) {
            self.close();
        }
    }

    fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        self.recommended = Memo::default();
        for (_, peak) in &open.peaks {
            self.histogram.add(*peak, open.window, HALF_LIFE);
            self.samples += 1;
        }
        self.histogram.forget(open.window, HALF_LIFE);
        self.first_window.get_or_insert(open.window);
        self.last_window = open.window;
    }

    /// The recommendation within `allowed` ([`recommend::recommend`]), made again
    /// only after a window has closed or for another allowed range.
    pub fn recommendation(&mut self, allowed: Allowed) -> Option<Recommendation> {
        match self.recommended.0 {
            Some((a, r)) if a == allowed => r,
            _ => {
                let r = recommend::recommend(self, allowed);
                self.recommended = Memo(Some((allowed, r)));
                r
            }
        }
    }

    /// VPA's confidence (`getConfidence`): the history's length in days, the lesser
    /// of the span from its first to its last window and its sample count as days
    /// of one sample per window — counted in whole hours (60 windows), so that the
    /// bounds it widens change at most hourly and an unchanged status is not
    /// rewritten every minute.
    pub fn confidence(&self) -> f64 {
        (self.exact_confidence() * 24.0).floor() / 24.0
    }

    fn exact_confidence(&self) -> f64 {
        let Some(first) = self.first_window else {
            return 0.0;
        };
        let span = (self.last_window - first) as f64 / WINDOWS_PER_DAY;
        let amount = self.samples as f64 / WINDOWS_PER_DAY;
        span.min(amount).max(0.0)
    }

    /// Bytes on the heap (the histogram and the open window).
    pub fn heap_bytes(&self) -> usize {
        self.histogram.heap_bytes() + self.open.as_ref().map_or(0, |o| o.peaks.capacity() * 16)
    }

    /// Whether a checkpoint read back is well formed.
    pub fn is_valid(&self) -> bool {
        self.histogram.is_valid() && self.first_window.is_none_or(|f| f <= self.last_window)
    }
}

/// A pod's key in the open window: a hash of its name (pods come and go; only the
/// window's peaks are kept, so a collision merges two pods' peaks for one minute).
/// Fixed-seed foldhash: keys are compared only within one process, and it is about
/// a quarter of SipHash's cost on a pod name (`cargo bench --bench sizing`).
fn pod_key(pod: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn each_pod_gives_one_peak_per_window_and_a_window_closes_when_the_next_begins() {
        let mut h = History::default();
        h.observe("web-a", 3, at(0), MINUTE);
        h.observe("web-a", 7, at(30), MINUTE);
        h.observe("web-a", 2, at(50), MINUTE);
        h.observe("web-b", 1, at(55), MINUTE);
        assert_eq!(h.samples, 0, "the first minute is still open");
        h.observe("web-a", 4, at(61), MINUTE);
        assert_eq!(h.samples, 2, "one peak per pod");
        assert_eq!(h.histogram.percentile(1.0), Some(7));
        assert_eq!(h.histogram.percentile(0.5), Some(1));
        h.close_before(at(125), MINUTE);
        assert_eq!(h.samples, 3);
        assert_eq!((h.first_window, h.last_window), (Some(0), 1));
    }

    #[test]
    fn a_window_in_whole_seconds_is_the_one_the_nanoseconds_give() {
        let by_nanos = |at: Timestamp, w: Duration| at.as_nanosecond().div_euclid(w.as_nanos() as i128) as i64;
        for nanos in [
            0i128,
            1,
            59_999_999_999,
            60_000_000_000,
            -1,
            -60_000_000_001,
            1_800_000_000_123_456_789,
        ] {
            let at = Timestamp::from_nanosecond(nanos).unwrap();
            for w in [MINUTE, Duration::from_secs(1), Duration::from_secs(7)] {
                assert_eq!(window_of(at, w), by_nanos(at, w), "{at} in windows of {w:?}");
            }
        }
    }

    #[test]
    fn a_sample_from_a_closed_window_is_not_counted_again() {
        let mut h = History::default();
        h.observe("web-a", 3, at(0), MINUTE);
        h.close_before(at(60), MINUTE);
        h.observe("web-a", 9, at(10), MINUTE);
        h.close_before(at(200), MINUTE);
        assert_eq!(h.samples, 1);
        assert_eq!(h.histogram.percentile(1.0), Some(3));
    }

    #[test]
    fn confidence_is_the_lesser_of_span_and_amount_in_days() {
        let mut h = History::default();
        assert_eq!(h.confidence(), 0.0);
        // A sample every 10 minutes for a day: the span is a day, the amount a tenth.
        for m in 0..=144 {
            h.observe("web-a", 1, at(m * 600), MINUTE);
        }
        h.close_before(at(200_000), MINUTE);
        assert!(
            (h.exact_confidence() - 145.0 / 1440.0).abs() < 1e-9,
            "{}",
            h.confidence()
        );
        assert_eq!(h.confidence(), 2.0 / 24.0, "whole hours");
    }
}
