//! What one pass would do now (`poolwarden plan`, `poolwarden fly plan`) — the env diff per
//! workload, the verdict per pod, the restarts it would make and the ones it would
//! skip — rendered as text or JSON. Pure: built from the decision core's plan.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    decide::{EnvValue, Plan, Verdict, Workload},
    observe::postgres::Snapshot,
    policy::RemediationRecord,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub policy: String,
    pub namespace: String,
    /// `sampled at ...` or why the database could not be read.
    pub database: String,
    /// Where the remediation history budgets and cooldowns count came from.
    pub history: String,
    pub workloads: Vec<WorkloadReport>,
    pub restarts: Vec<String>,
    pub skipped: Vec<String>,
    /// True when applying the policy now would write something.
    pub changes: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    pub kind: String,
    pub name: String,
    pub env: Vec<EnvDiff>,
    pub pods: Vec<PodVerdict>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvDiff {
    pub container: String,
    pub name: String,
    pub current: Option<String>,
    pub desired: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodVerdict {
    pub pod: String,
    pub verdict: String,
}

fn show(v: &EnvValue) -> String {
    match v {
        EnvValue::Literal(s) => format!("{s:?}"),
        EnvValue::FieldRef(p) => format!("fieldRef {p}"),
        EnvValue::Other(s) => s.clone(),
    }
}

fn verdict_text(v: &Verdict, limit: Option<u32>) -> String {
    let limit = limit.map(|l| format!(" (limit {l})")).unwrap_or_default();
    match v {
        Verdict::Unknown(why) => format!("unknown: {why}"),
        Verdict::Within { value } => format!("within: {value}{limit}"),
        Verdict::Exceeding { value, reason, .. } => {
            format!("exceeding: {value}{limit}; {reason} (one sample cannot show sustainedFor elapsing)")
        }
        Verdict::Leaking { value, .. } => format!("leaking: {value}{limit}"),
    }
}

pub fn report(
    policy: &str,
    namespace: &str,
    database: String,
    history: String,
    workloads: &[Workload],
    plan: &Plan,
    limit: Option<u32>,
) -> Report {
    let changes_for = |w: &Workload| {
        plan.env
            .iter()
            .chain(plan.env_skipped.iter().map(|(c, _)| c))
            .find(|c| c.kind == w.kind && c.workload == w.name)
            .map(|c| c.containers.clone())
            .unwrap_or_default()
    };
    let rows = workloads
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let changes: BTreeMap<String, BTreeMap<String, EnvValue>> = changes_for(w);
            let mut env = Vec::new();
            for (container, entries) in &changes {
                let current = w.containers.iter().find(|c| &c.name == container);
                for (name, desired) in entries {
                    env.push(EnvDiff {
                        container: container.clone(),
                        name: name.clone(),
                        current: current.and_then(|c| c.env.get(name)).map(show),
                        desired: show(desired),
                    });
                }
            }
            let pods = plan
                .verdicts
                .get(i)
                .map(|vs| {
                    vs.iter()
                        .map(|(pod, v)| PodVerdict {
                            pod: pod.clone(),
                            verdict: verdict_text(v, limit),
                        })
                        .collect()
                })
                .unwrap_or_default();
            WorkloadReport {
                kind: w.kind.clone(),
                name: w.name.clone(),
                env,
                pods,
            }
        })
        .collect();
    let target = |pod: &Option<String>, workload: &str| pod.clone().unwrap_or_else(|| workload.to_owned());
    Report {
        policy: policy.to_owned(),
        namespace: namespace.to_owned(),
        database,
        history,
        workloads: rows,
        restarts: plan
            .remediations
            .iter()
            .map(|r| {
                let line = format!(
                    "{:?} {}: {}",
                    r.record.action,
                    target(&r.record.pod, &r.record.workload),
                    r.record.reason
                );
                with_evidence(line, &r.record)
            })
            .collect(),
        skipped: plan
            .skipped
            .iter()
            .map(|s| {
                let line = format!(
                    "{} ({}): {}",
                    target(&s.record.pod, &s.record.workload),
                    s.why.label(),
                    s.detail
                );
                with_evidence(line, &s.record)
            })
            .collect(),
        changes: !plan.env.is_empty() || !plan.remediations.is_empty(),
    }
}

