//! The status's size bound: a PoolPolicy's status stays within [`MAX_STATUS_BYTES`]
//! whatever the policy selects. It counts every workload (the totals), shows the
//! workloads with the most to say (at most [`MAX_ROWS`], chosen by severity), keeps
//! every remediation record the rails read (older ones without their evidence), and
//! admits a restart only when its record fits, so the record a restart needs can
//! always be written before the restart is made.
//!
//! Why a bound at all: the API server refuses an object past etcd's request limit
//! (1.5 MiB by default, `--max-request-bytes`), and every status write is sent whole
//! to every PoolPolicy watcher (Argo CD, Flux, kubectl), so a row per workload cost
//! ~1 MB a write at 10,000 workloads and made the status unwritable past ~10,700.
//! Gatekeeper keeps totals plus 20 violations in its status for the same reason.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::{
    Verdict,
    remediation::{self, Remediation, SkipReason, Skipped},
};
use crate::policy::{PoolPolicyStatus, RemediationRecord, WorkloadStatus};

/// The most the status may take, serialized as JSON (what the API server stores).
pub const MAX_STATUS_BYTES: usize = 64 * 1024;
/// The most workload rows the status shows.
pub const MAX_ROWS: usize = 20;
/// The longest condition message, in bytes.
pub const MAX_CONDITION_MESSAGE: usize = 1024;
/// The room the remediation records may take; the rows get what is left.
pub const RECORDS_BYTES: usize = 40 * 1024;
/// The newest records that keep their evidence (older ones: it is in their Events).
const RECORDS_WITH_EVIDENCE: usize = 4;
/// The values an older record keeps, the newest (its reason gives their number).
const VALUES_KEPT: usize = 20;
/// What the status's own `observedAt` and `staleAfter` take once set.
const OBSERVATION_BYTES: usize = 96;

/// The JSON size of a value (0 for one that cannot be serialized, which the status
/// types cannot be: they hold only strings, numbers and times).
pub fn bytes<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// The totals of every selected workload, from its row and its verdicts.
pub fn set_totals(status: &mut PoolPolicyStatus, rows: &[WorkloadStatus], verdicts: &[BTreeMap<String, Verdict>]) {
    status.workload_count = rows.len() as u32;
    status.pod_count = rows.iter().map(|r| r.pods).sum();
    status.out_of_sync_count = rows.iter().filter(|r| !r.env_in_sync).count() as u32;
    status.exceeding_count = verdicts.iter().filter(|vs| vs.values().any(exceeds)).count() as u32;
    status.unknown_count = verdicts.iter().filter(|vs| vs.values().any(is_unknown)).count() as u32;
}

fn exceeds(v: &Verdict) -> bool {
    matches!(v, Verdict::Exceeding { .. } | Verdict::Leaking { .. })
}

fn is_unknown(v: &Verdict) -> bool {
    matches!(v, Verdict::Unknown(_))
}

/// The rows' indices, the most severe first: a pod leaking (sustained above the
/// limit), then one above it, then unknown, then env out of sync, then the nearest to
/// the limit; ties by kind and name, so the choice is the same every pass.
pub fn by_severity(rows: &[WorkloadStatus], verdicts: &[BTreeMap<String, Verdict>]) -> Vec<usize> {
    let class = |i: usize| {
        let vs = &verdicts[i];
        if vs.values().any(|v| matches!(v, Verdict::Leaking { .. })) {
            0
        } else if vs.values().any(exceeds) {
            1
        } else if vs.values().any(is_unknown) {
            2
        } else if !rows[i].env_in_sync {
            3
        } else {
            4
        }
    };
    let over = |r: &WorkloadStatus| i64::from(r.worst_value.unwrap_or(0)) - i64::from(r.limit.unwrap_or(0));
    let mut order: Vec<(u8, i64, usize)> = (0..rows.len()).map(|i| (class(i), over(&rows[i]), i)).collect();
    order.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then_with(|| (&rows[a.2].kind, &rows[a.2].name).cmp(&(&rows[b.2].kind, &rows[b.2].name)))
    });
    order.into_iter().map(|(_, _, i)| i).collect()
}

/// Fills `status.workloads` from `candidates` (the most severe first) within what the
/// bound leaves after everything else: at most [`MAX_ROWS`]; a row too big for the
/// room left is shown without its evidence (the records and Events keep it). Lists
/// them by kind and name and sets `workloadsTruncated`.
pub fn fill_rows(status: &mut PoolPolicyStatus, candidates: Vec<WorkloadStatus>) {
    status.workloads.clear();
    let mut room = MAX_STATUS_BYTES
        .saturating_sub(bytes(status) + OBSERVATION_BYTES + "\"workloadsTruncated\":true,\"workloads\":[]".len());
    let mut shown = Vec::new();
    for mut row in candidates.into_iter().take(MAX_ROWS) {
        let mut size = bytes(&row) + 1;
        if size > room && !row.evidence.is_empty() {
            row.evidence.clear();
            size = bytes(&row) + 1;
        }
        if size > room {
            break;
        }
        room -= size;
        shown.push(row);
    }
    shown.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    status.workloads_truncated = (shown.len() as u32) < status.workload_count;
    status.workloads = shown;
}

/// How long the rails read a record: the cooldown, or the hourly budget's hour.
pub fn keep_for(cooldown: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(cooldown)
        .unwrap_or(SignedDuration::MAX)
        .max(SignedDuration::from_hours(1))
}

