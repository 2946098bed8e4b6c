#!/usr/bin/env python3
"""starter-api benchmark: the service as production runs it, at 100 / 78,638 / 1,000,000 codes.

Run through bench/run.sh (it installs wrk and the peers' tools when missing). For each size:
load the codes with ``manage.py import-pxcodes`` (timed, against ``psql \\copy`` of the same
file into an equivalent table), start the server as the Docker image does (``--server granian``:
``python serve.py``, settings from the environment; ``--server gunicorn``: the former production
server, bench/gunicorn.conf.py), and run wrk (through the peers' load.sh / load304.sh) on the list
page, the last page, an item, a 304 revalidation, a word search and a prefix search. With
``--ceiling`` the same server then replays the service's recorded answers from a trivial WSGI
callable (bench/ceiling_app.py): the server's own limit for the same bytes. The peers of
../shared/bench-peers run in the same sitting, and every figure is printed as a ratio to
nginx-static and flask-gunicorn.

Stdlib only. All traffic goes to 127.0.0.1; only processes this script started are stopped
(by PID); every wait is bounded in time. See bench/README.md.
"""

import argparse
import base64
import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
API_DIR = REPO / "starter-api"
DEFAULT_SIZES = "100,78638,1000000"
DEFAULT_PEERS = "nginx-static,flask-gunicorn,fastapi-uvicorn"
RATIO_PEERS = ("nginx-static", "flask-gunicorn")
# Which peer endpoint each of ours is compared with (search results are pages too).
PEER_ENDPOINT = {"list": "list", "deep": "list", "item": "item", "304": "l304", "q": "list", "code": "list",
                 "prefix": "list", "broad": "list", "fuzzy": "list"}
ENDPOINTS = ("list", "deep", "item", "304", "q", "code", "prefix", "broad", "fuzzy")
# Many different searches, each URL rarely repeated (bench/search.lua): typed prefixes, typos.
SEARCH_ENDPOINTS = ("prefix", "broad", "fuzzy")
SEARCH_QUERIES = 20000
SERVERS = ("granian", "gunicorn")
DEFAULT_SERVER = "granian"  # what the Docker image runs (starter-api/Dockerfile: python serve.py)
WORD_QUERY = "joint replacement"


def log(*args):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def run(cmd, timeout, env=None, cwd=None, check=True, capture=True):
    """Run a command with a hard time limit; return CompletedProcess."""
    try:
        result = subprocess.run(
            cmd, env=env, cwd=cwd, timeout=timeout, text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"bench: timed out after {timeout}s: {' '.join(map(str, cmd))}")
    if check and result.returncode != 0:
        detail = (result.stderr or "") + (result.stdout or "")
        raise SystemExit(f"bench: failed ({result.returncode}): {' '.join(map(str, cmd))}\n{detail[-2000:]}")
    return result


# --- data files ---------------------------------------------------------------------------


def starter_rows():
    """The 100 starter codes, from data/starter_pxcodes.sql (the seed's own file)."""
    sql = (API_DIR / "data" / "starter_pxcodes.sql").read_text(encoding="utf-8")
    rows = [
        (a.replace("''", "'"), b.replace("''", "'"))
        for a, b in re.findall(r"\(\s*'((?:[^']|'')*)'\s*,\s*'((?:[^']|'')*)'\s*\)", sql)
    ]
    if len(rows) != 100:
        raise SystemExit(f"bench: expected 100 rows in starter_pxcodes.sql, found {len(rows)}")
    return rows


def data_file(size, workdir, python):
    """Return the TSV for ``size`` rows (made once, deterministic)."""
    if size == 100:
        path = workdir / "pxcodes-100.tsv"
        path.write_text("".join(f"{c}\t{t}\n" for c, t in starter_rows()), encoding="utf-8")
        return path
    if size == 78638:
        path = workdir / "icd10pcs-78638.tsv"
        if not path.exists():
            run([python, BENCH_DIR / "icd10pcs.py", path], timeout=300)
        return path
    path = workdir / f"pxcodes-{size}.tsv"
    if not path.exists():
        run([python, BENCH_DIR / "gen_pxcodes.py", "-n", str(size), path], timeout=600)
    return path


