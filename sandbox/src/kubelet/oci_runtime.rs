//! Running a container from an image with an OCI runtime (runc), as a real
//! node's container runtime does: `umoci unpack` turns the image into a runtime
//! bundle (root filesystem + a config.json resolving the image's user, env and
//! working directory), [`runtime_config`] turns that config into the one the
//! pod asks for, and `runc run` runs it in the foreground — so the node agent
//! waits for and signals it like any pod process (runc forwards the signals it
//! gets to the container and exits with the container's status).
//!
//! The container gets its own mount, PID, IPC and UTS namespaces but shares
//! the host's network namespace: the API server and PostgreSQL listen on
//! 127.0.0.1, and each pod has its own loopback address (see `ips.rs`), so
//! [`bind_pod_ip`] turns the wildcard address a pod listens on into that one.
//! The runtime spec: <https://github.com/opencontainers/runtime-spec/blob/main/config.md>;
//! how Kubernetes' securityContext maps onto it:
//! <https://kubernetes.io/docs/tasks/configure-pod-container/security-context/>.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The capabilities a container gets when its securityContext changes none:
/// containerd's and CRI-O's default set.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A directory of the node bound into the container.
#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What the pod asks of its container, beyond the image.
pub struct ContainerPlan<'a> {
    pub pod: &'a Value,
    pub container: &'a Value,
    pub args: Vec<String>,
    /// The container's environment (the pod's env, the service env), in order: later wins.
    pub env: Vec<(String, String)>,
    pub rootfs: PathBuf,
    pub mounts: Vec<BindMount>,
}

fn cap_name(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    if c.starts_with("CAP_") { c } else { format!("CAP_{c}") }
}

/// The capability set of `securityContext.capabilities` (drop, then add; `ALL` drops every one).
fn capabilities(sc: &Value) -> Vec<String> {
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .map(cap_name)
            .collect()
    };
    let drop = names(&sc["capabilities"]["drop"]);
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for c in names(&sc["capabilities"]["add"]) {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    caps
}

/// The container's setting `field`, else the pod's (Kubernetes' precedence).
fn setting<'a>(pod: &'a Value, container: &'a Value, field: &str) -> &'a Value {
    match &container["securityContext"][field] {
        Value::Null => &pod["spec"]["securityContext"][field],
        v => v,
    }
}

/// The runtime config for the container: `base` is what `umoci unpack` wrote
/// for the image (its user, env and working directory resolved), changed as
/// the pod asks. Refuses what the kubelet refuses: `runAsNonRoot` with a user 0.
pub fn runtime_config(base: &Value, plan: &ContainerPlan) -> Result<Value, String> {
    let mut c = base.clone();
    let (pod, container) = (plan.pod, plan.container);
    let sc = &container["securityContext"];
    let uid = setting(pod, container, "runAsUser")
        .as_u64()
        .or_else(|| base["process"]["user"]["uid"].as_u64())
        .unwrap_or(0);
    let gid = setting(pod, container, "runAsGroup")
        .as_u64()
        .or_else(|| base["process"]["user"]["gid"].as_u64())
        .unwrap_or(0);
    if setting(pod, container, "runAsNonRoot").as_bool() == Some(true) && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    // Image env first, then the pod's: a pod's variable wins over the image's.
    let mut env: Vec<(String, String)> = base["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        // umoci adds TERM for a terminal; the container has none.
        .filter(|(k, _)| k != "TERM")
        .collect();
    for (k, v) in &plan.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    let caps = capabilities(sc);
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(plan.args);
    c["process"]["env"] = json!(env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>());
    c["process"]["user"] = json!({"uid": uid, "gid": gid});
    if let Some(dir) = container["workingDir"].as_str() {
        c["process"]["cwd"] = json!(dir);
    }
    c["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": [],
    });
    // Kubernetes sets no_new_privs only when privilege escalation is refused.
    c["process"]["noNewPrivileges"] = json!(sc["allowPrivilegeEscalation"].as_bool() == Some(false));
    // No rlimits of umoci's (NOFILE 1024): the container inherits the node's, as under containerd.
    if let Some(p) = c["process"].as_object_mut() {
        p.remove("rlimits");
    }
    c["root"] = json!({
        "path": plan.rootfs,
        "readonly": sc["readOnlyRootFilesystem"].as_bool() == Some(true),
    });
    c["hostname"] = pod["metadata"]["name"].clone();
    // The host's network namespace: see the module comment.
    c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    let mut mounts: Vec<Value> = base["mounts"].as_array().cloned().unwrap_or_default();
    for m in &plan.mounts {
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "nosuid", "nodev", if m.read_only { "ro" } else { "rw" }],
        }));
    }
    c["mounts"] = json!(mounts);
    Ok(c)
}

/// The container's arguments with every `0.0.0.0:PORT` of a declared container
/// port made `POD_IP:PORT`. In a pod's own network namespace the wildcard
/// address means the pod's addresses; sharing the host's, two replicas
/// listening on 0.0.0.0:8080 would clash, while each pod's own loopback
/// address gives both the port the pod declares — the one its probes and its
/// Service's endpoints use.
pub fn bind_pod_ip(args: &[String], ports: &[u16], ip: Ipv4Addr) -> Vec<String> {
    args.iter()
        .map(|a| {
            ports.iter().fold(a.clone(), |a, p| {
                a.replace(&format!("0.0.0.0:{p}"), &format!("{ip}:{p}"))
                    .replace(&format!("[::]:{p}"), &format!("{ip}:{p}"))
            })
        })
        .collect()
}

