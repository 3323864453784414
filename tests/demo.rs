//! `make demo`'s core, in CI: the demo runs by itself (with its shorter windows),
//! finds and fixes the leak, prints its summary and leaves nothing behind.

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

fn demo_binary() -> PathBuf {
    let poolwarden = PathBuf::from(env!("CARGO_BIN_EXE_poolwarden"));
    let demo = poolwarden.with_file_name("poolwarden-demo");
    let leaky = poolwarden.with_file_name("leaky-app");
    if !demo.exists() || !leaky.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "poolwarden-sandbox",
                "--bin",
                "poolwarden-demo",
                "--bin",
                "leaky-app",
            ])
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    demo
}

#[test]
fn the_demo_finds_and_fixes_the_leak_and_leaves_nothing_running() {
    let deadline = support::waits::scaled(Duration::from_secs(90)).as_secs();
    let out = Command::new(demo_binary())
        .arg("--fast")
        .args(["--deadline", &deadline.to_string()])
        .arg("--poolwarden")
        .arg(env!("CARGO_BIN_EXE_poolwarden"))
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let long: Vec<&str> = stdout.lines().filter(|l| l.chars().count() > 120).collect();
    assert!(long.is_empty(), "lines over 120 columns: {long:#?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("pods of web: web-") && l.contains(" replaced")),
        "the rollout shows web's pods replaced, by name: {stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("Before:")).count(),
        1,
        "one before figure: {stdout}"
    );
    assert!(!stdout.contains(" 1 pods"), "{stdout}");
    // The policy's Event for a pass names every workload written; the demo wraps it.
    let unwrapped = stdout.replace("\n          ", " ");
    assert!(
        unwrapped
            .lines()
            .any(|l| l.trim_start().starts_with("event PoolEnvUpdated:")
                && l.contains("Deployment worker-odds: setting")),
        "{stdout}"
    );
    assert!(stdout.contains("event Restarted: evicted pod worker-odds-"), "{stdout}");
    let summary = stdout.split("Summary").nth(1).expect("a summary");
    assert!(
        summary.contains("Found: worker-odds-") && summary.contains("LifetimeOverrun"),
        "{summary}"
    );
    assert!(
        summary.contains("Left running: 0 pod processes, 0 database backends"),
        "{summary}"
    );
}

#[test]
fn without_a_database_the_demo_says_so_clearly() {
    let out = Command::new(demo_binary())
        .arg("--poolwarden")
        .arg(env!("CARGO_BIN_EXE_poolwarden"))
        .env("DATABASE_URL", "postgres://demo:secret@127.0.0.1:1/none")
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the demo needs a PostgreSQL") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password is not printed: {stderr}");
}
