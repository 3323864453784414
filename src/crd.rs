//! The CustomResourceDefinition, generated from the Rust types.

use kube::CustomResourceExt;

use crate::policy::PoolPolicy;

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    let crd = PoolPolicy::crd();
    // The CRD is built from our own types; serializing it cannot fail.
    let body = serde_saphyr::to_string(&crd).expect("the generated CRD serializes");
    format!("---\n{body}")
}

/// The openAPIV3Schema of the served version, as JSON, for schema walks.
pub fn openapi_schema() -> serde_json::Value {
    let crd = PoolPolicy::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema).unwrap_or_default()
}