/// The ports the container declares.
pub fn declared_ports(container: &Value) -> Vec<u16> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect()
}

/// A container run by runc: its id in runc's state directory `root`, and the
/// pod directory holding its bundle and volumes.
#[derive(Debug, Clone)]
pub struct Container {
    pub runc: PathBuf,
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
}

impl Container {
    /// `runc run` in the foreground: the pod's process.
    pub fn argv(&self) -> Vec<String> {
        vec![
            self.runc.display().to_string(),
            "--root".into(),
            self.root.display().to_string(),
            "run".into(),
            "--bundle".into(),
            self.bundle.display().to_string(),
            self.id.clone(),
        ]
    }

    /// Removes the container from runc's state (killing what is left of it):
    /// after every exit, so the next start of the same id works.
    pub async fn delete(&self) {
        let out = tokio::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                // Gone already: runc run removes a container that exited on its own.
                if !err.contains("does not exist") {
                    tracing::warn!(container = %self.id, error = %err.trim(), "runc delete");
                }
            }
            Err(e) => tracing::warn!(container = %self.id, error = %e, "runc delete"),
        }
    }
}

/// Unpacks `layout:tag` into a new runtime bundle `bundle` with `umoci unpack`
/// and returns the config.json it wrote.
pub async fn unpack(umoci: &Path, layout: &Path, tag: &str, bundle: &Path) -> Result<Value, String> {
    let _ = std::fs::remove_dir_all(bundle);
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let out = tokio::process::Command::new(umoci)
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", umoci.display()))?;
    if !out.status.success() {
        return Err(format!(
            "umoci unpack {}:{tag}: {}",
            layout.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `name` on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "ociVersion": "1.0.0",
            "process": {"terminal": true, "user": {"uid": 65532, "gid": 65532}, "args": ["/poolwarden"],
                        "env": ["PATH=/usr/bin", "TERM=xterm", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
                        "cwd": "/", "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                        "noNewPrivileges": true},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
        })
    }

    fn chart_pod() -> (Value, Value) {
        let container = json!({
            "name": "controller", "image": "poolwarden:dev",
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
        });
        let pod = json!({
            "metadata": {"name": "poolwarden-abc", "namespace": "ns"},
            "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
                     "containers": [container.clone()]},
        });
        (pod, container)
    }

    #[test]
    fn the_charts_security_context_becomes_the_runtime_config() {
        let (pod, container) = chart_pod();
        let plan = ContainerPlan {
            pod: &pod,
            container: &container,
            args: vec!["/poolwarden".into(), "controller".into()],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ],
            rootfs: "/data/pods/u/bundle/rootfs".into(),
            mounts: vec![BindMount {
                source: "/data/pods/u/volumes/kube-api-access".into(),
                destination: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                read_only: true,
            }],
        };
        let c = runtime_config(&base(), &plan).unwrap();
        assert_eq!(c["process"]["user"], json!({"uid": 65532, "gid": 65532}));
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(c["process"]["capabilities"]["bounding"], json!([]));
        assert!(c["process"].get("rlimits").is_none());
        assert_eq!(
            c["process"]["env"],
            json!([
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "PATH=/bin",
                "KUBERNETES_SERVICE_HOST=127.0.0.1"
            ])
        );
        assert_eq!(
            c["root"],
            json!({"path": "/data/pods/u/bundle/rootfs", "readonly": true})
        );
        assert_eq!(c["hostname"], "poolwarden-abc");
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"), "{ns:?}");
        assert_eq!(
            c["mounts"][1]["destination"],
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert!(c["mounts"][1]["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn run_as_non_root_refuses_user_zero_and_defaults_apply_without_a_context() {
        let (mut pod, container) = chart_pod();
        pod["spec"]["securityContext"]["runAsUser"] = json!(0);
        let plan = |pod: &Value, container: &Value| {
            runtime_config(
                &base(),
                &ContainerPlan {
                    pod,
                    container,
                    args: vec![],
                    env: vec![],
                    rootfs: "/r".into(),
                    mounts: vec![],
                },
            )
        };
        let err = plan(&pod, &container).unwrap_err();
        assert!(err.contains("runAsNonRoot"), "{err}");
        let bare = json!({"metadata": {"name": "p"}, "spec": {}});
        let c = plan(&bare, &json!({"name": "c"})).unwrap();
        assert_eq!(
            c["process"]["user"]["uid"], 65532,
            "the image's user when the pod names none"
        );
        assert_eq!(c["process"]["noNewPrivileges"], false);
        assert_eq!(c["root"]["readonly"], false);
        let caps = c["process"]["capabilities"]["bounding"].as_array().unwrap().len();
        assert_eq!(caps, DEFAULT_CAPABILITIES.len());
        let added = plan(
            &bare,
            &json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["net_bind_service"]}}}),
        )
        .unwrap();
        assert_eq!(
            added["process"]["capabilities"]["bounding"],
            json!(["CAP_NET_BIND_SERVICE"])
        );
    }

    #[test]
    fn wildcard_listen_addresses_of_declared_ports_become_the_pod_ip() {
        let ip = Ipv4Addr::new(127, 0, 0, 7);
        let args: Vec<String> = [
            "controller",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--x=0.0.0.0:9090",
            "0.0.0.0:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            bind_pod_ip(&args, &[8080, 9090], ip),
            [
                "controller",
                "--metrics-addr",
                "127.0.0.7:8080",
                "--x=127.0.0.7:9090",
                "0.0.0.0:1"
            ]
        );
    }
}
