//! The Kubernetes side of `spec.database.pooler`: the admin URL from its Secret and,
//! with a podSelector, the addresses of the pooler's running pods (listed by label on
//! each pass: the pod cache keeps no labels, and a pooler is a handful of pods).

use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use super::reconcile::secret_value;
use crate::{
    observe::postgres::Snapshot,
    policy::validate::{ResolvedPooler, UrlSource},
};

/// The policy's sample as its pods see it through the pooler.
pub async fn sample(
    client: &Client,
    namespace: &str,
    pooler: &ResolvedPooler,
    database: Result<Arc<Snapshot>, String>,
) -> Result<Arc<Snapshot>, String> {
    let admin_url = match &pooler.admin_url {
        UrlSource::Secret(r) => secret_value(client, namespace, r).await,
        UrlSource::Env(var) => Err(format!(
            "database.pooler.adminUrlFromEnv ({var}) is read by `poolwarden fly`; in a cluster use adminUrlSecretRef"
        )),
    };
    let instances = match &pooler.pod_selector {
        None => None,
        Some(labels) => Some(pooler_pods(client, namespace, labels).await),
    };
    crate::platform::pooler::sample_through_pooler(database, admin_url, instances).await
}

async fn pooler_pods(
    client: &Client,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<IpAddr>, String> {
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .map_err(|e| format!("listing the pooler's pods: {e}"))?;
    let mut addrs: Vec<IpAddr> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
        .collect();
    addrs.sort();
    Ok(addrs)
}
