//! The histogram's buckets: exponential, as the Vertical Pod Autoscaler's, but over
//! whole connections. A bucket starting at `s` is `max(1, ceil(s / 20))` wide, so
//! every count up to 20 has a bucket of its own and above that a bucket is about 5%
//! wide (VPA: `firstBucketSize * ratio^i` with ratio 1.05). A connection count is an
//! integer, so integer boundaries lose nothing below 21 and the percentile of a
//! bucket is the largest count it holds, never a fraction.

/// Counts at and above this share the last bucket (and `spec.sizing.maxAllowed` is
/// at most this): pools per pod are sized in tens, and 128 buckets keep a
/// histogram's worst case within a KiB.
pub const TOP: u32 = 2_000;

/// The start of every bucket, ascending; the last one is open-ended.
pub const STARTS: [u32; COUNT] = starts();

/// How many buckets there are (fits the `u8` a histogram keeps per bucket).
pub const COUNT: usize = count();

const _: () = assert!(COUNT <= 128, "a histogram's worst case must stay within a KiB");

const fn next(start: u32) -> u32 {
    // ceil(start / 20), at least 1: exact buckets up to 20, then ~5% wide.
    let width = start.div_ceil(20);
    start + if width == 0 { 1 } else { width }
}

const fn count() -> usize {
    let mut start = 0;
    let mut n = 1;
    while start < TOP {
        start = next(start);
        n += 1;
    }
    n
}

const fn starts() -> [u32; COUNT] {
    let mut out = [0; COUNT];
    let mut i = 1;
    while i < COUNT {
        out[i] = next(out[i - 1]);
        i += 1;
    }
    out
}

/// The bucket a count falls in.
pub fn index(value: u32) -> u8 {
    // The last start not above the value.
    let i = STARTS.partition_point(|s| *s <= value) - 1;
    i as u8
}

/// The largest count bucket `i` holds: what a percentile landing in it reports (VPA
/// reports the bucket's end too, so a recommendation never falls short of a sample
/// in its bucket). The open-ended last bucket reports its start.
pub fn largest(i: u8) -> u32 {
    let i = usize::from(i);
    match STARTS.get(i + 1) {
        Some(next) => next - 1,
        None => STARTS[i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_up_to_twenty_has_its_own_bucket_and_the_rest_are_about_five_percent_wide() {
        for v in 0..=20 {
            assert_eq!(largest(index(v)), v, "count {v}");
        }
        for i in 21..COUNT - 1 {
            let (start, end) = (STARTS[i], STARTS[i + 1]);
            let width = f64::from(end - start) / f64::from(start);
            assert!(width <= 0.1, "bucket {i}: {start}..{end}");
        }
        const {
            assert!(
                COUNT <= 128,
                "a bucket index is a u8, and 128 pairs of 8 bytes fill a KiB"
            )
        };
        assert_eq!(largest(index(u32::MAX)), STARTS[COUNT - 1]);
        assert!(STARTS[COUNT - 1] >= TOP);
    }

    #[test]
    fn a_count_is_within_its_bucket() {
        for v in [0, 1, 20, 21, 22, 23, 99, 100, 1000, 9999, 10_000, 50_000] {
            let i = index(v);
            assert!(STARTS[usize::from(i)] <= v, "{v}");
            assert!(v <= largest(i) || usize::from(i) == COUNT - 1, "{v}");
        }
    }
}