def search_queries(path, kind, count, seed=20261202):
    """``count`` searches as people type them, from the titles of the TSV at ``path``.

    ``prefix``: the starts (4-6 letters) of the two words of one title that the fewest titles
    use, in their order ("cardi valv"): the words that tell a code from the others. ``broad``:
    the starts of two words of one title picked at random ("right appr"): searches that match
    tens of thousands of codes. ``fuzzy``: as ``prefix``, but the second word whole with two
    neighbouring letters swapped ("hip replacmeent").
    """
    import random
    from collections import Counter

    rng = random.Random(f"{seed}-{kind}")
    titles = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 97 == 0:  # a spread sample, without reading a million lines into memory
                titles.append(re.findall(r"[A-Za-z]+", line.split("\t", 1)[1].lower()))
    uses = Counter(w for title in titles for w in set(title))
    queries = []
    while len(queries) < count:
        words = list(dict.fromkeys(w for w in rng.choice(titles) if len(w) >= 4))
        if kind == "fuzzy":
            words = [w for w in words if len(w) >= 7] + [w for w in words if len(w) < 7]
        if len(words) < 2:
            continue
        if kind == "broad":
            picked = sorted(rng.sample(range(len(words)), 2))
        else:
            picked = sorted(sorted(range(len(words)), key=lambda i: uses[words[i]])[:2])
        first, second = (words[i] for i in picked)
        head = first[: rng.randint(4, 6)]
        if kind != "fuzzy":
            queries.append(f"{head} {second[: rng.randint(4, 6)]}")
            continue
        if len(second) < 7:
            first, second = second, first
            head = first[: rng.randint(4, 6)]
        if len(second) < 7:
            continue
        i = rng.randint(2, len(second) - 3)
        queries.append(f"{head} {second[:i]}{second[i + 1]}{second[i]}{second[i + 2:]}")
    return queries


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def middle_code(path):
    with open(path, encoding="utf-8") as f:
        codes = sorted(line.split("\t", 1)[0] for line in f if line.strip())
    return codes[len(codes) // 2]


# --- PostgreSQL ---------------------------------------------------------------------------


class Postgres:
    def __init__(self, host, port, user, dbname):
        self.host, self.port, self.user, self.dbname = host, port, user, dbname
        self.url = f"postgresql+psycopg2://{user}@{host}:{port}/{dbname}"

    def psql(self, *args, db=None, timeout=120):
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
               "-U", self.user, "-d", db or self.dbname]
        for a in args:
            cmd += ["-c", a]
        return run(cmd, timeout=timeout)

    def value(self, sql, db=None, timeout=120):
        """The one value ``sql`` selects, as text."""
        cmd = ["psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
               "-U", self.user, "-d", db or self.dbname, "-c", sql]
        return run(cmd, timeout=timeout).stdout.strip()

    def create(self):
        self.drop()
        self.psql(f'CREATE DATABASE "{self.dbname}"', db="postgres")

    def drop(self):
        self.psql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)', db="postgres")

    def copy_seconds(self, path):
        """Wall time of ``psql \\copy`` of ``path`` into an empty copy of starter_pxcodes."""
        self.psql("DROP TABLE IF EXISTS bench_copy",
                  "CREATE TABLE bench_copy (LIKE starter_pxcodes INCLUDING ALL)")
        started = time.perf_counter()
        self.psql(f"\\copy bench_copy (pxcode, procedure) FROM '{path}'", timeout=900)
        elapsed = time.perf_counter() - started
        self.psql("DROP TABLE bench_copy")
        return elapsed


# --- the service ---------------------------------------------------------------------------

