//! The decision core, scenario by scenario (docs/decisions.md lists them for users),
//! and its invariants as properties.

use std::time::Duration;

use jiff::Timestamp;
use poolwarden::{
    decide::{
        self, Container, DatabaseLimits, EnvConflict, EnvValue, Instance, PlanInput, PoolerLimits, SkipReason, Workload,
    },
    observation::{DatabaseFull, LastSeen, Measured, PodConnections, PodSample},
    platform::report,
    policy::{
        ConnectionCounts, Measure, PoolPolicyStatus, RemediationAction, RemediationRecord, RemediationState,
        ResolvedPolicy, validate,
    },
};
use proptest::{prelude::*, strategy::ValueTree};

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn at(secs_ago: i64) -> Timestamp {
    Timestamp::from_second(NOW - secs_ago).unwrap()
}

/// The seeds' policy: min 0, max 20, idle 60 s, lifetime 600 s, LifetimeOverrun > 2
/// for 10 minutes, RestartPod, cooldown 1 h, 2 restarts per hour.
fn policy(edit: impl FnOnce(&mut serde_json::Value)) -> ResolvedPolicy {
    let mut spec = serde_json::json!({
        "selector": {"matchLabels": {"app.kubernetes.io/part-of": "sportsbook"}},
        "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        "pool": {"minSize": 0, "maxSize": 20, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600},
        "discrepancy": {"measure": "LifetimeOverrun", "max": 2, "sustainedFor": "10m", "grace": "60s"},
        "remediation": {"action": "RestartPod", "cooldown": "1h", "maxRestartsPerHour": 2, "minAvailableReplicas": 1},
    });
    edit(&mut spec);
    validate(&serde_json::from_value(spec).unwrap()).unwrap()
}

fn sample(secs_ago: i64, lifetime_overrun: Option<u32>) -> PodSample {
    PodSample {
        at: at(secs_ago),
        database: match lifetime_overrun {
            Some(n) => Measured::Known(PodConnections {
                counts: ConnectionCounts {
                    total: n + 1,
                    idle: n + 1,
                    ..Default::default()
                },
                overrun: n,
                measure: Some(Measure::LifetimeOverrun),
                ..Default::default()
            }),
            None => Measured::Unknown("database down".into()),
        },
        pool: None,
    }
}

/// Samples every 30 s over the last `minutes`, all with the same overrun.
fn steady(minutes: i64, overrun: u32) -> Vec<PodSample> {
    (0..=minutes * 2).map(|i| sample(i * 30, Some(overrun))).collect()
}

fn pod(name: &str, samples: Vec<PodSample>) -> Instance {
    Instance {
        name: name.into(),
        ready: true,
        started_at: Some(at(3 * 3600)),
        samples,
    }
}

fn in_sync_env(p: &ResolvedPolicy) -> Container {
    Container {
        name: "app".into(),
        env: decide::env::desired_env(p).into_iter().collect(),
    }
}

fn workload(p: &ResolvedPolicy, name: &str, pods: Vec<Instance>) -> Workload {
    Workload {
        kind: decide::Kind::Deployment,
        name: name.into(),
        replicas: pods.len() as u32,
        ready_replicas: pods.iter().filter(|i| i.ready).count() as u32,
        max_surge: 1,
        containers: vec![in_sync_env(p)],
        instances: pods,
        ..Default::default()
    }
}

/// Workload `web`: `web-0` with the given samples, `web-1` healthy for 15 minutes.
fn web_with_one_pod(samples: Vec<PodSample>) -> [Workload; 1] {
    let p = policy(|_| {});
    [workload(
        &p,
        "web",
        vec![pod("web-0", samples), pod("web-1", steady(15, 0))],
    )]
}

fn run(p: &ResolvedPolicy, status: &PoolPolicyStatus, workloads: &[Workload]) -> decide::Plan {
    run_at(p, status, workloads, now())
}

/// [`run`] at another time than [`now`].
fn run_at(p: &ResolvedPolicy, status: &PoolPolicyStatus, workloads: &[Workload], at: Timestamp) -> decide::Plan {
    let limits = Measured::Known(DatabaseLimits {
        max_connections: 100,
        reserved: 3,
        pooler: None,
    });
    plan_with(p, status, workloads, limits, &[], at)
}

fn run_with(
    p: &ResolvedPolicy,
    status: &PoolPolicyStatus,
    workloads: &[Workload],
    database: Measured<DatabaseLimits>,
    conflicts: &[EnvConflict],
) -> decide::Plan {
    plan_with(p, status, workloads, database, conflicts, now())
}

fn plan_with(
    p: &ResolvedPolicy,
    status: &PoolPolicyStatus,
    workloads: &[Workload],
    database: Measured<DatabaseLimits>,
    conflicts: &[EnvConflict],
    at: Timestamp,
) -> decide::Plan {
    decide::plan(&PlanInput {
        policy: p,
        generation: 1,
        policy_paused: false,
        status,
        workloads,
        database,
        database_full: None,
        conflicts,
        env_all_or_nothing: true,
        other_remediations: &[],
        governed_elsewhere: &[],
        sizing: Default::default(),
        budget: None,
        now: at,
    })
}

/// The seeds' three workloads; `worker-odds-1` keeps a second, untracked pool of 15
/// connections that never recycle (LifetimeOverrun 15), the rest are healthy.
fn seeds(p: &ResolvedPolicy, leak_minutes: i64) -> Vec<Workload> {
    let healthy = |n: &str| pod(n, steady(15, 0));
    vec![
        workload(p, "web", vec![healthy("web-0"), healthy("web-1")]),
        workload(
            p,
            "worker-odds",
            vec![
                pod("worker-odds-0", steady(15, 0)),
                pod("worker-odds-1", {
                    let mut s = steady(15, 0);
                    for x in s.iter_mut().filter(|x| x.at >= at(leak_minutes * 60)) {
                        *x = sample(now().duration_since(x.at).as_secs(), Some(15));
                    }
                    s
                }),
            ],
        ),
        workload(
            p,
            "worker-settlement",
            vec![healthy("worker-settlement-0"), healthy("worker-settlement-1")],
        ),
    ]
}

#[test]
fn seeds_story_untracked_pool_is_reported_before_the_window_and_restarted_after_it() {
    let p = policy(|_| {});
    let status = PoolPolicyStatus::default();

    // Step 1: five minutes into the leak the pod is exceeding but not yet leaking.
    let plan = run(&p, &status, &seeds(&p, 5));
    assert!(plan.remediations.is_empty());
    let odds = plan.status.workloads.iter().find(|w| w.name == "worker-odds").unwrap();
    assert_eq!(odds.exceeding.len(), 1);
    assert_eq!(odds.exceeding[0].pod, "worker-odds-1");
    assert_eq!(odds.exceeding[0].value, 15);
    assert_eq!(plan.status.leaking_pods, 0);

    // Step 2: twelve minutes in, exactly that pod is restarted, with its evidence.
    let plan = run(&p, &status, &seeds(&p, 12));
    assert_eq!(plan.remediations.len(), 1);
    let record = &plan.remediations[0].record;
    assert_eq!(record.pod.as_deref(), Some("worker-odds-1"));
    assert_eq!(record.action, RemediationAction::RestartPod);
    assert_eq!((record.measure, record.limit), (Measure::LifetimeOverrun, 2));
    assert!(
        record.values.len() >= 20 && record.values.iter().all(|v| *v == 15),
        "{:?}",
        record.values
    );
    assert_eq!(plan.status.leaking_pods, 1);
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == "Remediating" && e.message.contains("worker-odds-1"))
    );

    // Step 3: the next pass, with that restart in status while the pod still runs, does not restart it again.
    let plan2 = run(&p, &plan.status, &seeds(&p, 12));
    assert!(plan2.remediations.is_empty());
    assert_eq!(plan2.skipped[0].why, SkipReason::InFlight);

    // Step 4: the pod was replaced and the new one is healthy: nothing to do, history kept.
    let mut replaced = seeds(&p, 0);
    replaced[1].instances[1] = Instance {
        name: "worker-odds-2".into(),
        ..pod("worker-odds-2", steady(15, 0))
    };
    let plan3 = run(&p, &plan.status, &replaced);
    assert!(plan3.remediations.is_empty() && plan3.skipped.is_empty());
    assert_eq!(plan3.status.remediations.len(), 1);
}

