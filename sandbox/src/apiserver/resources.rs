//! The resource types the sandbox serves: the built-in ones poolwarden touches and
//! the custom resources of every CustomResourceDefinition created in it.

use std::sync::Arc;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    /// Custom resources take no strategic merge patches (the server has no Go
    /// struct tags to find merge keys), like the real API server.
    pub custom: bool,
    pub verbs: Vec<&'static str>,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
        short: &[&str],
    ) -> Self {
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status_subresource: status,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            custom: false,
            verbs: ALL_VERBS.to_vec(),
        }
    }

    pub fn builtins() -> Vec<ResourceInfo> {
        vec![
            Self::builtin("", "v1", "pods", "Pod", true, true, &["po"]),
            Self::builtin("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
            Self::builtin("", "v1", "secrets", "Secret", true, false, &[]),
            Self::builtin("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
            Self::builtin("", "v1", "events", "Event", true, false, &["ev"]),
            Self::builtin("apps", "v1", "deployments", "Deployment", true, true, &["deploy"]),
            Self::builtin("apps", "v1", "statefulsets", "StatefulSet", true, true, &["sts"]),
            // Stored and served, never acted on: nothing scales (poolwarden reads only
            // the spec's maxReplicas).
            Self::builtin(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
                true,
                &["hpa"],
            ),
            Self::builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
                true,
                &["pdb"],
            ),
            Self::builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false, &[]),
            Self::builtin("events.k8s.io", "v1", "events", "Event", true, false, &["ev"]),
            Self::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
                &["crd", "crds"],
            ),
        ]
    }

    /// The resources a CustomResourceDefinition declares, one per served version.
    pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let plural = names["plural"].as_str().unwrap_or_default();
        let kind = names["kind"].as_str().unwrap_or_default();
        if group.is_empty() || plural.is_empty() || kind.is_empty() {
            return Vec::new();
        }
        let singular = names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let short_names: Vec<String> = names["shortNames"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let mut versions: Vec<&Value> = spec["versions"]
            .as_array()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        // Storage version first so it is the preferred version in discovery.
        versions.sort_by_key(|v| !v["storage"].as_bool().unwrap_or(false));
        versions
            .into_iter()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
            .filter_map(|v| {
                Some(ResourceInfo {
                    group: group.into(),
                    version: v["name"].as_str()?.into(),
                    plural: plural.into(),
                    singular: singular.clone(),
                    kind: kind.into(),
                    namespaced,
                    status_subresource: v["subresources"]["status"].is_object(),
                    short_names: short_names.clone(),
                    custom: true,
                    verbs: ALL_VERBS.to_vec(),
                })
            })
            .collect()
    }
}

/// The set of served resources; CRDs add and remove entries at run time. Shared
/// (`Arc`), as every request takes a copy to resolve its path outside the store's
/// lock; a CRD write copies it.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Arc<Vec<ResourceInfo>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            resources: Arc::new(ResourceInfo::builtins()),
        }
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    pub fn set_crd(&mut self, crd_name: &str, crd: Option<&Value>) {
        let resources = Arc::make_mut(&mut self.resources);
        resources.retain(|r| !(r.custom && format!("{}.{}", r.plural, r.group) == crd_name));
        if let Some(crd) = crd {
            resources.extend(ResourceInfo::from_crd(crd));
        }
    }
}
