//! The Kubernetes clients commands use: from `--kubeconfig`, `$KUBECONFIG`,
//! `~/.kube/config` or the in-cluster service account, in that order.

use std::path::PathBuf;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// The client configuration. Every request carries `User-Agent: poolwarden/<version>`:
/// the API server names the field manager of a write that gives none (kube-runtime's
/// Event recorder) after the agent's first word, which was "unknown" without one.
pub async fn config(kubeconfig: Option<&PathBuf>) -> Result<Config, String> {
    let mut config = file_or_inferred(kubeconfig).await?;
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(concat!("poolwarden/", env!("CARGO_PKG_VERSION"))),
    ));
    Ok(config)
}

async fn file_or_inferred(kubeconfig: Option<&PathBuf>) -> Result<Config, String> {
    match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Config::infer().await.map_err(|e| format!("finding a cluster: {e}")),
    }
}

/// The usual client, and one that does not retry 429 answers (for evictions: a
/// PodDisruptionBudget answers 429, and retrying it stalls the pass for minutes).
pub async fn clients(kubeconfig: Option<&PathBuf>) -> Result<(Client, Client), String> {
    let config = config(kubeconfig).await?;
    let mut no_retry = config.clone();
    no_retry.default_retry = false;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let evict = Client::try_from(no_retry).map_err(|e| e.to_string())?;
    Ok((client, evict))
}