#[test]
fn restart_is_skipped_when_any_sample_in_window_is_unknown() {
    let p = policy(|_| {});
    let mut samples = steady(15, 5);
    samples[8] = sample(8 * 30, None); // four minutes ago, inside the 10-minute window
    let plan = run(&p, &PoolPolicyStatus::default(), &web_with_one_pod(samples));
    assert!(plan.remediations.is_empty());
    assert!(matches!(
        plan.workloads[0].verdicts["web-0"],
        decide::Verdict::Exceeding { .. }
    ));
}

#[test]
fn a_sample_at_the_limit_resets_the_window() {
    let p = policy(|_| {});
    let mut samples = steady(15, 5);
    samples[4] = sample(4 * 30, Some(2)); // exactly max, two minutes ago
    let plan = run(&p, &PoolPolicyStatus::default(), &web_with_one_pod(samples));
    assert!(plan.remediations.is_empty());
}

#[test]
fn an_unknown_newest_sample_makes_the_verdict_unknown_and_database_down_is_reported() {
    let p = policy(|_| {});
    let mut samples = steady(15, 5);
    samples[0] = sample(0, None);
    let w = [workload(
        &p,
        "web",
        vec![pod("web-0", samples), pod("web-1", steady(15, 0))],
    )];
    let plan = run_with(
        &p,
        &PoolPolicyStatus::default(),
        &w,
        Measured::Unknown("connection refused".into()),
        &[],
    );
    assert!(plan.remediations.is_empty());
    assert!(matches!(
        plan.workloads[0].verdicts["web-0"],
        decide::Verdict::Unknown(_)
    ));
    let reachable = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "DatabaseReachable")
        .unwrap();
    assert_eq!(
        (reachable.status.as_str(), reachable.message.as_str()),
        ("False", "connection refused")
    );
    assert_eq!(plan.status.workloads[0].connections, None, "missing data is never zero");
}

/// Rule 8: a database that refuses the sampler because it is full is reported as
/// such, with the figures last seen, once as an Event; its samples are unknown, so a
/// leak seen before the refusal is not acted on.
#[test]
fn a_full_database_is_reported_as_such_and_restarts_nothing() {
    let p = policy(|_| {});
    // Leaking for 15 minutes, then the newest sample unknown: the database refused.
    let mut samples = steady(15, 5);
    samples[0] = sample(0, None);
    let w = [workload(&p, "web", vec![pod("web-0", samples)])];
    let full = DatabaseFull {
        refusal: "mon@db:5432/app: the database is full, it refuses new connections: 53300: remaining connection \
                  slots are reserved for roles with the SUPERUSER attribute"
            .into(),
        last_seen: Some(LastSeen {
            at: at(30),
            max_connections: 20,
            reserved: 3,
            client_backends: 18,
        }),
    };
    let input = |status| PlanInput {
        policy: &p,
        generation: 1,
        policy_paused: false,
        status,
        workloads: &w,
        database: Measured::Unknown(full.refusal.clone()),
        database_full: Some(&full),
        conflicts: &[],
        env_all_or_nothing: true,
        other_remediations: &[],
        governed_elsewhere: &[],
        sizing: Default::default(),
        budget: None,
        now: now(),
    };
    let empty = PoolPolicyStatus::default();
    let plan = decide::plan(&input(&empty));
    assert!(plan.remediations.is_empty(), "{:?}", plan.remediations);
    let condition = |plan: &decide::Plan, type_: &str| {
        let c = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .clone();
        (c.status, c.reason, c.message)
    };
    let (status, reason, message) = condition(&plan, "DatabaseReachable");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "DatabaseFull"));
    assert!(
        message.starts_with(&full.refusal)
            && message.contains(
                "last seen at 2027-01-15T07:59:30Z: 18 client connections, max_connections 20 of which 3 reserved"
            ),
        "{message}"
    );
    assert_eq!(
        condition(&plan, "Degraded").1,
        "DatabaseFull",
        "Degraded says full, not unreachable"
    );
    let events: Vec<_> = plan.events.iter().filter(|e| e.reason == "DatabaseFull").collect();
    assert_eq!(events.len(), 1, "{:?}", plan.events);
    assert!(events[0].warning && events[0].message == message);
    // The next pass, still full: the condition stays, the Event is not repeated.
    let again = decide::plan(&input(&plan.status));
    assert!(again.remediations.is_empty());
    assert!(
        again.events.iter().all(|e| e.reason != "DatabaseFull"),
        "{:?}",
        again.events
    );
    assert_eq!(condition(&again, "DatabaseReachable").1, "DatabaseFull");
}

#[test]
fn a_pod_younger_than_the_window_plus_grace_is_not_judged() {
    let p = policy(|_| {});
    let young = Instance {
        started_at: Some(at(10 * 60 + 30)),
        ..pod("web-0", steady(10, 5))
    };
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[workload(&p, "web", vec![young, pod("web-1", steady(15, 0))])],
    );
    assert!(plan.remediations.is_empty());
}

#[test]
fn hourly_budget_restarts_the_worst_offenders_and_reports_the_rest() {
    let p = policy(|_| {});
    let ws: Vec<Workload> = (0..4)
        .map(|i| {
            workload(
                &p,
                &format!("w{i}"),
                vec![
                    pod(&format!("w{i}-0"), steady(15, 3 + i)),
                    pod(&format!("w{i}-1"), steady(15, 0)),
                ],
            )
        })
        .collect();
    let plan = run(&p, &PoolPolicyStatus::default(), &ws);
    let restarted: Vec<_> = plan
        .remediations
        .iter()
        .map(|r| r.record.pod.clone().unwrap())
        .collect();
    assert_eq!(restarted, ["w3-0", "w2-0"]);
    assert_eq!(
        plan.skipped
            .iter()
            .filter(|s| s.why == SkipReason::HourlyBudget)
            .count(),
        2
    );
}

/// An old status whose recorded times cannot be read (edited by hand): the records
/// are kept, and count against the budget and the cooldown as if they were recent.
#[test]
fn records_whose_time_cannot_be_read_are_kept_and_count_as_recent() {
    let p = policy(|_| {});
    let unreadable = |w: &str| {
        serde_json::json!({
            "at": "last tuesday", "state": "Done", "action": "RestartPod",
            "kind": "Deployment", "workload": w, "pod": format!("{w}-gone"),
            "reason": "earlier", "measure": "LifetimeOverrun", "values": [5],
            "limit": 2, "since": "before that",
        })
    };
    let status: PoolPolicyStatus =
        serde_json::from_value(serde_json::json!({ "remediations": [unreadable("a"), unreadable("b")] }))
            .expect("an unreadable time does not fail the status");
    let leaking = || {
        [workload(
            &p,
            "c",
            vec![pod("c-0", steady(15, 9)), pod("c-1", steady(15, 0))],
        )]
    };
    let plan = run(&p, &status, &leaking());
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::HourlyBudget);
    let kept: Vec<&str> = plan.status.remediations.iter().map(|r| r.workload.as_str()).collect();
    assert_eq!(kept, ["a", "b"]);

    let own: PoolPolicyStatus =
        serde_json::from_value(serde_json::json!({ "remediations": [unreadable("c")] })).expect("status");
    let plan = run(&p, &own, &leaking());
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::Cooldown);
}

#[test]
fn budget_counts_history_from_status_so_it_survives_a_controller_restart() {
    let p = policy(|_| {});
    let record = |w: &str, secs_ago| RemediationRecord {
        at: at(secs_ago),
        state: RemediationState::Done,
        action: RemediationAction::RestartPod,
        kind: "Deployment".into(),
        workload: w.into(),
        pod: Some(format!("{w}-gone")),
        reason: "earlier".into(),
        measure: Measure::LifetimeOverrun,
        values: vec![5],
        limit: 2,
        since: at(secs_ago + 600),
        ..Default::default()
    };
    let status = PoolPolicyStatus {
        remediations: vec![record("a", 1200), record("b", 2400)],
        ..Default::default()
    };
    let plan = run(
        &p,
        &status,
        &[workload(
            &p,
            "c",
            vec![pod("c-0", steady(15, 9)), pod("c-1", steady(15, 0))],
        )],
    );
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::HourlyBudget);
}

