//! The fake Fly Machines API over HTTP, as fly-go would call it: machines run
//! leaky-app against PostgreSQL under their PGAPPNAME; an update bumps
//! `instance_id` and restarts the process with the new env; a secret overrides
//! env at the next restart; leases, wait, auth, rate limits, faults, metadata;
//! shutdown (and drop) leave no process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{backends, eventually, http_ok, pg, process_exists, unique};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use poolwarden_sandbox::fly::{FakeFly, FakeFlyOptions, MachineSpec, NONCE_HEADER, RateLimit};
use serde_json::{Value, json};

struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: Value,
}

/// A bare client that speaks to the fake as fly-go does.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    app: String,
    token: Option<String>,
}

impl Api {
    fn new(fake: &FakeFly) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: fake.base_url(),
            app: fake.app().to_string(),
            token: Some(format!("Bearer {}", fake.token())),
        }
    }

    fn with_auth(&self, auth: Option<&str>) -> Api {
        Api {
            client: self.client.clone(),
            base: self.base.clone(),
            app: self.app.clone(),
            token: auth.map(str::to_string),
        }
    }

    /// `path` is relative to `/v1/apps/{app}`.
    async fn send(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
        let url = format!("{}/v1/apps/{}{path}", self.base, self.app);
        let mut req = hyper::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.client.request(req.body(body).unwrap()).await.expect(&url);
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Resp { status, headers, body }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, &[]).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.send("POST", path, Some(body), &[]).await
    }
}

