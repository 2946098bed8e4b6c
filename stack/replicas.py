"""The replica test: three ``python serve.py`` replicas behind nginx running the project's own proxy
configuration (proxy/nginx.conf, the file the Compose proxy uses), one PostgreSQL, one Redis, all on
this machine's loopback and without Docker. Run by stack/test-replicas.sh (which installs what it needs).

It checks and prints:
  0. the proxy's own answers when no replica gives one: 503 when every replica refused the request
     (nothing was done), 502 when one took it and closed without answering (a write's outcome unknown)
  1. the same URL answers the same body and ETag from every replica; a 304 from one replica honours
     another's ETag
  2. the rate-limit budget is shared: the per-user limit is reached at its number summed over replicas
  3. a write through one replica is read back through every other: the largest staleness seen
  4. kill -9 of one replica under 64 clients reading for 20 s: no failed read; every write in flight is
     either acknowledged and stored, or failed and not stored
  5. a rolling restart (each replica in turn: SIGTERM, start again, wait until the proxy sends it
     requests again) under the same load: no failed request
  6. throughput through the proxy with 1, 2 and 3 replicas, and the proxy's own cost (one replica
     direct vs through nginx), with wrk

Servers come from starter-api/tests/servers.py (the fault tests' harness); each is stopped by its PID.
Every wait is bounded. Ends with ``replicas: N passed, N failed``.
"""

import base64
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "starter-api"
sys.path[:0] = [str(APP / "tests"), str(APP)]

import requests  # noqa: E402
from servers import (  # noqa: E402
    ADMIN,
    ADMIN_PASSWORD,
    REQUEST_TIMEOUT,
    BackgroundLoad,
    PrivatePostgres,
    PrivateRedis,
    ProductionServer,
    postgres_bindir,
    rows,
)

PROXY_CONF = ROOT / "proxy" / "nginx.conf"
REPLICAS = 3
FAIL_TIMEOUT = 5  # nginx's fail_timeout for each replica, as in proxy/compose/upstream-servers.conf
READERS = 64  # clients reading through the proxy during the kill and the rolling restart
WRITERS = 2  # clients creating codes through the proxy meanwhile, ~8 writes/s each
LOAD_SECONDS = 20
KILL_AT, RESTART_AT = 6, 12  # seconds into the kill phase
LIMITED = "100 per hour"  # the per-user limit of the shared-budget check (one window for the whole check)
LIMITED_USER, LIMITED_PASSWORD = "budget-user", "budget-password"
STALENESS_ROUNDS = 30
STALENESS_DEADLINE = 5.0  # seconds a replica may take to show another's write before it is a failure
WRK_SECONDS, WRK_CONNECTIONS = 5, 64
PORT_RANGE = (27000, 27999)
LIST, ITEM = "/api/v1.0/pxcodes/", "/api/v1.0/pxcodes/039"
URLS = [LIST, ITEM, "/api/v1.0/pxcodes/?q=hip", "/api/v1.0/pxcodes/?page=2&per_page=10&sort=-procedure"]

results = []  # (passed, name, detail)


def say(message):
    print(f"[replicas {time.strftime('%H:%M:%S')}] {message}", flush=True)


def check(passed, name, detail=""):
    results.append((bool(passed), name, detail))
    say(f"{'ok' if passed else 'FAILED'}: {name}{': ' + detail if detail else ''}")
    return passed


