"""What every library's app shares: the HTTP endpoint, the built-in traffic and the
settings of both (see tests/libraries/README.md). The pool itself, and how the app
leaks, belong to each library's app.

Env: PORT, POD_IP (listen address), LIBAPP_TRAFFIC ("burst=S,trickle=S,quiet=S",
seconds; empty: no traffic), LIBAPP_BURST_WORKERS (default 12, above any max of 10),
LIBAPP_LEAK, LIBAPP_LEAK_LIMIT (default 3), LIBAPP_HEALTH_CHECK_SECONDS (default 5).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEAK_MODES = ("", "idle", "idle-in-transaction", "second-pool", "engine-per-health-check")


def env_int(name, default=None):
    """An integer from the environment, or `default` when unset; a bad value stops the app."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        sys.exit(f"{name}={raw!r} is not an integer")


def leak_mode():
    mode = os.environ.get("LIBAPP_LEAK", "").strip()
    if mode not in LEAK_MODES:
        sys.exit(f"LIBAPP_LEAK={mode!r}: one of {LEAK_MODES}")
    return mode


class Traffic:
    """Cycles of burst (workers issuing statements back to back), trickle (one
    statement every 500 ms) and quiet (nothing). `query(sql)` runs one statement."""

    def __init__(self, query):
        self.query = query
        self.phases = {"burst": 0, "trickle": 0, "quiet": 0}
        for part in filter(None, os.environ.get("LIBAPP_TRAFFIC", "").split(",")):
            key, _, value = part.partition("=")
            if key.strip() not in self.phases:
                sys.exit(f"LIBAPP_TRAFFIC: unknown phase {key!r}")
            self.phases[key.strip()] = int(value)
        self.workers = env_int("LIBAPP_BURST_WORKERS", 12)
        self.phase = "off"
        self.cycles = 0
        self.statements = 0
        self.errors = 0
        self.last_error = ""
        self.lock = threading.Lock()

    def start(self):
        if sum(self.phases.values()):
            threading.Thread(target=self.loop, daemon=True).start()

    def one(self, sql):
        try:
            self.query(sql)
            with self.lock:
                self.statements += 1
        except Exception as e:  # counted and shown, the traffic goes on
            with self.lock:
                self.errors += 1
                self.last_error = repr(e)

    def loop(self):
        while True:
            self.phase = "burst"
            end = time.monotonic() + self.phases["burst"]

            def worker():
                while time.monotonic() < end:
                    self.one("SELECT pg_sleep(0.05)")

            threads = [threading.Thread(target=worker) for _ in range(self.workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.phase = "trickle"
            end = time.monotonic() + self.phases["trickle"]
            while time.monotonic() < end:
                self.one("SELECT 1")
                time.sleep(0.5)
            self.phase = "quiet"
            time.sleep(self.phases["quiet"])
            self.cycles += 1

    def report(self):
        with self.lock:
            return {
                "phase": self.phase,
                "cycles": self.cycles,
                "statements": self.statements,
                "errors": self.errors,
                "last_error": self.last_error,
            }


def every(seconds, limit, fn, on_error):
    """Runs fn() `limit` times, `seconds` apart, in the background (the leaking health check)."""

    def run():
        for _ in range(limit):
            try:
                fn()
            except Exception as e:
                on_error(repr(e))
            time.sleep(seconds)

    threading.Thread(target=run, daemon=True).start()


def serve(report):
    """Serves /healthz and /pool (report() as JSON) on POD_IP:PORT, forever."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/healthz":
                code, body = 200, {"ok": True}
            elif self.path == "/pool":
                try:
                    code, body = 200, report()
                except Exception as e:
                    code, body = 503, {"error": repr(e)}
            else:
                code, body = 404, {"error": "not found"}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    address = (os.environ.get("POD_IP", "127.0.0.1"), env_int("PORT", 8080))
    server = ThreadingHTTPServer(address, Handler)
    print(f"listening on {address[0]}:{address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()
