//! Connection strings, read once: both libpq spellings — a `postgres://` URL and
//! `key=value` pairs — become a [`ConnInfo`]: the [`DatabaseIdentity`] that may be
//! shown, and the credentials that never are.
//!
//! Everything poolwarden says about a database (logs, status, Events, metric labels,
//! `inspect`, `plan`, errors) names it by its identity, `user@host:port/db`, and never
//! by the string it came from. This module is the only code that reads the string, so
//! it is the only place a password could leak from; its errors therefore name a
//! parameter or a position and never a value, because in a malformed string any
//! fragment may be part of a password.
//!
//! The spellings follow libpq
//! (<https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>):
//! percent-encoding in every part of a URL, query-string parameters (`?user=…&password=…`),
//! comma-separated host lists, `[v6]` literals, single-quoted `key='a value'` with
//! backslash escapes, and `passfile` (`host:port:db:user:password` lines, read at
//! each connection so a rotated file is picked up). One deliberate difference: in
//! a URL the user info ends at the *last* `@` before the query, so a password with
//! an unencoded `@` or `/` is read as the password (libpq stops at the first `@`
//! and then connects to a host named after the rest of the password).

use std::{fmt, path::PathBuf, time::Duration};

use tokio_postgres::config::{ChannelBinding, LoadBalanceHosts, SslNegotiation, TargetSessionAttrs};

use super::tls::{Roots, TlsMode};

/// Why a connection string cannot be read. No variant carries text from the string.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnInfoError {
    #[error("the connection string is empty")]
    Empty,
    #[error("the URL scheme must be postgres:// or postgresql://")]
    Scheme,
    #[error("entry {entry} has no '=' (key=value form; quote a value that contains spaces: key='a value')")]
    MissingEquals { entry: usize },
    #[error("entry {entry} has a quote that is never closed")]
    UnterminatedQuote { entry: usize },
    #[error("query parameter {entry} of the URL has no '='")]
    QueryMissingEquals { entry: usize },
    #[error("{part} has an invalid percent-encoding (a % not followed by two hex digits)")]
    PercentEncoding { part: Part },
    #[error("{part} is not UTF-8 once percent-decoded")]
    NotUtf8 { part: Part },
    #[error("{} is not a libpq connection parameter{}", .position, did_you_mean(.suggestion))]
    UnknownParameter {
        position: Part,
        suggestion: Option<&'static str>,
    },
    #[error("{key} is a libpq parameter poolwarden's sampler does not support")]
    Unsupported { key: &'static str },
    #[error("{key} must be {expected}")]
    InvalidValue { key: &'static str, expected: &'static str },
    #[error("a host in [brackets] must be an IPv6 address and end with ]")]
    Ipv6,
    #[error("give one port, or one per host ({hosts} hosts, {ports} ports)")]
    PortCount { hosts: usize, ports: usize },
    #[error("give one hostaddr per host ({hosts} hosts, {hostaddrs} hostaddrs)")]
    HostaddrCount { hosts: usize, hostaddrs: usize },
    #[error("no host: give host=… (key=value) or postgres://user@HOST/db")]
    NoHost,
    #[error("no user: give user=… (key=value) or postgres://USER@host/db")]
    NoUser,
    #[error("sslmode={mode} needs sslrootcert (the CA file to trust, or system)")]
    NeedsRootCert { mode: &'static str },
    #[error("weak sslmode {mode} may not be used with sslrootcert=system (use verify-full)")]
    WeakModeWithSystemRoots { mode: &'static str },
}

fn did_you_mean(s: &Option<&'static str>) -> String {
    s.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default()
}

/// Where in a connection string a problem is: named by its role, never by its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    User,
    Password,
    Host,
    Database,
    Entry(usize),
    QueryParameter(usize),
    Value(&'static str),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::User => f.write_str("the URL's user name"),
            Part::Password => f.write_str("the URL's password"),
            Part::Host => f.write_str("a host of the URL"),
            Part::Database => f.write_str("the URL's database name"),
            Part::Entry(n) => write!(f, "the key of entry {n}"),
            Part::QueryParameter(n) => write!(f, "query parameter {n} of the URL"),
            Part::Value(key) => write!(f, "the value of {key}"),
        }
    }
}

/// One server to try: host (a name, an IP literal or a Unix-socket directory),
/// optional `hostaddr`, port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: Option<String>,
    pub hostaddr: Option<std::net::IpAddr>,
    pub port: u16,
}

/// What a sampler reads: which servers, which database, as which role, over which
/// TLS. Two connection strings with the same identity read the same thing, however
/// they are spelled; the displayed form carries no credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DatabaseIdentity {
    pub endpoints: Vec<Endpoint>,
    pub dbname: String,
    pub user: String,
    pub tls: TlsMode,
}