#[test]
fn cooldown_blocks_a_second_remediation_of_the_same_workload() {
    let p = policy(|_| {});
    let status = PoolPolicyStatus {
        remediations: vec![RemediationRecord {
            at: at(1800),
            state: RemediationState::Done,
            action: RemediationAction::RestartPod,
            kind: "Deployment".into(),
            workload: "web".into(),
            pod: Some("web-old".into()),
            reason: "earlier".into(),
            measure: Measure::LifetimeOverrun,
            values: vec![5],
            limit: 2,
            since: at(2400),
            ..Default::default()
        }],
        ..Default::default()
    };
    let plan = run(&p, &status, &web_with_one_pod(steady(15, 9)));
    assert_eq!(plan.skipped[0].why, SkipReason::Cooldown);
}

#[test]
fn restart_never_takes_a_workload_below_min_available() {
    let p = policy(|_| {});
    let mut w = workload(
        &p,
        "web",
        vec![
            pod("web-0", steady(15, 9)),
            Instance {
                ready: false,
                ..pod("web-1", steady(15, 0))
            },
        ],
    );
    w.ready_replicas = 1;
    let plan = run(&p, &PoolPolicyStatus::default(), &[w]);
    assert_eq!(plan.skipped[0].why, SkipReason::TooFewAvailable);
}

#[test]
fn nothing_is_restarted_while_a_rollout_progresses() {
    let p = policy(|_| {});
    let mut w = workload(
        &p,
        "web",
        vec![pod("web-0", steady(15, 9)), pod("web-1", steady(15, 0))],
    );
    w.rollout_in_progress = true;
    assert_eq!(
        run(&p, &PoolPolicyStatus::default(), &[w]).skipped[0].why,
        SkipReason::RolloutInProgress
    );
}

#[test]
fn a_pending_env_change_suppresses_the_restart_of_that_workload() {
    let p = policy(|_| {});
    let mut w = workload(
        &p,
        "web",
        vec![pod("web-0", steady(15, 9)), pod("web-1", steady(15, 0))],
    );
    w.containers[0]
        .env
        .insert("DB_POOL_MAX".into(), EnvValue::Literal("50".into()));
    let plan = run(&p, &PoolPolicyStatus::default(), &[w]);
    assert_eq!(plan.env.len(), 1);
    assert_eq!(
        plan.env[0].containers["app"]["DB_POOL_MAX"],
        EnvValue::Literal("20".into())
    );
    assert_eq!(plan.skipped[0].why, SkipReason::EnvChangePending);
}

#[test]
fn env_touches_only_owned_entries_and_sets_pgappname_from_the_pod_name() {
    let p = policy(|_| {});
    let mut w = workload(&p, "web", vec![]);
    w.containers[0].env.clear();
    w.containers[0]
        .env
        .insert("OTHER".into(), EnvValue::Literal("x".into()));
    let plan = run(&p, &PoolPolicyStatus::default(), &[w]);
    let env = &plan.env[0].containers["app"];
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "DB_POOL_MAX",
            "DB_POOL_MAX_IDLE",
            "DB_POOL_MAX_LIFETIME",
            "DB_POOL_MIN",
            "PGAPPNAME"
        ]
    );
    assert_eq!(env["PGAPPNAME"], EnvValue::InstanceName);
}

/// The plan is the whole instruction: a change carries every entry poolwarden owns
/// (what a server-side apply must send), not only the one that differs.
#[test]
fn an_env_change_carries_every_owned_entry_not_only_the_differing_one() {
    let p = policy(|_| {});
    let mut in_sync = workload(&p, "web", vec![]);
    let plan = run(&p, &PoolPolicyStatus::default(), std::slice::from_ref(&in_sync));
    assert!(plan.env.is_empty(), "{:?}", plan.env);
    in_sync.containers[0]
        .env
        .insert("DB_POOL_MAX".into(), EnvValue::Literal("999".into()));
    let plan = run(&p, &PoolPolicyStatus::default(), &[in_sync]);
    let change = &plan.env[0];
    let differing: Vec<&str> = change.containers["app"].keys().map(String::as_str).collect();
    assert_eq!(differing, ["DB_POOL_MAX"]);
    let owned: Vec<&str> = change.owned["app"].keys().map(String::as_str).collect();
    assert_eq!(
        owned,
        [
            "DB_POOL_MAX",
            "DB_POOL_MAX_IDLE",
            "DB_POOL_MAX_LIFETIME",
            "DB_POOL_MIN",
            "PGAPPNAME"
        ]
    );
    assert_ne!(change.owned["app"]["DB_POOL_MAX"], EnvValue::Literal("999".into()));
}

#[test]
fn an_entry_owned_by_another_manager_is_left_alone_and_reported() {
    let p = policy(|_| {});
    let mut w = workload(&p, "web", vec![]);
    w.containers[0]
        .env
        .insert("DB_POOL_MAX".into(), EnvValue::Literal("50".into()));
    let conflicts = [EnvConflict {
        workload: "web".into(),
        container: "app".into(),
        env: "DB_POOL_MAX".into(),
        manager: "argocd-controller".into(),
    }];
    let plan = run_with(
        &p,
        &PoolPolicyStatus::default(),
        &[w],
        Measured::Known(DatabaseLimits {
            max_connections: 100,
            reserved: 3,
            pooler: None,
        }),
        &conflicts,
    );
    assert!(plan.env.is_empty());
    let c = plan.status.conditions.iter().find(|c| c.type_ == "Conflict").unwrap();
    assert_eq!(c.status, "True");
    assert!(c.message.contains("argocd-controller"));
}

#[test]
fn action_none_dry_run_and_pause_make_no_writes() {
    for (edit, why) in [
        (
            Box::new(|s: &mut serde_json::Value| s["remediation"]["action"] = "None".into())
                as Box<dyn Fn(&mut serde_json::Value)>,
            SkipReason::ObserveOnly,
        ),
        (
            Box::new(|s: &mut serde_json::Value| s["remediation"]["dryRun"] = true.into()),
            SkipReason::DryRun,
        ),
    ] {
        let p = policy(edit);
        let plan = run(&p, &PoolPolicyStatus::default(), &web_with_one_pod(steady(15, 9)));
        assert!(plan.remediations.is_empty());
        assert_eq!(plan.skipped[0].why, why);
    }
    let p = policy(|_| {});
    let mut w = workload(
        &p,
        "web",
        vec![pod("web-0", steady(15, 9)), pod("web-1", steady(15, 0))],
    );
    w.paused = true;
    w.containers[0].env.clear();
    let plan = run(&p, &PoolPolicyStatus::default(), &[w]);
    assert!(plan.remediations.is_empty() && plan.env.is_empty());
    assert_eq!(plan.env_skipped[0].1, SkipReason::Paused);
    assert_eq!(plan.skipped[0].why, SkipReason::Paused);
}

#[test]
fn over_the_connection_budget_is_a_condition_not_a_restart() {
    let p = policy(|_| {});
    let ws: Vec<Workload> = (0..3)
        .map(|i| {
            workload(
                &p,
                &format!("w{i}"),
                vec![
                    pod(&format!("w{i}-0"), steady(15, 0)),
                    pod(&format!("w{i}-1"), steady(15, 0)),
                ],
            )
        })
        .collect();
    // 3 workloads × (2 replicas + 1 surge) × maxSize 20 = 180 > 100 - 3.
    let plan = run(&p, &PoolPolicyStatus::default(), &ws);
    let c = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "BudgetExceeded")
        .unwrap();
    assert_eq!(c.status, "True");
    assert!(c.message.contains("180") && c.message.contains("97"), "{}", c.message);
    assert!(plan.remediations.is_empty());
}

