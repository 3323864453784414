//! `poolwarden check`: every bad-policy fixture yields exactly the problems it must,
//! the examples are valid, the CLI's exit codes, and the CRD's CEL rules agree with
//! the Rust rules on the same fixtures.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use poolwarden::{
    check::{check_source, yaml_tree},
    policy::{PoolPolicy, validate},
};

const BIN: &str = env!("CARGO_BIN_EXE_poolwarden");

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir("tests/fixtures/invalid")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn findings_of(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    let (_, findings) = check_source("f", &text);
    findings
        .iter()
        .map(|f| {
            if f.path.is_empty() {
                format!("{}: {}", f.line, f.message)
            } else {
                format!("{}: {}: {}", f.line, f.path, f.message)
            }
        })
        .collect()
}

#[test]
fn every_bad_fixture_yields_exactly_its_expected_problems() {
    let files = fixtures();
    assert!(
        files.len() >= 15,
        "need at least 15 distinct bad policies, have {}",
        files.len()
    );
    for file in files {
        let expected: Vec<String> = fs::read_to_string(file.with_extension("expected"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(!expected.is_empty(), "{} has no expectation", file.display());
        assert_eq!(findings_of(&file), expected, "{}", file.display());
    }
}

#[test]
fn the_examples_are_valid_policies() {
    let mut checked = 0;
    for entry in fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let (policies, findings) = check_source(&path.display().to_string(), &text);
        assert!(findings.is_empty(), "{}: {findings:?}", path.display());
        checked += policies;
    }
    assert!(
        checked >= 2,
        "expected the sportsbook and minimal examples, checked {checked}"
    );
}

#[test]
fn the_sportsbook_example_carries_the_settings_the_seeds_arrived_at() {
    let text = fs::read_to_string("examples/sportsbook.yaml").unwrap();
    let doc = yaml_tree::parse_documents(&text).unwrap().remove(0);
    let policy: PoolPolicy = serde_json::from_value(doc.value).unwrap();
    let resolved = validate(&policy.spec).unwrap();
    assert_eq!(resolved.pool.min_size, Some(0));
    assert_eq!(resolved.pool.max_idle_seconds, Some(60));
    assert_eq!(resolved.pool.max_lifetime_seconds, Some(600));
    let components = &policy.spec.selector.as_ref().unwrap().match_expressions[0].values;
    assert_eq!(
        components.as_deref(),
        Some(&["web".into(), "worker-odds".into(), "worker-settlement".into()][..])
    );
}

#[test]
fn check_exits_0_on_the_examples() {
    let out = Command::new(BIN).args(["check", "examples"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty());
}

#[test]
fn check_exits_1_with_one_line_per_problem_on_the_bad_fixtures() {
    let out = Command::new(BIN)
        .args(["check", "tests/fixtures/invalid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut expected = Vec::new();
    for file in fixtures() {
        for line in fs::read_to_string(file.with_extension("expected")).unwrap().lines() {
            expected.push(format!("{}:{line}", file.display()));
        }
    }
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn check_reports_json_for_machines() {
    let out = Command::new(BIN)
        .args([
            "check",
            "-o",
            "json",
            "tests/fixtures/invalid/min-size-above-max-size.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["problems"][0]["path"], "spec.pool.minSize");
    assert_eq!(body["problems"][0]["line"], 12);
}

#[test]
fn check_reads_standard_input() {
    let mut child = Command::new(BIN)
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let text = fs::read("tests/fixtures/invalid/misspelled-field.yaml").unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &text).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"<stdin>:13: spec.pool.maxIdelSeconds: unknown field "maxIdelSeconds": did you mean "maxIdleSeconds"?"#
    );
}

#[test]
fn check_exits_2_when_a_path_cannot_be_read() {
    let out = Command::new(BIN).args(["check", "no/such/file.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/file.yaml: cannot read"));

    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("blob.yaml");
    fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let out = Command::new(BIN).arg("check").arg(&binary).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a text file"));
}

#[test]
fn check_skips_other_kinds_silently() {
    let (checked, findings) = check_source(
        "f",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {maxIdelSeconds: '1'}\n",
    );
    assert_eq!((checked, findings.len()), (0, 0));
}

/// The rules the Rust validator has that the CRD cannot carry as CEL (regular-language
/// or cross-list checks the schema already narrows, or that need Rust parsing).
const RUST_ONLY: &[&str] = &[
    "is not an environment variable name",
    "is set twice",
    "unknown operator",
    "needs values",
    "takes no values",
    "is not a JSON pointer",
    "is not a metric selector",
];

#[test]
fn the_crd_cel_rules_and_the_rust_rules_agree_on_every_fixture() {
    let schema = poolwarden::crd::openapi_schema();
    let mut compared = 0;
    for file in fixtures().into_iter().chain([
        PathBuf::from("examples/sportsbook.yaml"),
        PathBuf::from("examples/minimal.yaml"),
        PathBuf::from("examples/fly-sportsbook.yaml"),
    ]) {
        let Ok(docs) = yaml_tree::parse_documents(&fs::read_to_string(&file).unwrap()) else {
            continue;
        };
        for doc in docs.into_iter().filter(|d| d.value["kind"] == "PoolPolicy") {
            // Structurally broken documents never reach CEL on a real API server either.
            let Ok(policy) = serde_json::from_value::<PoolPolicy>(doc.value) else {
                continue;
            };
            if poolwarden::check::policy_problems(schema, &serde_json::to_value(&policy).unwrap())
                .iter()
                .any(|p| p.message.contains("is not a duration"))
            {
                continue;
            }
            let mut rust: Vec<String> = validate(&policy.spec)
                .err()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !RUST_ONLY.iter().any(|only| p.message.contains(only)))
                .map(|p| p.message)
                .collect();
            // The object the API server validates has every default filled in: serialize the typed value.
            let object = serde_json::to_value(&policy).unwrap();
            let mut cel: Vec<String> = match kube::core::cel::Validator::new().validate(schema, &object, None) {
                Ok(()) => vec![],
                Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
            };
            rust.sort();
            cel.sort();
            assert_eq!(
                rust.len(),
                cel.len(),
                "{}: rust {rust:?} vs CEL {cel:?}",
                file.display()
            );
            for (r, c) in rust.iter().zip(&cel) {
                assert!(
                    r.starts_with(c.as_str()) || c.contains(r.as_str()),
                    "{}: rust {r:?} vs CEL {c:?}",
                    file.display()
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 12, "only {compared} fixtures reached the CEL comparison");
}

/// The fixture of one alternative of the refused-name pattern: `LD_.*` is
/// `refused-env-ld.yaml`, `_JAVA_OPTIONS` is `refused-env-java-options.yaml`.
fn refused_env_fixture(alternative: &str) -> PathBuf {
    let slug = alternative
        .replace(".*", "")
        .replace("[A-Z0-9]*", "")
        .trim_matches('_')
        .to_lowercase()
        .replace('_', "-");
    PathBuf::from(format!("tests/fixtures/invalid/refused-env-{slug}.yaml"))
}

#[test]
fn every_refused_env_name_has_a_fixture_that_rust_and_cel_both_reject_naming_the_rule() {
    use poolwarden::policy::validate::{REFUSED_ENV_MESSAGE, REFUSED_ENV_PATTERN};
    let alternatives = REFUSED_ENV_PATTERN
        .strip_prefix("^(")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap();
    let schema = poolwarden::crd::openapi_schema();
    let mut checked = 0;
    for alternative in alternatives.split('|') {
        let file = refused_env_fixture(alternative);
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{alternative}: {}: {e}", file.display()));
        let policy: PoolPolicy = serde_saphyr::from_str(&text).unwrap();
        let rust = validate(&policy.spec).unwrap_err();
        assert_eq!(rust.len(), 1, "{}: {rust:?}", file.display());
        assert!(rust[0].message.starts_with(REFUSED_ENV_MESSAGE), "{rust:?}");
        let object = serde_json::to_value(&policy).unwrap();
        let cel: Vec<String> = kube::core::cel::Validator::new()
            .validate(schema, &object, None)
            .unwrap_err()
            .into_vec()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(cel, [REFUSED_ENV_MESSAGE], "{}", file.display());
        checked += 1;
    }
    // The names the issue lists by name, at least.
    for listed in [
        "PATH",
        "LD_PRELOAD",
        "DYLD_INSERT_LIBRARIES",
        "NODE_OPTIONS",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PERL5OPT",
        "RUBYOPT",
        "BASH_ENV",
        "ENV",
        "GCONV_PATH",
        "HOME",
        "SHELL",
    ] {
        assert!(poolwarden::policy::validate::env_name_is_refused(listed), "{listed}");
    }
    for allowed in [
        "DB_POOL_MAX",
        "PATHWAY",
        "MY_PATH",
        "ENVIRONMENT",
        "PGBOUNCER_POOL_SIZE",
        "path",
    ] {
        assert!(!poolwarden::policy::validate::env_name_is_refused(allowed), "{allowed}");
    }
    assert!(checked >= 30, "{checked}");
}

#[test]
fn check_warns_of_values_a_pool_library_would_replace_and_still_exits_0() {
    let file = "tests/fixtures/warnings/hikari-below-its-minimums.yaml";
    let out = Command::new(BIN).args(["check", file]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "{file}:16: spec.pool.maxLifetimeSeconds: warning: SpringBoot: HikariCP replaces a maxLifetime below 30 s"
        )),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:15: spec.pool.maxIdleSeconds: warning: SpringBoot: HikariCP replaces an idleTimeout below 10 s"
        )),
        "{stdout}"
    );
    let json = Command::new(BIN).args(["check", "-o", "json", file]).output().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["valid"], true);
    assert_eq!(body["warnings"][0]["path"], "spec.pool.maxLifetimeSeconds");
}