class Service:
    def __init__(self, python, server, env, port, workdir):
        self.python, self.server, self.env, self.port, self.workdir = python, server, env, port, workdir
        self.proc = None
        self.base = f"http://127.0.0.1:{port}"

    def command(self, app="wsgi:app"):
        """The server's command line and environment, as the image runs it (cwd: starter-api/)."""
        if self.server == "granian":
            # The image: CMD ["python", "serve.py"]; serve.py reads PORT, SERVER_HOST, WEB_CONCURRENCY, ...
            env = dict(self.env, PORT=str(self.port), SERVER_HOST="127.0.0.1")
            return [self.python, "serve.py", *([] if app == "wsgi:app" else [app])], env
        # The former production server: gunicorn with its config (now bench/gunicorn.conf.py), and our
        # own control socket (the conf's default path is shared with any other gunicorn here).
        env = dict(self.env, GUNICORN_BIND=f"127.0.0.1:{self.port}",
                   GUNICORN_CONTROL_SOCKET=str(self.workdir / "gunicorn.ctl"))
        return [str(Path(self.python).with_name("gunicorn")), "-c", str(BENCH_DIR / "gunicorn.conf.py"), app], env

    def describe(self):
        """One line for the report: the command and its settings."""
        if self.server == "granian":
            cmd, env = self.command()
            settings = run([self.python, "serve.py", "--print"], timeout=30, env=env, cwd=API_DIR).stdout.strip()
            return f"granian: python starter-api/serve.py ({settings})"
        return "gunicorn: gunicorn -c bench/gunicorn.conf.py wsgi:app (the former production server)"

    def manage(self, *args, timeout=300):
        return run([self.python, "manage.py", *args], timeout=timeout, env=self.env, cwd=API_DIR)

    def import_file(self, path, *flags, timeout=900):
        """Run the importer; return (wall seconds, its summary line)."""
        started = time.perf_counter()
        result = run([self.python, "manage.py", "import-pxcodes", str(path), *flags], timeout=timeout, env=self.env, cwd=API_DIR)
        elapsed = time.perf_counter() - started
        line = next((l for l in result.stdout.splitlines() if l.startswith("Imported")), result.stdout.strip())
        return elapsed, line

    def start(self, tag, app="wsgi:app", extra_env=None):
        if port_in_use(self.port):
            raise SystemExit(f"bench: port {self.port} is already in use")
        logfile = open(self.workdir / f"{self.server}-{tag}.log", "w")
        command, env = self.command(app)
        env.update(extra_env or {})
        # Its own session: the process group is ours alone, PGID == PID.
        self.proc = subprocess.Popen(
            command, cwd=API_DIR, env=env,
            stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        probe = "/readyz" if app == "wsgi:app" else "/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.server} exited ({self.proc.returncode}); see {logfile.name}")
            try:
                with urllib.request.urlopen(self.base + probe, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"bench: {self.server} not ready after 60s; see {logfile.name}")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        pid = self.proc.pid
        os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log(f"{self.server} {pid} did not stop in 30s: SIGKILL to its process group")
            os.killpg(pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


TICK = os.sysconf("SC_CLK_TCK")


class CpuMeter(threading.Thread):
    """CPU seconds spent by the service's processes (its process group) and the database's backends.

    /proc is read every ``interval`` s while it runs: a backend that ends meanwhile (a pool's
    overflow connection) still counts, up to its last reading.
    """

    def __init__(self, service_pgid, user, dbname, interval=0.2):
        super().__init__(daemon=True)
        self._pgid, self._interval = service_pgid, interval
        self._backend = re.compile(rf"^postgres: (\S+: )?{re.escape(user)} {re.escape(dbname)} ")
        self._first, self._last = {}, {}
        self._done = threading.Event()

    def _read(self, first=False):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                kind = "service" if int(fields[2]) == self._pgid else None
                if kind is None and self._backend.match((entry / "cmdline").read_bytes().decode(errors="replace")):
                    kind = "postgres"
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if kind:
                seconds = (int(fields[11]) + int(fields[12])) / TICK
                key = (kind, int(entry.name))
                if first:
                    self._first[key] = seconds
                self._last[key] = seconds

    def run(self):
        self._read(first=True)
        while not self._done.wait(self._interval):
            self._read()

    def used(self):
        """Stop; return (service, postgres) CPU seconds since the start (a process started meanwhile from 0)."""
        self._done.set()
        self.join()
        self._read()
        totals = {"service": 0.0, "postgres": 0.0}
        for (kind, pid), seconds in self._last.items():
            totals[kind] += seconds - self._first.get((kind, pid), 0.0)
        return totals["service"], totals["postgres"]


def port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def fetch(url, auth, headers=None, timeout=30):
    """(status, headers with lower-case names, body)."""
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + auth, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# --- load ------------------------------------------------------------------------------------


def parse_load_line(line):
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    bad = fields.get("non2xx", fields.get("non304", ""))
    return {"rps": float(fields["rps"]), "p50": float(fields["p50_ms"]), "p99": float(fields["p99_ms"]),
            "bad": int(bad or 0), "sockerr": int(fields.get("sockerr", 0))}


def duration_seconds(text):
    """wrk's duration syntax (10, 10s, 2m, 1h) in seconds."""
    m = re.fullmatch(r"(\d+)([smh]?)", text.strip())
    if not m:
        raise SystemExit(f"bench: bad duration {text!r} (e.g. 10s, 1m)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def max_latency_ms(wrk_output):
    """The Max column of wrk's ``Latency`` line, in ms (None if absent)."""
    m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", wrk_output, re.M)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else None


def wrk(peers_dir, script, url, auth_plain, duration, extra=(), env=None):
    """One run of the peers' load.sh / load304.sh; its figures, with ``max`` (ms) from wrk's own output."""
    with tempfile.NamedTemporaryFile("r", prefix="wrk-", suffix=".log") as full:
        env = dict(os.environ, BENCH_AUTH=auth_plain, WRK_DURATION=duration, WRK_LOG=full.name, **(env or {}))
        seconds = duration_seconds(duration)
        result = run([peers_dir / script, url, *extra], timeout=seconds + 60, env=env, check=False)
        output = full.read()
    line = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
    if result.returncode != 0 or not line:
        return {"error": (result.stderr or result.stdout).strip().splitlines()[-1:] or ["failed"]}
    return dict(parse_load_line(line[0]), max=max_latency_ms(output))


def measure_size(size, args, service, pg, python, auth_plain, auth_b64, results, imports):
    path = data_file(size, args.workdir, python)
    rows = count_lines(path)
    log(f"size {size}: {path} ({rows} rows)")
    service.manage("createdb", timeout=120)
    # "--": a random password may begin with "-".
    service.manage("adduser", "--", "bench", auth_plain.split(":", 1)[1], timeout=60)

    # Import throughput: the importer into an empty table vs psql \copy into an equivalent one.
    repeats = 3 if rows <= 200_000 else 1
    times, lines = [], []
    for i in range(repeats):
        if i:
            pg.psql("TRUNCATE starter_pxcodes")
        seconds, line = service.import_file(path)
        times.append(seconds)
        lines.append(line)
    in_process = [float(m.group(1)) for m in (re.search(r"in ([\d.]+) s", l) for l in lines) if m]
    copy_times = [pg.copy_seconds(path) for _ in range(repeats)]
    reimport_seconds, reimport_line = service.import_file(path, "--replace")
    imports.append({
        "size": size, "rows": rows, "import_s": min(times), "import_inproc_s": min(in_process or [0]),
        "copy_s": min(copy_times), "reimport_s": reimport_seconds, "summary": lines[0],
        "reimport_summary": reimport_line,
    })
    log(f"  import {min(times):.2f}s (in-process {min(in_process or [0]):.2f}s), "
        f"psql \\copy {min(copy_times):.2f}s, re-import --replace {reimport_seconds:.2f}s")
    log(f"  {lines[0]}")
    pg.psql("VACUUM ANALYZE starter_pxcodes", timeout=600)

    service.start(size)
    recorded = {}
    try:
        api = service.base + "/api/v1.0/pxcodes/"
        status, _, body = fetch(api, auth_b64)
        if status != 200:
            raise SystemExit(f"bench: GET {api} answered {status}: {body[:200]!r}")
        meta = json.loads(body)["meta"]
        last = urllib.parse.urlsplit(meta["last"])
        item = "039" if size == 100 else middle_code(path)
        prefix = "0" if size == 100 else "0SR"
        urls = {
            "list": api,
            "deep": service.base + last.path + ("?" + last.query if last.query else ""),
            "item": api + item,
            "304": api,
            "q": api + "?" + urllib.parse.urlencode({"q": WORD_QUERY}),
            "code": api + "?" + urllib.parse.urlencode({"code": prefix}),
        }
        for kind in SEARCH_ENDPOINTS:
            paths = args.workdir / f"search-{kind}-{size}.txt"
            paths.write_text("".join(
                "/api/v1.0/pxcodes/?" + urllib.parse.urlencode({"q": q}) + "\n"
                for q in search_queries(path, kind, SEARCH_QUERIES)))
            urls[kind] = paths
        load_endpoints(args, service, size, "flask", urls, auth_plain, auth_b64, results, recorded)
    finally:
        service.stop()
    if args.ceiling:
        # The same server and settings, a trivial WSGI callable replaying the answers just recorded.
        answers = args.workdir / f"ceiling-{size}.json"
        answers.write_text(json.dumps(recorded))
        service.start(f"{size}-ceiling", app="ceiling_app:app", extra_env={
            "CEILING_RESPONSES": str(answers),
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH_DIR), service.env.get("PYTHONPATH")) if p)})
        try:
            load_endpoints(args, service, size, "trivial", urls, auth_plain, auth_b64, results)
        finally:
            service.stop()


