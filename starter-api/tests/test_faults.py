"""Faults: the database goes away and comes back under the real production server; concurrent writers.

These tests start a PRIVATE PostgreSQL instance (``initdb`` + ``pg_ctl`` from the
machine's binaries, its own data folder and port; never the shared server at
5432) and the production server in front of it exactly as the Docker image runs
it (``python serve.py``: granian with the image's settings; only the address
differs), then stop and restart the database mid-traffic. Without the PostgreSQL
binaries they skip locally but FAIL in CI (``CI=true``).

Every wait is bounded: client timeouts on every request, deadlines on every loop.
"""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import _in_ci, load_starter_data
from sqlalchemy import create_engine, text

from starter import create_app
from starter.db import db, recreate_tables

APP_ROOT = Path(__file__).resolve().parents[1]
SERVE = APP_ROOT / "serve.py"  # the image's CMD: python serve.py
ADMIN, ADMIN_PASSWORD = "fault-admin", "fault-password"
# Client-side bounds: a request that takes longer than this is a hang.
REQUEST_TIMEOUT = (3, 10)
# The promises, measured against a real server.
MAX_503_LATENCY = 1.0  # seconds for any request answered while the database is down
MAX_RECOVERY = 5.0  # seconds from the database accepting connections to the API answering 200
STATEMENT_TIMEOUT_MS = 2000  # DB_STATEMENT_TIMEOUT given to the server (milliseconds)


