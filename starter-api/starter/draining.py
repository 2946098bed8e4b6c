"""Draining on SIGTERM: a server stops taking connections and lets the open ones end before it stops.

A proxy keeps idle connections to each replica and may send a request on one just as the replica
closes it. It cannot retry a POST it has sent, so the client gets a 502 for a write that never
arrived. A connection closed after an answer that says ``Connection: close`` cannot be caught in that
race, and a connection refused is retried on another replica. So, on SIGTERM (``serve.py``):

1. every worker stops listening: new connections are refused at once;
2. every answer on the connections still open says ``Connection: close``, and ``/readyz`` answers
   503 (``DRAINING`` in the WSGI environ);
3. the server waits until its workers hold no connection, at most ``SERVER_DRAIN_TIMEOUT`` seconds,
   then stops as before (requests in flight finish, up to ``SERVER_GRACEFUL_TIMEOUT``).

A second SIGTERM, or SIGINT, stops at once. Both halves are here: ``drain_on_sigterm`` in the
server's master process, ``Draining`` (WSGI middleware) in each worker; the master tells the workers
with ``WORKER_SIGNAL``. docs/scaling.md, "Stopping a replica", says what it is for.
"""

import logging
import os
import signal
import socket
import threading
import time

WORKER_SIGNAL = signal.SIGUSR1
DRAINING = "starter.draining"  # set in the WSGI environ while the worker drains
_WORKERS_LISTEN_FOR_IT = "STARTER_DRAIN_ON_SIGUSR1"  # set by the master for the workers it starts
_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp
POLL_SECONDS = 0.1
QUEUE_WAIT = 0.2  # seconds the server has to accept what its accept queues hold, before they close
LISTEN_WAIT = 2.0  # seconds the master waits for its workers to stop listening

log = logging.getLogger("starter.draining")


class Draining:
    """WSGI middleware of a worker: on ``WORKER_SIGNAL``, stop listening and close every connection
    after its next answer. Installs its signal handler only in a worker started by ``serve.py``."""

    def __init__(self, app):
        self.app = app
        self.draining = False
        if os.environ.get(_WORKERS_LISTEN_FOR_IT) and threading.current_thread() is threading.main_thread():
            signal.signal(WORKER_SIGNAL, self._start)

    def _start(self, signum=None, frame=None):
        if not self.draining:
            self.draining = True
            try:
                stop_listening()
            except OSError:  # still listening: the drain then only closes connections after answers
                log.exception("draining: could not stop listening")

    def __call__(self, environ, start_response):
        if not self.draining:
            return self.app(environ, start_response)
        environ[DRAINING] = True

        def closing(status, headers, exc_info=None):
            headers = [(k, v) for k, v in headers if k.lower() != "connection"]
            return start_response(status, [*headers, ("Connection", "close")], exc_info)

        return self.app(environ, closing)


def _socket_inodes(pid):
    """The socket inodes of process ``pid`` (by its file descriptors), as {inode: fd}."""
    found = {}
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    for name in names:
        try:
            link = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            found[link[8:-1]] = int(name)
    return found


def _tcp_sockets():
    """{inode: (local port, state, queued)} of every TCP socket of this network namespace (IPv4 and
    IPv6); ``queued``, for a listening socket, is its accept queue's length."""
    sockets = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            queued = int(fields[4].split(":")[1], 16)
            sockets[fields[9]] = (int(fields[1].rsplit(":", 1)[1], 16), fields[3], queued)
    return sockets


def _listening_fds():
    """{inode: fd} of this process's listening TCP sockets."""
    sockets = _tcp_sockets()
    return {inode: fd for inode, fd in _socket_inodes(os.getpid()).items()
            if inode in sockets and sockets[inode][1] == _LISTEN}