def load_endpoints(args, service, size, app, urls, auth_plain, auth_b64, results, recorded=None):
    """wrk on every endpoint; ``recorded`` (if given) collects each answer for the ceiling app."""
    # Warm-up (workers, connections, caches), bounded.
    wrk(args.peers, "load.sh", urls["list"], auth_plain, args.warmup)
    for name in ENDPOINTS:
        if name in SEARCH_ENDPOINTS:
            if app == "flask":  # the ceiling app knows one answer per URL, not thousands
                load_searches(args, service, size, name, urls[name], auth_plain, auth_b64, results)
            continue
        url = urls[name]
        status, headers, body = fetch(url, auth_b64)
        if recorded is not None and name != "304":
            recorded[url[len(service.base):]] = {
                "body": body.decode("latin-1"), "content_type": headers.get("content-type", "application/json"),
                "etag": headers.get("etag", "")}
        script = "load304.sh" if name == "304" else "load.sh"
        figures = wrk(args.peers, script, url, auth_plain, args.duration)
        figures.update(size=size, endpoint=name, url=url[len(service.base):], status=status,
                       bytes=0 if name == "304" else len(body), app=app, server=service.server)
        if status >= 400:
            figures.setdefault("note", f"HTTP {status}: {body[:120].decode(errors='replace')}")
        results.append(figures)
        shown = figures.get("error") or (
            f"rps={figures['rps']:.0f} p50={figures['p50']}ms p99={figures['p99']}ms bad={figures['bad']}")
        log(f"  {app:7} {name:5} {figures['url']}: {shown}")
        time.sleep(args.cooldown)


