//! The real Kubernetes control plane on this machine: etcd, kube-apiserver and
//! kube-controller-manager (built from Kubernetes' own modules by
//! `tests/cluster/build.sh`) on 127.0.0.1 with free ports and certificates made
//! here, and the process [`node::NodeAgent`] running the pods. All data (etcd,
//! certificates, kubeconfigs, logs) is in one directory; every process is
//! stopped on [`RealCluster::shutdown`], on drop, and — through
//! `PR_SET_PDEATHSIG` — by the kernel if this process dies.
//!
//! The flags are the ones `tests/cluster/smoke.sh` proved; see
//! `tests/cluster/README.md` for why each is there.

pub mod certs;
pub mod node;
pub mod runtime;
pub mod service;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::kubelet::image::ImageMap;
use certs::{Pem, Pki};
use node::NodeAgent;
use runtime::ImageRuntime;

/// The controllers of kube-controller-manager we run (`--controllers`). The
/// root CA publisher makes each namespace's `kube-root-ca.crt` (the CA of a
/// pod's ServiceAccount volume). Not the EndpointSlice controller: the API
/// server refuses the loopback pod addresses in a slice (`service.rs`).
pub const CONTROLLERS: &str = "deployment-controller,replicaset-controller,statefulset-controller,\
disruption-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,\
root-ca-certificate-publisher-controller";