#[test]
fn behind_a_pooler_the_budget_is_client_connections_against_max_client_conn_and_pooler_servers_against_max_connections()
{
    let p = policy(|_| {});
    let ws: Vec<Workload> = (0..3)
        .map(|i| {
            workload(
                &p,
                &format!("w{i}"),
                vec![
                    pod(&format!("w{i}-0"), steady(15, 0)),
                    pod(&format!("w{i}-1"), steady(15, 0)),
                ],
            )
        })
        .collect();
    let budget = |max_client_conn, server_connections| {
        let plan = run_with(
            &p,
            &PoolPolicyStatus::default(),
            &ws,
            Measured::Known(DatabaseLimits {
                max_connections: 100,
                reserved: 3,
                pooler: Some(PoolerLimits {
                    instances: 2,
                    max_client_conn,
                    server_connections,
                }),
            }),
            &[],
        );
        let c = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "BudgetExceeded")
            .cloned()
            .unwrap();
        (c.status, c.message)
    };
    // 180 client connections are what a pooler is for: within 2 × 100, and the
    // pooler's 2 × 40 server connections fit in 97 (the tighter of the two).
    assert_eq!(
        budget(200, 80),
        (
            "False".to_owned(),
            "pools on the policy's database need 80 connections (server pools of pooler PgBouncer \
             (default_pool_size × pools × instances) 80), within max_connections 100 - 3 reserved = 97"
                .to_owned()
        )
    );
    let (status, message) = budget(150, 80);
    assert_eq!(status, "True");
    assert_eq!(
        message,
        "pools through pooler PgBouncer on the policy's database need 180 connections (Deployment/w0 (this \
         policy): (2 replicas + 1 surge) × maxSize 20 = 60, Deployment/w1 (this policy): (2 replicas + 1 surge) × \
         maxSize 20 = 60, Deployment/w2 (this policy): (2 replicas + 1 surge) × maxSize 20 = 60), exceeds \
         max_client_conn over 2 instance(s) = 150"
    );
    let (status, message) = budget(200, 120);
    assert_eq!(status, "True");
    assert_eq!(
        message,
        "pools on the policy's database need 120 connections (server pools of pooler PgBouncer \
         (default_pool_size × pools × instances) 120), exceeds max_connections 100 - 3 reserved = 97"
    );
}

#[test]
fn an_unchanged_world_yields_an_unchanged_status() {
    let p = policy(|_| {});
    let ws = seeds(&p, 0);
    let first = run(&p, &PoolPolicyStatus::default(), &ws);
    assert!(first.status_changed);
    let second = run(&p, &first.status, &ws);
    assert!(!second.status_changed);
    assert_eq!(second.status, first.status);
}

// ------------------------------------------- User attribution: the workload as a whole

/// The seeds' policy with one database role per workload, remediated by rollout restart.
fn by_role(edit: impl FnOnce(&mut serde_json::Value)) -> ResolvedPolicy {
    policy(|s| {
        s["database"]["attribution"] = "User".into();
        s["remediation"]["action"] = "RolloutRestart".into();
        edit(s);
    })
}

/// A workload of `pods` ready pods whose role's backends gave `samples`; the pods
/// themselves have none, since a role cannot tell them apart.
fn role_workload(p: &ResolvedPolicy, name: &str, pods: usize, samples: Vec<PodSample>) -> Workload {
    let instances = (0..pods).map(|i| pod(&format!("{name}-{i}"), vec![])).collect();
    Workload {
        workload_samples: Some(samples),
        ..workload(p, name, instances)
    }
}

fn rollout(name: &str, secs_ago: i64) -> RemediationRecord {
    RemediationRecord {
        at: at(secs_ago),
        state: RemediationState::Done,
        action: RemediationAction::RolloutRestart,
        kind: "Deployment".into(),
        workload: name.into(),
        pod: None,
        reason: "earlier".into(),
        measure: Measure::LifetimeOverrun,
        values: vec![9],
        limit: 6,
        since: at(secs_ago + 600),
        ..Default::default()
    }
}

#[test]
fn user_attribution_a_workload_above_max_times_ready_for_sustained_for_gets_a_rollout_restart() {
    let p = by_role(|_| {});
    // 3 ready pods × max 2 = 6; the role holds 7 overrunning backends for 15 minutes.
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[role_workload(&p, "web", 3, steady(15, 7))],
    );
    assert_eq!(plan.remediations.len(), 1, "{:?}", plan.skipped);
    let record = &plan.remediations[0].record;
    assert_eq!(record.action, RemediationAction::RolloutRestart);
    assert_eq!((record.workload.as_str(), record.pod.as_deref()), ("web", None));
    assert_eq!(record.limit, 6);
    assert!(record.values.len() >= 20 && record.values.iter().all(|v| *v == 7));
    assert!(
        record
            .reason
            .contains("LifetimeOverrun 7 > 6 (2 per pod × 3 ready pods)"),
        "{}",
        record.reason
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == "Remediating" && e.message.starts_with("restarting web:"))
    );
    assert!(matches!(
        plan.workloads[0].verdicts["web"],
        decide::Verdict::Leaking { value: 7, .. }
    ));
    // Status: the workload's own connections by state, its limit, itself as the exceeding one.
    let row = &plan.status.workloads[0];
    assert_eq!(
        row.connections,
        Some(ConnectionCounts {
            total: 8,
            idle: 8,
            ..Default::default()
        })
    );
    assert_eq!((row.pods, row.limit, row.worst_value), (3, Some(6), Some(7)));
    assert_eq!(row.exceeding.len(), 1);
    assert_eq!((row.exceeding[0].pod.as_str(), row.exceeding[0].value), ("web", 7));
    assert_eq!(plan.status.leaking_pods, 1);
}

#[test]
fn user_attribution_the_limit_is_max_per_ready_pod() {
    let p = by_role(|_| {});
    // At max × ready: within.
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[role_workload(&p, "web", 3, steady(15, 6))],
    );
    assert_eq!(plan.workloads[0].verdicts["web"], decide::Verdict::Within { value: 6 });
    assert!(plan.remediations.is_empty() && plan.skipped.is_empty());
    // One of the three pods not ready: the limit is 4, and 5 is a leak.
    let mut w = role_workload(&p, "web", 3, steady(15, 5));
    w.instances[2].ready = false;
    w.ready_replicas = 2;
    let plan = run(&p, &PoolPolicyStatus::default(), &[w]);
    assert_eq!(plan.remediations.len(), 1);
    assert_eq!(plan.remediations[0].record.limit, 4);
    assert_eq!(plan.status.workloads[0].limit, Some(4));
}

#[test]
fn user_attribution_an_unknown_sample_in_the_window_blocks_the_rollout() {
    let p = by_role(|_| {});
    let mut samples = steady(15, 9);
    samples[8] = sample(8 * 30, None);
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[role_workload(&p, "web", 3, samples)],
    );
    assert!(plan.remediations.is_empty() && plan.skipped.is_empty());
    assert!(matches!(
        plan.workloads[0].verdicts["web"],
        decide::Verdict::Exceeding { value: 9, .. }
    ));

    // Unknown now: the verdict is unknown and the connections are not shown as zero.
    let mut samples = steady(15, 9);
    samples[0] = sample(0, None);
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[role_workload(&p, "web", 3, samples)],
    );
    assert!(plan.remediations.is_empty());
    let row = &plan.status.workloads[0];
    assert_eq!(row.connections, None);
    assert_eq!(row.worst_value, None);
    assert_eq!(row.message.as_deref(), Some("unknown: web: database: database down"));
}

#[test]
fn user_attribution_a_shared_role_is_unknown_and_never_restarted() {
    let p = by_role(|_| {});
    // What the controller hands in when two workloads log in as the same role.
    let shared = |secs_ago| PodSample {
        at: at(secs_ago),
        database: Measured::Unknown(r#"role "app" is shared by web, worker"#.into()),
        pool: None,
    };
    let samples: Vec<PodSample> = (0..=30).map(|i| shared(i * 30)).collect();
    let ws = [
        role_workload(&p, "web", 2, samples.clone()),
        role_workload(&p, "worker", 2, samples),
    ];
    let plan = run(&p, &PoolPolicyStatus::default(), &ws);
    assert!(plan.remediations.is_empty() && plan.skipped.is_empty());
    for row in &plan.status.workloads {
        assert_eq!(row.connections, None);
        assert!(row.message.as_deref().unwrap().contains("shared by web, worker"));
    }
}

#[test]
fn user_attribution_cooldown_budget_and_rollouts_still_apply() {
    let p = by_role(|_| {});
    let leaking = || [role_workload(&p, "web", 3, steady(15, 9))];

    let cooling = PoolPolicyStatus {
        remediations: vec![rollout("web", 1800)],
        ..Default::default()
    };
    let plan = run(&p, &cooling, &leaking());
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::Cooldown);
    assert_eq!(plan.skipped[0].record.pod, None);

    let spent = PoolPolicyStatus {
        remediations: vec![rollout("a", 1200), rollout("b", 2400)],
        ..Default::default()
    };
    assert_eq!(run(&p, &spent, &leaking()).skipped[0].why, SkipReason::HourlyBudget);

    let mut rolling = leaking();
    rolling[0].rollout_in_progress = true;
    assert_eq!(
        run(&p, &PoolPolicyStatus::default(), &rolling).skipped[0].why,
        SkipReason::RolloutInProgress
    );

    // Two leaking workloads, budget 2, cooldown over: both rolled, worst first.
    let ws = [
        role_workload(&p, "web", 3, steady(15, 9)),
        role_workload(&p, "worker", 2, steady(15, 30)),
    ];
    let old = PoolPolicyStatus {
        remediations: vec![rollout("web", 2 * 3600)],
        ..Default::default()
    };
    let plan = run(&p, &old, &ws);
    let rolled: Vec<&str> = plan.remediations.iter().map(|r| r.record.workload.as_str()).collect();
    assert_eq!(rolled, ["worker", "web"]);
}