/// `line` and, when the record has it, the leak's evidence in words (ages as of the
/// record's time), so `plan` shows what the status and the Event would say.
fn with_evidence(line: String, record: &RemediationRecord) -> String {
    match &record.evidence {
        Some(e) => {
            let at = (record.at != crate::policy::recorded_time::UNREADABLE).then_some(record.at);
            format!("{line}; evidence: {}", crate::decide::evidence::words(e, at))
        }
        None => line,
    }
}

/// The report's database line: when it was sampled, or why it could not be.
pub fn database_line(sampled: Result<&Snapshot, &str>) -> String {
    match sampled {
        Ok(s) => format!("sampled at {} ({} client backends)", s.now, s.backends.len()),
        Err(why) => format!("unknown: {why}"),
    }
}

/// The text form.
pub fn render(r: &Report) -> String {
    let mut out = format!("policy {}/{}\ndatabase: {}\n", r.namespace, r.policy, r.database);
    out.push_str(&format!("remediation history: {}\n", r.history));
    if r.workloads.is_empty() {
        out.push_str("\nno workload selected\n");
    }
    for w in &r.workloads {
        out.push_str(&format!("\n{}/{}\n", w.kind, w.name));
        if w.env.is_empty() {
            out.push_str("  env: in sync\n");
        }
        for d in &w.env {
            out.push_str(&format!(
                "  env {} {}: {} -> {}\n",
                d.container,
                d.name,
                d.current.as_deref().unwrap_or("(unset)"),
                d.desired
            ));
        }
        for p in &w.pods {
            out.push_str(&format!("  pod {}: {}\n", p.pod, p.verdict));
        }
    }
    out.push('\n');
    if r.restarts.is_empty() {
        out.push_str("would restart: nothing\n");
    }
    for s in &r.restarts {
        out.push_str(&format!("would restart: {s}\n"));
    }
    for s in &r.skipped {
        out.push_str(&format!("would not restart: {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Container, EnvChange};

    #[test]
    fn the_env_diff_shows_current_and_desired_per_container() {
        let w = Workload {
            kind: "Deployment".into(),
            name: "web".into(),
            containers: vec![Container {
                name: "app".into(),
                env: BTreeMap::from([("DB_POOL_MAX".to_owned(), EnvValue::Literal("5".into()))]),
            }],
            ..Default::default()
        };
        let plan = Plan {
            env: vec![EnvChange {
                kind: "Deployment".into(),
                workload: "web".into(),
                containers: BTreeMap::from([(
                    "app".to_owned(),
                    BTreeMap::from([
                        ("DB_POOL_MAX".to_owned(), EnvValue::Literal("20".into())),
                        ("PGAPPNAME".to_owned(), EnvValue::FieldRef("metadata.name".into())),
                    ]),
                )]),
            }],
            env_skipped: vec![],
            remediations: vec![],
            skipped: vec![],
            status: Default::default(),
            status_changed: false,
            events: vec![],
            verdicts: vec![BTreeMap::from([(
                "web-1".to_owned(),
                Verdict::Unknown("database: down".into()),
            )])],
        };
        let r = report(
            "pools",
            "prod",
            "unknown: down".into(),
            "none".into(),
            std::slice::from_ref(&w),
            &plan,
            Some(2),
        );
        assert!(r.changes);
        let text = render(&r);
        assert!(text.contains("env app DB_POOL_MAX: \"5\" -> \"20\""), "{text}");
        assert!(
            text.contains("env app PGAPPNAME: (unset) -> fieldRef metadata.name"),
            "{text}"
        );
        assert!(text.contains("pod web-1: unknown: database: down"), "{text}");
        assert!(text.contains("would restart: nothing"), "{text}");
    }
}
