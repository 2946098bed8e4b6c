"""Rolling restarts under a write-heavy load through the proxy, counting what failed: how
docs/scaling.md's "Stopping a replica" was measured (not part of CI).

    python stack/rolling_restarts.py [ROUNDS] [NAME=VALUE ...]    # e.g. 4, or 4 SERVER_DRAIN_TIMEOUT=0

The replica test's harness (stack/replicas.py: three ``python serve.py`` replicas, nginx with
proxy/nginx.conf, a private PostgreSQL and Redis), with WRITERS clients creating codes back to back
(no pause) and READERS reading, while each replica in turn is stopped (SIGTERM), started again and
waited for. NAME=VALUE are given to every replica. Prints each round's answers and each stop's time
and drain lines. ~1 min a round.
"""

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replicas as harness  # noqa: E402
import requests  # noqa: E402

WRITERS, READERS = 8, 32


class WriteHeavyLoad(harness.Load):
    write_pause = 0  # each writer's next POST as soon as the last is answered


def main(argv):
    rounds = int(argv[0]) if argv else 3
    env = dict(arg.split("=", 1) for arg in argv[1:])
    env.setdefault("SERVER_DRAIN_TIMEOUT", "10")
    harness.WRITERS, harness.READERS = WRITERS, READERS
    tmp = Path(tempfile.mkdtemp(prefix="starter-rolling-"))
    os.chmod(tmp, 0o755)
    pg_port, redis_port, proxy_port, *ports = harness.free_ports(3 + harness.REPLICAS)
    pg = harness.PrivatePostgres(harness.postgres_bindir())
    pg.port = pg_port
    redis = harness.PrivateRedis(tmp / "redis")
    redis.port = redis_port
    (tmp / "redis").mkdir()
    replicas, proxy, generation, total = [], None, Counter(), Counter()
    try:
        pg.init()
        pg.start()
        database_url = harness.prepare_database(pg)
        redis.start()

        def make(i):
            generation[i] += 1
            folder = tmp / f"replica{i}-{generation[i]}"
            folder.mkdir()
            return harness.Replica(database_url, folder, ports[i], FORWARDED_PROXIES="1",
                                   RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{redis.port}", DB_PROBE_TIMEOUT="2", **env)

        replicas[:] = [make(i) for i in range(harness.REPLICAS)]
        for replica in replicas:
            replica.wait_ready()
        proxy = harness.Proxy(tmp, proxy_port, ports)
        etag = requests.get(proxy.base + harness.LIST, auth=(harness.ADMIN, harness.ADMIN_PASSWORD),
                            timeout=harness.REQUEST_TIMEOUT).headers["ETag"]
        for number in range(rounds):
            with WriteHeavyLoad(proxy.base, f"W{number}", etag) as load:
                time.sleep(1.5)
                for i in range(len(replicas)):
                    started = time.monotonic()
                    replicas[i].stop()
                    drain = [line for line in replicas[i].log().splitlines() if "drain" in line]
                    harness.say(f"  stopped {replicas[i].port} in {time.monotonic() - started:.1f} s {drain}")
                    replicas[i] = make(i)
                    replicas[i].wait_ready()
                    back = proxy.wait_taken_back(replicas[i].port, proxy.log_size())
                    harness.say(f"  {replicas[i].port} " + (f"back in the proxy's rotation after {back:.1f} s" if back is not None
                                                          else "not back in the proxy's rotation"))
            writes = Counter(str(s) for _, s in load.writes)
            reads = Counter(str(s) for _, s in load.reads)
            total.update({"writes": len(load.writes), "reads": len(load.reads)})
            total.update({f"failed writes {k}": v for k, v in writes.items() if k != "201"})
            total.update({f"failed reads {k}": v for k, v in reads.items() if k not in ("200", "304")})
            harness.say(f"round {number + 1}: writes {dict(writes)}; reads {dict(reads)}; "
                        f"load average {harness.load_average()}")
        harness.say(f"{rounds} rounds of {harness.REPLICAS} restarts: {dict(total)}")
    finally:
        harness.tear_down(replicas, proxy, redis, pg, tmp)


if __name__ == "__main__":
    main(sys.argv[1:])
