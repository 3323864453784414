//! Models of five pool libraries' connection handling, each as its source does it
//! (docs/decisions.md, "Lifetime overruns of real pools", cites the functions and
//! versions), so that the measures can be tested against the `pg_stat_activity` rows
//! a real pool of each would show under bursts, a trickle and a quiet period — and
//! against the seeds' leaks added on top. Time is simulated, in steps of 100 ms.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};
use poolwarden::observation::Backend;

/// The library modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Psycopg,
    SqlAlchemy,
    Hikari,
    Pgx,
    NodePostgres,
}

/// A pool's settings, as the app passes what poolwarden writes (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub min: u32,
    pub max: u32,
    pub max_idle: f64,
    pub lifetime: f64,
    /// pgx only.
    pub jitter: f64,
    /// pgx only.
    pub health_check_period: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Active,
    IdleInTransaction,
}

#[derive(Clone, Debug)]
struct Conn {
    pid: i32,
    start: f64,
    state: State,
    state_change: f64,
    xact_start: Option<f64>,
    /// When the library considers it expired (lifetime with the library's jitter).
    expire_at: f64,
    /// HikariCP: marked at its end of life while in use, closed when it comes back.
    evicted: bool,
    /// node-postgres: the idle timer set when it was released above `min`.
    idle_timer: Option<f64>,
    /// When it was last returned (idle since).
    returned: f64,
}

/// One checked-out connection: by a request that returns it at `until`, or leaked.
#[derive(Clone, Debug)]
struct Busy {
    conn: Conn,
    until: Option<f64>,
}

/// A pool of one library, with the seeds' leaks beside it.
pub struct Pool {
    lib: Lib,
    s: Settings,
    /// Idle connections; the front is the longest idle for FIFO libraries.
    idle: VecDeque<Conn>,
    busy: Vec<Busy>,
    /// Requests waiting for a connection: how long each holds it.
    waiting: VecDeque<f64>,
    /// Connections outside the pool (a second pool, forgotten engines).
    rogue: Vec<Conn>,
    next_pid: i32,
    rng: u64,
    /// psycopg_pool: the fewest idle connections since the last shrink.
    nconns_min: usize,
    next_tick: f64,
    now: f64,
}

const STEP: f64 = 0.1;

impl Pool {
    pub fn new(lib: Lib, s: Settings, seed: u64) -> Pool {
        let mut s = s;
        if lib == Lib::Hikari {
            // HikariConfig.validateNumerics replaces these (a policy's check refuses them).
            assert!(s.lifetime >= 30.0 && s.max_idle >= 10.0, "Hikari would replace {s:?}");
        }
        if lib == Lib::SqlAlchemy {
            s.max_idle = f64::INFINITY;
        }
        let mut pool = Pool {
            lib,
            s,
            idle: VecDeque::new(),
            busy: Vec::new(),
            waiting: VecDeque::new(),
            rogue: Vec::new(),
            next_pid: 1000,
            rng: seed.max(1),
            nconns_min: 0,
            next_tick: 0.0,
            now: 0.0,
        };
        pool.next_tick = pool.tick_period();
        // psycopg_pool opens min_size at start, HikariCP fills minimumIdle, pgx
        // creates MinConns; SQLAlchemy and node-postgres open on demand.
        if matches!(lib, Lib::Psycopg | Lib::Hikari | Lib::Pgx) {
            for _ in 0..s.min {
                let c = pool.connect();
                pool.idle.push_back(c);
            }
        }
        pool
    }

    fn random(&mut self) -> f64 {
        // xorshift64: deterministic jitter per seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as f64 / 1_000_000.0
    }

    fn connect(&mut self) -> Conn {
        self.next_pid += 1;
        let l = self.s.lifetime;
        let expire_at = self.now
            + match self.lib {
                // base.py _connect: _jitter(max_lifetime, -0.05, 0.0).
                Lib::Psycopg => l * (1.0 - 0.05 * self.random()),
                // HikariPool.createPoolEntry: up to 2.5% less when above 10 s.
                Lib::Hikari => l - if l > 10.0 { l / 40.0 * self.random() } else { 0.0 },
                // pool.go: MaxConnLifetime + rand * MaxConnLifetimeJitter.
                Lib::Pgx => l + self.s.jitter * self.random(),
                Lib::SqlAlchemy | Lib::NodePostgres => l,
            };
        Conn {
            pid: self.next_pid,
            start: self.now,
            state: State::Idle,
            state_change: self.now,
            xact_start: None,
            expire_at,
            evicted: false,
            idle_timer: None,
            returned: self.now,
        }
    }

    fn total(&self) -> u32 {
        (self.idle.len() + self.busy.len()) as u32
    }

    fn cap(&self) -> u32 {
        self.s.max
    }