def free_ports(count):
    """``count`` ports of PORT_RANGE that nothing listens on (bound and released here)."""
    found = []
    candidates = list(range(*PORT_RANGE))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"no {count} free ports in {PORT_RANGE}")


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Replica(ProductionServer):
    """``python serve.py`` on a port of our choosing, so that a restart comes back at the same address."""

    def __init__(self, database_url, tmp, port, **env):
        super().__init__(database_url, tmp, PORT=str(port), **env)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def kill(self):
        """kill -9 of the whole replica (server and workers), as when its container or machine dies."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


class Proxy:
    """nginx with proxy/nginx.conf itself (symlinked), the replicas and the address beside it."""

    def __init__(self, tmp, port, upstream_ports, name="nginx"):
        self.dir = Path(tmp) / name
        self.dir.mkdir()
        (self.dir / "nginx.conf").symlink_to(PROXY_CONF)
        (self.dir / "listen.conf").write_text(f"listen 127.0.0.1:{port};\n")
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.set_upstreams(upstream_ports)
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.command = ["nginx", "-p", f"{self.dir}/", "-c", str(self.dir / "nginx.conf"), "-e", "stderr"]
        test = subprocess.run([*self.command, "-t"], capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
        self._out, self._err = open(self.access_log, "wb"), open(self.error_log, "wb")
        self.process = subprocess.Popen([*self.command, "-g", "daemon off;"], stdout=self._out,
                                        stderr=self._err, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/proxy-health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError(f"nginx does not answer:\n{self.error_log.read_text()}")

    def set_upstreams(self, ports):
        # As proxy/compose/upstream-servers.conf treats each replica it finds by DNS.
        (self.dir / "upstream-servers.conf").write_text(
            "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;\n" for p in ports)
        )

    def log_size(self):
        return self.access_log.stat().st_size

    def wait_taken_back(self, port, offset):
        """Seconds until the proxy answers a request through the replica on ``port`` again (logged after
        byte ``offset``), or None. A replica that refused connections while it stopped is left out for
        ``fail_timeout`` even once it is ready: the next one must not stop before it is back."""
        started = time.monotonic()
        deadline = started + FAIL_TIMEOUT + 5  # + the access log's 1 s flush and the load's pace
        while time.monotonic() < deadline:
            with open(self.access_log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            for tried, statuses in re.findall(r"upstream=(.*?) upstream_status=(.*?) upstream_time", text):
                if any(a == f"127.0.0.1:{port}" and s.strip() not in ("502", "504")
                       for a, s in zip(tried.split(", "), statuses.split(", "))):
                    return time.monotonic() - started
            time.sleep(0.1)
        return None

    def reload(self, ports):
        """Another set of replicas: new workers take it, the old ones finish what they serve (SIGHUP)."""
        self.set_upstreams(ports)
        os.kill(self.process.pid, signal.SIGHUP)
        time.sleep(1.0)

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._out.close()
        self._err.close()

    def upstreams_since(self, offset):
        """Which replica answered each request logged after byte ``offset`` of the access log."""
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return re.findall(r"upstream=(\S+)", text)


class Load(BackgroundLoad):
    """READERS clients reading and WRITERS clients creating codes, through the proxy, each on its own
    keep-alive connection; every request recorded."""

    write_pause = 0.1  # seconds between a writer's requests

    def __init__(self, base, prefix, etag):
        self.base = base
        self.prefix = prefix
        self.etag = etag
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reads = []  # (latency, status or exception name)
        self.writes = []  # (code, status or exception name)
        self.threads = [threading.Thread(target=self._reader, args=(i,), daemon=True) for i in range(READERS)]
        self.threads += [threading.Thread(target=self._writer, args=(i,), daemon=True) for i in range(WRITERS)]

    def _session(self):
        s = requests.Session()
        s.headers["Authorization"] = basic(ADMIN, ADMIN_PASSWORD)
        return s

    def _reader(self, number):
        http = self._session()
        i = number
        while not self.stop.is_set():
            path = URLS[i % len(URLS)]
            headers = {"If-None-Match": self.etag} if i % 5 == 0 else {}
            started = time.monotonic()
            try:
                status = http.get(self.base + path, headers=headers, timeout=REQUEST_TIMEOUT).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with self.lock:
                self.reads.append((time.monotonic() - started, status))
            i += 1

    def _writer(self, number):
        http = self._session()
        i = 0
        while not self.stop.is_set():
            code = f"{self.prefix}{number}{i:04d}"
            try:
                status = http.post(self.base + LIST, json={"pxcode": code, "procedure": f"REPLICA TEST {code}"},
                                   timeout=REQUEST_TIMEOUT).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with self.lock:
                self.writes.append((code, status))
            i += 1
            time.sleep(self.write_pause)


    def failed_reads(self):
        return [s for _, s in self.reads if s not in (200, 304)]

    def summary(self):
        latencies = sorted(latency for latency, _ in self.reads)
        p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
        return (f"{len(self.reads)} reads in {self.seconds:.1f} s ({len(self.reads) / self.seconds:.0f}/s, "
                f"p99 {p99:.0f} ms), {len(self.writes)} writes")


# Answers that say nothing of a write's outcome: the proxy's 502/504, or no answer at all.
IN_DOUBT = {502, 504, "ConnectionError", "ReadTimeout", "ChunkedEncodingError"}


def check_writes(load, database_url, name):
    """Every write acknowledged (201) is stored; every write that failed is not, except those whose
    outcome nobody can know (the replica died or timed out after taking it: 502, 504, a lost connection)."""
    stored = {code for (code,) in rows(database_url, "SELECT pxcode FROM starter_pxcodes WHERE pxcode LIKE :p",
                                       p=load.prefix + "%")}
    acked = [code for code, status in load.writes if status == 201]
    failed = [(code, status) for code, status in load.writes if status != 201 and status not in IN_DOUBT]
    lost = [code for code in acked if code not in stored]
    phantom = [(code, status) for code, status in failed if code in stored]
    statuses = Counter(str(status) for _, status in failed)
    check(not lost and not phantom, f"{name}: writes in flight",
          f"{len(acked)} acknowledged and stored, {len(failed) - len(phantom)} failed and not stored "
          f"{dict(statuses) or ''}; lost {lost or 0}, failed but stored {phantom or 0}")
    return failed


class ClosingReplica(threading.Thread):
    """A replica that reads a request and closes the connection without answering (as one killed while
    it works on the request does)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", port))
        self.requests = 0

    def run(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed by stop()
                return
            with connection:
                connection.settimeout(5)
                try:
                    self.requests += bool(connection.recv(65536))
                except OSError:
                    pass

    def stop(self):
        self.listener.close()


def proxy_errors(tmp):
    """0. The proxy's 503 when no replica took the request, its 502 when one took it and did not answer."""
    proxy_port, refusing_a, refusing_b, closing_port = free_ports(4)
    proxy = Proxy(tmp, proxy_port, [refusing_a, refusing_b], name="nginx-errors")
    closing = ClosingReplica(closing_port)
    closing.start()
    try:
        # The first GET is refused by both replicas; the second finds both left out for fail_timeout.
        refused = [requests.get(proxy.base + ITEM, timeout=REQUEST_TIMEOUT) for _ in range(2)]
        proxy.reload([closing_port])
        taken = requests.post(proxy.base + LIST, json={"pxcode": "X01", "procedure": "NEVER ANSWERED"},
                              timeout=REQUEST_TIMEOUT)
    finally:
        proxy.stop()
        closing.stop()

    def answer(r):
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else r.text[:80]
        return r.status_code, body.get("status") if isinstance(body, dict) else body, r.headers.get("Retry-After")

    check([answer(r) for r in refused] == [(503, 503, "1")] * 2,
          "every replica refused: the proxy answers 503 (nothing was done) with Retry-After",
          f"{[answer(r) for r in refused]}")
    check(answer(taken) == (502, 502, "1") and closing.requests == 1,
          "a replica took a POST and closed without answering: the proxy answers 502 (outcome unknown)",
          f"{answer(taken)}, requests the replica read: {closing.requests}")


def same_answers(replicas, proxy):
    """1. Same body and ETag from every replica; a 304 from each for another's ETag."""
    http = requests.Session()
    http.headers["Authorization"] = basic(ADMIN, ADMIN_PASSWORD)
    # The Host the proxy passes on, so that the URLs in the bodies are the same.
    http.headers["Host"] = f"127.0.0.1:{proxy.port}"
    mismatches, not_modified = [], 0
    for path in URLS:
        answers = []
        for _round in range(2):  # the first through Flask, the second replayed from the read cache
            for replica in replicas:
                r = http.get(replica.base + path, timeout=REQUEST_TIMEOUT)
                answers.append((replica.port, r.status_code, r.headers.get("ETag"), r.content))
        reference = answers[0]
        mismatches += [(path, a[0]) for a in answers if a[1:] != reference[1:] or a[1] != 200]
        for i, replica in enumerate(replicas):
            other_etag = answers[(i + 1) % len(replicas)][2]
            r = http.get(replica.base + path, headers={"If-None-Match": other_etag}, timeout=REQUEST_TIMEOUT)
            not_modified += r.status_code == 304 and not r.content
    via_proxy = {requests.get(proxy.base + LIST, auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
                 .headers.get("ETag") for _ in range(9)}
    check(not mismatches, "same URL, same body and ETag from every replica",
          f"{len(URLS)} URLs x {len(replicas)} replicas x (Flask, replay): "
          f"{'identical' if not mismatches else mismatches}")
    check(not_modified == len(URLS) * len(replicas) and len(via_proxy) == 1,
          "a 304 from one replica for another's ETag",
          f"{not_modified} of {len(URLS) * len(replicas)} conditional requests answered 304; "
          f"9 requests through the proxy: {len(via_proxy)} ETag(s)")


def shared_budget(replicas, limit):
    """2. The per-user limit counted once over every replica (Redis), not once per replica."""
    allowed = int(limit.split()[0])
    http = requests.Session()
    http.headers["Authorization"] = basic(LIMITED_USER, LIMITED_PASSWORD)
    answered = Counter()
    first_429 = None
    for i in range(allowed * REPLICAS + 10):
        replica = replicas[i % len(replicas)]
        r = http.get(replica.base + ITEM, timeout=REQUEST_TIMEOUT)
        if r.status_code == 200:
            answered[replica.port] += 1
        elif r.status_code == 429:
            first_429 = first_429 or i + 1
        else:
            return check(False, "shared rate-limit budget", f"HTTP {r.status_code}: {r.text[:200]}")
    after = {replica.port: http.get(replica.base + ITEM, timeout=REQUEST_TIMEOUT).status_code for replica in replicas}
    total = sum(answered.values())
    check(total == allowed and set(after.values()) == {429}, "the per-user limit is shared by the replicas",
          f"RATELIMIT_PER_USER={limit!r}: {total} answered 200 "
          f"({'/'.join(str(answered[r.port]) for r in replicas)} on the {len(replicas)} replicas), "
          f"429 from request {first_429} on, and from every replica after ({allowed} in all, not {allowed} each)")


def staleness(replicas):
    """3. A write through one replica, read back through each other one: how long until it shows."""
    http = requests.Session()
    http.headers["Authorization"] = basic(ADMIN, ADMIN_PASSWORD)
    probes = {"item": ITEM, "list": "/api/v1.0/pxcodes/?code=039"}
    for replica in replicas:  # warm every replica's read cache with the answers about to go stale
        for _ in range(2):
            for path in probes.values():
                http.get(replica.base + path, timeout=REQUEST_TIMEOUT)
    seen = {name: [] for name in probes}
    late = []
    for n in range(STALENESS_ROUNDS):
        writer = replicas[n % len(replicas)]
        title = f"STALENESS PROBE {n} {time.time_ns()}"
        etag = http.get(writer.base + ITEM, timeout=REQUEST_TIMEOUT).headers["ETag"]
        pairs = [(reader, name, path) for reader in replicas if reader is not writer
                 for name, path in probes.items()]
        go = threading.Barrier(len(pairs) + 1)
        acknowledged = []

        def poll(reader, name, path, go=go, title=title, acknowledged=acknowledged):
            # One client per (replica, URL), each on its own connection, polling from the acknowledgement on.
            s = requests.Session()
            s.headers["Authorization"] = http.headers["Authorization"]
            s.get(reader.base + path, timeout=REQUEST_TIMEOUT)  # the connection, opened beforehand
            go.wait(timeout=10)
            while True:
                body = s.get(reader.base + path, timeout=REQUEST_TIMEOUT).text
                now = time.monotonic()
                if title in body:
                    with threading.Lock():
                        seen[name].append((now - acknowledged[0]) * 1000)
                    return
                if now - acknowledged[0] > STALENESS_DEADLINE:
                    late.append((n, reader.port, name))
                    return
                time.sleep(0.0005)  # four pollers must not starve the replicas they poll of CPU

        pollers = [threading.Thread(target=poll, args=pair, daemon=True) for pair in pairs]
        for thread in pollers:
            thread.start()
        r = http.put(writer.base + ITEM, json={"procedure": title}, headers={"If-Match": etag},
                     timeout=REQUEST_TIMEOUT)
        acknowledged.append(time.monotonic())
        if r.status_code != 200:
            return check(False, "staleness across replicas", f"PUT: HTTP {r.status_code} {r.text[:200]}")
        go.wait(timeout=10)
        for thread in pollers:
            thread.join(timeout=STALENESS_DEADLINE + 5)
    figures = "; ".join(
        f"{name}: max {max(values):.1f} ms, median {statistics.median(values):.1f} ms over {len(values)} reads"
        for name, values in seen.items() if values
    )
    check(not late, "a write through one replica is read back through every other", f"{figures} "
          f"({STALENESS_ROUNDS} writes, each read on the {len(replicas) - 1} other replicas; from the write's "
          f"acknowledgement to the first read showing it){'; late: ' + str(late) if late else ''}")
    return max(max(v) for v in seen.values())


def kill_under_load(replicas, proxy, database_url, make_replica, etag):
    """4. kill -9 of one replica while READERS clients read and WRITERS write through the proxy."""
    victim = 1
    offset = proxy.access_log.stat().st_size
    events = {}
    with Load(proxy.base, "K", etag) as load:
        time.sleep(KILL_AT)
        replicas[victim].kill()
        events["killed"] = time.monotonic() - load.started
        time.sleep(RESTART_AT - KILL_AT)
        replicas[victim] = make_replica(victim)
        replicas[victim].wait_ready()
        events["back"] = time.monotonic() - load.started
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - load.started)))
    time.sleep(1.2)  # the access log's buffer is flushed every second
    answered = Counter(proxy.upstreams_since(offset))
    retried = sum(n for addr, n in answered.items() if "," in addr)
    failed = load.failed_reads()
    check(not failed, f"kill -9 of replica {replicas[victim].port} under {READERS} readers for {LOAD_SECONDS} s",
          f"{load.summary()}; {len(failed)} failed reads {dict(Counter(map(str, failed))) or ''}; killed at "
          f"{events['killed']:.1f} s, back at {events['back']:.1f} s; {retried} requests retried on another "
          f"replica by the proxy")
    check_writes(load, database_url, "kill -9")
    return load


