//! The sizing histories every pass of a target shares (one per policy), kept in
//! memory between passes and fed by [`crate::decide::sizing::observe`].

use std::{collections::HashMap, sync::Mutex, time::Duration};

use jiff::Timestamp;

use crate::{
    decide::{
        Workload, WorkloadRef,
        sizing::{self, Histories, WorkloadSizing},
    },
    policy::ResolvedPolicy,
};

/// Every policy's sizing histories.
pub struct SizingState {
    histories: Mutex<HashMap<String, Histories>>,
    /// The peak window ([`sizing::WINDOW`] but in tests).
    pub window: Duration,
}

impl SizingState {
    pub fn new(window: Duration) -> Self {
        SizingState {
            histories: Mutex::new(HashMap::new()),
            window,
        }
    }

    /// Feeds a pass's workloads into policy `key`'s histories; their sizing.
    pub fn observe(
        &self,
        key: &str,
        policy: &ResolvedPolicy,
        workloads: &[Workload],
        now: Timestamp,
    ) -> Vec<WorkloadSizing> {
        let mut all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        let histories = all.entry(key.to_owned()).or_default();
        let out = sizing::observe(histories, policy, workloads, now, self.window);
        if histories.is_empty() {
            all.remove(key);
        }
        out
    }

    /// Records that Auto wrote new sizes to these workloads of policy `key` at `now`.
    pub fn wrote(&self, key: &str, workloads: &[WorkloadRef], now: Timestamp) {
        if workloads.is_empty() {
            return;
        }
        let mut all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(histories) = all.get_mut(key) {
            for w in workloads {
                if let Some(h) = histories.get_mut(w) {
                    h.last_write = Some(now);
                }
            }
        }
    }

    /// Bytes the histories hold on the heap (for the benchmark).
    pub fn heap_bytes(&self) -> usize {
        let all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        all.values()
            .flat_map(|h| h.values())
            .map(|h| h.heap_bytes() + std::mem::size_of_val(h))
            .sum()
    }
}