def load_searches(args, service, size, name, paths_file, auth_plain, auth_b64, results):
    """wrk through bench/search.lua: every request a different search from ``paths_file``."""
    paths = paths_file.read_text().split()
    sample = [fetch(service.base + p, auth_b64) for p in paths[:50]]
    fuzzy = sum(json.loads(body)["meta"].get("fuzzy", False) for status, _, body in sample if status == 200)
    found = sum(json.loads(body)["meta"]["total"] > 0 for status, _, body in sample if status == 200)
    auth = base64.b64encode(auth_plain.encode()).decode()
    command = ["wrk", f"-t{os.environ.get('WRK_THREADS', '2')}", f"-c{os.environ.get('WRK_CONNS', '32')}",
               f"-d{args.duration}", "--timeout", "5s", "--latency", "-H", f"Authorization: Basic {auth}",
               "-s", str(BENCH_DIR / "search.lua"), service.base]
    result = run(command, timeout=duration_seconds(args.duration) + 60,
                 env=dict(os.environ, SEARCH_PATHS=str(paths_file)), check=False)
    line = next((l[len("BENCH "):] for l in result.stdout.splitlines() if l.startswith("BENCH ")), None)
    figures = parse_load_line(line) if line else {"error": (result.stderr or result.stdout).strip()[-200:]}
    figures.update(size=size, endpoint=name, url=f"{len(paths)} searches, e.g. {paths[0]}", status=sample[0][0],
                   bytes=len(sample[0][2]), app="flask", server=service.server,
                   note=f"of the first 50: {found} found codes, {fuzzy} through typo correction")
    results.append(figures)
    shown = figures.get("error") or (
        f"rps={figures['rps']:.0f} p50={figures['p50']}ms p99={figures['p99']}ms bad={figures['bad']}")
    log(f"  flask   {name:6} {figures['url']}: {shown} ({figures['note']})")
    time.sleep(args.cooldown)


def run_peer_bench(args):
    """Run the peers' own harness; return {peer: {endpoint: figures}}."""
    out = args.workdir / "peers"
    out.mkdir(exist_ok=True)
    before = set(out.glob("run-*.tsv"))
    env = dict(os.environ, BENCH_RESULTS_DIR=str(out), WRK_DURATION=args.duration)
    names = [p for p in args.peer_names.split(",") if p]
    log(f"peers: {args.peers}/run_peers.sh {' '.join(names)}")
    run([args.peers / "run_peers.sh", *names], timeout=200 * len(names) + 120, env=env, capture=True, check=False)
    new = sorted(set(out.glob("run-*.tsv")) - before)
    if not new:
        log("peers: no result file")
        return {}
    peers = {}
    with open(new[-1]) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["rps"] in ("", "FAILED"):
                continue
            peers.setdefault(row["peer"], {})[row["endpoint"]] = {
                "rps": float(row["rps"]), "p50": float(row["p50_ms"]), "p99": float(row["p99_ms"])}
    return peers


