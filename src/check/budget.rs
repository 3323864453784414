//! `poolwarden check --budget`: the database connection budget of the policies
//! given, offline. The workloads they select and the autoscalers that target them
//! are read from the same files (a GitOps repository keeps them together); the
//! database's limits come from flags, and a limit not given is unknown — said so,
//! never taken for zero or for no limit. All policies given are taken to share one
//! database (give the ones that do); the arithmetic is the controller's
//! ([`crate::decide::budget`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
};
use serde_json::Value;

use crate::{
    decide::budget::{Budget, Claim, Limit, Load, Route, Scope, build},
    observation::Measured,
    platform::kubernetes::{cache::CachedAutoscaler, workloads::WorkloadView},
    policy::{PoolPolicy, ResolvedPolicy, WorkloadKind, validate_for_kubernetes},
};

/// The database's limits as given on the command line; `None` is not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GivenLimits {
    pub max_connections: Option<u32>,
    /// `superuser_reserved_connections` + `reserved_connections`.
    pub reserved: Option<u32>,
    /// The database's `datconnlimit`; -1 for none.
    pub datconnlimit: Option<i64>,
    /// The pooler's Σ `max_client_conn`, for policies that name one.
    pub max_client_conn: Option<u64>,
    /// Backends no policy's workloads hold (other apps, people, jobs).
    pub unattributed: Option<u64>,
}

/// The budget and what it could not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offline {
    pub budget: Budget,
    /// The policies summed, `namespace/name`.
    pub policies: Vec<String>,
    /// What is unknown or left out, in words.
    pub notes: Vec<String>,
}

/// How the offline budget names the one database.
const DATABASE: &str = "the database";
const POOLER: &str = "the pooler";

/// The budget of every valid policy among `documents`, over the workloads and
/// autoscalers among them. A workload two policies select counts once, for the
/// first by namespace and name (the controller: the oldest).
pub fn offline_budget(documents: &[Value], given: &GivenLimits) -> Offline {
    let views: Vec<WorkloadView> = documents.iter().filter_map(workload_view).collect();
    let autoscalers: Vec<CachedAutoscaler> = documents.iter().filter_map(autoscaler).collect();
    let mut policies: Vec<(String, PoolPolicy)> = documents
        .iter()
        .filter(|d| d["kind"] == "PoolPolicy")
        .filter_map(|d| serde_json::from_value::<PoolPolicy>(d.clone()).ok())
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    namespace(&p.metadata.namespace),
                    p.metadata.name.clone().unwrap_or_default()
                ),
                p,
            )
        })
        .collect();
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    let mut counted: BTreeSet<(String, WorkloadKind, String)> = BTreeSet::new();
    let mut claims = Vec::new();
    let mut pooled = false;
    let mut names = Vec::new();
    for (key, policy) in &policies {
        let Ok(resolved) = validate_for_kubernetes(&policy.spec) else {
            continue;
        };
        names.push(key.clone());
        pooled |= resolved.pooler.is_some();
        let ns = namespace(&policy.metadata.namespace);
        claims.extend(policy_claims(key, &ns, &resolved, (&views, &autoscalers), &mut counted));
    }
    let (loads, notes) = unknowns(given, pooled);
    Offline {
        budget: Budget {
            database: DATABASE.to_owned(),
            asked_by: String::new(),
            limits: limits(given, pooled),
            claims,
            loads,
        },
        policies: names,
        notes,
    }
}

