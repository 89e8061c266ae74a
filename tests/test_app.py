"""The arena logic (dollar.arena) without a browser, then app.py served in-process and driven
through gradio_client the way an API user would."""

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from conftest import ROOT, requires_bundled_teacher
from dollar.arena import (
    SERVED_VIDEO_BYTES,
    Arena,
    ArenaError,
    BattlePool,
    ModelEntry,
    ModelZoo,
    assign_sides,
    available_models,
    build_pool,
    check_prompt,
    check_seed,
    choose_pair,
    comparison_table,
    first_pair,
)
from dollar.local_servers import free_port, gradio_call
from dollar.pipeline import ModelLoadError
from dollar.votes import BattleRow, VoteError, VoteStore

ANSWERS = dict(visual_quality="A", text_alignment="B", motion="tie", overall="both_bad")
PROMPT = "a red circle moving left on a black background"
FAST = [ModelEntry(f"teacher DDIM-{k}", "teacher", k, "baseline") for k in (1, 2, 4)]
# The flow tests vote fast from one address: rater limits off, a short round floor, no check rounds.
RELAXED = ["--min-view-s", "0", "--battles-per-minute", "0", "--votes-per-day", "0", "--check-rate", "0", "--round-floor-s", "0.1"]
RELAXED += ["--min-raters", "1"]


# --- input checks and pairing --------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "prompt is empty"),
        ("   ", "prompt is empty"),
        (None, "prompt is empty"),
        ("x" * 10_000, "10000 characters; keep it under 500"),
        (["a", "b"], "must be text"),
    ],
)
def test_bad_prompts_get_one_clear_sentence(prompt, message):
    with pytest.raises(ArenaError, match=message):
        check_prompt(prompt)


def test_good_prompts_are_kept():
    assert check_prompt(f"  {PROMPT} ") == PROMPT


@pytest.mark.parametrize("seed", [-1, 2**32, 1e30, 1.5, float("nan"), float("inf"), -float("inf"), "abc", None, True, [1]])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ArenaError, match="whole number from 0 to 4294967295"):
        check_seed(seed)


@pytest.mark.parametrize("seed, value", [(0, 0), (7.0, 7), ("12", 12), (2**32 - 1, 2**32 - 1)])
def test_good_seeds_are_integers(seed, value):
    assert check_seed(seed) == value


def test_pairing_takes_the_least_compared_pair_and_stays_balanced():
    rng = random.Random(0)
    models = ["a", "b", "c", "d"]
    counts = {frozenset(p): 5 for p in [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]}
    assert choose_pair(models, counts, rng) == ("c", "d")  # the one pair never compared
    counts = Counter()
    for _ in range(60):
        counts[frozenset(choose_pair(models, counts, rng))] += 1
    assert len(counts) == 6 and set(counts.values()) == {10}
    with pytest.raises(ArenaError, match="at least two models"):
        choose_pair(["a"], {}, rng)


def _close_pair_votes(store: VoteStore | None = None):
    """Counted votes: a beats b and c beats d decisively (settled), b vs c split evenly (open) and
    compared most; returns the table and the battles shown per pair."""
    import pandas as pd

    plan = [("a", "b", "A", 40), ("c", "d", "A", 40), ("b", "c", "A", 30), ("b", "c", "B", 30), ("a", "c", "A", 10), ("b", "d", "A", 10)]
    rows = [dict(model_a=a, model_b=b, overall=w, counts_for_board=True) for a, b, w, k in plan for _ in range(k)]
    if store is not None:
        for r in rows:
            battle = store.create_battle("s", PROMPT, "heldout", 0, r["model_a"], r["model_b"], False)
            store.mark_shown(battle.id, "h", "h")
            store.record_vote(battle.id, "s", {c: r["overall"] for c in ("visual_quality", "text_alignment", "motion", "overall")})
    counts = Counter(frozenset((r["model_a"], r["model_b"])) for r in rows)
    return pd.DataFrame(rows), counts


