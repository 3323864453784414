"""psycopg_pool 3 (psycopg 3, libpq): the pool takes what poolwarden's PsycopgPool
preset writes, in the units psycopg_pool takes (seconds); libpq itself reads PGAPPNAME.
A variable that is unset leaves psycopg_pool's own default."""

import os
import threading

from psycopg_pool import ConnectionPool

import harness

URL = os.environ["DATABASE_URL"]
settings = {
    key: value
    for key, value in {
        "min_size": harness.env_int("DB_POOL_MIN_SIZE"),
        "max_size": harness.env_int("DB_POOL_MAX_SIZE"),
        "max_idle": harness.env_int("DB_POOL_MAX_IDLE"),
        "max_lifetime": harness.env_int("DB_POOL_MAX_LIFETIME"),
    }.items()
    if value is not None
}
pool = ConnectionPool(URL, open=True, **settings)
pool.wait(timeout=30)
# Asked once: /pool must not borrow a connection, or polling it would be traffic that
# recycles the pool's connections.
with pool.connection() as conn:
    APP_NAME = conn.execute("SHOW application_name").fetchone()[0]

mode = harness.leak_mode()
held = []  # connections borrowed and never given back
extra = []  # pools nobody configured
lock = threading.Lock()
leak_error = ""


def query(sql):
    with pool.connection() as conn:
        conn.execute(sql)
    with lock:
        second = extra[0] if mode == "second-pool" and extra else None
    if second is not None:
        with second.connection() as conn:
            conn.execute(sql)


def set_error(e):
    global leak_error
    leak_error = e


def start_leak():
    limit = harness.env_int("LIBAPP_LEAK_LIMIT", 3)
    if mode in ("idle", "idle-in-transaction"):
        for _ in range(limit):
            conn = pool.getconn()
            conn.execute("SELECT count(*) FROM pg_class /* route='/odds/<id>' */")
            if mode == "idle":
                conn.commit()  # psycopg opens a transaction; `idle` ends it
            held.append(conn)
    elif mode == "second-pool":
        second = ConnectionPool(URL, open=True)  # psycopg_pool's defaults
        second.wait(timeout=30)
        with lock:
            extra.append(second)
    elif mode == "engine-per-health-check":

        def check():
            p = ConnectionPool(URL, open=True)
            with p.connection() as conn:
                conn.execute("SELECT 1")
            with lock:
                extra.append(p)  # never closed

        harness.every(harness.env_int("LIBAPP_HEALTH_CHECK_SECONDS", 5), limit, check, set_error)


def report():
    stats = pool.get_stats()
    with lock:
        extra_open = sum(p.get_stats().get("pool_size", 0) for p in extra)
        pools = len(extra)
    return {
        "library": "PsycopgPool",
        "driver": f"psycopg_pool {__import__('psycopg_pool').__version__}",
        "settings": {
            "min_size": pool.min_size,
            "max_size": pool.max_size,
            "max_idle": pool.max_idle,
            "max_lifetime": pool.max_lifetime,
        },
        "application_name": APP_NAME,
        "open": stats.get("pool_size"),
        "idle": stats.get("pool_available"),
        "checked_out": stats.get("pool_size", 0) - stats.get("pool_available", 0),
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
