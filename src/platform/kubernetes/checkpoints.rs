//! The sizing histories' checkpoints (`decide::sizing::checkpoint`): one ConfigMap
//! per policy and workload in the policy's namespace, read once when this process
//! first reconciles the policy (after a restart or on taking the lead) and written
//! by server-side apply when due — each workload's every ten windows (ten minutes),
//! at most [`MOST_PER_PASS`] a pass — never once per pass.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use tracing::{debug, warn};

use super::actions::FIELD_MANAGER;
use crate::{
    decide::sizing::checkpoint,
    platform::{pass::Scope, sizing::SizingState},
    policy::{PoolPolicy, ResolvedPolicy, sizing::SizingMode},
};

/// The label that selects a policy's checkpoints (its value: a digest of the policy's name).
pub const POLICY_LABEL: &str = "poolwarden.io/sizing-policy";
/// Checkpoints written per pass at most: a policy of 10,000 workloads spreads its
/// writes over passes instead of sending 10,000 at once.
pub const MOST_PER_PASS: usize = 100;
/// Windows between two checkpoints of one workload.
const EVERY_WINDOWS: u32 = 10;

/// One policy's checkpoints, for one pass.
pub struct Checkpoints<'a> {
    client: &'a Client,
    namespace: String,
    policy: String,
    key: String,
    enabled: bool,
    state: &'a SizingState,
}

impl<'a> Checkpoints<'a> {
    pub fn new(
        ctx: &'a super::reconcile::Context,
        policy: &PoolPolicy,
        scope: &Scope,
        resolved: &ResolvedPolicy,
    ) -> Self {
        Checkpoints {
            client: &ctx.client,
            namespace: scope.namespace.clone(),
            policy: policy.name_any(),
            key: scope.key(),
            enabled: resolved.sizing.mode != SizingMode::Off,
            state: &ctx.shared.sizing,
        }
    }

    fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Reads the policy's checkpoints into the sizing state, once per process; a
    /// checkpoint that cannot be used is logged and skipped, a failed list retried
    /// next pass.
    pub async fn load(&self) {
        let (policy, namespace) = (self.policy.as_str(), self.namespace.as_str());
        if !self.enabled || !self.state.needs_load(&self.key) {
            return;
        }
        let params = ListParams::default().labels(&format!("{POLICY_LABEL}={}", checkpoint::policy_label(policy)));
        let list = match self.api().list(&params).await {
            Ok(l) => l,
            Err(e) => {
                warn!(policy, namespace, error = %e, "sizing checkpoints not read; retried next pass");
                return;
            }
        };
        let mut read = Vec::new();
        for cm in list.items {
            let name = cm.metadata.name.clone().unwrap_or_default();
            match checkpoint::decode(policy, &cm.data.unwrap_or_default(), self.state.window) {
                Ok(pair) => read.push(pair),
                Err(why) => warn!(policy, namespace, checkpoint = %name, "sizing checkpoint not used: {why}"),
            }
        }
        debug!(policy, namespace, histories = read.len(), "sizing checkpoints read");
        self.state.load(&self.key, read, Timestamp::now());
    }

    /// Writes the checkpoints that are due.
    pub async fn save(&self) {
        let (policy, namespace) = (self.policy.as_str(), self.namespace.as_str());
        if !self.enabled {
            return;
        }
        let window = self.state.window;
        for (w, h) in self
            .state
            .due(&self.key, Timestamp::now(), every(window), MOST_PER_PASS)
        {
            let name = checkpoint::name(policy, &w);
            let body = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "labels": {
                        POLICY_LABEL: checkpoint::policy_label(policy),
                        "app.kubernetes.io/managed-by": "poolwarden",
                    },
                },
                "data": checkpoint::encode(policy, &w, &h, window),
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            if let Err(e) = self.api().patch(&name, &params, &Patch::Apply(&body)).await {
                // Counted as written: it is tried again when next due, not every pass.
                warn!(policy, namespace, workload = %w, error = %e, "sizing checkpoint not written");
            }
        }
    }
}

/// How often a workload's checkpoint is written: every ten windows.
pub fn every(window: Duration) -> Duration {
    window.saturating_mul(EVERY_WINDOWS)
}
