//! `.pre-commit-hooks.yaml` works in pre-commit itself (pinned in
//! .ci/packaging-requirements.txt): `pre-commit try-repo` runs this repository's
//! `poolwarden-check-system` hook in another git repository, passing a valid policy
//! and failing a misspelled one with `poolwarden check`'s own message. (The
//! `language: rust` hook runs the same entry after `cargo install`ing this repository,
//! which a test cannot afford; both hooks' entries and file types are compared here.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn packaging_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(".ci/packaging-venv")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run .ci/packaging-venv");
    assert!(out.status.success(), ".ci/packaging-venv failed; its output is above");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn try_repo(python: &Path, repo: &Path, file: &str) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_poolwarden")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(python)
        .args(["-m", "pre_commit", "try-repo"])
        .arg(std::env::current_dir().unwrap())
        .args(["poolwarden-check-system", "--files", file])
        .current_dir(repo)
        .env("PATH", path)
        .env("PRE_COMMIT_HOME", repo.join(".pre-commit-home"))
        // try-repo commits uncommitted changes of the hook repository to a shadow clone.
        .env("GIT_AUTHOR_NAME", "poolwarden test")
        .env("GIT_AUTHOR_EMAIL", "test@poolwarden.invalid")
        .env("GIT_COMMITTER_NAME", "poolwarden test")
        .env("GIT_COMMITTER_EMAIL", "test@poolwarden.invalid")
        .output()
        .expect("run pre-commit try-repo")
}

#[test]
fn pre_commit_runs_the_hook_and_fails_an_invalid_policy() {
    let python = packaging_python();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "-q"]);
    std::fs::create_dir(repo.join("policies")).unwrap();
    std::fs::copy("examples/minimal.yaml", repo.join("policies/ok.yaml")).unwrap();
    std::fs::copy(
        "tests/fixtures/invalid/misspelled-field.yaml",
        repo.join("policies/bad.yaml"),
    )
    .unwrap();
    git(repo, &["add", "policies"]);

    let ok = try_repo(&python, repo, "policies/ok.yaml");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(ok.status.success(), "the hook failed a valid policy:\n{said}");
    assert!(
        said.contains("poolwarden check (installed binary)") && said.contains("Passed"),
        "{said}"
    );

    let bad = try_repo(&python, repo, "policies/bad.yaml");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!bad.status.success(), "the hook passed a misspelled policy:\n{said}");
    assert!(
        said.contains(r#"spec.pool.maxIdelSeconds: unknown field "maxIdelSeconds": did you mean "maxIdleSeconds"?"#),
        "the hook's output lacks check's finding:\n{said}"
    );
}

#[test]
fn both_hooks_run_the_same_check_on_yaml_files() {
    let hooks = std::fs::read_to_string(".pre-commit-hooks.yaml").unwrap();
    let hooks: Vec<serde_json::Value> = serde_saphyr::from_str(&hooks).unwrap();
    let ids: Vec<&str> = hooks.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["poolwarden-check", "poolwarden-check-system"]);
    for hook in &hooks {
        assert_eq!(hook["entry"], "poolwarden check", "{hook}");
        assert_eq!(hook["types"], serde_json::json!(["yaml"]), "{hook}");
    }
    assert_eq!(hooks[0]["language"], "rust");
    assert_eq!(hooks[1]["language"], "system");
    // pre-commit's `language: rust` runs `cargo install --path .` here: the binary it
    // installs must be the one the entry names.
    let manifest = std::fs::read_to_string("Cargo.toml").unwrap();
    assert!(manifest.contains("name = \"poolwarden\"") && manifest.contains("default-run = \"poolwarden\""));
}
