//! `check`, `plan -f` and `fly --policies` against hostile files: a FIFO, a device or
//! an endless stream is refused at once (exit 2) in little memory, and a file beyond
//! the YAML parser's budgets gets the budget in the author's words.

use std::{
    fs,
    process::{Command, Output, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_poolwarden");

/// Runs with a deadline: a command that would hang (a FIFO opened for reading waits
/// for a writer; an endless stream read whole never ends) is killed and exits 124,
/// not the 2 each test asserts. No timing is asserted: on a loaded machine a process
/// can take seconds to start, and a hang is what the deadline is for.
fn run(args: &[&str], stdin: Stdio) -> Output {
    let child = Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args(args)
        .env("FLY_API_TOKEN", "unused")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fifo(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let status = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success());
    path.display().to_string()
}

#[test]
fn a_fifo_in_a_scanned_directory_is_exit_2_at_once_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo(dir.path(), "ok.yaml");
    for args in [
        vec!["check", dir.path().to_str().unwrap()],
        vec!["check", &path],
        vec!["plan", "-f", &path],
        vec!["fly", "plan", "--policies", &path],
        vec!["fly", "plan", "--policies", dir.path().to_str().unwrap()],
    ] {
        let out = run(&args, Stdio::null());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{path}: not a regular file (a FIFO)")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn devices_are_not_regular_files_and_standard_input_stops_at_4_mib() {
    for args in [
        vec!["check", "/dev/zero"],
        vec!["plan", "-f", "/dev/zero"],
        vec!["fly", "plan", "--policies", "/dev/zero"],
    ] {
        let out = run(&args, Stdio::null());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("/dev/zero: not a regular file (a character device)"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run(&["check", "-"], fs::File::open("/dev/zero").unwrap().into());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("<stdin>: larger than 4 MiB, the most poolwarden reads from one policy file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_file_over_4_mib_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let file = fs::File::create(&big).unwrap();
    file.set_len(4 * 1024 * 1024 + 1).unwrap();
    let out = run(&["check", big.to_str().unwrap()], Stdio::null());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("big.yaml: larger than 4 MiB"), "{}", stderr(&out));
}

#[test]
fn the_parser_budgets_are_reported_in_the_authors_words() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.yaml");
    fs::write(&docs, "---\n".repeat(10_000)).unwrap();
    let nodes = dir.path().join("nodes.yaml");
    fs::write(&nodes, format!("a:\n{}", "- 1\n".repeat(260_000))).unwrap();
    let deep = dir.path().join("deep.yaml");
    fs::write(&deep, format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
    for (file, want) in [
        (&docs, "too large to check: more than 1,024 documents in one file"),
        (&nodes, "too large to check: more than 250,000 YAML nodes"),
        (&deep, "too large to check: nested more than 64 levels deep"),
    ] {
        let out = run(&["check", file.to_str().unwrap()], Stdio::null());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(want), "{text}");
        assert!(!text.contains("budget breached") && !text.contains("{"), "{text}");
    }
}