/// The claims of one policy: the workloads of its namespace it selects that no
/// policy before it counted, each with its autoscalers' largest `maxReplicas`.
fn policy_claims(
    key: &str,
    ns: &str,
    resolved: &ResolvedPolicy,
    (views, autoscalers): (&[WorkloadView], &[CachedAutoscaler]),
    counted: &mut BTreeSet<(String, WorkloadKind, String)>,
) -> Vec<Claim> {
    let workloads: Vec<_> = views
        .iter()
        .filter(|v| v.namespace == ns && v.selected_by(resolved))
        .filter(|v| counted.insert((v.namespace.clone(), v.kind, v.name.clone())))
        .map(|v| {
            let mut w = v.to_workload(Vec::new());
            w.autoscaler_max = autoscalers
                .iter()
                .filter(|a| a.namespace == ns && a.target == Some((v.kind, v.name.clone())))
                .map(|a| a.max_replicas)
                .max();
            w
        })
        .collect();
    let pooler = resolved.pooler.as_ref().map(|_| POOLER.to_owned());
    build::claims(key, resolved, &workloads, |_, _| Route {
        database: DATABASE.to_owned(),
        role: None,
        pooler: pooler.clone(),
    })
}

/// What offline cannot know: the unattributed backends (a load when given), and
/// the notes that say what is left out.
fn unknowns(given: &GivenLimits, pooled: bool) -> (Vec<Load>, Vec<String>) {
    let mut notes = vec![
        "rolconnlimit is not checked offline: the pools' roles are not in the manifests".to_owned(),
        "terminating pods are not counted offline".to_owned(),
    ];
    let mut loads = Vec::new();
    match given.unattributed {
        Some(n) => loads.push(Load {
            what: "unattributed backends (given)".to_owned(),
            connections: n,
            database: Some(DATABASE.to_owned()),
            role: None,
            pooler: None,
        }),
        None => notes.push(
            "unattributed backends are unknown offline and not counted (--unattributed N; `poolwarden plan` reads them)"
                .to_owned(),
        ),
    }
    if pooled {
        notes.push("the pooler's server pools are not counted offline".to_owned());
    }
    (loads, notes)
}