def test_active_pairing_asks_for_the_pair_whose_order_is_least_certain():
    from dollar import ranking

    votes, counts = _close_pair_votes()
    rng = random.Random(0)
    assert choose_pair(list("abcd"), counts, rng, "active", votes) == ("b", "c")  # most compared, yet least settled
    assert choose_pair(list("abcd"), counts, rng, "least_compared", votes) == ("a", "d")  # never compared
    n, s = ranking.pair_totals(votes, "overall", list("abcd"))
    assert n[1, 2] == 60 and s[1, 2] == 30 and s[0, 1] == 40 and s[1, 0] == 0 and n[0, 3] == 0
    assert ranking.next_pair(n, s, "active", np.random.default_rng(0)) == (1, 2)  # the library rule, on the same totals
    # no votes yet: every order is a coin flip, so the fewest shown breaks the tie
    assert choose_pair(list("abc"), {frozenset("ab"): 2, frozenset("ac"): 1, frozenset("bc"): 2}, rng, "active", None) == ("a", "c")
    with pytest.raises(ArenaError, match="pairing rule must be one of"):
        choose_pair(list("abc"), {}, rng, "ucb")


def test_live_arena_pairs_by_the_counted_votes_in_its_store(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'votes.sqlite'}")
    _close_pair_votes(store)
    zoo = ModelZoo([ModelEntry(m, "teacher", 1, "baseline") for m in "abcd"], str(tmp_path / "videos"))
    active = Arena(store, zoo, prompts=[PROMPT], seed=0)
    assert active.pairing == "active" and first_pair(active.pair_priority(), random.Random(0)) == ("b", "c")
    balanced = Arena(store, zoo, prompts=[PROMPT], seed=0, pairing="least_compared")
    assert first_pair(balanced.pair_priority(), random.Random(0)) == ("a", "d")
    # the pool serves the chosen pair's battle when it has one
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    with open(pool_dir / "pool.jsonl", "w") as f:
        for k, pair in enumerate([("a", "d"), ("b", "c"), ("a", "b")]):
            (pool_dir / f"{k}a.mp4").write_bytes(b"x")
            (pool_dir / f"{k}b.mp4").write_bytes(b"x")
            f.write(
                json.dumps(dict(id=f"item{k}", prompt=PROMPT, seed=k, models=pair, videos=[f"{k}a.mp4", f"{k}b.mp4"], hashes=["h", "h"]))
                + "\n"
            )
    pool = BattlePool(str(pool_dir))
    assert pool.pick(active.pair_priority(), set(), {}, random.Random(0)).models == ("b", "c")
    assert pool.pick(balanced.pair_priority(), set(), {}, random.Random(0)).models == ("a", "d")
    with pytest.raises(ArenaError, match="pairing rule must be one of"):
        Arena(store, zoo, prompts=[PROMPT], pairing="ucb")


def test_the_preference_tuned_student_is_offered_with_its_card(tmp_path, monkeypatch):
    from dollar.arena import PREFERENCE_STUDENT, model_card

    monkeypatch.setattr("dollar.pipeline.ASSETS_DIR", str(tmp_path))
    assert available_models() == []
    folder = tmp_path / PREFERENCE_STUDENT
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    (folder / "README.md").write_text("---\ntags: [x]\n---\n# tuned\n\nLearnt from 240 simulated arena votes.\n")
    (entry,) = available_models()
    assert (entry.name, entry.source, entry.kind) == (PREFERENCE_STUDENT, str(folder), "student")
    assert model_card(entry) == "# tuned\n\nLearnt from 240 simulated arena votes."
    assert model_card(ModelEntry("x", str(tmp_path), None, "custom")) is None


def test_sides_are_swapped_by_a_fair_coin():
    rng = random.Random(1)
    draws = [assign_sides(("x", "y"), rng) for _ in range(4000)]
    swapped = sum(s for _, _, s in draws)
    assert 1800 < swapped < 2200
    assert all((a, b) == (("y", "x") if s else ("x", "y")) for a, b, s in draws)


# --- models and rendering (the bundled teacher: a 50-step video is ~0.6 s on a CPU) --------


@requires_bundled_teacher
def test_models_are_listed_from_assets_and_extra_names_are_checked():
    names = [m.name for m in available_models()]
    assert names[:4] == ["teacher", "teacher DDIM-1", "teacher DDIM-2", "teacher DDIM-4"]
    bundled = ("student-1", "student-2", "student-4", "student-preference")
    students = [s for s in bundled if os.path.exists(os.path.join(ROOT, "assets", s, "model_index.json"))]
    assert names[4:] == students
    folder = os.path.join(ROOT, "assets", "teacher")
    assert [m.name for m in available_models([folder])][-1] == folder
    with pytest.raises(ModelLoadError, match="Unknown model 'nonsense'"):
        available_models(["nonsense"])


