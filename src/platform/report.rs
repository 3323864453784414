//! What one pass would do now (`poolwarden plan`, `poolwarden fly plan`) — the env diff per
//! workload, the verdict per pod, the restarts it would make and the ones it would
//! skip — rendered as text or JSON. Pure: built from the decision core's plan.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    decide::{EnvValue, Plan, Verdict, Workload, WorkloadPlan, WorkloadRef},
    observe::postgres::Snapshot,
    policy::RemediationRecord,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub policy: String,
    pub namespace: String,
    /// `sampled at ...` or why the database could not be read.
    pub database: String,
    /// Where the remediation history budgets and cooldowns count came from.
    pub history: String,
    /// The database's connection budget: `exceeded: ...` or `within: ...`, with the
    /// arithmetic in words (the `BudgetExceeded` condition's message).
    pub budget: String,
    /// What the target calls an instance (`pod`, `machine`).
    #[serde(skip)]
    pub instance: &'static str,
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
    /// The recommended pool size, with sizing Recommend or Auto (see docs/sizing.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizing: Option<String>,
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

/// How a target names its things in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Words {
    /// What an instance is called: `pod`, `machine`.
    pub instance: &'static str,
    /// How the instance's own name is set, `{workload}` standing for the workload's
    /// name: `fieldRef metadata.name`, `sportsbook:{workload}:<machine id>`.
    pub instance_name: String,
}