    /// Takes an idle connection the library would hand out, if any.
    fn take_idle(&mut self) -> Option<Conn> {
        loop {
            let c = match self.lib {
                // pool.py _get_ready_connection: popleft (the longest idle).
                // QueuePool: FIFO unless use_lifo.
                Lib::Psycopg | Lib::SqlAlchemy => self.idle.pop_front(),
                // puddle's idle stack, pg-pool's `_idle.pop()`, ConcurrentBag's
                // thread-local list: the most recently returned.
                Lib::Hikari | Lib::Pgx | Lib::NodePostgres => self.idle.pop_back(),
            }?;
            if self.lib == Lib::Psycopg {
                self.nconns_min = self.nconns_min.min(self.idle.len());
            }
            match self.lib {
                // _ConnectionRecord.get_connection: recycled at checkout.
                Lib::SqlAlchemy if self.now - c.start > self.s.lifetime => return Some(self.connect()),
                // Pool.Acquire (v5.10): an expired one is destroyed, the next tried.
                Lib::Pgx if self.now > c.expire_at => continue,
                _ => return Some(c),
            }
        }
    }

    fn acquire(&mut self) -> Option<Conn> {
        if let Some(c) = self.take_idle() {
            return Some(c);
        }
        (self.total() < self.cap()).then(|| self.connect())
    }

    fn begin(&mut self, mut c: Conn, hold: f64, leak: Option<State>) {
        c.state = State::Active;
        c.state_change = self.now;
        c.xact_start = Some(self.now);
        c.idle_timer = None;
        match leak {
            None => self.busy.push(Busy {
                conn: c,
                until: Some(self.now + hold),
            }),
            Some(state) => {
                // The statement ends at once; the connection is never returned.
                c.state = state;
                c.state_change = self.now + 0.05;
                if state == State::Idle {
                    c.xact_start = None;
                }
                self.busy.push(Busy { conn: c, until: None });
            }
        }
    }

    /// A request that holds a connection for `hold` seconds.
    pub fn request(&mut self, hold: f64) {
        match self.acquire() {
            Some(c) => self.begin(c, hold, None),
            None => self.waiting.push_back(hold),
        }
    }

    /// The seeds' first leak: a connection borrowed and never given back, left in
    /// `state` (`Idle` or `IdleInTransaction`).
    pub fn leak_checkout(&mut self, idle_in_transaction: bool) {
        let state = if idle_in_transaction {
            State::IdleInTransaction
        } else {
            State::Idle
        };
        if let Some(c) = self.acquire() {
            self.begin(c, 0.0, Some(state));
        }
    }

    /// A second, unconfigured pool: `n` connections that live forever, used in turn.
    pub fn open_second_pool(&mut self, n: usize) {
        for _ in 0..n {
            let c = self.connect();
            self.rogue.push(c);
        }
    }

    /// Uses the second pool's connections, one each call, in turn.
    pub fn use_second_pool(&mut self, k: usize) {
        let n = self.rogue.len();
        if n > 0 {
            let c = &mut self.rogue[k % n];
            c.state_change = self.now + 0.05;
        }
    }

    /// An engine created by a health check and never disposed: one more connection
    /// that ran one statement and stays idle in that engine's pool.
    pub fn undisposed_engine(&mut self) {
        let mut c = self.connect();
        c.state_change = self.now + 0.05;
        self.rogue.push(c);
    }

    fn release(&mut self, mut c: Conn) {
        c.state = State::Idle;
        c.state_change = self.now;
        c.xact_start = None;
        c.returned = self.now;
        let close = match self.lib {
            // pool.py _return_connection: closed when past its expiry, and replaced.
            Lib::Psycopg => c.expire_at <= self.now,
            Lib::SqlAlchemy => false,
            Lib::Hikari => c.evicted,
            // conn.go Release: an expired one is destroyed.
            Lib::Pgx => self.now > c.expire_at,
            // pg-pool _release: `_expired` clients are removed.
            Lib::NodePostgres => self.now >= c.expire_at,
        };
        if close {
            if self.lib == Lib::Psycopg {
                let fresh = self.connect();
                self.give(fresh);
            }
            return;
        }
        if self.lib == Lib::NodePostgres && self.total() + 1 > self.s.min {
            c.idle_timer = Some(self.now + self.s.max_idle);
        }
        if self.lib == Lib::SqlAlchemy && self.waiting.is_empty() && self.idle.len() as u32 >= self.s.min {
            // QueuePool._do_return_conn: the queue (pool_size) is full, so it is closed.
            return;
        }
        self.give(c);
    }

    /// A connection goes to a waiting request first, else back to the pool.
    fn give(&mut self, c: Conn) {
        match self.waiting.pop_front() {
            Some(hold) => self.begin(c, hold, None),
            None => self.idle.push_back(c),
        }
    }

