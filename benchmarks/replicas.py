"""Replicas that agree: two API processes on one PostgreSQL. Prints JSON lines:

- how long a change made through process A (or the CLI) takes to reach process B, which has
  it cached: a deletion, a re-adaptation, a revocation (medians and maxima over ``--trials``);
- predict throughput (wrk, concurrency 64, 20 cached tasks; three servers loaded in turn,
  ``--rounds`` times, medians) three ways: with the
  change announcements (LISTEN/NOTIFY, the default), with no freshness check at all (TTLs of an
  hour, announcements off: stale for up to an hour), and with the check a fresh answer needed
  before (CACHE_TTL_SECONDS=0 and AUTH_CACHE_SECONDS=0, announcements off: a database read per
  request).

Uses a database of its own (``--database``, created if missing) on the local PostgreSQL.

    python benchmarks/replicas.py --trials 20 --seconds 5 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve import app_cli, load_client, migrate, sinusoid_body, wrk_load  # noqa: E402
from tests.utils.server import running_server  # noqa: E402


def ensure_database(name: str) -> str:
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def until(condition, limit: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > limit:
            return float("inf")
        time.sleep(0.001)
    return time.perf_counter() - start


def summary(name: str, seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "measurement": f"propagation_{name}",
        "trials": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternations of the three throughput regimes"
    )
    parser.add_argument("--database", default="maml_bench_replicas")
    args = parser.parse_args()
    url = ensure_database(args.database)
    base_env = os.environ | {
        "DATABASE_URL": url,
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "MODEL_POLL_SECONDS": "0",
    }
    migrate(base_env)

    def cli(*words: str) -> str:
        return app_cli(base_env, *words)

    def new_client() -> tuple[int, str]:
        return load_client(base_env)

    rng = random.Random(0)
    _, key = new_client()
    auth = {"Authorization": f"Bearer {key}"}
    long = {"CACHE_TTL_SECONDS": "3600", "AUTH_CACHE_SECONDS": "3600"}
    ask = {"x": [0.5, 1.5]}

    # Propagation: TTLs of an hour, so only the announcements can explain a change seen.
    with ExitStack() as stack:
        a_base = stack.enter_context(running_server(base_env | long))
        b_base = stack.enter_context(running_server(base_env | long))
        a = stack.enter_context(httpx.Client(base_url=a_base, headers=auth, timeout=30))
        b = stack.enter_context(httpx.Client(base_url=b_base, headers=auth, timeout=30))
        deletes, updates, revokes = [], [], []
        for _ in range(args.trials):
            tid = a.post("/tasks", json=sinusoid_body(rng)).json()["id"]
            b.post(f"/tasks/{tid}/predict", json=ask).raise_for_status()
            a.delete(f"/tasks/{tid}").raise_for_status()
            deletes.append(
                until(lambda t=tid: b.post(f"/tasks/{t}/predict", json=ask).status_code == 404)
            )
            tid = a.post("/tasks", json=sinusoid_body(rng)).json()["id"]
            b.post(f"/tasks/{tid}/predict", json=ask).raise_for_status()
            more = sinusoid_body(rng)["support"]
            new = a.post(f"/tasks/{tid}/examples", json=more).json()["revision"]
            after = a.post(f"/tasks/{tid}/predict", json=ask).json()["predictions"]
            assert new == 2
            updates.append(
                until(
                    lambda t=tid, want=after: (
                        b.post(f"/tasks/{t}/predict", json=ask).json()["predictions"] == want
                    )
                )
            )
            victim_id, victim_key = new_client()
            victim = {"Authorization": f"Bearer {victim_key}"}
            assert b.get("/tasks", headers=victim).status_code == 200
            cli("clients", "revoke", str(victim_id))
            revokes.append(until(lambda h=victim: b.get("/tasks", headers=h).status_code == 401))
        for name, seconds in (("delete", deletes), ("readapt", updates), ("revoke", revokes)):
            print(json.dumps(summary(name, seconds)), flush=True)
        tasks = [a.post("/tasks", json=sinusoid_body(rng)).json()["id"] for _ in range(20)]

    # Throughput of B's predicts under each freshness regime.
    regimes = {
        "announcements": {},
        "no_freshness_check": long | {"ANNOUNCEMENTS": "false"},
        "check_every_request": {
            "CACHE_TTL_SECONDS": "0",
            "AUTH_CACHE_SECONDS": "0",
            "ANNOUNCEMENTS": "false",
        },
    }
    with ExitStack() as stack:  # all three up at once, loaded in turn, round after round
        bases = {
            name: stack.enter_context(running_server(base_env | extra))
            for name, extra in regimes.items()
        }
        for base in bases.values():
            for tid in tasks:  # warm the cache
                httpx.post(f"{base}/tasks/{tid}/predict", json=ask, headers=auth).raise_for_status()
            wrk_load(base, key, tasks, 64, 1, random.Random(1))
        rounds: dict[str, list[dict]] = {name: [] for name in regimes}
        for _ in range(args.rounds):
            for name, base in bases.items():
                rounds[name].append(wrk_load(base, key, tasks, 64, args.seconds, random.Random(1)))
    for name, runs in rounds.items():
        print(
            json.dumps(
                {
                    "measurement": "predict_throughput",
                    "regime": name,
                    "requests_per_s": [r["requests_per_s"] for r in runs],
                    "median_requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "cpus": os.cpu_count(),
                    "workers": 1,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
