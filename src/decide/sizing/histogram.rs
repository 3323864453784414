//! A decaying histogram of connection counts, after the Vertical Pod Autoscaler's
//! (`pkg/recommender/util/decaying_histogram.go`): a sample taken at `t` weighs
//! `2^((t - reference) / halfLife)`, so every sample loses half its weight relative
//! to a new one each half-life; the reference moves forward (all weights scaled
//! down together, which leaves every percentile as it was) before the exponent
//! grows too large for the float.
//!
//! Where it differs from VPA's, and why: buckets are sparse (only those holding a
//! weight, as `(index, weight)` pairs sorted by index) and weights are `f32`, so a
//! workload whose pools use a handful of distinct counts costs a few dozen bytes and
//! the worst case is bounded by [`super::buckets::COUNT`] pairs of 8 bytes; and a
//! bucket whose weight falls below [`FORGET`] of a new sample's is dropped, so
//! history older than ~13 half-lives is forgotten rather than kept as dust. Time is
//! counted in peak windows (a minute in production), not wall-clock time.

use serde::{Deserialize, Serialize};

use super::buckets;

/// The largest exponent a weight may reach before the reference moves: 2^32 keeps
/// 24 bits of an `f32`'s mantissa for the newest samples against ~2^38 of range.
const MAX_EXPONENT: f64 = 32.0;

/// A bucket weighing less than this fraction of one new sample is forgotten
/// (2^-13: a sample ~13 half-lives old).
pub const FORGET: f64 = 1.0 / 8192.0;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DecayingHistogram {
    /// The window the weights are relative to.
    #[serde(rename = "ref")]
    reference: i64,
    /// `(bucket, weight)`, sorted by bucket, every weight positive.
    #[serde(rename = "b")]
    buckets: Vec<(u8, f32)>,
}

impl DecayingHistogram {
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// How many buckets hold a weight.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u8, f32)>()
    }

    /// Adds one sample of `value` taken in `window`, with weight 1 at that time.
    pub fn add(&mut self, value: u32, window: i64, half_life: f64) {
        if self.buckets.is_empty() {
            self.reference = window;
        }
        if (window - self.reference) as f64 / half_life > MAX_EXPONENT {
            self.shift(window, half_life);
        }
        let weight = self.factor(window, half_life) as f32;
        let i = buckets::index(value);
        match self.buckets.binary_search_by_key(&i, |(b, _)| *b) {
            Ok(at) => self.buckets[at].1 += weight,
            Err(at) => self.buckets.insert(at, (i, weight)),
        }
    }

    /// Drops the buckets that weigh less than [`FORGET`] of a sample taken in `window`.
    pub fn forget(&mut self, window: i64, half_life: f64) {
        let floor = (self.factor(window, half_life) * FORGET) as f32;
        self.buckets.retain(|(_, w)| *w >= floor);
    }

    /// The smallest count at or below which a fraction `p` of the weight lies (the
    /// largest count of the bucket where the running sum reaches it); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        let total: f64 = self.buckets.iter().map(|(_, w)| f64::from(*w)).sum();
        // A hair under p × total: the same samples summed in another order (another
        // bucket grouping, rounded in f32) must not land in another bucket. A bucket
        // weighing less than a millionth of the whole is below every percentile's reach.
        let threshold = p.clamp(0.0, 1.0) * total * (1.0 - 1e-6);
        let mut sum = 0.0;
        for (i, w) in &self.buckets {
            sum += f64::from(*w);
            if sum >= threshold {
                return Some(buckets::largest(*i));
            }
        }
        // Rounding left the sum a hair short of p × total: the last bucket holds it.
        self.buckets.last().map(|(i, _)| buckets::largest(*i))
    }

    fn factor(&self, window: i64, half_life: f64) -> f64 {
        ((window - self.reference) as f64 / half_life).exp2()
    }

    /// Moves the reference to `window` (rounded down to whole half-lives, as VPA
    /// does, so the scale is an exact power of two) and drops what decayed away.
    fn shift(&mut self, window: i64, half_life: f64) {
        let half_lives = ((window - self.reference) as f64 / half_life).floor();
        let scale = (-half_lives).exp2();
        for (_, w) in &mut self.buckets {
            *w = (f64::from(*w) * scale) as f32;
        }
        self.reference += (half_lives * half_life) as i64;
        self.forget(window, half_life);
    }

    /// Whether a checkpoint read back is well formed: sorted, in range, positive.
    pub fn is_valid(&self) -> bool {
        self.buckets.windows(2).all(|p| p[0].0 < p[1].0)
            && self
                .buckets
                .iter()
                .all(|(i, w)| usize::from(*i) < buckets::COUNT && w.is_finite() && *w > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 1440.0;

    #[test]
    fn percentiles_of_equal_weights_are_the_counts_themselves() {
        let mut h = DecayingHistogram::default();
        for v in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            h.add(v, 0, DAY);
        }
        assert_eq!(h.percentile(0.5), Some(5));
        assert_eq!(h.percentile(0.95), Some(10));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(DecayingHistogram::default().percentile(0.5), None);
    }

    #[test]
    fn a_sample_a_half_life_older_weighs_half() {
        let mut h = DecayingHistogram::default();
        // Two old samples of 10 against one new sample of 2, a half-life apart: equal weight.
        h.add(10, 0, DAY);
        h.add(10, 0, DAY);
        h.add(2, 1440, DAY);
        h.add(2, 1440, DAY);
        h.add(2, 1440, DAY);
        // 2 weighs 3 × 2 = 6 against 10's 2: the median is 2, the 80th percentile still 10.
        assert_eq!(h.percentile(0.5), Some(2));
        assert_eq!(h.percentile(0.8), Some(10));
    }

    #[test]
    fn the_reference_moves_forward_without_changing_a_percentile_and_old_history_is_forgotten() {
        let mut h = DecayingHistogram::default();
        h.add(7, 0, 10.0);
        h.add(3, 100, 10.0);
        h.add(3, 100, 10.0);
        assert_eq!(h.percentile(0.9), Some(3));
        assert_eq!(
            h.percentile(1.0),
            Some(7),
            "10 half-lives old, 7 still weighs 2^-11 of the rest"
        );
        h.add(3, 400, 10.0);
        assert!(h.reference > 0, "moved past 32 half-lives");
        assert_eq!(h.len(), 1, "7, 40 half-lives old, is forgotten: {h:?}");
        assert_eq!(h.percentile(1.0), Some(3));
        assert!(h.is_valid());
    }
}
