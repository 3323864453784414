//! The node agent's image runtime: a pod whose container names an image the
//! node was given (`poolwarden-cluster --image NAME=LAYOUT`, e.g. the layout
//! `make image` builds) runs that image's entrypoint from its unpacked root
//! filesystem under runc, with what a kubelet gives a container:
//!
//! - its volumes: the projected ServiceAccount volume the API server's admission
//!   adds (`kube-api-access-*` at /var/run/secrets/kubernetes.io/serviceaccount:
//!   a token from the TokenRequest API bound to the pod, the `kube-root-ca.crt`
//!   ConfigMap's CA, the namespace from the downward API), and emptyDirs;
//! - the `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` env that in-cluster
//!   clients read (the API server listens on 127.0.0.1, in the network namespace
//!   the container shares);
//! - its securityContext, user and capabilities (`oci_runtime::runtime_config`).
//!
//! Why runc rather than a mount namespace and chroot: the chart's
//! securityContext (runAsUser 65532, readOnlyRootFilesystem, no privilege
//! escalation, every capability dropped) maps one to one onto the OCI runtime
//! config that kubelets hand their runtimes through CRI, and runc applies each
//! of it the way production does; a chroot would have to reimplement user
//! switching, capability dropping, no_new_privs and read-only remounts by hand,
//! and would prove only that reimplementation. Volume types other than
//! projected and emptyDir, resource limits and the seccomp profile are not
//! applied (tests/cluster/README.md).
//! Projected volumes: <https://kubernetes.io/docs/concepts/storage/projected-volumes/>;
//! the token: <https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/>.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::kubelet::env::{NodeInfo, field_ref};
use crate::kubelet::image::{self, ImageMap};
use crate::kubelet::oci_runtime::{self, BindMount, Container, ContainerPlan};
use crate::kubelet::pod::{Launch, PodSpec};

/// What the agent needs to run images; see the module comment.
pub struct ImageRuntime {
    images: ImageMap,
    runc: PathBuf,
    umoci: PathBuf,
    /// runc's state directory (`runc --root`).
    state: PathBuf,
    /// One directory per pod uid: its bundle and volumes.
    pods: PathBuf,
    /// The API server's address, for `KUBERNETES_SERVICE_HOST`/`PORT`.
    api_host: String,
    api_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("images to run were given, but there is no {0} on PATH (Debian: apt-get install runc umoci)")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn write_file(path: &Path, text: &[u8], mode: u32) -> Result<(), String> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A file a projected source puts at `path` under the volume: never outside it.
fn volume_file(dir: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = Path::new(path);
    if path.is_empty() || rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(format!(
            "volume file path {path:?} is not a relative path inside the volume"
        ));
    }
    let file = dir.join(rel);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    Ok(file)
}