impl fmt::Display for DatabaseIdentity {
    /// `user@host:port/db`; several hosts are listed with commas, and TLS settings
    /// other than libpq's default (`prefer`) follow as a query string, so two
    /// identities never display alike.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@", self.user)?;
        for (i, e) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (&e.host, e.hostaddr) {
                (Some(h), None) if h.contains(':') => write!(f, "[{h}]")?,
                (Some(h), None) => f.write_str(h)?,
                (Some(h), Some(a)) => write!(f, "{h}({a})")?,
                (None, Some(std::net::IpAddr::V6(a))) => write!(f, "[{a}]")?,
                (None, Some(a)) => write!(f, "{a}")?,
                (None, None) => {}
            }
            write!(f, ":{}", e.port)?;
        }
        write!(f, "/{}", self.dbname)?;
        match &self.tls {
            TlsMode::Prefer => Ok(()),
            TlsMode::Disable => f.write_str("?sslmode=disable"),
            TlsMode::Require => f.write_str("?sslmode=require"),
            TlsMode::VerifyCa { roots } => write!(f, "?sslmode=verify-ca&sslrootcert={roots}"),
            TlsMode::VerifyFull { roots } => write!(f, "?sslmode=verify-full&sslrootcert={roots}"),
        }
    }
}

/// The credentials of a connection string: never displayed, compared only to keep
/// two sets apart.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Credentials {
    pub password: Option<Vec<u8>>,
    pub passfile: Option<PathBuf>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("passfile", &self.passfile)
            .finish()
    }
}

/// A parsed connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub identity: DatabaseIdentity,
    pub credentials: Credentials,
    /// The settings that change how, not what, the sampler connects.
    pub connect_timeout: Option<Duration>,
    pub options: Option<String>,
    pub keepalives: Option<bool>,
    pub keepalives_idle: Option<Duration>,
    pub keepalives_interval: Option<Duration>,
    pub keepalives_retries: Option<u32>,
    pub tcp_user_timeout: Option<Duration>,
    pub target_session_attrs: Option<TargetSessionAttrs>,
    pub load_balance_hosts: Option<LoadBalanceHosts>,
    pub channel_binding: Option<ChannelBinding>,
    pub ssl_negotiation: Option<SslNegotiation>,
}

/// Every libpq keyword poolwarden reads, for did-you-mean.
const KNOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "sslsni",
    "sslcompression",
    "gssencmode",
    "requiressl",
];

/// libpq keywords the sampler cannot honour (client certificates, Kerberos,
/// service files, …): refused by name rather than silently ignored.
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "min_protocol_version",
    "max_protocol_version",
    "requirepeer",
    "require_auth",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "replication",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
];

/// A raw parameter: its keyword (checked to be a known one) and decoded value.
struct Param {
    key: &'static str,
    value: Vec<u8>,
}

fn keyword(key: &str, position: Part) -> Result<&'static str, ConnInfoError> {
    if let Some(k) = KNOWN.iter().find(|k| **k == key) {
        return Ok(k);
    }
    if let Some(k) = UNSUPPORTED.iter().find(|k| **k == key) {
        return Err(ConnInfoError::Unsupported { key: k });
    }
    // `ssl=true` is libpq's spelling for JDBC compatibility.
    if key == "ssl" {
        return Ok("ssl");
    }
    let suggestion = KNOWN
        .iter()
        .map(|k| (strsim::jaro_winkler(k, key), *k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k);
    Err(ConnInfoError::UnknownParameter { position, suggestion })
}

/// The parameters read so far, later ones overriding earlier ones as in libpq.
struct Collected {
    hosts: Option<Vec<Option<String>>>,
    hostaddrs: Option<Vec<Option<std::net::IpAddr>>>,
    ports: Option<Vec<Option<u16>>>,
    dbname: Option<String>,
    user: Option<String>,
    credentials: Credentials,
    sslmode: Option<&'static str>,
    sslrootcert: Option<String>,
    /// The settings read directly; its identity and credentials are set by `finish`.
    info: ConnInfo,
}

impl Default for Collected {
    fn default() -> Self {
        Collected {
            hosts: None,
            hostaddrs: None,
            ports: None,
            dbname: None,
            user: None,
            credentials: Credentials::default(),
            sslmode: None,
            sslrootcert: None,
            info: ConnInfo {
                identity: DatabaseIdentity {
                    endpoints: vec![],
                    dbname: String::new(),
                    user: String::new(),
                    tls: TlsMode::Prefer,
                },
                credentials: Credentials::default(),
                connect_timeout: None,
                options: None,
                keepalives: None,
                keepalives_idle: None,
                keepalives_interval: None,
                keepalives_retries: None,
                tcp_user_timeout: None,
                target_session_attrs: None,
                load_balance_hosts: None,
                channel_binding: None,
                ssl_negotiation: None,
            },
        }
    }
}

