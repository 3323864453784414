//! The sandbox handle: the API server, the in-process controllers and the
//! kubelet, a `kube::Client` and a kubeconfig file pointing at them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::ApiServer;
use crate::apiserver::faults::Faults;
use crate::apiserver::store::Store;
use crate::controllers::Controllers;
use crate::kubelet::Kubelet;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("starting the API server: {0}")]
    Bind(#[source] std::io::Error),
    #[error("writing the kubeconfig: {0}")]
    Kubeconfig(#[source] std::io::Error),
    #[error("building the kube client: {0}")]
    Client(#[source] kube::Error),
    #[error("invalid server URL: {0}")]
    Url(#[source] axum::http::uri::InvalidUri),
}

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Run the kubelet and the workload controllers (off: API server only).
    pub run_workloads: bool,
    /// Where to write the kubeconfig; a temporary file when None.
    pub kubeconfig: Option<PathBuf>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            bookmark_interval: Duration::from_secs(5),
            run_workloads: true,
            kubeconfig: None,
        }
    }
}

pub struct Sandbox {
    server: ApiServer,
    client: kube::Client,
    kubeconfig: PathBuf,
    tempdir: Option<tempfile::TempDir>,
    controllers: Option<Controllers>,
    kubelet: Option<Kubelet>,
}

pub fn kubeconfig_yaml(server_url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server_url}\n\
         users:\n- name: sandbox\n  user: {{}}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    \
         user: sandbox\n    namespace: default\ncurrent-context: sandbox\n"
    )
}

impl Sandbox {
    fn config_for(url: &str) -> Result<kube::Config, SandboxError> {
        let mut config = kube::Config::new(url.parse().map_err(SandboxError::Url)?);
        config.default_namespace = "default".into();
        Ok(config)
    }

    /// The client configuration [`Sandbox::client`] uses, to build variants
    /// (e.g. with `default_retry = false`: kube's default client retries 429
    /// answers, a PDB-blocked eviction included, for minutes).
    pub fn kube_config(&self) -> kube::Config {
        // The URL was parsed once already in start_with.
        Self::config_for(&self.url()).unwrap_or_else(|_| kube::Config::new(Default::default()))
    }

    pub async fn start() -> Result<Sandbox, SandboxError> {
        Self::start_with(SandboxOptions::default()).await
    }

    pub async fn start_with(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let server = ApiServer::start(opts.bookmark_interval)
            .await
            .map_err(SandboxError::Bind)?;
        let (kubeconfig, tempdir) = match &opts.kubeconfig {
            Some(p) => (p.clone(), None),
            None => {
                let dir = tempfile::tempdir().map_err(SandboxError::Kubeconfig)?;
                (dir.path().join("kubeconfig"), Some(dir))
            }
        };
        // The server listens already: the file appears only once it can be used, and
        // whole (written aside, then renamed), so a script can wait for it to exist.
        let partial = kubeconfig.with_extension("partial");
        std::fs::write(&partial, kubeconfig_yaml(&server.url()))
            .and_then(|()| std::fs::rename(&partial, &kubeconfig))
            .map_err(SandboxError::Kubeconfig)?;
        let config = Self::config_for(&server.url())?;
        let client = kube::Client::try_from(config).map_err(SandboxError::Client)?;
        let (controllers, kubelet) = if opts.run_workloads {
            (
                Some(Controllers::start(server.store.clone())),
                Some(Kubelet::start(server.store.clone())),
            )
        } else {
            (None, None)
        };
        Ok(Sandbox {
            server,
            client,
            kubeconfig,
            tempdir,
            controllers,
            kubelet,
        })
    }

    /// The API server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Direct access to the object store (bypasses HTTP and the counters).
    pub fn store(&self) -> &Arc<Store> {
        &self.server.store
    }

    /// Fault injection and request counters.
    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }

    /// Ends every open watch; clients re-watch from their last version.
    pub fn drop_watches(&self) {
        self.server.faults.drop_watches();
    }

    /// Forgets the event history and ends every watch, so resuming watches get
    /// 410 Expired and must relist.
    pub fn expire_history(&self) {
        self.server.store.expire_history();
        self.server.faults.drop_watches();
    }

    /// Answers `code` (409, 429, 500, ...) to the next `times` requests matching
    /// `verb` (get, list, watch, create, update, patch, delete, deletecollection)
    /// and `resource` (plural or `plural/subresource`); None matches any.
    pub fn fail_next(&self, verb: Option<&str>, resource: Option<&str>, code: u16, times: usize) {
        self.server.faults.fail_next(verb, resource, code, times);
    }

    /// Delays every API response by `delay` (zero to stop).
    pub fn set_delay(&self, delay: Duration) {
        self.server.faults.set_delay(delay);
    }

    /// Write requests (create/update/patch/delete) received over HTTP for a
    /// resource, subresources included.
    pub fn writes(&self, resource: &str) -> u64 {
        self.server.faults.writes(resource)
    }

    /// Requests received over HTTP for `resource` and `verb`.
    pub fn requests(&self, resource: &str, verb: &str) -> u64 {
        self.server.faults.requests(resource, verb)
    }

    /// Every eviction the API server carried out (its own record), oldest first.
    pub fn evictions(&self) -> Vec<crate::apiserver::store::Eviction> {
        self.server.store.evictions()
    }

    /// Pids of the pod processes currently running.
    pub fn pod_pids(&self) -> Vec<i32> {
        self.kubelet.as_ref().map(Kubelet::pids).unwrap_or_default()
    }

    /// Stops everything: pods get SIGTERM, then SIGKILL after their grace period;
    /// then the controllers and the API server stop, and the kubeconfig is removed
    /// (a stale one would point the next `kubectl` at a port nobody serves).
    pub async fn shutdown(mut self) {
        if let Some(k) = self.kubelet.take() {
            k.shutdown().await;
        }
        if let Some(c) = self.controllers.take() {
            c.stop();
        }
        self.server.stop().await;
        if self.tempdir.is_none() {
            let _ = std::fs::remove_file(&self.kubeconfig);
        }
    }
}
