//! One sampler per distinct database, shared by every policy that points at it, so
//! the database sees one monitoring connection and one query per interval however
//! many policies and workloads read it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::postgres::{SampleError, Sampler, Snapshot};

/// A sample as the shared cache hands it out.
#[derive(Clone, Debug)]
pub struct Sampled {
    pub result: Result<Arc<Snapshot>, SampleError>,
    /// How long the query took when this call made one; `None` when it was served
    /// from the cache.
    pub took: Option<Duration>,
}

struct Entry {
    sampler: Result<Sampler, SampleError>,
    last: Option<(Instant, Result<Arc<Snapshot>, SampleError>)>,
    used: Instant,
}

/// Samplers keyed by connection string.
#[derive(Default)]
pub struct SharedSamplers {
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

impl SharedSamplers {
    /// A sample of the database at `url` no older than `max_age`: the cached one, or a
    /// new one. Concurrent callers for the same database wait for one query.
    pub async fn sample(&self, url: &str, max_age: Duration) -> Sampled {
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .entry(url.to_owned())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Entry {
                        sampler: Sampler::new(url),
                        last: None,
                        used: Instant::now(),
                    }))
                })
                .clone()
        };
        let mut entry = entry.lock().await;
        entry.used = Instant::now();
        if let Some((at, result)) = &entry.last
            && at.elapsed() < max_age
        {
            return Sampled {
                result: result.clone(),
                took: None,
            };
        }
        let started = Instant::now();
        let result = match &mut entry.sampler {
            Ok(sampler) => sampler.sample().await.map(Arc::new),
            Err(e) => Err(e.clone()),
        };
        let took = started.elapsed();
        entry.last = Some((Instant::now(), result.clone()));
        Sampled {
            result,
            took: Some(took),
        }
    }

    /// Closes the connections of databases no policy has asked for within `idle`.
    pub fn forget_unused(&self, idle: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.try_lock().map(|e| e.used.elapsed() < idle).unwrap_or(true));
    }

    /// How many databases are being sampled.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
