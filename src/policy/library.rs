//! The pool libraries a policy can configure (`spec.pool.library`), each as plain
//! data: the environment variables its app reads and the unit each takes, which
//! settings it has at all, the grace that covers how it recycles connections, the
//! variable its driver reports as `application_name`, and the values it silently
//! replaces. The decision core reads these facts; it never branches on a library.
//!
//! Where each fact comes from (file, function and version of the library's source)
//! is in docs/decisions.md; what an app does with the variables is docs/libraries.md.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PoolSettings;

/// The connection-pool library the selected containers use.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PoolLibrary {
    /// No library in particular: DB_POOL_MIN, DB_POOL_MAX, DB_POOL_MAX_IDLE and
    /// DB_POOL_MAX_LIFETIME in seconds, and every backend older than the lifetime
    /// plus grace counts as an overrun (the pool is assumed to close connections at
    /// their lifetime, busy or idle).
    #[default]
    Generic,
    /// psycopg_pool (Python, psycopg 3): min_size, max_size, max_idle and
    /// max_lifetime in seconds. It checks the lifetime when a connection is returned.
    PsycopgPool,
    /// SQLAlchemy's QueuePool: pool_size (= minSize, kept open), max_overflow
    /// (= maxSize - minSize) and pool_recycle in seconds; it has no idle timeout. It
    /// checks the lifetime when a connection is checked out.
    SQLAlchemy,
    /// HikariCP used directly (Java): minimumIdle, maximumPoolSize, idleTimeout and
    /// maxLifetime in milliseconds. The app passes PGAPPNAME to pgjdbc as its
    /// ApplicationName property.
    HikariCP,
    /// HikariCP configured by Spring Boot from its own environment variables
    /// (SPRING_DATASOURCE_HIKARI_*), milliseconds; the pod name reaches pgjdbc's
    /// ApplicationName through Spring's binding.
    SpringBoot,
    /// pgx v5's pgxpool (Go): MinConns, MaxConns, MaxConnIdleTime, MaxConnLifetime,
    /// MaxConnLifetimeJitter and HealthCheckPeriod as Go durations ("30s"). It
    /// retires expired idle connections on its health check.
    Pgx,
    /// node-postgres' pg.Pool: min, max, idleTimeoutMillis (milliseconds) and
    /// maxLifetimeSeconds (seconds).
    NodePostgres,
}

/// The unit a setting's value is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A count of connections, as given.
    Count,
    /// maxSize − minSize: SQLAlchemy's max_overflow, the connections allowed above
    /// pool_size.
    OverflowAboveMinSize,
    /// Whole seconds, as given.
    Seconds,
    /// Milliseconds (the policy's seconds × 1000).
    Millis,
    /// A Go duration (`time.ParseDuration`): seconds with an `s` ("30s"); a bare
    /// number does not parse.
    GoDuration,
}

/// One setting a library reads: the default variable name and the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvSetting {
    pub name: &'static str,
    pub format: Format,
}

use Format::{Count, GoDuration, Millis, OverflowAboveMinSize, Seconds};

const fn env(name: &'static str, format: Format) -> Option<EnvSetting> {
    Some(EnvSetting { name, format })
}

/// When a library closes a connection that has outlived its lifetime; this decides
/// which old backends a healthy pool keeps (docs/decisions.md, "Lifetime overruns of
/// real pools").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recycling {
    /// At the lifetime, idle or not (an in-use one when it comes back), give or take
    /// [`LibraryFacts::lifetime_delay`]: a backend older than lifetime + grace is held
    /// by something the pool does not manage.
    AtLifetime,
    /// Only when it is checked out: an expired connection is never handed out, but
    /// it rests in the pool, unused, until the next checkout.
    AtCheckout,
    /// Only when it is returned: an expired connection may be handed out, and is
    /// closed when it comes back; it rests in the pool, unused, until then.
    OnReturn,
}

/// How a library closes idle connections beyond its minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleClosing {
    /// Every one idle for longer than its idle timeout (or, for SQLAlchemy, every
    /// one beyond pool_size as soon as it is returned), give or take
    /// [`LibraryFacts::idle_delay`].
    AllPastTimeout,
    /// One per idle timeout, the longest idle first, and only after a whole period in
    /// which the pool always had an idle connection (psycopg_pool's ShrinkPool).
    OnePerTimeout,
}

