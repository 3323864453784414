//! The controller at scale, on the sandbox's API server (no kubelet): N Deployments
//! × 3 pods under P policies. Prints the time from controller start until every
//! workload's env is in sync, the API writes it took (goal: one per workload), the
//! writes in a steady-state window (goal: none), the controller's memory (with two
//! `/metrics` scrapes inside the measured run), the size of `/metrics`, the
//! controller's CPU per pass and per core in steady state, and the share of CPU
//! the sandbox (this process) took while the controller synced.
//!
//! `cargo bench --bench controller -- [--deployments 1000] [--policies 20]
//! [--interval 5] [--steady 300]` (the controller is the release `poolwarden`
//! binary, run as its own process). The many-policies case:
//! `cargo bench --bench controller -- --deployments 10000 --policies 1000 --interval 30`.
//! `POOLWARDEN_BENCH_WRAP` runs it under a profiler, e.g.
//! `POOLWARDEN_BENCH_WRAP="valgrind --tool=massif --massif-out-file=/tmp/massif.out"`
//! (the memory figures are then the profiler's; build with `--no-default-features`,
//! so the controller allocates with the system allocator the profiler sees).

// The sandbox (this process) allocates as the controller does, so that its share of
// the machine stays small beside the controller's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use poolwarden_sandbox::{Sandbox, SandboxOptions, manifests};
use serde_json::{Value, json};

const NS: &str = "bench";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of a process so far, from /proc/PID/stat.
fn cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// `/metrics` of the controller, read whole (plain HTTP/1.0 on loopback).
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body.split_once("\r\n\r\n")?.1.to_owned())
}

