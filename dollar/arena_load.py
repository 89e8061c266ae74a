"""Concurrent raters voting through the arena's public API: N gradio_client sessions each take
battles and vote until the total is reached; then every vote is checked against the store (all
stored, none duplicated, none lost), and second votes on a battle must be refused, also when two
are sent at the same instant. benchmarks/arena_load.py runs it at full size, tests/test_system.py
small.

The app serves battles from a pool rendered first (``python -m dollar.arena build-pool``), as a
deployment with a slow teacher would, so the check measures the vote path, not the renderer.
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence

from dollar.local_servers import served_app, start_postgres

ANSWERS = ("A", "B", "tie", "both_bad")
DEFAULT_MODELS = ("teacher", "teacher DDIM-1", "teacher DDIM-2", "teacher DDIM-4")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (nearest rank)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run_load(
    app_path: str,
    clients: int = 20,
    votes: int = 1000,
    db: str | None = None,
    postgres: bool = False,
    pool: str | None = None,
    pool_rounds: int = 80,
    models: Sequence[str] = DEFAULT_MODELS,
    threads: int = 1,
) -> dict:
    """Serve ``python app_path`` (app.py, in its own process as a user starts it) on a pool of
    battles (``pool``, or ``pool_rounds`` of ``models`` rendered first), run ``clients``
    concurrent raters until ``votes`` votes, and check the store: the SQLAlchemy URL ``db``, a
    throwaway PostgreSQL server (``postgres``), or a fresh SQLite file. The result's ``ok`` says
    whether every vote was stored exactly once and every second vote refused."""
    import gradio
    import sqlalchemy as sa
    import torch

    from dollar.arena import ModelZoo, available_models, build_pool
    from dollar.votes import BattleRow, VoteStore

    torch.set_num_threads(threads)
    work = tempfile.mkdtemp(prefix="arena-load-")
    store = stop_postgres = None
    try:
        pool_dir, pool_s = pool, 0.0
        if pool_dir is None:
            pool_dir = os.path.join(work, "pool")
            zoo = ModelZoo([m for m in available_models() if m.name in models], os.path.join(work, "tmp"))
            start = time.perf_counter()
            build_pool(pool_dir, pool_rounds, zoo, log=lambda _: None)
            pool_s = time.perf_counter() - start
            print(f"pool: {pool_rounds} battles rendered in {pool_s:.1f} s")
        if postgres:
            db, stop_postgres = start_postgres(work)
        db = db or f"sqlite:///{os.path.join(work, 'votes.sqlite')}"
        argv = ["--data-dir", work, "--db", db, "--pool", pool_dir, "--host", "127.0.0.1", "--threads", str(threads)]
        # All clients share 127.0.0.1: the per-address rater limits, check rounds and round floor are
        # off, so this measures the vote path (benchmarks/arena_attack.py measures the limits).
        argv += ["--min-view-s", "0", "--battles-per-minute", "0", "--votes-per-day", "0", "--check-rate", "0", "--round-floor-s", "0"]
        with served_app(app_path, argv, os.path.join(work, "app.log")) as (url, _, _):
            store = VoteStore(db)
            rated = rate_concurrently(url, clients, votes)
            race_battle, race = double_vote(url)
            by_battle = [v["battle_id"] for v in store.votes() if v["battle_id"] != race_battle]
            with store.engine.connect() as conn:
                voted_battles = conn.scalar(sa.select(sa.func.count()).select_from(BattleRow).where(BattleRow.status == "voted"))
    finally:
        if store is not None:
            store.engine.dispose()
        if stop_postgres:
            stop_postgres()
        shutil.rmtree(work, ignore_errors=True)

    accepted, refused_second = rated["accepted"], rated["refused_second"]
    race_ok = race.count("stored") == 1 and any("already has its vote" in r for r in race)
    result = {
        "backend": db.split(":")[0],
        "clients": clients,
        "votes_requested": votes,
        "votes_accepted_by_api": len(accepted),
        "votes_stored": len(by_battle),
        "duplicates": len(by_battle) - len(set(by_battle)),
        "lost": len(set(accepted) - set(by_battle)),
        "stored_but_not_acknowledged": len(set(by_battle) - set(accepted)),
        "battles_marked_voted": voted_battles,
        "errors": len(rated["errors"]),
        "error_examples": rated["errors"][:5],
        "second_vote_refused": f"{sum(refused_second)}/{len(refused_second)}",
        "simultaneous_double_vote": race,
        "simultaneous_double_vote_ok": race_ok,
        "wall_s": round(rated["wall_s"], 2),
        "votes_per_s": round(len(accepted) / rated["wall_s"], 1),
        "latency_s": {
            k: {"p50": round(statistics.median(v), 4), "p95": round(percentile(v, 95), 4), "max": round(max(v), 4)}
            for k, v in rated["latency"].items()
            if v
        },
        "pool_battles": pool_rounds if pool is None else None,
        "pool_render_s": round(pool_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "gradio": gradio.__version__,
            "sqlalchemy": sa.__version__,
        },
    }
    result["ok"] = (
        result["votes_stored"] == votes
        and result["duplicates"] == 0
        and result["lost"] == 0
        and all(refused_second)
        and race_ok
        and voted_battles == votes + 1
    )
    return result


def rate_concurrently(url: str, clients: int, votes: int) -> dict:
    """``clients`` gradio_client sessions take a battle and vote (random answers) until ``votes``
    votes were sent; then each sends a second vote on its first battle. Returns the battles whose
    vote the API accepted, the errors, whether each second vote was refused, and the latencies."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    lock = threading.Lock()
    remaining = [votes]
    accepted: list[str] = []
    errors: list[str] = []
    refused_second: list[bool] = []
    latency: dict[str, list[float]] = {"arena_new": [], "arena_vote": []}

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
    workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    wall = time.perf_counter() - start
    return {"accepted": accepted, "errors": errors, "refused_second": refused_second, "latency": latency, "wall_s": wall}


def double_vote(url: str) -> tuple[str, list[str]]:
    """Two votes sent at the same instant on one fresh battle, of which exactly one may win:
    (the battle, what each got: "stored" or the refusal)."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

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
    return battle_id, race