/// What a library keeps open when the policy sets no minSize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultMinSize {
    Count(u32),
    /// HikariCP's minimumIdle defaults to maximumPoolSize.
    MaxSize,
}

/// Values a library replaces by its own without failing (a warning in its log at
/// most): below these it ignores the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minimums {
    pub max_lifetime_seconds: u32,
    pub max_idle_seconds: u32,
}

/// Everything poolwarden knows about one library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LibraryFacts {
    pub min_size: Option<EnvSetting>,
    pub max_size: EnvSetting,
    /// `None`: the library has no idle timeout.
    pub max_idle: Option<EnvSetting>,
    pub max_lifetime: EnvSetting,
    /// `None`: the library has no such setting.
    pub max_lifetime_jitter: Option<EnvSetting>,
    pub health_check_period: Option<EnvSetting>,
    /// For a driver that ignores PGAPPNAME, the variable (and its value) through
    /// which the pod name in PGAPPNAME reaches the driver's application name; the
    /// value refers to PGAPPNAME as `$(PGAPPNAME)`, which Kubernetes expands from the
    /// entry before it.
    pub application_name_binding: Option<EnvBinding>,
    pub recycling: Recycling,
    pub idle_closing: IdleClosing,
    /// The library's own health-check period when the policy sets none: it delays
    /// both recycling and idle closing, so it widens the default grace.
    pub default_health_check_period: Option<Duration>,
    /// A periodic task that closes idle connections, when the library has one apart
    /// from its health check (HikariCP's housekeeper, every 30 s).
    pub idle_housekeeping: Option<Duration>,
    pub default_min_size: DefaultMinSize,
    /// The library's idle timeout when the policy sets none (`None`: it has none).
    pub default_max_idle: Option<Duration>,
    pub minimums: Option<Minimums>,
    /// Whether minSize 0 means something other than "keep none open" (SQLAlchemy's
    /// QueuePool reads pool_size 0 as "no limit").
    pub min_size_zero_unbounded: bool,
}

/// libpq reads it as `application_name`; so do the drivers that follow libpq's
/// environment (psycopg, pgx, node-postgres).
pub const PGAPPNAME: &str = "PGAPPNAME";

/// A variable poolwarden writes verbatim for a library's attribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvBinding {
    pub name: &'static str,
    pub value: &'static str,
}

/// Spring Boot reads SPRING_APPLICATION_JSON as properties and binds this one into
/// HikariCP's data-source property `ApplicationName`, which pgjdbc sends as
/// `application_name` (pgjdbc ignores PGAPPNAME). The key's case matters: pgjdbc
/// reads "ApplicationName", and Spring lower-cases map keys it binds from plain
/// variables (SPRING_DATASOURCE_HIKARI_DATASOURCEPROPERTIES_APPLICATIONNAME reaches
/// pgjdbc as "applicationname" and is ignored) — measured with Spring Boot 4.0.7,
/// HikariCP 7.0.2 and pgjdbc 42.7.11 (docs/decisions.md).
pub const SPRING_APPLICATION_NAME: EnvBinding = EnvBinding {
    name: "SPRING_APPLICATION_JSON",
    value: r#"{"spring.datasource.hikari.data-source-properties.ApplicationName":"$(PGAPPNAME)"}"#,
};

/// The grace every library gets for sampling, a checkout in progress and clock
/// resolution; a library whose recycling waits for a health check adds its period
/// and jitter.
pub const BASE_GRACE: Duration = Duration::from_secs(60);

const HIKARI_MINIMUMS: Minimums = Minimums {
    // HikariConfig.validateNumerics: maxLifetime below 30 s and idleTimeout below 10 s
    // are replaced by their defaults, with a warning.
    max_lifetime_seconds: 30,
    max_idle_seconds: 10,
};

impl PoolLibrary {
    /// Every library, for tests and docs.
    pub const ALL: [PoolLibrary; 7] = [
        PoolLibrary::Generic,
        PoolLibrary::PsycopgPool,
        PoolLibrary::SQLAlchemy,
        PoolLibrary::HikariCP,
        PoolLibrary::SpringBoot,
        PoolLibrary::Pgx,
        PoolLibrary::NodePostgres,
    ];

