#!/usr/bin/env python3
"""Healthy pools of the five libraries, configured with a policy's values, under the
built-in traffic; `poolwarden inspect` sampled every 2 s over the whole run; prints,
per library and measure, the most backends ever counted as overrunning.

    python3 tests/libraries/false_positives.py --poolwarden target/debug/poolwarden \
        [--min 2] [--jitter 20] [--grace 60] [--quiet 100] [--inspect-arg=--library] ...
    python3 tests/libraries/false_positives.py analyse TRACE [--min 2] [--grace 10 --grace 60]

Every pod here is healthy (no LIBAPP_LEAK), so every overrun counted is a false
positive. Apps listen on 127.0.0.1 ports from --port (8300); application names are
`pwfp-<library>-<pid>`, so runs do not mix. Raw pg_stat_activity samples of these
apps go to --trace (JSON lines), for findings.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# spec.pool.library of each app, for --inspect-arg's {preset}.
PRESET = {"psycopg_pool": "PsycopgPool", "sqlalchemy": "SQLAlchemy", "pgx": "Pgx",
          "springboot": "SpringBoot", "hikari": "HikariCP", "node": "NodePostgres"}


def install():
    out = subprocess.run([os.path.join(HERE, "install.sh")], check=True, capture_output=True, text=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def library_env(lib, minimum, maximum, idle, lifetime, jitter, app_name):
    """The env the contract's preset writes for `lib` (COORDINATION.md / docs/libraries.md)."""
    if lib == "psycopg_pool":
        return {"DB_POOL_MIN_SIZE": minimum, "DB_POOL_MAX_SIZE": maximum, "DB_POOL_MAX_IDLE": idle,
                "DB_POOL_MAX_LIFETIME": lifetime, "PGAPPNAME": app_name}
    if lib == "sqlalchemy":
        return {"DB_POOL_SIZE": minimum, "DB_POOL_MAX_OVERFLOW": maximum - minimum,
                "DB_POOL_RECYCLE": lifetime, "PGAPPNAME": app_name}
    if lib == "pgx":
        env = {"DB_POOL_MIN_CONNS": minimum, "DB_POOL_MAX_CONNS": maximum,
               "DB_POOL_MAX_CONN_IDLE_TIME": f"{idle}s", "DB_POOL_MAX_CONN_LIFETIME": f"{lifetime}s",
               "PGAPPNAME": app_name}
        if jitter:
            env["DB_POOL_MAX_CONN_LIFETIME_JITTER"] = f"{jitter}s"
        return env
    if lib == "springboot":
        return {"SPRING_DATASOURCE_HIKARI_MINIMUMIDLE": minimum, "SPRING_DATASOURCE_HIKARI_MAXIMUMPOOLSIZE": maximum,
                "SPRING_DATASOURCE_HIKARI_IDLETIMEOUT": idle * 1000,
                "SPRING_DATASOURCE_HIKARI_MAXLIFETIME": lifetime * 1000,
                "PGAPPNAME": app_name,
                "SPRING_APPLICATION_JSON": json.dumps(
                    {"spring.datasource.hikari.data-source-properties.ApplicationName": app_name})}
    if lib == "hikari":
        return {"DB_POOL_MIN_IDLE": minimum, "DB_POOL_MAX_SIZE": maximum, "DB_POOL_IDLE_TIMEOUT_MS": idle * 1000,
                "DB_POOL_MAX_LIFETIME_MS": lifetime * 1000, "PGAPPNAME": app_name}
    if lib == "node":
        return {"DB_POOL_MIN": minimum, "DB_POOL_MAX": maximum, "DB_POOL_IDLE_TIMEOUT_MILLIS": idle * 1000,
                "DB_POOL_MAX_LIFETIME_SECONDS": lifetime, "PGAPPNAME": app_name}
    raise ValueError(lib)


