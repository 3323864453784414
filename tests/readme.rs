//! Every command README.md shows in a `sh` block is run — here, or by `.ci/run` — or
//! is listed below with the reason it cannot run on a machine without a cluster,
//! Docker or a Helm binary (and what checks it instead). A new README command that is
//! neither fails this test.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use poolwarden_sandbox::kubectl::kubectl;
use support::e2e::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_poolwarden");

/// Commands run by `.ci/run` itself.
const RUN_BY_CI: &[&str] = &[
    "make test",
    "make lint",
    "make check-packaging",
    "make test-cluster",
    "make demo-cluster",
    "make image",
];

/// Commands run by this test (the sandbox walk-through and `check`) or by another test.
const RUN_BY_TESTS: &[(&str, &str)] = &[
    (
        "cargo run -p poolwarden-sandbox --bin poolwarden-cluster",
        "make test-cluster starts it (tests/cluster/test-cluster.sh)",
    ),
    (
        "make demo",
        "tests/demo.rs runs the demo binary `make demo` runs, to its summary",
    ),
    ("cargo run -- check examples/", "this test"),
    ("cargo run -- check tests/fixtures/invalid", "this test"),
    (
        "cosign verify-blob --key dist/cosign.pub",
        "tests/release_artifacts.rs verifies every artifact's signature so, on a release it makes with a throwaway key",
    ),
    (
        "(cd dist && sha256sum --check SHA256SUMS)",
        "tests/release_artifacts.rs, in the release it makes",
    ),
    (
        "kubectl krew install --manifest=dist/poolwarden.krew.yaml",
        "tests/release_artifacts.rs, with krew built from its Go module and KREW_ROOT in a temporary directory",
    ),
    (
        "kubeconform -strict -summary -schema-location 'schemas/",
        "tests/kubeconform.rs, with -output json to read each resource's verdict, on examples/ and every invalid fixture",
    ),
    (
        "rm -f /tmp/sandbox.kubeconfig",
        "this test, the sandbox block pasted as one",
    ),
    (
        "cargo build -q --locked --workspace --bins",
        "this test (the binaries the test harness built)",
    ),
    (
        "cargo run -q --locked -p poolwarden-sandbox --bin poolwarden-sandbox -- --kubeconfig /tmp/sandbox.kubeconfig &",
        "this test, the sandbox block pasted as one",
    ),
    (
        "timeout 60 sh -c 'until [ -s /tmp/sandbox.kubeconfig ]",
        "this test, the sandbox block pasted as one",
    ),
    (
        "export KUBECONFIG=/tmp/sandbox.kubeconfig",
        "this test, the sandbox block pasted as one",
    ),
    (
        "cargo run -q --locked -- crd | kubectl apply -f -",
        "this test, the sandbox block pasted as one",
    ),
    (
        "kubectl create namespace billing --dry-run=client -o yaml | kubectl apply -f -",
        "this test, the sandbox block pasted as one",
    ),
    (
        "kubectl apply -f examples/minimal.yaml",
        "this test, the sandbox block pasted as one",
    ),
    (
        "kubectl get poolpolicies -A",
        "this test, the sandbox block pasted as one",
    ),
    ("make postgres", "by `make test` and `make demo`, which .ci/run runs"),
    (
        "make test-postgres PG=16",
        ".ci/run runs the script it runs, .ci/test-postgres MAJOR, once per major as a step of its own",
    ),
    (
        "kubectl -n shop create secret generic pg-monitor",
        "this test, against the sandbox",
    ),
    (
        "export FLY_API_TOKEN=",
        "tests/e2e_fly.rs sets FLY_API_TOKEN, FLY_API_URL and the database URL variable",
    ),
    (
        "poolwarden fly plan --policies",
        "this test on the example policy, and tests/e2e_fly.rs against the fake Machines API",
    ),
    (
        "poolwarden fly reconcile --once --policies",
        "this test on the example policy, and tests/e2e_fly.rs against the fake Machines API",
    ),
    (
        "poolwarden fly run --policies",
        "tests/e2e_fly.rs, against the fake Machines API, with --status-dir",
    ),
];