#[test]
fn user_attribution_observe_only_and_dry_run_report_the_rollout_they_would_make() {
    for (p, why) in [
        (
            by_role(|s| s["remediation"]["action"] = "None".into()),
            SkipReason::ObserveOnly,
        ),
        (
            by_role(|s| s["remediation"]["dryRun"] = true.into()),
            SkipReason::DryRun,
        ),
    ] {
        let plan = run(
            &p,
            &PoolPolicyStatus::default(),
            &[role_workload(&p, "web", 3, steady(15, 9))],
        );
        assert!(plan.remediations.is_empty());
        assert_eq!(plan.skipped[0].why, why);
        assert_eq!(plan.skipped[0].record.action, RemediationAction::RolloutRestart);
        assert_eq!(plan.skipped[0].record.pod, None);
    }
}

#[test]
fn user_attribution_never_restarts_a_guessed_pod() {
    // Validation refuses User with RestartPod; a policy built around it is still refused here.
    let mut p = by_role(|_| {});
    p.remediation.action = RemediationAction::RestartPod;
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[role_workload(&p, "web", 3, steady(15, 9))],
    );
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::PodsIndistinguishable);
    assert!(plan.skipped[0].detail.contains("use RolloutRestart or None"));
}

#[test]
fn user_attribution_waits_until_every_pod_is_older_than_the_window_and_one_is_ready() {
    let p = by_role(|_| {});
    let mut young = role_workload(&p, "web", 3, steady(15, 9));
    young.instances[1].started_at = Some(at(10 * 60 + 30));
    let plan = run(&p, &PoolPolicyStatus::default(), &[young]);
    assert!(plan.remediations.is_empty() && plan.skipped.is_empty());
    match &plan.workloads[0].verdicts["web"] {
        decide::Verdict::Exceeding { reason, .. } => assert!(reason.contains("younger"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let mut none_ready = role_workload(&p, "web", 2, steady(15, 9));
    for i in &mut none_ready.instances {
        i.ready = false;
    }
    none_ready.ready_replicas = 0;
    let plan = run(&p, &PoolPolicyStatus::default(), &[none_ready]);
    assert!(plan.remediations.is_empty() && plan.skipped.is_empty());
    assert!(matches!(
        plan.workloads[0].verdicts["web"],
        decide::Verdict::Exceeding { .. }
    ));
}

#[test]
fn user_attribution_sets_no_pgappname_and_a_policy_with_rollout_restart_is_valid() {
    let p = by_role(|_| {});
    assert_eq!(p.remediation.action, RemediationAction::RolloutRestart);
    let env = decide::env::desired_env(&p);
    assert!(!env.contains_key("PGAPPNAME"), "{env:?}");
    // A container with every pool entry and no PGAPPNAME is in sync.
    let plan = run(
        &p,
        &PoolPolicyStatus::default(),
        &[role_workload(&p, "web", 2, steady(15, 0))],
    );
    assert!(plan.env.is_empty() && plan.env_skipped.is_empty());
    assert!(plan.status.workloads[0].env_in_sync);
}

// ---------------------------------------------------------------- properties

/// Newest first: a run of one high value (so leaks really happen), then anything.
fn arb_history() -> impl Strategy<Value = Vec<Option<u32>>> {
    (
        0usize..40,
        3u32..9,
        prop::collection::vec(prop_oneof![9 => (0u32..8).prop_map(Some), 1 => Just(None)], 1..30),
    )
        .prop_map(|(run, value, tail)| std::iter::repeat_n(Some(value), run).chain(tail).collect())
}

/// Per workload, per pod, a sample history (newest first; `None` is an unknown sample).
type Histories = Vec<Vec<Vec<Option<u32>>>>;

fn arb_world() -> impl Strategy<Value = (Histories, u32, bool, i64)> {
    (
        prop::collection::vec(prop::collection::vec(arb_history(), 1..4), 1..5),
        0u32..4,
        any::<bool>(),
        0i64..(30 * 60),
    )
}

fn world(histories: &[Vec<Vec<Option<u32>>>], p: &ResolvedPolicy, age: i64) -> Vec<Workload> {
    histories
        .iter()
        .enumerate()
        .map(|(wi, pods)| {
            let instances = pods
                .iter()
                .enumerate()
                .map(|(pi, h)| Instance {
                    started_at: Some(at(age + pi as i64 * 60)),
                    ..pod(
                        &format!("w{wi}-{pi}"),
                        h.iter().enumerate().map(|(i, v)| sample(i as i64 * 30, *v)).collect(),
                    )
                })
                .collect();
            workload(p, &format!("w{wi}"), instances)
        })
        .collect()
}

/// The same worlds with one role per workload: a workload's first history is its
/// role's, and it has one ready pod per history.
fn role_world(histories: &[Vec<Vec<Option<u32>>>], p: &ResolvedPolicy, age: i64) -> Vec<Workload> {
    world(histories, p, age)
        .into_iter()
        .zip(histories)
        .map(|(w, pods)| {
            let role = pods[0]
                .iter()
                .enumerate()
                .map(|(i, v)| sample(i as i64 * 30, *v))
                .collect();
            let instances = w
                .instances
                .into_iter()
                .map(|i| Instance { samples: vec![], ..i })
                .collect();
            Workload {
                workload_samples: Some(role),
                instances,
                ..w
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn user_attribution_rolls_only_workloads_above_max_times_ready_for_the_whole_window((h, _, _, age) in arb_world()) {
        let p = by_role(|s| s["remediation"]["maxRestartsPerHour"] = 50.into());
        let plan = run(&p, &PoolPolicyStatus::default(), &role_world(&h, &p, age));
        let window = p.discrepancy.as_ref().unwrap().sustained_for + p.discrepancy.as_ref().unwrap().grace;
        for r in &plan.remediations {
            prop_assert_eq!(r.record.action, RemediationAction::RolloutRestart);
            prop_assert_eq!(r.record.pod.as_deref(), None);
            let pods = &h[r.record.workload[1..].parse::<usize>().unwrap()];
            let limit = 2 * pods.len() as u32;
            prop_assert_eq!(r.record.limit, limit);
            prop_assert!(pods[0].iter().take(21).all(|v| v.is_some_and(|v| v > limit)), "{:?}", pods[0]);
            // Every pod is past the window; the youngest, pod 0, started `age` ago.
            prop_assert!(Duration::from_secs(age as u64) >= window);
        }
    }

    #[test]
    fn restarts_never_exceed_the_hourly_budget((h, budget, dry, age) in arb_world()) {
        let p = policy(|s| { s["remediation"]["maxRestartsPerHour"] = budget.max(1).into(); s["remediation"]["dryRun"] = dry.into(); });
        let plan = run(&p, &PoolPolicyStatus::default(), &world(&h, &p, age));
        prop_assert!(plan.remediations.len() as u32 <= budget.max(1));
        // Carried into the next pass, the budget still holds.
        let next = run(&p, &plan.status, &world(&h, &p, age));
        prop_assert!((plan.remediations.len() + next.remediations.len()) as u32 <= budget.max(1));
    }

    #[test]
    fn no_remediation_when_any_sample_in_the_window_is_unknown((h, _, _, age) in arb_world()) {
        let p = policy(|_| {});
        let plan = run(&p, &PoolPolicyStatus::default(), &world(&h, &p, age));
        for r in &plan.remediations {
            let name = r.record.pod.clone().unwrap();
            let (wi, pi) = name[1..].split_once('-').unwrap();
            let hist = &h[wi.parse::<usize>().unwrap()][pi.parse::<usize>().unwrap()];
            // Samples are 30 s apart, newest first: the 10-minute window is the first 21.
            prop_assert!(hist.iter().take(21).all(|v| v.is_some_and(|v| v > 2)), "{name}: {hist:?}");
        }
    }

    #[test]
    fn the_plan_is_a_pure_function((h, _, dry, age) in arb_world()) {
        let p = policy(|s| s["remediation"]["dryRun"] = dry.into());
        let ws = world(&h, &p, age);
        prop_assert_eq!(run(&p, &PoolPolicyStatus::default(), &ws), run(&p, &PoolPolicyStatus::default(), &ws));
    }

    #[test]
    fn applying_the_plans_env_leaves_nothing_to_change(max in 1u32..100, min in 0u32..1, drop in prop::collection::vec(any::<bool>(), 5)) {
        let p = policy(|s| { s["pool"]["maxSize"] = max.into(); s["pool"]["minSize"] = min.into(); });
        let mut w = workload(&p, "web", vec![]);
        let names: Vec<String> = w.containers[0].env.keys().cloned().collect();
        for (name, d) in names.iter().zip(&drop) { if *d { w.containers[0].env.remove(name); } }
        w.containers[0].env.insert("UNOWNED".into(), EnvValue::Literal("kept".into()));
        let plan = run(&p, &PoolPolicyStatus::default(), std::slice::from_ref(&w));
        for change in &plan.env { for (k, v) in &change.containers["app"] { w.containers[0].env.insert(k.clone(), v.clone()); } }
        prop_assert!(run(&p, &PoolPolicyStatus::default(), &[w.clone()]).env.is_empty());
        prop_assert_eq!(w.containers[0].env.get("UNOWNED"), Some(&EnvValue::Literal("kept".into())));
    }

    #[test]
    fn no_restart_of_a_pod_younger_than_the_window((h, _, _, age) in arb_world()) {
        let p = policy(|_| {});
        let plan = run(&p, &PoolPolicyStatus::default(), &world(&h, &p, age));
        let window = p.discrepancy.as_ref().unwrap().sustained_for + p.discrepancy.as_ref().unwrap().grace;
        for r in &plan.remediations {
            let pi: i64 = r.record.pod.as_ref().unwrap().rsplit('-').next().unwrap().parse().unwrap();
            prop_assert!(Duration::from_secs((age + pi * 60) as u64) >= window);
        }
    }

    #[test]
    fn dry_run_never_yields_a_write((h, _, _, age) in arb_world(), clear in any::<bool>()) {
        let p = policy(|s| s["remediation"]["dryRun"] = true.into());
        let mut ws = world(&h, &p, age);
        if clear { for w in &mut ws { w.containers[0].env.clear(); } }
        let plan = run(&p, &PoolPolicyStatus::default(), &ws);
        prop_assert!(plan.remediations.is_empty() && plan.env.is_empty());
    }
}

/// The properties above are only worth something if the generated worlds do lead to
/// restarts (and, one role per workload, to rollouts); this guards the generator.
#[test]
fn the_generated_worlds_do_restart_pods() {
    let p = policy(|_| {});
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut restarted = 0;
    for _ in 0..200 {
        let (h, _, _, age) = arb_world().new_tree(&mut runner).unwrap().current();
        restarted += run(&p, &PoolPolicyStatus::default(), &world(&h, &p, age))
            .remediations
            .len();
    }
    assert!(restarted >= 20, "only {restarted} restarts in 200 generated worlds");
    let p = by_role(|s| s["remediation"]["maxRestartsPerHour"] = 50.into());
    let mut rolled = 0;
    for _ in 0..200 {
        let (h, _, _, age) = arb_world().new_tree(&mut runner).unwrap().current();
        rolled += run(&p, &PoolPolicyStatus::default(), &role_world(&h, &p, age))
            .remediations
            .len();
    }
    assert!(
        rolled >= 10,
        "only {rolled} rollouts in 200 generated User-attribution worlds"
    );
}

/// Defect 5 of issue 14: a duration of 106000000h panicked in `observe` ("subtracting
/// signed duration from timestamp overflowed") and took the whole process down.
/// Validation now refuses it; past validation the arithmetic still saturates.
#[test]
fn durations_beyond_any_calendar_never_panic_observe_or_plan() {
    use poolwarden::{
        observe::history::History,
        platform::pass::observe::{Subject, SubjectInstance, observe},
    };
    let forever = Duration::from_secs(106_000_000 * 3600);
    let mut p = policy(|_| {});
    p.interval = forever;
    p.remediation.cooldown = forever;
    let rule = p.discrepancy.as_mut().unwrap();
    rule.sustained_for = forever;
    rule.grace = forever;
    let w = workload(&p, "web", vec![pod("web-0", vec![])]);
    let subject = Subject {
        instances: vec![SubjectInstance {
            ip: None,
            names_itself: true,
            pool: None,
        }],
        workload: w,
        database_user: "web".into(),
        key: "web".into(),
    };
    let mut history = History::default();
    let (workloads, _) = observe(&p, vec![subject], Err("database down"), &mut history, now());
    let status = PoolPolicyStatus {
        remediations: vec![record("web", Some("web-0"), 30 * 60)],
        ..Default::default()
    };
    let plan = run(&p, &status, &workloads);
    assert!(plan.remediations.is_empty());
}

/// A remediation carried out `secs_ago`.
fn record(workload: &str, pod: Option<&str>, secs_ago: i64) -> RemediationRecord {
    RemediationRecord {
        at: at(secs_ago),
        state: RemediationState::Done,
        action: RemediationAction::RestartPod,
        kind: "Deployment".into(),
        workload: workload.into(),
        pod: pod.map(str::to_owned),
        reason: "earlier".into(),
        measure: Measure::LifetimeOverrun,
        values: vec![5],
        limit: 2,
        since: at(secs_ago + 600),
        ..Default::default()
    }
}

fn run_full(
    p: &ResolvedPolicy,
    status: &PoolPolicyStatus,
    workloads: &[Workload],
    conflicts: &[EnvConflict],
    others: &[RemediationRecord],
    elsewhere: &[decide::GovernedElsewhere],
) -> decide::Plan {
    decide::plan(&PlanInput {
        policy: p,
        generation: 1,
        policy_paused: false,
        status,
        workloads,
        database: Measured::Known(DatabaseLimits {
            max_connections: 100,
            reserved: 3,
            pooler: None,
        }),
        database_full: None,
        conflicts,
        env_all_or_nothing: true,
        other_remediations: others,
        governed_elsewhere: elsewhere,
        sizing: Default::default(),
        budget: None,
        now: now(),
    })
}

fn pending(workload: &str, pod: &str, secs_ago: i64) -> RemediationRecord {
    RemediationRecord {
        state: RemediationState::Pending,
        ..record(workload, Some(pod), secs_ago)
    }
}

/// Issue 14, defect 4: a controller killed while its eviction was in flight left a
/// record of a restart that never happened; it used up the budget and blocked the
/// workload (`in_flight`) for as long as the pod lived.
#[test]
fn an_unconfirmed_remediation_whose_pod_still_runs_is_abandoned_after_its_expiry_and_stops_blocking() {
    let p = policy(|s| s["remediation"]["maxRestartsPerHour"] = 1.into());
    let status = PoolPolicyStatus {
        remediations: vec![pending("web", "web-0", 600)],
        ..Default::default()
    };
    let plan = run(&p, &status, &web_with_one_pod(steady(15, 9)));
    let done: Vec<_> = plan.remediations.iter().map(|r| r.record.pod.clone()).collect();
    assert_eq!(done, vec![Some("web-0".to_owned())], "{:?}", plan.skipped);
    let old = plan.status.remediations.iter().find(|r| r.at == at(600)).unwrap();
    assert_eq!(old.state, RemediationState::Abandoned);
    let new = plan.status.remediations.iter().find(|r| r.at == now()).unwrap();
    assert_eq!(new.state, RemediationState::Pending, "recorded before it is made");
}

#[test]
fn a_fresh_pending_remediation_blocks_its_workload_and_counts_against_the_budget() {
    let p = policy(|_| {});
    let status = PoolPolicyStatus {
        remediations: vec![pending("web", "web-0", 30)],
        ..Default::default()
    };
    let plan = run(&p, &status, &web_with_one_pod(steady(15, 9)));
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::InFlight);
    // Past its expiry with the pod gone, it may have happened: it counts (Done).
    let status = PoolPolicyStatus {
        remediations: vec![pending("web", "web-gone", 600)],
        ..Default::default()
    };
    let plan = run(&p, &status, &web_with_one_pod(steady(15, 9)));
    assert_eq!(plan.skipped[0].why, SkipReason::Cooldown);
    assert_eq!(plan.status.remediations[0].state, RemediationState::Done);
}

#[test]
fn outcomes_confirm_what_happened_and_drop_what_did_not() {
    let p = policy(|s| s["remediation"]["maxRestartsPerHour"] = 5.into());
    let workloads = vec![
        workload(&p, "a", vec![pod("a-0", steady(15, 9)), pod("a-1", steady(15, 0))]),
        workload(&p, "b", vec![pod("b-0", steady(15, 8)), pod("b-1", steady(15, 0))]),
    ];
    let mut plan = run(&p, &PoolPolicyStatus::default(), &workloads);
    assert_eq!(plan.remediations.len(), 2);
    let refused = vec![plan.remediations[1].record.clone()];
    plan.record_outcomes(&refused);
    let states: Vec<_> = plan
        .status
        .remediations
        .iter()
        .map(|r| (r.workload.as_str(), r.state))
        .collect();
    assert_eq!(states, vec![("a", RemediationState::Done)]);
}

#[test]
fn merging_keeps_every_record_either_writer_has_at_its_furthest_state() {
    let server = vec![record("a", Some("a-0"), 100), pending("b", "b-0", 50)];
    let ours = vec![
        pending("a", "a-0", 100),
        RemediationRecord {
            state: RemediationState::Done,
            ..pending("b", "b-0", 50)
        },
        pending("c", "c-0", 10),
        pending("d", "d-0", 5),
    ];
    let refused = vec![pending("d", "d-0", 5)];
    let merged = decide::remediation::merge_records(&server, &ours, &refused);
    let got: Vec<_> = merged.iter().map(|r| (r.workload.as_str(), r.state)).collect();
    assert_eq!(
        got,
        vec![
            ("a", RemediationState::Done),
            ("b", RemediationState::Done),
            ("c", RemediationState::Pending)
        ]
    );
}

/// Issue 14, defect 3: two policies selecting one workload each kept their own
/// cooldown, and evicted its two pods 1.5 s apart under a cooldown of 1h.
#[test]
fn the_cooldown_is_per_workload_across_policies() {
    let p = policy(|_| {});
    let others = [record("web", Some("web-9"), 600)];
    let plan = run_full(
        &p,
        &PoolPolicyStatus::default(),
        &web_with_one_pod(steady(15, 9)),
        &[],
        &others,
        &[],
    );
    assert!(plan.remediations.is_empty());
    assert_eq!(plan.skipped[0].why, SkipReason::Cooldown);
}

/// Issue 14, defect 2: two policies selecting one Deployment both wrote its env.
#[test]
fn a_workload_another_policy_governs_is_a_conflict_naming_that_policy_and_the_workload() {
    let p = policy(|_| {});
    let elsewhere = [decide::GovernedElsewhere {
        kind: decide::Kind::Deployment,
        workload: "web".into(),
        policy: "pol-a".into(),
    }];
    let plan = run_full(&p, &PoolPolicyStatus::default(), &[], &[], &[], &elsewhere);
    assert!(plan.env.is_empty() && plan.remediations.is_empty());
    let c = plan.status.conditions.iter().find(|c| c.type_ == "Conflict").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "GovernedByOtherPolicy")
    );
    assert!(
        c.message.contains("pol-a") && c.message.contains("Deployment/web"),
        "{}",
        c.message
    );
    let ready = plan.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
}

/// Issue 14, defect 7: with DB_POOL_MAX owned by another manager the other entries
/// were still written, leaving DB_POOL_MIN=2147483647 with DB_POOL_MAX=3.
#[test]
fn an_env_write_is_all_or_nothing_when_one_owned_entry_is_in_conflict() {
    let p = policy(|s| s["pool"]["minSize"] = 10.into());
    let mut w = workload(&p, "web", vec![]);
    w.containers[0].env.clear();
    w.containers[0]
        .env
        .insert("DB_POOL_MAX".into(), EnvValue::Literal("3".into()));
    let conflicts = [EnvConflict {
        workload: "web".into(),
        container: "app".into(),
        env: "DB_POOL_MAX".into(),
        manager: "argocd-controller".into(),
    }];
    let plan = run_full(&p, &PoolPolicyStatus::default(), &[w], &conflicts, &[], &[]);
    assert!(plan.env.is_empty(), "{:?}", plan.env);
    assert!(!plan.status.workloads[0].env_in_sync);
}

/// Issue 14, defect 8: a selector that matches nothing said Ready=True.
#[test]
fn a_selector_matching_nothing_is_not_ready_with_reason_no_workloads_selected() {
    let p = policy(|_| {});
    let plan = run(&p, &PoolPolicyStatus::default(), &[]);
    let ready = plan.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NoWorkloadsSelected")
    );
}

/// Issue 14, defect 8: a status from a pass long ago showed 0 connections with
/// nothing saying when it was observed.
#[test]
fn each_row_says_when_it_was_observed_and_the_status_when_it_goes_stale() {
    let p = policy(|_| {});
    let w = web_with_one_pod(steady(15, 0));
    let first = run(&p, &PoolPolicyStatus::default(), &w);
    assert_eq!(first.status.workloads[0].observed_at, Some(now()));
    assert_eq!(first.status.observed_at, Some(now()));
    let stale = now() + jiff::SignedDuration::from_secs(600 + 3 * 30);
    assert_eq!(first.status.stale_after, Some(stale));
    // An unchanged world within the heartbeat writes nothing (same observedAt).
    let later = run_at(&p, &first.status, &w, now() + jiff::SignedDuration::from_secs(60));
    assert!(!later.status_changed, "{:?}", later.status);
}

// ---- Issue 19: evidence, and the recurrence guard ----

/// One pod's sample at `t` with `overrun` backends above their lifetime, all of them
/// in one evidence group: `idle in transaction`, last statement `statement`.
fn evidence_sample(t: Timestamp, overrun: u32, started: Timestamp, statement: &str) -> PodSample {
    use poolwarden::observation::BackendGroup;
    let group = BackendGroup {
        state: Some("idle in transaction".into()),
        statement: poolwarden::observe::statement::normalize(statement),
        query_id: None,
        wait_event: Some("Client:ClientRead".into()),
        count: overrun,
        first_started: Some(started + jiff::SignedDuration::from_secs(1)),
        last_started: Some(started + jiff::SignedDuration::from_secs(2)),
        oldest_xact_start: Some(started + jiff::SignedDuration::from_secs(3)),
        oldest_state_change: Some(started + jiff::SignedDuration::from_secs(3)),
    };
    PodSample {
        at: t,
        database: Measured::Known(PodConnections {
            counts: ConnectionCounts {
                total: overrun,
                idle_in_transaction: overrun,
                ..Default::default()
            },
            overrun,
            measure: Some(Measure::LifetimeOverrun),
            evidence: if overrun > 0 { vec![group] } else { Vec::new() },
            ..Default::default()
        }),
        pool: None,
    }
}

const LEAKED: &str = "SELECT odds.* FROM odds WHERE id = 4242 AND token = 'hunter2' /*route='%2Fodds%2F%3Cid%3E'*/";

#[test]
fn a_leaking_pods_evidence_is_in_its_status_row_its_record_and_the_event_without_literals() {
    let started = at(3 * 3600);
    let samples: Vec<PodSample> = (0..=30)
        .map(|i| evidence_sample(at(i * 30), 9, started, LEAKED))
        .collect();
    let p = policy(|_| {});
    let plan = run(&p, &PoolPolicyStatus::default(), &web_with_one_pod(samples.clone()));
    assert_eq!(plan.remediations.len(), 1, "{:?}", plan.skipped);
    let row = &plan.status.workloads[0];
    assert_eq!(row.evidence.len(), 1);
    let e = &row.evidence[0];
    assert_eq!((e.pod.as_str(), e.backends), ("web-0", 9));
    let g = &e.groups[0];
    assert_eq!(g.state.as_deref(), Some("idle in transaction"));
    assert_eq!(
        g.statement.as_deref(),
        Some("SELECT odds.* FROM odds WHERE id = $1 AND token = $2")
    );
    assert_eq!(g.tags.get("route").map(String::as_str), Some("/odds/<id>"));
    assert_eq!(g.opened_within_seconds_of_start, Some(2));
    assert_eq!(plan.remediations[0].record.evidence.as_ref(), Some(e));
    let note = &plan.events.iter().find(|e| e.reason == "Remediating").unwrap().message;
    assert!(
        note.contains("×9 idle in transaction for 2 h 59 min (transaction open for 2 h 59 min)"),
        "{note}"
    );
    assert!(
        note.contains("`SELECT odds.* FROM odds WHERE id = $1 AND token = $2`"),
        "{note}"
    );
    assert!(note.contains("opened within 2 s of the pod's start"), "{note}");
    assert!(note.len() <= 1000, "{}", note.len());
    // `poolwarden plan` shows the same evidence beside the restart it would make.
    let workloads = web_with_one_pod(samples.clone());
    let heading = report::Heading {
        policy: "pools",
        namespace: "prod",
        database: "sampled",
        history: "none",
        limit: None,
        sizing: false,
    };
    let shown = report::render(&report::report(
        &heading,
        &poolwarden::platform::kubernetes::reconcile::words(),
        &workloads,
        &plan,
    ));
    let restart = shown
        .lines()
        .find(|l| l.contains("web-0") && l.contains("evidence: "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        restart.contains("idle in transaction")
            && restart.contains("`SELECT odds.* FROM odds WHERE id = $1 AND token = $2`"),
        "{restart}"
    );
    let everything = format!("{:?}{:?}{shown}", plan.status, plan.events);
    assert!(
        !everything.contains("hunter2") && !everything.contains("4242"),
        "{everything}"
    );

    let p = policy(|s| s["evidence"] = serde_json::json!({"queries": "Fingerprint"}));
    let plan = run(&p, &PoolPolicyStatus::default(), &web_with_one_pod(samples.clone()));
    let g = &plan.status.workloads[0].evidence[0].groups[0];
    assert_eq!(g.statement, None);
    assert_eq!(g.fingerprint.as_ref().map(String::len), Some(16));
    let p = policy(|s| s["evidence"] = serde_json::json!({"queries": "None"}));
    let plan = run(&p, &PoolPolicyStatus::default(), &web_with_one_pod(samples));
    let g = &plan.status.workloads[0].evidence[0].groups[0];
    assert_eq!((&g.statement, &g.fingerprint), (&None, &None));
    let events = format!("{:?}", plan.events);
    assert!(
        !events.contains("SELECT") && events.contains("route=/odds/<id>"),
        "{events}"
    );
}

/// A workload `web` of one pod that is replaced on each restart; every replacement
/// leaks `delays[k % len]` seconds after its start. Passes every `step` seconds; the
/// pod template becomes `v2` at pass `release_at`. Returns the restart times (seconds
/// from the start) and the last plan.
fn simulate(
    p: &ResolvedPolicy,
    delays: &[i64],
    step: i64,
    passes: usize,
    release_at: Option<usize>,
) -> (Vec<i64>, decide::Plan) {
    let t0 = now();
    let mut status = PoolPolicyStatus::default();
    let (mut pod_no, mut started) = (0usize, t0);
    let mut restarts = Vec::new();
    let mut last = None;
    for pass in 0..passes {
        let t = t0 + jiff::SignedDuration::from_secs(pass as i64 * step);
        let leak_from = started + jiff::SignedDuration::from_secs(delays[pod_no % delays.len()]);
        let samples: Vec<PodSample> = (0..)
            .map(|i| t - jiff::SignedDuration::from_secs(i * step))
            .take_while(|s| *s >= started && t.duration_since(*s).as_secs() <= 20 * 60)
            .map(|s| evidence_sample(s, if s >= leak_from { 9 } else { 0 }, started, LEAKED))
            .collect();
        let template = if release_at.is_some_and(|r| pass >= r) {
            "v2"
        } else {
            "v1"
        };
        let mut w = workload(p, "web", vec![pod(&format!("web-{pod_no}"), samples)]);
        w.instances[0].started_at = Some(started);
        w.template = Some(template.into());
        let mut plan = run_at(p, &status, &[w], t);
        plan.record_outcomes(&[]);
        status = plan.status.clone();
        if !plan.remediations.is_empty() {
            restarts.push(pass as i64 * step);
            pod_no += 1;
            started = t;
        }
        last = Some(plan);
    }
    (restarts, last.unwrap())
}

fn recurring_policy(count: u32, cooldown: &str) -> ResolvedPolicy {
    policy(|s| {
        s["remediation"]["cooldown"] = cooldown.into();
        s["remediation"]["maxRestartsPerHour"] = 50.into();
        s["remediation"]["minAvailableReplicas"] = 0.into();
        s["remediation"]["recurrence"] = serde_json::json!({"count": count, "within": "1h"});
    })
}

fn condition<'a>(plan: &'a decide::Plan, type_: &str) -> &'a poolwarden::policy::Condition {
    plan.status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn a_leak_that_comes_back_after_every_restart_is_restarted_count_times_then_left_alone_with_leak_recurring() {
    let p = recurring_policy(3, "1m");
    // Each replacement leaks from its start: judged after sustainedFor + grace (11 min).
    let (restarts, plan) = simulate(&p, &[0], 30, 120, None);
    assert_eq!(restarts.len(), 3, "restarts at {restarts:?}");
    let c = condition(&plan, "LeakRecurring");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "RestartsDoNotHelp"));
    assert!(
        c.message.contains("restarting does not fix this: the leak came back")
            && c.message.contains("after each of the last 3 restarts (restarted at "),
        "{}",
        c.message
    );
    assert!(c.message.contains("idle in transaction"), "the evidence: {}", c.message);
    let skipped: Vec<SkipReason> = plan.skipped.iter().map(|s| s.why).collect();
    assert_eq!(skipped, vec![SkipReason::LeakRecurring]);
    let warnings: Vec<&str> = plan
        .events
        .iter()
        .filter(|e| e.warning && e.reason == "LeakRecurring")
        .map(|e| e.object_kind())
        .collect();
    assert_eq!(warnings, vec!["Policy", "Deployment"]);
    // Still reported: the row keeps the leaking pod and its evidence.
    assert_eq!(plan.status.leaking_pods, 1);
    assert_eq!(plan.status.workloads[0].evidence.len(), 1);
    // The guard's state is in the newest record, which the status keeps.
    let newest = plan.status.remediations.iter().max_by(|a, b| a.at.cmp(&b.at)).unwrap();
    assert_eq!(newest.returned_after_seconds.len(), 2);
    assert_eq!(newest.template.as_deref(), Some("v1"));
}