def _unavailable(reason):
    if _in_ci():
        pytest.fail(f"fault tests need a private PostgreSQL in CI: {reason}")
    pytest.skip(f"cannot start a private PostgreSQL: {reason}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bindir():
    """The newest installed PostgreSQL server binaries (``$PG_BINDIR`` wins)."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if candidates:
        best = max(candidates, key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
        return Path(best).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster: own data folder, own port, own socket folder.

    initdb refuses to run as root, so as root every server command runs as the
    ``postgres`` OS user (``runuser``) in a temporary folder that user owns.
    """

    def __init__(self, bindir):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="starter-faults-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = _free_port()
        self.socket_dir.mkdir()
        self._as_user = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, program, *args, timeout=60):
        command = [*self._as_user, str(self.bindir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}"
            )
        return result

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def init(self):
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )

    def start(self):
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c max_connections=100 -c log_min_messages=warning"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", "30", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    @property
    def pid(self):
        """The postmaster's PID, or None when it is not running."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _processes(self):
        """The postmaster and its children (backends, checkpointer, ...), by PID."""
        pid = self.pid
        if pid is None:
            return []
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *map(int, children)]

    @staticmethod
    def _signal(pids, sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:  # a backend that ended meanwhile
                pass

    def freeze(self):
        """Hang the server without closing a socket (SIGSTOP): the kernel still accepts and ACKs.

        The postmaster first (it forks no new backend once stopped), then its children.
        """
        self._signal([self.pid], signal.SIGSTOP)
        self._signal(self._processes()[1:], signal.SIGSTOP)

    def thaw(self):
        self._signal(self._processes()[1:], signal.SIGCONT)
        self._signal([self.pid], signal.SIGCONT)

    def url(self, database="postgres"):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self):
        pid = self.pid
        if pid is not None:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres():
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        _unavailable("no initdb found (set PG_BINDIR)")
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError) as exc:
        server.destroy()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def fault_database(private_postgres):
    """A database ``starter`` on the private server: tables, 100 starter codes, an admin."""
    admin = create_engine(private_postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('CREATE DATABASE "starter"'))
    admin.dispose()
    url = private_postgres.url("starter")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x", "LOG_DIR": None})
    with app.app_context():
        recreate_tables()
        load_starter_data([(ADMIN, ADMIN_PASSWORD, True)])
        db.session.remove()
        db.engine.dispose()
    return url


def rows(url, sql, **params):
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).all()
    finally:
        engine.dispose()


class ProductionServer:
    """``python serve.py`` (granian, the image's settings) in its own process group; stopped by PID."""

    def __init__(self, database_url, tmp, **extra_env):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logfile = Path(tmp) / "server.log"
        # The image's server settings: serve.py's defaults, not whatever this shell has set.
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("SERVER_", "GRANIAN_", "WEB_CONCURRENCY", "FORWARDED_PROXIES"))}
        env = {
            **inherited,
            "FLASK_CONFIG": "production",
            "SECRET_KEY": "fault-test-secret",
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "SERVER_HOST": "127.0.0.1",
            "DB_CONNECT_TIMEOUT": "2",
            "DB_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT_MS),
            # Traffic here is one user at test speed, not abuse.
            "RATELIMIT_PER_USER": "100000 per second",
            "RATELIMIT_PER_ADDRESS": "100000 per second",
            "LOG_DIR": "",
            **extra_env,
        }
        self._log = open(self.logfile, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(SERVE)], cwd=APP_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid

    def wait_ready(self, deadline=30):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server is not answering after {deadline}s:\n{self.log()}")

    def log(self):
        return self.logfile.read_text(errors="replace")

    def stop(self):
        """SIGTERM, as docker stop sends; SIGKILL to the process group only if it hangs."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)  # the group this server leads
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def service(fault_database, tmp_path_factory):
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def session(service):
    """A keep-alive HTTP session holding a token (cheap auth per request)."""
    s = requests.Session()
    response = s.get(service.base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD),
                     timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, f"{response.text}\n{service.log()[-3000:]}"
    s.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return s


def _new_session(session):
    s = requests.Session()
    s.headers["Authorization"] = session.headers["Authorization"]
    return s


def _assert_json_error(response, status):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "error", "message"}, body
    assert body["status"] == status
    assert "Traceback" not in response.text


class Traffic:
    """Reader and writer threads recording every request: (start, latency, status or error)."""

    def __init__(self, service, session, prefix, writers=2, readers=2):
        self.base = service.base
        self.session = session
        self.prefix = prefix
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.records = []  # (kind, started, latency, status, retry_after, json_ok)
        self.created = {}  # pxcode -> (procedure, attempts, statuses)
        self.failures = []
        self.threads = [
            threading.Thread(target=self._writer, args=(i,), daemon=True) for i in range(writers)
        ] + [threading.Thread(target=self._reader, args=(i,), daemon=True) for i in range(readers)]

    def _request(self, http, kind, method, path, **kwargs):
        started = time.monotonic()
        try:
            response = http.request(method, self.base + path, timeout=REQUEST_TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            with self.lock:
                self.records.append((kind, started, time.monotonic() - started, type(exc).__name__, None, False))
            return None
        latency = time.monotonic() - started
        json_ok = True
        if response.status_code >= 400:
            try:
                body = response.json()
                json_ok = set(body) == {"status", "error", "message"} and body["status"] == response.status_code
            except ValueError:
                json_ok = False
        with self.lock:
            self.records.append((kind, started, latency, response.status_code,
                                 response.headers.get("Retry-After"), json_ok))
        return response

    def _writer(self, number):
        http = _new_session(self.session)
        i = 0
        while not self.stop.is_set():
            code = f"{self.prefix}{number}{i:04d}"
            procedure = f"FAULT TEST {code}"
            statuses = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                response = self._request(http, "write", "POST", "/api/v1.0/pxcodes/",
                                         json={"pxcode": code, "procedure": procedure})
                status = response.status_code if response is not None else "conn"
                statuses.append(status)
                if status in (201, 409):
                    break
                if status not in (503, "conn"):
                    self.failures.append((code, statuses))
                    break
                time.sleep(0.1)
            else:
                self.failures.append((code, statuses + ["gave up"]))
            with self.lock:
                self.created[code] = (procedure, statuses)
            i += 1
            time.sleep(0.01)

    def _reader(self, number):
        http = _new_session(self.session)
        paths = ["/api/v1.0/pxcodes/", "/api/v1.0/pxcodes/039", "/api/v1.0/pxcodes/?page=1&per_page=10"]
        i = 0
        while not self.stop.is_set():
            self._request(http, "read", "GET", paths[(i + number) % len(paths)])
            i += 1
            time.sleep(0.005)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"


def _errors_in(log, limit=6000):
    """The server log's tracebacks and error lines, for a failure message."""
    lines = [line for line in log.splitlines() if not line.startswith("127.0.0.1 - ")]
    keep = [i for i, line in enumerate(lines) if "Traceback" in line or "ERROR" in line or "Error" in line]
    picked = []
    for i in keep:
        picked += lines[max(0, i - 2): i + 30]
    return "\n".join(picked)[-limit:]


