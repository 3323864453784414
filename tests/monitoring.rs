//! The alerts and the dashboard operators install: promtool checks the rules and runs
//! their unit tests (a case per alert), and every rule and dashboard expression names
//! only metrics and labels the controller exports.
//!
//! promtool is required, never skipped: Debian's `prometheus` package brings it
//! (`apt-get install -y prometheus`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use poolwarden::telemetry::metrics::{
    ConditionLabels, DatabaseErrorLabels, DatabaseLabels, Metrics, PolicyLabels, PolicyStateLabels, ReasonLabels,
    RestartLabels, ResultLabels, StateLabels, WorkloadLabels,
};
use regex::Regex;
use serde_json::Value;

const RULES: &str = "charts/poolwarden/monitoring/poolwarden.rules.yaml";
const RULE_TESTS: &str = "tests/monitoring/poolwarden.rules.test.yaml";
const DASHBOARD: &str = "charts/poolwarden/dashboards/poolwarden.json";

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool").args(args).output().unwrap_or_else(|e| {
        panic!(
            "promtool could not be run ({e}). It is required, not optional: install Debian's \
             `prometheus` package (apt-get install -y prometheus), which brings promtool and \
             the server"
        )
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rules() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn alert_names() -> Vec<String> {
    rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn promtool_checks_the_rules_file() {
    let (ok, text) = promtool(&["check", "rules", RULES]);
    assert!(ok, "promtool check rules {RULES}:\n{text}");
}

#[test]
fn promtool_unit_tests_pass() {
    assert!(Path::new(RULE_TESTS).exists());
    let (ok, text) = promtool(&["test", "rules", RULE_TESTS]);
    assert!(ok, "promtool test rules {RULE_TESTS}:\n{text}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires() {
    let tests = yaml(RULE_TESTS);
    let mut firing = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                firing.insert(case["alertname"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let alerts = alert_names();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    for alert in &alerts {
        assert!(firing.contains(alert), "{alert} has no promtool case where it fires");
    }
}

#[test]
fn every_alert_says_which_kubectl_poolwarden_command_shows_it() {
    for r in rules().iter().filter(|r| r["alert"].is_string()) {
        let name = r["alert"].as_str().unwrap_or_default();
        let annotations = &r["annotations"];
        for key in ["summary", "description", "command"] {
            assert!(annotations[key].is_string(), "{name}: no {key} annotation");
        }
        let command = annotations["command"].as_str().unwrap_or_default();
        assert!(
            command.starts_with("kubectl poolwarden status {{ $labels.policy }} -n {{ $labels.namespace }}"),
            "{name}: {command}"
        );
        assert!(
            annotations["description"]
                .as_str()
                .unwrap_or_default()
                .contains(command),
            "{name}: the description names the command"
        );
    }
}

/// What the controller exports: each series name (with the `_total`, `_bucket`,
/// `_sum`, `_count` suffixes) and its label names, from the real registry with one
/// sample in every family.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    let p = || PolicyLabels {
        namespace: "ns".into(),
        policy: "p".into(),
    };
    let w = || WorkloadLabels {
        namespace: "ns".into(),
        policy: "p".into(),
        kind: "Deployment".into(),
        workload: "w".into(),
    };
    let r = || ReasonLabels {
        namespace: "ns".into(),
        policy: "p".into(),
        reason: "r".into(),
    };
    m.connections
        .get_or_create(&StateLabels {
            namespace: "ns".into(),
            policy: "p".into(),
            kind: "Deployment".into(),
            workload: "w".into(),
            state: "idle",
        })
        .set(1);
    m.discrepancy.get_or_create(&w()).set(1);
    m.discrepancy_limit.get_or_create(&w()).set(1);
    m.env_in_sync.get_or_create(&w()).set(1);
    m.workload_pods.get_or_create(&w()).set(1);
    m.restarts
        .get_or_create(&RestartLabels {
            namespace: "ns".into(),
            policy: "p".into(),
            action: "RestartPod".into(),
            measure: "LifetimeOverrun".into(),
        })
        .inc();
    m.skipped_remediations.get_or_create(&r()).inc();
    m.env_writes
        .get_or_create(&ResultLabels {
            namespace: "ns".into(),
            policy: "p".into(),
            result: "applied".into(),
        })
        .inc();
    m.reconcile_duration.get_or_create(&p()).observe(0.1);
    m.reconcile_errors.get_or_create(&r()).inc();
    m.database_sample_duration
        .get_or_create(&DatabaseLabels { database: "d".into() })
        .observe(0.1);
    m.database_sample_errors
        .get_or_create(&DatabaseErrorLabels {
            database: "d".into(),
            reason: "connect".into(),
        })
        .inc();
    m.scrape_errors.get_or_create(&p()).inc();
    m.leader.set(1);
    m.policy_condition
        .get_or_create(&ConditionLabels {
            namespace: "ns".into(),
            policy: "p".into(),
            condition: "Ready".into(),
        })
        .set(1);
    let s = || PolicyStateLabels {
        namespace: "ns".into(),
        policy: "p".into(),
        state: "idle",
    };
    m.policy_connections.get_or_create(&s()).set(1);
    m.policy_workloads.get_or_create(&s()).set(1);
    m.policy_workloads_env_out_of_sync.get_or_create(&p()).set(0);
    m.policy_pods.get_or_create(&p()).set(3);
    m.pool_max_size.get_or_create(&p()).set(5);
    m.database_backends.get_or_create(&p()).set(5);
    m.database_connection_limit.get_or_create(&p()).set(5);
    m.database_full.get_or_create(&p()).set(0);
    m.policy("ns", "p").record_sizing(&[poolwarden::policy::WorkloadStatus {
        kind: "Deployment".into(),
        name: "w".into(),
        sizing: Some(poolwarden::policy::sizing::SizingStatus {
            target: 6,
            lower_bound: 4,
            upper_bound: 12,
            min_size: 4,
            current: Some(20),
            confidence_hours: 30,
            message: None,
        }),
        ..Default::default()
    }]);

    let text = m.render();
    let families: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)=""#).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let labels = line.split_once('{').map(|(_, rest)| rest).unwrap_or_default();
        let names = label.captures_iter(labels).map(|c| c[1].to_owned());
        out.entry(name).or_default().extend(names);
    }
    for f in &families {
        assert!(
            out.keys().any(|k| k.starts_with(f.as_str())),
            "the test puts no sample in the family {f}: add one above"
        );
    }
    out
}

