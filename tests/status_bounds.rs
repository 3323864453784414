//! The PoolPolicy status stays within 64 KiB whatever a policy selects (issue 32): the
//! totals count every workload, the rows show the ones with the most to say, the
//! records the rails read are kept, and a restart's record always fits.

use jiff::Timestamp;
use poolwarden::{
    decide::{self, Container, DatabaseLimits, Instance, PlanInput, SkipReason, Workload},
    observation::{Measured, PodConnections, PodSample},
    policy::{
        ConnectionCounts, EvidenceGroup, Measure, PodEvidence, PoolPolicyStatus, RemediationAction, RemediationRecord,
        RemediationState, ResolvedPolicy, validate,
    },
};

/// The bound the status must stay within (etcd's request limit is 1.5 MiB; every
/// policy watcher receives the whole object on every write).
const BOUND: usize = 64 * 1024;

const NOW: i64 = 1_800_000_000;

fn at(secs_ago: i64) -> Timestamp {
    Timestamp::from_second(NOW - secs_ago).unwrap()
}

fn policy(edit: impl FnOnce(&mut serde_json::Value)) -> ResolvedPolicy {
    let mut spec = serde_json::json!({
        "selector": {"matchLabels": {"app.kubernetes.io/part-of": "fleet"}},
        "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        "pool": {"minSize": 0, "maxSize": 20, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600},
        "discrepancy": {"measure": "LifetimeOverrun", "max": 2, "sustainedFor": "10m", "grace": "60s"},
        "remediation": {"action": "RestartPod", "cooldown": "1h", "maxRestartsPerHour": 2, "minAvailableReplicas": 1},
    });
    edit(&mut spec);
    validate(&serde_json::from_value(spec).unwrap()).unwrap()
}

/// Samples every 30 s over the last 15 minutes with this overrun (`None`: unknown).
fn samples(overrun: Option<u32>) -> Vec<PodSample> {
    (0..=30)
        .map(|i| PodSample {
            at: at(i * 30),
            database: match overrun {
                Some(n) => Measured::Known(PodConnections {
                    counts: ConnectionCounts {
                        total: n + 3,
                        idle: n + 3,
                        ..Default::default()
                    },
                    overrun: n,
                    measure: Some(Measure::LifetimeOverrun),
                    ..Default::default()
                }),
                None => Measured::Unknown("database down".into()),
            },
            pool: None,
        })
        .collect()
}

/// A workload of two pods (the first with `overrun`), its env in sync or not.
fn workload(p: &ResolvedPolicy, name: &str, overrun: Option<u32>, in_sync: bool) -> Workload {
    let pod = |i: usize, overrun| Instance {
        name: format!("{name}-{i}"),
        ready: true,
        started_at: Some(at(3 * 3600)),
        samples: samples(overrun),
    };
    let env = decide::env::desired_env(p)
        .into_iter()
        .filter(|(k, _)| in_sync || k != "DB_POOL_MAX")
        .collect();
    Workload {
        kind: decide::Kind::Deployment,
        name: name.into(),
        replicas: 2,
        ready_replicas: 2,
        max_surge: 1,
        containers: vec![Container {
            name: "app".into(),
            env,
        }],
        instances: vec![pod(0, overrun), pod(1, Some(0))],
        ..Default::default()
    }
}

/// `n` workloads named `w-00000`…: `leaking` of them leak (overrun 10 + i, the last
/// the worst), `unknown` cannot be measured, `out_of_sync` lack an env entry, the rest
/// are healthy with overrun 1.
fn fleet(p: &ResolvedPolicy, n: usize, leaking: usize, unknown: usize, out_of_sync: usize) -> Vec<Workload> {
    (0..n)
        .map(|i| {
            let name = format!("w-{i:05}");
            if i < leaking {
                workload(p, &name, Some(10 + i as u32), true)
            } else if i < leaking + unknown {
                workload(p, &name, None, true)
            } else if i < leaking + unknown + out_of_sync {
                workload(p, &name, Some(0), false)
            } else {
                workload(p, &name, Some(1), true)
            }
        })
        .collect()
}

fn plan(p: &ResolvedPolicy, status: &PoolPolicyStatus, workloads: &[Workload]) -> decide::Plan {
    decide::plan(&PlanInput {
        policy: p,
        generation: 1,
        policy_paused: false,
        status,
        workloads,
        database: Measured::Known(DatabaseLimits {
            max_connections: 1_000_000,
            reserved: 3,
            pooler: None,
        }),
        conflicts: &[],
        database_full: None,
        env_all_or_nothing: true,
        other_remediations: &[],
        governed_elsewhere: &[],
        sizing: Default::default(),
        budget: None,
        now: at(0),
    })
}