impl Words {
    fn show(&self, workload: &str, v: &EnvValue) -> String {
        match v {
            EnvValue::Literal(s) => format!("{s:?}"),
            EnvValue::InstanceName => self.instance_name.replace("{workload}", workload),
            EnvValue::Other(s) => s.clone(),
        }
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

/// The report's first lines.
pub struct Heading<'a> {
    pub policy: &'a str,
    pub namespace: &'a str,
    /// `sampled at ...` or why the database could not be read.
    pub database: &'a str,
    /// Where the remediation history came from.
    pub history: &'a str,
    /// The discrepancy limit, shown beside each verdict.
    pub limit: Option<u32>,
    /// `spec.sizing.mode` is Recommend or Auto.
    pub sizing: bool,
}

pub fn report(heading: &Heading, words: &Words, workloads: &[Workload], plan: &Plan) -> PlanReport {
    let by_ref: BTreeMap<WorkloadRef, &Workload> = workloads.iter().map(|w| (w.reference(), w)).collect();
    let rows = plan
        .workloads
        .iter()
        .map(|p| workload_report(heading, words, p, by_ref.get(&p.workload).copied(), plan))
        .collect();
    PlanReport {
        policy: heading.policy.to_owned(),
        namespace: heading.namespace.to_owned(),
        database: heading.database.to_owned(),
        history: heading.history.to_owned(),
        budget: budget_line(plan),
        instance: words.instance,
        workloads: rows,
        restarts: plan.remediations.iter().map(|r| restart_line(&r.record)).collect(),
        skipped: plan.skipped.iter().map(skipped_line).collect(),
        changes: plan.changes(),
    }
}

/// One workload: its env diff (current and desired per container) and verdicts.
fn workload_report(
    heading: &Heading,
    words: &Words,
    p: &WorkloadPlan,
    workload: Option<&Workload>,
    plan: &Plan,
) -> WorkloadReport {
    let mut env = Vec::new();
    for (container, entries) in plan
        .env_change(&p.workload)
        .map(|c| &c.containers)
        .into_iter()
        .flatten()
    {
        let current = workload.and_then(|w| w.containers.iter().find(|c| &c.name == container));
        for (name, desired) in entries {
            env.push(EnvDiff {
                container: container.clone(),
                name: name.clone(),
                current: current
                    .and_then(|c| c.env.get(name))
                    .map(|v| words.show(&p.workload.name, v)),
                desired: words.show(&p.workload.name, desired),
            });
        }
    }
    let pods = p
        .verdicts
        .iter()
        .map(|(pod, v)| PodVerdict {
            pod: pod.clone(),
            verdict: verdict_text(v, heading.limit),
        })
        .collect();
    let row = plan
        .rows
        .iter()
        .find(|r| p.workload.kind == r.kind && r.name == p.workload.name);
    WorkloadReport {
        kind: p.workload.kind.to_string(),
        name: p.workload.name.clone(),
        env,
        pods,
        sizing: heading.sizing.then(|| sizing_text(row.and_then(|r| r.sizing.as_ref()))),
    }
}

/// A workload's recommendation in words.
pub fn sizing_text(s: Option<&crate::policy::sizing::SizingStatus>) -> String {
    let Some(s) = s else {
        return "no recommendation yet (the controller keeps the history; see docs/sizing.md)".to_owned();
    };
    let current = s.current.map_or("unread".to_owned(), |c| c.to_string());
    let mut text = format!(
        "maxSize {} (lower {}, upper {}), minSize {}, confidence {}h; runs with maxSize {current}",
        s.target, s.lower_bound, s.upper_bound, s.min_size, s.confidence_hours
    );
    if let Some(m) = &s.message {
        text.push_str(&format!("; {m}"));
    }
    text
}

fn target(record: &RemediationRecord) -> &str {
    record.pod.as_deref().unwrap_or(&record.workload)
}

fn restart_line(record: &RemediationRecord) -> String {
    let line = format!("{:?} {}: {}", record.action, target(record), record.reason);
    with_evidence(line, record)
}

fn skipped_line(s: &crate::decide::Skipped) -> String {
    let line = format!("{} ({}): {}", target(&s.record), s.why.label(), s.detail);
    with_evidence(line, &s.record)
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
/// The plan's `BudgetExceeded` condition as one line.
fn budget_line(plan: &Plan) -> String {
    let condition = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::policy::condition::type_::BUDGET_EXCEEDED);
    match condition {
        Some(c) if c.is_true() => format!("exceeded: {}", c.message),
        Some(c) => format!("within: {}", c.message),
        None => "not assessed".to_owned(),
    }
}

pub fn render(r: &PlanReport) -> String {
    let mut out = format!(
        "policy {}/{}\ndatabase: {}\nconnection budget: {}\n",
        r.namespace, r.policy, r.database, r.budget
    );
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
            out.push_str(&format!("  {} {}: {}\n", r.instance, p.pod, p.verdict));
        }
        if let Some(s) = &w.sizing {
            out.push_str(&format!("  sizing: {s}\n"));
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
    use crate::decide::{Container, Env, EnvChange, Kind};

    fn web() -> WorkloadRef {
        WorkloadRef {
            kind: Kind::Deployment,
            name: "web".into(),
        }
    }

    /// A plan setting DB_POOL_MAX 5 -> 20 and PGAPPNAME on `web`, whose one instance is unknown.
    fn plan_and_workload(kind: Kind) -> (Plan, Workload) {
        let w = Workload {
            kind,
            name: "web".into(),
            containers: vec![Container {
                name: "app".into(),
                env: Env::from_iter([("DB_POOL_MAX".to_owned(), EnvValue::Literal("5".into()))]),
            }],
            ..Default::default()
        };
        let plan = Plan {
            env: vec![EnvChange {
                workload: w.reference(),
                containers: BTreeMap::from([(
                    "app".to_owned(),
                    BTreeMap::from([
                        ("DB_POOL_MAX".to_owned(), EnvValue::Literal("20".into())),
                        ("PGAPPNAME".to_owned(), EnvValue::InstanceName),
                    ]),
                )]),
                owned: BTreeMap::new(),
            }],
            env_skipped: vec![],
            remediations: vec![],
            skipped: vec![],
            status: Default::default(),
            rows: vec![],
            status_changed: false,
            events: vec![],
            workloads: vec![WorkloadPlan {
                workload: w.reference(),
                verdicts: BTreeMap::from([("web-1".to_owned(), Verdict::Unknown("database: down".into()))]),
            }],
            sized: vec![],
        };
        (plan, w)
    }

    fn heading() -> Heading<'static> {
        Heading {
            policy: "pools",
            namespace: "prod",
            database: "unknown: down",
            history: "none",
            limit: Some(2),
            sizing: false,
        }
    }

    #[test]
    fn the_env_diff_shows_current_and_desired_per_container() {
        let (plan, w) = plan_and_workload(Kind::Deployment);
        assert_eq!(plan.workloads[0].workload, web());
        let words = Words {
            instance: "pod",
            instance_name: "fieldRef metadata.name".into(),
        };
        let r = report(&heading(), &words, std::slice::from_ref(&w), &plan);
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

    #[test]
    fn a_fly_report_names_machines_and_their_application_name() {
        let (plan, w) = plan_and_workload(Kind::FlyProcessGroup);
        let words = Words {
            instance: "machine",
            instance_name: "sportsbook:{workload}:<machine id>".into(),
        };
        let text = render(&report(&heading(), &words, std::slice::from_ref(&w), &plan));
        assert!(text.contains("\nFlyProcessGroup/web\n"), "{text}");
        assert!(
            text.contains("env app PGAPPNAME: (unset) -> sportsbook:web:<machine id>"),
            "{text}"
        );
        assert!(text.contains("  machine web-1: unknown: database: down"), "{text}");
        assert!(!text.contains("fieldRef") && !text.contains(" pod "), "{text}");
    }
}
