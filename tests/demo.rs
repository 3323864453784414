//! `make demo`'s core, in CI: the demo runs by itself (with its shorter windows),
//! finds and fixes the leak, prints its summary and leaves nothing behind.

use std::{path::PathBuf, process::Command};

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
    let out = Command::new(demo_binary())
        .arg("--fast")
        .arg("--poolwarden")
        .arg(env!("CARGO_BIN_EXE_poolwarden"))
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("event PoolEnvUpdated: Deployment worker-odds"),
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
