//! The sizing histories every pass of a target shares (one per policy), kept in
//! memory between passes and fed by [`crate::decide::sizing::observe`].

use std::{collections::HashMap, sync::Mutex, time::Duration};

use jiff::Timestamp;

use crate::{
    decide::{
        Workload, WorkloadRef,
        sizing::{self, Histories, History, WorkloadSizing},
    },
    policy::ResolvedPolicy,
};

/// Every policy's sizing histories.
pub struct SizingState {
    histories: Mutex<HashMap<String, Histories>>,
    /// Per policy: whether its checkpoints were read since this process started,
    /// and when each workload's was last written.
    checkpoints: Mutex<HashMap<String, HashMap<WorkloadRef, Timestamp>>>,
    /// The peak window ([`sizing::WINDOW`] but in tests).
    pub window: Duration,
}

impl SizingState {
    pub fn new(window: Duration) -> Self {
        SizingState {
            histories: Mutex::new(HashMap::new()),
            checkpoints: Mutex::new(HashMap::new()),
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

    /// Whether policy `key`'s checkpoints are still to be read (once per process).
    pub fn needs_load(&self, key: &str) -> bool {
        !self
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// Takes policy `key`'s checkpoints, read at `now`: a workload's history is
    /// replaced only while it has none of its own (a pass may have begun one).
    pub fn load(&self, key: &str, read: Vec<(WorkloadRef, History)>, now: Timestamp) {
        let mut saved = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let saved = saved.entry(key.to_owned()).or_default();
        let mut all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        let histories = all.entry(key.to_owned()).or_default();
        for (w, h) in read {
            saved.insert(w.clone(), now);
            histories.entry(w).or_insert(h);
        }
    }

    /// The histories of policy `key` whose checkpoint is older than `every` (or was
    /// never written), at most `most` of them, the longest unsaved first; each is
    /// counted as written at `now`.
    pub fn due(
        &self,
        key: &str,
        now: Timestamp,
        every: std::time::Duration,
        most: usize,
    ) -> Vec<(WorkloadRef, History)> {
        let mut saved = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let saved = saved.entry(key.to_owned()).or_default();
        let all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        let Some(histories) = all.get(key) else {
            return Vec::new();
        };
        let mut due: Vec<(Option<Timestamp>, &WorkloadRef, &History)> = histories
            .iter()
            .filter(|(_, h)| h.samples > 0)
            .map(|(w, h)| (saved.get(w).copied(), w, h))
            .filter(|(at, ..)| at.is_none_or(|at| crate::timing::after(at, every) <= now))
            .collect();
        // By workload too: the map's order is not stable, and which histories a
        // capped round writes should be.
        due.sort_by_key(|(at, w, _)| (*at, *w));
        due.truncate(most);
        due.into_iter()
            .map(|(_, w, h)| {
                saved.insert(w.clone(), now);
                (w.clone(), h.clone())
            })
            .collect()
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
