"""Load test of the arena through its public API (dollar/arena_load.py): N concurrent
gradio_client sessions each take battles from ``python app.py`` (served in its own process, as a
user starts it) and vote until the total is reached; then every vote is checked against the
store (all stored, none duplicated, none lost) and second votes on a battle must be refused, also
when two are sent at the same instant.

python benchmarks/arena_load.py                          # SQLite (WAL), 20 clients, 1000 votes
python benchmarks/arena_load.py --postgres --out benchmarks/results/arena_load_postgres.json   # a throwaway PostgreSQL server
python benchmarks/arena_load.py --db postgresql+psycopg://user@host/dollar                      # an existing one

The app serves battles from a pool rendered first (``python -m dollar.arena build-pool``), as a
deployment with a slow teacher would, so the test measures the vote path, not the renderer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dollar.arena_load import DEFAULT_MODELS, run_load  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--votes", type=int, default=1000)
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: a fresh SQLite file)")
    p.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server and use it")
    p.add_argument("--pool", default=None, help="an existing pool folder (default: build one in a temporary folder)")
    p.add_argument(
        "--pool-rounds", type=int, default=80, help="enough that no client exhausts the pool (a session never sees a battle twice)"
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--threads", type=int, default=1, help="torch threads for rendering the pool")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "arena_load.json"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run_load(
        os.path.join(ROOT, "app.py"),
        clients=args.clients,
        votes=args.votes,
        db=args.db,
        postgres=args.postgres,
        pool=args.pool,
        pool_rounds=args.pool_rounds,
        models=args.models.split(","),
        threads=args.threads,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print("PASS" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
