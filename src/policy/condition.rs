//! The conditions of a `PoolPolicy`'s status: poolwarden's own [`Condition`] (the
//! JSON of `meta/v1 Condition`, so `kubectl wait --for=condition=Ready` and Argo CD
//! read it as any other), and every condition type, status and reason poolwarden
//! writes, named once here.
//!
//! A type of its own keeps the decision core free of `k8s_openapi`: the core writes
//! the status, and the status is plain data.

use std::borrow::Cow;

use jiff::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The condition types a policy's status carries.
pub mod type_ {
    pub const READY: &str = "Ready";
    pub const DEGRADED: &str = "Degraded";
    pub const DATABASE_REACHABLE: &str = "DatabaseReachable";
    pub const CONFLICT: &str = "Conflict";
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const LEAK_RECURRING: &str = "LeakRecurring";
    /// Sizing mode Auto only: True while Auto cannot fit a workload's recommended
    /// maxSize within the database budget above its lower bound.
    pub const SIZING_REFUSED: &str = "SizingRefused";
}

/// A condition's `status`. poolwarden never writes `Unknown`: what it cannot tell is
/// said in the condition's reason and message.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
}

/// The reasons of the conditions, grouped by the condition that uses them.
pub mod reason {
    // DatabaseReachable
    pub const SAMPLED: &str = "Sampled";
    pub const SAMPLE_FAILED: &str = "SampleFailed";
    // DatabaseReachable and Degraded: refused for want of a connection slot.
    pub const DATABASE_FULL: &str = "DatabaseFull";
    // Conflict and Stalled
    pub const GOVERNED_BY_OTHER_POLICY: &str = "GovernedByOtherPolicy";
    pub const FIELD_OWNED_BY_OTHER_MANAGER: &str = "FieldOwnedByOtherManager";
    pub const NO_CONFLICT: &str = "NoConflict";
    pub const NOT_STALLED: &str = "NotStalled";
    // BudgetExceeded
    pub const OVER_MAX_CONNECTIONS: &str = "OverMaxConnections";
    pub const WITHIN_MAX_CONNECTIONS: &str = "WithinMaxConnections";
    // Reconciling
    pub const PROGRESSING: &str = "Progressing";
    pub const IDLE: &str = "Idle";
    // LeakRecurring
    pub const RESTARTS_DO_NOT_HELP: &str = "RestartsDoNotHelp";
    pub const NO_RECURRING_LEAK: &str = "NoRecurringLeak";
    // Degraded
    pub const DATABASE_UNREACHABLE: &str = "DatabaseUnreachable";
    pub const LEAKING_PODS: &str = "LeakingPods";
    pub const HEALTHY: &str = "Healthy";
    // Ready
    pub const RECONCILED: &str = "Reconciled";
    pub const NO_WORKLOADS_SELECTED: &str = "NoWorkloadsSelected";
    pub const NOT_RECONCILED: &str = "NotReconciled";
    // SizingRefused
    pub const BUDGET_BELOW_LOWER_BOUND: &str = "BudgetBelowLowerBound";
    pub const SIZES_FIT: &str = "SizesFit";
    // Ready, Stalled and Reconciling of a policy that does not validate
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// One condition, serialised as `meta/v1 Condition` is (same fields, same order,
/// `lastTransitionTime` in whole seconds): a status written by an older poolwarden
/// reads back equal, so an unchanged world still writes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// When the status last flipped; kept while it does not.
    #[serde(with = "seconds")]
    pub last_transition_time: Timestamp,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub reason: String,
    /// [`status::TRUE`] or [`status::FALSE`].
    #[serde(default)]
    pub status: String,
    /// One of [`type_`].
    #[serde(default, rename = "type")]
    pub type_: String,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == status::TRUE
    }
}

/// RFC 3339 in whole seconds, as `meta/v1 Time` writes it; any RFC 3339 is read.
mod seconds {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, ser::Error};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        let text = jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", *t).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(d)
    }
}

/// The schema of `meta/v1 Condition` (k8s-openapi's, descriptions included), so the
/// CRD is the one generated when the status held k8s-openapi's type.
impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Condition".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "properties": {
                "lastTransitionTime": {
                    "description": "lastTransitionTime is the last time the condition transitioned from one status to another. This should be when the underlying condition changed.  If that is not known, then using the time when the API field changed is acceptable.",
                    "type": "string",
                    "format": "date-time",
                },
                "message": {
                    "description": "message is a human readable message indicating details about the transition. This may be an empty string.",
                    "type": "string",
                },
                "observedGeneration": {
                    "description": "observedGeneration represents the .metadata.generation that the condition was set based upon. For instance, if .metadata.generation is currently 12, but the .status.conditions[x].observedGeneration is 9, the condition is out of date with respect to the current state of the instance.",
                    "type": "integer",
                    "format": "int64",
                },
                "reason": {
                    "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition. Producers of specific condition types may define expected values and meanings for this field, and whether the values are considered a guaranteed API. The value should be a CamelCase string. This field may not be empty.",
                    "type": "string",
                },
                "status": {
                    "description": "status of the condition, one of True, False, Unknown.",
                    "type": "string",
                },
                "type": {
                    "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                },
            },
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_meta_v1_condition_does() {
        let ours = Condition {
            last_transition_time: Timestamp::from_second(1_800_000_000).unwrap()
                + jiff::SignedDuration::from_millis(250),
            message: "m".into(),
            observed_generation: Some(3),
            reason: reason::RECONCILED.into(),
            status: status::TRUE.into(),
            type_: type_::READY.into(),
        };
        let theirs = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ours.last_transition_time),
            message: ours.message.clone(),
            observed_generation: ours.observed_generation,
            reason: ours.reason.clone(),
            status: ours.status.clone(),
            type_: ours.type_.clone(),
        };
        let json = serde_json::to_string(&ours).unwrap();
        assert_eq!(json, serde_json::to_string(&theirs).unwrap());
        let back: Condition = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.last_transition_time,
            Timestamp::from_second(1_800_000_000).unwrap()
        );
        assert!(
            serde_json::from_str::<Condition>(r#"{"type":"Ready","status":"True"}"#).is_err(),
            "lastTransitionTime is required, as in meta/v1"
        );
    }

    #[test]
    fn has_the_schema_of_meta_v1_condition() {
        let mut generator = SchemaGenerator::default();
        let theirs =
            <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as JsonSchema>::json_schema(&mut generator);
        let mut theirs = serde_json::to_value(theirs).unwrap();
        // k8s-openapi refers to its Time by name; ours is written out in place.
        theirs["properties"]["lastTransitionTime"] = serde_json::json!({
            "description": theirs["properties"]["lastTransitionTime"]["description"],
            "type": "string",
            "format": "date-time",
        });
        let ours = serde_json::to_value(Condition::json_schema(&mut generator)).unwrap();
        assert_eq!(ours, theirs);
    }
}
