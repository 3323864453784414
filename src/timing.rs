//! Saturating time arithmetic. Validation bounds every duration of a policy, but a
//! pass must never panic whatever reaches it (a policy read past validation, a clock
//! far off): `jiff`'s `-` and `std`'s `+` panic on overflow, these saturate.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `d` as a signed duration, `SignedDuration::MAX` when it does not fit.
pub fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `at - d`, or the earliest timestamp when that is before it.
pub fn before(at: Timestamp, d: Duration) -> Timestamp {
    at.checked_sub(signed(d)).unwrap_or(Timestamp::MIN)
}

/// `at + d`, or the latest timestamp when that is after it.
pub fn after(at: Timestamp, d: Duration) -> Timestamp {
    at.checked_add(signed(d)).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let huge = Duration::from_secs(106_000_000 * 3600);
        assert_eq!(before(now, huge), Timestamp::MIN);
        assert_eq!(after(now, huge), Timestamp::MAX);
        assert_eq!(before(now, Duration::MAX), Timestamp::MIN);
        assert_eq!(before(now, Duration::from_secs(60)).as_second(), 1_800_000_000 - 60);
    }
}
