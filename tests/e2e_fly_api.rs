//! End to end on the failure modes of Fly's real Machines API (issue 30), each played
//! by the sandbox's fake: configs answered with `null` lists, lease answers in the
//! OpenAPI document's shape, hosts that cannot be reached (`incomplete_config`),
//! failed machines, machines changed between the list and the lease, answers lost
//! after the API acted, secrets that reach a host late, release-command and console
//! machines, the older `process_group` key, and a SIGTERM in the middle of a pass.
//! The real `poolwarden` binary runs every command.

mod support;

use std::time::Duration;

use poolwarden_sandbox::fly::{Change, FakeFlyOptions, LeaseShape, MachineSpec, RateLimit};
use serde_json::{Value, json};
use support::{
    e2e::{backends_of, eventually, http_get, pg},
    fly::*,
};

async fn reconcile_once(fake: &poolwarden_sandbox::fly::FakeFly, policies: &str) -> std::process::Output {
    run(fake, &["fly", "reconcile", "--once", "--policies", policies]).await
}

/// The real API answers a config's unset lists as `null` (`init.cmd`, `init.entrypoint`):
/// sent back as they were read, the update breaks the document (which the fake enforces).
/// And `/wait` names the version with `version`, not the deprecated `instance_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_read_with_null_lists_goes_back_without_them_and_waits_name_the_version() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let ids = [machine(&fake, "web").await, machine(&fake, "web").await];
    assert!(
        fake.machine(&ids[0]).unwrap()["config"]["init"]["cmd"].is_null(),
        "the fake answers as the real API does"
    );
    let dir = policies_dir(&policy("Report"));
    let once = reconcile_once(&fake, dir.path().to_str().unwrap()).await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    for id in &ids {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}: {}", text(&once));
    }
    let requests = fake.requests();
    let updates: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.route.ends_with("/machines/{id}"))
        .collect();
    assert_eq!(updates.len(), 2, "{updates:#?}");
    for u in &updates {
        let body: Value = serde_json::from_str(&u.body).unwrap();
        assert!(!u.body.contains("null"), "{}", u.body);
        assert!(body["current_version"].is_string(), "{}", u.body);
        assert!(u.nonce, "an update carries the lease's nonce");
    }
    let waits: Vec<&str> = requests
        .iter()
        .filter(|r| r.route.ends_with("/wait"))
        .map(|r| r.uri.as_str())
        .collect();
    assert!(!waits.is_empty());
    for w in &waits {
        assert!(w.contains("version=") && !w.contains("instance_id="), "{w}");
    }
    fake.shutdown().await;
}

/// The document's `Lease` has `nonce` at the top level; fly-go's (and the docs'
/// examples) wrap it in `{status, data}`. Both are leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_answered_in_the_documents_shape_is_taken() {
    let fake = start_with(FakeFlyOptions {
        lease_shape: LeaseShape::Document,
        ..options(RateLimit::FLY_ACTION)
    })
    .await;
    let ids = [machine(&fake, "web").await, machine(&fake, "web").await];
    let dir = policies_dir(&policy("Report"));
    let once = reconcile_once(&fake, dir.path().to_str().unwrap()).await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    for id in &ids {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}: {}", text(&once));
    }
    let leases = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.route.ends_with("/lease"))
        .collect::<Vec<_>>();
    for l in &leases {
        let body: Value = serde_json::from_str(&l.body).unwrap_or(Value::Null);
        assert!(body["ttl"].as_u64().is_some_and(|t| t > 0), "TTL in the body: {l:?}");
    }
    fake.shutdown().await;
}

/// A machine whose host flyd cannot reach answers `config: null` and a partial
/// `incomplete_config`: an update built from it would replace the machine's whole
/// config. It is reported, never written; the rest of its group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_host_is_unreachable_is_reported_and_never_written() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let ids = [
        machine(&fake, "web").await,
        machine(&fake, "web").await,
        machine(&fake, "web").await,
    ];
    let lost = ids[1].clone();
    fake.set_host_status(&lost, "unreachable").unwrap();
    assert!(fake.machine(&lost).unwrap()["config"].is_null());
    let dir = policies_dir(&policy("Report"));
    let once = reconcile_once(&fake, dir.path().to_str().unwrap()).await;
    let out = text(&once);
    assert_eq!(once.status.code(), Some(1), "reported as not done\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("web/{lost}")) && l.contains("unreachable")),
        "{out}"
    );
    assert_eq!(updates_of(&fake, &lost), 0, "never written\n{out}");
    for id in ids.iter().filter(|id| **id != lost) {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}\n{out}");
    }
    fake.set_host_status(&lost, "ok").unwrap();
    let m = fake.machine(&lost).unwrap();
    assert_eq!(env_of(&m)["DB_POOL_MAX_LIFETIME"], "1800", "its config is whole: {m:#}");
    assert!(m["config"]["image"].is_string(), "{m:#}");
    fake.shutdown().await;
}

