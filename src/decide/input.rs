//! What the decision core is given: plain, platform-neutral data. A Kubernetes
//! Deployment and a Fly.io process group are both a [`Workload`] with [`Instance`]s.

use jiff::Timestamp;

pub use crate::observation::{DatabaseFull, DatabaseLimits, PoolerLimits};
use crate::{
    observation::{Measured, PodSample},
    policy::{PoolPolicyStatus, RemediationRecord, ResolvedPolicy, WorkloadKind},
};

/// What a workload is, in the platform's own word (status rows, Events, metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    #[default]
    Deployment,
    StatefulSet,
    /// A Fly.io app's process group; its instances are machines.
    FlyProcessGroup,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::FlyProcessGroup => "FlyProcessGroup",
        }
    }

    /// The kind a status row or record names; `None` for a word poolwarden does not
    /// write (a record edited by hand), which is then never taken for a Deployment.
    pub fn parse(word: &str) -> Option<Kind> {
        [Kind::Deployment, Kind::StatefulSet, Kind::FlyProcessGroup]
            .into_iter()
            .find(|k| k.as_str() == word)
    }
}

impl From<WorkloadKind> for Kind {
    fn from(k: WorkloadKind) -> Self {
        match k {
            WorkloadKind::Deployment => Kind::Deployment,
            WorkloadKind::StatefulSet => Kind::StatefulSet,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Status rows and records keep the kind as text (it is the CRD's wire form): these
// compare the two without allocating.
impl PartialEq<String> for Kind {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Kind> for String {
    fn eq(&self, other: &Kind) -> bool {
        self == other.as_str()
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One workload, by kind and name (its namespace or app is the policy's).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct WorkloadRef {
    pub kind: Kind,
    pub name: String,
}

/// A [`WorkloadRef`] borrowed from a workload: looks up a map keyed by `WorkloadRef`
/// (the sizing histories) without cloning the name, so a pass allocates nothing for
/// the workloads it already knows. It hashes as `WorkloadRef` does (kind, then the
/// name as a `str`), which `hashbrown`'s lookups by an equivalent key rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadKey<'a> {
    pub kind: Kind,
    pub name: &'a str,
}

impl hashbrown::Equivalent<WorkloadRef> for WorkloadKey<'_> {
    fn equivalent(&self, key: &WorkloadRef) -> bool {
        self.kind == key.kind && self.name == key.name
    }
}

impl From<&WorkloadKey<'_>> for WorkloadRef {
    fn from(key: &WorkloadKey<'_>) -> Self {
        WorkloadRef {
            kind: key.kind,
            name: key.name.to_owned(),
        }
    }
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// The value of one environment variable on a container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum EnvValue {
    /// A literal value.
    Literal(String),
    /// The instance's own name (a pod's `metadata.name` through the downward API, a
    /// Fly machine's `app:group:machine id`): what `PGAPPNAME` is set to.
    InstanceName,
    /// Any other source (a Secret or ConfigMap key, a resource field), described.
    /// Never equal to what poolwarden wants, so an owned entry set this way is rewritten.
    Other(String),
}

/// A container's env by name, sorted. A sorted `Vec` rather than a `BTreeMap`: a
/// container has a few variables, and a map's first node has room for eleven, which
/// at 10,000 workloads heaptrack put at 6.3 MB of the controller's heap.
pub type Env = litemap::LiteMap<String, EnvValue>;

/// One container of the workload's template and its current env.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Container {
    pub name: String,
    pub env: Env,
}

/// One running instance (a pod, a machine).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Instance {
    pub name: String,
    pub ready: bool,
    /// When it started; `None` when unknown, which means it cannot be judged yet.
    pub started_at: Option<Timestamp>,
    /// Samples, oldest first as the platform keeps them; the verdicts sort them when
    /// they are not, and sizing reads the newest from the back (`sizing::feed`).
    pub samples: Vec<PodSample>,
}

/// One selected workload.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Workload {
    pub kind: Kind,
    pub name: String,
    pub replicas: u32,
    pub ready_replicas: u32,
    /// Extra instances a rolling update may add (maxSurge), for the connection budget.
    pub max_surge: u32,
    /// `maxReplicas` of a HorizontalPodAutoscaler that targets the workload, for the
    /// connection budget: it may scale up to that at any time.
    pub autoscaler_max: Option<u32>,
    /// Instances being deleted that still run (their connections stay open until
    /// they exit), for the connection budget. They are not in `instances`.
    pub terminating: u32,
    /// A rollout is progressing (template changed and not yet fully rolled out).
    pub rollout_in_progress: bool,
    /// Carries the pause annotation.
    pub paused: bool,
    pub containers: Vec<Container>,
    pub instances: Vec<Instance>,
    /// Samples of the workload as a whole, in any order, when attribution cannot tell
    /// its instances apart (`User`: one database role per workload). `Some` judges the
    /// workload instead of its instances — against `max` × its ready instances — and
    /// its only remediation is a rollout restart; the instances' own samples are then
    /// not read. `None` judges each instance.
    pub workload_samples: Option<Vec<PodSample>>,
    /// A digest of the pod template without restart annotations (Kubernetes), or of
    /// the machines' images (Fly): it changes with a new release, not with a restart.
    /// The recurrence guard counts restarts of one template only.
    pub template: Option<String>,
}

/// An env entry another field manager owns (learned from a server-side apply
/// conflict); poolwarden leaves it alone and reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvConflict {
    pub workload: String,
    pub container: String,
    pub env: String,
    pub manager: String,
}

/// A selected workload that another policy governs: exactly one policy governs a
/// workload (the oldest selecting it, then the first by name); the others write
/// nothing to it and report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernedElsewhere {
    pub kind: Kind,
    pub workload: String,
    /// The governing policy's name.
    pub policy: String,
}

/// Everything one decision needs.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub policy: &'a ResolvedPolicy,
    pub generation: i64,
    /// The policy carries the pause annotation.
    pub policy_paused: bool,
    /// The policy's current status: remediation history and previous conditions.
    pub status: &'a PoolPolicyStatus,
    pub workloads: &'a [Workload],
    /// Whether the database could be sampled, and its limits.
    pub database: Measured<DatabaseLimits>,
    /// When it could not because it is full: the refusal and the figures last seen.
    pub database_full: Option<&'a DatabaseFull>,
    pub conflicts: &'a [EnvConflict],
    /// With an entry in conflict, write none of the workload's entries (Kubernetes:
    /// another field manager's value next to ours could be a pair validation refuses).
    /// Fly's `secrets: Report` writes the others: the secret is reported, and the
    /// policy author chose to keep it.
    pub env_all_or_nothing: bool,
    /// Remediations other policies recorded for the workloads this one governs: the
    /// cooldown and the one-in-flight rule are per workload, across policies.
    pub other_remediations: &'a [RemediationRecord],
    /// Selected workloads another policy governs; they are left out of `workloads`.
    pub governed_elsewhere: &'a [GovernedElsewhere],
    /// Each workload's recommended pool size and what Auto needs (`spec.sizing`).
    pub sizing: super::sizing::SizingInput<'a>,
    /// The connection budget of the whole database (every policy and workload on
    /// it), when the pass could put it together; `None` judges this policy's
    /// workloads alone against the database's limits.
    pub budget: Option<&'a super::budget::Budget>,
    pub now: Timestamp,
}
