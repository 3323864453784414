//! `poolwarden status` — also `kubectl poolwarden status` when the binary is installed
//! on PATH as `kubectl-poolwarden`: per policy and workload, env in sync or not,
//! connections by state, the measure against its limit, which pods exceed it and
//! since when, the last restarts and skips with their reasons, and the conditions.
//! Reads only the PoolPolicy's status and its Events; writes nothing.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;

use super::TextOutput;
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Serialize;

use crate::policy::PoolPolicy;

/// The name kubectl runs a plugin by: `kubectl poolwarden` finds `kubectl-poolwarden`.
pub const PLUGIN_EXECUTABLE: &str = "kubectl-poolwarden";

/// How many recent restarts and skips the text output shows per policy.
const RECENT_EVENTS: usize = 5;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One policy; every policy of the namespace when omitted.
    pub policy: Option<String>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOutput::Text)]
    pub output: TextOutput,
    /// Print again whenever the status or the policy's Events change (Ctrl-C stops).
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// One Event about a policy, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    pub time: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub note: String,
}

/// One policy as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub paused: bool,
    pub spec: serde_json::Value,
    pub status: serde_json::Value,
    /// The policy's Events, newest first.
    pub events: Vec<EventLine>,
}

pub async fn run(args: StatusArgs) -> ExitCode {
    let client = match crate::cli::kube_client::clients(args.kubeconfig.as_ref()).await {
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut last = String::new();
    loop {
        let text = match snapshot(&client, &args).await {
            Ok(views) => match args.output {
                TextOutput::Json => serde_json::to_string_pretty(&serde_json::json!({ "policies": views }))
                    .map(|s| s + "\n")
                    .unwrap_or_default(),
                TextOutput::Text => {
                    let now = Timestamp::now();
                    views.iter().map(|v| render(v, now)).collect::<Vec<_>>().join("\n")
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                if !args.watch {
                    return ExitCode::from(1);
                }
                String::new()
            }
        };
        if !args.watch {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        // Ages in the text change every second; only a real change prints again.
        let key = strip_ages(&text);
        if key != last && !text.is_empty() {
            println!("--- {}", Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
            print!("{text}");
            last = key;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn strip_ages(text: &str) -> String {
    static AGE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\(\d+[smhd] ago\)").expect("a valid pattern"));
    AGE.replace_all(text, "").into_owned()
}

async fn snapshot(client: &Client, args: &StatusArgs) -> Result<Vec<PolicyView>, String> {
    let mut views = Vec::new();
    for p in policies(client, args).await? {
        let events = policy_events(client, &p).await;
        views.push(PolicyView {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            generation: p.metadata.generation,
            paused: p
                .annotations()
                .get(crate::policy::PAUSED_ANNOTATION)
                .is_some_and(|v| v == "true"),
            spec: serde_json::to_value(&p.spec).unwrap_or_default(),
            status: serde_json::to_value(p.status.clone().unwrap_or_default()).unwrap_or_default(),
            events,
        });
    }
    Ok(views)
}

/// The policy named, or every policy of the namespace (or of all of them).
async fn policies(client: &Client, args: &StatusArgs) -> Result<Vec<PoolPolicy>, String> {
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let policies: Api<PoolPolicy> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &namespace)
    };
    Ok(match &args.policy {
        Some(name) => match policies.get_opt(name).await.map_err(|e| e.to_string())? {
            Some(p) => vec![p],
            None => return Err(format!("poolpolicy {name:?} not found in namespace {namespace:?}")),
        },
        None => {
            policies
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing poolpolicies: {e}"))?
                .items
        }
    })
}

/// The Events about `p`, newest first.
async fn policy_events(client: &Client, p: &PoolPolicy) -> Vec<EventLine> {
    let events: Api<Event> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    let selector = format!("regarding.kind=PoolPolicy,regarding.name={}", p.name_any());
    // A field selector the server does not support is no reason to show nothing.
    let items = match events.list(&ListParams::default().fields(&selector)).await {
        Ok(l) => l.items,
        Err(_) => events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default(),
    };
    let mut lines: Vec<EventLine> = items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PoolPolicy")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(p.name_any().as_str())
        })
        .map(event_line)
        .collect();
    lines.sort_by(|a, b| b.time.cmp(&a.time));
    lines
}

fn event_line(e: &Event) -> EventLine {
    let time = e
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_default();
    EventLine {
        time,
        type_: e.type_.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
    }
}

/// "3m ago" from an RFC 3339 time, or the text as it is when it does not parse.
fn ago(at: &str, now: Timestamp) -> String {
    let Ok(t) = at.parse::<Timestamp>() else {
        return at.to_owned();
    };
    let secs = now.duration_since(t).as_secs().max(0);
    let short = match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    format!("{at} ({short} ago)")
}

fn s<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn n(v: &serde_json::Value, key: &str) -> String {
    v[key].as_u64().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The text view of one policy.
pub fn render(v: &PolicyView, now: Timestamp) -> String {
    let mut out = String::new();
    render_header(&mut out, v);
    render_conditions(&mut out, &v.status, now);
    out.push_str("\nWorkloads:\n");
    let rows = v.status["workloads"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        out.push_str("  (none selected)\n");
    }
    for w in &rows {
        render_workload(&mut out, w, now);
    }
    if v.status["workloadsTruncated"] == true {
        let _ = writeln!(
            out,
            "  ... {} of {} workloads shown: those above the limit, unknown or out of sync first.\n  \
             Every workload, measured now: kubectl get ppol {} -n {} -o yaml | kubectl poolwarden plan -f -",
            rows.len(),
            n(&v.status, "workloadCount"),
            v.name,
            v.namespace
        );
    }
    render_recent_events(&mut out, &v.events, now);
    out
}

/// The policy's name, generations, rule and counts.
fn render_header(out: &mut String, v: &PolicyView) {
    let status = &v.status;
    let spec = &v.spec;
    let observed = status["observedGeneration"].as_i64();
    let _ = writeln!(
        out,
        "PoolPolicy {}/{}  generation {} (observed {}){}",
        v.namespace,
        v.name,
        v.generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
        observed.map(|g| g.to_string()).unwrap_or_else(|| "none yet".into()),
        if v.paused { "  PAUSED" } else { "" }
    );
    let d = &spec["discrepancy"];
    let r = &spec["remediation"];
    let _ = writeln!(
        out,
        "  measure {} max {} per pod for {}; remediation {}{}; pool maxSize {}",
        if d.is_null() { "none" } else { s(d, "measure") },
        n(d, "max"),
        s(d, "sustainedFor"),
        s(r, "action"),
        if r["dryRun"] == true { " (dry run)" } else { "" },
        n(&spec["pool"], "maxSize"),
    );
    let _ = writeln!(
        out,
        "  workloads {}, leaking pods {}",
        n(status, "workloadCount"),
        n(status, "leakingPods")
    );
    // The totals a controller before the bounded status did not write.
    if status.get("podCount").is_some() {
        let _ = writeln!(
            out,
            "  pods {}, env out of sync {}, exceeding {}, unknown {}, restarts in the last hour {}",
            n(status, "podCount"),
            n(status, "outOfSyncCount"),
            n(status, "exceedingCount"),
            n(status, "unknownCount"),
            n(status, "restartsLastHour")
        );
    }
}

fn render_conditions(out: &mut String, status: &serde_json::Value, now: Timestamp) {
    out.push_str("\nConditions:\n");
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    if conditions.is_empty() {
        out.push_str("  (none yet: the controller has not reconciled this policy)\n");
    }
    for c in &conditions {
        let message = s(c, "message");
        let _ = writeln!(
            out,
            "  {:<18} {:<6} {:<26} since {}{}",
            s(c, "type"),
            s(c, "status"),
            s(c, "reason"),
            ago(s(c, "lastTransitionTime"), now),
            if message.is_empty() {
                String::new()
            } else {
                format!("\n      {message}")
            }
        );
    }
}

/// One workload row: env, connections, the measure, the pods above the limit, the
/// last restart.
fn render_workload(out: &mut String, w: &serde_json::Value, now: Timestamp) {
    let _ = writeln!(
        out,
        "  {}/{}  pods {}  env {}",
        s(w, "kind"),
        s(w, "name"),
        n(w, "pods"),
        if w["envInSync"] == true {
            "in sync"
        } else {
            "NOT in sync"
        }
    );
    render_connections(out, &w["connections"]);
    if !w["measure"].is_null() {
        let worst = n(w, "worstValue");
        let over = w["worstValue"]
            .as_u64()
            .zip(w["limit"].as_u64())
            .is_some_and(|(a, b)| a > b);
        let _ = writeln!(
            out,
            "    {} worst pod {} / limit {}{}",
            s(w, "measure"),
            if worst == "-" { "unknown".to_owned() } else { worst },
            n(w, "limit"),
            if over { "  EXCEEDING" } else { "" }
        );
    }
    for e in w["exceeding"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "      pod {} at {} since {}",
            s(e, "pod"),
            n(e, "value"),
            ago(s(e, "since"), now)
        );
    }
    if let Some(m) = w["message"].as_str() {
        let _ = writeln!(out, "    {m}");
    }
    if let Ok(sizing) = serde_json::from_value::<crate::policy::sizing::SizingStatus>(w["sizing"].clone()) {
        let _ = writeln!(
            out,
            "    sizing {}",
            crate::platform::report::sizing_text(Some(&sizing))
        );
    }
    let l = &w["lastRemediation"];
    if !l.is_null() {
        let _ = writeln!(
            out,
            "    last restart {} {}: {}",
            ago(s(l, "at"), now),
            l["pod"]
                .as_str()
                .map(|p| format!("pod {p}"))
                .unwrap_or_else(|| "rollout".into()),
            s(l, "reason")
        );
    }
}

fn render_connections(out: &mut String, c: &serde_json::Value) {
    if c.is_null() {
        out.push_str("    connections unknown\n");
        return;
    }
    let _ = writeln!(
        out,
        "    connections {} (active {}, idle {}, idle in transaction {}, aborted {}, other {})",
        n(c, "total"),
        n(c, "active"),
        n(c, "idle"),
        n(c, "idleInTransaction"),
        n(c, "idleInTransactionAborted"),
        n(c, "other"),
    );
}

/// The newest restarts, skips, conflicts and refusals.
fn render_recent_events(out: &mut String, events: &[EventLine], now: Timestamp) {
    let recent: Vec<&EventLine> = events
        .iter()
        .filter(|e| {
            matches!(
                e.reason.as_str(),
                "Restarted" | "RemediationSkipped" | "Conflict" | "InvalidPolicy"
            )
        })
        .take(RECENT_EVENTS)
        .collect();
    out.push_str("\nRecent restarts and skips:\n");
    if recent.is_empty() {
        out.push_str("  (none)\n");
    }
    for e in recent {
        let _ = writeln!(out, "  {} {} {}: {}", ago(&e.time, now), e.type_, e.reason, e.note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: serde_json::Value) -> PolicyView {
        PolicyView {
            namespace: "shop".into(),
            name: "fleet".into(),
            generation: Some(1),
            paused: false,
            spec: serde_json::json!({"discrepancy": {"measure": "LifetimeOverrun", "max": 2}}),
            status,
            events: Vec::new(),
        }
    }

    fn row(name: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Deployment", "name": name, "envInSync": true, "pods": 1})
    }

    #[test]
    fn a_row_with_a_recommendation_shows_it_beside_the_size_it_runs_with() {
        let mut r = row("web");
        r["sizing"] = serde_json::json!({"target": 6, "lowerBound": 4, "upperBound": 12, "minSize": 4,
            "current": 20, "confidenceHours": 30, "message": "maxSize 20 is above the upper bound"});
        let status = serde_json::json!({"workloadCount": 1, "podCount": 1, "workloads": [r]});
        let text = render(&view(status), Timestamp::UNIX_EPOCH);
        assert!(
            text.contains("    sizing maxSize 6 (lower 4, upper 12), minSize 4, confidence 30h; runs with maxSize 20; maxSize 20 is above the upper bound\n"),
            "{text}"
        );
        let text = render(
            &view(serde_json::json!({"workloads": [row("web")]})),
            Timestamp::UNIX_EPOCH,
        );
        assert!(!text.contains("sizing"), "no recommendation, no line: {text}");
    }

    #[test]
    fn a_small_policy_shows_every_row_and_no_pointer_to_the_rest() {
        let rows: Vec<_> = (0..5).map(|i| row(&format!("w{i}"))).collect();
        let status = serde_json::json!({"workloadCount": 5, "podCount": 5, "workloads": rows});
        let text = render(&view(status), Timestamp::UNIX_EPOCH);
        for i in 0..5 {
            assert!(
                text.contains(&format!("Deployment/w{i}  pods 1  env in sync")),
                "{text}"
            );
        }
        assert!(text.contains("  pods 5, env out of sync "), "{text}");
        assert!(!text.contains("workloads shown"), "{text}");
    }

    #[test]
    fn a_big_policy_shows_its_totals_the_worst_rows_and_how_to_see_the_rest() {
        let rows: Vec<_> = (0..20).map(|i| row(&format!("w{i:05}"))).collect();
        let status = serde_json::json!({
            "workloadCount": 20000, "podCount": 40000, "outOfSyncCount": 7, "exceedingCount": 3,
            "unknownCount": 1, "restartsLastHour": 2, "leakingPods": 3,
            "workloads": rows, "workloadsTruncated": true,
        });
        let text = render(&view(status), Timestamp::UNIX_EPOCH);
        assert!(text.contains("  workloads 20000, leaking pods 3\n"), "{text}");
        assert!(
            text.contains("  pods 40000, env out of sync 7, exceeding 3, unknown 1, restarts in the last hour 2"),
            "{text}"
        );
        assert!(text.contains("... 20 of 20000 workloads shown"), "{text}");
        assert!(
            text.contains("kubectl get ppol fleet -n shop -o yaml | kubectl poolwarden plan -f -"),
            "{text}"
        );
    }
}
