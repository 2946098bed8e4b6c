#!/usr/bin/env python3
"""Hold N concurrent clients for T seconds on a mixed read/write workload; print the figures.

    starter-api/.venv/bin/python bench/load_mixed.py                  # 64 clients, 60 s, own server
    starter-api/.venv/bin/python bench/load_mixed.py -c 16 -d 10      # a quick run
    starter-api/.venv/bin/python bench/load_mixed.py --url http://127.0.0.1:5000 \\
        --admin admin:admin --reader admin:admin                      # against a running server

Without ``--url`` it starts its own service: a fresh database ``starter_load_<random>`` on the
PostgreSQL server at ``--pg`` (127.0.0.1:5432), ``manage.py createdb``, ``adduser --admin``,
reader users, ``loaddata``, then the production server as the Docker image runs it (``python
serve.py``: granian; ``--server gunicorn``: the former server, ``bench/gunicorn.conf.py``) on a free
port (production profile). At the end the server is stopped by its PID and the database dropped.

The workload (weights with ``--mix``): item reads and list pages, a share of them revalidated
with ``If-None-Match`` from the client's ETag cache (304), searches (``q``, ``code``, ``sort``,
when the server has them), and admin writes: creates, PUT/PATCH with ``If-Match``, deletes with
``If-Match``. Clients authenticate with tokens (``/auth/request-token`` once each), as a real
client would; basic auth costs a password hash per request.

Prints requests, requests/s, answers by status, connection errors, p50/p90/p99/max latency
overall and per operation. Exit status 1 when there was any 5xx or connection error (the target
is zero of both). Standard library only (runs with the service's virtualenv).
"""

import argparse
import base64
import collections
import http.client
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CpuMeter, Postgres, Service  # noqa: E402  (one way of starting the service, for every bench script)

API = "/api/v1.0/pxcodes/"
WORDS = ["PROCEDURES", "DISORDERS", "W/O", "MCC", "CC", "SYSTEM", "HEART", "KIDNEY", "SPINAL",
         "FUSION", "INFECTIONS", "TRANSPLANT", "MAJOR", "NERVOUS", "VALVE", "CARDIAC", "HIP"]
DEFAULT_MIX = "item=30,item_cached=12,list=15,list_cached=6,search=17,create=8,update=8,delete=4"
# Named mixes for issue 12 (bench/deployed.py): the default's reads alone, and the same reads with
# writes at 5 % of the operations picked (4.2 of 84.2; an update or delete also GETs its ETag first).
READ_OPS = ("item", "item_cached", "list", "list_cached", "search")
NAMED_MIXES = {
    "default": DEFAULT_MIX,
    "reads": "item=30,item_cached=12,list=15,list_cached=6,search=17",
    "writes5": "item=30,item_cached=12,list=15,list_cached=6,search=17,create=1.7,update=1.7,delete=0.8",
}


# ----------------------------------------------------------------------------- the server

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer:
    """A fresh database on the shared PostgreSQL and the service in front of it, started as the
    bench starts it (bench.py's ``Postgres`` and ``Service``: the image's ``python serve.py``)."""

    def __init__(self, args):
        self.args = args
        host, port = args.pg.split(":")
        self.pg = Postgres(host, int(port), "postgres", args.dbname or f"starter_load_{secrets.token_hex(4)}")
        self.tmp = Path(tempfile.mkdtemp(prefix="starter-load-"))
        self.admin = ("load-admin", secrets.token_urlsafe(12))
        self.readers = [(f"load-reader{i}", secrets.token_urlsafe(12)) for i in range(args.readers)]
        env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("SERVER_", "GRANIAN_", "GUNICORN_", "WEB_CONCURRENCY"))},
            "FLASK_CONFIG": "production",
            "SECRET_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": self.pg.url,
            "LOG_DIR": "",
            "LOG_LEVEL": "WARNING",
        }
        for item in args.env:
            key, _, value = item.partition("=")
            env[key] = value
        self.service = Service(sys.executable, args.server, env, args.port or free_port(), self.tmp)
        self.base = self.service.base

    def start(self):
        t0 = time.monotonic()
        self.pg.create()
        self.service.manage("createdb")
        # "--": a random password may begin with "-".
        self.service.manage("adduser", "--admin", "--", *self.admin)
        for reader in self.readers:
            self.service.manage("adduser", "--", *reader)
        self.service.manage("loaddata")
        self.service.start("load")
        print(f"server: {self.args.server} PID {self.service.proc.pid} on {self.base}, database"
              f" {self.pg.dbname} (ready in {time.monotonic() - t0:.1f}s), log {self._log_path()}")

    def stop(self):
        self.service.stop()
        try:
            self.pg.drop()
        except SystemExit as exc:  # report, never mask the figures
            print(f"warning: could not drop {self.pg.dbname}: {exc}")

    def _log_path(self):
        return self.tmp / f"{self.args.server}-load.log"

    def worker_failures(self):
        """Workers killed or died: gunicorn's WORKER TIMEOUT, granian's unexpected worker exit."""
        try:
            log = self._log_path().read_text(errors="replace")
            return log.count("WORKER TIMEOUT") + log.count("Unexpected exit from worker")
        except OSError:
            return 0