fn bytes(status: &PoolPolicyStatus) -> usize {
    serde_json::to_vec(status).unwrap().len()
}

#[test]
fn a_policy_over_twenty_thousand_workloads_has_a_status_within_64_kib_with_every_total() {
    let p = policy(|_| {});
    let workloads = fleet(&p, 20_000, 30, 40, 50);
    let plan = plan(&p, &PoolPolicyStatus::default(), &workloads);
    let status = &plan.status;
    assert!(bytes(status) <= BOUND, "status is {} bytes", bytes(status));
    assert_eq!(status.workload_count, 20_000);
    assert_eq!(status.pod_count, 40_000);
    assert_eq!(status.exceeding_count, 30);
    assert_eq!(status.unknown_count, 40);
    assert_eq!(status.out_of_sync_count, 50);
    assert!(status.workloads_truncated);
    assert!(status.workloads.len() <= 20 && !status.workloads.is_empty());
    // The worst are shown: the leaking ones, the worst of them certainly.
    assert!(
        status.workloads.iter().any(|w| w.name == "w-00029"),
        "{:?}",
        names(status)
    );
    assert!(
        status.workloads.iter().all(|w| !w.exceeding.is_empty()),
        "30 leak: they fill the 20 rows: {:?}",
        names(status)
    );
    // Listed by kind and name, so a change of severity alone does not reorder them.
    let listed = names(status);
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    // The metrics still see every workload.
    assert_eq!(plan.rows.len(), 20_000);
}

#[test]
fn unknown_comes_before_out_of_sync_and_both_before_the_healthy() {
    let p = policy(|_| {});
    let workloads = fleet(&p, 2_000, 0, 5, 30);
    let status = plan(&p, &PoolPolicyStatus::default(), &workloads).status;
    let unknown = status.workloads.iter().filter(|w| w.worst_value.is_none()).count();
    let out_of_sync = status.workloads.iter().filter(|w| !w.env_in_sync).count();
    assert_eq!(
        (unknown, out_of_sync, status.workloads.len()),
        (5, 15, 20),
        "{:?}",
        names(&status)
    );
}

#[test]
fn a_small_policy_shows_every_workload_untruncated() {
    let p = policy(|_| {});
    let workloads = fleet(&p, 5, 1, 1, 1);
    let status = plan(&p, &PoolPolicyStatus::default(), &workloads).status;
    assert_eq!(names(&status), ["w-00000", "w-00001", "w-00002", "w-00003", "w-00004"]);
    assert!(!status.workloads_truncated);
    assert!(!serde_json::to_string(&status).unwrap().contains("workloadsTruncated"));
    assert_eq!((status.workload_count, status.pod_count), (5, 10));
}

/// A record as big as the bounds allow: the longest names, every value of a long
/// window, evidence of five groups with 200-character statements.
fn fat_record(i: usize, secs_ago: i64) -> RemediationRecord {
    let name = format!("{}-{i:05}", "w".repeat(240));
    RemediationRecord {
        at: at(secs_ago),
        state: RemediationState::Done,
        action: RemediationAction::RestartPod,
        kind: "Deployment".into(),
        workload: name.clone(),
        pod: Some(format!("{name}-0")),
        reason: "LifetimeOverrun 12 > 2 in every sample since … (600 samples)".into(),
        measure: Measure::LifetimeOverrun,
        values: vec![12; 600],
        limit: 2,
        since: at(secs_ago + 600),
        evidence: Some(PodEvidence {
            pod: format!("{name}-0"),
            backends: 12,
            groups: (0..5)
                .map(|g| EvidenceGroup {
                    count: 2,
                    state: Some("idle in transaction".into()),
                    statement: Some(format!("{g}{}", "SELECT x FROM t WHERE y = $1 ".repeat(7))),
                    fingerprint: Some("0123456789abcdef".into()),
                    query_id: Some(42),
                    tags: (0..8).map(|t| (format!("tag{t}"), "v".repeat(40))).collect(),
                    wait_event: Some("Client:ClientRead".into()),
                    oldest_backend_start: Some(at(3000).to_string()),
                    oldest_transaction_start: Some(at(3000).to_string()),
                    in_state_since: Some(at(3000).to_string()),
                    opened_within_seconds_of_start: Some(3),
                    opened_over_seconds: Some(30),
                })
                .collect(),
            backends_not_shown: 0,
        }),
        template: Some("0123456789abcdef".into()),
        generation: Some(1),
        returned_after_seconds: vec![],
    }
}