# --- report ----------------------------------------------------------------------------------


def ratio(value, ref):
    return f"{value / ref:.4f}" if ref else "-"


def report(args, results, imports, peers, header):
    lines = [header]
    fmt = "%-8s %-7s %-5s %-42s %9s %8s %9s %6s %7s %9s %9s"
    lines.append(fmt % ("size", "app", "ep", "path", "rps", "p50_ms", "p99_ms", "bad", "bytes", "x_nginx", "x_flaskg"))
    for r in results:
        path = r["url"] if len(r["url"]) <= 42 else r["url"][:39] + "..."
        if "error" in r:
            lines.append(fmt % (r["size"], r["app"], r["endpoint"], path, "ERROR", "", "", "", "", "", "")
                         + "  " + " ".join(r["error"])[:80])
            continue
        refs = [peers.get(p, {}).get(PEER_ENDPOINT[r["endpoint"]], {}).get("rps") for p in RATIO_PEERS]
        note = f"  ({r['note']})" if r.get("note") else ""
        lines.append(fmt % (r["size"], r["app"], r["endpoint"], path, f"{r['rps']:.0f}", f"{r['p50']:.2f}",
                            f"{r['p99']:.2f}", r["bad"], r["bytes"], ratio(r["rps"], refs[0]),
                            ratio(r["rps"], refs[1])) + note)
    lines.append("# app: flask = the service; trivial = the same server replaying the service's answers (--ceiling)")
    lines.append("# bad = responses not 2xx (not 304 for ep 304); x_nginx / x_flaskg = rps / the peer's rps on the")
    lines.append("#   matching peer endpoint (list, deep, q, code -> list page; item -> item; 304 -> list 304)")
    if peers:
        lines.append("")
        lines.append("%-24s %-6s %9s %8s %9s" % ("peer", "ep", "rps", "p50_ms", "p99_ms"))
        for peer, eps in peers.items():
            for ep, f in eps.items():
                lines.append("%-24s %-6s %9.0f %8.2f %9.2f" % (peer, ep, f["rps"], f["p50"], f["p99"]))
    # p50 at the largest size vs 100 rows (target: within 2x).
    by = {(r["size"], r["endpoint"]): r for r in results if "error" not in r and r["app"] == "flask"}
    sizes = sorted({r["size"] for r in results})
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        parts = []
        for ep in ENDPOINTS:
            a, b = by.get((small, ep)), by.get((large, ep))
            if a and b and a["p50"]:
                parts.append(f"{ep} {b['p50'] / a['p50']:.2f}")
        lines.append("")
        lines.append(f"p50 at {large} rows / p50 at {small} rows: " + ", ".join(parts))
    lines.append("")
    ifmt = "%-8s %8s %10s %12s %10s %10s %10s %12s"
    lines.append(ifmt % ("import", "rows", "import_s", "inproc_s", "copy_s", "x_copy", "x_copy_in", "reimport_s"))
    for i in imports:
        lines.append(ifmt % (i["size"], i["rows"], f"{i['import_s']:.2f}", f"{i['import_inproc_s']:.2f}",
                             f"{i['copy_s']:.2f}", f"{i['copy_s'] / i['import_s']:.2f}",
                             f"{i['copy_s'] / i['import_inproc_s']:.2f}" if i["import_inproc_s"] else "-",
                             f"{i['reimport_s']:.2f}"))
    lines.append("# import_s = wall time of `manage.py import-pxcodes FILE` into an empty table (process start")
    lines.append("#   included); inproc_s = the time it reports itself (read, validate, write); copy_s = psql \\copy")
    lines.append("#   of the same file into CREATE TABLE (LIKE starter_pxcodes INCLUDING ALL); x_copy = copy_s /")
    lines.append("#   import_s (1.0 = as fast as psql); reimport_s = the same file again with --replace (all unchanged)")
    for i in imports:
        rate = i["rows"] / i["import_s"]
        lines.append(f"#   {i['size']}: {rate:,.0f} rows/s end to end, {i['rows'] / i['copy_s']:,.0f} rows/s psql \\copy;"
                     f" re-import: {i['reimport_summary']}")
    lines.extend(targets(results, imports, peers))
    return "\n".join(lines)


