//! `poolwarden plan -f POLICY.yaml`: what the policy would do now against the live
//! cluster and database — the same reading and decision core as the controller, and
//! no write. For reviewing a policy change before GitOps applies it.
//!
//! Exit status: 0 nothing would change, 3 changes would be made, 1 the policy is
//! invalid, 2 the file, cluster or Secret cannot be read.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};
use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    check::check_source,
    decide::{self, PlanInput},
    observation::Measured,
    observe::{history::History, pool_stats::Scraper, postgres::Sampler},
    platform::{
        kubernetes::{
            cache::{CachedPod, CachedWorkload},
            gather,
            index::{Entry, SelectionIndex},
            reconcile::policy_database_url,
        },
        report as plan,
    },
    policy::{PAUSED_ANNOTATION, PoolPolicy, validate_for_kubernetes},
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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

pub async fn run(args: PlanArgs) -> ExitCode {
    match plan_once(&args).await {
        Ok(report) => {
            match args.output {
                Output::Table => print!("{}", plan::render(&report)),
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

async fn plan_once(args: &PlanArgs) -> Result<plan::Report, (u8, String)> {
    let (file, source) = crate::check::read_source(&args.file).map_err(|e| (2, e.to_string()))?;
    let (count, findings) = check_source(&file, &source);
    if !findings.is_empty() {
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        return Err((1, lines.join("\n")));
    }
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&source).map_err(|e| (1, format!("{file}: {e}")))?;
    let policy: PoolPolicy = docs
        .into_iter()
        .find(|d| d["kind"] == "PoolPolicy")
        .filter(|_| count > 0)
        .and_then(|d| serde_json::from_value(d).ok())
        .ok_or((1, format!("{file}: no PoolPolicy")))?;
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
    // Read into the controller's cached forms, so `plan` selects exactly as it does.
    let selection = SelectionIndex::default();
    for d in list_cached::<Deployment, CachedWorkload<Deployment>>(&client, &namespace).await? {
        selection.put_workload(Entry::Deployment(d));
    }
    for s in list_cached::<StatefulSet, CachedWorkload<StatefulSet>>(&client, &namespace).await? {
        selection.put_workload(Entry::StatefulSet(s));
    }
    selection.replace_pods(list_cached::<Pod, CachedPod>(&client, &namespace).await?);
    // The live policy's status carries the remediation history budgets count.
    let live = Api::<PoolPolicy>::namespaced(client.clone(), &namespace)
        .get_opt(&policy.name_any())
        .await
        .ok()
        .flatten();
    let status = live.as_ref().and_then(|p| p.status.clone()).unwrap_or_default();

    // Without the Secret there is nothing to measure with: a plan of unknowns would
    // read as "nothing to do", so this is exit 2 like an unreadable cluster.
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => policy_database_url(&client, &namespace, &resolved)
            .await
            .map_err(|why| (2, format!("{file}: cannot read the database URL: {why}")))?,
    };
    let snapshot = match Sampler::new(&url) {
        Ok(mut s) => s.sample().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let snapshot = match &resolved.pooler {
        None => snapshot,
        Some(pooler) => {
            crate::platform::kubernetes::pooler::sample(&client, &namespace, pooler, snapshot.map(std::sync::Arc::new))
                .await
                .map(std::sync::Arc::unwrap_or_clone)
        }
    };
    let now = snapshot.as_ref().map(|s| s.now).unwrap_or_else(|_| Timestamp::now());
    let selected = selection.select(&resolved, &namespace);
    let claims = match &resolved.pool_stats {
        None => None,
        Some(source) => {
            let ips: Vec<_> = selected.iter().flat_map(|s| s.pods.iter()).map(|p| p.ip).collect();
            Some(Scraper::new(64).scrape_instances(source, &ips).await)
        }
    };
    let workloads = gather::observe(
        &resolved,
        &selected,
        snapshot.as_ref().map_err(String::as_str),
        claims.as_deref(),
        &mut History::default(),
        now,
    );
    let input = PlanInput {
        policy: &resolved,
        generation: policy.metadata.generation.unwrap_or(0),
        policy_paused: policy.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true"),
        status: &status,
        workloads: &workloads,
        database: Measured::from(snapshot.as_ref().map(|s| s.limits()).map_err(Clone::clone)),
        conflicts: &[],
        env_all_or_nothing: true,
        other_remediations: &[],
        governed_elsewhere: &[],
        now,
    };
    let decided = decide::plan(&input);
    let database = plan::database_line(snapshot.as_ref().map_err(String::as_str));
    Ok(plan::report(
        &policy.name_any(),
        &namespace,
        database,
        if live.is_some() {
            "from the policy's live status".to_owned()
        } else {
            "none (the policy is not in the cluster yet)".to_owned()
        },
        &workloads,
        &decided,
        resolved.discrepancy.as_ref().map(|d| d.max),
    ))
}

/// Every `K` of the namespace, in the form the controller caches it.
async fn list_cached<K, C>(client: &kube::Client, namespace: &str) -> Result<Vec<Arc<C>>, (u8, String)>
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
    Ok(list.items.into_iter().map(|o| Arc::new(C::from(o))).collect())
}
