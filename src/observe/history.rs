//! The recent samples of each pod of one policy, for the `sustainedFor` window.
//! Kept in memory: after a controller restart the window starts again, which can
//! only delay a restart, never cause one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use jiff::Timestamp;

use crate::observation::PodSample;

#[derive(Debug, Default)]
pub struct History {
    pods: BTreeMap<String, VecDeque<PodSample>>,
}

impl History {
    /// Adds a sample; one taken at the same instant as the newest replaces it (the
    /// database snapshot is shared, so two passes can see the same one).
    pub fn record(&mut self, pod: &str, sample: PodSample) {
        // Most pods keep one sample (see `compact`): a deque grown from empty would
        // hold room for four, which at 30,000 pods was 11 MB of the controller's heap.
        let samples = self
            .pods
            .entry(pod.to_owned())
            .or_insert_with(|| VecDeque::with_capacity(1));
        match samples.back_mut() {
            Some(last) if last.at == sample.at => *last = sample,
            Some(last) if last.at > sample.at => {}
            Some(last) => {
                // Only the newest sample's evidence is read: older ones drop theirs,
                // so a long run above the limit holds one sample's groups, not many.
                if let crate::observation::Measured::Known(c) = &mut last.database {
                    c.evidence = Vec::new();
                }
                // Grown by one, not doubled: a pod within its limit holds two samples
                // between `compact`s (this pass's and the last), and a deque that
                // doubled held four (at 30,000 pods, heaptrack put 18.3 MB of the heap's peak here). A longer run grows as usual.
                if samples.len() < 2 {
                    samples.reserve_exact(1);
                }
                samples.push_back(sample);
            }
            None => samples.push_back(sample),
        }
    }

    pub fn samples(&self, pod: &str) -> Vec<PodSample> {
        self.pods
            .get(pod)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets pods that are gone and samples taken before `oldest`, keeping the
    /// newest sample before it (a run that started then is still a run).
    pub fn prune(&mut self, live: &BTreeSet<&str>, oldest: Timestamp) {
        self.pods.retain(|pod, _| live.contains(pod.as_str()));
        for samples in self.pods.values_mut() {
            while samples.len() > 1 && samples[1].at <= oldest {
                samples.pop_front();
            }
        }
    }

    /// [`prune`](Self::prune) for a history [`compact`](Self::compact)ed every pass:
    /// the first two samples are kept (the one that ended the previous run, and the
    /// start of the trailing run) and only older samples inside the run are dropped.
    /// So a pod above its limit for hours keeps its `since` — a status row that moved
    /// it forward every pass was a status write every pass — in a bounded history.
    pub fn prune_keeping_run_start(&mut self, live: &BTreeSet<&str>, oldest: Timestamp) {
        self.pods.retain(|pod, _| live.contains(pod.as_str()));
        for samples in self.pods.values_mut() {
            while samples.len() > 3 && samples[3].at <= oldest {
                samples.remove(2);
            }
        }
    }

    /// Keeps, per pod, only the samples a verdict can read: the trailing run of samples
    /// for which `exceeds` holds and the one sample before it (which ends the run). A
    /// pod within its limit keeps one sample instead of a whole window's worth.
    pub fn compact(&mut self, exceeds: impl Fn(&PodSample) -> bool) {
        for samples in self.pods.values_mut() {
            if let Some(last_within) = samples.iter().rposition(|s| !exceeds(s)) {
                samples.drain(..last_within);
                if samples.capacity() > 2 * samples.len() + 4 {
                    samples.shrink_to_fit();
                }
            }
        }
    }

    /// Samples held, all pods together.
    pub fn sample_count(&self) -> usize {
        self.pods.values().map(VecDeque::len).sum()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Measured;

    fn sample(secs: i64) -> PodSample {
        PodSample {
            at: Timestamp::from_second(1_800_000_000 + secs).unwrap(),
            database: Measured::Unknown(format!("{secs}")),
            pool: None,
        }
    }

    #[test]
    fn same_instant_replaces_older_is_ignored_and_prune_keeps_the_run_start() {
        let mut h = History::default();
        h.record("a", sample(0));
        h.record("a", sample(10));
        h.record("a", sample(10));
        h.record("a", sample(5));
        h.record("a", sample(20));
        assert_eq!(h.samples("a").len(), 3);
        h.record("b", sample(0));
        h.prune(&BTreeSet::from(["a"]), Timestamp::from_second(1_800_000_012).unwrap());
        assert_eq!(h.pod_count(), 1);
        let kept: Vec<i64> = h
            .samples("a")
            .iter()
            .map(|s| s.at.as_second() - 1_800_000_000)
            .collect();
        assert_eq!(kept, vec![10, 20]);
    }

    fn seconds(h: &History, pod: &str) -> Vec<i64> {
        h.samples(pod)
            .iter()
            .map(|s| s.at.as_second() - 1_800_000_000)
            .collect()
    }

    #[test]
    fn pruning_a_compacted_history_keeps_the_start_of_the_run() {
        let mut h = History::default();
        for secs in 0..30 {
            h.record("a", sample(secs));
            h.prune_keeping_run_start(
                &BTreeSet::from(["a"]),
                Timestamp::from_second(1_800_000_000 + secs - 6).unwrap(),
            );
            h.compact(|s| matches!(&s.database, Measured::Unknown(w) if w.parse::<i64>().unwrap() >= 3));
        }
        let kept = seconds(&h, "a");
        assert_eq!(
            &kept[..2],
            &[2, 3],
            "the sample that ended the run before, and the run's start"
        );
        assert!(kept.len() <= 10, "bounded: {kept:?}");
        assert_eq!(kept.last(), Some(&29));
    }

    #[test]
    fn compact_keeps_the_trailing_run_and_the_sample_that_ends_it() {
        let mut h = History::default();
        for secs in 0..6 {
            h.record("a", sample(secs));
            h.record("b", sample(secs));
        }
        // "Above the limit" here: the sample's unknown reason is 3 or later.
        h.compact(|s| matches!(&s.database, Measured::Unknown(w) if w.parse::<i64>().unwrap() >= 3));

        assert_eq!(seconds(&h, "a"), vec![2, 3, 4, 5]);
        h.compact(|_| false);
        assert_eq!(
            seconds(&h, "a"),
            vec![5],
            "a pod within its limit keeps its newest sample"
        );
        assert_eq!(h.sample_count(), 2);
    }

    #[test]
    fn a_pod_within_its_limit_holds_room_for_two_samples_pass_after_pass() {
        let mut h = History::default();
        for secs in 0..10 {
            h.record("a", sample(secs));
            h.compact(|_| false);
        }
        // One kept, room for the next pass's: a deque grown by doubling held four.
        assert_eq!(h.pods["a"].capacity(), 2);
    }
}
