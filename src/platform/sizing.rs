//! The sizing histories every pass of a target shares (one per policy), kept in
//! memory between passes and fed by [`crate::decide::sizing::observe`].

use std::{collections::HashMap, sync::Mutex, time::Duration};

use jiff::Timestamp;

use crate::{
    decide::{
        Workload, WorkloadRef,
        sizing::{self, Histories, WorkloadSizing},
    },
    policy::{HumanDuration, ResolvedPolicy},
};

/// The variable that shortens the peak window, for tests only: with `1s`, a "day"
/// of history (the half-life and the unit of confidence) is 1,440 seconds.
pub const WINDOW_ENV: &str = "POOLWARDEN_SIZING_WINDOW";

/// Every policy's sizing histories.
pub struct SizingState {
    histories: Mutex<HashMap<String, Histories>>,
    /// The peak window ([`sizing::WINDOW`] unless [`WINDOW_ENV`] says otherwise).
    pub window: Duration,
}

impl Default for SizingState {
    fn default() -> Self {
        SizingState::new(window_from_env())
    }
}

/// [`WINDOW_ENV`]'s duration, or a minute when it is unset or unreadable (which is
/// logged: a typo must not silently change what a test measures).
fn window_from_env() -> Duration {
    let Ok(text) = std::env::var(WINDOW_ENV) else {
        return sizing::WINDOW;
    };
    match HumanDuration::new(text.clone()).parse() {
        Ok(d) if d >= Duration::from_millis(100) => d,
        _ => {
            tracing::warn!(value = %text, "{WINDOW_ENV} is not a duration of at least 100ms: using 1m");
            sizing::WINDOW
        }
    }
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
