//! The committed CRD is exactly what the binary generates, and it carries what
//! `kubectl explain`, `kubectl get` and the API server's validation need.

use serde_json::Value;

#[test]
fn the_committed_crd_is_the_generated_one() {
    let committed = std::fs::read_to_string("crds/poolpolicies.poolwarden.io.yaml").unwrap();
    assert!(
        committed == poolwarden::crd::crd_yaml(),
        "crds/poolpolicies.poolwarden.io.yaml is stale: run `make generate`"
    );
}

#[test]
fn the_committed_policy_reference_is_the_generated_one() {
    let committed = std::fs::read_to_string("docs/policy-reference.md").unwrap_or_default();
    assert!(
        committed == poolwarden::reference::policy_reference(),
        "docs/policy-reference.md is stale: run `make generate`"
    );
}

fn crd() -> Value {
    serde_json::to_value(<poolwarden::policy::PoolPolicy as kube::CustomResourceExt>::crd()).unwrap()
}

#[test]
fn every_field_has_a_description() {
    fn visit(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(child_path.clone());
                }
                visit(child, &child_path, missing);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
                visit(child, path, missing);
            }
        }
    }
    let crd = crd();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    visit(schema, "", &mut missing);
    // apiVersion/kind/metadata are described by the API server itself.
    missing.retain(|p| ![".apiVersion", ".kind", ".metadata"].contains(&p.as_str()));
    assert!(missing.is_empty(), "fields without description: {missing:?}");
}

#[test]
fn the_crd_has_printer_columns_status_subresource_and_cel_rules() {
    let crd = crd();
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Workloads", "Leaking", "Ready", "Observed", "Age"]);
    assert!(version["subresources"]["status"].is_object());
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["ppol"]));
    let text = serde_json::to_string(&crd).unwrap();
    for rule in [
        "self.minSize <= self.maxSize",
        "has(self.poolStats)",
        "self.maxRestartsPerHour >= 1",
        "size(self.matchLabels) > 0",
        "duration(self) > duration('0s')",
    ] {
        assert!(text.contains(rule), "CEL rule {rule:?} missing from the CRD");
    }
}

#[test]
fn crd_subcommand_prints_the_committed_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string("crds/poolpolicies.poolwarden.io.yaml").unwrap()
    );
}

#[test]
fn the_published_json_schema_is_the_generated_one() {
    let path = poolwarden::json_schema::published_path();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == poolwarden::json_schema::json_schema(),
        "{path} is stale: run `make generate`"
    );
}