/// The name of the one node.
pub const NODE_NAME: &str = "poolwarden-node";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no {0} in the bin dir (run tests/cluster/build.sh)")]
    MissingBinary(PathBuf),
    #[error("{0}")]
    Certs(#[from] certs::CertError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited before it was ready; the end of its log ({log}):\n{tail}")]
    Exited { name: String, log: PathBuf, tail: String },
    #[error("{name} was not ready within {secs} s; the end of its log ({log}):\n{tail}")]
    NotReady {
        name: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("the admin client: {0}")]
    Client(#[source] kube::Error),
    #[error("{0}")]
    Node(#[from] node::NodeError),
    #[error("{0}")]
    Runtime(#[from] runtime::RuntimeError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where etcd, kube-apiserver and kube-controller-manager are.
    pub bin_dir: PathBuf,
    /// Where to write the admin kubeconfig (once the control plane is ready).
    pub kubeconfig: PathBuf,
    /// Data directory; a temporary one (removed at the end) when None.
    pub data_dir: Option<PathBuf>,
    /// Images the node runs under runc (`runtime`); pods naming others run
    /// their `command` as local processes.
    pub images: ImageMap,
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

pub struct RealCluster {
    procs: Vec<Proc>,
    node: Option<NodeAgent>,
    client: kube::Client,
    kubeconfig: PathBuf,
    server: String,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

fn free_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    l.local_addr().map(|a| a.port()).map_err(io("finding a free port"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig for `user` with its client certificate embedded.
pub fn kubeconfig_yaml(server: &str, ca: &Pem, user: &str, client: &Pem) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: poolwarden-cluster\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    \
         client-key-data: {key}\ncontexts:\n- name: poolwarden-cluster\n  context:\n    cluster: poolwarden-cluster\n    \
         user: {user}\n    namespace: default\ncurrent-context: poolwarden-cluster\n",
        ca = b64(&ca.cert),
        cert = b64(&client.cert),
        key = b64(&client.key),
    )
}

/// Writes `text` to `path` whole: aside first, then renamed.
fn write_atomically(path: &Path, text: &str) -> Result<(), ClusterError> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(io(format!("writing {}", path.display())))
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client, ClusterError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| ClusterError::Client(e.into()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::Client(e.into()))?;
    kube::Client::try_from(config).map_err(ClusterError::Client)
}

/// A plain HTTP GET's status code.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        std::str::from_utf8(&buf[..n])
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

impl RealCluster {
    /// Starts etcd, kube-apiserver, kube-controller-manager and the node agent;
    /// writes the admin kubeconfig to `opts.kubeconfig` when all are ready.
    ///
    /// Call it from the thread that stays alive for as long as the cluster
    /// should (the main thread): `PR_SET_PDEATHSIG` fires when the thread that
    /// started a child exits.
    pub async fn start(opts: ClusterOptions) -> Result<RealCluster, ClusterError> {
        for b in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let path = opts.bin_dir.join(b);
            if !path.is_file() {
                return Err(ClusterError::MissingBinary(path));
            }
        }
        let (dir, tempdir) = match &opts.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("poolwarden-cluster")
                    .tempdir()
                    .map_err(io("creating the data directory"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let pki = Pki::create(&dir.join("pki"))?;
        let (etcd_port, etcd_peer, api_port, kcm_port) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_atomically(
            &admin_kubeconfig,
            &kubeconfig_yaml(&server, &pki.ca, "poolwarden-admin", &pki.admin),
        )?;
        let kcm_kubeconfig = dir.join("kcm.kubeconfig");
        write_atomically(
            &kcm_kubeconfig,
            &kubeconfig_yaml(
                &server,
                &pki.ca,
                "system:kube-controller-manager",
                &pki.controller_manager,
            ),
        )?;
        let client = client_for(&admin_kubeconfig).await?;
        let mut cluster = RealCluster {
            procs: Vec::new(),
            node: None,
            client,
            kubeconfig: opts.kubeconfig.clone(),
            server,
            dir: dir.clone(),
            _tempdir: tempdir,
        };
        let p = |pem: &Pem| pem.cert_path.display().to_string();
        let k = |pem: &Pem| pem.key_path.display().to_string();
        let d = |sub: &str| dir.join(sub).display().to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let started = Instant::now();
        cluster.spawn(
            "etcd",
            &opts.bin_dir,
            &[
                "--name",
                "poolwarden",
                "--data-dir",
                &d("etcd"),
                "--unsafe-no-fsync",
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("poolwarden={peer_url}"),
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ],
        )?;
        cluster
            .wait_ready("etcd", 30, || async {
                http_status(etcd_port, "/health").await == Some(200)
            })
            .await?;
        tracing::info!(
            port = etcd_port,
            after_ms = started.elapsed().as_millis() as u64,
            "etcd ready"
        );
        cluster.spawn(
            "kube-apiserver",
            &opts.bin_dir,
            &[
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                &api_port.to_string(),
                // Required with a loopback advertise address (the endpoint reconciler refuses it).
                "--endpoint-reconciler-type",
                "none",
                "--cert-dir",
                &d("apiserver"),
                "--tls-cert-file",
                &p(&pki.apiserver),
                "--tls-private-key-file",
                &k(&pki.apiserver),
                "--client-ca-file",
                &p(&pki.ca),
                "--requestheader-client-ca-file",
                &p(&pki.front_proxy_ca),
                "--requestheader-allowed-names",
                "front-proxy-client",
                "--requestheader-username-headers",
                "X-Remote-User",
                "--requestheader-group-headers",
                "X-Remote-Group",
                "--requestheader-extra-headers-prefix",
                "X-Remote-Extra-",
                "--proxy-client-cert-file",
                &p(&pki.front_proxy_client),
                "--proxy-client-key-file",
                &k(&pki.front_proxy_client),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                &p(&pki.service_account),
                "--service-account-signing-key-file",
                &k(&pki.service_account),
                "--authorization-mode",
                "Node,RBAC",
                "--service-cluster-ip-range",
                "10.0.0.0/24",
            ],
        )?;
        let c = cluster.client.clone();
        cluster
            .wait_ready("kube-apiserver", 120, || {
                let c = c.clone();
                async move { readyz(&c).await }
            })
            .await?;
        tracing::info!(
            port = api_port,
            after_ms = started.elapsed().as_millis() as u64,
            "kube-apiserver ready"
        );
        let kcm = kcm_kubeconfig.display().to_string();
        cluster.spawn(
            "kube-controller-manager",
            &opts.bin_dir,
            &[
                "--kubeconfig",
                &kcm,
                "--authentication-kubeconfig",
                &kcm,
                "--authorization-kubeconfig",
                &kcm,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &kcm_port.to_string(),
                "--cert-dir",
                &d("kcm"),
                "--controllers",
                CONTROLLERS,
                "--service-account-private-key-file",
                &k(&pki.service_account),
                "--root-ca-file",
                &p(&pki.ca),
                "--use-service-account-credentials",
                "--leader-elect=false",
            ],
        )?;
        cluster
            .wait_ready("kube-controller-manager", 60, || async {
                tokio::net::TcpStream::connect(("127.0.0.1", kcm_port)).await.is_ok()
            })
            .await?;
        tracing::info!(
            port = kcm_port,
            after_ms = started.elapsed().as_millis() as u64,
            "kube-controller-manager up"
        );
        let images = match opts.images.is_empty() {
            true => None,
            false => Some(ImageRuntime::new(
                opts.images.clone(),
                &dir.join("node"),
                &cluster.server,
            )?),
        };
        // Only a cluster whose data directory is kept keeps its pod logs there.
        let pod_logs = opts.data_dir.as_ref().map(|d| d.join("pod-logs"));
        cluster.node = Some(
            NodeAgent::start(
                cluster.client.clone(),
                NODE_NAME,
                "127.0.0.1",
                images,
                pod_logs.as_deref(),
            )
            .await?,
        );
        // The default ServiceAccount must exist before pods can be created in
        // `default`: a sign that the controllers run.
        let sa: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(cluster.client.clone(), "default");
        cluster
            .wait_ready("kube-controller-manager", 60, || {
                let sa = sa.clone();
                async move { matches!(sa.get_opt("default").await, Ok(Some(_))) }
            })
            .await?;
        write_atomically(
            &opts.kubeconfig,
            &kubeconfig_yaml(&cluster.server, &pki.ca, "poolwarden-admin", &pki.admin),
        )?;
        tracing::info!(
            kubeconfig = %opts.kubeconfig.display(),
            after_ms = started.elapsed().as_millis() as u64,
            "control plane ready"
        );
        Ok(cluster)
    }

    fn spawn(&mut self, name: &'static str, bin_dir: &Path, args: &[&str]) -> Result<(), ClusterError> {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("log file"))?;
        let mut cmd = Command::new(bin_dir.join(name));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // If this process dies without cleaning up, the kernel stops the child.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(io(format!("starting {name}")))?;
        self.procs.push(Proc { name, child, log });
        Ok(())
    }

    async fn wait_ready<F, Fut>(&mut self, name: &str, secs: u64, mut ready: F) -> Result<(), ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if ready().await {
                return Ok(());
            }
            for p in &mut self.procs {
                if let Ok(Some(_)) = p.child.try_wait() {
                    return Err(ClusterError::Exited {
                        name: p.name.to_string(),
                        log: p.log.clone(),
                        tail: tail(&p.log, 30),
                    });
                }
            }
            if Instant::now() > deadline {
                let log = self.dir.join(format!("{name}.log"));
                return Err(ClusterError::NotReady {
                    name: name.to_string(),
                    secs,
                    tail: tail(&log, 30),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The data directory: certificates, kubeconfigs, etcd's data, the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the node's pods write stdout/stderr.
    pub fn pod_log_dir(&self) -> Option<&Path> {
        self.node.as_ref().map(|n| n.log_dir())
    }

    /// The control plane's processes (etcd, kube-apiserver, kube-controller-manager)
    /// by name, for a benchmark's CPU and memory figures.
    pub fn process_ids(&self) -> Vec<(&'static str, u32)> {
        self.procs.iter().map(|p| (p.name, p.child.id())).collect()
    }

    /// Process group ids of the running pod processes.
    pub fn pod_pids(&self) -> Vec<i32> {
        self.node.as_ref().map(|n| n.pod_pids()).unwrap_or_default()
    }

    /// The first process that has exited, if any: (name, the end of its log).
    pub fn exited(&mut self) -> Option<(String, String)> {
        self.procs.iter_mut().find_map(|p| match p.child.try_wait() {
            Ok(Some(status)) => Some((format!("{} ({status})", p.name), tail(&p.log, 30))),
            _ => None,
        })
    }

    /// Stops the pods, then the control plane in reverse order of start
    /// (SIGTERM, SIGKILL after 5 s); removes the kubeconfig it wrote.
    pub async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        while let Some(mut p) = self.procs.pop() {
            let pid = Pid::from_raw(p.child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(p.child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

async fn readyz(client: &kube::Client) -> bool {
    let Ok(req) = axum::http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body == "ok")
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        self.node.take();
        for p in self.procs.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