/// A machine whose state changed between the list and the lease (Fly Proxy's
/// autostart started it) is planned again on the next pass: the update is not made
/// with `skip_launch` from the stale list, which would leave it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_state_changed_since_the_list_is_replanned_next_pass() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let running = [machine(&fake, "web").await, machine(&fake, "web").await];
    let woken = machine(&fake, "web").await;
    fake.stop_machine(&woken).await.unwrap();
    fake.before_next_lease(&woken, Change::Start);
    let dir = policies_dir(&policy("Report"));
    let policies = dir.path().to_str().unwrap();

    let first = reconcile_once(&fake, policies).await;
    let out = text(&first);
    assert_eq!(
        fake.machine(&woken).unwrap()["state"],
        "started",
        "the woken machine is not stopped again\n{out}"
    );
    assert_eq!(first.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("web/{woken}")) && l.contains("changed since")),
        "{out}"
    );
    assert_eq!(updates_of(&fake, &woken), 0, "{out}");

    let second = reconcile_once(&fake, policies).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    for id in running.iter().chain([&woken]) {
        let m = fake.machine(id).unwrap();
        assert!(lifetime_is_3(&m), "{id}\n{}", text(&second));
        assert_eq!(m["state"], "started", "{id}");
    }
    fake.shutdown().await;
}

/// Answers lost after the API acted (a 502 from Fly's proxy): the lease is poolwarden's
/// own and the update was applied, so neither is repeated — one update per machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_to_a_lease_and_an_update_are_recognised_and_nothing_happens_twice() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let ids = [machine(&fake, "web").await, machine(&fake, "web").await];
    fake.lose_answers("POST", "/lease", 1);
    fake.lose_answers("POST", "/machines/{id}", 1);
    let dir = policies_dir(&policy("Report"));
    let once = reconcile_once(&fake, dir.path().to_str().unwrap()).await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    for id in &ids {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}: {}", text(&once));
        assert_eq!(events_of(&fake, id, "update"), 1, "{id}: updated once\n{}", text(&once));
    }
    fake.shutdown().await;
}

/// A host that has not heard of the newest secrets boots a restarted machine with the
/// previous ones. As flyctl does, poolwarden updates each running machine with
/// `min_secrets_version`, and records the secrets' digest only on machines that run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_running_machines_through_min_secrets_version_and_only_they_are_recorded() {
    let fake = start_with(FakeFlyOptions {
        secrets_lag: 1,
        ..options(RateLimit::FLY_ACTION)
    })
    .await;
    fake.set_secret("DB_POOL_MAX", "20");
    let running = [machine(&fake, "web").await, machine(&fake, "web").await];
    let stopped = machine(&fake, "web").await;
    fake.stop_machine(&stopped).await.unwrap();
    let dir = policies_dir(&policy_every_group("Manage"));
    let once = reconcile_once(&fake, dir.path().to_str().unwrap()).await;
    let out = text(&once);
    assert_eq!(once.status.code(), Some(0), "{out}");
    let newest = fake.secrets_version();
    for id in &running {
        assert_eq!(fake.running_secrets_version(id), Some(newest), "{id}\n{out}");
        let reads = eventually(Duration::from_secs(20), || async {
            pool_config(&fake, id).await["max_size"] == 5
        })
        .await;
        assert!(reads, "{id}: {}", pool_config(&fake, id).await);
        let m = fake.machine(id).unwrap();
        assert!(m["config"]["metadata"]["poolwarden_secrets"].is_string(), "{m:#}");
    }
    let m = fake.machine(&stopped).unwrap();
    assert_eq!(m["state"], "stopped");
    assert!(
        m["config"]["metadata"]["poolwarden_secrets"].is_null(),
        "not recorded on a machine that does not run them: {m:#}"
    );
    // One update per running machine names the secrets version (after the env's own).
    let with_version: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.route.ends_with("/machines/{id}"))
        .filter(|r| r.body.contains(&format!("\"min_secrets_version\":{newest}")))
        .map(|r| r.uri)
        .collect();
    assert_eq!(with_version.len(), running.len(), "{with_version:#?}");
    assert!(!with_version.iter().any(|u| u.contains(&stopped)), "{with_version:#?}");
    assert_eq!(count(&fake, "POST", "/restart"), 0, "updated, not restarted");
    fake.shutdown().await;
}