/// Commands that need what this machine does not have.
const NOT_RUNNABLE_HERE: &[(&str, &str)] = &[
    (
        "docker build",
        "Docker cannot run here; the Dockerfile's build stage runs `cargo build --release --locked`, as CI builds",
    ),
    (
        "skopeo copy oci:target/image/oci:0.1.0 docker://REGISTRY/poolwarden:0.1.0",
        "no registry here; tests/image.rs unpacks and runs the layout `make image` writes",
    ),
    (
        "helm install",
        "no cluster and no helm binary; .ci/check-packaging lints and renders the chart with Helm's own SDK and validates every object",
    ),
    (
        "kubectl apply -k config/default",
        "needs a real cluster (RBAC, Namespaces); .ci/check-packaging renders it with `kubectl kustomize` and validates it",
    ),
    (
        "sed 's/namespace: shop/namespace: billing/' config/samples/secret-reader-role.yaml | kubectl apply -f -",
        "needs a real cluster (RBAC); .ci/check-packaging validates the sample Role",
    ),
];

/// The commands of the README's `sh` blocks, continuation lines joined, comments dropped.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            continue;
        }
        if !in_sh || t.is_empty() || t.starts_with('#') {
            continue;
        }
        let command = t.split(" # ").next().unwrap_or(t).trim_end();
        if let Some(head) = command.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(command);
        out.push(std::mem::take(&mut pending));
    }
    out
}

#[test]
fn every_readme_command_is_run_or_says_why_not() {
    let commands = readme_commands();
    assert!(commands.len() >= 10, "README commands found: {commands:?}");
    let mut unaccounted = Vec::new();
    for c in &commands {
        // `make test PG=all` is `make test`; `make test-postgres` is not.
        let known = RUN_BY_CI.iter().any(|k| c == k || c.starts_with(&format!("{k} ")))
            || RUN_BY_TESTS.iter().any(|(k, _)| c.starts_with(k))
            || NOT_RUNNABLE_HERE.iter().any(|(k, _)| c.starts_with(k));
        if !known {
            unaccounted.push(c.clone());
        }
    }
    assert!(
        unaccounted.is_empty(),
        "README commands neither run by a test or .ci/run nor explained: {unaccounted:?}"
    );
    let ci = std::fs::read_to_string(".ci/run").unwrap();
    for c in RUN_BY_CI {
        // `step NAME COMMAND` times a step and runs COMMAND.
        let runs = |l: &str| {
            let l = l.trim();
            l == *c || (l.starts_with("step ") && l.ends_with(&format!(" {c}")))
        };
        assert!(ci.lines().any(runs), ".ci/run does not run {c}");
    }
}