    /// The library's facts.
    pub const fn facts(self) -> LibraryFacts {
        match self {
            PoolLibrary::Generic => GENERIC,
            PoolLibrary::PsycopgPool => PSYCOPG_POOL,
            PoolLibrary::SQLAlchemy => SQLALCHEMY,
            PoolLibrary::HikariCP => HIKARI,
            PoolLibrary::SpringBoot => SPRING_BOOT,
            PoolLibrary::Pgx => PGX,
            PoolLibrary::NodePostgres => NODE_POSTGRES,
        }
    }
}

const GENERIC: LibraryFacts = LibraryFacts {
    min_size: env("DB_POOL_MIN", Count),
    max_size: EnvSetting {
        name: "DB_POOL_MAX",
        format: Count,
    },
    max_idle: env("DB_POOL_MAX_IDLE", Seconds),
    max_lifetime: EnvSetting {
        name: "DB_POOL_MAX_LIFETIME",
        format: Seconds,
    },
    max_lifetime_jitter: None,
    health_check_period: None,
    application_name_binding: None,
    recycling: Recycling::AtLifetime,
    idle_closing: IdleClosing::AllPastTimeout,
    default_health_check_period: None,
    idle_housekeeping: None,
    default_min_size: DefaultMinSize::Count(0),
    default_max_idle: None,
    minimums: None,
    min_size_zero_unbounded: false,
};

const HIKARI: LibraryFacts = LibraryFacts {
    min_size: env("DB_POOL_MIN_IDLE", Count),
    max_size: EnvSetting {
        name: "DB_POOL_MAX_SIZE",
        format: Count,
    },
    max_idle: env("DB_POOL_IDLE_TIMEOUT_MS", Millis),
    max_lifetime: EnvSetting {
        name: "DB_POOL_MAX_LIFETIME_MS",
        format: Millis,
    },
    minimums: Some(HIKARI_MINIMUMS),
    // HikariPool.housekeepingPeriodMs; HikariConfig's minIdle and idleTimeout.
    idle_housekeeping: Some(Duration::from_secs(30)),
    default_min_size: DefaultMinSize::MaxSize,
    default_max_idle: Some(Duration::from_secs(600)),
    ..GENERIC
};

const PSYCOPG_POOL: LibraryFacts = LibraryFacts {
    min_size: env("DB_POOL_MIN_SIZE", Count),
    max_size: EnvSetting {
        name: "DB_POOL_MAX_SIZE",
        format: Count,
    },
    recycling: Recycling::OnReturn,
    idle_closing: IdleClosing::OnePerTimeout,
    // ConnectionPool.__init__: min_size=4, max_idle=10 * 60.0.
    default_min_size: DefaultMinSize::Count(4),
    default_max_idle: Some(Duration::from_secs(600)),
    ..GENERIC
};

const SQLALCHEMY: LibraryFacts = LibraryFacts {
    min_size: env("DB_POOL_SIZE", Count),
    max_size: EnvSetting {
        name: "DB_POOL_MAX_OVERFLOW",
        format: OverflowAboveMinSize,
    },
    max_idle: None,
    max_lifetime: EnvSetting {
        name: "DB_POOL_RECYCLE",
        format: Seconds,
    },
    recycling: Recycling::AtCheckout,
    min_size_zero_unbounded: true,
    ..GENERIC
};

const SPRING_BOOT: LibraryFacts = LibraryFacts {
    min_size: env("SPRING_DATASOURCE_HIKARI_MINIMUMIDLE", Count),
    max_size: EnvSetting {
        name: "SPRING_DATASOURCE_HIKARI_MAXIMUMPOOLSIZE",
        format: Count,
    },
    max_idle: env("SPRING_DATASOURCE_HIKARI_IDLETIMEOUT", Millis),
    max_lifetime: EnvSetting {
        name: "SPRING_DATASOURCE_HIKARI_MAXLIFETIME",
        format: Millis,
    },
    application_name_binding: Some(SPRING_APPLICATION_NAME),
    ..HIKARI
};

const PGX: LibraryFacts = LibraryFacts {
    min_size: env("DB_POOL_MIN_CONNS", Count),
    max_size: EnvSetting {
        name: "DB_POOL_MAX_CONNS",
        format: Count,
    },
    max_idle: env("DB_POOL_MAX_CONN_IDLE_TIME", GoDuration),
    max_lifetime: EnvSetting {
        name: "DB_POOL_MAX_CONN_LIFETIME",
        format: GoDuration,
    },
    max_lifetime_jitter: env("DB_POOL_MAX_CONN_LIFETIME_JITTER", GoDuration),
    health_check_period: env("DB_POOL_HEALTH_CHECK_PERIOD", GoDuration),
    // pgxpool/pool.go: defaultHealthCheckPeriod, defaultMaxConnIdleTime,
    // defaultMinConns.
    default_health_check_period: Some(Duration::from_secs(60)),
    default_max_idle: Some(Duration::from_secs(30 * 60)),
    ..GENERIC
};