# ----------------------------------------------------------------------------- the clients

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = collections.defaultdict(list)  # op -> [seconds]
        self.status = collections.Counter()  # status -> n
        self.by_op = collections.defaultdict(collections.Counter)  # op -> status -> n
        self.conn_errors = collections.Counter()  # exception name -> n
        self.samples_5xx = []

    def add(self, op, status, seconds, body=b""):
        with self.lock:
            self.latency[op].append(seconds)
            self.status[status] += 1
            self.by_op[op][status] += 1
            if status >= 500 and len(self.samples_5xx) < 5:
                self.samples_5xx.append((op, status, body[:300]))

    def error(self, op, exc):
        with self.lock:
            self.conn_errors[type(exc).__name__] += 1
            self.by_op[op]["conn"] += 1


class Client(threading.Thread):
    """One keep-alive connection, its own ETag cache, a weighted random mix of operations."""

    def __init__(self, number, base, token, admin_token, mix, stats, stop, codes, created,
                 created_lock, seed):
        super().__init__(daemon=True)
        parsed = urllib.parse.urlsplit(base)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.number = number
        self.token, self.admin_token = token, admin_token
        self.ops, self.weights = zip(*mix.items())
        self.stats, self.stop = stats, stop
        self.codes, self.created, self.created_lock = codes, created, created_lock
        self.random = random.Random(seed)
        self.etags = {}  # path -> etag
        self.connection = None
        self.serial = 0

    def _connect(self):
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, op, method, path, body=None, headers=None, admin=False):
        headers = dict(headers or {})
        headers["Authorization"] = f"Bearer {self.admin_token if admin else self.token}"
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.connection is None:
                self._connect()
            started = time.perf_counter()
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.connection.close()
                self.connection = None
                # A keep-alive connection the server closed while idle is retried once, on a
                # fresh connection, like every HTTP client does; anything else is counted.
                if attempt == 1 and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                                     ConnectionResetError)) and method in ("GET", "HEAD"):
                    continue
                self.stats.error(op, exc)
                return None, None, None
            elapsed = time.perf_counter() - started
            self.stats.add(op, response.status, elapsed, data if response.status >= 500 else b"")
            if response.getheader("Connection", "").lower() == "close":
                self.connection.close()
                self.connection = None
            return response.status, response, data
        return None, None, None

    def pick_code(self):
        return self.random.choice(self.codes)

    def run(self):
        while not self.stop.is_set():
            op = self.random.choices(self.ops, self.weights)[0]
            getattr(self, "op_" + op)(op)

    # reads
    def _get(self, op, path, revalidate):
        headers = {}
        if revalidate and path in self.etags:
            headers["If-None-Match"] = self.etags[path]
        status, response, _ = self.request(op, "GET", path, headers=headers)
        if status == 200 and response.getheader("ETag"):
            self.etags[path] = response.getheader("ETag")

    def op_item(self, op):
        self._get(op, API + self.pick_code(), revalidate=False)

    def _cached_path(self, list_pages):
        """A path this client holds an ETag for (a revalidation), else None."""
        paths = [p for p in self.etags if p.startswith(API + "?page=" if list_pages else API)
                 and (list_pages or "?" not in p)]
        return self.random.choice(paths) if paths else None

    def op_item_cached(self, op):
        path = self._cached_path(False) if self.random.random() < 0.8 else None
        self._get(op, path or API + self.pick_code(), revalidate=True)

    def _list_path(self):
        per_page = self.random.choice([10, 20, 50, 100])
        pages = max(1, -(-len(self.codes) // per_page))
        return f"{API}?page={self.random.randint(1, pages)}&per_page={per_page}"

    def op_list(self, op):
        self._get(op, self._list_path(), revalidate=False)

    def op_list_cached(self, op):
        path = self._cached_path(True) if self.random.random() < 0.8 else None
        self._get(op, path or self._list_path(), revalidate=True)

    def op_search(self, op):
        kind = self.random.random()
        if kind < 0.5:
            query = {"q": self.random.choice(WORDS)}
        elif kind < 0.8:
            query = {"code": self.random.choice("0123456789")}
        else:
            query = {"sort": self.random.choice(["pxcode", "-pxcode", "procedure", "-procedure"])}
        query["per_page"] = self.random.choice([10, 50])
        self._get(op, API + "?" + urllib.parse.urlencode(query), revalidate=self.random.random() < 0.3)

    # writes (the admin token)
    def op_create(self, op):
        self.serial += 1
        code = f"L{self.number:02d}{self.serial:05d}"[:10]
        status, response, _ = self.request(
            op, "POST", API, body={"pxcode": code, "procedure": f"LOAD TEST {self.random.choice(WORDS)}"},
            admin=True)
        if status == 201:
            with self.created_lock:
                self.created.append(code)

    def _own_code(self):
        with self.created_lock:
            return self.random.choice(self.created) if self.created else None

    def _fetch_own(self, op):
        """GET one of the codes this run created, for its ETag; None (after a create) if there is none."""
        code = self._own_code()
        if code is None:
            self.op_create(op)
            return None
        status, response, _ = self.request(op + "_get", "GET", API + code, admin=True)
        return (code, response.getheader("ETag")) if status == 200 else None

    def op_update(self, op):
        fetched = self._fetch_own(op)
        if fetched is None:
            return
        code, etag = fetched
        method = self.random.choice(["PUT", "PATCH"])
        self.request(op, method, API + code, body={"procedure": f"UPDATED {self.random.choice(WORDS)}"},
                     headers={"If-Match": etag}, admin=True)

    def op_delete(self, op):
        fetched = self._fetch_own(op)
        if fetched is None:
            return
        code, etag = fetched
        status, _, _ = self.request(op, "DELETE", API + code, headers={"If-Match": etag}, admin=True)
        if status == 204:
            with self.created_lock:
                if code in self.created:
                    self.created.remove(code)


# ----------------------------------------------------------------------------- the run

def get_token(base, user, password):
    parsed = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=30)
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    connection.request("GET", "/auth/request-token", headers={"Authorization": f"Basic {raw}"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"cannot get a token for {user}: {response.status} {data[:200]!r}")
    return json.loads(data)["token"]


def server_codes(base, token):
    """The codes the server holds (the readers pick from them)."""
    parsed = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    codes, page = [], 1
    while True:
        connection.request("GET", f"{API}?per_page=100&page={page}", headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            break
        body = json.loads(data)
        codes += [item["pxcode"] for item in body["items"]]
        if not body["meta"]["next"]:
            break
        page += 1
    return codes


def check_writes(base, token, created):
    """Every code a client saw created (201) and not deleted (204) is stored; no other L-code is.

    Returns a one-line verdict and whether it holds: a write the server acknowledged and then
    lost, or one it refused and kept, shows up here.
    """
    parsed = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)
    stored, page = set(), 1
    while True:
        connection.request("GET", f"{API}?code=L&per_page=100&page={page}",
                           headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        body = json.loads(response.read())
        if response.status != 200:
            return f"write check: cannot list ({response.status})", False
        stored |= {item["pxcode"] for item in body["items"] if item["pxcode"].startswith("L")}
        if not body["meta"]["next"]:
            break
        page += 1
    expected = set(created)
    lost, extra = expected - stored, stored - expected
    ok = not lost and not extra
    return (f"write check: {len(expected)} codes created and not deleted, {len(stored)} stored"
            f"{'' if ok else f'; LOST {sorted(lost)[:5]} EXTRA {sorted(extra)[:5]}'}"), ok


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report(stats, elapsed, args, server, cpu):
    every = [x for v in stats.latency.values() for x in v]
    total = len(every)
    conn = sum(stats.conn_errors.values())
    n5xx = sum(n for s, n in stats.status.items() if s >= 500)
    lines = [
        f"clients {args.clients}, duration {elapsed:.1f}s",
        f"requests {total} ({total / elapsed:.0f}/s), connection errors {conn}"
        + (f" {dict(stats.conn_errors)}" if conn else "") + f", 5xx {n5xx}",
        "by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(stats.status.items())),
        f"latency ms: p50 {percentile(every, 50) * 1e3:.1f}  p90 {percentile(every, 90) * 1e3:.1f}"
        f"  p99 {percentile(every, 99) * 1e3:.1f}  max {max(every, default=0) * 1e3:.1f}",
        f"{'operation':<14}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses",
    ]
    for op in sorted(stats.by_op):
        values = stats.latency.get(op, [])
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(stats.by_op[op].items(), key=str))
        lines.append(f"{op:<14}{len(values):>9}{percentile(values, 50) * 1e3:>9.1f}"
                     f"{percentile(values, 99) * 1e3:>9.1f}  {statuses}")
    if server is not None:
        lines.append(f"{server.args.server} workers timed out or died: {server.worker_failures()}")
    for op, status, body in stats.samples_5xx:
        lines.append(f"5xx sample: {op} {status} {body!r}")
    ok = n5xx == 0 and conn == 0
    lines.append("TARGET MET: zero 5xx, zero connection errors" if ok else "TARGET MISSED")
    reads = [x for op in READ_OPS for x in stats.latency.get(op, [])]
    lines.append(f"reads ({', '.join(READ_OPS)}): {len(reads)} ({len(reads) / elapsed:.0f}/s),"
                 f" p99 {percentile(reads, 99) * 1e3:.1f} ms")
    lines.append(f"CPU, cores busy on average ({os.cpu_count()} here): "
                 + ", ".join(f"{who} {seconds / elapsed:.2f}" for who, seconds in cpu.items()))
    print("\n".join(lines))
    summary = {
        "cpu_cores": {who: seconds / elapsed for who, seconds in cpu.items()},
        "clients": args.clients, "duration": elapsed, "requests": total, "rps": total / elapsed,
        "status": {str(k): v for k, v in stats.status.items()}, "connection_errors": conn, "5xx": n5xx,
        "p50_ms": percentile(every, 50) * 1e3, "p99_ms": percentile(every, 99) * 1e3,
        "reads": len(reads), "reads_rps": len(reads) / elapsed, "reads_p99_ms": percentile(reads, 99) * 1e3,
        "ops": {op: {"requests": len(v), "p99_ms": percentile(v, 99) * 1e3} for op, v in stats.latency.items()},
    }
    return ok, summary


def parse_mix(text):
    text = NAMED_MIXES.get(text, text)
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if not hasattr(Client, "op_" + name.strip()):
            raise argparse.ArgumentTypeError(f"unknown operation {name!r}")
        mix[name.strip()] = float(weight)
    return mix


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--clients", type=int, default=64)
    parser.add_argument("-d", "--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX),
                        help=f"NAME=WEIGHT,... or one of {', '.join(NAMED_MIXES)} (default: {DEFAULT_MIX})")
    parser.add_argument("--url", help="an already running server (skip starting one)")
    parser.add_argument("--admin", default=None, help="USER:PASSWORD of an admin (with --url)")
    parser.add_argument("--reader", action="append", default=[], help="USER:PASSWORD of a reader (with --url)")
    parser.add_argument("--readers", type=int, default=4, help="reader users the own server gets")
    parser.add_argument("--pg", default="127.0.0.1:5432", help="PostgreSQL host:port for the own server")
    parser.add_argument("--dbname", help="the own server's database (default starter_load_<random>); dropped after")
    parser.add_argument("--port", type=int, help="the own server's port (default: a free one)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the own server (repeat)")
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian",
                        help="granian: python serve.py, as the image (default); gunicorn: bench/gunicorn.conf.py"
                             " (needs gunicorn in this venv: pip install -r bench/requirements.txt)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the summary figures to this file")
    args = parser.parse_args(argv)

    server = None
    try:
        if args.url:
            base = args.url.rstrip("/")
            if not args.admin:
                parser.error("--url needs --admin USER:PASSWORD")
            admin = tuple(args.admin.split(":", 1))
            readers = [tuple(r.split(":", 1)) for r in args.reader] or [admin]
        else:
            server = OwnServer(args)
            server.start()
            base, admin, readers = server.base, server.admin, server.readers or [server.admin]
        admin_token = get_token(base, *admin)
        reader_tokens = [get_token(base, *r) for r in readers]
        codes = server_codes(base, admin_token)
        if not codes:
            raise RuntimeError("the server holds no codes to read")
        stats, stop = Stats(), threading.Event()
        created, created_lock = [], threading.Lock()
        clients = [
            Client(i, base, reader_tokens[i % len(reader_tokens)], admin_token, args.mix, stats, stop,
                   codes, created, created_lock, seed=args.seed * 1000 + i)
            for i in range(args.clients)
        ]
        print(f"load: {args.clients} clients for {args.duration:.0f}s against {base} ...", flush=True)
        # Who spends the machine's cores: the service, the database, or this generator itself.
        meter = CpuMeter(server.service.proc.pid, "postgres", server.pg.dbname) if server else None
        if meter:
            meter.start()
        own_cpu = time.process_time()
        started = time.monotonic()
        for client in clients:
            client.start()
        try:
            time.sleep(args.duration)
        except KeyboardInterrupt:
            print("interrupted")
        stop.set()
        elapsed = time.monotonic() - started
        own_cpu = time.process_time() - own_cpu
        for client in clients:
            client.join(timeout=60)
        cpu = dict(zip(("service", "postgres"), meter.used())) if meter else {}
        cpu["load generator"] = own_cpu
        ok, summary = report(stats, elapsed, args, server, cpu)
        verdict, held = check_writes(base, admin_token, created)
        print(verdict)
        ok = ok and held
        if args.json:
            Path(args.json).write_text(json.dumps(dict(summary, write_check=verdict, write_check_ok=held), indent=2))
    finally:
        if server is not None:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