#[test]
fn check_as_the_readme_shows_it() {
    let ok = Command::new(BIN).args(["check", "examples/"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stdout));
    let bad = Command::new(BIN)
        .args(["check", "tests/fixtures/invalid"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    // The line the README quotes is what check prints.
    let quoted = "tests/fixtures/invalid/misspelled-field.yaml:13: spec.pool.maxIdelSeconds: unknown field \"maxIdelSeconds\": did you mean \"maxIdleSeconds\"?";
    assert!(std::fs::read_to_string("README.md").unwrap().contains(quoted));
    assert!(text.lines().any(|l| l == quoted), "{text}");
}

/// The sandbox binary, next to this test's binary (built if it is not there yet).
fn sandbox_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join("poolwarden-sandbox");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "poolwarden-sandbox", "--bin", "poolwarden-sandbox"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's sh block that starts the sandbox, as written.
fn sandbox_block() -> String {
    let readme = std::fs::read_to_string("README.md").unwrap();
    readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("--bin poolwarden-sandbox"))
        .expect("README has the sandbox block")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_block_works_pasted_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sandbox.kubeconfig");
    let pid_file = dir.path().join("sandbox.pid");
    // A stale kubeconfig from an earlier run (a port nobody serves) must not be used.
    std::fs::write(&kubeconfig, "stale").unwrap();
    // The block as a user pastes it, with this test's own file names and the binaries
    // the harness built instead of `cargo` (which would wait on the harness's build lock).
    let mut script = String::from("set -euo pipefail\n");
    for line in sandbox_block().lines() {
        let line = line
            .replace("/tmp/sandbox.kubeconfig", &kubeconfig.display().to_string())
            .replace("cargo build -q --locked --workspace --bins", "true")
            .replace(
                "cargo run -q --locked -p poolwarden-sandbox --bin poolwarden-sandbox --",
                &sandbox_bin().display().to_string(),
            )
            .replace("cargo run -q --locked --", BIN);
        script.push_str(&line);
        script.push('\n');
        if line.ends_with('&') {
            script.push_str(&format!("echo $! > {}\n", pid_file.display()));
        }
    }
    // Files, not pipes: the sandbox left running in the background holds them open.
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let out = tokio::time::timeout(
        support::waits::scaled(Duration::from_secs(60)),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .status(),
    )
    .await;
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    let sandbox = pid.trim().parse::<u32>().ok();
    let result = match out {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the block did not finish".to_owned()),
    };
    let stopped = sandbox.map(|pid| {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        // It removes its kubeconfig on the way out.
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            !kubeconfig.exists()
        })
    });
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let status = result.unwrap_or_else(|e| panic!("{e}\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(status.success(), "{script}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.lines().any(|l| {
            // Columns: NAMESPACE NAME ... (examples/minimal.yaml: billing/billing).
            let mut columns = l.split_whitespace();
            columns.next() == Some("billing") && columns.next() == Some("billing")
        }),
        "kubectl get poolpolicies -A shows the policy: {stdout}"
    );
    assert_eq!(
        stopped,
        Some(true),
        "the sandbox stopped on SIGTERM and removed its kubeconfig"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_secret_command_as_the_readme_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sandbox.kubeconfig");
    let _sandbox = Killed(
        Command::new(sandbox_bin())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = eventually(Duration::from_secs(30), || async {
        kubeconfig.exists() && kubectl(&kubeconfig, &["get", "namespaces"], None).0
    })
    .await;
    assert!(up, "the sandbox serves its kubeconfig");
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(namespace));
    assert!(ok, "{out}");
    let (ok, secret) = kubectl(
        &kubeconfig,
        &[
            "-n",
            "shop",
            "create",
            "secret",
            "generic",
            "pg-monitor",
            "--from-literal=url=postgres://poolwarden:secret@db:5432/app?sslmode=verify-full",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    assert!(ok, "{secret}");
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&secret));
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&kubeconfig, &["-n", "shop", "get", "secret", "pg-monitor"], None);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fly_commands_as_the_readme_shows_them_run_on_the_example_policy() {
    use poolwarden_sandbox::fly::{FakeFly, FakeFlyOptions};
    // An app with no machines yet: the example policy is read, its three groups are
    // reported, and nothing is written.
    let fake = FakeFly::start(FakeFlyOptions {
        app: "sportsbook".into(),
        token: "readme".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for args in [
        &["fly", "plan", "--policies", "examples/fly-sportsbook.yaml"][..],
        &[
            "fly",
            "reconcile",
            "--once",
            "--policies",
            "examples/fly-sportsbook.yaml",
        ][..],
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("FLY_API_TOKEN", "readme")
            .env("FLY_API_URL", fake.base_url())
            .env("POOLWARDEN_DATABASE_URL", support::e2e::database_url());
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for group in ["web", "worker_odds", "worker_settlement"] {
            assert!(text.contains(&format!("FlyProcessGroup/{group}")), "{text}");
        }
    }
    assert_eq!(fake.writes(), 0);
    fake.shutdown().await;
}