/// The limits as given; one not given is unknown.
fn limits(given: &GivenLimits, pooled: bool) -> Vec<Limit> {
    let server = match (given.max_connections, given.reserved) {
        (Some(m), Some(r)) => Limit {
            scope: Scope::Server,
            allows: Measured::Known(u64::from(m.saturating_sub(r))),
            says: format!("max_connections {m} - {r} reserved"),
        },
        (m, r) => Limit {
            scope: Scope::Server,
            allows: Measured::Unknown(
                [
                    m.is_none().then_some("--max-connections"),
                    r.is_none().then_some("--reserved"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
                    + " not given",
            ),
            says: "max_connections - reserved".to_owned(),
        },
    };
    let mut out = vec![server];
    match given.datconnlimit {
        Some(l) if l < 0 => {}
        Some(l) => out.push(Limit {
            scope: Scope::Database(DATABASE.to_owned()),
            allows: Measured::Known(u64::try_from(l).unwrap_or(0)),
            says: "datconnlimit".to_owned(),
        }),
        None => out.push(Limit {
            scope: Scope::Database(DATABASE.to_owned()),
            allows: Measured::Unknown("--datconnlimit not given (-1: none)".to_owned()),
            says: "datconnlimit".to_owned(),
        }),
    }
    if pooled {
        out.push(Limit {
            scope: Scope::PoolerClients(POOLER.to_owned()),
            allows: given.max_client_conn.map_or_else(
                || Measured::Unknown("--max-client-conn not given".to_owned()),
                Measured::Known,
            ),
            says: "max_client_conn".to_owned(),
        });
    }
    out
}

fn namespace(ns: &Option<String>) -> String {
    ns.clone().unwrap_or_else(|| "default".to_owned())
}

/// A Deployment or StatefulSet document as the controller reads it.
fn workload_view(d: &Value) -> Option<WorkloadView> {
    let mut view = match (d["apiVersion"].as_str(), d["kind"].as_str()) {
        (Some("apps/v1"), Some("Deployment")) => {
            WorkloadView::from_deployment(&serde_json::from_value::<Deployment>(d.clone()).ok()?)
        }
        (Some("apps/v1"), Some("StatefulSet")) => {
            WorkloadView::from_statefulset(&serde_json::from_value::<StatefulSet>(d.clone()).ok()?)
        }
        _ => return None,
    };
    if view.namespace.is_empty() {
        view.namespace = "default".to_owned();
    }
    Some(view)
}

/// A HorizontalPodAutoscaler (autoscaling/v2) document.
fn autoscaler(d: &Value) -> Option<CachedAutoscaler> {
    if d["apiVersion"] != "autoscaling/v2" || d["kind"] != "HorizontalPodAutoscaler" {
        return None;
    }
    let mut a = CachedAutoscaler::from(serde_json::from_value::<HorizontalPodAutoscaler>(d.clone()).ok()?);
    if a.namespace.is_empty() {
        a.namespace = "default".to_owned();
    }
    Some(a)
}

/// The offline budget in words: what was summed, the arithmetic, what is unknown.
pub fn render(offline: &Offline) -> String {
    let assessment = offline.budget.assess();
    let verdict = if assessment.exceeded() {
        "EXCEEDED"
    } else if assessment.unknown().is_empty() {
        "within"
    } else {
        "not fully known"
    };
    let mut by_policy: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &offline.budget.claims {
        *by_policy.entry(c.id.policy.as_str()).or_default() += 1;
    }
    let summed: Vec<String> = offline
        .policies
        .iter()
        .map(|p| format!("{p} ({} workloads)", by_policy.get(p.as_str()).copied().unwrap_or(0)))
        .collect();
    let mut out = format!(
        "connection budget ({verdict}), offline, the policies given as one database: {}\n  {}\n",
        summed.join(", "),
        crate::decide::budget::message(&offline.budget, &assessment)
    );
    for note in &offline.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs() -> Vec<Value> {
        let policy = |name: &str, app: &str, max: u32| {
            json!({"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
                "metadata": {"name": name, "namespace": "prod"},
                "spec": {"selector": {"matchLabels": {"app": app}},
                    "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
                    "pool": {"maxSize": max, "processesPerPod": 2}}})
        };
        let deployment = |name: &str, replicas: u32| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "prod", "labels": {"app": name}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "strategy": {"type": "Recreate"},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "app"}]}}}})
        };
        vec![
            policy("web", "web", 10),
            policy("worker", "worker", 5),
            deployment("web", 2),
            deployment("worker", 3),
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "prod"},
                "spec": {"maxReplicas": 20, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}),
        ]
    }

    #[test]
    fn the_policies_given_are_summed_with_the_autoscalers_max_replicas() {
        let given = GivenLimits {
            max_connections: Some(100),
            reserved: Some(3),
            datconnlimit: Some(-1),
            unattributed: Some(7),
            ..GivenLimits::default()
        };
        let offline = offline_budget(&docs(), &given);
        let a = offline.budget.assess();
        // web: 20 × 2 processes × 10 = 400; worker: 3 × 2 × 5 = 30; 7 unattributed.
        assert_eq!(a.checks[0].need, 437);
        assert!(a.exceeded());
        let text = render(&offline);
        assert!(text.starts_with("connection budget (EXCEEDED)"), "{text}");
        assert!(
            text.contains("Deployment/web (prod/web): 20 (HPA maxReplicas) × 2 processes × maxSize 10 = 400"),
            "{text}"
        );
    }

    #[test]
    fn limits_not_given_are_unknown_and_say_which_flag() {
        let offline = offline_budget(&docs(), &GivenLimits::default());
        let a = offline.budget.assess();
        assert!(!a.exceeded());
        let text = render(&offline);
        assert!(text.contains("not fully known"), "{text}");
        assert!(text.contains("--max-connections and --reserved not given"), "{text}");
        assert!(text.contains("--datconnlimit not given"), "{text}");
        assert!(text.contains("unattributed backends are unknown offline"), "{text}");
    }
}