def targets(results, imports, peers):
    """The issue's targets, each with its measured figure and met / NOT met (the service, not the ceiling)."""
    by = {(r["size"], r["endpoint"]): r for r in results if "error" not in r and r["app"] == "flask"}
    sizes = sorted({r["size"] for r in results})
    out = ["", "targets (issue 5):"]

    def verdict(ok):
        return "met" if ok else "NOT met"

    nginx = peers.get("nginx-static", {})
    for size in sizes:
        for ep in ("list", "item", "304"):
            r, ref = by.get((size, ep)), nginx.get(PEER_ENDPOINT[ep], {}).get("rps")
            if r and ref:
                x = r["rps"] / ref
                out.append(f"  {size} {ep}: {x:.4f} of nginx (>= 0.10): {verdict(x >= 0.10)}")
        item, n304 = by.get((size, "item")), by.get((size, "304"))
        if item and n304:
            out.append(f"  {size} 304 {n304['rps']:.0f} rps vs item {item['rps']:.0f} rps (304 >= item):"
                       f" {verdict(n304['rps'] >= item['rps'])}")
    if len(sizes) > 1 and sizes[-1] >= 1_000_000:
        small, large = sizes[0], sizes[-1]
        for ep in ENDPOINTS:
            a, b = by.get((small, ep)), by.get((large, ep))
            if a and b and a["p50"]:
                x = b["p50"] / a["p50"]
                out.append(f"  p50 {ep} at {large} / at {small}: {x:.2f} (<= 2): {verdict(x <= 2)}")
    if sizes and sizes[-1] >= 1_000_000:
        for ep in ("q", "code", *SEARCH_ENDPOINTS):
            r = by.get((sizes[-1], ep))
            if r:
                out.append(f"  {ep} p99 at {sizes[-1]}: {r['p99']:.1f} ms (< 50 ms): {verdict(r['p99'] < 50)}")
    for i in imports:
        if i["size"] == 78638:
            x = i["copy_s"] / i["import_s"]
            out.append(f"  import 78,638: {x:.2f} of psql \\copy speed end to end, "
                       f"{i['copy_s'] / i['import_inproc_s']:.2f} in-process (>= 0.5): {verdict(x >= 0.5)}")
    return out


RAISED_BUDGET = "1000000 per second"


