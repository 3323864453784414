//! PATCH bodies other than server-side apply: JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902, `test` included) and strategic merge patch with the
//! merge keys of the types the sandbox serves.
//! See <https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/>.

use serde_json::{Map, Value};

use super::status::ApiError;

/// Merge keys of the list fields we serve (`patchMergeKey` in the Go types).
/// Keyed by field name: in the types we serve each of these names means the same
/// list wherever it occurs. Server-side apply uses the same keys for its
/// list-maps (`x-kubernetes-list-map-keys`).
pub fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        Some(match base {
            "application/merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

pub fn apply_json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| {
        // The real server answers a failed `test` (or a bad path) with 422.
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

fn is_directive(key: &str) -> bool {
    key.starts_with("$setElementOrder/") || key.starts_with("$deleteFromPrimitiveList/") || key == "$retainKeys"
}

/// Removes patch directives from a value that is being inserted as is.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_directive(k) && k.as_str() != "$patch")
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

pub fn apply_strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Some(pmap) = patch.as_object() else {
        return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    merge_map(target, pmap);
    Ok(())
}

fn merge_map(target: &mut Value, patch: &Map<String, Value>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(&Value::Object(patch.clone()));
        return;
    }
    let Some(tmap) = target.as_object_mut() else {
        *target = strip_directives(&Value::Object(patch.clone()));
        return;
    };
    for (key, pv) in patch {
        if is_directive(key) || key == "$patch" {
            continue;
        }
        match pv {
            Value::Null => {
                tmap.remove(key);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    tmap.remove(key);
                } else if let Some(existing) = tmap.get_mut(key).filter(|e| e.is_object()) {
                    merge_map(existing, pm);
                } else {
                    tmap.insert(key.clone(), strip_directives(pv));
                }
            }
            Value::Array(items) => match (merge_key(key), tmap.get_mut(key)) {
                (Some(mk), Some(Value::Array(existing))) => merge_list(existing, items, mk),
                _ => {
                    let cleaned: Vec<Value> = items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .map(strip_directives)
                        .collect();
                    tmap.insert(key.clone(), Value::Array(cleaned));
                }
            },
            other => {
                tmap.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, patch: &[Value], key: &str) {
    // `{"$patch": "replace"}` as an element replaces the whole list.
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    for item in patch {
        let Some(kv) = item.get(key) else {
            existing.push(strip_directives(item));
            continue;
        };
        let pos = existing.iter().position(|e| e.get(key) == Some(kv));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let Some(pm) = item.as_object() {
                    merge_map(&mut existing[i], pm);
                }
            }
            (None, false) => existing.push(strip_directives(item)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_env_by_name_and_deletes_with_directive() {
        let mut obj = json!({"spec": {"containers": [{"name": "app", "image": "a",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "app",
            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}, {"name": "A", "$patch": "delete"}]}]}});
        apply_strategic_merge_patch(&mut obj, &patch).unwrap();
        assert_eq!(
            obj,
            json!({"spec": {"containers": [{"name": "app", "image": "a",
                "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}})
        );
    }

    #[test]
    fn json_patch_test_failure_is_rejected() {
        let mut obj = json!({"a": 1});
        let err = apply_json_patch(&mut obj, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(err.code, 422);
    }
}