fn invalid(key: &'static str, expected: &'static str) -> ConnInfoError {
    ConnInfoError::InvalidValue { key, expected }
}

fn seconds(key: &'static str, v: &str) -> Result<Duration, ConnInfoError> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| invalid(key, "a whole number of seconds"))
}

/// `v` if it is one of `choices`.
fn one_of(
    key: &'static str,
    v: &str,
    choices: &[&'static str],
    expected: &'static str,
) -> Result<&'static str, ConnInfoError> {
    choices
        .iter()
        .find(|c| **c == v)
        .copied()
        .ok_or_else(|| invalid(key, expected))
}

/// A comma-separated list, an empty item standing for the default.
fn list<T>(text: &str, item: impl Fn(&str) -> Result<T, ConnInfoError>) -> Result<Vec<Option<T>>, ConnInfoError> {
    text.split(',')
        .map(|x| if x.is_empty() { Ok(None) } else { item(x).map(Some) })
        .collect()
}

impl Collected {
    /// Where and as whom to connect; false when `key` is not one of these.
    fn address(&mut self, key: &'static str, text: &str) -> Result<bool, ConnInfoError> {
        match key {
            "host" => self.hosts = Some(list(text, |h| Ok(h.to_owned()))?),
            "hostaddr" => {
                self.hostaddrs = Some(list(text, |a| {
                    a.parse()
                        .map_err(|_| invalid(key, "an IP address (or a comma-separated list)"))
                })?)
            }
            "port" => {
                self.ports = Some(list(text, |p| {
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| invalid(key, "a port from 1 to 65535 (or a comma-separated list)"))
                })?)
            }
            "dbname" => self.dbname = Some(text.to_owned()).filter(|d| !d.is_empty()),
            "user" => self.user = Some(text.to_owned()).filter(|u| !u.is_empty()),
            "passfile" => self.credentials.passfile = Some(PathBuf::from(text)).filter(|p| !p.as_os_str().is_empty()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// How the connection behaves once made; false when `key` is not one of these.
    fn session(&mut self, key: &'static str, text: &str) -> Result<bool, ConnInfoError> {
        let info = &mut self.info;
        match key {
            // libpq: 0 (or none) waits forever; a controller never should, so 0
            // keeps the sampler's own timeout.
            "connect_timeout" => info.connect_timeout = Some(seconds(key, text)?).filter(|d| !d.is_zero()),
            // The protocol client always speaks UTF-8.
            "client_encoding"
                if !matches!(
                    text.to_ascii_lowercase().as_str(),
                    "utf8" | "utf-8" | "unicode" | "auto"
                ) =>
            {
                return Err(invalid(key, "UTF8 (the sampler always speaks UTF-8)"));
            }
            "options" => info.options = Some(text.to_owned()).filter(|o| !o.is_empty()),
            // The sampler always names itself `poolwarden`, so operators can find it.
            "application_name" | "fallback_application_name" => {}
            "keepalives" => info.keepalives = Some(one_of(key, text, &["0", "1"], "0 or 1")? == "1"),
            "keepalives_idle" => info.keepalives_idle = Some(seconds(key, text)?),
            "keepalives_interval" => info.keepalives_interval = Some(seconds(key, text)?),
            "keepalives_count" => {
                info.keepalives_retries = Some(text.trim().parse().map_err(|_| invalid(key, "a whole number"))?)
            }
            "tcp_user_timeout" => {
                info.tcp_user_timeout = Some(Duration::from_millis(
                    text.trim()
                        .parse()
                        .map_err(|_| invalid(key, "a whole number of milliseconds"))?,
                ))
            }
            "target_session_attrs" => {
                let choices = ["any", "read-write", "read-only"];
                info.target_session_attrs = Some(match one_of(key, text, &choices, "any, read-write or read-only")? {
                    "read-write" => TargetSessionAttrs::ReadWrite,
                    "read-only" => TargetSessionAttrs::ReadOnly,
                    _ => TargetSessionAttrs::Any,
                })
            }
            "load_balance_hosts" => {
                info.load_balance_hosts = Some(match one_of(key, text, &["disable", "random"], "disable or random")? {
                    "random" => LoadBalanceHosts::Random,
                    _ => LoadBalanceHosts::Disable,
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Encryption and authentication of the channel; false when `key` is not one of these.
    fn tls(&mut self, key: &'static str, text: &str) -> Result<bool, ConnInfoError> {
        match key {
            "channel_binding" => {
                let choices = ["disable", "prefer", "require"];
                self.info.channel_binding = Some(match one_of(key, text, &choices, "disable, prefer or require")? {
                    "disable" => ChannelBinding::Disable,
                    "require" => ChannelBinding::Require,
                    _ => ChannelBinding::Prefer,
                })
            }
            "sslnegotiation" => {
                let choices = ["postgres", "direct"];
                self.info.ssl_negotiation = Some(match one_of(key, text, &choices, "postgres or direct")? {
                    "direct" => SslNegotiation::Direct,
                    _ => SslNegotiation::Postgres,
                })
            }
            "sslmode" => {
                self.sslmode = Some(one_of(
                    key,
                    text,
                    &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
                    "one of disable, allow, prefer, require, verify-ca, verify-full",
                )?)
            }
            "sslrootcert" => self.sslrootcert = Some(text.to_owned()).filter(|r| !r.is_empty()),
            // Without GSSAPI support, disable and prefer both mean plain TLS/none.
            "gssencmode" => {
                one_of(
                    key,
                    text,
                    &["disable", "prefer"],
                    "disable or prefer (GSSAPI encryption is not supported)",
                )?;
            }
            "sslsni" | "sslcompression" => {
                one_of(key, text, &["0", "1"], "0 or 1")?;
            }
            // Both are libpq's older spellings of sslmode=require.
            "requiressl" => {
                if one_of(key, text, &["0", "1"], "0 or 1")? == "1" {
                    self.sslmode = Some("require");
                }
            }
            "ssl" => {
                one_of(key, text, &["true"], "true")?;
                self.sslmode = Some("require");
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The connection info, once every parameter is read.
    fn finish(self) -> Result<ConnInfo, ConnInfoError> {
        let endpoints = endpoints(
            self.hosts.unwrap_or_default(),
            self.hostaddrs.unwrap_or_default(),
            self.ports.unwrap_or_default(),
        )?;
        let user = self.user.ok_or(ConnInfoError::NoUser)?;
        let mut info = self.info;
        info.identity = DatabaseIdentity {
            endpoints,
            // libpq: the database defaults to the user name.
            dbname: self.dbname.unwrap_or_else(|| user.clone()),
            user,
            tls: tls_mode(self.sslmode, self.sslrootcert)?,
        };
        info.credentials = self.credentials;
        Ok(info)
    }
}

/// The hosts, pairing the i-th host, hostaddr and port as libpq does (one port for
/// every host, or one each).
fn endpoints(
    hosts: Vec<Option<String>>,
    hostaddrs: Vec<Option<std::net::IpAddr>>,
    ports: Vec<Option<u16>>,
) -> Result<Vec<Endpoint>, ConnInfoError> {
    let count = hosts.len().max(hostaddrs.len());
    if count == 0 || (hosts.iter().all(Option::is_none) && hostaddrs.iter().all(Option::is_none)) {
        return Err(ConnInfoError::NoHost);
    }
    if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
        return Err(ConnInfoError::HostaddrCount {
            hosts: hosts.len(),
            hostaddrs: hostaddrs.len(),
        });
    }
    let port_of = |i: usize| -> Result<u16, ConnInfoError> {
        match ports.len() {
            0 => Ok(5432),
            1 => Ok(ports[0].unwrap_or(5432)),
            n if n == count => Ok(ports[i].unwrap_or(5432)),
            n => Err(ConnInfoError::PortCount { hosts: count, ports: n }),
        }
    };
    let mut endpoints = Vec::with_capacity(count);
    for i in 0..count {
        let host = hosts.get(i).cloned().flatten();
        let hostaddr = hostaddrs.get(i).copied().flatten();
        if host.is_none() && hostaddr.is_none() {
            return Err(ConnInfoError::NoHost);
        }
        endpoints.push(Endpoint {
            host,
            hostaddr,
            port: port_of(i)?,
        });
    }
    Ok(endpoints)
}

impl ConnInfo {
    /// Reads a connection string in either spelling.
    pub fn parse(s: &str) -> Result<Self, ConnInfoError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ConnInfoError::Empty);
        }
        let params = match s.split_once("://") {
            Some((scheme, rest)) if !scheme.contains([' ', '=']) => {
                if scheme != "postgres" && scheme != "postgresql" {
                    return Err(ConnInfoError::Scheme);
                }
                parse_url(rest)?
            }
            _ => parse_key_value(s)?,
        };
        Self::from_params(params)
    }

    fn from_params(params: Vec<Param>) -> Result<Self, ConnInfoError> {
        let mut collected = Collected::default();
        for Param { key, value } in params {
            if key == "password" {
                // libpq treats an empty password as none.
                collected.credentials.password = Some(value).filter(|v| !v.is_empty());
                continue;
            }
            let text = String::from_utf8(value).map_err(|_| ConnInfoError::NotUtf8 { part: Part::Value(key) })?;
            // Each keyword belongs to one group; one that none takes is read and ignored,
            // as libpq ignores the ones that do not apply.
            let _taken =
                collected.address(key, &text)? || collected.session(key, &text)? || collected.tls(key, &text)?;
        }
        collected.finish()
    }

    /// The tokio-postgres configuration, without the password (see
    /// [`Self::password`]) and without the sampler's own settings.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.user(&self.identity.user);
        c.dbname(&self.identity.dbname);
        // tokio-postgres wants either no hostaddrs or one per host.
        let with_addrs = self.identity.endpoints.iter().all(|e| e.hostaddr.is_some());
        for e in &self.identity.endpoints {
            match (&e.host, e.hostaddr) {
                (Some(h), _) => {
                    c.host(h);
                }
                (None, Some(a)) => {
                    c.host(a.to_string());
                }
                (None, None) => {}
            }
            if with_addrs && let Some(a) = e.hostaddr {
                c.hostaddr(a);
            }
            c.port(e.port);
        }
        c.ssl_mode(self.identity.tls.ssl_mode());
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        if let Some(k) = self.keepalives {
            c.keepalives(k);
        }
        if let Some(d) = self.keepalives_idle {
            c.keepalives_idle(d);
        }
        if let Some(d) = self.keepalives_interval {
            c.keepalives_interval(d);
        }
        if let Some(n) = self.keepalives_retries {
            c.keepalives_retries(n);
        }
        if let Some(d) = self.tcp_user_timeout {
            c.tcp_user_timeout(d);
        }
        if let Some(t) = self.target_session_attrs {
            c.target_session_attrs(t);
        }
        if let Some(l) = self.load_balance_hosts {
            c.load_balance_hosts(l);
        }
        if let Some(b) = self.channel_binding {
            c.channel_binding(b);
        }
        if let Some(n) = self.ssl_negotiation {
            c.ssl_negotiation(n);
        }
        c
    }

    /// The password to send: the string's own, else the first matching `passfile`
    /// line, read now so that a rotated file is used at the next connection.
    pub fn password(&self) -> Result<Option<Vec<u8>>, std::io::Error> {
        if let Some(p) = &self.credentials.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.credentials.passfile else {
            return Ok(None);
        };
        let text = std::fs::read(path)?;
        let id = &self.identity;
        Ok(id.endpoints.iter().find_map(|e| {
            let host = match (&e.host, e.hostaddr) {
                // libpq matches a socket directory, its default one included, as "localhost".
                (Some(h), _) if h.starts_with('/') => "localhost".to_owned(),
                (Some(h), _) => h.clone(),
                (None, Some(a)) => a.to_string(),
                (None, None) => return None,
            };
            passfile_lookup(&text, &host, e.port, &id.dbname, &id.user)
        }))
    }

    /// `text` with every occurrence of the password taken out: belt and braces for
    /// messages from the driver, the TLS library or the server, which should never
    /// contain it.
    pub fn scrub(&self, text: String) -> String {
        match self
            .credentials
            .password
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
        {
            Some(p) if p.len() >= 4 && text.contains(p) => text.replace(p, "***"),
            _ => text,
        }
    }
}

/// Whether text looks like a connection string (either spelling), so that a message
/// quoting user input can leave it out: a URL with a scheme, or `key=value` text
/// naming a password or a host.
pub fn looks_like_connection_string(s: &str) -> bool {
    s.contains("://") || s.contains("password") || (s.contains('=') && (s.contains("host") || s.contains("user")))
}

fn tls_mode(sslmode: Option<&'static str>, sslrootcert: Option<String>) -> Result<TlsMode, ConnInfoError> {
    let roots = sslrootcert.map(|r| if r == "system" { Roots::System } else { Roots::File(r) });
    // libpq 16+: sslrootcert=system makes verify-full the default, and anything
    // weaker an error, since a public CA vouches for any name it has signed.
    if matches!(roots, Some(Roots::System)) {
        return match sslmode.unwrap_or("verify-full") {
            "verify-full" => Ok(TlsMode::VerifyFull { roots: Roots::System }),
            mode => Err(ConnInfoError::WeakModeWithSystemRoots { mode }),
        };
    }
    Ok(match (sslmode.unwrap_or("prefer"), roots) {
        ("disable", _) => TlsMode::Disable,
        ("allow" | "prefer", _) => TlsMode::Prefer,
        // libpq: require with a root certificate verifies the chain, like verify-ca.
        ("require", Some(roots)) => TlsMode::VerifyCa { roots },
        ("require", None) => TlsMode::Require,
        ("verify-ca", Some(roots)) => TlsMode::VerifyCa { roots },
        ("verify-full", Some(roots)) => TlsMode::VerifyFull { roots },
        ("verify-ca", None) => return Err(ConnInfoError::NeedsRootCert { mode: "verify-ca" }),
        (_, _) => return Err(ConnInfoError::NeedsRootCert { mode: "verify-full" }),
    })
}

/// `postgres://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, the
/// part after the scheme.
fn parse_url(rest: &str) -> Result<Vec<Param>, ConnInfoError> {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut params = Vec::new();
    // The last `@` before the query: a password with an unencoded `@` or `/` stays whole.
    let (userinfo, hostpart) = match before_query.rfind('@') {
        Some(at) => (Some(&before_query[..at]), &before_query[at + 1..]),
        None => (None, before_query),
    };
    if let Some(userinfo) = userinfo {
        url_userinfo(userinfo, &mut params)?;
    }
    let (netloc, path) = match hostpart.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (hostpart, None),
    };
    if !netloc.is_empty() {
        url_hosts(netloc, &mut params)?;
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.push(Param {
            key: "dbname",
            value: percent_decode(db, Part::Database)?,
        });
    }
    if let Some(query) = query {
        url_query(query, &mut params)?;
    }
    Ok(params)
}

/// `user[:password]`.
fn url_userinfo(userinfo: &str, params: &mut Vec<Param>) -> Result<(), ConnInfoError> {
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    if !user.is_empty() {
        params.push(Param {
            key: "user",
            value: percent_decode(user, Part::User)?,
        });
    }
    if let Some(p) = password {
        params.push(Param {
            key: "password",
            value: percent_decode(p, Part::Password)?,
        });
    }
    Ok(())
}

/// `host[:port][,...]`, as a `host` list and, when any port is given, a `port` list.
fn url_hosts(netloc: &str, params: &mut Vec<Param>) -> Result<(), ConnInfoError> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for item in netloc.split(',') {
        let (host, port) = url_host_port(item)?;
        let host = String::from_utf8(percent_decode(&host, Part::Host)?)
            .map_err(|_| ConnInfoError::NotUtf8 { part: Part::Host })?;
        hosts.push(host);
        ports.push(port.to_owned());
    }
    params.push(Param {
        key: "host",
        value: hosts.join(",").into_bytes(),
    });
    if ports.iter().any(|p| !p.is_empty()) {
        params.push(Param {
            key: "port",
            value: ports.join(",").into_bytes(),
        });
    }
    Ok(())
}

/// One `host[:port]` or `[ipv6][:port]`; the port is empty when not given.
fn url_host_port(item: &str) -> Result<(String, &str), ConnInfoError> {
    if let Some(v6) = item.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or(ConnInfoError::Ipv6)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(ConnInfoError::Ipv6);
        }
        let port = match after {
            "" => "",
            p => p.strip_prefix(':').ok_or(ConnInfoError::Ipv6)?,
        };
        return Ok((addr.to_owned(), port));
    }
    Ok(match item.split_once(':') {
        Some((h, p)) => (h.to_owned(), p),
        None => (item.to_owned(), ""),
    })
}

/// `key=value&...`, each key a libpq keyword.
fn url_query(query: &str, params: &mut Vec<Param>) -> Result<(), ConnInfoError> {
    for (i, pair) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
        let position = Part::QueryParameter(i + 1);
        let (k, v) = pair
            .split_once('=')
            .ok_or(ConnInfoError::QueryMissingEquals { entry: i + 1 })?;
        let k =
            String::from_utf8(percent_decode(k, position)?).map_err(|_| ConnInfoError::NotUtf8 { part: position })?;
        let key = keyword(&k, position)?;
        params.push(Param {
            key,
            value: percent_decode(v, Part::Value(key))?,
        });
    }
    Ok(())
}