fn options() -> FakeFlyOptions {
    FakeFlyOptions {
        app: unique("app"),
        rate: RateLimit::unlimited(),
        get_rate: RateLimit::unlimited(),
        stop_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

fn sleeper(group: &str) -> MachineSpec {
    MachineSpec {
        group: group.into(),
        cmd: vec!["sleep".into(), "60".into()],
        ..Default::default()
    }
}

fn leaky(group: &str, appname: &str) -> MachineSpec {
    let env: BTreeMap<String, String> = [
        ("DATABASE_URL", common::database_url()),
        ("PGAPPNAME", appname.to_string()),
        ("DB_POOL_MIN", "0".into()),
        ("DB_POOL_MAX", "3".into()),
        ("PORT", "8080".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    MachineSpec {
        group: group.into(),
        region: "ams".into(),
        env,
        cmd: vec![env!("CARGO_BIN_EXE_leaky-app").into()],
        ..Default::default()
    }
}

/// The environment a process runs with, from /proc.
fn environ(pid: i32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

async fn appnames(db: &tokio_postgres::Client, prefix: &str) -> BTreeSet<String> {
    backends(db, prefix).await.into_iter().map(|(a, _)| a).collect()
}

/// Makes the machine's leaky-app hold one connection, once it serves.
async fn leak_one(ip: &str) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_ok(ip, 8080, "/healthz").await.is_some()
        })
        .await,
        "leaky-app serves on its machine's private_ip {ip}"
    );
    assert!(http_ok(ip, 8080, "/leak?n=1").await.is_some());
}

#[tokio::test]
async fn machines_run_leaky_app_update_and_secrets_restart_them() {
    let fake = FakeFly::start(options()).await.unwrap();
    let api = Api::new(&fake);
    let prefix = unique("flym");
    let db = pg().await;

    // Two ways in: the test API and POST /machines with a LaunchMachineInput.
    let web1 = fake
        .create_machine(leaky("web", &format!("{prefix}-web-1")))
        .await
        .unwrap();
    let spec2 = leaky("web", &format!("{prefix}-web-2"));
    let created = api
        .post("/machines", json!({"config": spec2.config(), "region": "ams"}))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let web2 = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(web2.len(), 14);
    assert!(web2.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(created.body["state"], "started");
    assert_eq!(created.body["region"], "ams");
    assert_eq!(created.body["config"]["metadata"]["fly_process_group"], "web");
    let worker = fake
        .create_machine(leaky("worker_odds", &format!("{prefix}-worker-1")))
        .await
        .unwrap();

    let all = api.get("/machines").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body.as_array().unwrap().len(), 3);
    let web: BTreeSet<String> = api
        .get("/machines?metadata.fly_process_group=web")
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(web, BTreeSet::from([web1.clone(), web2.clone()]));
    assert_eq!(api.get("/machines?region=ord").await.body, json!([]));

    let mut ips = BTreeMap::new();
    for id in [&web1, &web2, &worker] {
        let m = api.get(&format!("/machines/{id}")).await.body;
        assert_eq!(m["state"], "started");
        let ip = m["private_ip"].as_str().unwrap().to_string();
        assert!(ip.starts_with("127.0.0."), "{ip}");
        leak_one(&ip).await;
        ips.insert(id.clone(), ip);
    }
    let want: BTreeSet<String> = ["web-1", "web-2", "worker-1"]
        .iter()
        .map(|s| format!("{prefix}-{s}"))
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            appnames(&db, &prefix).await == want
        })
        .await,
        "each machine's backends show under its PGAPPNAME: {:?}",
        appnames(&db, &prefix).await
    );
    let env = environ(fake.pid(&worker).unwrap());
    assert_eq!(env["FLY_APP_NAME"], fake.app());
    assert_eq!(env["FLY_MACHINE_ID"], worker);
    assert_eq!(env["FLY_PROCESS_GROUP"], "worker_odds");
    assert_eq!(env["FLY_REGION"], "ams");
    assert_eq!(env["FLY_PRIVATE_IP"], ips[&worker]);

    // Update web-1 with the whole config: a new instance_id and a new process with the new env.
    let before = api.get(&format!("/machines/{web1}")).await.body;
    let old_pid = fake.pid(&web1).unwrap();
    let mut config = before["config"].clone();
    config["env"]["PGAPPNAME"] = json!(format!("{prefix}-web-1b"));
    // As the real API does, the fake answers init's unset lists as null, which the
    // OpenAPI document does not allow in a request: sent back as read, it is refused.
    assert!(config["init"]["cmd"].is_null(), "{config:#}");
    let echoed = api.post(&format!("/machines/{web1}"), json!({"config": config})).await;
    assert_eq!(echoed.status, 400, "{}", echoed.body);
    let config = without_nulls(config);
    let updated = api.post(&format!("/machines/{web1}"), json!({"config": config})).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let instance = updated.body["instance_id"].as_str().unwrap().to_string();
    assert_ne!(instance, before["instance_id"].as_str().unwrap());
    let waited = api
        .get(&format!(
            "/machines/{web1}/wait?state=started&timeout=10&instance_id={instance}"
        ))
        .await;
    assert_eq!(waited.status, 200, "{}", waited.body);
    let new_pid = fake.pid(&web1).unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(!process_exists(old_pid), "the old process is gone");
    assert_eq!(environ(new_pid)["PGAPPNAME"], format!("{prefix}-web-1b"));
    leak_one(&ips[&web1]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let names = appnames(&db, &prefix).await;
            names.contains(&format!("{prefix}-web-1b")) && !names.contains(&format!("{prefix}-web-1"))
        })
        .await,
        "the new process connects under the new name and the old one's backends closed: {:?}",
        appnames(&db, &prefix).await
    );

    // A secret overrides env of the same name, at the next restart only.
    let secret = format!("{prefix}-secret");
    let set = api.post("/secrets/PGAPPNAME", json!({"value": secret})).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["name"], "PGAPPNAME");
    assert!(set.body["digest"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(set.body["version"].as_u64().is_some());
    let listed = api.get("/secrets").await.body;
    assert_eq!(listed["secrets"][0]["name"], "PGAPPNAME");
    assert!(
        !listed.to_string().contains(&secret),
        "values are never listed: {listed}"
    );
    let web2_pid = fake.pid(&web2).unwrap();
    assert_eq!(
        environ(web2_pid)["PGAPPNAME"],
        format!("{prefix}-web-2"),
        "not before a restart"
    );
    let instance2 = fake.machine(&web2).unwrap()["instance_id"].clone();
    let restarted = api
        .send("POST", &format!("/machines/{web2}/restart?force_stop=false"), None, &[])
        .await;
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    let web2_new = fake.pid(&web2).unwrap();
    assert_ne!(web2_new, web2_pid);
    assert_eq!(
        environ(web2_new)["PGAPPNAME"],
        secret,
        "the secret overrides config.env"
    );
    assert_eq!(
        fake.machine(&web2).unwrap()["instance_id"],
        instance2,
        "restart keeps the version"
    );
    leak_one(&ips[&web2]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            appnames(&db, &prefix).await.contains(&secret)
        })
        .await,
        "restarted machine connects under the secret's name"
    );

    let pids = fake.pids();
    assert_eq!(pids.len(), 3);
    fake.shutdown().await;
    assert!(pids.iter().all(|p| !process_exists(*p)), "shutdown leaves no process");
    assert!(
        eventually(Duration::from_secs(5), || async {
            appnames(&db, &prefix).await.is_empty()
        })
        .await,
        "and no backend"
    );
}