def server_env(pg, server_env=(), production_limits=False):
    """The server's environment: the image's defaults, not this shell's settings (unless ``server_env``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLASK_", "GUNICORN_", "GRANIAN_", "SERVER_", "WEB_CONCURRENCY", "PORT",
                                "RATELIMIT_"))}
    env.update(FLASK_CONFIG="production", SECRET_KEY=secrets.token_urlsafe(32), DATABASE_URL=pg.url,
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("LOG_DIR", None)
    if not production_limits:
        # The limiter stays on (its cost is measured) with budgets the load cannot reach, in memory
        # (shared out per worker) and in Redis alike.
        env.update(RATELIMIT_PER_USER=RAISED_BUDGET, RATELIMIT_PER_ADDRESS=RAISED_BUDGET)
    env.update(item.split("=", 1) for item in server_env)
    return env


def ensure_venv(path):
    """A venv with the service's pinned requirements and bench/requirements.txt, made once."""
    reqs = [API_DIR / "requirements.txt", BENCH_DIR / "requirements.txt"]
    stamp = "".join(r.read_text() for r in reqs)
    marker = path / ".bench-requirements"
    if (path / "bin" / "python").exists() and marker.exists() and marker.read_text() == stamp:
        return
    if path.exists() and any(path.iterdir()) and not marker.exists():
        # Only a venv this function made is replaced: another one (a developer's) is left alone.
        raise SystemExit(f"bench: {path} exists and was not made by the bench (no {marker.name}); "
                         "give --venv a new folder")
    log(f"creating {path} (pip install -r starter-api/requirements.txt -r bench/requirements.txt)")
    if path.exists():
        shutil.rmtree(path)
    run([sys.executable, "-m", "venv", path], timeout=120)
    cmd = [path / "bin" / "pip", "install", "-q", "--disable-pip-version-check"]
    for r in reqs:
        cmd += ["-r", r]
    run(cmd, timeout=600)
    marker.write_text(stamp)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", DEFAULT_SIZES))
    parser.add_argument("--peers", type=Path,
                        default=Path(os.environ.get("BENCH_PEERS_DIR", REPO / ".." / "shared" / "bench-peers")))
    parser.add_argument("--peer-names", default=os.environ.get("BENCH_PEER_NAMES", DEFAULT_PEERS),
                        help="comma-separated peers to run ('' for none)")
    parser.add_argument("--duration", default=os.environ.get("WRK_DURATION", "10s"))
    parser.add_argument("--warmup", default="3s")
    parser.add_argument("--cooldown", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "18300")))
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("BENCH_WORKDIR", "/tmp/starter-bench")))
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("BENCH_VENV", "/tmp/starter-bench-venv")))
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "127.0.0.1:5432"), help="HOST:PORT (trust auth)")
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--dbname", default="starter_bench")
    parser.add_argument("--production-limits", action="store_true",
                        help="keep the service's default rate limits (they cap the load at ~500 rps per user)")
    parser.add_argument("--keep-db", action="store_true", help="leave the bench database behind")
    parser.add_argument("--server", choices=SERVERS, default=os.environ.get("BENCH_SERVER", DEFAULT_SERVER),
                        help="granian: starter-api/serve.py, as the Docker image runs it (default); "
                             "gunicorn: the former production server (bench/gunicorn.conf.py)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="run the server with this setting instead of the image's, e.g. WEB_CONCURRENCY=3, "
                             "SERVER_THREADS=8, SERVER_ACCESS_LOG=off (granian) or GUNICORN_WORKER_CLASS=sync "
                             "(gunicorn); repeatable")
    parser.add_argument("--ceiling", action="store_true",
                        help="after the service, replay its answers from a trivial WSGI callable under the "
                             "same server and settings (bench/ceiling_app.py): the server's own limit")
    args = parser.parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: the server this script started is stopped, the database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    host, _, port = args.pg.partition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench: only a PostgreSQL on this machine (127.0.0.1) is used")
    args.peers = args.peers.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for tool in ("wrk", "psql", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is not installed (bench/run.sh installs it)")
    if not (args.peers / "load.sh").exists():
        raise SystemExit(f"bench: no peers harness at {args.peers} (set --peers or BENCH_PEERS_DIR)")

    ensure_venv(args.venv)
    python = str(args.venv / "bin" / "python")
    pg = Postgres(host, int(port or 5432), args.pg_user, args.dbname)
    password = secrets.token_urlsafe(12)
    auth_plain = f"bench:{password}"
    auth_b64 = base64.b64encode(auth_plain.encode()).decode()
    env = server_env(pg, args.server_env, args.production_limits)
    service = Service(python, args.server, env, args.port, args.workdir)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    rev = run(["git", "-C", REPO, "log", "-1", "--format=%h %s"], timeout=10, check=False).stdout.strip()
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], timeout=10,
                check=False).stdout.strip()
    header = (f"# starter-api bench {stamp}: {os.cpu_count()} cores, loadavg {open('/proc/loadavg').read().split()[0]},"
              f" commit {rev}{' + uncommitted changes' if dirty else ''}\n"
              f"# {service.describe()}, FLASK_CONFIG=production"
              f"{''.join(' ' + item for item in args.server_env)}; PostgreSQL"
              f" {args.pg}/{args.dbname}; wrk via {args.peers}/load.sh: {os.environ.get('WRK_THREADS', '2')}"
              f" threads, {os.environ.get('WRK_CONNS', '32')} conns, {args.duration}; q={WORD_QUERY!r},"
              f" code=0 (100 rows) / 0SR (ICD-10-PCS-like sets)\n"
              f"# rate limits: {'the service defaults' if args.production_limits else 'on, budgets raised to 1e6/s'}"
              f" (memory storage, per worker)")
    results, imports = [], []
    pg.create()
    try:
        for size in sizes:
            measure_size(size, args, service, pg, python, auth_plain, auth_b64, results, imports)
    finally:
        service.stop()
        if not args.keep_db:
            pg.drop()
    peers = run_peer_bench(args) if args.peer_names else {}
    table = report(args, results, imports, peers, header)
    print(table)
    out = args.workdir / f"results-{stamp}.txt"
    out.write_text(table + "\n")
    with open(args.workdir / f"results-{stamp}.json", "w") as f:
        json.dump({"results": results, "imports": imports, "peers": peers}, f, indent=1)
    print(f"# results: {out}")


if __name__ == "__main__":
    main()
