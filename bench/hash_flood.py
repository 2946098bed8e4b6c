#!/usr/bin/env python3
"""Password hashing as a denial of service: a victim's cached reads while attackers send wrong passwords.

Starts ``python serve.py`` in production mode (granian, scrypt, the read cache) on a private
PostgreSQL database it creates and drops, adds a victim user, and then, for ``--duration`` seconds:

* one victim on a keep-alive connection from 127.0.0.1 reads ``/api/v1.0/pxcodes/039`` with valid
  credentials (verified once, then replayed from the read cache), one request at a time;
* ``--attackers`` clients (threads of a second process) send wrong passwords, each request on a new
  connection from the next source address of 127.0.0.2..127.0.0.250, so no per-address budget
  holds them; with ``--names random`` (default) each request names a new user, so no per-name budget
  holds them either (``--names victim``: they all guess the victim's password).

Prints the victim's p50/p99/max latency before the attack (``quiet``) and during it, and the
attackers' status counts. Stdlib only (plus the app's own venv for ``manage.py``). Traffic goes to
127.0.0.x only; the script stops only the server it started (by PID). See bench/README.md.

    /work/venv/bin/python bench/hash_flood.py --duration 10
"""

import argparse
import base64
import collections
import http.client
import itertools
import multiprocessing
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Postgres, Service  # noqa: E402  (one way of starting the service, for every bench script)

ITEM = "/api/v1.0/pxcodes/039"
VICTIM = "victim"
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 251)]


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def victim_reads(port, authorization, seconds):
    """Latencies (seconds) and statuses of sequential keep-alive reads for ``seconds``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, statuses = [], collections.Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            connection.request("GET", ITEM, headers={"Authorization": authorization})
            response = connection.getresponse()
            response.read()
            statuses[response.status] += 1
        except (OSError, http.client.HTTPException) as exc:
            statuses[type(exc).__name__] += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.002)  # a client that reads, not a load generator
    connection.close()
    return latencies, statuses


def attack(port, attackers, names, seconds, results):
    """In its own process: ``attackers`` threads of wrong passwords from changing addresses."""
    counts = collections.Counter()
    lock = threading.Lock()
    addresses = itertools.cycle(ADDRESSES)
    end = time.monotonic() + seconds

    def attacker(number):
        i = 0
        while time.monotonic() < end:
            with lock:
                address = next(addresses)
            name = VICTIM if names == "victim" else f"user-{number}-{i}"
            i += 1
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(address, 0))
            try:
                connection.request("GET", "/api/v1.0/pxcodes/",
                                   headers={"Authorization": basic(name, secrets.token_hex(4)), "Connection": "close"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            finally:
                connection.close()
            with lock:
                counts[status] += 1

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(attackers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    results.put(dict(counts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=18331)
    parser.add_argument("--pg", default="127.0.0.1:5432", help="PostgreSQL HOST:PORT (loopback; user postgres)")
    parser.add_argument("--dbname", default="starter_hashflood")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of attack")
    parser.add_argument("--attackers", type=int, default=8)
    parser.add_argument("--names", choices=("random", "victim"), default="random")
    parser.add_argument("--python", default=sys.executable, help="the Python with the app's requirements")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    if not args.pg.startswith(("127.", "localhost")):
        raise SystemExit("hash_flood: loopback PostgreSQL only")

    password = secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SERVER_", "GRANIAN_", "WEB_CONCURRENCY", "RATELIMIT_", "FORWARDED_", "TRUSTED_"))}
    env.update(
        FLASK_CONFIG="production",
        SECRET_KEY=secrets.token_urlsafe(32),
        DATABASE_URL=f"postgresql+psycopg2://postgres@{args.pg}/{args.dbname}",
        LOG_LEVEL="ERROR",  # thousands of rejected logins are the point, not news
        # The request budgets out of the way: the victim reads as fast as it likes.
        RATELIMIT_PER_USER="1000000 per second",
        RATELIMIT_PER_ADDRESS="1000000 per second",
    )
    env.update(item.split("=", 1) for item in args.server_env)
    host, pg_port = args.pg.split(":")
    pg = Postgres(host, int(pg_port), "postgres", args.dbname)
    service = Service(args.python, "granian", env, args.port, Path(tempfile.mkdtemp(prefix="hash-flood-")))
    pg.create()
    try:
        service.manage("createdb")
        service.manage("loaddata")
        service.manage("adduser", VICTIM, password)
        service.start("hash-flood")  # the image's python serve.py; waits for /readyz

        authorization = basic(VICTIM, password)
        # Verified in every worker (a new connection may land on either) and in the read cache.
        for _ in range(16):
            victim_reads(args.port, authorization, 0.05)
        victim_reads(args.port, authorization, 1.0)
        quiet, quiet_statuses = victim_reads(args.port, authorization, 3.0)

        results = multiprocessing.Queue()
        attackers = multiprocessing.Process(target=attack, args=(args.port, args.attackers, args.names,
                                                                 args.duration, results))
        attackers.start()
        time.sleep(0.5)  # the attack under way
        loud, loud_statuses = victim_reads(args.port, authorization, args.duration - 1.0)
        counts = results.get(timeout=args.duration + 60)
        attackers.join(timeout=30)

        def line(name, latencies, statuses):
            return (f"{name:7} n={len(latencies):6} p50={percentile(latencies, 0.5) * 1000:7.2f} ms"
                    f" p99={percentile(latencies, 0.99) * 1000:7.2f} ms max={max(latencies) * 1000:7.2f} ms"
                    f" statuses={dict(statuses)}")

        print(f"hash_flood: {args.attackers} attackers, names={args.names}, {args.duration:.0f} s,"
              f" server env {' '.join(args.server_env) or '(defaults)'}")
        print("victim  " + line("quiet", quiet, quiet_statuses))
        print("victim  " + line("attack", loud, loud_statuses))
        total = sum(counts.values())
        print(f"attackers {total} requests ({total / args.duration:.0f}/s): "
              + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))))
    finally:
        service.stop()
        pg.drop()


if __name__ == "__main__":
    main()
