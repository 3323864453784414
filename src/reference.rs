//! The policy reference (`docs/policy-reference.md`), generated from the CRD's own
//! schema so that it cannot drift from what the API server enforces.

use std::fmt::Write;

use serde_json::Value;

/// The reference as Markdown: one row per field of `spec`, in schema order, with its
/// type, default, constraints and description, then the rules across fields.
pub fn policy_reference() -> String {
    let schema = crate::crd::openapi_schema();
    let mut out = String::from(
        "# PoolPolicy reference\n\n\
         Generated from the CRD schema by `make generate` (`poolwarden crd --reference`);\n\
         `tests/crd.rs` fails when this file is stale. `kubectl explain poolpolicy.spec`\n\
         shows the same descriptions in a cluster.\n\n\
         `apiVersion: poolwarden.io/v1alpha1`, `kind: PoolPolicy`, namespaced, short name `ppol`.\n\n\
         | field | type | default | constraints | description |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    let mut rules = Vec::new();
    walk(&schema["properties"]["spec"], "spec", &mut out, &mut rules);
    out.push_str("\n## Rules across fields\n\nChecked by the API server (CEL) and by `poolwarden check`:\n\n");
    for (path, rule) in rules {
        let _ = writeln!(out, "- `{path}`: {rule}");
    }
    out
}

fn walk(node: &Value, path: &str, out: &mut String, rules: &mut Vec<(String, String)>) {
    for v in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        if let Some(m) = v["message"].as_str() {
            rules.push((path.to_owned(), m.to_owned()));
        }
    }
    let Some(props) = node["properties"].as_object() else {
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), out, rules);
        }
        return;
    };
    let required: Vec<&str> = node["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, child) in props {
        let child_path = format!("{path}.{name}");
        let mut constraints = Vec::new();
        if required.contains(&name.as_str()) {
            constraints.push("required".to_owned());
        }
        if let Some(values) = child["enum"].as_array() {
            let vs: Vec<String> = values.iter().map(|v| format!("`{}`", text(v))).collect();
            constraints.push(format!("one of {}", vs.join(", ")));
        }
        for (key, label) in [("minimum", "≥"), ("maximum", "≤")] {
            if let Some(n) = child[key].as_i64() {
                constraints.push(format!("{label} {n}"));
            }
        }
        if let Some(p) = child["pattern"].as_str() {
            constraints.push(format!("pattern `{}`", p.replace('|', "\\|")));
        }
        let description = child["description"]
            .as_str()
            .unwrap_or_default()
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let default = match &child["default"] {
            Value::Null => String::new(),
            v => format!("`{}`", text(v)),
        };
        let _ = writeln!(
            out,
            "| `{child_path}` | {} | {default} | {} | {description} |",
            type_of(child),
            constraints.join("; ")
        );
        walk(child, &child_path, out, rules);
    }
}

fn type_of(node: &Value) -> String {
    match node["type"].as_str() {
        Some("array") => format!("list of {}", type_of(&node["items"])),
        Some("object") if node.get("additionalProperties").is_some() => "map".to_owned(),
        Some(t) => t.to_owned(),
        None if node.get("x-kubernetes-int-or-string").is_some() => "int or string".to_owned(),
        None => "any".to_owned(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
