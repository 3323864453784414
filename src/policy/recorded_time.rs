//! Times the status records, as RFC 3339 text on the wire and `Timestamp` inside.
//!
//! The status is written by poolwarden, but anyone with access to the status
//! subresource can edit it, and the CRD only says `type: string`. A time that does
//! not parse must neither fail the read (a watch decodes a whole page of policies:
//! one bad status would hide every policy) nor lose the record (its restart would no
//! longer count against the budget and the cooldown). It reads as the far future
//! ([`UNREADABLE`]): the record is kept, counts against the hourly budget, holds
//! its workload's cooldown and never expires, until someone corrects or removes it —
//! the restraint a remediation controller should fall back to — and a warning says
//! which text was unreadable.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer};

/// What an unreadable recorded time reads as.
pub const UNREADABLE: Timestamp = Timestamp::MAX;

/// Reads a recorded time; see the module's comment for an unreadable one.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(read(&text))
}

/// Reads an optional recorded time (absent stays `None`).
pub fn deserialize_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.as_deref().map(read))
}

/// `text` as a time, or [`UNREADABLE`].
pub fn read(text: &str) -> Timestamp {
    match text.parse() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                text,
                error = %e,
                "a recorded time is not RFC 3339: the record is kept and treated as recent until it is corrected"
            );
            UNREADABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ExceedingPod, RemediationRecord};

    #[test]
    fn a_recorded_time_is_the_same_rfc3339_text_after_a_round_trip() {
        let json = r#"{"pod":"api-1","value":7,"since":"2026-03-01T12:00:00.5Z"}"#;
        let pod: ExceedingPod = serde_json::from_str(json).unwrap();
        assert_eq!(pod.since, "2026-03-01T12:00:00.5Z".parse::<Timestamp>().unwrap());
        assert_eq!(serde_json::to_string(&pod).unwrap(), json);
    }

    #[test]
    fn a_record_whose_time_is_unreadable_is_kept_and_reads_as_the_far_future() {
        let json = r#"{"at":"yesterday","action":"RestartPod","kind":"Deployment","workload":"api",
            "reason":"r","measure":"IdleOverrun","values":[9],"limit":5,"since":"not a time"}"#;
        let record: RemediationRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record.at, UNREADABLE);
        assert_eq!(record.since, UNREADABLE);
        assert_eq!(record.workload, "api");
    }

    #[test]
    fn observation_times_round_trip_and_an_unreadable_one_does_not_fail_the_status() {
        use crate::policy::PoolPolicyStatus;
        let json = r#"{"workloadCount":0,"leakingPods":0,"podCount":0,"outOfSyncCount":0,"exceedingCount":0,"unknownCount":0,"restartsLastHour":0,"observedAt":"2026-03-01T12:00:00Z","staleAfter":"2026-03-01T12:11:30Z"}"#;
        let status: PoolPolicyStatus = serde_json::from_str(json).unwrap();
        assert_eq!(status.observed_at, Some("2026-03-01T12:00:00Z".parse().unwrap()));
        assert_eq!(serde_json::to_string(&status).unwrap(), json);
        let edited: PoolPolicyStatus = serde_json::from_str(r#"{"observedAt":"now-ish"}"#).unwrap();
        assert_eq!((edited.observed_at, edited.stale_after), (Some(UNREADABLE), None));
        let absent: PoolPolicyStatus = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.observed_at, None);
    }
}