/// The earlier records as the status keeps them: all but the newest few
/// [compacted](compact), and all of them once they take more than half the room (the
/// other half is for the next restarts' records); then, while they exceed
/// [`RECORDS_BYTES`], the oldest of those only the recurrence guard still reads (past
/// every cooldown and the hour) go. A record within its cooldown or the hour is never
/// dropped: the rails would forget a restart.
pub fn compact_records(
    mut records: Vec<RemediationRecord>,
    keep_for: SignedDuration,
    now: Timestamp,
) -> Vec<RemediationRecord> {
    let n = records.len();
    records
        .iter_mut()
        .take(n.saturating_sub(RECORDS_WITH_EVIDENCE))
        .for_each(compact);
    if bytes(&records) > RECORDS_BYTES / 2 {
        records.iter_mut().for_each(compact);
    }
    let mut size = bytes(&records);
    while size > RECORDS_BYTES {
        let oldest_spare = records
            .iter()
            .enumerate()
            .filter(|(_, r)| now.duration_since(r.at) >= keep_for)
            .min_by_key(|(_, r)| r.at)
            .map(|(i, _)| i);
        let Some(i) = oldest_spare else { break };
        size -= bytes(&records[i]) + 1;
        records.remove(i);
    }
    records
}

/// A record without what only a person reads and its Event already holds: the
/// evidence, and all but the newest values (its reason gives their number).
fn compact(r: &mut RemediationRecord) {
    r.evidence = None;
    if r.values.len() > VALUES_KEPT {
        r.values.drain(..r.values.len() - VALUES_KEPT);
    }
}

/// Admits the remediations, in the order chosen, while their records fit beside the
/// earlier ones within [`RECORDS_BYTES`] (a record too big whole is admitted
/// [compacted](compact)); the rest are skipped until older records have expired. A
/// restart is never made without its record.
pub fn admit(
    chosen: Vec<Remediation>,
    mut skipped: Vec<Skipped>,
    earlier: &[RemediationRecord],
) -> (Vec<Remediation>, Vec<Skipped>) {
    let mut size = bytes(&earlier);
    let mut admitted = Vec::new();
    for mut r in chosen {
        if size + bytes(&r.record) + 1 > RECORDS_BYTES {
            compact(&mut r.record);
        }
        let needs = bytes(&r.record) + 1;
        if size + needs <= RECORDS_BYTES {
            size += needs;
            admitted.push(r);
        } else {
            skipped.push(Skipped {
                detail: format!(
                    "the status has no room for this restart's record: {} records the cooldowns and budgets still read take {size} of {RECORDS_BYTES} bytes",
                    earlier.len()
                ),
                record: r.record,
                why: SkipReason::NoRoomForRecord,
            });
        }
    }
    (admitted, skipped)
}

/// The records counted against the hourly budget now.
pub fn restarts_last_hour(records: &[RemediationRecord], now: Timestamp) -> u32 {
    let hour_ago = now.checked_sub(SignedDuration::from_hours(1)).unwrap_or(Timestamp::MIN);
    records
        .iter()
        .filter(|r| remediation::counts(r) && r.at > hour_ago)
        .count() as u32
}

/// `parts` joined with "; " within [`MAX_CONDITION_MESSAGE`] bytes, with how many were
/// left out ("(and 12 more)").
pub fn join_bounded(parts: &[String]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        let sep = if out.is_empty() { "" } else { "; " };
        let rest = parts.len() - i;
        let tail = format!("; (and {rest} more)");
        let fits_all = out.len() + sep.len() + part.len() <= MAX_CONDITION_MESSAGE;
        let fits_with_tail = out.len() + sep.len() + part.len() + tail.len() <= MAX_CONDITION_MESSAGE;
        if fits_with_tail || (rest == 1 && fits_all) {
            out.push_str(sep);
            out.push_str(part);
        } else {
            out.push_str(if out.is_empty() { &tail[2..] } else { &tail });
            return cut(out);
        }
    }
    out
}

/// `message` cut to [`MAX_CONDITION_MESSAGE`] bytes at a character boundary, ending
/// in `…` when cut.
pub fn cut(mut message: String) -> String {
    if message.len() <= MAX_CONDITION_MESSAGE {
        return message;
    }
    let mut end = MAX_CONDITION_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push('…');
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_that_fits_is_whole_and_one_that_does_not_says_how_many_are_left_out() {
        let few: Vec<String> = vec!["a".into(), "b".into()];
        assert_eq!(join_bounded(&few), "a; b");
        let many: Vec<String> = (0..1000)
            .map(|i| format!("Deployment/w-{i:04} is governed by x"))
            .collect();
        let joined = join_bounded(&many);
        assert!(joined.len() <= MAX_CONDITION_MESSAGE, "{}", joined.len());
        assert!(joined.starts_with("Deployment/w-0000 is governed by x; Deployment/w-0001"));
        let shown = joined.matches("governed").count();
        assert!(joined.ends_with(&format!("; (and {} more)", 1000 - shown)), "{joined}");
    }

    #[test]
    fn a_cut_message_ends_at_a_character_boundary() {
        let cut = cut("é".repeat(MAX_CONDITION_MESSAGE));
        assert!(cut.len() <= MAX_CONDITION_MESSAGE && cut.ends_with('…'));
    }
}
