#!/usr/bin/env python3
"""Search load on a database already holding the codes: the bench's search runs, without the import.

    python3 bench/search_load.py --dbname h5_dev --tsv /tmp/starter-bench/pxcodes-1000000.tsv \\
        --port 18441 [--conns 32,1] [--duration 10s] [--endpoints prefix,broad,fuzzy,q,code]

``bench/bench.py`` creates its database afresh and imports the codes each run (minutes at
1,000,000 rows); this starts ``serve.py`` as the bench does (production settings, limits out of
reach) against an existing database (migrated to head first: ``manage.py bootstrap``), adds a
user, and runs the same wrk loads (``bench/search.lua`` for the searches, the peers' ``load.sh``
for ``q`` and ``code``) with each number of clients. After each search load it prints the CPU time the
service's processes and the database's backends spent per search (from /proc: a figure that other
work on the machine disturbs far less than the latencies). Stdlib only; its processes stopped by PID.
"""

import argparse
import base64
import os
import secrets
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/bench.py: the same service, queries and wrk runs)

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--tsv", type=Path, required=True, help="the codes the database holds (for the queries)")
    parser.add_argument("--port", type=int, default=18441)
    parser.add_argument("--pg", default="127.0.0.1:5432")
    parser.add_argument("--conns", default="32,1", help="client counts, one wrk run each")
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--cooldown", type=float, default=1.0)
    parser.add_argument("--endpoints", default="prefix,broad,fuzzy,q,code")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/search-load"))
    parser.add_argument("--peers", type=Path, default=bench.REPO.parent / "shared" / "bench-peers")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    host, _, port = args.pg.partition(":")
    pg = bench.Postgres(host, int(port or 5432), "postgres", args.dbname)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLASK_", "GUNICORN_", "GRANIAN_", "SERVER_", "WEB_CONCURRENCY", "PORT"))}
    env.update(FLASK_CONFIG="production", SECRET_KEY=secrets.token_urlsafe(32), DATABASE_URL=pg.url,
               PYTHONDONTWRITEBYTECODE="1", RATELIMIT_PER_USER="1000000 per second",
               RATELIMIT_PER_ADDRESS="1000000 per second")
    service = bench.Service(args.python, "granian", env, args.port, args.workdir)
    password = secrets.token_urlsafe(12)
    auth_plain = f"searchload:{password}"
    auth_b64 = base64.b64encode(auth_plain.encode()).decode()
    started = time.perf_counter()
    service.manage("bootstrap", timeout=900)
    bench.log(f"bootstrap (migrations to head) {time.perf_counter() - started:.1f}s")
    pg.psql("DELETE FROM starter_users WHERE username = 'searchload'")
    service.manage("adduser", "--", "searchload", password, timeout=60)
    paths = {}
    for kind in bench.SEARCH_ENDPOINTS:
        paths[kind] = args.workdir / f"search-{kind}.txt"
        if not paths[kind].exists():
            paths[kind].write_text("".join(
                "/api/v1.0/pxcodes/?" + urllib.parse.urlencode({"q": q}) + "\n"
                for q in bench.search_queries(args.tsv, kind, bench.SEARCH_QUERIES)))
    service.start("search-load")
    results = []
    try:
        api = service.base + "/api/v1.0/pxcodes/"
        urls = {"q": api + "?" + urllib.parse.urlencode({"q": bench.WORD_QUERY}),
                "code": api + "?" + urllib.parse.urlencode({"code": "0SR"})}
        for conns in args.conns.split(","):
            os.environ.update(WRK_CONNS=conns, WRK_THREADS="1" if conns == "1" else "2")
            bench.log(f"{conns} clients, loadavg {open('/proc/loadavg').read().split()[0]}")
            for name in args.endpoints.split(","):
                if name in paths:
                    meter = bench.CpuMeter(service.proc.pid, pg.user, args.dbname)
                    meter.start()
                    bench.load_searches(args, service, 1000000, name, paths[name], auth_plain, auth_b64, results)
                    app_cpu, pg_cpu = meter.used()
                    # wrk's requests (rps x duration) and load_searches' 50 sample requests before them
                    requests = results[-1].get("rps", 0) * bench.duration_seconds(args.duration) + 50
                    bench.log(f"    CPU per search: service {1000 * app_cpu / requests:.1f} ms,"
                              f" PostgreSQL {1000 * pg_cpu / requests:.1f} ms ({requests:.0f} requests)")
                else:
                    figures = bench.wrk(args.peers, "load.sh", urls[name], auth_plain, args.duration)
                    bench.log(f"  {name:6} {urls[name]}: {figures}")
                    time.sleep(args.cooldown)
            bench.log(f"  loadavg after {open('/proc/loadavg').read().split()[0]}")
    finally:
        service.stop()


if __name__ == "__main__":
    main()
