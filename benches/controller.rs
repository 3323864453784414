//! The controller at scale, on the sandbox's API server (no kubelet): N Deployments
//! × 3 pods under 20 policies. Prints the time from controller start until every
//! workload's env is in sync, the API writes it took (goal: one per workload), the
//! writes in a steady-state window (goal: none), and the controller's memory.
//!
//! `cargo bench --bench controller -- [--deployments 1000] [--steady 300]`
//! (the controller is the release `poolwarden` binary, run as its own process).
//! `POOLWARDEN_BENCH_WRAP` runs it under a profiler, e.g.
//! `POOLWARDEN_BENCH_WRAP="valgrind --tool=massif --massif-out-file=/tmp/massif.out"`
//! (the memory figures are then the profiler's).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use poolwarden_sandbox::{Sandbox, SandboxOptions, manifests};
use serde_json::{Value, json};

const NS: &str = "bench";
const POLICIES: usize = 20;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmHWM, VmRSS) in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[tokio::main]
async fn main() {
    let deployments = arg("--deployments", 1000) as usize;
    let steady = Duration::from_secs(arg("--steady", 300));
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .expect("sandbox");
    let store = sandbox.store();
    let apply = |obj: Value| manifests::apply_object(store, &obj).expect("apply");
    for doc in manifests::parse_documents(&poolwarden::crd::crd_yaml()).unwrap() {
        apply(doc);
    }
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
    apply(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg", "namespace": NS},
        "stringData": {"url": database_url}}),
    );
    for p in 0..POLICIES {
        apply(json!({"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
            "metadata": {"name": format!("p{p:02}"), "namespace": NS},
            "spec": {"selector": {"matchLabels": {"policy": format!("p{p:02}")}}, "interval": "5s",
                     "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
                     "pool": {"minSize": 0, "maxSize": 10, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600}}}));
    }
    let setup = Instant::now();
    for d in 0..deployments {
        let name = format!("app-{d:05}");
        let policy = format!("p{:02}", d % POLICIES);
        apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": {"policy": policy}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                    "name": "app", "image": "example/app:1.0",
                    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}]}]}}}}));
        for i in 0..3 {
            apply(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-{i}"), "namespace": NS, "labels": {"app": name},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                         "uid": "bench", "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "example/app:1.0"}]}}));
        }
    }
    println!(
        "setup: {deployments} Deployments × 3 pods under {POLICIES} policies in {:.1}s",
        setup.elapsed().as_secs_f64()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let wrap: Vec<String> = std::env::var("POOLWARDEN_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_poolwarden"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_poolwarden")),
    };
    let mut child = command
        .arg("controller")
        .arg("--kubeconfig")
        .arg(sandbox.kubeconfig_path())
        .args(["--namespace", NS, "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("poolwarden controller");
    let res = store.resource("apps", "v1", "deployments").unwrap();
    let in_sync = |i: usize| {
        store
            .get(&res, NS, &format!("app-{i:05}"))
            .ok()
            .and_then(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array()
                    .map(|env| env.iter().any(|e| e["name"] == "DB_POOL_MAX" && e["value"] == "10"))
            })
            .unwrap_or(false)
    };
    let mut peak = 0u64;
    let mut synced_after = None;
    while started.elapsed() < Duration::from_secs(180) {
        if let Some((hwm, _)) = memory(child.id()) {
            peak = peak.max(hwm);
        }
        if (0..deployments).all(in_sync) {
            synced_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let writes_to_sync = sandbox.writes("deployments");
    let steady_start = sandbox.writes("deployments");
    let status_start = sandbox.writes("poolpolicies");
    let until = Instant::now() + steady;
    while Instant::now() < until {
        if let Some((hwm, _)) = memory(child.id()) {
            peak = peak.max(hwm);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let steady_writes = sandbox.writes("deployments") - steady_start;
    let status_writes = sandbox.writes("poolpolicies") - status_start;
    let (hwm, rss) = memory(child.id()).unwrap_or((peak, 0));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    sandbox.shutdown().await;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let (rss_goal, sync_goal) = if deployments >= 10_000 {
        (160.0, None)
    } else {
        (64.0, Some(15.0))
    };
    println!("\n| figure | value | goal |");
    println!("| --- | --- | --- |");
    match synced_after {
        Some(t) => println!(
            "| controller start → every workload's env in sync | {:.1} s | {} |",
            t.as_secs_f64(),
            sync_goal.map(|g| format!("≤ {g} s")).unwrap_or_else(|| "—".into())
        ),
        None => println!("| controller start → every workload's env in sync | not reached in 180 s | |"),
    }
    println!(
        "| Deployment writes to get there | {writes_to_sync} (for {deployments} out-of-sync) | exactly {deployments} |"
    );
    println!(
        "| Deployment writes in {} s of steady state | {steady_writes} | 0 |",
        steady.as_secs()
    );
    println!("| PoolPolicy status writes in steady state | {status_writes} | only on change |");
    println!(
        "| controller peak RSS (VmHWM) | {:.1} MiB | ≤ {rss_goal} MiB |",
        mib(hwm.max(peak))
    );
    println!("| controller RSS at the end | {:.1} MiB | |", mib(rss));
}