def command(lib, paths):
    return {
        "psycopg_pool": [paths["LIBAPP_PYTHON"], paths["LIBAPP_PSYCOPG_APP"]],
        "sqlalchemy": [paths["LIBAPP_PYTHON"], paths["LIBAPP_SQLALCHEMY_APP"]],
        "pgx": [paths["LIBAPP_PGX"]],
        "springboot": [paths["LIBAPP_JAVA"], "-XX:TieredStopAtLevel=1", "-Xss512k", "-jar", paths["LIBAPP_SPRINGBOOT_JAR"]],
        "hikari": [paths["LIBAPP_JAVA"], "-XX:TieredStopAtLevel=1", "-Xss512k",
                   "-Dloader.main=io.poolwarden.libapps.PlainHikari", "-cp", paths["LIBAPP_SPRINGBOOT_JAR"],
                   "org.springframework.boot.loader.launch.PropertiesLauncher"],
        "node": [paths["LIBAPP_NODE"], paths["LIBAPP_NODE_APP"]],
    }[lib]


def get(port, path):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.load(r)
    except Exception:
        return None


def analyse(path, lifetime, idle, minimum, graces):
    """From a --trace file: per app, the most backends main's controller would count
    (LifetimeOverrun: older than lifetime + grace; IdleOverrun: idle longer than
    idle + grace, beyond minSize) at each grace."""
    samples = [json.loads(line) for line in open(path)]
    apps = sorted({b["app"] for s in samples for b in (s["backends"] or [])})
    print(f"{len(samples)} samples from {path}; lifetime {lifetime}s idle {idle}s minSize {minimum}")
    print(f"{'app':<32}" + "".join(f"{'L+' + str(g):>8}{'I+' + str(g) + '-min':>10}" for g in graces))
    for app in apps:
        row = f"{app:<32}"
        for g in graces:
            worst_l = worst_i = 0
            for s in samples:
                mine = [b for b in (s["backends"] or []) if b["app"] == app]
                worst_l = max(worst_l, sum(b["age"] > lifetime + g for b in mine))
                idle_over = sum(b["state"] == "idle" and b["in_state"] > idle + g for b in mine)
                worst_i = max(worst_i, max(0, idle_over - minimum))
            row += f"{worst_l:>8}{worst_i:>10}"
        print(row)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "analyse":
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("trace")
        ap.add_argument("--lifetime", type=int, default=30)
        ap.add_argument("--idle", type=int, default=10)
        ap.add_argument("--min", type=int, default=2)
        ap.add_argument("--grace", type=int, action="append")
        a = ap.parse_args()
        analyse(a.trace, a.lifetime, a.idle, a.min, a.grace or [10, 60])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--poolwarden", required=True)
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--libraries", default="psycopg_pool,sqlalchemy,pgx,springboot,hikari,node")
    ap.add_argument("--min", type=int, default=2)
    ap.add_argument("--max", type=int, default=10)
    ap.add_argument("--idle", type=int, default=10)
    ap.add_argument("--lifetime", type=int, default=30)
    ap.add_argument("--jitter", type=int, default=0, help="pgx MaxConnLifetimeJitter, seconds")
    ap.add_argument("--grace", type=int, default=60)
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--trickle", type=int, default=20)
    ap.add_argument("--quiet", type=int, default=100)
    ap.add_argument("--port", type=int, default=8300)
    ap.add_argument("--inspect-arg", action="append", default=[],
                    help="extra argument for poolwarden inspect; {preset} is the app's library (e.g. --library={preset})")
    ap.add_argument("--trace", default=None)
    ap.add_argument("--inspect-grace", action="store_true",
                    help="pass the limits as they are and --grace to inspect (an inspect that knows grace)")
    args = ap.parse_args()

    paths = install()
    libs = args.libraries.split(",")
    procs, names, ports = {}, {}, {}
    logs = {}
    for i, lib in enumerate(libs):
        name = f"pwfp-{lib}-{os.getpid()}"
        port = args.port + i
        env = {k: str(v) for k, v in library_env(lib, args.min, args.max, args.idle, args.lifetime, args.jitter, name).items()}
        env.update({"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DATABASE_URL": args.database_url,
                    "POD_IP": "127.0.0.1", "PORT": str(port),
                    "LIBAPP_TRAFFIC": f"burst={args.burst},trickle={args.trickle},quiet={args.quiet}"})
        logs[lib] = open(f"/tmp/{name}.log", "w")
        procs[lib] = subprocess.Popen(command(lib, paths), env=env, stdout=logs[lib], stderr=subprocess.STDOUT)
        names[lib], ports[lib] = name, port
    try:
        reports = {}
        deadline = time.monotonic() + 180
        while len(reports) < len(libs) and time.monotonic() < deadline:
            for lib in libs:
                if lib not in reports and (r := get(ports[lib], "/pool")):
                    reports[lib] = r
            time.sleep(1)
        missing = [lib for lib in libs if lib not in reports]
        if missing:
            sys.exit(f"these apps never answered /pool: {missing} (logs in /tmp/pwfp-*-{os.getpid()}.log)")
        for lib in libs:
            print(f"{lib}: settings as reported: {json.dumps(reports[lib]['settings'])}", file=sys.stderr)
        worst = {lib: {"lifetime": 0, "idle": 0, "lifetime_samples": 0, "idle_samples": 0, "oldest": 0} for lib in libs}
        trace = open(args.trace, "w") if args.trace else None
        samples = 0
        # Until every app has finished one whole cycle (its quiet period included).
        while True:
            cycles = {lib: (get(ports[lib], "/pool") or {}).get("traffic", {}).get("cycles", 0) for lib in libs}
            if all(c >= 1 for c in cycles.values()):
                break
            for lib in libs:
                if procs[lib].poll() is not None:
                    sys.exit(f"{lib} exited: see /tmp/{names[lib]}.log")
            for lib in libs:
                extra = [a.replace("{preset}", PRESET[lib]) for a in args.inspect_arg]
                g = 0 if args.inspect_grace else args.grace
                cmd = [args.poolwarden, "inspect", "--database-url", args.database_url,
                       "--max-lifetime", f"{args.lifetime + g}s", "--max-idle", f"{args.idle + g}s",
                       "-o", "json", *extra]
                if args.inspect_grace:
                    cmd += ["--grace", f"{args.grace}s"]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{' '.join(cmd)}: {out.stderr}")
                rows = {r["group"]: r for r in json.loads(out.stdout)["rows"]}
                r = rows.get(names[lib])
                if r:
                    w = worst[lib]
                    w["lifetime"] = max(w["lifetime"], r["lifetimeOverrun"])
                    w["idle"] = max(w["idle"], r["idleOverrun"])
                    w["lifetime_samples"] += r["lifetimeOverrun"] > 0
                    w["idle_samples"] += r["idleOverrun"] > 0
                    w["oldest"] = max(w["oldest"], r["oldestSeconds"] or 0)
            if trace:
                q = ("select json_agg(json_build_object('app', application_name, 'pid', pid, 'state', state, "
                     "'age', extract(epoch from now() - backend_start)::int, "
                     "'in_state', extract(epoch from now() - state_change)::int, "
                     "'since_query', extract(epoch from now() - query_start)::int)) "
                     "from pg_stat_activity where application_name like 'pwfp-%-" + str(os.getpid()) + "'")
                raw = subprocess.run(["psql", args.database_url, "-Atc", q], capture_output=True, text=True).stdout.strip()
                trace.write(json.dumps({"t": round(time.time(), 1), "phases": cycles, "backends": json.loads(raw or "null")}) + "\n")
            samples += 1
            time.sleep(2)
        print(f"{samples} samples; lifetime {args.lifetime}s idle {args.idle}s min {args.min} max {args.max} "
              f"jitter {args.jitter}s grace {args.grace}s; traffic burst {args.burst}s trickle {args.trickle}s quiet {args.quiet}s")
        print(f"{'library':<14}{'max LifetimeOverrun':>21}{'(samples>0)':>13}{'max IdleOverrun':>17}{'(samples>0)':>13}{'oldest s':>10}")
        for lib in libs:
            w = worst[lib]
            print(f"{lib:<14}{w['lifetime']:>21}{w['lifetime_samples']:>13}{w['idle']:>17}{w['idle_samples']:>13}{w['oldest']:>10}")
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