#[tokio::test]
async fn leases_guard_mutations_and_expire() {
    let fake = FakeFly::start(options()).await.unwrap();
    let api = Api::new(&fake);
    let id = fake.create_machine(sleeper("web")).await.unwrap();
    let path = format!("/machines/{id}");

    let theirs = fake.hold_lease(&id, Duration::from_secs(60)).unwrap();
    let lease = api.get(&format!("{path}/lease")).await;
    assert_eq!(lease.status, 200);
    assert_eq!(lease.body["status"], "success");
    assert_eq!(lease.body["data"]["owner"], "someone-else@fly.test");
    assert!(lease.body["data"]["expires_at"].as_i64().unwrap() > 0);
    let taken = api.send("POST", &format!("{path}/lease?ttl=10"), None, &[]).await;
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert!(taken.body["error"].as_str().unwrap().contains("someone-else"));
    let stop = api.post(&format!("{path}/stop"), json!({})).await;
    assert_eq!(stop.status, 409, "no nonce: {}", stop.body);
    let stop = api
        .send(
            "POST",
            &format!("{path}/stop"),
            Some(json!({})),
            &[(NONCE_HEADER, "000000000000")],
        )
        .await;
    assert_eq!(stop.status, 409, "wrong nonce: {}", stop.body);
    assert_eq!(fake.machine(&id).unwrap()["state"], "started");
    // Metadata is not lease-gated (fly-go never sends the nonce for it).
    let md = api.post(&format!("{path}/metadata/owner"), json!({"value": "x"})).await;
    assert_eq!(md.status, 204);

    let release = api.send("DELETE", &format!("{path}/lease"), None, &[]).await;
    assert_eq!(release.status, 400, "release needs the nonce");
    let release = api
        .send("DELETE", &format!("{path}/lease"), None, &[(NONCE_HEADER, &theirs)])
        .await;
    assert_eq!(release.status, 200, "{}", release.body);
    assert_eq!(api.get(&format!("{path}/lease")).await.status, 404);

    // Our own lease: 201 with a nonce; updates need it; refresh keeps it.
    let ours = api.send("POST", &format!("{path}/lease?ttl=30"), None, &[]).await;
    assert_eq!(ours.status, 201, "{}", ours.body);
    let nonce = ours.body["data"]["nonce"].as_str().unwrap().to_string();
    assert_eq!(nonce.len(), 12);
    let config = without_nulls(fake.machine(&id).unwrap()["config"].clone());
    let denied = api.post(&path, json!({"config": config})).await;
    assert_eq!(denied.status, 409);
    let allowed = api
        .send(
            "POST",
            &path,
            Some(json!({"config": config})),
            &[(NONCE_HEADER, &nonce)],
        )
        .await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.body["state"], "started");
    let refreshed = api
        .send("POST", &format!("{path}/lease?ttl=30"), None, &[(NONCE_HEADER, &nonce)])
        .await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(refreshed.body["data"]["nonce"], nonce.as_str());
    api.send("DELETE", &format!("{path}/lease"), None, &[(NONCE_HEADER, &nonce)])
        .await;

    // Someone else's lease expires after its ttl.
    fake.hold_lease(&id, Duration::from_secs(1)).unwrap();
    assert_eq!(api.post(&format!("{path}/stop"), json!({})).await.status, 409);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stop = api
        .post(&format!("{path}/stop"), json!({"signal": "SIGTERM", "timeout": "2s"}))
        .await;
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert_eq!(fake.machine(&id).unwrap()["state"], "stopped");

    // A machine created with lease_ttl comes back with the lease's nonce.
    let spec = sleeper("worker_odds");
    let leased = api
        .post("/machines", json!({"config": spec.config(), "lease_ttl": 30}))
        .await;
    assert_eq!(leased.status, 200);
    let nonce = leased.body["nonce"].as_str().unwrap().to_string();
    let lid = leased.body["id"].as_str().unwrap();
    let destroy = api
        .send("DELETE", &format!("/machines/{lid}?kill=true"), None, &[])
        .await;
    assert_eq!(destroy.status, 409);
    let destroy = api
        .send(
            "DELETE",
            &format!("/machines/{lid}?kill=true"),
            None,
            &[(NONCE_HEADER, &nonce)],
        )
        .await;
    assert_eq!(destroy.status, 200, "{}", destroy.body);
    assert_eq!(api.get("/machines").await.body.as_array().unwrap().len(), 1);
    assert_eq!(
        api.get("/machines?include_deleted=true")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn wait_start_stop_and_exits() {
    let fake = FakeFly::start(options()).await.unwrap();
    let api = Api::new(&fake);
    let id = fake.create_machine(sleeper("web")).await.unwrap();
    let path = format!("/machines/{id}");

    let t = Instant::now();
    let timed_out = api.get(&format!("{path}/wait?state=stopped&timeout=1")).await;
    assert_eq!(timed_out.status, 408, "{}", timed_out.body);
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(timed_out.body["error"].is_string());
    for bad in ["timeout=0", "timeout=61", "timeout=x", "state=sleeping"] {
        let r = api.get(&format!("{path}/wait?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert_eq!(
        api.get(&format!("{path}/wait?state=started&timeout=1")).await.status,
        200
    );
    assert_eq!(api.get("/machines/00000000000000/wait").await.status, 404);

    // A wait in flight sees the stop; multiple states as fly-go sends them.
    let waiter = {
        let api = api.with_auth(api.token.as_deref());
        let path = path.clone();
        tokio::spawn(async move {
            api.get(&format!("{path}/wait?state=stopped&state=suspended&timeout=10"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = fake.pid(&id).unwrap();
    assert_eq!(api.post(&format!("{path}/stop"), json!({})).await.status, 200);
    assert_eq!(waiter.await.unwrap().status, 200);
    assert!(!process_exists(pid));
    let started = api.send("POST", &format!("{path}/start"), None, &[]).await;
    assert_eq!(started.status, 200, "{}", started.body);
    assert_eq!(started.body["previous_state"], "stopped");
    assert_eq!(api.send("POST", &format!("{path}/start"), None, &[]).await.status, 412);
    // fly-go's Kill: a signal to the process, which exits and stops the machine.
    let pid = fake.pid(&id).unwrap();
    let killed = api.post(&format!("{path}/signal"), json!({"signal": 9})).await;
    assert_eq!(killed.status, 200, "{}", killed.body);
    assert_eq!(
        api.get(&format!("{path}/wait?state=stopped&timeout=5")).await.status,
        200
    );
    assert!(!process_exists(pid));
    assert_eq!(
        fake.machine(&id).unwrap()["events"][0]["request"]["exit_event"]["exit_code"],
        137
    );
    assert_eq!(
        api.post(&format!("{path}/signal"), json!({"signal": 9})).await.status,
        412
    );

    // A process that exits makes its machine stopped, with the exit code in its events.
    let crash = fake
        .create_machine(MachineSpec {
            cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
            ..sleeper("worker_odds")
        })
        .await
        .unwrap();
    let w = api
        .get(&format!("/machines/{crash}/wait?state=stopped&timeout=5"))
        .await;
    assert_eq!(w.status, 200);
    let m = fake.machine(&crash).unwrap();
    assert_eq!(m["state"], "stopped");
    assert_eq!(m["events"][0]["type"], "exit");
    assert_eq!(m["events"][0]["request"]["exit_event"]["exit_code"], 3);

    // Bad configs are refused like the real API refuses them (no image), and
    // the fake also needs a command.
    let r = api
        .post("/machines", json!({"config": {"init": {"exec": ["true"]}}}))
        .await;
    assert_eq!(r.status, 400);
    let r = api.post("/machines", json!({"config": {"image": "x"}})).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"].as_str().unwrap().contains("init.exec"));
    fake.shutdown().await;
}

#[tokio::test]
async fn auth_rate_limits_faults_and_counts() {
    let fake = FakeFly::start(FakeFlyOptions {
        rate: RateLimit {
            per_second: 1.0,
            burst: 3,
        },
        ..options()
    })
    .await
    .unwrap();
    let api = Api::new(&fake);
    let id = fake.create_machine(sleeper("web")).await.unwrap();

    let anon = api.with_auth(None).get("/machines").await;
    assert_eq!(anon.status, 401);
    assert_eq!(anon.body["error"], "Authenticate: token validation error");
    assert_eq!(api.with_auth(Some("Bearer nope")).get("/machines").await.status, 401);
    let macaroon = format!("FlyV1 {}", fake.token());
    assert_eq!(api.with_auth(Some(&macaroon)).get("/machines").await.status, 200);
    let mut other_app = api.with_auth(api.token.as_deref());
    other_app.app = "not-this-app".into();
    assert_eq!(other_app.get("/machines").await.status, 404);

    // Per action per machine: metadata gets of this machine run out after the burst...
    let md = format!("/machines/{id}/metadata");
    for _ in 0..3 {
        assert_eq!(api.get(&md).await.status, 200);
    }
    let limited = api.get(&md).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
    // ...while another action on it, and Get Machine (its own limit), still pass.
    assert_eq!(api.get(&format!("/machines/{id}/lease")).await.status, 404);
    assert_eq!(api.get(&format!("/machines/{id}")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get(&md).await.status, 200, "refilled at 1/s");

    fake.inject_faults(2, 503);
    assert_eq!(api.get(&format!("/machines/{id}")).await.status, 503);
    let second = api.post(&format!("/machines/{id}/cordon"), json!({})).await;
    assert_eq!(second.status, 503);
    assert!(second.body["error"].is_string());
    assert_eq!(api.get(&format!("/machines/{id}")).await.status, 200);

    let counts = fake.request_counts();
    let get_machine = ("GET".to_string(), "/v1/apps/{app}/machines/{id}".to_string());
    assert_eq!(counts[&get_machine], 3);
    assert_eq!(
        counts[&("POST".to_string(), "/v1/apps/{app}/machines/{id}/cordon".to_string())],
        1
    );
    assert_eq!(fake.writes(), 1, "{counts:?}");
    fake.shutdown().await;
}

#[tokio::test]
async fn metadata_changes_need_no_restart() {
    let fake = FakeFly::start(options()).await.unwrap();
    let api = Api::new(&fake);
    let id = fake.create_machine(sleeper("web")).await.unwrap();
    let before = fake.machine(&id).unwrap();
    let pid = fake.pid(&id).unwrap();

    let set = api
        .post(
            &format!("/machines/{id}/metadata/poolwarden_restarted_at"),
            json!({"value": "now"}),
        )
        .await;
    assert_eq!(set.status, 204);
    let set = api
        .post(&format!("/machines/{id}/metadata/tier"), json!({"value": "gold"}))
        .await;
    assert_eq!(set.status, 204);
    let md = api.get(&format!("/machines/{id}/metadata")).await.body;
    assert_eq!(md["tier"], "gold");
    assert_eq!(md["fly_process_group"], "web");
    let found = api.get("/machines?metadata.tier=gold").await.body;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(
        api.send("DELETE", &format!("/machines/{id}/metadata/tier"), None, &[])
            .await
            .status,
        204
    );
    assert!(
        api.get(&format!("/machines/{id}/metadata"))
            .await
            .body
            .get("tier")
            .is_none()
    );

    let after = fake.machine(&id).unwrap();
    assert_eq!(fake.pid(&id), Some(pid), "no restart");
    assert_eq!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["state"], "started");
    fake.shutdown().await;
}

#[tokio::test]
async fn dropping_the_fake_kills_its_machines() {
    let fake = FakeFly::start(options()).await.unwrap();
    fake.create_machine(sleeper("web")).await.unwrap();
    fake.create_machine(sleeper("worker_odds")).await.unwrap();
    let pids = fake.pids();
    assert_eq!(pids.len(), 2);
    drop(fake);
    assert!(
        eventually(Duration::from_secs(2), || async {
            pids.iter().all(|p| !process_exists(*p))
        })
        .await,
        "no machine process outlives the fake"
    );
}

/// The config without init's null lists, as a client must send it back.
fn without_nulls(mut config: Value) -> Value {
    if let Some(init) = config["init"].as_object_mut() {
        init.retain(|_, v| !v.is_null());
    }
    config
}
