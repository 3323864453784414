//! Every request `poolwarden fly plan`, `fly reconcile --once` and `fly run` send is one
//! Fly's published OpenAPI document of the Machines API allows: the commands talk to
//! the sandbox's fake through Stoplight Prism (`prism proxy <document> <fake>
//! --errors`), which answers an error instead of forwarding any request, or passing
//! back any answer, the document refuses. The document is the committed copy
//! (`tests/fixtures/fly/`, digest checked); Prism is installed by `.ci/ensure-prism`
//! (pinned by `tools/prism/package-lock.json`, cached under /var/tmp).

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use poolwarden_sandbox::fly::{FakeFlyOptions, RateLimit};
use serde_json::Value;
use support::{
    e2e::{backends_of, eventually, http_get, pg},
    fly::*,
};

const DOCUMENT: &str = "tests/fixtures/fly/machines-openapi3.json";
const DOCUMENT_SHA256: &str = "45efe4aaecb2f7c0185831792cd7335528990a304bbbb7eb7e6f91725c53daeb";

/// The `prism` executable, installed (or found in the cache) by the project's script.
fn prism() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(Path::new(root).join(".ci/ensure-prism"))
        .current_dir(root)
        .output()
        .expect("running .ci/ensure-prism");
    assert!(
        out.status.success(),
        ".ci/ensure-prism failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The committed document, checked against its recorded digest, with every path under
/// the server URL's `/v1`: Prism matches requests against the paths alone (it answers
/// 404 "no path matched" for `/v1/apps/...`), so the base path is put where it looks.
fn document_for_prism(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(DOCUMENT)).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, DOCUMENT_SHA256, "{DOCUMENT} is not the recorded document");
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["servers"][0]["url"], "https://api.machines.dev/v1");
    let paths = doc["paths"].as_object().unwrap().clone();
    doc["paths"] = Value::Object(paths.into_iter().map(|(p, v)| (format!("/v1{p}"), v)).collect());
    let path = dir.join("machines-openapi3-v1.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

/// Prism in front of `upstream`, its log in `dir`.
struct Proxy {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Proxy {
    async fn start(dir: &Path, upstream: &str) -> Proxy {
        let document = document_for_prism(dir);
        let port = free_port();
        let log = dir.join("prism.log");
        let child = Command::new(prism())
            .args(["proxy", document.to_str().unwrap(), upstream, "--errors"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("prism");
        let proxy = Proxy {
            child,
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        let listening = eventually(Duration::from_secs(60), || async {
            proxy.log_text().contains("Prism is listening")
        })
        .await;
        assert!(listening, "prism did not start:\n{}", proxy.log_text());
        proxy
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines where Prism refused a request or an answer.
    fn refusals(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("✖") || l.to_lowercase().contains("violation"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A POST with a JSON body through the proxy, by hand: its status.
async fn post_json(url: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_owned();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.split_whitespace().nth(1)?.parse().ok()
    })
    .await
    .unwrap()
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reconcile_and_run_send_only_what_the_published_machines_api_allows() {
    // The real API answers null lists the document does not allow, and Prism checks
    // answers too: here the fake answers in the document's shape.
    let fake = start_with(FakeFlyOptions {
        answer_nulls: false,
        ..options(RateLimit::FLY_ACTION)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &fake.base_url()).await;
    let web = [machine(&fake, "web").await, machine(&fake, "web").await];
    let odds = [machine(&fake, "worker_odds").await, machine(&fake, "worker_odds").await];

    // The proxy does refuse what the document refuses: a restart with a body.
    let refused = post_json(&proxy.url, &format!("/v1/apps/{APP}/machines/{}/restart", web[0]), "{}").await;
    assert_eq!(refused, 422, "{}", proxy.log_text());
    assert_eq!(count(&fake, "POST", "/restart"), 0, "not forwarded");
    let before = proxy.refusals().len();
    assert!(before > 0, "the refusal shows in Prism's log:\n{}", proxy.log_text());

    let report_dir = policies_dir(&policy("Report"));
    let policies = report_dir.path().to_str().unwrap();
    let planned = run_at(&proxy.url, &["fly", "plan", "--policies", policies]).await;
    assert_eq!(
        planned.status.code(),
        Some(3),
        "{}\n{}",
        text(&planned),
        proxy.log_text()
    );
    let once = run_at(&proxy.url, &["fly", "reconcile", "--once", "--policies", policies]).await;
    assert_eq!(once.status.code(), Some(0), "{}\n{}", text(&once), proxy.log_text());
    for id in web.iter().chain(&odds) {
        assert!(lifetime_is_3(&fake.machine(id).unwrap()), "{id}");
    }

    // A leak, found and remedied by `fly run`: lease, restart, wait, metadata, all
    // through the proxy.
    let leaking = odds[0].clone();
    let leaking_name = instance("worker_odds", &leaking);
    let named = eventually(Duration::from_secs(20), || async {
        pool_config(&fake, &leaking).await["application_name"] == leaking_name.as_str()
    })
    .await;
    assert!(named, "{}", pool_config(&fake, &leaking).await);
    let db = pg().await;
    let ip = fake.machine(&leaking).unwrap()["private_ip"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(http_get(&ip, 8080, "/untracked?n=3").await.map(|(c, _)| c), Some(200));
    let reconciler = FlyRun::start(&proxy.url, policies);
    let restarted = eventually(Duration::from_secs(60), || async {
        count(&fake, "POST", "/restart") >= 1
            && backends_of(&db, &leaking_name).await < 3
            && reconciler.status()["status"]["remediations"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    })
    .await;
    let status = reconciler.status();
    drop(reconciler);
    assert!(restarted, "{status:#}\n{}", proxy.log_text());

    // A pool variable that is an app secret, with `secrets: Manage`: the secrets are set
    // and the running machines updated with `min_secrets_version`, through the proxy.
    fake.set_secret("DB_POOL_MAX", "20");
    let manage_dir = policies_dir(&policy_every_group("Manage"));
    let manage = manage_dir.path().to_str().unwrap();
    let managed = run_at(&proxy.url, &["fly", "reconcile", "--once", "--policies", manage]).await;
    assert_eq!(
        managed.status.code(),
        Some(0),
        "{}\n{}",
        text(&managed),
        proxy.log_text()
    );
    assert!(
        text(&managed).contains("app secrets set: DB_POOL_MAX"),
        "{}",
        text(&managed)
    );

    let refusals = proxy.refusals();
    assert_eq!(refusals[before..], [] as [String; 0], "{}", proxy.log_text());
    // Each kind of call went through the proxy.
    for (method, route) in [
        ("GET", "/machines"),
        ("GET", "/secrets"),
        ("POST", "/secrets"),
        ("POST", "/lease"),
        ("DELETE", "/lease"),
        ("POST", "/machines/{id}"),
        ("GET", "/wait"),
        ("POST", "/restart"),
        ("POST", "/metadata/{key}"),
    ] {
        assert!(count(&fake, method, route) > 0, "{method} {route}");
    }
    fake.shutdown().await;
}