def _wait_for(predicate, deadline):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _status(session, url):
    try:
        return session.get(url, timeout=REQUEST_TIMEOUT).status_code
    except requests.RequestException:
        return None


def test_database_outage_gives_fast_503s_and_recovers_without_losing_writes(
    private_postgres, fault_database, service, session
):
    base = service.base
    assert _status(session, base + "/readyz") == 200

    with Traffic(service, session, prefix="FO") as traffic:
        time.sleep(1.5)  # traffic flowing against a healthy database
        t_down = time.monotonic()
        private_postgres.stop("immediate")
        stopped_in = time.monotonic() - t_down

        time.sleep(0.3)
        ready = requests.get(base + "/readyz", timeout=REQUEST_TIMEOUT)
        _assert_json_error(ready, 503)
        assert ready.headers.get("Retry-After")
        listed = session.get(base + "/api/v1.0/pxcodes/", timeout=REQUEST_TIMEOUT)
        _assert_json_error(listed, 503)
        assert listed.headers.get("Retry-After")

        time.sleep(2.5)  # a sustained outage under traffic
        t_up_begin = time.monotonic()
        private_postgres.start()
        t_up = time.monotonic()
        recovered = _wait_for(
            lambda: _status(session, base + "/readyz") == 200
            and _status(session, base + "/api/v1.0/pxcodes/039") == 200,
            deadline=MAX_RECOVERY + 5,
        )
        recovery = time.monotonic() - t_up
        time.sleep(1.5)  # traffic flowing again after recovery

    records = traffic.records
    outage = [r for r in records if t_down + stopped_in < r[1] < t_up_begin]
    statuses = {}
    for r in records:
        statuses[r[3]] = statuses.get(r[3], 0) + 1
    print(f"\nstatuses: {statuses}; pg stop took {stopped_in:.2f}s; recovery {recovery:.2f}s")
    if outage:
        lat = sorted(r[2] for r in outage)
        print(f"during the outage: {len(outage)} requests, latency p50 {lat[len(lat) // 2]:.3f}s"
              f" max {lat[-1]:.3f}s")
    after_stop = [r for r in records if r[1] >= t_down + stopped_in and r[3] == 503]
    if after_stop:
        print(f"first 503 answered {after_stop[0][1] + after_stop[0][2] - t_down:.3f}s after the stop began")

    assert recovered, f"no recovery within {MAX_RECOVERY + 5}s:\n{service.log()[-3000:]}"
    assert recovery <= MAX_RECOVERY, f"recovered only after {recovery:.2f}s"
    assert not traffic.failures, traffic.failures[:10]
    # No connection errors, no 5xx but 503, every error JSON, every 503 with Retry-After.
    assert not [r for r in records if isinstance(r[3], str)], "connection errors (hung or dead worker)"
    assert not [r for r in records if isinstance(r[3], int) and r[3] >= 500 and r[3] != 503], _errors_in(service.log())
    assert all(r[5] for r in records), "an error response without the JSON error body"
    assert all(r[4] for r in records if r[3] == 503), "a 503 without Retry-After"
    # During the outage requests were answered (503), quickly.
    assert len(outage) >= 10, f"too little traffic during the outage: {len(outage)}"
    assert {r[3] for r in outage} <= {503}, {r[3] for r in outage}
    slow = [r for r in outage if r[2] > MAX_503_LATENCY]
    assert not slow, f"{len(slow)} requests took longer than {MAX_503_LATENCY}s: {max(r[2] for r in slow):.2f}s"
    # No worker died (granian would start it again, losing the requests it held).
    assert "Unexpected exit from worker" not in service.log(), _errors_in(service.log())
    # Every write acknowledged or retried to completion is stored exactly once, none lost.
    assert len(traffic.created) >= 20
    found = dict(
        rows(fault_database,
             "SELECT pxcode, count(*) FROM starter_pxcodes WHERE pxcode LIKE 'FO%' GROUP BY pxcode")
    )
    assert found == {code: 1 for code in traffic.created}
    titles = dict(rows(fault_database,
                       "SELECT pxcode, procedure FROM starter_pxcodes WHERE pxcode LIKE 'FO%'"))
    assert titles == {code: procedure for code, (procedure, _) in traffic.created.items()}
    # A first attempt never meets 409 (that would be a write applied by someone else).
    assert all(statuses[0] != 409 for _, statuses in traffic.created.values())
    retried = sum(1 for _, s in traffic.created.values() if len(s) > 1)
    print(f"writes: {len(traffic.created)}, retried through the outage: {retried}")
    assert retried >= 1, "no write met the outage"
    # The API reads back every code.
    for code in list(traffic.created)[:: max(1, len(traffic.created) // 20)]:
        assert session.get(f"{base}/api/v1.0/pxcodes/{code}", timeout=REQUEST_TIMEOUT).status_code == 200


def test_service_started_with_the_database_down_recovers(private_postgres, service, session):
    """Connections refused from the start (fresh workers' pools): 503 at once, then 200."""
    base = service.base
    private_postgres.stop("fast")
    try:
        for path in ("/readyz", "/api/v1.0/pxcodes/", "/auth/request-token"):
            started = time.monotonic()
            response = session.get(base + path, timeout=REQUEST_TIMEOUT)
            assert time.monotonic() - started < MAX_503_LATENCY
            _assert_json_error(response, 503)
            assert response.headers["Retry-After"]
        assert requests.get(base + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
    finally:
        private_postgres.start()
    t_up = time.monotonic()
    assert _wait_for(lambda: _status(session, base + "/api/v1.0/pxcodes/") == 200, MAX_RECOVERY)
    print(f"\nrecovered {time.monotonic() - t_up:.2f}s after the restart")


@pytest.mark.parametrize("clients", [2, 8])
def test_concurrent_creates_of_one_code_give_one_201(fault_database, service, session, clients):
    base = service.base
    results = {}
    for round_ in range(10):
        code = f"CC{clients}{round_:02d}"
        barrier = threading.Barrier(clients)
        statuses = []
        lock = threading.Lock()

        def create(i, code=code, barrier=barrier, statuses=statuses, lock=lock):
            http = _new_session(session)
            barrier.wait(timeout=10)
            response = http.post(base + "/api/v1.0/pxcodes/",
                                 json={"pxcode": code, "procedure": f"CLIENT {i}"},
                                 timeout=REQUEST_TIMEOUT)
            if response.status_code == 409:
                _assert_json_error(response, 409)
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert sorted(statuses) == [201] + [409] * (clients - 1), statuses
        results[code] = statuses
    found = rows(fault_database,
                 "SELECT pxcode, count(*) FROM starter_pxcodes WHERE pxcode LIKE :p GROUP BY pxcode",
                 p=f"CC{clients}%")
    assert dict(found) == {code: 1 for code in results}


def test_concurrent_edits_with_one_etag_give_one_200(fault_database, service, session):
    """N editors holding the same ETag: exactly one write wins, the rest get 412 (no lost update)."""
    base = service.base
    clients = 8
    for round_ in range(10):
        code = f"CE{round_:02d}"
        created = session.post(base + "/api/v1.0/pxcodes/", json={"pxcode": code, "procedure": "ORIGINAL"},
                               timeout=REQUEST_TIMEOUT)
        assert created.status_code == 201, created.text
        etag = created.headers["ETag"]
        barrier = threading.Barrier(clients)
        outcomes = []
        lock = threading.Lock()

        def edit(i, code=code, etag=etag, barrier=barrier, outcomes=outcomes, lock=lock):
            http = _new_session(session)
            method = "PUT" if i % 2 else "PATCH"
            barrier.wait(timeout=10)
            response = http.request(method, f"{base}/api/v1.0/pxcodes/{code}",
                                    json={"procedure": f"EDITOR {i}"}, headers={"If-Match": etag},
                                    timeout=REQUEST_TIMEOUT)
            with lock:
                outcomes.append((i, response.status_code))

        threads = [threading.Thread(target=edit, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        statuses = sorted(s for _, s in outcomes)
        assert statuses == [200] + [412] * (clients - 1), (code, outcomes)
        winner = next(i for i, s in outcomes if s == 200)
        stored = rows(fault_database, "SELECT procedure FROM starter_pxcodes WHERE pxcode = :c", c=code)
        assert stored == [(f"EDITOR {winner}",)]


def test_locked_table_answers_503_within_the_statement_timeout(private_postgres, fault_database, service, session):
    """A query stuck behind a lock is cancelled by the statement timeout: 503, no hung worker."""
    base = service.base
    engine = create_engine(fault_database)
    try:
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE starter_pxcodes IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            try:
                response = session.get(base + "/api/v1.0/pxcodes/", timeout=(3, 8))
            except requests.Timeout:
                pytest.fail("the request hung behind a lock: no statement timeout")
            finally:
                locker.rollback()
            elapsed = time.monotonic() - started
    finally:
        engine.dispose()
    _assert_json_error(response, 503)
    assert response.headers["Retry-After"]
    print(f"\nlocked table: 503 after {elapsed:.2f}s (DB_STATEMENT_TIMEOUT={STATEMENT_TIMEOUT_MS} ms)")
    assert elapsed < STATEMENT_TIMEOUT_MS / 1000 + 1.5
    assert _status(session, base + "/api/v1.0/pxcodes/") == 200


def _app_losing_its_connection(database_url, after_view):
    """An in-process app with a test-only route whose database connection dies mid-request.

    The route opens a transaction, has the server terminate its backend, then either
    returns normally (the connection is found dead only at teardown) or queries again.
    """
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": "x", "LOG_DIR": None,
                      "PROPAGATE_EXCEPTIONS": False})
    killer = create_engine(database_url, isolation_level="AUTOCOMMIT")

    @app.get("/_faults/lose-connection")
    def lose_connection():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()  # a transaction is open
        with killer.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.1)
        if after_view == "query":
            db.session.execute(text("SELECT 1"))
        return {"ok": True}

    return app, killer


def test_connection_lost_before_teardown_is_not_a_500(fault_database):
    """The view succeeded, then the database link died: the teardown rollback must not raise."""
    app, killer = _app_losing_its_connection(fault_database, after_view="return")
    try:
        try:
            response = app.test_client().get("/_faults/lose-connection")
        except Exception as exc:  # noqa: BLE001 - the bug: the WSGI call itself raises
            pytest.fail(f"the request raised out of the app (the server answers a plain 500): {exc!r}")
        assert response.status_code in (200, 503), response.get_data(as_text=True)
        if response.status_code == 503:
            _assert_flask_json_error(response, 503)
    finally:
        killer.dispose()
        with app.app_context():
            db.engine.dispose()


def test_connection_lost_during_the_view_is_a_503(fault_database):
    app, killer = _app_losing_its_connection(fault_database, after_view="query")
    try:
        response = app.test_client().get("/_faults/lose-connection")
        _assert_flask_json_error(response, 503)
        assert response.headers["Retry-After"]
        # The pool recovers: the next request gets a fresh connection.
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        killer.dispose()
        with app.app_context():
            db.engine.dispose()


def _assert_flask_json_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"status", "error", "message"} and body["status"] == status


def test_hung_database_readyz_answers_503_within_the_connect_timeout(private_postgres, service, session):
    """A database that hangs (SIGSTOP: sockets open, nothing answers) must not hang the probe.

    The orchestrator relies on /readyz to take the instance out of rotation; a pooled
    connection's pre-ping could block forever (granian never times a request out).
    """
    base = service.base
    for _ in range(10):  # every worker has a pooled connection to the healthy server
        assert _status(session, base + "/readyz") == 200
    private_postgres.freeze()
    try:
        started = time.monotonic()
        try:
            response = requests.get(base + "/readyz", timeout=(3, 2 + 3))
        except requests.Timeout:
            pytest.fail(f"/readyz hung for {time.monotonic() - started:.1f}s on a hung database")
        _assert_json_error(response, 503)
    finally:
        private_postgres.thaw()
    assert _wait_for(lambda: _status(session, base + "/readyz") == 200, MAX_RECOVERY)


# --- the rate-limit counters' store (Redis) goes away ---

class PrivateRedis:
    """A throw-away redis-server on its own port, no persistence; stopped by PID."""

    def __init__(self, tmp):
        self.binary = shutil.which("redis-server")
        self.port = _free_port()
        self.dir = Path(tmp)
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def freeze(self):
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        _unavailable("no redis-server installed")
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.thaw()
        server.kill()


@pytest.fixture(scope="module")
def limited_service(fault_database, private_redis, tmp_path_factory):
    """A second server whose rate-limit counters live in the private Redis."""
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-redis"),
                      RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{private_redis.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_redis_outage_and_hang_keep_the_api_serving(private_redis, limited_service):
    """Killed, restarted and frozen Redis: every answer still 2xx, none slower than ~a second."""
    base = limited_service.base
    http = requests.Session()
    token = http.get(base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
    assert token.status_code == 200, token.text
    http.headers["Authorization"] = f"Bearer {token.json()['token']}"
    results = []

    def burst(label, n=40):
        for i in range(n):
            started = time.monotonic()
            try:
                response = http.get(f"{base}/api/v1.0/pxcodes/{'039' if i % 2 else ''}", timeout=REQUEST_TIMEOUT)
                results.append((label, response.status_code, time.monotonic() - started,
                                response.headers.get("X-RateLimit-Limit")))
            except requests.RequestException as exc:
                results.append((label, type(exc).__name__, time.monotonic() - started, None))

    burst("redis up")
    private_redis.kill()
    burst("redis killed")
    private_redis.start()
    time.sleep(0.5)
    burst("redis back")
    private_redis.freeze()
    try:
        burst("redis hung", n=10)
    finally:
        private_redis.thaw()
    burst("redis thawed")
    by_label = {}
    for label, status, latency, _ in results:
        entry = by_label.setdefault(label, {"statuses": {}, "max": 0.0})
        entry["statuses"][status] = entry["statuses"].get(status, 0) + 1
        entry["max"] = max(entry["max"], latency)
    print("\n" + "\n".join(f"{k}: {v['statuses']} max {v['max']:.2f}s" for k, v in by_label.items()))
    assert all(status == 200 for _, status, _, _ in results), by_label
    # Redis timeouts are 0.5 s; a request may meet a few of them (limit checks and counts).
    assert max(latency for _, _, latency, _ in results) < 2.5, by_label
    assert "Traceback" not in limited_service.log(), _errors_in(limited_service.log())


# --- hostile bytes on the wire: what the server itself answers ---

def _raw_request(port, data, timeout=5):
    """Send raw bytes; return (status or None, whole answer).

    Reads until the server closes, or until one whole response (head and Content-Length body)
    has arrived. The write side stays open: granian (hyper) drops a request whose client
    half-closes (``shutdown(SHUT_WR)``) before the answer is written.
    """
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
                head, sep, body = answer.partition(b"\r\n\r\n")
                if sep:
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(body) >= length:
                        break
        except (socket.timeout, ConnectionResetError):
            pass
    try:
        status = int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = None
    return status, answer


# name: (bytes, who answers, status). "server": granian itself, before the app (an empty body);
# "api": the request reaches Flask, which answers its JSON error.
WIRE_CASES = {
    "code-10000-chars": (b"GET /api/v1.0/pxcodes/" + b"9" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "api", 401),
    # Over serve.py's MAX_HEAD_BYTES (16 KiB): gunicorn answered 400 (its 8190-byte field limit).
    "header-20000-bytes": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + b"A" * 20_000
                           + b"\r\n\r\n", "server", 431),
    "header-without-colon": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", "server", 400),
    "bad-request-line": (b"GARBAGE\r\n\r\n", "server", 400),
    "bad-http-version": (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", "server", 400),
    "nul-in-path": (b"GET /api/v1.0/pxcodes/0\x0039 HTTP/1.1\r\nHost: x\r\n\r\n", "server", 400),
    "non-utf8-path": (b"GET /api/v1.0/pxcodes/\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\n\r\n",
                      "server", 400),
    "bad-content-length": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                           "server", 400),
    "two-content-lengths": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}", "server", 400),
    # Transfer-Encoding wins over Content-Length (RFC 9112 6.3): the app gets the empty chunked body, and
    # the connection is closed after the answer, so nothing after it can pass for a second request.
    # gunicorn refused the request (400) instead.
    "smuggling-te-cl": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "api", 401),
    # The body never completes: the API answers before reading it (no credentials).
    "truncated-body": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pxcode\"",
                       "api", 401),
}


