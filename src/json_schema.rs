//! The PoolPolicy JSON Schema for tools that validate manifests without a cluster
//! (kubeconform, and any editor or pipeline reading the CRDs-catalog layout), derived
//! from the CRD's openAPIV3Schema the way kubeconform's `openapi2jsonschema.py` (and
//! so the CRDs-catalog) derives theirs, so the file is interchangeable with one those
//! tools would make:
//!
//! - an object that lists `properties` gets `additionalProperties: false` (unless it
//!   already says, or keeps unknown fields): the API server silently prunes unknown
//!   fields, so a misspelled one would quietly do nothing — the same reason
//!   `poolwarden check` reports them. Unlike the script's default, the root too: a
//!   Kubernetes object has only apiVersion, kind, metadata, spec and status;
//! - `x-kubernetes-int-or-string` becomes `oneOf` string / integer;
//! - the root lists apiVersion, kind (each with its one value) and metadata, which the
//!   API server adds to every object's schema itself;
//! - OpenAPI's `nullable: true` becomes JSON Schema's `type: [T, "null"]` (the script
//!   leaves it, and a JSON Schema validator would then refuse the `null` the API
//!   server accepts).
//!
//! CEL rules (`x-kubernetes-validations`) stay in the file but JSON Schema validators
//! ignore them: kubeconform checks the structural layer only; `poolwarden check` is
//! what also runs the semantic rules.

use serde_json::{Map, Value};

use crate::policy::PoolPolicy;

/// Where the schema is published in the repository, in the CRDs-catalog layout
/// `{fullgroup}/{kind}_{version}.json` (kind lower-cased), which kubeconform reads with
/// `-schema-location 'schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json'`.
pub fn published_path() -> String {
    format!("schemas/{}/poolpolicy_v1alpha1.json", crate::policy::GROUP)
}

/// The JSON Schema, pretty-printed with a final newline, exactly as committed at
/// [`published_path`].
pub fn json_schema() -> String {
    use kube::Resource;
    let mut schema = to_json_schema(crate::crd::openapi_schema());
    // The CRD's schema describes spec and status; the API server itself adds apiVersion,
    // kind and metadata to every object. Without them here, the root's
    // additionalProperties: false would refuse every manifest.
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        let implicit = serde_json::json!({
            "apiVersion": {"type": "string", "enum": [PoolPolicy::api_version(&())]},
            "kind": {"type": "string", "enum": [PoolPolicy::kind(&())]},
            "metadata": {"type": "object"},
        });
        for (name, field) in implicit.as_object().into_iter().flatten() {
            properties.entry(name.clone()).or_insert_with(|| field.clone());
        }
    }
    // A serde_json::Value always serializes.
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// Converts an openAPIV3Schema (structural, as the API server stores it) to JSON Schema.
pub fn to_json_schema(openapi: &Value) -> Value {
    convert(openapi)
}

fn convert(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        let mut out = Map::new();
        if let Some(description) = object.get("description") {
            out.insert("description".into(), description.clone());
        }
        out.insert(
            "oneOf".into(),
            serde_json::json!([{"type": "string"}, {"type": "integer"}]),
        );
        return Value::Object(out);
    }
    let mut out = Map::new();
    for (key, value) in object {
        let converted = match key.as_str() {
            // Maps of names to schemas: each value is a schema, the keys are field names.
            "properties" | "patternProperties" | "definitions" => match value.as_object() {
                Some(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), convert(v))).collect()),
                None => value.clone(),
            },
            "items" | "additionalProperties" | "not" => convert(value),
            "allOf" | "anyOf" | "oneOf" => match value.as_array() {
                Some(schemas) => Value::Array(schemas.iter().map(convert).collect()),
                None => value.clone(),
            },
            // Data, not schemas (enum values, defaults, CEL rules, descriptions).
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if out.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(ty)) = out.get("type").cloned()
    {
        out.insert("type".into(), serde_json::json!([ty, "null"]));
    }
    let keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if out.contains_key("properties") && !out.contains_key("additionalProperties") && !keeps_unknown {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_json_schema;

    #[test]
    fn objects_with_properties_refuse_unknown_fields_unless_they_keep_them() {
        let converted = to_json_schema(&json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "string"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {}},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        }));
        assert_eq!(converted["additionalProperties"], json!(false));
        assert_eq!(converted["properties"]["a"]["additionalProperties"], json!(false));
        assert!(converted["properties"]["free"].get("additionalProperties").is_none());
        assert_eq!(
            converted["properties"]["map"]["additionalProperties"],
            json!({"type": "string"})
        );
    }

    #[test]
    fn nullable_becomes_a_null_type_and_int_or_string_a_one_of() {
        let converted = to_json_schema(&json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "nullable": true, "minimum": 0},
                "port": {"x-kubernetes-int-or-string": true, "description": "d"},
                "s": {"type": "string", "nullable": false},
            }
        }));
        assert_eq!(
            converted["properties"]["n"],
            json!({"type": ["integer", "null"], "minimum": 0})
        );
        assert_eq!(
            converted["properties"]["port"],
            json!({"description": "d", "oneOf": [{"type": "string"}, {"type": "integer"}]})
        );
        assert_eq!(converted["properties"]["s"], json!({"type": "string"}));
    }

    #[test]
    fn a_field_named_properties_is_a_field_not_a_schema_keyword() {
        let converted = to_json_schema(&json!({
            "type": "object",
            "properties": {"properties": {"type": "string", "nullable": true}}
        }));
        assert_eq!(
            converted["properties"]["properties"],
            json!({"type": ["string", "null"]})
        );
    }
}
