"""The arena logic (dollar.arena) without a browser, then app.py served in-process and driven
through gradio_client the way an API user would."""

import json
import os
import random
import socket
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from conftest import ROOT, requires_bundled_teacher
from dollar.arena import (
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
)
from dollar.pipeline import ModelLoadError
from dollar.votes import BattleRow, VoteError, VoteStore

ANSWERS = dict(visual_quality="A", text_alignment="B", motion="tie", overall="both_bad")
PROMPT = "a red circle moving left on a black background"
FAST = [ModelEntry(f"teacher DDIM-{k}", "teacher", k, "baseline") for k in (1, 2, 4)]


# --- input checks and pairing --------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, message",
    [("", "prompt is empty"), ("   ", "prompt is empty"), (None, "prompt is empty"), ("x" * 10_000, "10000 characters; keep it under 500")],
)
def test_bad_prompts_get_one_clear_sentence(prompt, message):
    with pytest.raises(ArenaError, match=message):
        check_prompt(prompt)


def test_good_prompts_are_kept():
    assert check_prompt(f"  {PROMPT} ") == PROMPT


@pytest.mark.parametrize("seed", [-1, 2**32, 1e30, 1.5, float("nan"), "abc", None, True])
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
    students = [s for s in ("student-1", "student-2", "student-4") if os.path.exists(os.path.join(ROOT, "assets", s, "model_index.json"))]
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
        assert shown == dict(zip(item.models, item.videos))  # the swap moved videos with their models
    assert arena.new_battle("s2").battle_id  # another session starts on the pool again
    assert store.get_battle(arena.new_battle("s2").battle_id).pool_item is not None
    with pytest.raises(ArenaError, match="build-pool"):
        BattlePool(str(tmp_path / "nowhere"))


def test_build_pool_command_refuses_unknown_models(tmp_path, capsys):
    from dollar.arena import main

    assert main(["build-pool", "--out", str(tmp_path), "--rounds", "1", "--models", "teacher,student-9"]) == 2
    assert "Unknown model(s) student-9" in capsys.readouterr().err


# --- app.py in-process, driven through gradio_client ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    import sys

    sys.path.insert(0, ROOT)
    from gradio_client import Client

    import app

    data = tmp_path_factory.mktemp("app-data")
    port = _free_port()
    demo, launch_kwargs = app.create_app(["--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port), "--threads", "2"])
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
    assert "not in the list of choices" in _app_error(client.predict, PROMPT, 3, ["student-9"], api_name="/generate")
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
    assert summary.startswith(f"{before + 5} votes count for the board")
    assert sum(r[table["headers"].index("votes")] for r in table["data"]) == 2 * (before + 5)
    csv_path, jsonl_path = client.predict(api_name="/export")
    with open(jsonl_path) as f:
        assert [json.loads(line)["battle_id"] for line in f] == [v["battle_id"] for v in store.votes()]
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
    assert "1 more on users' own prompts" in summary
    assert "not in the list of choices" in _app_error(client.predict, "speed", api_name="/leaderboard")
