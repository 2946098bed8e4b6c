#!/usr/bin/env python3
"""Issue 12 in one sitting: the service as deployed (counters in Redis, a million rows, writes going on,
the production proxy), every figure against its target. Run as ``bench/run.sh --issue12``.

The five parts, each with bench.py's harness (its Postgres, Service, wrk and peers):
  counters  100 rows: list, item, 304 with rate-limit counters in memory and in Redis
  large     --rows (1,000,000): list, deep page, item, word and prefix search, 304; each endpoint on a
            freshly started server (cold), with basic credentials and again with a token (no password
            hash on a worker's first request), then all on one server with an admin write a second
  memory    after the large run: distinct requests to fill the caches, then VmRSS of each worker
  mixed     bench/load_mixed.py, 64 clients: its read-only mix, then the same reads with 5 % writes
  proxy     100 rows through proxy/nginx.conf (the hostnet includes) in front of the server, Redis counters
and nginx-static (../shared/bench-peers) for the ratios. Stdlib only; traffic to 127.0.0.1 only; only
processes started here are stopped, by PID. See bench/README.md, "Speed as deployed (issue 12)".
"""

import argparse
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (one harness: bench.py's)
    API_DIR, BENCH_DIR, RAISED_BUDGET, REPO, WORD_QUERY, Postgres, Service, count_lines, data_file, duration_seconds,
    ensure_venv, fetch, log, port_in_use, run, run_peer_bench, search_queries, server_env, wrk)

API = "/api/v1.0/pxcodes/"
LARGE_ENDPOINTS = ("list", "deep", "item", "q", "code", "304")
PEER_OF = {"list": "list", "item": "item", "304": "l304"}
EDIT_SUFFIX = " (BENCH EDIT)"  # what the writer appends to a title, and takes off again
WRITER = "bench-writer"
P99_TARGET_MS, MIXED_P99_TARGET_MS, NGINX_RATIO_TARGET, MIXED_RATIO_TARGET = 50, 100, 0.10, 0.5


# --- Redis (the counters' store): a few commands over RESP, no client library -----------------------

def redis_command(uri, *words, timeout=5):
    """Send one command to the database of ``uri`` (redis://host:port/db); return the reply's text."""
    parts = urllib.parse.urlsplit(uri)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("deployed: only a Redis on this machine (127.0.0.1) is used")
    db = (parts.path or "/0").strip("/") or "0"

    def encode(*args):
        return f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)

    with socket.create_connection((parts.hostname, parts.port or 6379), timeout=timeout) as s:
        s.sendall(encode("SELECT", db) + encode(*words))
        data = b""
        while data.count(b"\r\n") < 2:  # two one-line replies (SELECT's, then ours)
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    replies = data.decode().split("\r\n")
    if not replies[0].startswith("+") or replies[1][:1] == "-":
        raise SystemExit(f"deployed: redis {uri} {' '.join(words)}: {replies[:2]}")
    return replies[1][1:]


# --- the writer: one admin write a second -------------------------------------------------------

