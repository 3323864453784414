//! The evidence of a leaking pod: its overrunning backends (grouped by observe) as
//! the status, the remediation record, Events and `plan` show them — bounded in size,
//! with statements shown as `spec.evidence.queries` allows, and put in words.

use jiff::Timestamp;

use crate::{
    observation::{BackendGroup, Measured, PodSample, fingerprint},
    policy::{EvidenceGroup, PodEvidence, QueryEvidence},
};

/// Groups shown per pod; the rest are counted in `backendsNotShown`.
pub const MAX_GROUPS: usize = 5;
/// Longest statement shown, in characters (cut with `…`).
pub const MAX_STATEMENT_CHARS: usize = 200;
/// Pods whose evidence a workload's status row shows, the worst first.
pub const MAX_PODS_PER_ROW: usize = 3;
/// Longest evidence in words (Event notes are cut at 1000 bytes; the reason comes first).
pub const MAX_WORDS: usize = 600;

/// The evidence of `pod` in its newest sample at or before `now`, if it has any.
pub fn of_samples(
    pod: &str,
    samples: &[PodSample],
    started_at: Option<Timestamp>,
    queries: QueryEvidence,
    now: Timestamp,
) -> Option<PodEvidence> {
    let newest = samples.iter().filter(|s| s.at <= now).max_by_key(|s| s.at)?;
    let Measured::Known(c) = &newest.database else {
        return None;
    };
    (!c.evidence.is_empty()).then(|| of_groups(pod, &c.evidence, started_at, queries))
}

/// The bounded evidence of `pod` from its groups (largest first).
pub fn of_groups(
    pod: &str,
    groups: &[BackendGroup],
    started_at: Option<Timestamp>,
    queries: QueryEvidence,
) -> PodEvidence {
    let backends: u32 = groups.iter().map(|g| g.count).sum();
    let shown: Vec<EvidenceGroup> = groups
        .iter()
        .take(MAX_GROUPS)
        .map(|g| group(g, started_at, queries))
        .collect();
    let shown_count: u32 = shown.iter().map(|g| g.count).sum();
    PodEvidence {
        pod: pod.to_owned(),
        backends,
        groups: shown,
        backends_not_shown: backends - shown_count,
    }
}

fn group(g: &BackendGroup, pod_started: Option<Timestamp>, queries: QueryEvidence) -> EvidenceGroup {
    let text = g.statement.as_ref().map(|s| s.text.as_str());
    let secs = |from: Timestamp, to: Timestamp| {
        let ms = to.duration_since(from).as_millis().max(0) as u64;
        ms.div_ceil(1000)
    };
    EvidenceGroup {
        count: g.count,
        state: g.state.clone(),
        statement: match queries {
            QueryEvidence::Normalized => text.map(cut),
            QueryEvidence::Fingerprint | QueryEvidence::None => None,
        },
        fingerprint: match queries {
            QueryEvidence::Normalized | QueryEvidence::Fingerprint => text.map(fingerprint),
            QueryEvidence::None => None,
        },
        query_id: g.query_id,
        tags: g.statement.as_ref().map(|s| s.tags.clone()).unwrap_or_default(),
        wait_event: g.wait_event.clone(),
        oldest_backend_start: g.first_started.map(second),
        oldest_transaction_start: g.oldest_xact_start.map(second),
        in_state_since: g.oldest_state_change.map(second),
        opened_within_seconds_of_start: pod_started.zip(g.last_started).map(|(p, l)| secs(p, l)),
        opened_over_seconds: g.first_started.zip(g.last_started).map(|(f, l)| secs(f, l)),
    }
}

/// Whole seconds: the status shows the same instant in every pass, readably.
fn second(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_STATEMENT_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// The evidence in words, at most [`MAX_WORDS`] characters: "web-1: 15 backends:
/// ×10 idle in transaction for 12 h (transaction open 12 h), last statement `SELECT
/// … $1` {route=/odds}, opened within 2 s of the pod's start; ×5 ...". Without
/// `now`, times are given as instants ("since 2026-…Z"), so text that is repeated
/// every pass (a condition, a recurring Event) stays the same while the leak does.
pub fn words(e: &PodEvidence, now: Option<Timestamp>) -> String {
    let groups: Vec<String> = e.groups.iter().map(|g| group_words(g, now)).collect();
    let mut out = format!("{}: {} backends: {}", e.pod, e.backends, groups.join("; "));
    if e.backends_not_shown > 0 {
        out.push_str(&format!("; {} more in smaller groups", e.backends_not_shown));
    }
    match out.char_indices().nth(MAX_WORDS) {
        None => out,
        Some((end, _)) => format!("{}…", &out[..end]),
    }
}

fn group_words(g: &EvidenceGroup, now: Option<Timestamp>) -> String {
    let since = |t: &Option<String>| {
        let t = t.as_deref()?;
        Some(match (now, t.parse::<Timestamp>()) {
            (Some(now), Ok(at)) => format!("for {}", human(now.duration_since(at).as_secs().max(0) as u64)),
            _ => format!("since {t}"),
        })
    };
    let mut out = format!("×{} {}", g.count, g.state.as_deref().unwrap_or("state unknown"));
    if let Some(d) = since(&g.in_state_since) {
        out.push_str(&format!(" {d}"));
    }
    if let Some(d) = since(&g.oldest_transaction_start) {
        out.push_str(&format!(" (transaction open {d})"));
    }
    match (&g.statement, &g.fingerprint) {
        (Some(s), _) => out.push_str(&format!(", last statement `{s}`")),
        (None, Some(f)) => out.push_str(&format!(", last statement fingerprint {f}")),
        (None, None) => {}
    }
    if !g.tags.is_empty() {
        let tags: Vec<String> = g.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(" {{{}}}", tags.join(", ")));
    }
    if let Some(s) = g.opened_within_seconds_of_start {
        out.push_str(&format!(", opened within {s} s of the pod's start"));
    }
    if let Some(s) = g.opened_over_seconds.filter(|s| *s > 0 && g.count > 1) {
        out.push_str(&format!(", spread over {}", human(s)));
    }
    out
}

/// A duration as people say it: seconds under a minute, minutes under an hour, then hours.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s % 3600 < 60 => format!("{} h", s / 3600),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}