#[test]
fn a_generous_budget_full_of_records_still_fits_and_keeps_every_record_the_rails_read() {
    // 100 restarts an hour for 24 hours' cooldown: the rails read every record within
    // the cooldown. Evidence and long values go first; the records stay.
    let p = policy(|s| {
        s["remediation"]["maxRestartsPerHour"] = 100.into();
        s["remediation"]["cooldown"] = "24h".into();
    });
    let records: Vec<RemediationRecord> = (0..40).map(|i| fat_record(i, 60 + i as i64 * 60)).collect();
    let before = PoolPolicyStatus {
        remediations: records.clone(),
        ..Default::default()
    };
    let workloads = fleet(&p, 3_000, 25, 0, 0);
    let plan = plan(&p, &before, &workloads);
    let status = &plan.status;
    assert!(bytes(status) <= BOUND, "status is {} bytes", bytes(status));
    for r in &records {
        assert!(
            status
                .remediations
                .iter()
                .any(|k| k.workload == r.workload && k.at == r.at),
            "record of {} kept",
            r.workload
        );
    }
    assert_eq!(status.restarts_last_hour, 40 + plan.remediations.len() as u32);
    // The restarts made have their records in the status the pass writes first.
    assert!(!plan.remediations.is_empty());
    for r in &plan.remediations {
        assert!(status.remediations.contains(&r.record));
    }
}

#[test]
fn a_restart_whose_record_cannot_fit_is_not_made_and_says_why() {
    // 60 records the rails still read (within the cooldown), each as big as it can be
    // once compacted: more than the records' room, so no room for another. (poolwarden
    // itself never gets here, it admits no record past the room; a status written by
    // hand or by an older version can.)
    let p = policy(|s| {
        s["remediation"]["maxRestartsPerHour"] = 1000.into();
        s["remediation"]["cooldown"] = "720h".into();
    });
    let records: Vec<RemediationRecord> = (0..60).map(|i| fat_record(i, 7200 + i as i64 * 60)).collect();
    let before = PoolPolicyStatus {
        remediations: records,
        ..Default::default()
    };
    let workloads = fleet(&p, 100, 3, 0, 0);
    let plan = plan(&p, &before, &workloads);
    assert!(bytes(&plan.status) <= BOUND, "status is {} bytes", bytes(&plan.status));
    assert!(plan.remediations.is_empty(), "{:?}", plan.remediations);
    assert!(
        plan.skipped.iter().any(|s| s.why == SkipReason::NoRoomForRecord),
        "{:?}",
        plan.skipped.iter().map(|s| s.why).collect::<Vec<_>>()
    );
}

#[test]
fn condition_messages_are_bounded_however_many_workloads_they_name() {
    let p = policy(|_| {});
    let workloads = fleet(&p, 10, 0, 0, 0);
    let elsewhere: Vec<decide::GovernedElsewhere> = (0..5_000)
        .map(|i| decide::GovernedElsewhere {
            kind: decide::Kind::Deployment,
            workload: format!("other-{i:05}"),
            policy: "older".into(),
        })
        .collect();
    let status = decide::plan(&PlanInput {
        policy: &p,
        generation: 1,
        policy_paused: false,
        status: &PoolPolicyStatus::default(),
        workloads: &workloads,
        database: Measured::Known(DatabaseLimits {
            max_connections: 1_000_000,
            reserved: 3,
            pooler: None,
        }),
        conflicts: &[],
        database_full: None,
        env_all_or_nothing: true,
        other_remediations: &[],
        governed_elsewhere: &elsewhere,
        sizing: Default::default(),
        budget: None,
        now: at(0),
    })
    .status;
    assert!(bytes(&status) <= BOUND, "status is {} bytes", bytes(&status));
    let conflict = status.conditions.iter().find(|c| c.type_ == "Conflict").unwrap();
    assert!(conflict.message.len() <= 1024, "{} bytes", conflict.message.len());
    assert!(conflict.message.contains("other-00000"), "{}", conflict.message);
    let shown = conflict.message.matches("is governed by").count();
    assert!(
        conflict.message.ends_with(&format!("; (and {} more)", 5_000 - shown)),
        "{}",
        conflict.message
    );
}

fn names(status: &PoolPolicyStatus) -> Vec<String> {
    status.workloads.iter().map(|w| w.name.clone()).collect()
}

#[test]
fn the_records_room_holds_45_compacted_records_with_the_longest_names() {
    // docs/decisions.md gives this figure.
    let records: Vec<RemediationRecord> = (0..45).map(|i| fat_record(i, 60 + i as i64)).collect();
    let kept = decide::summary::compact_records(records, jiff::SignedDuration::from_hours(720), at(0));
    assert_eq!(kept.len(), 45);
    let size = serde_json::to_vec(&kept).unwrap().len();
    assert!(size <= decide::summary::RECORDS_BYTES, "{size} bytes");
}