#[test]
fn the_recurrence_guard_resumes_after_a_new_release() {
    let p = recurring_policy(2, "1m");
    // Stopped after two restarts (about 23 min); a new template at pass 100 (50 min).
    let (restarts, plan) = simulate(&p, &[0], 30, 104, Some(100));
    assert_eq!(restarts.len(), 3, "two, then one after the release: {restarts:?}");
    assert_eq!(*restarts.last().unwrap(), 100 * 30);
    assert_eq!(condition(&plan, "LeakRecurring").status, "False");
}

#[test]
fn a_leak_that_comes_back_later_than_the_window_is_not_recurring() {
    let p = policy(|s| {
        s["remediation"]["cooldown"] = "1m".into();
        s["remediation"]["maxRestartsPerHour"] = 50.into();
        s["remediation"]["minAvailableReplicas"] = 0.into();
        s["remediation"]["recurrence"] = serde_json::json!({"count": 1, "within": "5m"});
    });
    // Each replacement leaks 6 min after its start: later than `within`.
    let (restarts, plan) = simulate(&p, &[360], 30, 120, None);
    assert!(restarts.len() >= 3, "{restarts:?}");
    assert_eq!(condition(&plan, "LeakRecurring").status, "False");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A leak that comes back within `within` of every restart is restarted at most
    /// `count` times, however its returns and the passes are spaced.
    #[test]
    fn a_recurring_leak_is_never_restarted_more_than_count_times(
        count in 1u32..5,
        delays in proptest::collection::vec(0i64..3000, 1..6),
        step in prop_oneof![Just(15i64), Just(30), Just(60)],
        cooldown in prop_oneof![Just("1m"), Just("10m"), Just("30m")],
    ) {
        let p = recurring_policy(count, cooldown);
        let (restarts, _) = simulate(&p, &delays, step, (4 * 3600 / step) as usize, None);
        prop_assert!(restarts.len() as u32 <= count, "{} restarts: {:?}", restarts.len(), restarts);
    }
}