const NODE_POSTGRES: LibraryFacts = LibraryFacts {
    max_idle: env("DB_POOL_IDLE_TIMEOUT_MILLIS", Millis),
    max_lifetime: EnvSetting {
        name: "DB_POOL_MAX_LIFETIME_SECONDS",
        format: Seconds,
    },
    // pg-pool's constructor: idleTimeoutMillis 10000, min 0.
    default_max_idle: Some(Duration::from_secs(10)),
    ..GENERIC
};

impl Format {
    /// The variable's value for a setting of `value` (seconds or a count);
    /// `min_size` is the policy's minSize, which an overflow is counted above. `None`
    /// when it cannot be written (an overflow without a minSize, refused by
    /// validation).
    pub fn render(self, value: u32, min_size: Option<u32>) -> Option<String> {
        match self {
            Format::Count | Format::Seconds => Some(value.to_string()),
            Format::OverflowAboveMinSize => min_size.map(|min| value.saturating_sub(min).to_string()),
            Format::Millis => Some((u64::from(value) * 1000).to_string()),
            Format::GoDuration => Some(format!("{value}s")),
        }
    }
}

/// One pool setting as the app receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEnv {
    /// The setting's field under `spec.pool` (`maxLifetimeSeconds`).
    pub field: &'static str,
    /// The variable: `spec.pool.env`'s name, else the library's; `None` when the
    /// library has no such setting and the policy names no variable.
    pub name: Option<String>,
    /// The value in the library's unit; `None` when the policy leaves the setting
    /// unset (or it cannot be written, see [`Format::render`]).
    pub value: Option<String>,
}

/// Every pool setting of `pool`, named and written as its library reads it, in a
/// stable order. A setting the library lacks but the policy names a variable for is
/// written in the policy's own unit (seconds or a count).
pub fn pool_env(pool: &PoolSettings) -> Vec<PoolEnv> {
    settings(pool)
        .into_iter()
        .map(|r| {
            let format = r.library.map_or(r.own_unit, |l| l.format);
            PoolEnv {
                field: r.field,
                name: r.named.clone().or_else(|| r.library.map(|l| l.name.to_owned())),
                value: r.value.and_then(|v| format.render(v, pool.min_size)),
            }
        })
        .collect()
}

/// One pool setting: its field, the policy's name for it, the library's, its value,
/// and its unit when the library has no such setting.
struct Setting<'p> {
    field: &'static str,
    named: &'p Option<String>,
    library: Option<EnvSetting>,
    value: Option<u32>,
    own_unit: Format,
}

fn settings(pool: &PoolSettings) -> [Setting<'_>; 6] {
    let facts = pool.library.facts();
    let names = &pool.env;
    let row = |field, named, library, value, own_unit| Setting {
        field,
        named,
        library,
        value,
        own_unit,
    };
    [
        row("minSize", &names.min_size, facts.min_size, pool.min_size, Count),
        row(
            "maxSize",
            &names.max_size,
            Some(facts.max_size),
            Some(pool.max_size),
            Count,
        ),
        row(
            "maxIdleSeconds",
            &names.max_idle_seconds,
            facts.max_idle,
            pool.max_idle_seconds,
            Seconds,
        ),
        row(
            "maxLifetimeSeconds",
            &names.max_lifetime_seconds,
            Some(facts.max_lifetime),
            pool.max_lifetime_seconds,
            Seconds,
        ),
        row(
            "maxLifetimeJitterSeconds",
            &names.max_lifetime_jitter_seconds,
            facts.max_lifetime_jitter,
            pool.max_lifetime_jitter_seconds,
            Seconds,
        ),
        row(
            "healthCheckPeriodSeconds",
            &names.health_check_period_seconds,
            facts.health_check_period,
            pool.health_check_period_seconds,
            Seconds,
        ),
    ]
}

impl LibraryFacts {
    /// How long after its lifetime (and jitter) the library may still keep or hand
    /// out an expired connection: pgx's health-check period plus the jitter.
    pub fn lifetime_delay(&self, pool: &PoolSettings) -> Duration {
        match self.health_check_period(pool) {
            Some(period) => period.saturating_add(seconds(pool.max_lifetime_jitter_seconds.unwrap_or(0))),
            None => Duration::ZERO,
        }
    }

