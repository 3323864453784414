//! End to end on Fly.io's Machines API (the sandbox's fake, whose machines are
//! local leaky-app processes) with real PostgreSQL: the seeds' three process groups
//! get their pool env machine by machine, a leaking worker_odds machine is found by
//! LifetimeOverrun and restarted (and only it), a pool variable that is also an app
//! secret is reported, not fought, and rate limits and someone else's lease are
//! survived. The real `poolwarden` binary runs every command.

mod support;

use std::{collections::BTreeMap, time::Duration};

use poolwarden_sandbox::fly::{MachineSpec, RateLimit};
use serde_json::Value;
use support::{
    e2e::{backends_of, database_url, eventually, http_get, pg},
    fly::*,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_groups_get_their_pool_env_machine_by_machine_and_the_leaking_machine_alone_is_restarted() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let mut ids = Vec::new();
    for group in [
        "web",
        "web",
        "worker_odds",
        "worker_odds",
        "worker_settlement",
        "worker_settlement",
    ] {
        ids.push((group, machine(&fake, group).await));
    }
    let dir = policies_dir(&policy("Report"));
    let policies = dir.path().to_str().unwrap();

    // plan: what would change, and no write.
    let writes = fake.writes();
    let planned = run(&fake, &["fly", "plan", "--policies", policies]).await;
    assert_eq!(planned.status.code(), Some(3), "{}", text(&planned));
    assert!(text(&planned).contains("DB_POOL_MAX_LIFETIME"), "{}", text(&planned));
    // In Fly's words: the machine's own name, not Kubernetes' downward API.
    assert!(
        text(&planned).contains("PGAPPNAME: (unset) -> sportsbook:web:<machine id>"),
        "{}",
        text(&planned)
    );
    assert!(!text(&planned).contains("fieldRef"), "{}", text(&planned));
    assert_eq!(fake.writes(), writes, "plan writes nothing");

    // One pass: every machine gets the policy's pool and its own PGAPPNAME, one at a time.
    let before: BTreeMap<String, String> = fake
        .machines()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["instance_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let once = run(&fake, &["fly", "reconcile", "--once", "--policies", policies]).await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    for (group, id) in &ids {
        let m = fake.machine(id).unwrap();
        let env = env_of(&m);
        assert_eq!(env["DB_POOL_MIN"], "0", "{id}");
        assert_eq!(env["DB_POOL_MAX"], "5");
        assert_eq!(env["DB_POOL_MAX_IDLE"], "2");
        assert_eq!(env["DB_POOL_MAX_LIFETIME"], "3");
        assert_eq!(env["PGAPPNAME"], instance(group, id));
        assert_eq!(
            env["DATABASE_URL"],
            database_url(),
            "entries poolwarden does not own are kept"
        );
        assert_ne!(m["instance_id"].as_str().unwrap(), before[id], "{id} was updated");
        assert_eq!(m["state"], "started");
    }
    assert_eq!(
        count(&fake, "POST", "/lease"),
        ids.len() as u64,
        "one lease per machine"
    );
    // Each new process names its connections after its machine, with the new pool.
    for (group, id) in &ids {
        let name = instance(group, id);
        let running = eventually(Duration::from_secs(20), || async {
            let config = pool_config(&fake, id).await;
            config["application_name"] == name.as_str() && config["max_lifetime_seconds"] == 3
        })
        .await;
        assert!(running, "{name}: {}", pool_config(&fake, id).await);
    }
    let db = pg().await;

    // A second pass writes nothing.
    let writes = fake.writes();
    let again = run(&fake, &["fly", "reconcile", "--once", "--policies", policies]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(fake.writes(), writes, "in sync: no write\n{}", text(&again));

    // A worker_odds machine opens connections outside its pool that never recycle.
    let (_, leaking) = ids[3].clone();
    let leaking_name = instance("worker_odds", &leaking);
    let ip = fake.machine(&leaking).unwrap()["private_ip"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fake.machines().iter().all(lifetime_is_3));
    let opened = http_get(&ip, 8080, "/untracked?n=3").await;
    assert_eq!(opened.map(|(c, _)| c), Some(200));
    assert!(backends_of(&db, &leaking_name).await >= 3);
    let pids: BTreeMap<String, Option<i32>> = ids.iter().map(|(_, id)| (id.clone(), fake.pid(id))).collect();

    // Its log goes to a file, shown with the status file if the wait below runs out.
    let reconciler = FlyRun::start(&fake.base_url(), policies);
    let status_file = reconciler.status_file();
    let port = reconciler.metrics_port;
    // Done when the restart happened, the backends left, and the pass that did it has
    // written its status.
    let restarted = eventually(Duration::from_secs(60), || async {
        count(&fake, "POST", "/restart") >= 1
            && backends_of(&db, &leaking_name).await < 3
            && read_json(&status_file)["status"]["remediations"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    })
    .await;
    let status: Value = read_json(&status_file);
    let metrics = http_get("127.0.0.1", port, "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    drop(reconciler);
    assert!(restarted, "the leaking machine is restarted\n{status:#}");
    assert_eq!(count(&fake, "POST", "/restart"), 1, "one restart, within the budget");
    assert!(
        metrics.lines().any(|l| l.starts_with("poolwarden_restarts_total{")
            && l.contains("namespace=\"fly:sportsbook\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_ne!(
        fake.pid(&leaking),
        pids[&leaking],
        "the leaking machine's process was replaced"
    );
    for (_, id) in ids.iter().filter(|(_, id)| *id != leaking) {
        assert_eq!(fake.pid(id), pids[id], "machine {id} is left alone");
    }
    // The evidence: in the status file and, for the budgets, on the machine itself.
    let records = status["status"]["remediations"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        records.len(),
        1,
        "{status:#}\n{:#}",
        fake.machine(&leaking).unwrap()["config"]["metadata"]
    );
    assert_eq!(records[0]["pod"], leaking_name);
    assert_eq!(records[0]["measure"], "LifetimeOverrun");
    assert!(records[0]["values"].as_array().is_some_and(|v| !v.is_empty()));
    let meta = fake.machine(&leaking).unwrap()["config"]["metadata"]["poolwarden_restarts"].clone();
    assert!(meta.as_str().is_some_and(|m| m.contains(&leaking_name)), "{meta}");

    // A new reconciler process reads the history back from the machines' metadata,
    // so budgets and cooldowns survive its restart.
    let fresh = run(&fake, &["fly", "plan", "--policies", policies, "-o", "json"]).await;
    let fresh: Value = serde_json::from_slice(&fresh.stdout).unwrap_or(Value::Null);
    let history = fresh[0]["status"]["remediations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(history.len(), 1, "{fresh:#}");
    assert_eq!(history[0]["pod"], leaking_name);
    assert_eq!(fresh[0]["report"]["restarts"], Value::Array(vec![]), "{fresh:#}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_variable_that_is_an_app_secret_is_reported_not_fought_and_a_held_lease_is_waited_out() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let web = machine(&fake, "web").await;
    let web2 = machine(&fake, "web").await;
    // A group of one machine: updating it would leave no machine started.
    let single = machine(&fake, "worker_odds").await;
    // Someone set DB_POOL_MAX as an app secret: it overrides the machine env.
    fake.set_secret("DB_POOL_MAX", "20");
    // And someone else holds a lease on one machine for a few seconds.
    fake.hold_lease(&web2, Duration::from_secs(4)).unwrap();
    let dir = policies_dir(&policy("Report"));
    let policies = dir.path().to_str().unwrap();
    let status_dir = tempfile::tempdir().unwrap();
    let sd = status_dir.path().to_str().unwrap();

    let first = run(
        &fake,
        &["fly", "reconcile", "--once", "--policies", policies, "--status-dir", sd],
    )
    .await;
    let out = text(&first);
    assert_eq!(
        first.status.code(),
        Some(1),
        "the leased machine is not done yet\n{out}"
    );
    assert!(out.contains(&format!("web/{web2}")), "{out}");
    assert!(
        out.contains(&format!(
            "worker_odds/{single}: env not updated: group worker_odds has 1 started machine(s) and minStarted is 1"
        )),
        "{out}"
    );
    assert_eq!(env_of(&fake.machine(&single).unwrap())["DB_POOL_MAX_LIFETIME"], "1800");
    let status = read_json(&status_dir.path().join("sportsbook-fly.json"));
    let conflict = status["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Conflict").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(conflict["status"], "True", "{status:#}");
    let message = conflict["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("DB_POOL_MAX") && message.contains("fly secrets"),
        "{message}"
    );
    // A machine of the group is busy (leased): the group's rollout waits for the next pass.
    assert!(out.contains("lease"), "{out}");

    // Once the lease has expired the next pass finishes the job; the conflict stays reported.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = run(&fake, &["fly", "reconcile", "--once", "--policies", policies]).await;
    assert_eq!(
        second.status.code(),
        Some(1),
        "the single machine stays reported\n{}",
        text(&second)
    );
    assert!(!text(&second).contains("not done: web/"), "{}", text(&second));
    for id in [&web, &web2] {
        let env = env_of(&fake.machine(id).unwrap());
        assert_eq!(env["DB_POOL_MAX_LIFETIME"], "3", "{id}");
        assert_eq!(
            env["DB_POOL_MAX"], "20",
            "a secret-backed variable is never written as env"
        );
    }
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_and_the_pass_completes() {
    // Tighter than Fly's own limits, and two 503s on top.
    let fake = start(RateLimit {
        per_second: 2.0,
        burst: 1,
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(machine(&fake, "worker_settlement").await);
    }
    // Two 503s and a 429 (with Retry-After) queued for the first requests.
    fake.inject_faults(2, 503);
    fake.inject_faults(1, 429);
    let dir = policies_dir(&policy("Report"));
    let once = run(
        &fake,
        &["fly", "reconcile", "--once", "--policies", dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    for id in &ids {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}");
    }
    // A pass lists once and takes each machine one step at a time, so within Fly's
    // limits it is hardly throttled; a second pass right after meets them.
    let again = run(
        &fake,
        &["fly", "reconcile", "--once", "--policies", dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_secrets_manage_the_app_secret_is_set_and_machines_are_updated_one_at_a_time_to_run_it() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let a = machine(&fake, "web").await;
    let b = machine(&fake, "web").await;
    fake.set_secret("DB_POOL_MAX", "20");
    let yaml = policy_every_group("Manage");
    let dir = policies_dir(&yaml);
    let policies = dir.path().to_str().unwrap();
    for id in [&a, &b] {
        let up = eventually(Duration::from_secs(20), || async {
            pool_config(&fake, id).await["max_size"] == 20
        })
        .await;
        assert!(up, "{id} serves with the original pool");
    }

    let once = run(&fake, &["fly", "reconcile", "--once", "--policies", policies]).await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    assert!(text(&once).contains("app secrets set: DB_POOL_MAX"), "{}", text(&once));
    for id in [&a, &b] {
        let m = fake.machine(id).unwrap();
        assert_eq!(m["state"], "started");
        assert!(m["config"]["metadata"]["poolwarden_secrets"].is_string(), "{m:#}");
        // The running process reads the secret's new value, and the rest from env.
        let reads = eventually(Duration::from_secs(20), || async {
            let config = pool_config(&fake, id).await;
            config["max_size"] == 5 && config["max_lifetime_seconds"] == 3
        })
        .await;
        assert!(reads, "{id}: {}", pool_config(&fake, id).await);
    }
    assert_eq!(
        env_of(&fake.machine(&a).unwrap())["DB_POOL_MAX"],
        "20",
        "the env entry is left alone: the secret wins"
    );

    // Everything in place: the next pass writes nothing.
    let writes = fake.writes();
    let again = run(&fake, &["fly", "reconcile", "--once", "--policies", policies]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(fake.writes(), writes, "{}", text(&again));
    fake.shutdown().await;
}

/// Issue 14, defect 9: a stopped machine was updated without `skip_launch`, so the
/// Machines API started it (a machine parked by autostop booted, and cost money);
/// the next machine was updated as soon as the previous one was `started`, before
/// its checks passed; the machines were listed again before every update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_machines_stay_stopped_the_next_waits_for_checks_and_one_list_per_pass() {
    let fake = start(RateLimit::FLY_ACTION).await;
    let with_checks = |spec: MachineSpec| MachineSpec {
        checks: serde_json::json!({"alive": {"type": "tcp", "port": 8080, "grace_period": "2s"}}),
        ..spec
    };
    let started = [
        fake.create_machine(with_checks(spec("web"))).await.unwrap(),
        fake.create_machine(with_checks(spec("web"))).await.unwrap(),
    ];
    let stopped = fake.create_machine(spec("web")).await.unwrap();
    fake.stop_machine(&stopped).await.unwrap();
    // Parked by Fly Proxy's autostop: a stopped machine whose service autostops.
    let mut parked_spec = spec("web");
    parked_spec.metadata.insert("autostopped".into(), "true".into());
    let parked = fake.create_machine(parked_spec).await.unwrap();
    fake.stop_machine(&parked).await.unwrap();
    let lists = || {
        fake.request_counts()
            .get(&("GET".to_owned(), "/v1/apps/{app}/machines".to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let lists_before = lists();

    let dir = policies_dir(&policy("Report"));
    let once = run(
        &fake,
        &["fly", "reconcile", "--once", "--policies", dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    for id in [&stopped, &parked] {
        let m = fake.machine(id).unwrap();
        assert_eq!(m["state"], "stopped", "{id} stays stopped: {m:#}");
        assert!(lifetime_is_3(&m), "{id} has the new env for its next start");
    }
    // The second started machine is updated only once the first one's checks pass
    // (2 s after it started again).
    let ms = |id: &str, kind: &str| -> i64 {
        fake.machine(id).unwrap()["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .and_then(|e| e["timestamp"].as_i64())
            .unwrap_or(0)
    };
    let mut order = [
        (ms(&started[0], "update"), started[0].clone()),
        (ms(&started[1], "update"), started[1].clone()),
    ];
    order.sort();
    for (_, id) in &order {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}");
    }
    let first_up = ms(&order[0].1, "start");
    assert!(
        order[1].0 >= first_up + 2000,
        "second update at {} ms, first machine up at {first_up} ms, checks pass 2 s later",
        order[1].0
    );
    let lists = lists() - lists_before;
    let routes: Vec<_> = fake.request_counts().into_iter().collect();
    assert_eq!(lists, 1, "one list per pass: {routes:?}");
    fake.shutdown().await;
}
