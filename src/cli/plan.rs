//! `poolwarden plan -f POLICY.yaml`: what the policy would do now against the live
//! cluster and database — the same reading and decision core as the controller, and
//! no write. For reviewing a policy change before GitOps applies it.
//!
//! Exit status: 0 nothing would change, 3 changes would be made, 1 the policy is
//! invalid, 2 the file, cluster or Secret cannot be read.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::Args;

use super::Output;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::Pod,
};
use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    check::load,
    platform::{
        kubernetes::{
            cache::{CachedAutoscaler, CachedPod, CachedWorkload},
            index::SelectionIndex,
            reconcile::{Cluster, policy_database_url, words},
        },
        pass::{self, Scope},
        report::{self, PlanReport},
    },
    policy::{PoolPolicy, validate_for_kubernetes},
    telemetry::metrics::Metrics,
};

/// `plan --help` lists them: scripts and CI jobs branch on them.
pub const EXIT_CODES: &str = "Exit status:
  0  nothing would change
  1  the policy is invalid
  2  the file, the cluster or the database Secret cannot be read
  3  changes would be made (env updates or restarts)";

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The policy file (the first PoolPolicy in it): a regular file of at most 4 MiB,
    /// or - for standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace when the policy's metadata has none (default: the kubeconfig's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Use this connection string instead of the policy's Secret.
    #[arg(long)]
    pub database_url: Option<String>,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub async fn run(args: PlanArgs) -> ExitCode {
    match plan_once(&args).await {
        Ok(report) => {
            match args.output {
                Output::Table => print!("{}", report::render(&report)),
                Output::Json => println!("{:#}", serde_json::to_value(&report).unwrap_or_default()),
            }
            if report.changes {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

/// The pass the controller would make now, with a target that writes nothing.
async fn plan_once(args: &PlanArgs) -> Result<PlanReport, (u8, String)> {
    let (file, policy) = load::first_policy(&args.file).map_err(|e| (e.exit_code(), e.to_string()))?;
    let resolved = validate_for_kubernetes(&policy.spec).map_err(|ps| {
        let lines: Vec<String> = ps
            .iter()
            .map(|p| format!("{file}: {}: {}", p.path, p.message))
            .collect();
        (1, lines.join("\n"))
    })?;
    let config = super::kube_client::config(args.kubeconfig.as_ref())
        .await
        .map_err(|e| (2, e))?;
    let namespace = policy
        .namespace()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| (2, e.to_string()))?;
    let selection = list_selection(&client, &namespace).await?;
    // Without the Secret there is nothing to measure with: a plan of unknowns would
    // read as "nothing to do", so this is exit 2 like an unreadable cluster.
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => policy_database_url(&client, &namespace, &resolved)
            .await
            .map_err(|why| (2, format!("{file}: cannot read the database URL: {why}")))?,
    };
    let mut target = cluster(&client, &namespace, &policy, &selection, resolved.interval).await;
    // Read once, above: without it `plan` stops with exit 2.
    target.database_url = Some(url);
    let shared = pass::Shared::new(Arc::new(Metrics::new()));
    let scope = Scope::new(&policy, namespace.clone());
    let passed = pass::run(&shared, &mut target, &scope, &resolved)
        .await
        .map_err(|e| (2, e.to_string()))?;
    Ok(passed.report(&scope, &resolved, &words()))
}

/// The cluster as `plan` reads it: no writer, and the live policy's status, which
/// carries the remediation history budgets count.
async fn cluster<'a>(
    client: &'a kube::Client,
    namespace: &'a str,
    policy: &'a PoolPolicy,
    selection: &'a SelectionIndex,
    interval: std::time::Duration,
) -> Cluster<'a> {
    let live = Api::<PoolPolicy>::namespaced(client.clone(), namespace)
        .get_opt(&policy.name_any())
        .await
        .ok()
        .flatten();
    Cluster {
        client,
        namespace,
        policy,
        selection,
        governance: None,
        status: live.as_ref().and_then(|p| p.status.clone()).unwrap_or_default(),
        history_source: if live.is_some() {
            "from the policy's live status".to_owned()
        } else {
            "none (the policy is not in the cluster yet)".to_owned()
        },
        known_conflicts: Vec::new(),
        interval,
        database_url: None,
        writer: None,
        selected: Vec::new(),
    }
}

/// The namespace's workloads and pods, read into the controller's cached forms, so
/// `plan` selects exactly as it does.
async fn list_selection(client: &kube::Client, namespace: &str) -> Result<SelectionIndex, (u8, String)> {
    let selection = SelectionIndex::default();
    for d in list_cached::<Deployment, CachedWorkload>(client, namespace).await? {
        selection.put_workload(d);
    }
    for s in list_cached::<StatefulSet, CachedWorkload>(client, namespace).await? {
        selection.put_workload(s);
    }
    selection.replace_pods(list_cached::<Pod, CachedPod>(client, namespace).await?);
    // The connection budget counts an autoscaler's maxReplicas.
    selection.replace_autoscalers(list_cached::<HorizontalPodAutoscaler, CachedAutoscaler>(client, namespace).await?);
    Ok(selection)
}

/// Every `K` of the namespace, in the form the controller caches it.
async fn list_cached<K, C>(client: &kube::Client, namespace: &str) -> Result<Vec<C>, (u8, String)>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    C: From<K>,
{
    let list = Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| (2, format!("listing {} in {namespace}: {e}", K::plural(&()))))?;
    Ok(list.items.into_iter().map(C::from).collect())
}