@pytest.mark.parametrize("name", sorted(WIRE_CASES))
def test_hostile_bytes_get_a_4xx_and_the_server_stays_up(service, name):
    data, who, expected = WIRE_CASES[name]
    status, answer = _raw_request(service.port, data)
    assert status == expected, answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    if who == "server":
        assert body == b"" and b"connection: close" in head.lower(), answer[:300]
    else:
        error = json.loads(body)
        assert set(error) == {"status", "error", "message"} and error["status"] == expected, answer[:300]
    if name == "smuggling-te-cl":
        assert b"connection: close" in head.lower(), answer[:300]
    assert b"Traceback" not in answer
    assert requests.get(service.base + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200


def test_sigterm_lets_a_request_in_flight_finish(fault_database, tmp_path_factory):
    """docker stop: SIGTERM stops accepting at once, answers the request in flight, then exits 0."""
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-stop"))
    engine = create_engine(fault_database)
    try:
        server.wait_ready()
        http = requests.Session()
        token = http.get(server.base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
        assert token.status_code == 200, token.text
        http.headers["Authorization"] = f"Bearer {token.json()['token']}"
        result = {}
        with engine.connect() as locker:
            # The request waits behind a lock (under the statement timeout) while SIGTERM arrives.
            locker.execute(text("LOCK TABLE starter_pxcodes IN ACCESS EXCLUSIVE MODE"))

            def read():
                response = http.get(server.base + "/api/v1.0/pxcodes/?per_page=5", timeout=REQUEST_TIMEOUT)
                result["status"] = response.status_code

            reader = threading.Thread(target=read)
            reader.start()
            time.sleep(0.5)
            os.kill(server.pid, signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(requests.ConnectionError):
                requests.get(server.base + "/healthz", timeout=REQUEST_TIMEOUT)  # no longer accepting
            locker.rollback()  # the request in flight goes on
        reader.join(timeout=15)
        assert not reader.is_alive()
        assert result == {"status": 200}
        assert server.process.wait(timeout=25) == 0, server.log()[-2000:]
    finally:
        engine.dispose()
        server.stop()
    assert "Granian shutdown completed" in server.log()
