//! The alerts and the dashboard against a real Prometheus: it scrapes the controller
//! every second through the seeds' leak story, evaluates a copy of the shipped rules
//! (every `for:` shortened to 2s, the one change), and through its HTTP API the leak
//! alert fires for the leaking workload and resolves once its pod is evicted; a
//! single-replica workload that also leaks cannot be restarted (too few available),
//! so the skipped-remediation alert fires; and every PromQL expression of the
//! dashboard evaluates without error and returns series.
//!
//! Along the way the Argo CD health check runs (under lua5.1) on the policy as the
//! API server holds it: Progressing before the controller, Healthy once rolled out,
//! Degraded while a pod leaks, Suspended when paused. With
//! POOLWARDEN_WRITE_FIXTURES=1 those objects are written to tests/fixtures/health/,
//! which tests/argocd_health.rs checks without a cluster.
//!
//! Prometheus is required, never skipped: Debian's `prometheus` package
//! (`apt-get install -y prometheus`).

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use regex::Regex;
use serde_json::Value;
use support::argocd::health;
use support::e2e::{Cluster, app_get, backends_of, database_url, eventually, pg};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: sportsbook}
spec:
  selector:
    matchLabels: {app.kubernetes.io/part-of: sportsbook}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 10s, grace: 1s}
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 1}
  sizing: {mode: Recommend}
";

/// A Prometheus on a free 127.0.0.1 port with its own data directory, stopped by PID.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        std::fs::write(dir.path().join("rules.yaml"), rules).expect("rules");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: poolwarden\n    static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "prometheus could not be started ({e}). It is required, not optional: install \
                     Debian's `prometheus` package (apt-get install -y prometheus)"
                )
            });
        Prometheus { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// HTTP/1.0, so that a large answer is not chunked (the shared helper reads no chunks).
    async fn get(&self, path_and_query: &str) -> Option<Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.ok()?;
            let req = format!("GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf).into_owned();
            let (head, body) = text.split_once("\r\n\r\n")?;
            let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((code, body.to_owned()))
        };
        let (code, body) = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .ok()
            .flatten()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 || v["status"] == "error").then_some(v)
    }

    /// An instant query: Ok(result) or Err(the error Prometheus gave).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self
            .get(&format!("/api/v1/query?query={}", encode(expr)))
            .await
            .ok_or("no answer")?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The state (`pending`, `firing`) of an alert whose labels include `labels`.
    async fn alert_state(&self, name: &str, labels: &[(&str, &str)]) -> Option<String> {
        let v = self.get("/api/v1/alerts").await?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name && labels.iter().all(|(k, val)| a["labels"][*k] == *val))
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rules with every `for:` shortened to 2s: a test cannot wait 15 minutes.
fn rules_for_the_test() -> String {
    let path = PathBuf::from("charts/poolwarden/monitoring/poolwarden.rules.yaml");
    let text = std::fs::read_to_string(&path).expect("rules file");
    let alerts = Regex::new(r"(?m)^\s+- alert: ").unwrap().find_iter(&text).count();
    let shortened = Regex::new(r"(?m)^(\s+)for: \S+$")
        .unwrap()
        .replace_all(&text, "${1}for: 2s");
    assert!(alerts >= 7, "the shipped rules hold {alerts} alerts");
    assert_eq!(
        shortened.matches("for: 2s").count(),
        alerts,
        "every alert's for: replaced"
    );
    shortened.into_owned()
}

/// The dashboard's PromQL (panels' targets, query variables as label-values
/// queries), with Grafana's variables replaced: every namespace, policy and workload
/// ("All"), a 30s rate interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("charts/poolwarden/dashboards/poolwarden.json").expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let fill = |e: &str| {
        e.replace("$namespace", ".*")
            .replace("$policy", ".*")
            .replace("$workload", ".*")
            .replace("$__rate_interval", "30s")
    };
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("{} {}", p["title"], t["refId"]), fill(e)));
            }
        }
    }
    let label_values = Regex::new(r"^label_values\((.*),\s*([a-z_]+)\)$").unwrap();
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().expect("variable query");
        let c = label_values.captures(q).expect("label_values(selector, label)");
        // The selector's series, grouped by the label: what the variable lists.
        out.push((
            format!("variable {}", v["name"]),
            format!("count by ({}) ({})", &c[2], fill(&c[1])),
        ));
    }
    out
}

/// The policy as the API server holds it, written as a fixture when asked.
async fn policy_object(cluster: &Cluster, fixture: &str) -> Value {
    let mut v = serde_json::to_value(cluster.policy("sportsbook").await).expect("policy JSON");
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    if std::env::var_os("POOLWARDEN_WRITE_FIXTURES").is_some() {
        let path = format!("tests/fixtures/health/{fixture}.json");
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("JSON") + "\n").expect(&path);
    }
    v
}

/// Waits until the Argo CD health check says `want` of the live policy; writes it
/// as the fixture `fixture`.
async fn wait_for_health(cluster: &Cluster, want: &str, fixture: &str) -> String {
    let ok = eventually(Duration::from_secs(30), || async {
        let v = serde_json::to_value(cluster.policy("sportsbook").await).expect("policy JSON");
        health(&v).0 == want
    })
    .await;
    let v = policy_object(cluster, fixture).await;
    let (status, message) = health(&v);
    assert!(
        ok && status == want,
        "Argo CD health is {want}; last seen {status}: {message}"
    );
    message
}

