//! The Argo CD health check (integrations/argocd/poolwarden.io/PoolPolicy/health.lua)
//! under Debian's lua5.1, against PoolPolicies as the e2e tests left them
//! (tests/fixtures/health/, written by `POOLWARDEN_WRITE_FIXTURES=1 cargo test --test
//! e2e_prometheus`) and two states derived from them by changing one condition.

mod support;

use serde_json::{Value, json};
use support::argocd::health;

fn fixture(name: &str) -> Value {
    let path = format!("tests/fixtures/health/{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn set_condition(v: &mut Value, type_: &str, status: &str, reason: &str, message: &str) {
    let conditions = v["status"]["conditions"].as_array_mut().expect("conditions");
    let c = conditions.iter_mut().find(|c| c["type"] == type_).expect(type_);
    c["status"] = json!(status);
    c["reason"] = json!(reason);
    c["message"] = json!(message);
}

#[test]
fn a_new_policy_without_status_is_progressing() {
    let (status, message) = health(&fixture("progressing-new"));
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Progressing", "Waiting for poolwarden to reconcile the policy")
    );
}

#[test]
fn a_rolled_out_policy_without_leaks_is_healthy() {
    let (status, message) = health(&fixture("healthy"));
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Healthy", "Pool env in sync, no leaking pods")
    );
}

#[test]
fn a_policy_with_a_leaking_pod_is_degraded_with_the_conditions_message() {
    let (status, message) = health(&fixture("degraded-leaking"));
    assert_eq!(status, "Degraded");
    assert_eq!(message, "LeakingPods: 1 pod(s) above the discrepancy limit");
}

#[test]
fn a_paused_policy_is_suspended() {
    let (status, message) = health(&fixture("suspended-paused"));
    assert_eq!(status, "Suspended");
    assert!(message.contains("poolwarden.io/paused"), "{message}");
}

#[test]
fn a_generation_not_yet_observed_is_progressing() {
    let mut v = fixture("healthy");
    v["metadata"]["generation"] = json!(v["status"]["observedGeneration"].as_i64().unwrap_or(1) + 1);
    let (status, message) = health(&v);
    assert_eq!(status, "Progressing");
    assert!(
        message.starts_with("Waiting for poolwarden to observe generation"),
        "{message}"
    );
}

#[test]
fn env_owned_by_another_manager_is_degraded_with_who_owns_it() {
    let mut v = fixture("healthy");
    let who = "DB_POOL_MAX on web/app is owned by helm";
    set_condition(&mut v, "Conflict", "True", "FieldOwnedByOtherManager", who);
    set_condition(&mut v, "Stalled", "True", "FieldOwnedByOtherManager", who);
    set_condition(&mut v, "Ready", "False", "NotReconciled", "");
    assert_eq!(
        health(&v),
        ("Degraded".into(), format!("FieldOwnedByOtherManager: {who}"))
    );
}

#[test]
fn an_unreachable_database_is_degraded() {
    let mut v = fixture("healthy");
    set_condition(
        &mut v,
        "DatabaseReachable",
        "False",
        "SampleFailed",
        "postgres@db:5432/app: cannot connect",
    );
    set_condition(&mut v, "Degraded", "True", "DatabaseUnreachable", "");
    set_condition(&mut v, "Ready", "False", "NotReconciled", "");
    assert_eq!(health(&v), ("Degraded".into(), "DatabaseUnreachable".into()));
}

#[test]
fn env_being_rolled_out_is_progressing() {
    let mut v = fixture("healthy");
    set_condition(
        &mut v,
        "Reconciling",
        "True",
        "Progressing",
        "pool env being applied or rolled out",
    );
    set_condition(&mut v, "Ready", "False", "NotReconciled", "");
    assert_eq!(
        health(&v),
        (
            "Progressing".into(),
            "Progressing: pool env being applied or rolled out".into()
        )
    );
}

#[test]
fn a_connection_budget_over_max_connections_is_healthy_with_a_warning() {
    let mut v = fixture("healthy");
    set_condition(
        &mut v,
        "BudgetExceeded",
        "True",
        "OverMaxConnections",
        "pools may open 300 connections, database allows 97",
    );
    let (status, message) = health(&v);
    assert_eq!(status, "Healthy");
    assert!(
        message.ends_with("warning: OverMaxConnections: pools may open 300 connections, database allows 97"),
        "{message}"
    );
}