/// Metric names and label names a PromQL expression uses. Labels are those in
/// matchers, `by`/`without`/`on`/`ignoring`/`group_*` lists and Grafana's
/// `label_values(metric, label)`.
fn names_in(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let metric = Regex::new(r"\b(poolwarden[_:][a-zA-Z0-9_:]*)").unwrap();
    let matchers = Regex::new(r"\{([^}]*)\}").unwrap();
    let matcher_label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*""#).unwrap();
    let grouping = Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)").unwrap();
    let label_values = Regex::new(r"label_values\(\s*[^,]+,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)").unwrap();
    let metrics: BTreeSet<String> = metric.captures_iter(expr).map(|c| c[1].to_owned()).collect();
    let mut labels = BTreeSet::new();
    for m in matchers.captures_iter(expr) {
        // `{{ $labels.x }}`-free PromQL only; a duration `[5m]` never has braces.
        labels.extend(matcher_label.captures_iter(&m[1]).map(|c| c[1].to_owned()));
    }
    for g in grouping.captures_iter(expr).chain(label_values.captures_iter(expr)) {
        labels.extend(
            g[1].split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    (metrics, labels)
}

fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel {:?}", p["title"]), e.to_owned()));
            }
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            out.push((format!("variable {:?}", v["name"]), q.to_owned()));
        }
    }
    out
}

/// Checks each expression against what is exported; recording rules count as
/// series with the labels they aggregate by.
fn assert_only_exported(what: &str, exprs: &[(String, String)], recorded: &BTreeMap<String, BTreeSet<String>>) {
    let exported = exported();
    let mut problems = Vec::new();
    for (where_, expr) in exprs {
        let (metrics, labels) = names_in(expr);
        assert!(
            !metrics.is_empty(),
            "{what} {where_}: names no poolwarden metric: {expr}"
        );
        let mut known_labels: BTreeSet<String> = BTreeSet::from(["le".to_owned()]);
        for m in &metrics {
            match exported.get(m).or_else(|| recorded.get(m)) {
                Some(ls) => known_labels.extend(ls.iter().cloned()),
                None => problems.push(format!("{where_}: {m} is not exported")),
            }
        }
        for l in &labels {
            if !known_labels.contains(l) {
                problems.push(format!("{where_}: label {l} is on none of {metrics:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

fn recording_rules() -> BTreeMap<String, BTreeSet<String>> {
    let by = Regex::new(r"^\s*sum by \(([^)]*)\)").unwrap();
    let mut out = BTreeMap::new();
    for r in rules() {
        let Some(name) = r["record"].as_str() else { continue };
        let expr = r["expr"].as_str().unwrap_or_default();
        let labels: BTreeSet<String> = match by.captures(expr) {
            Some(c) => c[1].split(',').map(|s| s.trim().to_owned()).collect(),
            // Derived from another recording rule: its labels.
            None => names_in(expr)
                .0
                .iter()
                .filter_map(|m| out.get(m).cloned())
                .flatten()
                .collect(),
        };
        out.insert(name.to_owned(), labels);
    }
    out
}

#[test]
fn every_rule_names_only_metrics_and_labels_the_controller_exports() {
    let recorded = recording_rules();
    let mut exprs = Vec::new();
    let template_label = Regex::new(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)").unwrap();
    for r in rules() {
        let name = r["alert"]
            .as_str()
            .or(r["record"].as_str())
            .unwrap_or_default()
            .to_owned();
        let expr = r["expr"].as_str().unwrap_or_default().to_owned();
        // Labels the annotations name must be on the metrics too: checked as if the
        // expression grouped by them.
        let mut used: BTreeSet<String> = BTreeSet::new();
        for text in r["annotations"].as_object().into_iter().flat_map(|a| a.values()) {
            used.extend(
                template_label
                    .captures_iter(text.as_str().unwrap_or_default())
                    .map(|c| c[1].to_owned()),
            );
        }
        if !used.is_empty() {
            let list: Vec<String> = used.into_iter().collect();
            exprs.push((
                format!("{name} annotations"),
                format!("{expr} by ({})", list.join(", ")),
            ));
        }
        exprs.push((name, expr));
    }
    assert_only_exported("rules", &exprs, &recorded);
}

#[test]
fn every_dashboard_expression_names_only_metrics_and_labels_the_controller_exports() {
    let exprs = dashboard_expressions();
    assert!(exprs.len() >= 10, "{exprs:?}");
    assert_only_exported("dashboard", &exprs, &BTreeMap::new());
}

#[test]
fn the_checker_catches_an_unknown_metric_and_an_unknown_label() {
    let exprs = vec![
        ("typo".to_owned(), "poolwarden_discrepency > 1".to_owned()),
        ("label".to_owned(), r#"poolwarden_leader{pod="x"}"#.to_owned()),
    ];
    let caught = std::panic::catch_unwind(|| assert_only_exported("probe", &exprs, &BTreeMap::new()));
    let message = caught
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("poolwarden_discrepency is not exported"), "{message}");
    assert!(message.contains("label pod is on none of"), "{message}");
}