async fn wait_for(p: &Prometheus, timeout: Duration, what: &str, name: &str, labels: &[(&str, &str)], want: &str) {
    let ok = eventually(timeout, || async {
        p.alert_state(name, labels).await.as_deref() == Some(want)
    })
    .await;
    assert!(
        ok,
        "{what}: {name} {labels:?} is not {want}; prometheus log:\n{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_the_leak_alert_resolves_it_after_the_eviction_and_runs_every_dashboard_query() {
    let cluster = Cluster::start("prom").await;
    let part_of = BTreeMap::from([("app.kubernetes.io/part-of", "sportsbook")]);
    cluster.create_deployment("web", &part_of, 1, &[]).await;
    cluster.create_deployment("worker-odds", &part_of, 3, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    cluster.create_policy(POLICY).await;
    let before = policy_object(&cluster, "progressing-new").await;
    assert_eq!(health(&before).0, "Progressing", "{:?}", health(&before));
    let controller = cluster.controller("solo", false);
    let prometheus = Prometheus::start(controller.metrics_addr, &rules_for_the_test());
    let ready = eventually(Duration::from_secs(30), || async {
        prometheus
            .query(r#"up{job="poolwarden"} == 1"#)
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    assert!(
        ready,
        "Prometheus scrapes the controller; its log:\n{}",
        prometheus.log()
    );

    let rolled = eventually(Duration::from_secs(60), || async {
        cluster.ready_pods("worker-odds").await.len() == 3
            && cluster.ready_pods("web").await.len() == 1
            && prometheus
                .query(r#"poolwarden_policy_workloads_env_out_of_sync{policy="sportsbook"} == 0 and on (namespace, policy) sum by (namespace, policy) (poolwarden_policy_workloads{policy="sportsbook"}) == 2"#)
                .await
                .is_ok_and(|r| !r.is_empty())
    })
    .await;
    assert!(rolled, "both workloads run with the policy's pool");
    let healthy = wait_for_health(&cluster, "Healthy", "healthy").await;

    let odds = cluster.ready_pods("worker-odds").await;
    let leaking = odds[1].name_any();
    let web = cluster.ready_pods("web").await[0].clone();
    let t0 = Instant::now();
    assert!(app_get(&odds[1], "/untracked?n=3").await.is_some());
    assert!(app_get(&web, "/untracked?n=2").await.is_some());
    let db = pg().await;
    assert_eq!(backends_of(&db, &leaking).await, 3);

    let odds_labels = [("workload", "worker-odds"), ("policy", "sportsbook")];
    wait_for(
        &prometheus,
        Duration::from_secs(30),
        "the leak",
        "PoolwardenLeakSustained",
        &odds_labels,
        "firing",
    )
    .await;
    let fired = t0.elapsed();
    let still_there = cluster.api::<Pod>().get_opt(&leaking).await.unwrap().is_some();
    let degraded = wait_for_health(&cluster, "Degraded", "degraded-leaking").await;
    assert!(degraded.contains("LeakingPods"), "{degraded}");

    let evicted = eventually(Duration::from_secs(40), || async {
        cluster.api::<Pod>().get_opt(&leaking).await.ok().flatten().is_none()
    })
    .await;
    assert!(evicted, "the leaking pod is evicted");
    let evicted_at = t0.elapsed();

    let resolved = eventually(Duration::from_secs(30), || async {
        prometheus
            .alert_state("PoolwardenLeakSustained", &odds_labels)
            .await
            .is_none()
    })
    .await;
    assert!(resolved, "the leak alert resolves after the eviction");
    let resolved_at = t0.elapsed();

    // web has one replica and minAvailableReplicas 1: its leak stays, the restart is skipped.
    let skip_labels = [("policy", "sportsbook"), ("reason", "too_few_available")];
    wait_for(
        &prometheus,
        Duration::from_secs(30),
        "the refused restart",
        "PoolwardenRemediationSkipped",
        &skip_labels,
        "firing",
    )
    .await;
    let skip_fired = t0.elapsed();
    assert_eq!(
        prometheus
            .alert_state("PoolwardenLeakSustained", &[("workload", "web")])
            .await
            .as_deref(),
        Some("firing"),
        "web's leak alert stays"
    );
    eprintln!(
        "leak started at 0s (3 untracked backends on {leaking}); PoolwardenLeakSustained firing at {:.1}s \
         (pod still there: {still_there}); pod evicted at {:.1}s; alert resolved at {:.1}s; \
         PoolwardenRemediationSkipped (too_few_available, web) firing at {:.1}s",
        fired.as_secs_f64(),
        evicted_at.as_secs_f64(),
        resolved_at.as_secs_f64(),
        skip_fired.as_secs_f64()
    );
    assert!(still_there, "the alert fired before poolwarden evicted the pod");

    // Every dashboard expression, now that the story has produced every series.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queries = dashboard_queries();
    let mut problems = Vec::new();
    for (what, expr) in &queries {
        match prometheus.query(expr).await {
            Ok(r) if r.is_empty() => problems.push(format!("{what}: no series: {expr}")),
            Ok(r) => eprintln!("dashboard {what}: {} series", r.len()),
            Err(e) => problems.push(format!("{what}: {e}: {expr}")),
        }
    }
    assert!(problems.is_empty(), "dashboard queries:\n{}", problems.join("\n"));
    assert!(queries.len() >= 15, "{}", queries.len());

    // Paused: Argo CD shows Suspended.
    let patch = serde_json::json!({"metadata": {"annotations": {"poolwarden.io/paused": "true"}}});
    cluster
        .api::<poolwarden::policy::PoolPolicy>()
        .patch(
            "sportsbook",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("pause the policy");
    let suspended = wait_for_health(&cluster, "Suspended", "suspended-paused").await;
    eprintln!("Argo CD health: Healthy ({healthy}); Degraded ({degraded}); Suspended ({suspended})");

    controller.stop().await;
    if let Some(s) = cluster.sandbox {
        s.shutdown().await;
    }
}