class Writer(threading.Thread):
    """An admin PATCH with If-Match each second, on a random code that no measured URL shows: append
    EDIT_SUFFIX to its title, the next second take it off again (the table ends as it began)."""

    def __init__(self, base, token, codes, seed=12):
        super().__init__(daemon=True)
        parts = urllib.parse.urlsplit(base)
        self.address = (parts.hostname, parts.port)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.codes, self.random = codes, random.Random(seed)
        self.stop = threading.Event()
        self.statuses, self.latencies = {}, []

    def _request(self, conn, method, path, body=None, etag=None):
        headers = dict(self.headers, **({"If-Match": etag} if etag else {}))
        started = time.perf_counter()
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if method != "GET":
            self.latencies.append(time.perf_counter() - started)
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        return response.status, response.getheader("ETag"), data

    def run(self):
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        tick = time.monotonic()
        while not self.stop.is_set():
            path = API + self.random.choice(self.codes)
            try:
                status, etag, data = self._request(conn, "GET", path)
                title = json.loads(data)["procedure"] if status == 200 else None
                tick += 1
                if title is None or self.stop.wait(max(0.0, tick - time.monotonic())):
                    continue
                status, etag, _ = self._request(conn, "PATCH", path, {"procedure": title + EDIT_SUFFIX}, etag)
                if status != 200:
                    continue
                # The restore runs even when stopping: the table must end as it began.
                tick += 1
                time.sleep(max(0.0, tick - time.monotonic()))
                self._request(conn, "PATCH", path, {"procedure": title}, etag)
            except (OSError, http.client.HTTPException, ValueError):
                self.statuses["error"] = self.statuses.get("error", 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(*self.address, timeout=30)
                tick = time.monotonic()

    def finish(self):
        self.stop.set()
        self.join(timeout=40)

    def summary(self):
        lat = sorted(self.latencies)
        p99 = f", p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms" if lat else ""
        return f"{len(lat)} PATCHes ({', '.join(f'{k}: {v}' for k, v in self.statuses.items()) or 'none'}{p99})"


class Sampler(threading.Thread):
    """Calls ``probe`` twice a second until stopped, appending what it returns to ``into``."""

    def __init__(self, probe, into):
        super().__init__(daemon=True)
        self.probe, self.into, self.stop = probe, into, threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            self.into.append(self.probe())


def token(base, user, password):
    status, _, body = fetch(base + "/auth/request-token", basic(user, password))
    if status != 200:
        raise SystemExit(f"deployed: no token for {user}: {status} {body[:200]!r}")
    return json.loads(body)["token"]


def basic(user, password):
    import base64
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the production proxy -----------------------------------------------------------------------

class Proxy:
    """nginx with proxy/nginx.conf itself (symlinked) and proxy/hostnet's two includes, their addresses
    replaced by ours: as stack/replicas.py runs it without Docker."""

    def __init__(self, workdir, port, upstream_port):
        self.dir = workdir / "proxy"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "nginx.conf").symlink_to(REPO / "proxy" / "nginx.conf")
        hostnet = REPO / "proxy" / "hostnet"
        (self.dir / "listen.conf").write_text(
            re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", (hostnet / "listen.conf").read_text()))
        (self.dir / "upstream-servers.conf").write_text(
            re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{upstream_port}", (hostnet / "upstream-servers.conf").read_text()))
        self.base = f"http://127.0.0.1:{port}"
        self.command = ["nginx", "-p", f"{self.dir}/", "-c", str(self.dir / "nginx.conf"), "-e", "stderr"]
        self.proc = None

    def start(self):
        run([*self.command, "-t"], timeout=30)
        out = open(self.dir / "access.log", "wb")  # the conf logs requests to stdout, as in Compose
        self.proc = subprocess.Popen([*self.command, "-g", "daemon off;"], stdout=out,
                                     stderr=open(self.dir / "error.log", "wb"), start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.proc.poll() is None and fetch(self.base + "/proxy-health", "", timeout=2)[0] == 200:
                    return
            except OSError:  # not listening yet (URLError is an OSError)
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"deployed: the proxy does not answer; see {self.dir}/error.log")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None


# --- measuring ------------------------------------------------------------------------------------

class Sitting:
    def __init__(self, args, python):
        self.args, self.python = args, python
        self.password = secrets.token_urlsafe(12)
        self.writer_password = secrets.token_urlsafe(12)
        self.auth_plain = f"bench:{self.password}"
        self.auth_b64 = basic("bench", self.password)
        self.rows = []  # (part, figure, value, target, met) for the final table
        self.details = []  # lines printed under the table
        self.results = {}  # raw figures for the .json

    def row(self, part, figure, value, target="", met=None):
        self.rows.append((part, figure, value, target, "" if met is None else ("met" if met else "NOT met")))

    def service(self, pg, extra_env=None, port=None):
        env = server_env(pg, self.args.server_env)
        env.update(extra_env or {})
        return Service(self.python, "granian", env, port or self.args.port, self.args.workdir)

    def users(self, service, pg):
        """The reader ``bench`` and the admin ``bench-writer``, with this sitting's passwords."""
        pg.psql(f"DELETE FROM starter_users WHERE username IN ('bench', '{WRITER}')")
        service.manage("adduser", "--", "bench", self.password, timeout=60)
        service.manage("adduser", "--admin", "--", WRITER, self.writer_password, timeout=60)

    def load(self, base, name, path, duration, etag=None, tag="", auth_plain=None):
        """wrk on one URL (list/item through load.sh; ``etag``: If-None-Match, 304 expected);
        ``auth_plain``: another ``user:password`` for the basic header (a token: ``token:``)."""
        auth_plain = auth_plain or self.auth_plain
        if etag:
            figures = wrk(self.args.peers, "load.sh", base + path, auth_plain, duration,
                          extra=["-H", f"If-None-Match: {etag}"], env={"BENCH_EXPECT": "304"})
        else:
            figures = wrk(self.args.peers, "load.sh", base + path, auth_plain, duration)
        shown = figures.get("error") or (f"rps={figures['rps']:.0f} p50={figures['p50']}ms p99={figures['p99']}ms"
                                         f" max={figures['max']}ms bad={figures['bad']} sockerr={figures['sockerr']}")
        log(f"  {tag:14} {name:5} {path}: {shown}")
        self.results[f"{tag} {name}"] = dict(figures, path=path)
        time.sleep(self.args.cooldown)
        return figures

    # --- part 1 and 5: counters and the proxy, 100 rows --------------------------------------------

    def small(self, peers):
        args = self.args
        pg = Postgres(*args.pg_address, args.pg_user, args.dbname)
        pg.create()
        try:
            service = self.service(pg)
            service.manage("createdb", timeout=120)
            self.users(service, pg)
            service.import_file(data_file(100, args.workdir, self.python))
            paths = {"list": API, "item": API + "039", "304": API}
            measured = {}
            for counters in ("memory", "redis"):
                extra = {"RATELIMIT_STORAGE_URI": args.redis} if counters == "redis" else {}
                if counters == "redis":
                    redis_command(args.redis, "FLUSHDB")
                measured[counters] = self.three(self.service(pg, extra), paths, f"counters={counters}")
                if counters == "redis":
                    self.details.append(f"counters in Redis: at most {measured['redis']['keys']} keys in {args.redis}"
                                        " during the run (0 would mean the counters were not in Redis)")
                    redis_command(args.redis, "FLUSHDB")
            # Part 5: the proxy in front, as Compose runs it (FORWARDED_PROXIES=1, counters in Redis).
            redis_command(args.redis, "FLUSHDB")
            backend = self.service(pg, {"RATELIMIT_STORAGE_URI": args.redis, "FORWARDED_PROXIES": "1"})
            proxy = Proxy(args.workdir, args.port + 1, args.port)
            measured["proxy"] = self.three(backend, paths, "proxy+redis", proxy)
            redis_command(args.redis, "FLUSHDB")
        finally:
            pg.drop()
        nginx = peers.get("nginx-static", {})
        for label, key, part in (("counters in memory", "memory", "1"), ("counters in Redis", "redis", "1"),
                                 ("via proxy/nginx.conf, Redis", "proxy", "5")):
            for ep in ("list", "item", "304"):
                f, ref = measured[key].get(ep, {}), nginx.get(PEER_OF[ep], {}).get("rps")
                if "rps" not in f:
                    self.row(part, f"100 rows {ep}, {label}", "ERROR " + " ".join(f.get("error", [])), "", False)
                    continue
                x = f["rps"] / ref if ref else None
                value = (f"{x:.3f} of nginx ({f['rps']:,.0f} / {ref:,.0f} rps)" if x is not None
                         else f"{f['rps']:,.0f} rps (no nginx-static)")
                if f["bad"] or f["sockerr"]:
                    value += f", {f['bad']} bad, {f['sockerr']} sockerr"
                if key == "memory":
                    self.row(part, f"100 rows {ep}, {label}", value, "(reference)")
                else:
                    ok = x is not None and x >= NGINX_RATIO_TARGET and not f["bad"] and not f["sockerr"]
                    if key == "redis" and not measured["redis"].get("keys"):
                        ok, value = False, value + " (no keys in Redis!)"
                    self.row(part, f"100 rows {ep}, {label}", value, f">= {NGINX_RATIO_TARGET:.2f} of nginx", ok)

    def three(self, service, paths, tag, proxy=None):
        """Start ``service`` (and the proxy in front), warm up, then list, item and 304."""
        service.start(tag.replace("=", "-").replace("+", "-"))
        try:
            if proxy:
                proxy.start()
            base = proxy.base if proxy else service.base
            status, headers, body = fetch(base + paths["list"], self.auth_b64)
            limit = headers.get("x-ratelimit-limit")
            self.details.append(f"{tag}: list answered {status}, X-RateLimit-Limit {limit} (the budget this"
                                f" process enforces: raised out of reach)")
            wrk(self.args.peers, "load.sh", base + paths["list"], self.auth_plain, self.args.warmup)
            out, keys = {}, []
            # The counters' keys expire with their window (a second): count them while the load runs.
            sampler = Sampler(lambda: int(redis_command(self.args.redis, "DBSIZE")), keys)
            sampler.start()
            try:
                for ep in ("list", "item", "304"):
                    etag = fetch(base + paths[ep], self.auth_b64)[1].get("etag") if ep == "304" else None
                    out[ep] = self.load(base, ep, paths[ep], self.args.duration, etag=etag, tag=tag)
            finally:
                sampler.stop.set()
                sampler.join(timeout=10)
            out["keys"] = max(keys, default=0)
            return out
        finally:
            if proxy:
                proxy.stop()
            service.stop()

    # --- part 2 and 4: a million rows, cold and with writes; memory ------------------------------

    def large(self):
        args = self.args
        path = data_file(args.rows, args.workdir, self.python)
        rows = count_lines(path)
        pg = Postgres(*args.pg_address, args.pg_user, f"{args.dbname}_{args.rows}")
        extra = {"RATELIMIT_STORAGE_URI": args.redis} if args.large_counters == "redis" else {}
        service = self.service(pg, extra)
        self.prepare_large(service, pg, path, rows)
        codes = sorted(line.split("\t", 1)[0] for line in open(path, encoding="utf-8") if line.strip())
        item = codes[len(codes) // 2]
        redis_command(args.redis, "FLUSHDB")
        try:
            # One probe server gives the URLs and the ETag; then every endpoint on a fresh one.
            service.start(f"{args.rows}-probe")
            try:
                status, _, body = fetch(service.base + API, self.auth_b64, timeout=60)
                if status != 200:
                    raise SystemExit(f"deployed: GET {API} answered {status}: {body[:200]!r}")
                last = urllib.parse.urlsplit(json.loads(body)["meta"]["last"])
                etag = fetch(service.base + API, self.auth_b64, timeout=60)[1].get("etag")
                # The same reader with a token (as the seed's contract sends it: the basic user-id, no
                # password): no password hash on a worker's first request.
                with_token = token(service.base, "bench", self.password) + ":"
            finally:
                service.stop()
            paths = {"list": API, "deep": last.path + "?" + last.query, "item": API + item,
                     "q": API + "?" + urllib.parse.urlencode({"q": WORD_QUERY}),
                     "code": API + "?" + urllib.parse.urlencode({"code": "0SR"}), "304": API}
            self.details.append(f"{rows:,} rows: deep = {paths['deep']}, item = {item}; counters in"
                                f" {args.large_counters}")
            cold, cold_token = {}, {}
            for ep in LARGE_ENDPOINTS:  # (a) each on a server just started, no request before wrk's
                for figures, auth, tag in ((cold, None, "cold"), (cold_token, with_token, "cold, token")):
                    service.start(f"{args.rows}-{tag.replace(', ', '-')}-{ep}")
                    try:
                        figures[ep] = self.load(service.base, ep, paths[ep], args.duration,
                                                etag=etag if ep == "304" else None, tag=tag, auth_plain=auth)
                    finally:
                        service.stop()
            service.start(f"{args.rows}-writes")  # (b) one server, an admin write a second throughout
            try:
                admin_token = token(service.base, WRITER, self.writer_password)
                page_one = {c for c in codes[:200]}
                pool = random.Random(20261202).sample([c for c in codes if c not in page_one and c != item], 2000)
                writer = Writer(service.base, admin_token, pool)
                writer.start()
                try:
                    time.sleep(1.5)
                    wrk(args.peers, "load.sh", service.base + API, self.auth_plain, args.warmup)
                    writes = {}
                    for ep in LARGE_ENDPOINTS:
                        etag_now = fetch(service.base + API, self.auth_b64)[1].get("etag") if ep == "304" else None
                        writes[ep] = self.load(service.base, ep, paths[ep], args.duration, etag=etag_now,
                                               tag="1 write/s")
                finally:
                    writer.finish()
                self.details.append(f"writer during (b): {writer.summary()}")
                self.memory(service, path, codes)
            finally:
                service.stop()
        finally:
            # The table as it began, for the next sitting (a PATCH cut short leaves its suffix).
            pg.psql(f"UPDATE starter_pxcodes SET procedure = left(procedure, length(procedure) - {len(EDIT_SUFFIX)})"
                    f" WHERE procedure LIKE '%{EDIT_SUFFIX}'")
            redis_command(args.redis, "FLUSHDB")
            if args.drop_db:
                pg.drop()
        for label, figures in (("cold start", cold), ("cold start, token", cold_token), ("1 write/s", writes)):
            for ep in LARGE_ENDPOINTS:
                f = figures[ep]
                name = f"{rows:,} rows {ep} p99, {label}"
                if "p99" not in f:
                    self.row("2", name, "ERROR " + " ".join(f.get("error", [])), f"< {P99_TARGET_MS} ms", False)
                    continue
                value = f"{f['p99']:.1f} ms ({f['rps']:,.0f} rps, max {f['max']} ms"
                # Under writes a list ETag may change (a 200, not a 304): that is no error.
                errors = f["sockerr"] + (0 if ep == "304" else f["bad"])
                value += f", {f['bad']} {'not 304' if ep == '304' else 'bad'}, {f['sockerr']} sockerr)"
                self.row("2", name, value, f"< {P99_TARGET_MS} ms", f["p99"] < P99_TARGET_MS and not errors)

    def prepare_large(self, service, pg, path, rows):
        """Keep the database between sittings: import only when it does not hold the file's rows."""
        have = None
        if pg.value(f"SELECT count(*) FROM pg_database WHERE datname = '{pg.dbname}'", db="postgres") == "1":
            service.manage("bootstrap", timeout=600)  # the schema at this commit's migrations, data kept
            have = int(pg.value("SELECT count(*) FROM starter_pxcodes", timeout=300))
        if have == rows:
            log(f"{pg.dbname}: kept from an earlier sitting ({rows:,} rows)")
        else:
            log(f"{pg.dbname}: importing {rows:,} rows from {path} (about 70 s at 1M)")
            pg.create()
            service.manage("createdb", timeout=120)
            seconds, line = service.import_file(path, timeout=1800)
            log(f"  {line} ({seconds:.0f} s)")
            pg.psql("VACUUM ANALYZE starter_pxcodes", timeout=900)
        self.users(service, pg)

    def memory(self, service, path, codes):
        """Fill the caches with distinct requests, then VmRSS of each worker (part 4)."""
        settings = cache_settings(self.python, service.env)
        entries = max([v for k, v in settings.items() if isinstance(v, int) and "ENTRIES" in k] or [1024])
        rng = random.Random(4)
        pages = -(-len(codes) // 100)
        # Items for every worker's replay cache and then some; pages and searches fill the count, page-key
        # and correction caches (deep pages and new searches cost far more each, so fewer of them).
        urls = [API + c for c in rng.sample(codes, min(len(codes), 3 * entries))]
        urls += [f"{API}?page={rng.randint(2, pages)}" for _ in range(entries // 2)]
        urls += [API + "?" + urllib.parse.urlencode({"q": q}) for q in search_queries(path, "prefix", entries // 2)]
        rng.shuffle(urls)
        done, seconds = fill(service.base, self.auth_b64, urls, duration_seconds(self.args.fill_duration))
        workers = worker_rss(service.proc.pid)
        self.results["memory"] = {"settings": settings, "workers": workers, "fill_requests": done}
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        self.details.append(f"memory: {done:,} of {len(urls):,} distinct URLs requested in {seconds:.0f} s to fill the"
                            f" caches ({3 * entries} items, {entries // 2} pages, {entries // 2} searches; 8 clients,"
                            f" at most {self.args.fill_duration}); settings: {shown}")
        for i, (pid, rss, hwm) in enumerate(workers, 1):
            self.row("4", f"worker {i} RSS after the {len(codes):,}-row run, caches filled",
                     f"{rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB)", "the bound in bench/README.md")
        if not workers:
            self.row("4", "worker RSS", "no worker process found", "", False)

    # --- part 3: writes going on (load_mixed.py) ----------------------------------------------

    def mixed(self):
        args = self.args
        out = {}
        env = [f"RATELIMIT_STORAGE_URI={args.redis}"] if args.mixed_counters == "redis" else []
        # Limits counted, with budgets out of reach, as in the other parts: a read-only run capped by
        # the per-user limit would make the ratio compare 429s with answers.
        env += [f"RATELIMIT_PER_USER={RAISED_BUDGET}", f"RATELIMIT_PER_ADDRESS={RAISED_BUDGET}"]
        env += list(args.server_env)
        for mix in ("reads", "writes5"):
            redis_command(args.redis, "FLUSHDB")
            summary = args.workdir / f"mixed-{mix}.json"
            summary.unlink(missing_ok=True)
            command = [self.python, str(BENCH_DIR / "load_mixed.py"), "-c", str(args.mixed_clients),
                       "-d", str(duration_seconds(args.mixed_duration)), "--mix", mix, "--json", str(summary),
                       "--pg", args.pg, "--dbname", f"{args.dbname}_load", "--port", str(args.port + 2)]
            for item in env:
                command += ["--env", item]
            log(f"mixed: load_mixed.py --mix {mix}, {args.mixed_clients} clients, {args.mixed_duration}")
            result = run(command, timeout=duration_seconds(args.mixed_duration) + 300, check=False)
            (args.workdir / f"mixed-{mix}.txt").write_text(result.stdout + result.stderr)
            out[mix] = json.loads(summary.read_text()) if summary.exists() else {}
            if out[mix]:
                log(f"  {mix}: {out[mix]['rps']:.0f} req/s, reads {out[mix]['reads_rps']:.0f}/s,"
                    f" p99 {out[mix]['p99_ms']:.0f} ms, 5xx {out[mix]['5xx']}, conn errors {out[mix]['connection_errors']}")
            else:
                log(f"  {mix}: no figures; see {args.workdir}/mixed-{mix}.txt")
        redis_command(args.redis, "FLUSHDB")
        self.results["mixed"] = out
        reads, writes = out.get("reads"), out.get("writes5")
        name = f"{args.mixed_clients} clients, 5 % writes"
        if not reads or not writes:
            self.row("3", name, f"ERROR (see {args.workdir}/mixed-*.txt)", "", False)
            return
        clean = not writes["5xx"] and not writes["connection_errors"] and writes.get("write_check_ok")
        x = writes["reads_rps"] / reads["reads_rps"] if reads["reads_rps"] else 0
        self.row("3", f"{name}: reads/s vs read-only", f"{x:.2f} ({writes['reads_rps']:.0f} vs"
                 f" {reads['reads_rps']:.0f} reads/s)", f">= {MIXED_RATIO_TARGET}", x >= MIXED_RATIO_TARGET)
        self.row("3", f"{name}: p99, every request", f"{writes['p99_ms']:.0f} ms (reads {writes['reads_p99_ms']:.0f} ms;"
                 f" read-only run {reads['p99_ms']:.0f} ms)", f"< {MIXED_P99_TARGET_MS} ms",
                 writes["p99_ms"] < MIXED_P99_TARGET_MS)
        for mix, figures in (("read-only", reads), ("5 % writes", writes)):
            cores = figures.get("cpu_cores", {})
            self.row("3", f"{name}: cores busy in the {mix} run",
                     ", ".join(f"{who} {n:.2f}" for who, n in cores.items()) or "not measured")
        self.row("3", f"{name}: 5xx, connection errors, write check",
                 f"{writes['5xx']}, {writes['connection_errors']}, {writes.get('write_check')}", "0, 0, held", clean)

    # --- the table -------------------------------------------------------------------------------

    def table(self, header):
        widths = [max(len(str(r[i])) for r in self.rows + [("part", "figure", "value", "target", "met?")])
                  for i in range(5)]
        fmt = "  ".join(f"%-{w}s" for w in widths)
        lines = [header, "", fmt % ("part", "figure", "value", "target", "met?"),
                 fmt % tuple("-" * w for w in widths)]
        lines += [fmt % r for r in sorted(self.rows, key=lambda r: r[0])]  # by part, each in its order
        lines += ["", *(f"# {d}" for d in self.details)]
        return "\n".join(lines)


def fill(base, auth_b64, paths, seconds, clients=8):
    """GET each path once from ``clients`` keep-alive connections, for at most ``seconds``;
    return (requests answered, seconds taken)."""
    parts = urllib.parse.urlsplit(base)
    todo, lock, answered = list(paths), threading.Lock(), [0]
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                if not todo:
                    return
                path = todo.pop()
            try:
                conn.request("GET", path, headers={"Authorization": "Basic " + auth_b64})
                conn.getresponse().read()
                with lock:
                    answered[0] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 40)
    return answered[0], time.monotonic() - started


def cache_settings(python, env):
    """The app's cache-size settings as it reads them (any setting named *CACHE* or *ENTRIES*)."""
    code = ("import json; from starter import config; c = config.load('production');"
            "print(json.dumps({k: v for k, v in sorted(c.items()) if isinstance(v, (int, float, bool))"
            " and any(w in k for w in ('CACHE', 'ENTRIES', 'WORKER'))}))")
    result = run([python, "-c", code], timeout=60, env=env, cwd=API_DIR, check=False)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (result.stderr or "?").strip().splitlines()[-1:]}


def worker_rss(master):
    """(pid, VmRSS kB, VmHWM kB) of each process whose parent is ``master`` (granian's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master):
            kb = lambda name: int(fields.get(name, "0 kB").split()[0])  # noqa: E731
            found.append((int(entry.name), kb("VmRSS"), kb("VmHWM")))
    return sorted(found)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run, ~3 min: 3 s per endpoint, 10 s mixed runs, 100,000 rows unless --rows")
    parser.add_argument("--duration", help="wrk per endpoint (default 10s; --quick 3s)")
    parser.add_argument("--warmup", default="3s", help="wrk on the list before the warm measurements")
    parser.add_argument("--cooldown", type=float, default=1.0)
    parser.add_argument("--rows", type=int, help="the large table's rows (default 1000000; --quick 100000)")
    parser.add_argument("--mixed-duration", help="each load_mixed.py run (default 30s; --quick 10s)")
    parser.add_argument("--mixed-clients", type=int, default=64)
    parser.add_argument("--fill-duration", help="at most this long filling the caches before RSS (default 60s;"
                                                 " --quick 10s)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/6"),
                        help="the counters' Redis database; FLUSHED before and after each part")
    parser.add_argument("--large-counters", choices=("redis", "memory"), default="redis",
                        help="rate-limit counters of the large-table part (default redis, as deployed)")
    parser.add_argument("--mixed-counters", choices=("redis", "memory"), default="redis",
                        help="rate-limit counters of the load_mixed.py runs (default redis, as deployed)")
    parser.add_argument("--parts", default="counters,large,mixed",
                        help="which parts to run (counters includes the proxy; large includes memory)")
    parser.add_argument("--peers", type=Path,
                        default=Path(os.environ.get("BENCH_PEERS_DIR", REPO / ".." / "shared" / "bench-peers")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "18300")),
                        help="the server; +1 the proxy, +2 load_mixed.py's server")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("BENCH_WORKDIR", "/tmp/starter-bench")))
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("BENCH_VENV", "/tmp/starter-bench-venv")))
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "127.0.0.1:5432"), help="HOST:PORT (trust auth)")
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--dbname", default="starter_bench12",
                        help="the 100-row database (dropped after); DBNAME_ROWS keeps the large table between"
                             " sittings, DBNAME_load is load_mixed.py's")
    parser.add_argument("--drop-db", action="store_true", help="drop the large table's database at the end too")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for every server of the sitting (a feature's switch); repeatable")
    args = parser.parse_args(argv)
    args.duration = args.duration or ("3s" if args.quick else "10s")
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.mixed_duration = args.mixed_duration or ("10s" if args.quick else "30s")
    args.fill_duration = args.fill_duration or ("10s" if args.quick else "60s")
    parts = set(args.parts.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    host, _, port = args.pg.partition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("deployed: only a PostgreSQL on this machine (127.0.0.1) is used")
    args.pg_address = (host, int(port or 5432))
    args.peers = args.peers.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for tool in ("wrk", "psql", "curl", "nginx", "htpasswd"):
        if not shutil.which(tool):
            raise SystemExit(f"deployed: {tool} is not installed (bench/run.sh installs it)")
    for p in (args.port, args.port + 1, args.port + 2):
        if port_in_use(p):
            raise SystemExit(f"deployed: port {p} is already in use")
    redis_command(args.redis, "PING")
    ensure_venv(args.venv)
    python = str(args.venv / "bin" / "python")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    rev = run(["git", "-C", REPO, "log", "-1", "--format=%h %s"], timeout=10, check=False).stdout.strip()
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], timeout=10,
                check=False).stdout.strip()
    started, load_before = time.monotonic(), open("/proc/loadavg").read().split()[:3]
    sitting = Sitting(args, python)
    if "large" in parts:
        sitting.large()
    if "mixed" in parts:
        sitting.mixed()
    peers = {}
    if "counters" in parts:
        peers = run_peer_bench(argparse.Namespace(workdir=args.workdir, duration=args.duration, peers=args.peers,
                                                  peer_names="nginx-static"))
        sitting.small(peers)
    sitting.results["peers"] = peers
    load_after = open("/proc/loadavg").read().split()[:3]
    header = (f"# starter-api issue 12 sitting {stamp}: {os.cpu_count()} cores, loadavg before"
              f" {' '.join(load_before)}, after {' '.join(load_after)}, {time.monotonic() - started:.0f} s;"
              f" commit {rev}{' + uncommitted changes' if dirty else ''}\n"
              f"# python starter-api/serve.py (granian, the image's settings{''.join(' ' + e for e in args.server_env)}),"
              f" FLASK_CONFIG=production, limits on with budgets raised out of reach; wrk 2 threads,"
              f" 32 conns, {args.duration} per endpoint; Redis {args.redis}; PostgreSQL {args.pg}")
    table = sitting.table(header)
    print(table)
    out = args.workdir / f"issue12-{stamp}.txt"
    out.write_text(table + "\n")
    (args.workdir / f"issue12-{stamp}.json").write_text(json.dumps(sitting.results, indent=1, default=str))
    print(f"# results: {out}")


if __name__ == "__main__":
    main()
