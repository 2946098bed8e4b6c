"""Real servers for fault tests and the bench: a private PostgreSQL, ``python serve.py``, a private Redis.

Each runs in its own folder on its own loopback port and is stopped by its PID; never the
machine's shared servers. The pytest fixtures at the end start them once per test module.
Without the PostgreSQL binaries the fixtures skip locally but FAIL in CI (``CI=true``).

Every wait is bounded: client timeouts on every request, deadlines on every loop.
"""

import glob
import json
import os
import pwd
import select
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
from helpers import in_ci, load_starter_data
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


def unavailable(reason):
    if in_ci():
        pytest.fail(f"fault tests need a private PostgreSQL in CI: {reason}")
    pytest.skip(f"cannot start a private PostgreSQL: {reason}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir():
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
        self.port = free_port()
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

    def crash(self):
        """``kill -9`` of the postmaster: its backends are left to notice and exit by themselves."""
        os.kill(self.pid, signal.SIGKILL)

    def start_after_crash(self, deadline=20):
        """Start again once the crashed server's backends have let go of its shared memory."""
        end = time.monotonic() + deadline
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

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

    def create_database(self, name, load):
        """Make database ``name`` at the newest schema, run ``load()`` in its app context; its URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = self.url(name)
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x", "LOG_DIR": None})
        with app.app_context():
            recreate_tables()
            load()
            db.session.remove()
            db.engine.dispose()
        return url

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
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("no initdb found (set PG_BINDIR)")
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError) as exc:
        server.destroy()
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def fault_database(private_postgres):
    """A database ``starter`` on the private server: tables, 100 starter codes, an admin."""
    return private_postgres.create_database("starter", lambda: load_starter_data([(ADMIN, ADMIN_PASSWORD, True)]))


def rows(url, sql, **params):
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).all()
    finally:
        engine.dispose()


class ProductionServer:
    """``python serve.py`` (granian, the image's settings) in its own process group; stopped by PID."""

    def __init__(self, database_url, tmp, target=None, **extra_env):
        """``target``: another WSGI app for serve.py (``module:app``, importable through PYTHONPATH)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logfile = Path(tmp) / "server.log"
        # The image's server settings: serve.py's defaults, not whatever this shell has set.
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("SERVER_", "GRANIAN_", "WEB_CONCURRENCY", "FORWARDED_PROXIES", "TRUSTED_HOSTS"))}
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
            # The loopback names of the production default, and the "Host: x" of raw requests.
            "TRUSTED_HOSTS": "localhost,127.0.0.1,x",
            # A test's sessions left open would hold every stop for the image's 10 s drain.
            "SERVER_DRAIN_TIMEOUT": "2",
            **extra_env,
        }
        self.env = env
        self._log = open(self.logfile, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(SERVE), *([target] if target else [])], cwd=APP_ROOT, env=env,
            stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid

    def wait_ready(self, deadline=30):
        """Until every worker has started (a worker still starting misses a SIGTERM) and /healthz answers."""
        workers = int(self.env.get("WEB_CONCURRENCY") or 2)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited {self.process.returncode}:\n{self.log()}")
            try:
                started = self.log().count("] Started worker-")
                if started >= workers and requests.get(self.base + "/healthz", timeout=1).status_code == 200:
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


def new_session(session):
    s = requests.Session()
    s.headers["Authorization"] = session.headers["Authorization"]
    return s


class BackgroundLoad:
    """Client threads (``self.threads``) that run while the ``with`` block does, until ``self.stop``."""

    join_timeout = 40

    def __enter__(self):
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=self.join_timeout)
        self.seconds = time.monotonic() - self.started
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"


class Traffic(BackgroundLoad):
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
        http = new_session(self.session)
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
        http = new_session(self.session)
        paths = ["/api/v1.0/pxcodes/", "/api/v1.0/pxcodes/039", "/api/v1.0/pxcodes/?page=1&per_page=10"]
        i = 0
        while not self.stop.is_set():
            self._request(http, "read", "GET", paths[(i + number) % len(paths)])
            i += 1
            time.sleep(0.005)


def errors_in(log, limit=6000):
    """The server log's tracebacks and error lines, for a failure message."""
    lines = [line for line in log.splitlines() if not line.startswith("127.0.0.1 - ")]
    keep = [i for i, line in enumerate(lines) if "Traceback" in line or "ERROR" in line or "Error" in line]
    picked = []
    for i in keep:
        picked += lines[max(0, i - 2): i + 30]
    return "\n".join(picked)[-limit:]


def wait_for(predicate, deadline):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def status_of(session, url):
    try:
        return session.get(url, timeout=REQUEST_TIMEOUT).status_code
    except requests.RequestException:
        return None


class BlackHoleProxy:
    """A TCP proxy to a local port that can turn into a black hole, as a lost network or peer does.

    Forwarding, it relays bytes both ways. Black-holed, it still accepts connections (the kernel
    completes the handshake) but neither reads nor answers anything, on new and open connections
    alike. ``restore()`` closes every connection it held and forwards again. Threads in this process.
    """

    def __init__(self, target_port):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = False
        self._held = []  # sockets to close when the black hole ends
        self._start_delay = 0.0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self):
        self._forwarding.clear()

    def slow_start(self, seconds):
        """Connections accepted from now on reach the server only after ``seconds`` (0: at once), as
        on a loaded machine that starts backends slowly; open ones keep forwarding."""
        self._start_delay = seconds

    def restore(self):
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            sock.close()
        self._forwarding.set()

    def close(self):
        self._closed = True
        self._listener.close()
        self.restore()

    def _hold(self, *sockets):
        with self._lock:
            self._held.extend(sockets)

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._forwarding.is_set():
                self._hold(client)
                continue
            threading.Thread(target=self._forward, args=(client, self._start_delay), daemon=True).start()

    def _forward(self, client, delay):
        time.sleep(delay)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            client.close()
            return
        self._hold(client, upstream)
        self._pump(client, upstream)

    def _pump(self, client, upstream):
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed and self._forwarding.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                if not self._forwarding.is_set():
                    break  # black-holed: what was sent stays unread, nothing is answered
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    peers[sock].sendall(data)
                else:
                    continue
                break
        except OSError:
            pass
        if self._forwarding.is_set():  # an end of its own; black-holed, restore() closes them
            client.close()
            upstream.close()


class PrivateRedis:
    """A throw-away redis-server on its own port, no persistence; stopped by PID."""

    def __init__(self, tmp):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
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
        unavailable("no redis-server installed")
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.thaw()
        server.kill()



def raw_request(port, data, timeout=5):
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


class StalledPost(threading.Thread):
    """A POST whose client sends the headers and ``sent`` bytes of a ``length``-byte body, then
    nothing (or, with ``trickle``, a byte a second). Records the status it gets and when, and
    whether the server closed the connection; the client closes it when ``stop`` is set."""

    def __init__(self, port, path, length, authorization=None, sent=b'{"pxcode": ', trickle=False, stop=None):
        super().__init__(daemon=True)
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
                        f"Content-Length: {length}\r\n\r\n").encode() + sent
        self.port, self.trickle = port, trickle
        self.stop = stop or threading.Event()
        self.answer, self.status, self.answered_after, self.closed_after = b"", None, None, None

    def run(self):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(self.request)
            s.settimeout(0.25)
            deadline = started + 60
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    chunk = None
                except OSError:
                    chunk = b""
                if chunk == b"":
                    self.closed_after = time.monotonic() - started
                    return
                if chunk:
                    self.answer += chunk
                    if self.status is None:
                        self.status = int(self.answer.split(b" ", 2)[1])
                        self.answered_after = time.monotonic() - started
                if self.trickle:
                    try:
                        s.sendall(b" ")
                    except OSError:
                        pass

    def json(self):
        return json.loads(self.answer.partition(b"\r\n\r\n")[2] or b"null")


def chunked_post(port, path, authorization, chunks, timeout=10):
    """POST ``chunks`` (bytes) with Transfer-Encoding: chunked; return (status, answer body as JSON).

    Sent from a thread while the answer is read: a server that refuses the body early (413) may
    close the connection before the client is done sending.
    """
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        def send():
            try:
                s.sendall(head + body)
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
            head_part, sep, rest = answer.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head_part.split(b"\r\n")[1:]
                               if line.lower().startswith(b"content-length:")), 0)
                if len(rest) >= length:
                    break
        sender.join(timeout)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    text = answer.partition(b"\r\n\r\n")[2]
    return status, json.loads(text) if text else None
