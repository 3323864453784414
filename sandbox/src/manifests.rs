//! Applying YAML manifests (multi-document) straight into the store, as
//! `kubectl apply --server-side` would, for the sandbox binary's `--manifests`.

use std::path::Path;

use serde_json::Value;

use crate::apiserver::patch::PatchType;
use crate::apiserver::store::{Store, WriteOptions};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {object}: {source}")]
    Apply {
        path: String,
        object: String,
        source: Box<crate::apiserver::status::ApiError>,
    },
}

/// Splits a YAML stream into its documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

pub fn apply_object(store: &Store, obj: &Value) -> Result<String, crate::apiserver::status::ApiError> {
    use crate::apiserver::status::ApiError;
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let registry = store.registry();
    let res = registry
        .all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("no resource for {api_version} {kind}")))?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let ns = if res.namespaced {
        obj["metadata"]["namespace"].as_str().unwrap_or("default")
    } else {
        ""
    };
    let opts = WriteOptions {
        field_manager: "poolwarden-sandbox".into(),
        force: true,
        dry_run: false,
    };
    store.patch(&res, ns, name, PatchType::Apply, obj, false, &opts)?;
    Ok(format!("{}/{name}", res.plural))
}

/// Applies every `*.yaml`, `*.yml` and `*.json` file of `dir`, in name order.
pub fn apply_dir(store: &Store, dir: &Path) -> Result<Vec<String>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for file in files {
        let path = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let docs = parse_documents(&text).map_err(|message| ManifestError::Parse {
            path: path.clone(),
            message,
        })?;
        // CRDs first, so custom resources in the same directory find their type.
        let (crds, rest): (Vec<Value>, Vec<Value>) =
            docs.into_iter().partition(|d| d["kind"] == "CustomResourceDefinition");
        for obj in crds.iter().chain(rest.iter()) {
            let object = format!(
                "{}/{}",
                obj["kind"].as_str().unwrap_or("?"),
                obj["metadata"]["name"].as_str().unwrap_or("?")
            );
            let done = apply_object(store, obj).map_err(|source| ManifestError::Apply {
                path: path.clone(),
                object,
                source: Box::new(source),
            })?;
            applied.push(done);
        }
    }
    Ok(applied)
}