    /// How long after its idle timeout the library may still keep an idle
    /// connection: its health-check period or its housekeeping period.
    pub fn idle_delay(&self, pool: &PoolSettings) -> Duration {
        self.health_check_period(pool)
            .or(self.idle_housekeeping)
            .unwrap_or_default()
    }

    fn health_check_period(&self, pool: &PoolSettings) -> Option<Duration> {
        self.health_check_period?;
        pool.health_check_period_seconds
            .map(seconds)
            .or(self.default_health_check_period)
    }

    /// The connections each pool keeps open however idle: the policy's minSize, else
    /// the library's default.
    pub fn min_size(&self, pool: &PoolSettings) -> u32 {
        self.min_size_or_default(pool.min_size, pool.max_size)
    }

    /// `min_size`, else the library's default for a pool of `max_size`.
    pub fn min_size_or_default(&self, min_size: Option<u32>, max_size: u32) -> u32 {
        min_size.unwrap_or(match self.default_min_size {
            DefaultMinSize::Count(n) => n,
            DefaultMinSize::MaxSize => max_size,
        })
    }

    /// The idle timeout the pool runs with: the policy's, else the library's.
    pub fn max_idle(&self, pool: &PoolSettings) -> Option<Duration> {
        pool.max_idle_seconds.map(seconds).or(self.default_max_idle)
    }
}

fn seconds(s: u32) -> Duration {
    Duration::from_secs(s.into())
}

