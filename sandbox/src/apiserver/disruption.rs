//! PodDisruptionBudget arithmetic shared by the eviction endpoint and the
//! disruption controller: how many matching pods are healthy and how many may go,
//! and whether an eviction is admitted.
//! See <https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-budgets>.

use serde_json::{Value, json};

use super::selector::LabelSelector;
use super::status::{ApiError, ApiResult};

pub fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

pub fn pod_is_terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

pub fn pdb_selects(pdb: &Value, pod: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    // A null selector selects nothing; an empty one selects every pod (policy/v1).
    sel.is_object()
        && pod["metadata"]["namespace"] == pdb["metadata"]["namespace"]
        && LabelSelector::from_object(sel).matches(pod)
}

/// `IntOrString` against a total: ints as is, percentages rounded up.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            Some((pct * total + 99) / 100)
        }
        _ => None,
    }
}

/// The status fields the disruption controller keeps current, computed from the
/// pods the budget selects.
pub fn pdb_status(pdb: &Value, pods: &[&Value]) -> Value {
    let matching: Vec<&&Value> = pods
        .iter()
        .filter(|p| pdb_selects(pdb, p) && !pod_is_terminating(p))
        .collect();
    let expected = matching.len() as i64;
    let healthy = matching.iter().filter(|p| pod_is_ready(p)).count() as i64;
    let spec = &pdb["spec"];
    let desired = if let Some(min) = scaled(&spec["minAvailable"], expected) {
        min
    } else if let Some(max) = scaled(&spec["maxUnavailable"], expected) {
        (expected - max).max(0)
    } else {
        0
    };
    let allowed = (healthy - desired).max(0);
    json!({
        "observedGeneration": pdb["metadata"]["generation"],
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": if allowed > 0 { "True" } else { "False" },
            "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
            "message": "",
            "lastTransitionTime": "1970-01-01T00:00:00Z",
            "observedGeneration": pdb["metadata"]["generation"],
        }],
    })
}

/// Whether the Eviction subresource lets `pod` go, given every pod and budget of its
/// namespace: refused (429, as the real server answers) when a budget selecting the
/// ready pod allows no disruption; else the budgets that select it, each with its
/// next object (one disruption spent). Evicting a pod that is not ready spends
/// nothing, as it does not lower the healthy count.
/// See <https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/>.
pub fn admit_eviction<'a>(pod: &Value, pods: &[&Value], budgets: &'a [Value]) -> ApiResult<Vec<(&'a Value, Value)>> {
    if !pod_is_ready(pod) {
        return Ok(Vec::new());
    }
    let selecting: Vec<&Value> = budgets.iter().filter(|b| pdb_selects(b, pod)).collect();
    let mut spent = Vec::with_capacity(selecting.len());
    for pdb in &selecting {
        let status = pdb_status(pdb, pods);
        if status["disruptionsAllowed"].as_i64().unwrap_or(0) < 1 {
            return Err(budget_refuses(pdb, &status));
        }
        spent.push(status);
    }
    Ok(selecting
        .into_iter()
        .zip(spent)
        .map(|(pdb, mut status)| {
            let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
            status["disruptionsAllowed"] = json!(allowed - 1);
            let mut next = pdb.clone();
            next["status"] = status;
            (pdb, next)
        })
        .collect())
}

/// The real server's answer when a budget allows no disruption.
fn budget_refuses(pdb: &Value, status: &Value) -> ApiError {
    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
    ApiError::too_many_requests("Cannot evict pod as it would violate the pod's disruption budget.").with_details(
        json!({"causes": [{"reason": "DisruptionBudget", "message": format!(
            "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
            status["desiredHealthy"], status["currentHealthy"])}]}),
    )
}