/// The passes finished so far: the sum of every policy's pass-duration count.
fn passes(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("poolwarden_reconcile_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
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
    let policies = arg("--policies", 20) as usize;
    let interval = arg("--interval", 5);
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
    for p in 0..policies {
        apply(json!({"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
            "metadata": {"name": format!("p{p:04}"), "namespace": NS},
            "spec": {"selector": {"matchLabels": {"policy": format!("p{p:04}")}}, "interval": format!("{interval}s"),
                     "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
                     "pool": {"minSize": 0, "maxSize": 10, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600}}}));
    }
    let setup = Instant::now();
    for d in 0..deployments {
        let name = format!("app-{d:05}");
        let policy = format!("p{:04}", d % policies);
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
        "setup: {deployments} Deployments × 3 pods under {policies} policies (interval {interval} s) in {:.1}s",
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
            .get_shared(&res, NS, &format!("app-{i:05}"))
            .ok()
            .and_then(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array()
                    .map(|env| env.iter().any(|e| e["name"] == "DB_POOL_MAX" && e["value"] == "10"))
            })
            .unwrap_or(false)
    };
    let pid = child.id().to_string();
    let bench_cpu_start = cpu("self");
    let mut peak = 0u64;
    let mut synced_after = None;
    // Deployments are checked in order from the first not yet in sync, so the check
    // costs the sandbox little (it is counted in the sandbox's share); all of them
    // are checked again once the last one is.
    let mut next = 0;
    while started.elapsed() < Duration::from_secs(600) {
        if let Some((hwm, _)) = memory(child.id()) {
            peak = peak.max(hwm);
        }
        while next < deployments && in_sync(next) {
            next += 1;
        }
        if next == deployments && (0..deployments).all(in_sync) {
            synced_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sync_cpu = (cpu(&pid), cpu("self"));
    let writes_to_sync = sandbox.writes("deployments");
    // The first pass of each policy writes its status; some of those land after the
    // last env write. The steady window opens once status writes have stopped for two
    // intervals, so it holds no first writes.
    let quiet = Duration::from_secs(2 * interval);
    let mut last = (sandbox.writes("poolpolicies"), Instant::now());
    while last.1.elapsed() < quiet && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sandbox.writes("poolpolicies");
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let first_scrape = scrape(port).unwrap_or_default();
    let steady_start = sandbox.writes("deployments");
    let status_start = sandbox.writes("poolpolicies");
    let steady_cpu_start = cpu(&pid);
    let until = Instant::now() + steady;
    while Instant::now() < until {
        if let Some((hwm, _)) = memory(child.id()) {
            peak = peak.max(hwm);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let steady_cpu = cpu(&pid).zip(steady_cpu_start).map(|(b, a)| b.saturating_sub(a));
    let last_scrape = scrape(port).unwrap_or_default();
    let steady_writes = sandbox.writes("deployments") - steady_start;
    let status_writes = sandbox.writes("poolpolicies") - status_start;
    let (hwm, rss) = memory(child.id()).unwrap_or((peak, 0));
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
    sandbox.shutdown().await;

    let figures = Figures {
        deployments,
        steady,
        synced_after,
        writes_to_sync,
        steady_writes,
        status_writes,
        peak_kib: hwm.max(peak),
        rss_kib: rss,
        metrics: last_scrape.clone(),
        steady_passes: passes(&last_scrape).saturating_sub(passes(&first_scrape)),
        steady_cpu,
        sync_cpu: sync_cpu
            .0
            .zip(sync_cpu.1.zip(bench_cpu_start).map(|(b, a)| b.saturating_sub(a))),
    };
    figures.print();
}

struct Figures {
    deployments: usize,
    steady: Duration,
    synced_after: Option<Duration>,
    writes_to_sync: u64,
    steady_writes: u64,
    status_writes: u64,
    peak_kib: u64,
    rss_kib: u64,
    metrics: String,
    steady_passes: u64,
    steady_cpu: Option<Duration>,
    /// (controller, sandbox) CPU from controller start to sync.
    sync_cpu: Option<(Duration, Duration)>,
}

impl Figures {
    fn print(&self) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let n = self.deployments;
        let (rss_goal, sync_goal) = match n {
            50_000.. => (400.0, 60.0),
            10_000.. => (96.0, 5.0),
            _ => (64.0, 15.0),
        };
        println!("\n| figure | value | goal |");
        println!("| --- | --- | --- |");
        match self.synced_after {
            Some(t) => println!(
                "| controller start → every workload's env in sync | {:.1} s | ≤ {sync_goal} s |",
                t.as_secs_f64()
            ),
            None => println!("| controller start → every workload's env in sync | not reached in 600 s | |"),
        }
        if let Some((controller, sandbox)) = self.sync_cpu {
            let share = sandbox.as_secs_f64() / (controller + sandbox).as_secs_f64().max(1e-9);
            println!(
                "| CPU to sync: controller / sandbox (its share) | {:.1} s / {:.1} s ({:.0}%) | |",
                controller.as_secs_f64(),
                sandbox.as_secs_f64(),
                share * 100.0
            );
        }
        println!(
            "| Deployment writes to get there | {} (for {n} out-of-sync) | exactly {n} |",
            self.writes_to_sync
        );
        println!(
            "| Deployment writes in {} s of steady state | {} | 0 |",
            self.steady.as_secs(),
            self.steady_writes
        );
        println!(
            "| PoolPolicy status writes in steady state | {} | only on change |",
            self.status_writes
        );
        if let Some(c) = self.steady_cpu {
            let core = c.as_secs_f64() / self.steady.as_secs_f64();
            let per_pass = c.as_secs_f64() * 1e3 / self.steady_passes.max(1) as f64;
            println!(
                "| controller CPU in steady state | {:.1}% of a core ({} passes, {per_pass:.2} ms CPU per pass) | ≤ 5% |",
                core * 100.0,
                self.steady_passes
            );
        }
        println!(
            "| /metrics | {} bytes, {} lines | ≤ 1 MB at 10k |",
            self.metrics.len(),
            self.metrics.lines().count()
        );
        println!(
            "| controller peak RSS (VmHWM, two /metrics scrapes included) | {:.1} MiB | ≤ {rss_goal} MiB |",
            mib(self.peak_kib)
        );
        println!("| controller RSS at the end | {:.1} MiB | |", mib(self.rss_kib));
    }
}