@requires_bundled_teacher
def test_comparison_runs_every_model_on_the_same_seed_teacher_first(tmp_path):
    zoo = ModelZoo([ModelEntry("teacher", "teacher", 50, "teacher"), *FAST], str(tmp_path))
    gens = zoo.compare(PROMPT, 3, ["teacher DDIM-2", "teacher"])
    assert [g.model for g in gens] == ["teacher", "teacher DDIM-2"]
    assert [g.timings["nfe"] for g in gens] == [100, 4] and [g.steps for g in gens] == [50, 2]
    assert all(os.path.getsize(g.video_path) > 0 and g.video_path.endswith(".mp4") for g in gens)
    assert zoo.generate("teacher DDIM-2", PROMPT, 3).video_hash == gens[1].video_hash  # same seed, same video
    assert zoo.generate("teacher DDIM-2", PROMPT, 4).video_hash != gens[1].video_hash
    table = comparison_table(gens)
    assert table["speedup vs teacher"].tolist()[0] == 1.0 and table["speedup vs teacher"].tolist()[1] > 1.0
    with pytest.raises(ArenaError, match="Unknown model 'student-9'"):
        zoo.compare(PROMPT, 3, ["student-9"])
    with pytest.raises(ArenaError, match="at least one model"):
        zoo.compare(PROMPT, 3, [])


@requires_bundled_teacher
def test_a_live_battle_is_blind_and_reveals_after_the_vote(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}")
    arena = Arena(store, ModelZoo(FAST, str(tmp_path / "videos")), seed=0)
    view = arena.new_battle("s1")
    assert all(os.path.exists(v) for v in (view.video_a, view.video_b))
    for path in (view.video_a, view.video_b):  # nothing in what the browser gets names a model
        assert "DDIM" not in path and "teacher" not in path
        assert os.path.getsize(path) == SERVED_VIDEO_BYTES  # nor its size
    battle = store.get_battle(view.battle_id)
    assert battle.prompt == view.prompt and battle.prompt_origin == "heldout" and battle.counts_for_board
    assert battle.video_hash_a and battle.video_hash_b and battle.shown_at is not None
    vote = arena.vote(view.battle_id, "s1", ANSWERS)
    assert {vote["model_a"], vote["model_b"]} <= {m.name for m in FAST} and vote["model_a"] != vote["model_b"]
    with pytest.raises(VoteError, match="already has its vote"):
        arena.vote(view.battle_id, "s1", ANSWERS)
    own = arena.new_battle("s1", "  a green square moving up ")
    assert store.get_battle(own.battle_id).prompt_origin == "user" and not store.get_battle(own.battle_id).counts_for_board
    with pytest.raises(ArenaError, match="10000 characters"):
        arena.new_battle("s1", "x" * 10_000)


@requires_bundled_teacher
def test_a_failed_render_voids_the_battle(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}")
    broken = ModelEntry("broken", str(tmp_path / "no-such-model"), None, "custom")
    arena = Arena(store, ModelZoo([FAST[0], broken], str(tmp_path / "videos")), seed=0)
    with pytest.raises(ArenaError, match="voided, press New round"):
        arena.new_battle("s1")
    assert store.battle_status_counts() == {"void": 1}
    (battle_id,) = _battle_ids(store)
    with pytest.raises(VoteError, match="void"):
        store.record_vote(battle_id, "s1", ANSWERS)
    assert store.count_votes() == 0 and store.pair_counts() == {}


def _battle_ids(store):
    with store.engine.connect() as conn:
        return [r for (r,) in conn.execute(sa.select(BattleRow.id))]


