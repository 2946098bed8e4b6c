"""The README's first screen runs as written, in a copy of the repository: the run command makes its
own virtualenv, loads the starter codes and serves on port 5000, and the request answers what the
README shows (its headers and its body)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import in_ci

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PORT = 5000  # the README's
# Headers whose values change from run to run (time, the new database's version, the machine's Python, ids).
VARYING = {"Date", "ETag", "Server", "X-RateLimit-Reset", "X-Request-ID"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _commands():
    return re.findall(r"^    ((?:\(cd starter-api|starter-api/\.venv/bin/http) .+)$", README, re.M)


def _sample_response():
    """The README's sample answer: its header lines and its body with the elided items left out."""
    sample = re.search(r"^```\n(HTTP/1\.1 200 OK\n.*?)^```$", README, re.M | re.S).group(1)
    head, _, body = sample.partition("\n\n")
    body = re.sub(r",\n\s+\.\.\. \d+ more \.\.\.", "", body)
    return head.splitlines(), json.loads(body)


def _port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _copy_of_the_repository(dest):
    """The working tree's tracked and untracked files (as a fresh clone would have them, with edits)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
        elif source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(source), dest / name)


@pytest.fixture
def served_as_the_readme_says(tmp_path):
    if not _port_free(PORT):
        if in_ci():
            pytest.fail(f"port {PORT} is taken: the README's run command needs it")
        pytest.skip(f"port {PORT} is taken")
    run_command = next(c for c in _commands() if "manage.py run" in c)
    repo = tmp_path / "repo"
    _copy_of_the_repository(repo)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLASK_", "DATABASE_URL", "SECRET_KEY", "RATELIMIT_", "VIRTUAL_ENV"))}
    log = open(tmp_path / "run.log", "wb")
    server = subprocess.Popen(["bash", "-c", run_command], cwd=repo, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # a fresh virtualenv: pip installs every requirement
        while _port_free(PORT):
            assert server.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run command did not serve within 600 s"
            time.sleep(0.5)
        yield repo, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def test_the_readme_runs_as_written(served_as_the_readme_says):
    repo, env = served_as_the_readme_says
    request = next(c for c in _commands() if c.startswith("starter-api/.venv/bin/http"))
    # In a terminal, as a person types it (httpie treats a non-terminal stdin as a request body).
    answer = subprocess.run(["script", "-qec", request, "/dev/null"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    text = ANSI.sub("", answer.stdout).replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    shown_head, shown_body = _sample_response()
    got = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    shown = dict(line.split(": ", 1) for line in shown_head[1:])
    assert head.splitlines()[0] == shown_head[0]
    assert sorted(got) == sorted(shown), "the README's sample headers are out of date"
    assert {k: v for k, v in got.items() if k not in VARYING} == {
        k: v for k, v in shown.items() if k not in VARYING
    }
    body = json.loads(body)
    assert body["meta"] == shown_body["meta"]
    assert body["items"][0] == shown_body["items"][0] and len(body["items"]) == 100
