//! An in-memory Kubernetes API server over real HTTP on loopback: enough of the
//! API for the kube client and runtime, kubectl and poolwarden's controller.

pub mod apply;
pub mod defaults;
pub mod discovery;
pub mod disruption;
pub mod faults;
pub mod http;
pub mod objects;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod status;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use faults::Faults;
use store::Store;

pub struct ApiServer {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub faults: Arc<Faults>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds 127.0.0.1 on a free port and serves until [`ApiServer::stop`] or drop.
    pub async fn start(bookmark_interval: Duration) -> std::io::Result<ApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Store::new();
        let faults = Arc::new(Faults::default());
        let state = http::AppState {
            store: store.clone(),
            faults: faults.clone(),
            address: addr.to_string(),
            bookmark_interval,
        };
        let app = axum::Router::new().fallback(http::handle).with_state(state);
        let (tx, rx) = oneshot::channel::<()>();
        let drops = faults.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
                // Open watches would hold graceful shutdown forever.
                drops.drop_watches();
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sandbox API server stopped");
            }
        });
        Ok(ApiServer {
            addr,
            store,
            faults,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