@requires_bundled_teacher
def test_pool_is_built_resumed_and_served_before_live_rendering(tmp_path):
    zoo = ModelZoo(FAST, str(tmp_path / "videos"))
    pool = build_pool(str(tmp_path / "pool"), 3, zoo, log=lambda _: None)
    assert len(pool) == 3
    assert len({frozenset(it.models) for it in pool.items}) == 3  # every pair of the three models once
    for it in pool.items:
        assert all(os.path.basename(v)[:-4] == h[:32] for v, h in zip(it.videos, it.hashes))  # named by content, not model
    build_pool(str(tmp_path / "pool"), 3, zoo, log=lambda _: None)  # resumes: nothing new
    with open(tmp_path / "pool" / "pool.jsonl") as f:
        assert len(f.readlines()) == 3

    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}")
    arena = Arena(store, zoo, BattlePool(str(tmp_path / "pool"), zoo.names), seed=0)
    views = [arena.new_battle("s1") for _ in range(4)]
    battles = [store.get_battle(v.battle_id) for v in views]
    assert len({b.pool_item for b in battles[:3]}) == 3  # a session never sees a pool battle twice
    assert battles[3].pool_item is None  # pool exhausted for this session: rendered live
    for view, battle in zip(views[:3], battles[:3]):
        item = next(it for it in arena.pool.items if it.id == battle.pool_item)
        shown = dict(zip((battle.model_a, battle.model_b), (view.video_a, view.video_b)))
        for model, source in zip(item.models, item.videos):  # the swap moved videos with their models
            with open(source, "rb") as f, open(shown[model], "rb") as g:
                assert g.read(os.path.getsize(source)) == f.read()
    assert arena.new_battle("s2").battle_id  # another session starts on the pool again
    assert store.get_battle(arena.new_battle("s2").battle_id).pool_item is not None
    # ... but not another session from the same client address: it saw the whole pool already
    seen_all = {b.pool_item for b in battles[:3]}
    for i in range(3):
        store.create_battle(f"old-{i}", "p", "heldout", 0, "a", "b", False, pool_item=sorted(seen_all)[i], client_key="addr-1")
    assert store.get_battle(arena.new_battle("fresh-session", client_key="addr-1").battle_id).pool_item is None
    with pytest.raises(ArenaError, match="build-pool"):
        BattlePool(str(tmp_path / "nowhere"))


def test_build_pool_command_refuses_unknown_models(tmp_path, capsys):
    from dollar.arena import main

    assert main(["build-pool", "--out", str(tmp_path), "--rounds", "1", "--models", "teacher,student-9"]) == 2
    assert "Unknown model(s) student-9" in capsys.readouterr().err


# --- app.py in-process, driven through gradio_client ---------------------------------------


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    import sys

    sys.path.insert(0, ROOT)
    from gradio_client import Client

    import app

    data = tmp_path_factory.mktemp("app-data")
    port = free_port()
    demo, launch_kwargs = app.create_app(["--data-dir", str(data), "--port", str(port), "--threads", "2", *RELAXED])
    demo.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), VoteStore(f"sqlite:///{data / 'votes.sqlite'}")
    finally:
        demo.close()


