"""SQLAlchemy 2 on psycopg 3: create_engine takes what poolwarden's SQLAlchemy preset
writes (pool_size, max_overflow, pool_recycle in seconds; SQLAlchemy has no idle
setting); libpq reads PGAPPNAME. A variable that is unset leaves SQLAlchemy's default."""

import os
import threading

import sqlalchemy
from sqlalchemy import create_engine, text

import harness


def sqlalchemy_url(url):
    """DATABASE_URL (postgres:// or postgresql://) for SQLAlchemy's psycopg 3 dialect."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise SystemExit("DATABASE_URL must be a postgres:// URL")
    return "postgresql+psycopg://" + rest


URL = sqlalchemy_url(os.environ["DATABASE_URL"])
settings = {
    key: value
    for key, value in {
        "pool_size": harness.env_int("DB_POOL_SIZE"),
        "max_overflow": harness.env_int("DB_POOL_MAX_OVERFLOW"),
        "pool_recycle": harness.env_int("DB_POOL_RECYCLE"),
    }.items()
    if value is not None
}
engine = create_engine(URL, **settings)
# Asked once: /pool must not check a connection out, or polling it would be traffic
# that recycles the pool's connections.
with engine.connect() as conn:
    APP_NAME = conn.execute(text("SHOW application_name")).scalar()

mode = harness.leak_mode()
held = []
extra = []
lock = threading.Lock()
leak_error = ""


def query(sql):
    with engine.connect() as conn:
        conn.execute(text(sql))
    with lock:
        second = extra[0] if mode == "second-pool" and extra else None
    if second is not None:
        with second.connect() as conn:
            conn.execute(text(sql))


def set_error(e):
    global leak_error
    leak_error = e


def start_leak():
    limit = harness.env_int("LIBAPP_LEAK_LIMIT", 3)
    if mode in ("idle", "idle-in-transaction"):
        for _ in range(limit):
            conn = engine.connect()
            conn.execute(text("SELECT count(*) FROM pg_class /* route='/odds/<id>' */"))
            if mode == "idle":
                conn.commit()  # SQLAlchemy autobegins; `idle` ends the transaction
            held.append(conn)
    elif mode == "second-pool":
        second = create_engine(URL)  # the seeds' unconfigured Flask-SQLAlchemy engine: 5 + 10
        with lock:
            extra.append(second)
    elif mode == "engine-per-health-check":

        def check():
            e = create_engine(URL)
            with e.connect() as conn:
                conn.execute(text("SELECT 1"))
            with lock:
                extra.append(e)  # never disposed

        harness.every(harness.env_int("LIBAPP_HEALTH_CHECK_SECONDS", 5), limit, check, set_error)


def report():
    p = engine.pool
    with lock:
        extra_open = sum(e.pool.checkedin() + e.pool.checkedout() for e in extra)
        pools = len(extra)
    return {
        "library": "SQLAlchemy",
        "driver": f"SQLAlchemy {sqlalchemy.__version__}",
        "settings": {
            "pool_class": type(p).__name__,
            "pool_size": p.size(),
            "max_overflow": p._max_overflow,
            "recycle": p._recycle,
        },
        "application_name": APP_NAME,
        "open": p.checkedin() + p.checkedout(),
        "idle": p.checkedin(),
        "checked_out": p.checkedout(),
        "leak": {
            "mode": mode,
            "leaked": len(held),
            "pools": pools,
            "pool_connections": extra_open,
            "error": leak_error,
        },
        "traffic": traffic.report(),
    }


traffic = harness.Traffic(query)
traffic.start()


def _leak():
    try:
        start_leak()
    except Exception as e:
        set_error(repr(e))


threading.Thread(target=_leak, daemon=True).start()
harness.serve(report)
