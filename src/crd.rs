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

/// The openAPIV3Schema of the served version, as JSON, for schema walks. Built once:
/// generating the CRD costs far more than checking a document against it.
pub fn openapi_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = PoolPolicy::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        serde_json::to_value(schema).unwrap_or_default()
    })
}