def _app_error(fn, *args, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.mark.slow
@requires_bundled_teacher
def test_app_generate_compare_and_bad_input(served_app):
    client, store = served_app
    out = client.predict(PROMPT, 3, ["teacher", "teacher DDIM-4"], api_name="/generate")
    table, files = out[-2], out[-1]
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert rows["teacher"]["NFE"] == 100 and rows["teacher DDIM-4"]["NFE"] == 8
    assert rows["teacher"]["speedup vs teacher"] == 1.0 and rows["teacher DDIM-4"]["speedup vs teacher"] > 1.0
    assert len(files) == 2 and all(os.path.getsize(f) > 0 for f in files)

    assert "prompt is empty" in _app_error(client.predict, "", 3, ["teacher DDIM-1"], api_name="/generate")
    assert "10000 characters" in _app_error(client.predict, "x" * 10_000, 3, ["teacher DDIM-1"], api_name="/generate")
    assert "whole number" in _app_error(client.predict, PROMPT, -1, ["teacher DDIM-1"], api_name="/generate")
    assert "whole number" in _app_error(client.predict, PROMPT, 10**20, ["teacher DDIM-1"], api_name="/generate")
    assert "Unknown model 'student-9'" in _app_error(client.predict, PROMPT, 3, ["student-9"], api_name="/generate")
    assert "Select at least one model" in _app_error(client.predict, PROMPT, 3, [], api_name="/generate")
    out = client.predict(PROMPT, 4, ["teacher DDIM-1"], api_name="/generate")  # still serving
    assert len(out[-1]) == 1
    assert store.count_votes() == 0


@pytest.mark.slow
@requires_bundled_teacher
def test_app_arena_five_votes_reach_the_leaderboard_and_exports(served_app):
    client, store = served_app
    before = store.count_votes()
    for i in range(5):
        battle_id, prompt_md, video_a, video_b, *_ = client.predict("", api_name="/arena_new")
        assert os.path.exists(video_a) and os.path.exists(video_b) and "held-out" in prompt_md
        reveal = client.predict(battle_id, "A", "B" if i % 2 else "tie", "tie", "A" if i % 2 else "B", api_name="/arena_vote")
        assert "A** was **" in reveal
        assert "already has its vote" in _app_error(client.predict, battle_id, "A", "A", "A", "A", api_name="/arena_vote")
    assert store.count_votes() == before + 5

    summary, table, *_ = client.predict("overall", api_name="/leaderboard")
    assert summary.startswith(f"{before + 5} votes from 1 raters count for the board")
    assert sum(r[table["headers"].index("votes")] for r in table["data"]) == 2 * (before + 5)
    csv_path, jsonl_path = client.predict(api_name="/export")
    with open(jsonl_path) as f:
        rows = [json.loads(line) for line in f]
    assert [r["overall"] for r in rows] == [v["overall"] for v in store.votes() if v["counts_for_board"]]
    assert all("session_hash" not in r and "battle_id" not in r for r in rows)
    with open(csv_path) as f:
        assert len(f.readlines()) == before + 5 + 1


@pytest.mark.slow
@requires_bundled_teacher
def test_app_arena_refuses_bad_votes_and_keeps_serving(served_app):
    client, store = served_app
    count = store.count_votes()
    assert "does not exist" in _app_error(
        client.predict, "00000000-0000-0000-0000-000000000000", "A", "A", "A", "A", api_name="/arena_vote"
    )
    assert "does not exist" in _app_error(client.predict, "x" * 10_000, "A", "A", "A", "A", api_name="/arena_vote")
    battle_id, *_ = client.predict("", api_name="/arena_new")
    assert "Answer all four" in _app_error(client.predict, battle_id, "A", None, "A", "A", api_name="/arena_vote")
    with store.engine.begin() as conn:  # age the battle past its time limit
        conn.execute(
            sa.update(BattleRow)
            .where(BattleRow.id == battle_id)
            .values(expires_at=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1))
        )
    assert "expired" in _app_error(client.predict, battle_id, "A", "A", "A", "A", api_name="/arena_vote")
    other = store.create_battle("someone-else", PROMPT, "heldout", 0, "teacher", "teacher DDIM-1", False)
    assert "another session" in _app_error(client.predict, other.id, "A", "A", "A", "A", api_name="/arena_vote")
    assert store.count_votes() == count

    skipped, *_ = client.predict("", api_name="/arena_new")
    new_id, *_ = client.predict(skipped, "", api_name="/arena_skip")
    assert new_id != skipped and store.get_battle(skipped).status == "skipped"
    own_id, prompt_md, *_ = client.predict("a white cross growing", api_name="/arena_new")
    assert "not counted" in prompt_md
    client.predict(own_id, "A", "A", "A", "A", api_name="/arena_vote")
    summary, *_ = client.predict("overall", api_name="/leaderboard")
    assert "1 more are stored but not counted" in summary
    assert "The criterion must be one of" in _app_error(client.predict, "speed", api_name="/leaderboard")


# --- what a client may send and receive: refusals in one sentence, limits, blindness ---------


def test_the_app_listens_on_loopback_unless_on_a_space_or_told(monkeypatch):
    import app

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.build_parser().parse_args([]).host == "127.0.0.1"
    assert app.build_parser().parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"
    monkeypatch.setenv("SPACE_ID", "someone/dollar")
    args = app.build_parser().parse_args([])
    assert args.host == "0.0.0.0" and args.trust_proxy