/// `fly deploy`'s release-command machine and `fly console`'s machine are no part of
/// any group (fly-go leaves them out); a machine that names its group with the older
/// `process_group` key belongs to that group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_command_and_console_machines_are_left_out_and_the_older_process_group_key_is_read() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let release = machine(&fake, "fly_app_release_command").await;
    let console = machine(&fake, "fly_app_console").await;
    let legacy = |_: usize| {
        let mut s = spec("");
        s.metadata.insert("process_group".into(), "worker_odds".into());
        s
    };
    let old = [
        fake.create_machine(legacy(0)).await.unwrap(),
        fake.create_machine(legacy(1)).await.unwrap(),
    ];
    let dir = policies_dir(&policy_every_group("Report"));
    let once = reconcile_once(&fake, dir.path().to_str().unwrap()).await;
    let out = text(&once);
    assert_eq!(once.status.code(), Some(0), "{out}");
    for id in &old {
        let env = env_of(&fake.machine(id).unwrap());
        assert_eq!(env["PGAPPNAME"], instance("worker_odds", id), "{out}");
    }
    for id in [&release, &console] {
        assert_eq!(updates_of(&fake, id), 0, "{id} left alone\n{out}");
    }
    assert!(
        !out.contains("fly_app_release_command") && !out.contains("fly_app_console"),
        "{out}"
    );
    fake.shutdown().await;
}

/// A failed machine is reported and counted unavailable, and the rest of its group
/// is still remedied (within minStarted); a restart whose answer is lost is not
/// repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_machine_is_reported_and_does_not_block_its_group_and_a_lost_restart_is_not_repeated() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let leaking = machine(&fake, "worker_odds").await;
    let healthy = machine(&fake, "worker_odds").await;
    let failed = machine(&fake, "worker_odds").await;
    fake.fail_machine(&failed).await.unwrap();
    let dir = policies_dir(&policy("Report"));
    let policies = dir.path().to_str().unwrap();
    let once = reconcile_once(&fake, policies).await;
    let out = text(&once);
    assert_eq!(once.status.code(), Some(1), "the failed machine is reported\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("worker_odds/{failed}")) && l.contains("failed")),
        "{out}"
    );
    for id in [&leaking, &healthy] {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}\n{out}");
    }
    assert_eq!(updates_of(&fake, &failed), 0, "{out}");

    let db = pg().await;
    let leaking_name = instance("worker_odds", &leaking);
    let name_ok = eventually(Duration::from_secs(20), || async {
        pool_config(&fake, &leaking).await["application_name"] == leaking_name.as_str()
    })
    .await;
    assert!(name_ok, "{}", pool_config(&fake, &leaking).await);
    let ip = fake.machine(&leaking).unwrap()["private_ip"]
        .as_str()
        .unwrap()
        .to_owned();
    let opened = http_get(&ip, 8080, "/untracked?n=3").await;
    assert_eq!(opened.map(|(c, _)| c), Some(200));
    fake.lose_answers("POST", "/restart", 1);
    let reconciler = FlyRun::start(&fake.base_url(), policies);
    let restarted = eventually(Duration::from_secs(60), || async {
        events_of(&fake, &leaking, "restart") >= 1
            && backends_of(&db, &leaking_name).await < 3
            && reconciler.status()["status"]["remediations"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    })
    .await;
    let status = reconciler.status();
    drop(reconciler);
    assert!(restarted, "the leaking machine is restarted\n{status:#}");
    assert_eq!(events_of(&fake, &leaking, "restart"), 1, "restarted once");
    assert_eq!(events_of(&fake, &healthy, "restart"), 0);
    let not_done = status["notDone"].to_string();
    assert!(not_done.contains(&failed), "{status:#}");
    fake.shutdown().await;
}

/// `fly run` stops within moments of SIGTERM, even in the middle of a pass that
/// would wait minutes for a machine's checks, and leaves no lease behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_run_stops_within_moments_of_sigterm_and_leaves_no_lease() {
    let fake = start(RateLimit::FLY_ACTION).await;
    // Checks that pass only ten minutes after a start: the pass waits on them.
    let slow = |_: usize| MachineSpec {
        checks: json!({"alive": {"type": "tcp", "port": 8080, "grace_period": "10m"}}),
        ..spec("web")
    };
    let ids = [
        fake.create_machine(slow(0)).await.unwrap(),
        fake.create_machine(slow(1)).await.unwrap(),
    ];
    let dir = policies_dir(&policy("Report"));
    let mut reconciler = FlyRun::start_with(
        &fake.base_url(),
        dir.path().to_str().unwrap(),
        &["--start-timeout", "600"],
    );
    let waiting = eventually(Duration::from_secs(30), || async {
        ids.iter().any(|id| updates_of(&fake, id) == 1)
            && fake
                .requests()
                .iter()
                .any(|r| r.route.ends_with("/machines/{id}") && r.method == "GET")
    })
    .await;
    assert!(waiting, "the pass waits for the updated machine's checks");
    // The pass would wait --start-timeout (10 minutes) for the checks; the process is
    // gone long before.
    let exited = reconciler.terminate(Duration::from_secs(5));
    assert!(
        exited.is_some_and(|s| s.success()),
        "exits on SIGTERM: {exited:?}\n{}",
        reconciler.log_text()
    );
    for id in &ids {
        assert!(
            fake.hold_lease(id, Duration::from_secs(1)).is_ok(),
            "{id}: no lease left\n{}",
            reconciler.log_text()
        );
    }
    fake.shutdown().await;
}
