//! The Fly target's end-to-end pieces: the sandbox's fake Machines API with local
//! leaky-app machines, a policy for the seeds' app, and the real `poolwarden fly ...`
//! binary run against it (directly, or through a validating proxy at `api_url`).

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use poolwarden_sandbox::fly::{FakeFly, FakeFlyOptions, MachineSpec, RateLimit};
use serde_json::Value;

use super::e2e::{database_url, http_get, leaky_app_path};

pub const BIN: &str = env!("CARGO_BIN_EXE_poolwarden");
pub const APP: &str = "sportsbook";
pub const TOKEN: &str = "fly-test-token";

/// The seeds' policy for the Fly app: `secrets` is `Report` or `Manage`.
pub fn policy(secrets: &str) -> String {
    format!(
        "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {{name: sportsbook-fly}}
spec:
  fly: {{app: {APP}, processGroups: [web, worker_odds, worker_settlement], minStarted: 1, secrets: {secrets}}}
  interval: 1s
  database: {{urlFromEnv: POOLWARDEN_TEST_DATABASE_URL}}
  pool: {{minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}}
  discrepancy: {{measure: LifetimeOverrun, max: 1, sustainedFor: 3s, grace: 1s}}
  remediation: {{action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 1}}
"
    )
}

/// The same policy for every process group of the app.
pub fn policy_every_group(secrets: &str) -> String {
    policy(secrets).replace("processGroups: [web, worker_odds, worker_settlement], ", "")
}

/// The fake with Fly's answers and `rate` limits (2 s to stop a machine).
pub fn options(rate: RateLimit) -> FakeFlyOptions {
    FakeFlyOptions {
        app: APP.into(),
        token: TOKEN.into(),
        rate,
        stop_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

pub async fn start(rate: RateLimit) -> FakeFly {
    start_with(options(rate)).await
}

pub async fn start_with(opts: FakeFlyOptions) -> FakeFly {
    FakeFly::start(opts).await.expect("fake Machines API")
}

/// A machine of `group` with the seeds' original pool: five kept open, recycled after
/// 30 minutes.
pub fn spec(group: &str) -> MachineSpec {
    let env = BTreeMap::from(
        [
            ("DATABASE_URL", database_url()),
            ("DB_POOL_MIN", "5".into()),
            ("DB_POOL_MAX", "20".into()),
            ("DB_POOL_MAX_IDLE", "600".into()),
            ("DB_POOL_MAX_LIFETIME", "1800".into()),
            ("PORT", "8080".into()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    MachineSpec {
        group: group.into(),
        region: "ams".into(),
        env,
        cmd: vec![leaky_app_path()],
        metadata: BTreeMap::new(),
        checks: Value::Null,
    }
}

pub async fn machine(fake: &FakeFly, group: &str) -> String {
    fake.create_machine(spec(group)).await.expect("machine")
}

pub fn policies_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sportsbook.yaml"), yaml).unwrap();
    dir
}

/// `poolwarden <args>` against the Machines API at `api_url`.
pub fn poolwarden_at(api_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("FLY_API_URL", api_url)
        .env("FLY_API_TOKEN", TOKEN)
        .env("POOLWARDEN_TEST_DATABASE_URL", database_url())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    cmd
}

pub fn poolwarden(fake: &FakeFly, args: &[&str]) -> Command {
    poolwarden_at(&fake.base_url(), args)
}

pub async fn run_at(api_url: &str, args: &[&str]) -> Output {
    let mut cmd = poolwarden_at(api_url, args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub async fn run(fake: &FakeFly, args: &[&str]) -> Output {
    run_at(&fake.base_url(), args).await
}

pub fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn env_of(m: &Value) -> BTreeMap<String, String> {
    m["config"]["env"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn instance(group: &str, id: &str) -> String {
    format!("{APP}:{group}:{id}")
}

/// Requests whose method is `method` and whose route contains `route_part`.
pub fn count(fake: &FakeFly, method: &str, route_part: &str) -> u64 {
    fake.request_counts()
        .iter()
        .filter(|((m, r), _)| m == method && r.contains(route_part))
        .map(|(_, n)| n)
        .sum()
}

/// Updates sent to one machine.
pub fn updates_of(fake: &FakeFly, id: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.route.ends_with("/machines/{id}") && r.uri.contains(id))
        .count()
}

/// Events of `kind` the machine has seen (the fake keeps the newest 30).
pub fn events_of(fake: &FakeFly, id: &str, kind: &str) -> usize {
    fake.machine(id).unwrap()["events"]
        .as_array()
        .map(|es| es.iter().filter(|e| e["type"] == kind).count())
        .unwrap_or(0)
}

pub fn lifetime_is_3(m: &Value) -> bool {
    env_of(m).get("DB_POOL_MAX_LIFETIME").map(String::as_str) == Some("3")
}

/// What the machine's leaky-app says its pool is (`max_size`, `application_name`...).
pub async fn pool_config(fake: &FakeFly, id: &str) -> Value {
    let ip = fake.machine(id).unwrap()["private_ip"].as_str().unwrap().to_owned();
    let body = http_get(&ip, 8080, "/health/detailed")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["checks"]["database_pool"]["config"].clone()
}

pub fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `poolwarden fly run` in the background, its log in a file, its status files in a
/// directory of its own.
pub struct FlyRun {
    pub child: Child,
    pub status_dir: tempfile::TempDir,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl FlyRun {
    pub fn start(api_url: &str, policies: &str) -> FlyRun {
        FlyRun::start_with(api_url, policies, &[])
    }

    /// With more arguments for `fly run`.
    pub fn start_with(api_url: &str, policies: &str, extra: &[&str]) -> FlyRun {
        let status_dir = tempfile::tempdir().unwrap();
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut cmd = poolwarden_at(
            api_url,
            &[
                "fly",
                "run",
                "--policies",
                policies,
                "--metrics-addr",
                &metrics_addr,
                "--status-dir",
                status_dir.path().to_str().unwrap(),
            ],
        );
        cmd.args(extra);
        let log = status_dir.path().join("fly-run.log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .spawn()
            .unwrap();
        let run = FlyRun {
            child,
            status_dir,
            log,
            metrics_port,
        };
        run.show_on_timeout();
        run
    }

    pub fn status_file(&self) -> PathBuf {
        self.status_dir.path().join("sportsbook-fly.json")
    }

    pub fn status(&self) -> Value {
        read_json(&self.status_file())
    }

    /// A wait that runs out prints the status file and the log's last lines.
    fn show_on_timeout(&self) {
        let (log, status) = (self.log.clone(), self.status_file());
        super::waits::show_on_timeout(std::sync::Arc::new(move || {
            let (log, status) = (log.clone(), status.clone());
            Box::pin(async move {
                format!(
                    "status file {}:\n{:#}\n`fly run` log (last 40 lines):\n{}",
                    status.display(),
                    read_json(&status),
                    super::waits::tail_file(&log, 40).join("\n")
                )
            })
        }));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the exit status if it exits within `within` (scaled).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + super::waits::scaled(within);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for FlyRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
