//! Structural validation of a document against the CRD's own openAPIV3Schema: the
//! checks a real API server makes before any CEL rule, plus one it does not make
//! loudly — unknown fields, which it silently prunes, so a misspelled field would
//! quietly do nothing. Those get a did-you-mean hint.

use serde_json::Value;

use crate::policy::{Problem, duration::DURATION_PATTERN};

/// Walks `value` against `schema` and returns every structural problem.
pub fn structural_problems(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    walk(schema, value, "", &mut problems);
    problems
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn walk(schema: &Value, value: &Value, path: &str, problems: &mut Vec<Problem>) {
    let mut push = |message: String| {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        })
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && !path.is_empty() {
            push(format!("must not be empty (null); expected {}", expected_type(schema)));
        }
        return;
    }
    // A value of the wrong type or outside its enum is not checked further: every
    // other problem would follow from that one.
    if let Some(message) = type_problem(schema, value).or_else(|| enum_problem(schema, value)) {
        push(message);
        return;
    }
    for message in pattern_problem(schema, value)
        .into_iter()
        .chain(bound_problems(schema, value))
    {
        push(message);
    }
    match value {
        Value::Object(map) => walk_object(schema, map, path, problems),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

fn type_problem(schema: &Value, value: &Value) -> Option<String> {
    let ty = schema.get("type").and_then(Value::as_str)?;
    let fits = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    (!fits).then(|| format!("expected {}, got {}", expected_type(schema), describe(value)))
}

fn enum_problem(schema: &Value, value: &Value) -> Option<String> {
    let allowed = schema.get("enum").and_then(Value::as_array)?;
    if allowed.contains(value) {
        return None;
    }
    let names: Vec<String> = allowed
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect();
    let hint = value
        .as_str()
        .and_then(|v| did_you_mean(v, names.iter().map(String::as_str)));
    Some(format!(
        "unknown value {}; expected one of {}{}",
        describe(value),
        names.join(", "),
        hint.map(|h| format!(" (did you mean {h}?)")).unwrap_or_default()
    ))
}

fn pattern_problem(schema: &Value, value: &Value) -> Option<String> {
    let (pattern, text) = (schema.get("pattern").and_then(Value::as_str)?, value.as_str()?);
    // The patterns come from our own schema; a pattern the regex crate refuses is a
    // bug in the schema, not in the input, and is skipped here (a test compiles them all).
    let re = regex::Regex::new(pattern).ok()?;
    if re.is_match(text) {
        return None;
    }
    let shown = describe(value);
    Some(if pattern == DURATION_PATTERN {
        format!("{shown} is not a duration: write a number and a unit (h, m, s, ms), e.g. 90s, 10m, 1h30m")
    } else {
        format!("{shown} does not match the pattern {pattern}")
    })
}

/// The API server's bounds (they also keep CEL rules within their cost budget).
fn bound_problems(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(max), Some(text)) = (schema.get("maxLength").and_then(Value::as_u64), value.as_str())
        && text.chars().count() as u64 > max
    {
        out.push(format!("longer than {max} characters"));
    }
    if let (Some(max), Some(items)) = (schema.get("maxItems").and_then(Value::as_u64), value.as_array())
        && items.len() as u64 > max
    {
        out.push(format!("{} items: must have at most {max}", items.len()));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!("{value} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!("{value} is above the maximum {max}"));
        }
    }
    out
}

fn walk_object(schema: &Value, map: &serde_json::Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                problems.push(Problem {
                    path: child_path(path, field),
                    message: "required field is missing".into(),
                });
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (name, child) in map {
        // Every object has these; the CRD schema leaves them to the API server.
        if path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let child_path = child_path(path, name);
        if let Some(child_schema) = properties.and_then(|p| p.get(name)) {
            walk(child_schema, child, &child_path, problems);
        } else if let Some(additional) = additional.filter(|a| a.is_object()) {
            walk(additional, child, &child_path, problems);
        } else if let Some(properties) = properties.filter(|_| !preserve) {
            let hint = did_you_mean(name, properties.keys().map(String::as_str));
            problems.push(Problem {
                path: child_path,
                message: match hint {
                    Some(h) => format!("unknown field {name:?}: did you mean {h:?}?"),
                    None => format!(
                        "unknown field {name:?}: the API server would drop it; known fields are {}",
                        properties.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                },
            });
        }
    }
}

/// The closest candidate, if it is close enough to be a plausible typo.
fn did_you_mean<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = input.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::damerau_levenshtein(&lowered, &c.to_ascii_lowercase()), c))
        .filter(|(distance, c)| *distance <= 2.max(c.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn expected_type(schema: &Value) -> String {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("a value");
    match (ty, schema.get("format").and_then(Value::as_str)) {
        ("integer", Some(format)) if format.starts_with('u') => "a non-negative integer".into(),
        ("integer", _) => "an integer".into(),
        ("object", _) => "a mapping".into(),
        ("array", _) => "a list".into(),
        ("boolean", _) => "true or false".into(),
        (other, _) => format!("a {other}"),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // A connection string pasted into the wrong field may carry a password.
        Value::String(s) if crate::observe::conninfo::looks_like_connection_string(s) => {
            "a connection string (not shown)".into()
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_field_gets_the_field_it_was_meant_to_be() {
        let candidates = ["maxIdleSeconds", "maxLifetimeSeconds", "maxSize", "minSize"];
        assert_eq!(
            did_you_mean("maxIdelSeconds", candidates.into_iter()),
            Some("maxIdleSeconds")
        );
        assert_eq!(did_you_mean("minsize", candidates.into_iter()), Some("minSize"));
        assert_eq!(did_you_mean("replicas", candidates.into_iter()), None);
    }

    #[test]
    fn lengths_and_item_counts_past_the_schemas_bounds_are_reported() {
        let schema = crate::crd::openapi_schema();
        let entries: Vec<Value> = (0..65)
            .map(|i| serde_json::json!({"name": format!("EXTRA_{i}"), "value": "1"}))
            .collect();
        let policy = serde_json::json!({
            "spec": {"pool": {"maxSize": 5, "extraEnv": entries, "env": {"maxSize": "X".repeat(257)}}}
        });
        let spec_schema = &schema["properties"]["spec"];
        let problems = structural_problems(spec_schema, &policy["spec"]);
        let messages: Vec<(String, String)> = problems.into_iter().map(|p| (p.path, p.message)).collect();
        assert!(
            messages.contains(&("pool.extraEnv".into(), "65 items: must have at most 64".into())),
            "{messages:?}"
        );
        assert!(
            messages.contains(&("pool.env.maxSize".into(), "longer than 256 characters".into())),
            "{messages:?}"
        );
    }

    #[test]
    fn every_pattern_in_the_crd_compiles() {
        fn visit(v: &Value, found: &mut usize) {
            match v {
                Value::Object(m) => {
                    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
                        regex::Regex::new(p).unwrap();
                        *found += 1;
                    }
                    m.values().for_each(|c| visit(c, found));
                }
                Value::Array(a) => a.iter().for_each(|c| visit(c, found)),
                _ => {}
            }
        }
        let mut found = 0;
        visit(crate::crd::openapi_schema(), &mut found);
        assert!(found >= 5, "expected the duration patterns, found {found}");
    }
}