def rolling_restart(replicas, proxy, database_url, make_replica, etag):
    """5. Each replica in turn: SIGTERM (it drains), start again, wait ready; under the same load."""
    steps = []
    with Load(proxy.base, "R", etag) as load:
        time.sleep(2)
        for i in range(len(replicas)):
            t0 = time.monotonic()
            code = replicas[i].stop()
            drained = " ".join(line.split("] ", 1)[-1] for line in replicas[i].log().splitlines() if "drain" in line)
            replicas[i] = make_replica(i)
            replicas[i].wait_ready()
            ready = time.monotonic() - t0
            back = proxy.wait_taken_back(replicas[i].port, proxy.log_size())
            steps.append(f"{replicas[i].port}: exit {code} ({drained or 'no drain'}), ready again after "
                         f"{ready:.1f} s, " + (f"back in the proxy's rotation {back:.1f} s later" if back is not None
                                                else "not back in the proxy's rotation"))
        time.sleep(2)
    failed = load.failed_reads()
    failed_writes = [w for w in load.writes if w[1] != 201]
    check(not failed and not failed_writes, f"rolling restart of {len(replicas)} replicas under {READERS} readers",
          f"{load.summary()}; {len(failed)} failed reads {dict(Counter(map(str, failed))) or ''}, "
          f"{len(failed_writes)} failed writes "
          f"{dict(Counter(str(s) for _, s in failed_writes)) or ''}; {'; '.join(steps)}")
    check_writes(load, database_url, "rolling restart")