def stop_listening():
    """Refuse new connections from now on, in this process, and keep serving the open ones.

    Closing a listening socket resets the connections still in its accept queue, on which a proxy
    may already have sent a request. So first the queue is shut to new ones (``listen(0)``: a new
    connection's SYN is dropped, and tried again a second later, when it is refused) and the server
    accepts what is queued (at most QUEUE_WAIT). Then each listening descriptor is pointed at a new
    socket that listens on a port nobody knows: the old socket is closed, so the kernel refuses (or,
    with SO_REUSEPORT, hands to another process) the next connections, while the server's accept
    loop waits on a socket that never gets one. Shutting the old socket down instead makes
    granian's accept loop spin on errors.
    """
    listening = _listening_fds()
    for fd in listening.values():
        with socket.socket(fileno=os.dup(fd)) as listener:
            listener.listen(0)
    deadline = time.monotonic() + QUEUE_WAIT
    while time.monotonic() < deadline:
        sockets = _tcp_sockets()
        if not any(sockets.get(inode, (0, _LISTEN, 0))[2] for inode in listening):
            break
        time.sleep(0.005)
    for inode, fd in listening.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as idle:
            idle.bind(("127.0.0.1", 0))
            idle.listen(1)
            idle.setblocking(False)
            # The server may have closed it meanwhile (it is stopping): then there is nothing to do.
            if idle.fileno() != fd and _socket_inodes(os.getpid()).get(inode) == fd:
                os.dup2(idle.fileno(), fd, inheritable=False)


def still_listening(pids, port):
    """Which of processes ``pids`` still listen on ``port``."""
    sockets = _tcp_sockets()
    return [pid for pid in pids if any(inode in sockets and sockets[inode][:2] == (port, _LISTEN)
                                       for inode in _socket_inodes(pid))]


def open_connections(pids, port):
    """How many connections to ``port`` (TCP, any state but LISTEN) processes ``pids`` hold: their
    clients', not their own to the database or Redis."""
    sockets = _tcp_sockets()
    return sum(1 for pid in pids for inode in _socket_inodes(pid)
               if inode in sockets and sockets[inode][0] == port and sockets[inode][1] != _LISTEN)


def drain_on_sigterm(server, port, timeout):
    """Make a granian server listening on ``port`` (before its ``serve()``) drain for up to ``timeout``
    seconds on SIGTERM."""
    if timeout <= 0:
        return
    # Ignored until a worker's Draining handles it: forked workers inherit this, so a worker still
    # starting is not killed by the signal's default action.
    signal.signal(WORKER_SIGNAL, signal.SIG_IGN)
    os.environ[_WORKERS_LISTEN_FOR_IT] = "1"
    stop = server.signal_handler_interrupt  # granian's: sets the event its main loop waits on
    started = threading.Event()

    def drain_then_stop(signum):
        pids = [worker.inner.pid for worker in list(server.wrks)]
        for pid in pids:
            try:
                os.kill(pid, WORKER_SIGNAL)
            except ProcessLookupError:
                pass
        begun = time.monotonic()
        # A worker runs its handler when its main thread next runs Python: counting connections, or
        # stopping the server, before it has stopped listening would overlap its stop with the drain.
        listening = still_listening(pids, port)
        while listening and time.monotonic() - begun < LISTEN_WAIT:
            time.sleep(POLL_SECONDS / 5)
            listening = still_listening(pids, port)
        if listening:
            log.warning("draining: worker(s) %s still listening after %g s", ", ".join(map(str, listening)), LISTEN_WAIT)
        left = open_connections(pids, port)
        log.info("draining: new connections refused; waiting for %d open connection(s), at most %g s", left, timeout)
        while left and time.monotonic() - begun < timeout:
            time.sleep(POLL_SECONDS)
            left = open_connections(pids, port)
        log.info("drained in %.1f s%s", time.monotonic() - begun, f"; {left} connection(s) still open" if left else "")
        stop(signum, None)

    def on_interrupt(signum, frame):
        if signum != signal.SIGTERM or started.is_set():
            return stop(signum, frame)
        started.set()
        threading.Thread(target=drain_then_stop, args=(signum,), name="drain", daemon=True).start()

    server.signal_handler_interrupt = on_interrupt