/// The grace when the policy gives none: [`BASE_GRACE`], plus the time a library
/// that recycles on a health check may keep an expired connection (its period and
/// the lifetime jitter).
pub fn default_grace(pool: &PoolSettings) -> Duration {
    BASE_GRACE.saturating_add(pool.library.facts().lifetime_delay(pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_writes_the_unit_its_library_parses() {
        assert_eq!(Format::Count.render(10, Some(2)).as_deref(), Some("10"));
        assert_eq!(Format::Seconds.render(30, None).as_deref(), Some("30"));
        assert_eq!(Format::Millis.render(30, None).as_deref(), Some("30000"));
        assert_eq!(Format::GoDuration.render(30, None).as_deref(), Some("30s"));
        assert_eq!(Format::OverflowAboveMinSize.render(10, Some(3)).as_deref(), Some("7"));
        assert_eq!(Format::OverflowAboveMinSize.render(10, None), None);
        assert_eq!(Format::Millis.render(u32::MAX, None).as_deref(), Some("4294967295000"));
    }

    fn pool(library: PoolLibrary) -> PoolSettings {
        serde_json::from_value(serde_json::json!({
            "library": library, "minSize": 2, "maxSize": 10, "maxIdleSeconds": 10,
            "maxLifetimeSeconds": 30, "maxLifetimeJitterSeconds": 20, "healthCheckPeriodSeconds": 5
        }))
        .unwrap()
    }

    fn written(pool: &PoolSettings) -> Vec<(String, String)> {
        pool_env(pool)
            .into_iter()
            .filter_map(|e| Some((e.name?, e.value?)))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sqlalchemy_spring_boot_and_pgx_get_their_own_names_and_units() {
        assert_eq!(
            written(&pool(PoolLibrary::SQLAlchemy)),
            pairs(&[
                ("DB_POOL_SIZE", "2"),
                ("DB_POOL_MAX_OVERFLOW", "8"),
                ("DB_POOL_RECYCLE", "30")
            ])
        );
        assert_eq!(
            written(&pool(PoolLibrary::SpringBoot)),
            pairs(&[
                ("SPRING_DATASOURCE_HIKARI_MINIMUMIDLE", "2"),
                ("SPRING_DATASOURCE_HIKARI_MAXIMUMPOOLSIZE", "10"),
                ("SPRING_DATASOURCE_HIKARI_IDLETIMEOUT", "10000"),
                ("SPRING_DATASOURCE_HIKARI_MAXLIFETIME", "30000"),
            ])
        );
        assert_eq!(
            written(&pool(PoolLibrary::Pgx)),
            pairs(&[
                ("DB_POOL_MIN_CONNS", "2"),
                ("DB_POOL_MAX_CONNS", "10"),
                ("DB_POOL_MAX_CONN_IDLE_TIME", "10s"),
                ("DB_POOL_MAX_CONN_LIFETIME", "30s"),
                ("DB_POOL_MAX_CONN_LIFETIME_JITTER", "20s"),
                ("DB_POOL_HEALTH_CHECK_PERIOD", "5s"),
            ])
        );
    }

    #[test]
    fn the_libpq_style_libraries_get_their_own_names_in_seconds_or_milliseconds() {
        assert_eq!(
            written(&pool(PoolLibrary::NodePostgres)),
            pairs(&[
                ("DB_POOL_MIN", "2"),
                ("DB_POOL_MAX", "10"),
                ("DB_POOL_IDLE_TIMEOUT_MILLIS", "10000"),
                ("DB_POOL_MAX_LIFETIME_SECONDS", "30"),
            ])
        );
        assert_eq!(
            written(&pool(PoolLibrary::HikariCP)),
            pairs(&[
                ("DB_POOL_MIN_IDLE", "2"),
                ("DB_POOL_MAX_SIZE", "10"),
                ("DB_POOL_IDLE_TIMEOUT_MS", "10000"),
                ("DB_POOL_MAX_LIFETIME_MS", "30000"),
            ])
        );
        assert_eq!(
            written(&pool(PoolLibrary::PsycopgPool)),
            pairs(&[
                ("DB_POOL_MIN_SIZE", "2"),
                ("DB_POOL_MAX_SIZE", "10"),
                ("DB_POOL_MAX_IDLE", "10"),
                ("DB_POOL_MAX_LIFETIME", "30"),
            ])
        );
        assert_eq!(
            written(&pool(PoolLibrary::Generic)),
            pairs(&[
                ("DB_POOL_MIN", "2"),
                ("DB_POOL_MAX", "10"),
                ("DB_POOL_MAX_IDLE", "10"),
                ("DB_POOL_MAX_LIFETIME", "30"),
            ])
        );
    }

    #[test]
    fn a_name_the_policy_gives_wins_and_a_setting_the_library_lacks_is_written_only_when_named() {
        let mut p = pool(PoolLibrary::SQLAlchemy);
        p.env.max_lifetime_seconds = Some("RECYCLE".to_owned());
        p.env.max_idle_seconds = Some("MY_IDLE".to_owned());
        assert_eq!(
            written(&p),
            pairs(&[
                ("DB_POOL_SIZE", "2"),
                ("DB_POOL_MAX_OVERFLOW", "8"),
                ("MY_IDLE", "10"),
                ("RECYCLE", "30")
            ])
        );
    }

    #[test]
    fn the_default_grace_covers_pgxs_health_check_and_jitter() {
        assert_eq!(default_grace(&pool(PoolLibrary::Pgx)), Duration::from_secs(60 + 5 + 20));
        let mut p = pool(PoolLibrary::Pgx);
        p.health_check_period_seconds = None;
        p.max_lifetime_jitter_seconds = None;
        assert_eq!(default_grace(&p), Duration::from_secs(120), "pgx's own 60 s period");
        for lib in PoolLibrary::ALL.into_iter().filter(|l| *l != PoolLibrary::Pgx) {
            assert_eq!(default_grace(&pool(lib)), BASE_GRACE, "{lib:?}");
        }
    }

    #[test]
    fn only_pgx_has_a_jitter_and_a_health_check_period() {
        for lib in PoolLibrary::ALL {
            let f = lib.facts();
            assert_eq!(f.max_lifetime_jitter.is_some(), lib == PoolLibrary::Pgx, "{lib:?}");
            assert_eq!(f.health_check_period.is_some(), lib == PoolLibrary::Pgx, "{lib:?}");
        }
    }

    #[test]
    fn sqlalchemy_has_no_idle_timeout_and_only_spring_boot_binds_the_application_name() {
        assert_eq!(PoolLibrary::SQLAlchemy.facts().max_idle, None);
        for lib in PoolLibrary::ALL {
            let binding = lib.facts().application_name_binding;
            assert_eq!(binding.is_some(), lib == PoolLibrary::SpringBoot, "{lib:?}");
        }
        let value: serde_json::Value = serde_json::from_str(SPRING_APPLICATION_NAME.value).unwrap();
        assert_eq!(
            value["spring.datasource.hikari.data-source-properties.ApplicationName"],
            format!("$({PGAPPNAME})")
        );
    }
}