fn percent_decode(s: &str, part: Part) -> Result<Vec<u8>, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                // libpq refuses %00: it would cut the value short in C.
                (Some(0), Some(0)) | (None, _) | (_, None) => return Err(ConnInfoError::PercentEncoding { part }),
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// `key = value ...`, with libpq's quoting: a value in single quotes may hold spaces,
/// and a backslash escapes the next character, inside quotes or not.
fn parse_key_value(s: &str) -> Result<Vec<Param>, ConnInfoError> {
    let mut params = Vec::new();
    let mut chars = s.chars().peekable();
    let mut entry = 0;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        entry += 1;
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            return Err(ConnInfoError::MissingEquals { entry });
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnInfoError::UnterminatedQuote { entry }),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnInfoError::UnterminatedQuote { entry }),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let key = keyword(&key, Part::Entry(entry))?;
        params.push(Param {
            key,
            value: value.into_bytes(),
        });
    }
    Ok(params)
}

/// The password of the first `.pgpass` line matching the connection
/// (<https://www.postgresql.org/docs/current/libpq-pgpass.html>): fields
/// `host:port:db:user:password`, `*` matches anything, `\` escapes `:` and `\`.
fn passfile_lookup(text: &[u8], host: &str, port: u16, dbname: &str, user: &str) -> Option<Vec<u8>> {
    let port = port.to_string();
    let wanted = [host.as_bytes(), port.as_bytes(), dbname.as_bytes(), user.as_bytes()];
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"#") || line.is_empty() {
            continue;
        }
        // Each field with whether it was written as a bare `*` (an escaped `\*` is a star).
        let mut fields: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), true)];
        let mut it = line.iter();
        while let Some(&b) = it.next() {
            let Some((field, bare)) = fields.last_mut() else { break };
            match b {
                b'\\' => {
                    *bare = false;
                    if let Some(&next) = it.next() {
                        field.push(next);
                    }
                }
                b':' => fields.push((Vec::new(), true)),
                _ => field.push(b),
            }
        }
        // Fields after the password (an unescaped `:` in it) are ignored, as by libpq.
        if fields.len() < 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|((field, bare), want)| (*bare && field.as_slice() == b"*") || field.as_slice() == want);
        if matches {
            return Some(fields[4].0.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> String {
        ConnInfo::parse(s)
            .map(|c| c.identity.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    fn password(s: &str) -> Option<Vec<u8>> {
        ConnInfo::parse(s).unwrap().credentials.password
    }

    #[test]
    fn every_spelling_of_one_database_has_one_identity() {
        let spellings = [
            "postgres://mon:pw@db.internal:5432/app",
            "postgresql://mon:pw@db.internal/app",
            "postgres://db.internal/app?user=mon&password=pw",
            "postgres://db.internal:5432/app?user=mon&password=pw&application_name=x",
            "postgres://%6Don:pw@db%2Einternal/%61pp",
            "host=db.internal port=5432 dbname=app user=mon password=pw",
            "host = db.internal dbname='app' user=mon password='pw'",
            "postgres:///app?host=db.internal&user=mon&password=pw",
        ];
        let ids: Vec<_> = spellings.iter().map(|s| ConnInfo::parse(s).unwrap().identity).collect();
        for (s, id) in spellings.iter().zip(&ids) {
            assert_eq!(id, &ids[0], "{s}");
        }
        assert_eq!(ids[0].to_string(), "mon@db.internal:5432/app");
    }

    #[test]
    fn passwords_are_read_in_every_spelling_and_never_displayed() {
        assert_eq!(password("postgres://mon:P@ss/w@rd@db/app"), Some(b"P@ss/w@rd".to_vec()));
        assert_eq!(id("postgres://mon:P@ss/w@rd@db/app"), "mon@db:5432/app");
        assert_eq!(password("postgres://mon:p%40ss%3A%2F@db/app"), Some(b"p@ss:/".to_vec()));
        assert_eq!(
            password("postgres://db/app?user=mon&password=Q%26S"),
            Some(b"Q&S".to_vec())
        );
        assert_eq!(
            password("host=db user=mon password='Sp ace\\'s'"),
            Some(b"Sp ace's".to_vec())
        );
        assert_eq!(
            password("host=db user=mon password=back\\ slash"),
            Some(b"back slash".to_vec())
        );
        assert_eq!(password("host=db user=mon password="), None);
        let info = ConnInfo::parse("host=db user=mon password='Sp ace' sslmode=require").unwrap();
        assert!(!format!("{info:?}").contains("Sp ace"));
    }

    #[test]
    fn errors_never_quote_the_string() {
        let bad = [
            (
                "postgres://127.0.0.1/postgres?user=mon&password=SECRET_q2&sslmode=bogus",
                "sslmode must be one of",
            ),
            (
                "host=h user=mon password='Sp ace_SECRET' sslmode=bogus",
                "sslmode must be one of",
            ),
            ("host=h user=mon password=Sp ace_SECRET", "entry 4 has no '='"),
            (
                "host=h user=mon password='SECRET",
                "entry 3 has a quote that is never closed",
            ),
            ("host=h user=mon pasword=SECRET", "did you mean password?"),
            (
                "host=h user=mon SECRET=x",
                "the key of entry 3 is not a libpq connection parameter",
            ),
            (
                "postgres://mon:SECRET%zz@h/db",
                "the URL's password has an invalid percent-encoding",
            ),
            ("postgres://h:SECRET/db", "port must be a port from 1 to 65535"),
            ("postgres://h/db?SECRET", "query parameter 1 of the URL has no '='"),
            ("mysql://mon:SECRET@h/db", "scheme must be postgres"),
            ("postgres://mon:SECRET@/db", "no host"),
            ("postgres://:SECRET@h/db", "no user"),
            ("postgres://mon@h/db?sslcert=SECRET", "sslcert is a libpq parameter"),
        ];
        for (s, want) in bad {
            let e = ConnInfo::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(!e.contains("SECRET") && !e.contains("ace_"), "{s}: {e}");
        }
    }

    #[test]
    fn hosts_ports_and_sockets_read_as_libpq_does() {
        assert_eq!(id("postgres://u@a,b:5433/d"), "u@a:5432,b:5433/d");
        assert_eq!(id("postgres://u@a:1,b:2/d"), "u@a:1,b:2/d");
        assert_eq!(id("postgres://u@[::1]:6432/d"), "u@[::1]:6432/d");
        assert_eq!(
            id("postgres://u@%2Fvar%2Frun%2Fpostgresql/d"),
            "u@/var/run/postgresql:5432/d"
        );
        assert_eq!(id("host=a,b port=1,2 user=u"), "u@a:1,b:2/u");
        assert_eq!(id("hostaddr=10.0.0.5 user=u"), "u@10.0.0.5:5432/u");
        assert_eq!(id("host=db hostaddr=10.0.0.5 user=u"), "u@db(10.0.0.5):5432/u");
        assert!(id("host=a,b port=1,2,3 user=u").contains("one per host (2 hosts, 3 ports)"));
    }

    #[test]
    fn tls_settings_are_part_of_the_identity() {
        assert_eq!(id("postgres://u@h/d?sslmode=require"), "u@h:5432/d?sslmode=require");
        assert_eq!(id("postgres://u@h/d?ssl=true"), "u@h:5432/d?sslmode=require");
        assert_eq!(
            id("postgres://u@h/d?sslmode=require&sslrootcert=/ca.pem"),
            "u@h:5432/d?sslmode=verify-ca&sslrootcert=/ca.pem"
        );
        assert_eq!(
            id("postgres://u@h/d?sslmode=verify-ca").as_str(),
            "error: sslmode=verify-ca needs sslrootcert (the CA file to trust, or system)"
        );
        assert_ne!(
            ConnInfo::parse("postgres://u@h/d").unwrap().identity,
            ConnInfo::parse("postgres://u@h/d?sslmode=disable").unwrap().identity
        );
    }

    #[test]
    fn sslrootcert_system_means_verify_full_against_the_system_store_as_in_libpq_16() {
        assert_eq!(
            id("postgres://u@h/d?sslrootcert=system"),
            "u@h:5432/d?sslmode=verify-full&sslrootcert=system"
        );
        for weak in ["require", "verify-ca", "prefer", "disable"] {
            let e = id(&format!("host=h user=u sslrootcert=system sslmode={weak}"));
            assert_eq!(
                e,
                format!("error: weak sslmode {weak} may not be used with sslrootcert=system (use verify-full)")
            );
        }
    }

    #[test]
    fn passfile_lines_match_like_libpq() {
        let text = b"# comment\nother:*:*:*:nope\ndb:5432:app:mon:first\\:pw\\\\x\n*:*:*:mon:fallback\n";
        assert_eq!(
            passfile_lookup(text, "db", 5432, "app", "mon"),
            Some(b"first:pw\\x".to_vec())
        );
        assert_eq!(
            passfile_lookup(text, "db", 6432, "app", "mon"),
            Some(b"fallback".to_vec())
        );
        assert_eq!(passfile_lookup(text, "db", 6432, "app", "other"), None);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, text).unwrap();
        let info = ConnInfo::parse(&format!("postgres://mon@db/app?passfile={}", file.display())).unwrap();
        assert_eq!(info.password().unwrap(), Some(b"first:pw\\x".to_vec()));
        // A password in the string wins over the file, as in libpq.
        let info = ConnInfo::parse(&format!(
            "host=db user=mon dbname=app password=given passfile={}",
            file.display()
        ))
        .unwrap();
        assert_eq!(info.password().unwrap(), Some(b"given".to_vec()));
    }
}