def test_the_app_pairs_actively_by_default_and_offers_a_subset_of_models(monkeypatch, capsys):
    import app

    monkeypatch.delenv("DOLLAR_PAIRING", raising=False)
    assert app.build_parser().parse_args([]).pairing == "active"
    assert app.build_parser().parse_args(["--pairing", "least_compared"]).pairing == "least_compared"
    with pytest.raises(SystemExit):
        app.build_parser().parse_args(["--pairing", "ucb"])
    assert "invalid choice: 'ucb'" in capsys.readouterr().err
    from dollar.arena import select_models

    assert [e.name for e in select_models(FAST, "teacher DDIM-4, teacher DDIM-1")] == ["teacher DDIM-1", "teacher DDIM-4"]
    assert select_models(FAST, None) == FAST
    with pytest.raises(ArenaError, match="Unknown model\\(s\\) nope; available: teacher DDIM-1"):
        select_models(FAST, "nope")


def test_old_video_files_and_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import app
    from dollar.arena import prune_files

    for i in range(5):
        (tmp_path / f"{i}.mp4").write_bytes(b"x")
        os.utime(tmp_path / f"{i}.mp4", (1_000 + i, 1_000 + i) if i < 2 else None)
    assert prune_files(str(tmp_path), max_age_s=3600, max_files=2) == 3  # two too old, one past the count
    assert len(os.listdir(tmp_path)) == 2 and not {"0.mp4", "1.mp4"} & set(os.listdir(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = tmp_path / "dollar-app-999999999-abc"
    alive = tmp_path / f"dollar-app-{os.getpid()}-abc"
    dead.mkdir(), alive.mkdir()
    folder = app._video_folder()
    assert not dead.exists() and alive.exists() and os.path.isdir(folder)


def test_a_read_only_data_folder_stops_the_app_with_one_sentence(tmp_path):
    from test_votes import _read_only

    empty = tmp_path / "ro"
    empty.mkdir()
    undo = _read_only(empty)
    try:
        out = subprocess.run([sys.executable, "app.py", "--data-dir", str(empty)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        undo()
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: The vote store in {empty} could not open") and "writable" in lines[-1]
    assert "Traceback" not in out.stderr and "[SQL" not in out.stderr


@pytest.fixture(scope="module")
def limited_app(tmp_path_factory):
    """The app with its rater limits on (small, so that tests reach them) and an admin token."""
    sys.path.insert(0, ROOT)
    from gradio_client import Client

    import app

    data = tmp_path_factory.mktemp("limited-data")
    port = free_port()
    os.environ["DOLLAR_ADMIN_TOKEN"] = "s3cret-token"
    try:
        argv = ["--data-dir", str(data), "--port", str(port), "--threads", "2", "--min-view-s", "1.5", "--battles-per-minute", "4"]
        argv += ["--votes-per-day", "2", "--check-rate", "0", "--round-floor-s", "0.1", "--min-raters", "2"]
        demo, launch_kwargs = app.create_app(argv)
    finally:
        del os.environ["DOLLAR_ADMIN_TOKEN"]
    demo.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), VoteStore(f"sqlite:///{data / 'votes.sqlite'}"), port
    finally:
        demo.close()


def _one_sentence(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message and "Could not preprocess" not in message, message
    assert "[SQL" not in message and "Value:" not in message and message.rstrip().endswith("."), message
    return message


BAD_GENERATE = [
    ((PROMPT, 1.5, ["teacher DDIM-1"]), "whole number"),
    ((PROMPT, True, ["teacher DDIM-1"]), "whole number"),
    ((PROMPT, "abc", ["teacher DDIM-1"]), "whole number"),
    ((PROMPT, -1, ["teacher DDIM-1"]), "whole number"),
    ((PROMPT, None, ["teacher DDIM-1"]), "whole number"),
    ((PROMPT, [3], ["teacher DDIM-1"]), "whole number"),
    ((PROMPT, 3, None), "models must be a list"),
    ((PROMPT, 3, "teacher"), "models must be a list"),
    ((PROMPT, 3, ["student-9"]), "Unknown model 'student-9'"),
    ((PROMPT, 3, [7]), "Unknown model '7'"),
    ((PROMPT, 3, []), "Select at least one model"),
    (("", 3, ["teacher DDIM-1"]), "prompt is empty"),
    (("x" * 10_000, 3, ["teacher DDIM-1"]), "10000 characters"),
]


@requires_bundled_teacher
def test_every_bad_input_is_refused_in_one_sentence_through_the_api(limited_app):
    client, store, port = limited_app
    for args, message in BAD_GENERATE:
        assert message in _one_sentence(_app_error(client.predict, *args, api_name="/generate")), args
    for literal in ("NaN", "Infinity", "-Infinity", '"NaN"', '"1e999"', "1e999"):  # what gradio_client cannot send
        event, data = gradio_call(port, "generate", f'{{"data": ["{PROMPT}", {literal}, ["teacher DDIM-1"]]}}')
        assert event == "error" and "whole number" in _one_sentence(json.loads(data)["error"]), (literal, data)
    assert "'Motion' must be one of A, B, tie, both_bad" in _one_sentence(
        _app_error(client.predict, "x", "A", "A", "C", "A", api_name="/arena_vote")
    )
    assert "battle id must be the text" in _one_sentence(_app_error(client.predict, None, "A", "A", "A", "A", api_name="/arena_vote"))
    assert "does not exist" in _one_sentence(_app_error(client.predict, "x" * 10_000, "A", "A", "A", "A", api_name="/arena_vote"))
    assert "criterion must be one of" in _one_sentence(_app_error(client.predict, "speed", api_name="/leaderboard"))
    assert "Wrong admin token" in _one_sentence(_app_error(client.predict, "guess", api_name="/export_all"))
    assert "Wrong admin token" in _one_sentence(_app_error(client.predict, None, api_name="/export_all"))
    assert "characters; keep it under" in _one_sentence(_app_error(client.predict, "x" * 10_000, api_name="/arena_new"))
    assert store.count_votes() == 0


@requires_bundled_teacher
def test_rater_limits_through_the_api(limited_app):
    client, store, _ = limited_app
    battle_id, prompt_md, video_a, video_b, *_ = client.predict("", api_name="/arena_new")
    assert os.path.getsize(video_a) == os.path.getsize(video_b) == SERVED_VIDEO_BYTES
    answers = ("A", "B", "tie", "A")
    assert "Watch both videos first" in _one_sentence(_app_error(client.predict, battle_id, *answers, api_name="/arena_vote"))
    time.sleep(1.5)
    assert "vote stored" in client.predict(battle_id, *answers, api_name="/arena_vote")
    summary, table, heat, bars = client.predict("overall", api_name="/leaderboard")
    assert summary.startswith("1 votes from 1 independent rater so far; the board ranks the models once 2 raters have voted")
    assert table["data"] == [] and table["headers"][:2] == ["rank", "model"]
    assert heat["visible"] is False and heat["value"] is None and bars["visible"] is False  # a sentence, no empty axes

    from gradio_client import Client

    other = Client(client.src, verbose=False)  # a new session from the same address: the same rater
    ids = [other.predict("", api_name="/arena_new")[0] for _ in range(2)]  # 4 rounds a minute: 1 + 2 so far, one left
    ids.append(other.predict("", api_name="/arena_new")[0])
    assert "served 4 rounds in the last minute" in _one_sentence(_app_error(other.predict, "", api_name="/arena_new"))
    time.sleep(1.5)
    assert "vote stored" in other.predict(ids[0], *answers, api_name="/arena_vote")
    assert "cast 2 votes in the last 24 hours" in _one_sentence(_app_error(other.predict, ids[1], *answers, api_name="/arena_vote"))
    assert store.count_votes() == 2


@requires_bundled_teacher
def test_public_and_admin_exports_through_the_api(limited_app, tmp_path):
    import pandas as pd

    from dollar.votes import PUBLIC_COLUMNS

    client, store, _ = limited_app
    battle = store.create_battle("private-session", "my secret prompt", "user", 0, "teacher", "teacher DDIM-1", False, client_key="k")
    store.mark_shown(battle.id, "a", "b")
    store.record_vote(battle.id, "private-session", dict(ANSWERS), client_key="k")
    csv_path, jsonl_path = client.predict(api_name="/export")
    public = pd.read_csv(csv_path)
    assert list(public.columns) == list(PUBLIC_COLUMNS)
    with open(jsonl_path) as f:
        text = f.read()
    assert "my secret prompt" not in text and "private-session" not in text and battle.id not in text
    full_csv, _ = client.predict("s3cret-token", api_name="/export_all")
    full = pd.read_csv(full_csv)
    assert "my secret prompt" in set(full["prompt"]) and "private-session" in set(full["session_hash"])
