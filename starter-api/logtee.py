"""``python logtee.py FILE -- COMMAND...``: run COMMAND with its output also kept in FILE, safely.

The image's entrypoint runs the server through this when ``LOG_FILE`` is set. Every process of the
server (granian's master, each worker) writes its lines to one pipe; this process alone reads them,
copies each to its own stdout (``docker logs`` still sees everything) and appends it to FILE,
rotating FILE at ``LOG_FILE_MAX_BYTES`` (10 MB) and keeping ``LOG_FILE_BACKUPS`` (5) old ones. One
writer, so workers never interleave inside a line or rotate the file under each other. Signals
(docker stop's SIGTERM) go on to COMMAND, whose exit status this process exits with.
"""

import os
import signal
import subprocess
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def _int(name, default):
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


class RotatingFile:
    def __init__(self, path, max_bytes, backups):
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.file = open(path, "ab", buffering=0)

    def write(self, line):
        if self.max_bytes and self.file.tell() + len(line) > self.max_bytes and self.file.tell() > 0:
            self.rotate()
        self.file.write(line)

    def rotate(self):
        self.file.close()
        for n in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        if self.backups:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self.file = open(self.path, "ab", buffering=0)


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python logtee.py FILE -- COMMAND...")
    path, command = argv[0], argv[2:]
    try:
        log = RotatingFile(path, _int("LOG_FILE_MAX_BYTES", 10 * 2**20), _int("LOG_FILE_BACKUPS", 5))
    except OSError as exc:
        # As the app does with a LOG_DIR it cannot write: keep serving, to stdout only.
        print(f"logtee: cannot write {path} ({exc.strerror}); logging to stdout only", file=sys.stderr)
        os.execvp(command[0], command)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for sig in FORWARDED:
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    out = sys.stdout.buffer
    for line in child.stdout:  # ends when every process holding the pipe has exited
        out.write(line)
        out.flush()
        try:
            log.write(line)
        except OSError as exc:
            print(f"logtee: writing {path} failed ({exc.strerror})", file=sys.stderr)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
