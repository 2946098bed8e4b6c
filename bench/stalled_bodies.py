#!/usr/bin/env python3
"""Slow clients: N connections that send a POST's headers and then stall (or trickle) mid-body,
while probes measure /healthz and reads. The figures of bench/README.md "Slow request bodies".

    python3 bench/stalled_bodies.py                          # 64 stalled admin bodies, 15 s
    python3 bench/stalled_bodies.py --mode trickle --auth none --stalled 16
    python3 bench/stalled_bodies.py --server-env REQUEST_BODY_TIMEOUT=3

It starts the service as bench.py does (``python serve.py``, FLASK_CONFIG=production, PostgreSQL at
--pg, the 100 starter codes, database --dbname dropped at the end), opens the stalled connections
(``POST /api/v1.0/pxcodes/``, ``Content-Length: 60000``, a token or no credentials, 11 bytes of
body; then nothing, or one byte a second), and for --duration seconds runs probe clients (one
keep-alive connection each, 5 s timeout) on ``/healthz``, a cached read (the item ``039``) and a
read through Flask (the list with a new query string each time: never replayed from the cache).
It prints the probes' latency percentiles and what each stalled connection got back, and when.

Stdlib only, traffic to 127.0.0.1 only, only the server it started is stopped.
"""

import argparse
import base64
import http.client
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Postgres, Service, data_file, ensure_venv  # noqa: E402

BODY_LENGTH = 60000
PROBE_TIMEOUT = 5.0


def stalled_request(token):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {BODY_LENGTH}\r\n\r\n").encode() + b'{"pxcode": '


class StalledClient(threading.Thread):
    """One connection: headers, a few body bytes, then silence (or a byte a second)."""

    def __init__(self, port, token, trickle, stop):
        super().__init__(daemon=True)
        self.port, self.token, self.trickle, self.stop = port, token, trickle, stop
        self.status, self.answered_after, self.closed_after = None, None, None

    def run(self):
        started = time.monotonic()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.status = "connect failed"
            return
        with sock:
            sock.sendall(stalled_request(self.token))
            sock.settimeout(1.0)
            answer = b""
            while not self.stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    chunk = None
                except OSError:
                    chunk = b""
                if chunk == b"":
                    self.closed_after = time.monotonic() - started
                    break
                if chunk:
                    answer += chunk
                    if self.status is None and b" " in answer:
                        self.status = int(answer.split(b" ", 2)[1])
                        self.answered_after = time.monotonic() - started
                if self.trickle:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        pass


class Probe(threading.Thread):
    """GET ``path()`` over one keep-alive connection until stopped; record (latency, status)."""

    def __init__(self, name, port, path, token, stop):
        super().__init__(daemon=True)
        self.name, self.port, self.path, self.token, self.stop = name, port, path, token, stop
        self.records = []

    def run(self):
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
            started = time.monotonic()
            try:
                conn.request("GET", self.path(), headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = None
            self.records.append((time.monotonic() - started, status))
            time.sleep(0.02)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def measure(args, service, token):
    stop = threading.Event()
    stalled = [StalledClient(args.port, None if args.auth == "none" else token, args.mode == "trickle", stop)
               for _ in range(args.stalled)]
    for client in stalled:
        client.start()
    time.sleep(1.0)  # every stalled connection is in
    counter = iter(range(10**9))
    probes = [
        Probe("healthz", args.port, lambda: "/healthz", token, stop),
        Probe("cached read", args.port, lambda: "/api/v1.0/pxcodes/039", token, stop),
        # A new query string each time: never replayed, always authenticated and read by Flask.
        Probe("flask read", args.port, lambda: f"/api/v1.0/pxcodes/?per_page=5&code=0{next(counter)}",
              token, stop),
    ]
    for probe in probes:
        probe.start()
    time.sleep(args.duration)
    stop.set()
    for thread in probes + stalled:
        thread.join(timeout=PROBE_TIMEOUT + 2)
    lines = [f"# {args.stalled} stalled connections ({args.mode}, auth {args.auth}), {args.duration:.0f} s of probes;"
             f" server: {service.describe()}"]
    for probe in probes:
        latencies = [latency for latency, _ in probe.records]
        statuses = {}
        for _, status in probe.records:
            statuses[status] = statuses.get(status, 0) + 1
        lines.append(f"{probe.name:12} n={len(latencies):5} p50={percentile(latencies, .5) * 1000:7.1f}ms"
                     f" p99={percentile(latencies, .99) * 1000:7.1f}ms max={max(latencies or [0]) * 1000:7.1f}ms"
                     f" statuses={statuses}")
    answers = {}
    for client in stalled:
        answers.setdefault(client.status, []).append(client.answered_after)
    for status, times in sorted(answers.items(), key=str):
        shown = [t for t in times if t is not None]
        when = f" after {min(shown):.1f}-{max(shown):.1f} s" if shown else ""
        lines.append(f"stalled: {len(times)} answered {status}{when}")
    closed = [c.closed_after for c in stalled if c.closed_after is not None]
    lines.append(f"stalled: {len(closed)} closed by the server"
                 + (f" after {min(closed):.1f}-{max(closed):.1f} s" if closed else ""))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=64)
    parser.add_argument("--mode", choices=("stall", "trickle"), default="stall")
    parser.add_argument("--auth", choices=("admin", "none"), default="admin")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "18300")))
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "127.0.0.1:5432"))
    parser.add_argument("--dbname", default="starter_bench")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("BENCH_WORKDIR", "/tmp/starter-bench")))
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("BENCH_VENV", "/tmp/starter-bench-venv")))
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    host, _, pg_port = args.pg.partition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("stalled_bodies: only a PostgreSQL on this machine (127.0.0.1) is used")
    args.workdir.mkdir(parents=True, exist_ok=True)
    ensure_venv(args.venv)
    python = str(args.venv / "bin" / "python")
    pg = Postgres(host, int(pg_port or 5432), "postgres", args.dbname)
    password = secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLASK_", "GRANIAN_", "SERVER_", "WEB_CONCURRENCY", "PORT", "REQUEST_BODY"))}
    env.update(FLASK_CONFIG="production", SECRET_KEY=secrets.token_urlsafe(32), DATABASE_URL=pg.url,
               PYTHONDONTWRITEBYTECODE="1", RATELIMIT_PER_USER="1000000 per second",
               RATELIMIT_PER_ADDRESS="1000000 per second")
    env.pop("LOG_DIR", None)
    env.update(item.split("=", 1) for item in args.server_env)
    service = Service(python, "granian", env, args.port, args.workdir)
    pg.create()
    try:
        service.manage("createdb", timeout=120)
        service.manage("adduser", "--admin", "--", "bench", password, timeout=60)
        service.import_file(data_file(100, args.workdir, python))
        service.start("stalled")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
            basic = base64.b64encode(f"bench:{password}".encode()).decode()
            conn.request("GET", "/auth/request-token", headers={"Authorization": f"Basic {basic}"})
            token = json.loads(conn.getresponse().read())["token"]
            conn.close()
            print(measure(args, service, token), flush=True)
        finally:
            service.stop()
    finally:
        pg.drop()


if __name__ == "__main__":
    main()