    fn tick_period(&self) -> f64 {
        match self.lib {
            // ShrinkPool every max_idle.
            Lib::Psycopg => self.s.max_idle,
            // HikariPool.housekeepingPeriodMs.
            Lib::Hikari => 30.0,
            Lib::Pgx => self.s.health_check_period,
            Lib::SqlAlchemy | Lib::NodePostgres => f64::INFINITY,
        }
    }

    /// The library's periodic task.
    fn tick(&mut self) {
        match self.lib {
            Lib::Psycopg => {
                // pool.py _shrink_pool.
                let nconns_min = self.nconns_min;
                self.nconns_min = self.idle.len();
                if self.total() > self.s.min && nconns_min > 0 && !self.idle.is_empty() {
                    self.idle.pop_front();
                    self.nconns_min = self.nconns_min.saturating_sub(1);
                }
            }
            Lib::Hikari => {
                // HouseKeeper.run: idle beyond minimumIdle past idleTimeout are closed.
                if self.s.min < self.s.max {
                    let mut removable = self.idle.len().saturating_sub(self.s.min as usize);
                    let (now, max_idle) = (self.now, self.s.max_idle);
                    self.idle.retain(|c| {
                        let close = removable > 0 && now - c.returned > max_idle;
                        removable -= usize::from(close);
                        !close
                    });
                }
                self.fill(self.s.min);
            }
            Lib::Pgx => loop {
                // checkHealth: checkMinConns, then checkConnsHealth, again while it
                // destroyed any (500 ms apart, well within a grace).
                self.fill(self.s.min);
                let before = self.total();
                let mut total = before;
                let (now, min, max_idle) = (self.now, self.s.min, self.s.max_idle);
                self.idle.retain(|c| {
                    let close = (now > c.expire_at && total >= min) || (now - c.returned > max_idle && total > min);
                    total -= u32::from(close);
                    !close
                });
                if self.total() == before {
                    break;
                }
            },
            Lib::SqlAlchemy | Lib::NodePostgres => {}
        }
    }

    fn fill(&mut self, min: u32) {
        while self.total() < min {
            let c = self.connect();
            self.idle.push_back(c);
        }
    }

    /// Timers of single connections: HikariCP's MaxLifetimeTask, pg-pool's lifetime
    /// and idle timeouts.
    fn timers(&mut self) {
        let now = self.now;
        match self.lib {
            Lib::Hikari => {
                let before = self.total();
                self.idle.retain(|c| now < c.expire_at);
                for b in &mut self.busy {
                    b.conn.evicted |= now >= b.conn.expire_at;
                }
                if self.total() < before {
                    self.fill(self.s.min);
                }
            }
            Lib::NodePostgres => {
                self.idle.retain(|c| now < c.expire_at);
                let min = self.s.min as usize;
                let mut total = self.idle.len() + self.busy.len();
                self.idle.retain(|c| {
                    let close = c.idle_timer.is_some_and(|t| now >= t) && total > min;
                    total -= usize::from(close);
                    !close
                });
            }
            Lib::Psycopg | Lib::SqlAlchemy | Lib::Pgx => {}
        }
    }

    /// Advances the simulated clock to `t`.
    pub fn run_until(&mut self, t: f64) {
        while self.now + STEP <= t + 1e-9 {
            self.now += STEP;
            let now = self.now;
            let (done, busy): (Vec<Busy>, Vec<Busy>) =
                self.busy.drain(..).partition(|b| b.until.is_some_and(|u| u <= now));
            self.busy = busy;
            for b in done {
                self.release(b.conn);
            }
            self.timers();
            if now >= self.next_tick {
                self.next_tick += self.tick_period();
                self.tick();
            }
        }
    }

    pub fn now(&self) -> f64 {
        self.now
    }

    /// What `pg_stat_activity` shows of this pod's connections now, with the clock's
    /// zero at `epoch`.
    pub fn backends(&self, epoch: Timestamp) -> Vec<Backend> {
        let at = |t: f64| epoch + SignedDuration::from_millis((t * 1000.0).round() as i64);
        self.idle
            .iter()
            .chain(self.busy.iter().map(|b| &b.conn))
            .chain(&self.rogue)
            .map(|c| Backend {
                pid: c.pid,
                application_name: "pod-1".into(),
                backend_start: Some(at(c.start)),
                state: Some(
                    match c.state {
                        State::Idle => "idle",
                        State::Active => "active",
                        State::IdleInTransaction => "idle in transaction",
                    }
                    .into(),
                ),
                state_change: Some(at(c.state_change.min(self.now))),
                xact_start: c.xact_start.map(at),
                ..Backend::default()
            })
            .collect()
    }

    /// The clock, as the database's `now()`.
    pub fn at(&self, epoch: Timestamp) -> Timestamp {
        epoch + SignedDuration::from_millis((self.now * 1000.0).round() as i64)
    }
}
