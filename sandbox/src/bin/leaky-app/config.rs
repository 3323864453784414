//! The leaky app's settings, from the environment the pod template sets.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub application_name: String,
    pub pool_min: u32,
    pub pool_max: u32,
    pub max_idle: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub listen_ip: String,
    pub port: u16,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")),
    }
}

/// Seconds; 0 means "no limit".
fn seconds(name: &str, default: u64) -> Result<Option<Duration>, String> {
    Ok(Some(number(name, default)?).filter(|s| *s > 0).map(Duration::from_secs))
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let pool_max = number("DB_POOL_MAX", 10u32)?.max(1);
        Ok(Config {
            database_url: var("DATABASE_URL").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            application_name: var("PGAPPNAME").unwrap_or_else(|| "leaky-app".into()),
            pool_min: number("DB_POOL_MIN", 0u32)?.min(pool_max),
            pool_max,
            max_idle: seconds("DB_POOL_MAX_IDLE", 600)?,
            max_lifetime: seconds("DB_POOL_MAX_LIFETIME", 1800)?,
            // POD_IP on the sandbox kubelet; FLY_PRIVATE_IP on a (fake) Fly machine.
            listen_ip: var("POD_IP")
                .or_else(|| var("FLY_PRIVATE_IP"))
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: number("PORT", 8080u16)?,
        })
    }
}
