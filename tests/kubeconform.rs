//! The published JSON Schema (`schemas/poolwarden.io/poolpolicy_v1alpha1.json`, the
//! CRDs-catalog layout) works in kubeconform as a GitOps pipeline runs it: every
//! example is valid, and each invalid fixture is rejected exactly when it is invalid at
//! the schema level — when `poolwarden check`'s structural layer (the same CRD schema)
//! rejects it, when it is not YAML, or when its apiVersion has no schema. The fixtures
//! only the semantic rules or CEL reject pass kubeconform: it does not run CEL, which
//! is why the README pairs it with `poolwarden check`.

#[path = "support/tools.rs"]
mod tools;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// As the README's GitOps section gives it.
const SCHEMA_LOCATION: &str = "schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json";

/// kubeconform's verdict on each PoolPolicy in one file: (status, message).
fn kubeconform(bin: &Path, file: &Path) -> Vec<(String, String)> {
    let out = Command::new(bin)
        .args([
            "-strict",
            "-verbose",
            "-output",
            "json",
            "-schema-location",
            SCHEMA_LOCATION,
        ])
        .arg(file)
        .output()
        .expect("run kubeconform");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "kubeconform's output on {} is not JSON ({e}):\n{stdout}\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources in kubeconform's report on {}: {report}", file.display()))
        .iter()
        // Other kinds in the same file (a ConfigMap) have no schema offline; not ours. A
        // text that is not YAML is reported without a kind; an empty document (a file's
        // leading comment) without a kind and without a status.
        .filter(|r| r["kind"] == "PoolPolicy" || (r["kind"] == "" && r["status"] != ""))
        .map(|r| {
            (
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["msg"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn kubeconform_accepts_every_example_with_the_published_schema() {
    let bin = tools::ensure_tool("kubeconform");
    let mut valid = 0;
    for file in yaml_files("examples") {
        let verdicts = kubeconform(&bin, &file);
        assert!(
            !verdicts.is_empty(),
            "{}: kubeconform saw no PoolPolicy",
            file.display()
        );
        for (status, msg) in verdicts {
            assert_eq!(status, "statusValid", "{}: {msg}", file.display());
            valid += 1;
        }
    }
    let policies: usize = yaml_files("examples")
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().matches("kind: PoolPolicy").count())
        .sum();
    assert_eq!(
        valid, policies,
        "every PoolPolicy of examples/ is validated, none skipped"
    );
}

/// Why a fixture is invalid at the schema level, or None when only the semantic rules
/// (or CEL, or metadata rules the schema does not carry) reject it.
fn schema_level_reason(text: &str) -> Option<String> {
    let documents = match poolwarden::check::yaml_tree::parse_documents(text) {
        Ok(documents) => documents,
        Err(e) => return Some(format!("not YAML: {}", e.message)),
    };
    let schema = poolwarden::crd::openapi_schema();
    for doc in documents.iter().filter(|d| d.value["kind"] == "PoolPolicy") {
        if doc.value["apiVersion"] != "poolwarden.io/v1alpha1" {
            return Some(format!("no schema for apiVersion {}", doc.value["apiVersion"]));
        }
        if let Some(p) = poolwarden::check::structural_problems(schema, &doc.value).first() {
            return Some(format!("structural: {}: {}", p.path, p.message));
        }
    }
    None
}

#[test]
fn kubeconform_rejects_exactly_the_schema_level_invalid_fixtures() {
    let bin = tools::ensure_tool("kubeconform");
    let mut table = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in yaml_files("tests/fixtures/invalid") {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let reason = schema_level_reason(&std::fs::read_to_string(&file).unwrap());
        let verdicts = kubeconform(&bin, &file);
        let rejected = verdicts.iter().any(|(status, _)| status != "statusValid");
        let expected = reason.is_some();
        if verdicts.is_empty() || rejected != expected {
            wrong.push(format!("{name}: schema-level: {reason:?}; kubeconform: {verdicts:?}"));
        }
        table.insert(name, (reason, verdicts));
    }
    for (name, (reason, verdicts)) in &table {
        eprintln!("{name}: {reason:?} -> {verdicts:?}");
    }
    assert!(
        wrong.is_empty(),
        "kubeconform disagrees with the schema layer:\n{}",
        wrong.join("\n")
    );
    // Not vacuous: the schema-level fixtures include each kind of structural problem.
    for name in [
        "misspelled-field",
        "negative-size",
        "non-numeric-size",
        "bad-duration",
        "unknown-enum-value",
        "pool-stats-port-out-of-range",
        "wrong-api-version",
        "not-yaml",
        "duplicated-key",
    ] {
        assert!(
            table.get(name).is_some_and(|(reason, _)| reason.is_some()),
            "{name} should be a schema-level fixture: {:?}",
            table.get(name)
        );
    }
    let rejected = table.values().filter(|(r, _)| r.is_some()).count();
    eprintln!(
        "{rejected} of {} invalid fixtures are schema-level and rejected by kubeconform",
        table.len()
    );
}