impl ImageRuntime {
    /// `dir` holds runc's state and the pods' bundles; `server` is the API
    /// server's URL.
    pub fn new(images: ImageMap, dir: &Path, server: &str) -> Result<ImageRuntime, RuntimeError> {
        let runc = oci_runtime::find_program("runc").ok_or(RuntimeError::Missing("runc"))?;
        let umoci = oci_runtime::find_program("umoci").ok_or(RuntimeError::Missing("umoci"))?;
        let (state, pods) = (dir.join("runc"), dir.join("pods"));
        for d in [&state, &pods] {
            std::fs::create_dir_all(d).map_err(|source| RuntimeError::Io {
                what: format!("creating {}", d.display()),
                source,
            })?;
        }
        let authority = server.trim_start_matches("https://").trim_end_matches('/').to_string();
        let (api_host, api_port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(443)),
            None => (authority, 443),
        };
        Ok(ImageRuntime {
            images,
            runc,
            umoci,
            state,
            pods,
            api_host,
            api_port,
        })
    }

    fn pod_dir(&self, spec: &PodSpec) -> PathBuf {
        let uid = spec.pod["metadata"]["uid"].as_str().unwrap_or_default();
        self.pods.join(uid)
    }

    /// The pod's container as a runc container when its image is one of ours;
    /// `argv` as a local process otherwise.
    pub async fn launch(
        &self,
        client: &Client,
        node: &NodeInfo,
        spec: &PodSpec,
        argv: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<Launch, String> {
        let container = &spec.pod["spec"]["containers"][0];
        let name = container["image"].as_str().unwrap_or_default();
        let Some(source) = self.images.get(name) else {
            return Ok(Launch {
                argv,
                env,
                container: None,
            });
        };
        let config = image::read_config(source).map_err(|e| e.to_string())?;
        let dir = self.pod_dir(spec);
        let bundle = dir.join("bundle");
        let base_path = dir.join("image-config.json");
        // Unpacked once per pod; each start rewrites only config.json.
        let base: Value = match std::fs::read_to_string(&base_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", base_path.display()))?,
            Err(_) => {
                let base = oci_runtime::unpack(&self.umoci, &source.layout, &source.tag, &bundle).await?;
                write_file(&base_path, base.to_string().as_bytes(), 0o600)?;
                base
            }
        };
        let mounts = volumes(client, node, spec, container, &dir.join("volumes")).await?;
        let mut env = env;
        // The service env comes before the container's own (which wins), as the kubelet's.
        for (k, v) in [
            ("KUBERNETES_SERVICE_HOST", self.api_host.clone()),
            ("KUBERNETES_SERVICE_PORT", self.api_port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", self.api_port.to_string()),
        ] {
            if !env.iter().any(|(name, _)| name == k) {
                env.insert(0, (k.to_string(), v));
            }
        }
        let args = image::container_process(container, &config, &env);
        let args = oci_runtime::bind_pod_ip(&args, &oci_runtime::declared_ports(container), spec.ip);
        let plan = ContainerPlan {
            pod: &spec.pod,
            container,
            args,
            env,
            rootfs: bundle.join("rootfs"),
            mounts,
        };
        let runtime_config = oci_runtime::runtime_config(&base, &plan)?;
        write_file(
            &bundle.join("config.json"),
            serde_json::to_string_pretty(&runtime_config)
                .unwrap_or_default()
                .as_bytes(),
            0o600,
        )?;
        let c = Container {
            runc: self.runc.clone(),
            root: self.state.clone(),
            id: format!("pw-{}", spec.pod["metadata"]["uid"].as_str().unwrap_or_default()),
            bundle,
        };
        // A container of this id left by a start that did not end cleanly.
        c.delete().await;
        Ok(Launch {
            argv: c.argv(),
            // runc gets the agent's PATH; the container's env is in config.json.
            env: Vec::new(),
            container: Some(c),
        })
    }

    /// Removes the pod's bundle and volumes once its worker has ended.
    pub fn forget(&self, spec: &PodSpec) {
        let dir = self.pod_dir(spec);
        if dir.starts_with(&self.pods) && dir != self.pods {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Writes the volumes the container mounts under `dir` and returns their mounts.
async fn volumes(
    client: &Client,
    node: &NodeInfo,
    spec: &PodSpec,
    container: &Value,
    dir: &Path,
) -> Result<Vec<BindMount>, String> {
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let target = m["mountPath"].as_str().unwrap_or_default();
        if m["subPath"].is_string() || m["subPathExpr"].is_string() {
            return Err(format!(
                "volume mount {name} at {target}: subPath is not supported by the node agent"
            ));
        }
        let volume = spec.pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .ok_or_else(|| format!("volume mount {name}: the pod has no such volume"))?;
        let vdir = dir.join(name);
        std::fs::create_dir_all(&vdir).map_err(|e| format!("creating {}: {e}", vdir.display()))?;
        if volume["emptyDir"].is_object() {
            // Writable by whichever user the container runs as.
            std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("{}: {e}", vdir.display()))?;
        } else if let Some(sources) = volume["projected"]["sources"].as_array() {
            let mode = volume["projected"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            for source in sources {
                project(client, node, spec, source, &vdir, mode).await?;
            }
        } else {
            return Err(format!(
                "volume {name}: only projected and emptyDir volumes are supported by the node agent"
            ));
        }
        mounts.push(BindMount {
            source: vdir,
            destination: target.to_string(),
            read_only: m["readOnly"].as_bool().unwrap_or(false) || volume["projected"].is_object(),
        });
    }
    Ok(mounts)
}

/// One source of a projected volume: a ServiceAccount token, ConfigMap keys or
/// downward API fields.
async fn project(
    client: &Client,
    node: &NodeInfo,
    spec: &PodSpec,
    source: &Value,
    dir: &Path,
    mode: u32,
) -> Result<(), String> {
    let pod = &spec.pod;
    if let Some(sat) = source["serviceAccountToken"].as_object() {
        let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
        let mut request = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": sat.get("expirationSeconds").and_then(Value::as_u64).unwrap_or(3607),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                   "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            },
        });
        if let Some(aud) = sat.get("audience").and_then(Value::as_str) {
            request["spec"]["audiences"] = json!([aud]);
        }
        let answer: Value = Api::<ServiceAccount>::namespaced(client.clone(), &spec.namespace)
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenRequest for ServiceAccount {account}: {e}"))?;
        let token = answer["status"]["token"]
            .as_str()
            .ok_or_else(|| format!("TokenRequest for ServiceAccount {account}: no token in the answer"))?;
        let path = sat.get("path").and_then(Value::as_str).unwrap_or("token");
        write_file(&volume_file(dir, path)?, token.as_bytes(), mode)?;
    }
    if let Some(cm) = source["configMap"].as_object() {
        let name = cm.get("name").and_then(Value::as_str).unwrap_or_default();
        let optional = cm.get("optional").and_then(Value::as_bool) == Some(true);
        let found = Api::<ConfigMap>::namespaced(client.clone(), &spec.namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("ConfigMap {name}: {e}"))?;
        let data = match found {
            Some(c) => c.data.unwrap_or_default(),
            None if optional => Default::default(),
            None => return Err(format!("configmap \"{name}\" not found")),
        };
        match cm.get("items").and_then(Value::as_array) {
            Some(items) => {
                for item in items {
                    let key = item["key"].as_str().unwrap_or_default();
                    let value = data
                        .get(key)
                        .ok_or_else(|| format!("ConfigMap {name} has no key {key:?}"))?;
                    let path = item["path"].as_str().unwrap_or(key);
                    write_file(&volume_file(dir, path)?, value.as_bytes(), mode)?;
                }
            }
            None => {
                for (key, value) in &data {
                    write_file(&volume_file(dir, key)?, value.as_bytes(), mode)?;
                }
            }
        }
    }
    for item in source["downwardAPI"]["items"].as_array().into_iter().flatten() {
        let Some(field) = item["fieldRef"]["fieldPath"].as_str() else {
            return Err("downwardAPI volume: only fieldRef items are supported by the node agent".into());
        };
        let value = field_ref(pod, field, &spec.ip.to_string(), node);
        let path = item["path"].as_str().unwrap_or_default();
        write_file(&volume_file(dir, path)?, value.as_bytes(), mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projected_paths_stay_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        assert!(volume_file(dir.path(), "token").is_ok());
        assert!(volume_file(dir.path(), "a/b").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(volume_file(dir.path(), bad).is_err(), "{bad}");
        }
    }
}
