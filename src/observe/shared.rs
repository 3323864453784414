//! One sampler per distinct database, shared by every policy that points at it, so
//! the database sees one monitoring connection and one query per interval however
//! many policies and workloads read it.
//!
//! "Distinct" is the [`DatabaseIdentity`] (hosts, ports, database, user, TLS
//! settings) together with the credentials, never the text of the connection string:
//! four spellings of one URL are one sampler. The credentials are part of the key on
//! purpose. A policy whose Secret holds a wrong or stale password must see its own
//! authentication error, not samples taken with another namespace's password; so two
//! credential sets for one identity are two samplers. Their metric label and messages
//! then tell them apart by the order they were first seen (`user@host:port/db
//! (credentials 2)`), which says nothing about the password itself (a hash would
//! let anyone who reads `/metrics` test guesses against it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    conninfo::{ConnInfo, Credentials, DatabaseIdentity},
    postgres::{SampleError, Sampler, Snapshot},
};

/// A sample as the shared cache hands it out.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// How the database is named in metrics and messages: its identity, with the
    /// credential set's number when the identity is sampled with several.
    pub database: String,
    pub result: Result<Arc<Snapshot>, SampleError>,
    /// How long the query took when this call made one; `None` when it was served
    /// from the cache.
    pub took: Option<Duration>,
    /// The last sample that succeeded, when this one did not: the server's figures
    /// as last seen (a full database is reported with them).
    pub last_seen: Option<Arc<Snapshot>>,
    /// Why the sampler's role would be shut out of a full database
    /// ([`super::slots::ReservedSlots::warning`]), when this sample found it new or
    /// changed: said once per change, not once per sample.
    pub new_warning: Option<String>,
}

struct Entry {
    sampler: Result<Sampler, SampleError>,
    label: String,
    last: Option<(Instant, Result<Arc<Snapshot>, SampleError>)>,
    /// The newest sample that succeeded.
    last_ok: Option<Arc<Snapshot>>,
    /// The reserved-slots warning of the newest sample that succeeded.
    warning: Option<String>,
    used: Instant,
}

impl Entry {
    /// What a failed sample hands out beside its error.
    fn last_seen(&self, result: &Result<Arc<Snapshot>, SampleError>) -> Option<Arc<Snapshot>> {
        result.is_err().then(|| self.last_ok.clone()).flatten()
    }
}

type Key = (DatabaseIdentity, Credentials);

/// Samplers keyed by database identity and credentials.
#[derive(Default)]
pub struct SharedSamplers {
    entries: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Entry>>>>,
    /// The ordinal each live entry holds, per identity; kept beside the entries so
    /// that a new one can be numbered without locking every entry.
    ordinals: Mutex<HashMap<Key, usize>>,
}

impl SharedSamplers {
    /// A sample of the database at `url` no older than `max_age`: the cached one, or a
    /// new one. Concurrent callers for the same database wait for one query.
    pub async fn sample(&self, url: &str, max_age: Duration) -> Sampled {
        let info = match ConnInfo::parse(url) {
            Ok(info) => info,
            // Nothing to share, and no identity to name: the error says what is wrong.
            Err(e) => {
                return Sampled {
                    database: "invalid connection string".to_owned(),
                    result: Err(e.into()),
                    took: Some(Duration::ZERO),
                    last_seen: None,
                    new_warning: None,
                };
            }
        };
        let entry = self.entry(info);
        let mut entry = entry.lock().await;
        entry.used = Instant::now();
        if let Some((at, result)) = &entry.last
            && at.elapsed() < max_age
        {
            return Sampled {
                database: entry.label.clone(),
                result: result.clone(),
                took: None,
                last_seen: entry.last_seen(result),
                new_warning: None,
            };
        }
        let started = Instant::now();
        let result = match &mut entry.sampler {
            Ok(sampler) => sampler.sample().await.map(Arc::new),
            Err(e) => Err(e.clone()),
        };
        let took = started.elapsed();
        let mut new_warning = None;
        if let Ok(snapshot) = &result {
            let warning = snapshot.slots.warning();
            if warning != entry.warning {
                new_warning.clone_from(&warning);
                entry.warning = warning;
            }
            entry.last_ok = Some(snapshot.clone());
        }
        entry.last = Some((Instant::now(), result.clone()));
        Sampled {
            database: entry.label.clone(),
            last_seen: entry.last_seen(&result),
            result,
            took: Some(took),
            new_warning,
        }
    }

    /// The entry of the database and credentials `info` names, made on first use.
    fn entry(&self, info: ConnInfo) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut ordinals = self.ordinals.lock().unwrap_or_else(|e| e.into_inner());
        let key: Key = (info.identity.clone(), info.credentials.clone());
        if let Some(entry) = entries.get(&key) {
            return entry.clone();
        }
        // The same database under other credentials is another entry, told apart by
        // the lowest ordinal no live entry of that database holds.
        let ordinal = (1..)
            .find(|n| !ordinals.iter().any(|((id, _), o)| *id == key.0 && o == n))
            .unwrap_or(1);
        let label = match ordinal {
            1 => info.identity.to_string(),
            n => format!("{} (credentials {n})", info.identity),
        };
        let sampler = Sampler::for_database(info).map(|mut s| {
            s.set_target(label.clone());
            s
        });
        let entry = Arc::new(tokio::sync::Mutex::new(Entry {
            sampler,
            label,
            last: None,
            last_ok: None,
            warning: None,
            used: Instant::now(),
        }));
        ordinals.insert(key.clone(), ordinal);
        entries.insert(key, entry.clone());
        entry
    }

    /// Closes the connections of databases no policy has asked for within `idle`.
    pub fn forget_unused(&self, idle: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut ordinals = self.ordinals.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.try_lock().map(|e| e.used.elapsed() < idle).unwrap_or(true));
        ordinals.retain(|key, _| entries.contains_key(key));
    }

    /// How many databases are being sampled.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Port 1 on loopback refuses at once: the samples fail fast, without a database.
    #[tokio::test]
    async fn spellings_share_a_sampler_and_credentials_do_not() {
        let shared = SharedSamplers::default();
        for url in [
            "postgres://mon:pw@127.0.0.1:1/app?sslmode=disable",
            "postgresql://127.0.0.1:1/app?user=mon&password=pw&sslmode=disable",
            "host=127.0.0.1 port=1 dbname=app user=mon password=pw sslmode=disable connect_timeout=2",
            "postgres://mon:%70w@127.0.0.1:1/%61pp?sslmode=disable",
        ] {
            let s = shared.sample(url, Duration::from_secs(60)).await;
            assert_eq!(s.database, "mon@127.0.0.1:1/app?sslmode=disable");
        }
        assert_eq!(shared.len(), 1);

        let other = shared
            .sample(
                "postgres://mon:other@127.0.0.1:1/app?sslmode=disable",
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(other.database, "mon@127.0.0.1:1/app?sslmode=disable (credentials 2)");
        let tls = shared
            .sample("postgres://mon:pw@127.0.0.1:1/app", Duration::from_secs(60))
            .await;
        assert_eq!(tls.database, "mon@127.0.0.1:1/app");
        assert_eq!(shared.len(), 3);
        assert!(
            other
                .result
                .unwrap_err()
                .to_string()
                .starts_with("mon@127.0.0.1:1/app?sslmode=disable (credentials 2): ")
        );
    }
}