def wrk(url, authorization):
    """req/s and latency percentiles of one wrk run (2 threads, WRK_CONNECTIONS connections)."""
    command = ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--latency", "-H",
               f"Authorization: {authorization}", url]
    subprocess.run([*command[:3], "-d1s", *command[4:]], capture_output=True, timeout=30)  # warm-up
    out = subprocess.run(command, capture_output=True, text=True, timeout=WRK_SECONDS + 30).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def percentile(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {"rate": rate, "p50": percentile(50), "p99": percentile(99),
            "bad": int(non_2xx.group(1)) if non_2xx else 0, "errors": errors.group(1) if errors else ""}


def throughput(replicas, proxy):
    """6. wrk on a cached read: one replica direct; through the proxy with 1, 2 and 3 replicas."""
    authorization = basic(ADMIN, ADMIN_PASSWORD)
    runs = {"direct, 1 replica": wrk(replicas[0].base + ITEM, authorization)}
    for n in (1, 2, 3):
        proxy.reload([r.port for r in replicas[:n]])
        runs[f"proxy, {n} replica{'s' * (n > 1)}"] = wrk(proxy.base + ITEM, authorization)
    say(f"throughput: wrk -t2 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s GET {ITEM} (basic auth, cached; rate limits "
        f"counted in Redis), wrk on the same {os.cpu_count()} cores; load average {load_average()}:")
    for name, run in runs.items():
        say(f"  {name:<20} {run['rate']:>8.0f} req/s   p50 {run['p50']:6.2f} ms   p99 {run['p99']:6.2f} ms"
            f"{'   non-2xx/3xx ' + str(run['bad']) if run['bad'] else ''}{'   ' + run['errors'] if run['errors'] else ''}")
    direct, one = runs["direct, 1 replica"], runs["proxy, 1 replica"]
    say(f"  the proxy's cost: {one['rate'] / direct['rate']:.2f} of the direct rate, "
        f"+{(one['p50'] - direct['p50']) * 1000:.0f} us at p50")
    check(all(run["bad"] == 0 and not run["errors"] for run in runs.values()), "throughput runs without errors",
          ", ".join(f"{name}: {run['rate']:.0f}/s" for name, run in runs.items()))


def load_average():
    """The machine's 1-minute load average: the figures are only as good as the machine was quiet."""
    return f"{os.getloadavg()[0]:.1f}"


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def main():
    started = time.monotonic()
    say(f"load average {load_average()} on {os.cpu_count()} cores")
    for tool in ("nginx", "wrk", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"replicas: {tool} is not installed (stack/test-replicas.sh installs it)")
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        raise SystemExit("replicas: no PostgreSQL server binaries (stack/test-replicas.sh installs them)")
    tmp = Path(tempfile.mkdtemp(prefix="starter-replicas-"))
    os.chmod(tmp, 0o755)  # nginx's workers (nobody, when started as root) reach their temp folders
    pg_port, redis_port, proxy_port, *replica_ports = free_ports(3 + REPLICAS)
    pg = PrivatePostgres(bindir)
    pg.port = pg_port
    redis = PrivateRedis(tmp / "redis")
    redis.port = redis_port
    (tmp / "redis").mkdir()
    replicas, proxy = [], None
    try:
        pg.init()
        pg.start()
        say(f"PostgreSQL {bindir.parts[-2]} on 127.0.0.1:{pg.port}")
        database_url = prepare_database(pg)
        redis.start()
        say(f"Redis on 127.0.0.1:{redis.port}")
        proxy_errors(tmp)
        generation = Counter()

        def make_replica(i, **env):
            generation[i] += 1
            folder = tmp / f"replica{i}-{generation[i]}"
            folder.mkdir()
            # DB_PROBE_TIMEOUT: 64 readers, 3 replicas, nginx and wrk on 2 cores put the load average
            # past 30, where a fresh connection can take longer than the default half second and the
            # database would be called down (503s) while it answers; this test is about replicas.
            # SERVER_DRAIN_TIMEOUT: the image's, which the rolling restart is about (the harness's is 2).
            return Replica(database_url, folder, replica_ports[i], FORWARDED_PROXIES="1",
                           RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{redis.port}",
                           DB_PROBE_TIMEOUT="2", SERVER_DRAIN_TIMEOUT="10", **env)

        def start_all(**env):
            replicas[:] = [make_replica(i, **env) for i in range(REPLICAS)]
            for replica in replicas:
                replica.wait_ready()

        def stop_all():
            for replica in replicas:
                replica.stop()

        # Phases 1-2 with a small per-user limit, the rest with the harness's high ones.
        start_all(RATELIMIT_PER_USER=LIMITED)
        proxy = Proxy(tmp, proxy_port, replica_ports)
        say(f"{REPLICAS} replicas (python serve.py, 2 workers each) on 127.0.0.1:{', '.join(map(str, replica_ports))}; "
            f"nginx {nginx_version()} with {PROXY_CONF.relative_to(ROOT)} on 127.0.0.1:{proxy.port}")
        same_answers(replicas, proxy)
        shared_budget(replicas, LIMITED)
        stop_all()
        start_all()
        staleness(replicas)
        etag = requests.get(proxy.base + LIST, auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT).headers["ETag"]
        kill_under_load(replicas, proxy, database_url, make_replica, etag)
        rolling_restart(replicas, proxy, database_url, make_replica, etag)
        throughput(replicas, proxy)
    except Exception as exc:  # a broken harness is a failed check, with the servers' logs
        check(False, "the replica test ran to its end", f"{type(exc).__name__}: {exc}")
        for replica in replicas:
            say(f"--- last lines of replica {replica.port}'s log:\n{replica.log()[-2000:]}")
        if proxy is not None:
            say(f"--- nginx error log:\n{proxy.error_log.read_text(errors='replace')[-2000:]}")
    finally:
        if proxy is not None and not all(ok for ok, _, _ in results):
            # Who answered the failures: the app (upstream_status 503) or nginx (no replica).
            lines = [line for line in _read(proxy.access_log).splitlines() if '" 50' in line]
            say("--- the proxy's 5xx lines:\n" + "\n".join(lines[-8:]))
            for replica in replicas:  # an app's 500 is logged with its traceback
                log = replica.log()
                if "Traceback" in log:
                    say(f"--- replica {replica.port}'s log from its first traceback:\n"
                        f"{log[log.index('Traceback'):][:3000]}")
        tear_down(replicas, proxy, redis, pg, tmp)
    failed = [r for r in results if not r[0]]
    say(f"took {time.monotonic() - started:.0f} s; load average {load_average()}")
    for _, name, _detail in failed:
        say(f"FAILED: {name}")
    print(f"replicas: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


def tear_down(replicas, proxy, redis, pg, tmp):
    """Stop what the harness started (each by its PID) and remove its folder."""
    for replica in replicas:
        if replica.process.poll() is None:
            replica.stop()
    if proxy is not None:
        proxy.stop()
    redis.kill()
    pg.destroy()
    shutil.rmtree(tmp, ignore_errors=True)


def prepare_database(pg):
    """A database starter on the private server: tables, the 100 starter codes, an admin and a reader."""
    from helpers import load_starter_data

    users = [(ADMIN, ADMIN_PASSWORD, True), (LIMITED_USER, LIMITED_PASSWORD, False)]
    return pg.create_database("starter", lambda: load_starter_data(users))


def nginx_version():
    return subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]


if __name__ == "__main__":
    sys.exit(main())
