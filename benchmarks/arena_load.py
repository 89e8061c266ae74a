"""Load test of the arena through its public API: N concurrent gradio_client sessions each take
battles and vote until the total is reached; then every vote is checked against the store
(all stored, none duplicated, none lost) and second votes on a battle must be refused, also
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
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ANSWERS = ("A", "B", "tie", "both_bad")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_postgres_bindir() -> str | None:
    """The folder of PostgreSQL's server programs (Debian's `postgresql`, or initdb on PATH)."""
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def start_postgres(folder: str, extra_options: str = ""):
    """A throwaway PostgreSQL server (apt `postgresql`) in ``folder``: (URL, stop function).
    ``extra_options``: more server settings, e.g. ``-c fsync=off`` for tests."""
    import shutil
    import subprocess

    bindir = find_postgres_bindir()
    if not bindir:
        raise SystemExit("PostgreSQL is not installed: apt-get install -y postgresql (and pip install 'psycopg[binary]').")
    data, sockets = os.path.join(folder, "pgdata"), os.path.join(folder, "pgsock")
    os.makedirs(sockets)
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    if run_as:
        for path in (folder, sockets):
            shutil.chown(path, "postgres")
            os.chmod(path, 0o755)
    port = free_port()
    subprocess.run(
        [*run_as, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200 {extra_options}".strip()
    log = os.path.join(folder, "pg.log")
    subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-w", "-l", log, "start"], check=True, capture_output=True)

    def stop():
        subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


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
    p.add_argument("--models", default="teacher,teacher DDIM-1,teacher DDIM-2,teacher DDIM-4")
    p.add_argument("--threads", type=int, default=1, help="torch threads for rendering the pool")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "arena_load.json"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run_load(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print("PASS" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


def run_load(args: argparse.Namespace) -> dict:
    """Serve the app on a pool, run the clients, check the store; the result's ``ok`` says
    whether every vote was stored exactly once and every second vote refused."""

    import gradio
    import sqlalchemy as sa
    import torch
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import app
    from dollar.arena import ModelZoo, available_models, build_pool
    from dollar.votes import BattleRow, VoteStore

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="arena-load-")
    pool_dir = args.pool
    pool_s = 0.0
    if pool_dir is None:
        pool_dir = os.path.join(work, "pool")
        wanted = args.models.split(",")
        zoo = ModelZoo([m for m in available_models() if m.name in wanted], os.path.join(work, "tmp"))
        start = time.perf_counter()
        build_pool(pool_dir, args.pool_rounds, zoo, log=lambda _: None)
        pool_s = time.perf_counter() - start
        print(f"pool: {args.pool_rounds} battles rendered in {pool_s:.1f} s")
    stop_postgres = None
    if args.postgres:
        args.db, stop_postgres = start_postgres(work)
    db = args.db or f"sqlite:///{os.path.join(work, 'votes.sqlite')}"
    port = free_port()
    argv = ["--data-dir", work, "--db", db, "--pool", pool_dir, "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads)]
    # All clients share 127.0.0.1: the per-address rater limits, check rounds and round floor are
    # off, so this measures the vote path (benchmarks/arena_attack.py measures the limits).
    argv += ["--min-view-s", "0", "--battles-per-minute", "0", "--votes-per-day", "0", "--check-rate", "0", "--round-floor-s", "0"]
    demo, launch_kwargs = app.create_app(argv)
    demo.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    store = VoteStore(db)

    lock = threading.Lock()
    remaining = [args.votes]
    accepted: list[str] = []
    errors: list[str] = []
    refused_second: list[bool] = []
    latency = {"arena_new": [], "arena_vote": []}

    def take() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def client_loop(i: int) -> None:
        rng = random.Random(i)
        client = Client(url, verbose=False)
        first = None
        while take():
            try:
                t0 = time.perf_counter()
                battle_id, *_ = client.predict("", api_name="/arena_new")
                t1 = time.perf_counter()
                client.predict(battle_id, *[rng.choice(ANSWERS) for _ in range(4)], api_name="/arena_vote")
                t2 = time.perf_counter()
            except Exception as err:  # counted and reported: a lost vote must show up as one
                with lock:
                    errors.append(f"{type(err).__name__}: {str(err)[:200]}")
                continue
            with lock:
                accepted.append(battle_id)
                latency["arena_new"].append(t1 - t0)
                latency["arena_vote"].append(t2 - t1)
            first = first or battle_id
        if first:  # a second vote on a battle already voted on
            try:
                client.predict(first, "A", "A", "A", "A", api_name="/arena_vote")
                refused = False
            except AppError as err:
                refused = "already has its vote" in str(err)
            with lock:
                refused_second.append(refused)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    # Two votes sent at the same instant on one fresh battle: exactly one may win.
    racer = Client(url, verbose=False)
    battle_id, *_ = racer.predict("", api_name="/arena_new")
    jobs = [racer.submit(battle_id, a, a, a, a, api_name="/arena_vote") for a in ("A", "B")]
    race = []
    for job in jobs:
        try:
            job.result()
            race.append("stored")
        except AppError as err:
            race.append(str(err))
    race_ok = race.count("stored") == 1 and any("already has its vote" in r for r in race)

    votes = store.votes()
    by_battle = [v["battle_id"] for v in votes if v["battle_id"] != battle_id]
    with store.engine.connect() as conn:
        voted_battles = conn.scalar(sa.select(sa.func.count()).select_from(BattleRow).where(BattleRow.status == "voted"))
    result = {
        "backend": db.split(":")[0],
        "clients": args.clients,
        "votes_requested": args.votes,
        "votes_accepted_by_api": len(accepted),
        "votes_stored": len(by_battle),
        "duplicates": len(by_battle) - len(set(by_battle)),
        "lost": len(set(accepted) - set(by_battle)),
        "stored_but_not_acknowledged": len(set(by_battle) - set(accepted)),
        "battles_marked_voted": voted_battles,
        "errors": len(errors),
        "error_examples": errors[:5],
        "second_vote_refused": f"{sum(refused_second)}/{len(refused_second)}",
        "simultaneous_double_vote": race,
        "simultaneous_double_vote_ok": race_ok,
        "wall_s": round(wall, 2),
        "votes_per_s": round(len(accepted) / wall, 1),
        "latency_s": {
            k: {"p50": round(statistics.median(v), 4), "p95": round(percentile(v, 95), 4), "max": round(max(v), 4)}
            for k, v in latency.items()
            if v
        },
        "pool_battles": args.pool_rounds if args.pool is None else None,
        "pool_render_s": round(pool_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "gradio": gradio.__version__,
            "sqlalchemy": sa.__version__,
        },
    }
    demo.close()
    store.engine.dispose()
    if stop_postgres:
        stop_postgres()
    result["ok"] = (
        result["votes_stored"] == args.votes
        and result["duplicates"] == 0
        and result["lost"] == 0
        and all(refused_second)
        and race_ok
        and voted_battles == args.votes + 1
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
