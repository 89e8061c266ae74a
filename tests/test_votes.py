import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conftest import require_postgres
from dollar.local_servers import start_postgres
from dollar.votes import (
    FULL_COLUMNS,
    PUBLIC_COLUMNS,
    BattleRow,
    HubMirror,
    RaterLimits,
    StoreError,
    VoteError,
    VoteRow,
    VoteStore,
    default_db_url,
)

ANSWERS = dict(visual_quality="A", text_alignment="tie", motion="B", overall="both_bad")


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (apt `postgresql`), started here and stopped at the end;
    skipped where PostgreSQL or psycopg is not installed."""
    require_postgres()
    folder = tempfile.mkdtemp(prefix="dollar-pg-")  # not under pytest's 0700 folders: the server user must reach it
    url, stop = start_postgres(folder, "-c fsync=off")
    try:
        yield url.rsplit("/", 1)[0]  # without the database: each test creates its own
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield VoteStore(f"sqlite:///{tmp_path / 'votes.sqlite'}", app_version="test-1")
        return
    server = request.getfixturevalue("postgres_server")
    name = f"t{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    store = VoteStore(f"{server}/{name}", app_version="test-1")
    yield store
    store.engine.dispose()


def shown_battle(store, session="s1", origin="heldout", a="teacher", b="teacher DDIM-4", swapped=True, client=None, check=None):
    battle = store.create_battle(session, "a red circle moving left", origin, 7, a, b, swapped, client_key=client, check_side=check)
    return store.mark_shown(battle.id, "hash-a", "hash-b")


def test_vote_round_trip_keeps_every_field(store):
    battle = shown_battle(store)
    vote = store.record_vote(battle.id, "s1", ANSWERS)
    (stored,) = store.votes()
    assert stored == vote
    expected = dict(
        battle_id=battle.id,
        session_hash="s1",
        prompt="a red circle moving left",
        prompt_origin="heldout",
        counts_for_board=True,
        seed=7,
        model_a="teacher",
        model_b="teacher DDIM-4",
        swapped=True,
        video_hash_a="hash-a",
        video_hash_b="hash-b",
        app_version="test-1",
        **ANSWERS,
    )
    assert {k: stored[k] for k in expected} == expected
    assert 0 <= stored["time_to_vote_s"] < 5
    assert stored["created_at"].endswith("Z")
    assert store.get_battle(battle.id).status == "voted"


def test_second_vote_is_refused_and_nothing_changes(store):
    battle = shown_battle(store)
    store.record_vote(battle.id, "s1", ANSWERS)
    with pytest.raises(VoteError, match="already has its vote"):
        store.record_vote(battle.id, "s1", dict(ANSWERS, overall="A"))
    assert store.count_votes() == 1
    assert store.votes()[0]["overall"] == "both_bad"


def test_one_vote_per_battle_is_enforced_by_the_database(store):
    """Even a writer that skips the store's checks cannot add a second vote row."""
    battle = shown_battle(store)
    first = store.record_vote(battle.id, "s1", ANSWERS)
    row = {k: v for k, v in first.items() if k not in ("id", "created_at")}
    with store.engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(sa.insert(VoteRow).values(**row, created_at=sa.func.current_timestamp()))
    assert store.count_votes() == 1


def test_racing_votes_on_one_battle_store_exactly_one(store):
    battle = shown_battle(store)
    results, barrier = [], threading.Barrier(12)

    def vote(i):
        barrier.wait()
        try:
            store.record_vote(battle.id, "s1", dict(ANSWERS, overall="A" if i % 2 else "B"))
            results.append("ok")
        except VoteError as err:
            results.append(str(err))

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1
    assert all("already has its vote" in r for r in results if r != "ok")
    assert store.count_votes() == 1


@pytest.mark.parametrize(
    "battle_id, message",
    [("not-a-uuid", "does not exist"), ("00000000-0000-0000-0000-000000000000", "does not exist"), ("x" * 10_000, "does not exist")],
)
def test_vote_for_a_missing_battle_is_refused(store, battle_id, message):
    with pytest.raises(VoteError, match=message):
        store.record_vote(battle_id, "s1", ANSWERS)
    assert store.count_votes() == 0


def test_vote_for_an_expired_battle_is_refused(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}", battle_ttl_s=0.2)
    battle = shown_battle(store)
    time.sleep(0.3)
    with pytest.raises(VoteError, match="expired"):
        store.record_vote(battle.id, "s1", ANSWERS)
    assert store.count_votes() == 0
    assert store.get_battle(battle.id).status == "open"  # refused, not consumed


def test_vote_from_another_session_is_refused(store):
    battle = shown_battle(store, session="alice")
    with pytest.raises(VoteError, match="another session"):
        store.record_vote(battle.id, "mallory", ANSWERS)
    assert store.count_votes() == 0


@pytest.mark.parametrize(
    "answers, message",
    [
        ({k: v for k, v in ANSWERS.items() if k != "motion"}, "missing: Motion"),
        (dict(ANSWERS, motion=None), "missing: Motion"),
        (dict(ANSWERS, overall="C"), "must be one of"),
    ],
)
def test_incomplete_or_invalid_answers_are_refused_and_the_battle_stays_open(store, answers, message):
    battle = shown_battle(store)
    with pytest.raises(VoteError, match=message):
        store.record_vote(battle.id, "s1", answers)
    assert store.count_votes() == 0
    store.record_vote(battle.id, "s1", ANSWERS)  # the battle can still take its one vote
    assert store.count_votes() == 1


def test_skipped_and_void_battles_take_no_vote(store):
    skipped, void = shown_battle(store), shown_battle(store)
    store.skip_battle(skipped.id, "s1")
    store.void_battle(void.id, "RuntimeError: out of memory")
    with pytest.raises(VoteError, match="skipped"):
        store.record_vote(skipped.id, "s1", ANSWERS)
    with pytest.raises(VoteError, match="void") as refused:
        store.record_vote(void.id, "s1", ANSWERS)
    assert "out of memory" not in str(refused.value)  # the stored reason may name a model's files: it stays on the server
    assert store.count_votes() == 0
    assert store.battle_status_counts() == {"skipped": 1, "void": 1}


def test_pair_counts_count_open_and_voted_battles_only(store):
    voted = shown_battle(store, a="teacher", b="student-1")
    store.record_vote(voted.id, "s1", ANSWERS)
    shown_battle(store, a="student-1", b="teacher")  # open: the same unordered pair
    store.void_battle(shown_battle(store, a="teacher", b="student-2").id, "failed")
    store.skip_battle(shown_battle(store, a="teacher", b="student-4").id, "s1")
    assert store.pair_counts() == {frozenset(("teacher", "student-1")): 2}


def test_user_prompts_are_stored_but_flagged_off_the_board(store):
    battle = shown_battle(store, origin="user")
    store.record_vote(battle.id, "s1", ANSWERS)
    assert store.votes()[0]["counts_for_board"] is False
    with pytest.raises(VoteError, match="prompt_origin"):
        store.create_battle("s1", "p", "somewhere", 0, "a", "b", False)


def test_public_export_holds_counted_votes_only_and_no_private_field(store, tmp_path):
    for overall in ("A", "B", "tie"):
        store.record_vote(shown_battle(store, client="k1").id, "s1", dict(ANSWERS, overall=overall))
    own = shown_battle(store, origin="user", client="k1")
    store.record_vote(own.id, "s1", ANSWERS)  # a user's own prompt: stored, never public
    csv_path, jsonl_path = store.export_public(str(tmp_path))
    csv = pd.read_csv(csv_path)
    with open(jsonl_path) as f:
        rows = [json.loads(line) for line in f]
    assert list(csv.columns) == list(PUBLIC_COLUMNS) and all(list(r) == list(PUBLIC_COLUMNS) for r in rows)
    assert list(csv["overall"]) == ["A", "B", "tie"] == [r["overall"] for r in rows]
    full_csv, full_jsonl = store.export_full(str(tmp_path))
    full = pd.read_csv(full_csv)
    assert len(full) == 4 and {"session_hash", "client_key", "battle_id", "seed", "time_to_vote_s", "rater_flagged", "counted"} <= set(
        full.columns
    )
    assert list(full["counted"]) == [True, True, True, False]
    assert os.path.dirname(full_csv) != os.path.dirname(csv_path)  # two exports never share a file


def test_raters_failing_their_checks_are_kept_but_not_counted(store):
    for rater, answer in (("careful", "B"), ("careless", "A")):
        check = shown_battle(store, client=rater, a="broken copy (check)", b="teacher", check="B")
        store.record_vote(check.id, "s1", dict(ANSWERS, overall=answer))
        store.record_vote(shown_battle(store, client=rater).id, "s1", ANSWERS)
    votes = store.votes_dataframe()
    assert len(votes) == 4 and store.count_votes() == 4  # all kept
    assert set(votes.loc[votes["rater_flagged"], "rater"]) == {"careless"}
    board = store.board_votes()
    assert list(board["rater"]) == ["careful"]  # check rounds never count; the careless rater's vote neither
    assert store.pair_counts() == {frozenset(("teacher", "teacher DDIM-4")): 2}  # a check battle is not a pair of models
    # passing later checks clears the flag (a failure rate under one half)
    for _ in range(2):
        check = shown_battle(store, client="careless", a="teacher", b="broken copy (check)", check="A")
        store.record_vote(check.id, "s1", dict(ANSWERS, overall="A"))
    assert set(store.board_votes()["rater"]) == {"careful", "careless"}


def test_a_vote_counts_only_after_the_videos_had_time_to_play(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}", limits=RaterLimits(min_view_s=0.6, battles_per_minute=0, votes_per_day=0))
    battle = shown_battle(store)
    with pytest.raises(VoteError, match=r"Watch both videos first: votes open 0.6 s after the round starts"):
        store.record_vote(battle.id, "s1", ANSWERS)
    assert store.get_battle(battle.id).status == "open"
    time.sleep(0.7)
    store.record_vote(battle.id, "s1", ANSWERS)
    assert store.count_votes() == 1


def test_limits_hold_per_client_whatever_session_it_claims(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}", limits=RaterLimits(min_view_s=0, battles_per_minute=3, votes_per_day=2))
    key = store.rater_key("10.0.0.1")
    assert key != store.rater_key("10.0.0.2") and "10.0.0.1" not in key
    battles = []
    for i in range(3):
        store.check_battle_rate(key)
        battles.append(shown_battle(store, session=f"s{i}", client=key))
    with pytest.raises(VoteError, match="served 3 rounds in the last minute"):
        store.check_battle_rate(key)
    store.check_battle_rate(store.rater_key("10.0.0.2"))  # another address is not held back
    store.record_vote(battles[0].id, "s0", ANSWERS, client_key=key)
    store.record_vote(battles[1].id, "s1", ANSWERS, client_key=key)
    with pytest.raises(VoteError, match="cast 2 votes in the last 24 hours"):
        store.record_vote(battles[2].id, "s2", ANSWERS, client_key=key)
    assert store.count_votes() == 2


def test_the_tables_keep_their_column_order():
    """CREATE TABLE and the full export follow it; the columns battles and votes share come from
    mixins, which sort_order keeps in place."""
    shared = "prompt prompt_origin counts_for_board seed model_a model_b swapped video_hash_a video_hash_b".split()
    rater = ["client_key", "check_side"]
    battle = "id session_hash created_at shown_at expires_at".split() + shared + ["pool_item", "status", "void_reason"] + rater
    assert [c.name for c in BattleRow.__table__.columns] == battle
    vote = ["id", "battle_id", "session_hash", "created_at", *shared, *"visual_quality text_alignment motion overall".split()]
    vote += ["time_to_vote_s", "app_version", *rater]
    assert list(FULL_COLUMNS) == [*vote, "rater", "rater_flagged", "counted"]


def test_a_store_from_before_the_rater_columns_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE battles (id VARCHAR(36) PRIMARY KEY, session_hash VARCHAR(128), created_at DATETIME, "
            "shown_at DATETIME, expires_at DATETIME, prompt TEXT, prompt_origin VARCHAR(16), counts_for_board BOOLEAN, seed BIGINT, "
            "model_a VARCHAR(256), model_b VARCHAR(256), swapped BOOLEAN, video_hash_a VARCHAR(64), video_hash_b VARCHAR(64), "
            "pool_item VARCHAR(64), status VARCHAR(16), void_reason TEXT)"
        )
    engine.dispose()
    store = VoteStore(f"sqlite:///{path}")
    store.record_vote(shown_battle(store, client="k").id, "s1", ANSWERS, client_key="k")
    assert store.votes()[0]["client_key"] == "k"


def _read_only(path):
    """Make ``path`` read-only even for root (chattr +i); undo with the returned function."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        return lambda: os.chmod(path, 0o755)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_folder_is_one_sentence_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    undo = _read_only(empty)
    try:
        with pytest.raises(StoreError) as refused:
            VoteStore(f"sqlite:///{empty / 'votes.sqlite'}")
    finally:
        undo()
    message = str(refused.value)
    assert f"in {empty} could not" in message and "writable" in message and "DOLLAR_DATA_DIR" in message
    assert "\n" not in message and "SQL" not in message and "Traceback" not in message


def test_database_failures_mid_run_are_one_sentence_without_sql_or_hidden_fields(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    store = VoteStore(f"sqlite:///{folder / 'votes.sqlite'}")
    battle = shown_battle(store, a="teacher", b="student-4")
    store.engine.dispose()
    files = [folder, *folder.iterdir()]
    undo = [_read_only(f) for f in files]
    try:
        for call in (
            lambda: store.create_battle("s1", "p", "heldout", 0, "secret-model-a", "secret-model-b", False),
            lambda: store.record_vote(battle.id, "s1", ANSWERS),
        ):
            with pytest.raises(StoreError) as refused:
                call()
            message = str(refused.value)
            assert message.startswith(f"The vote store in {folder} could not") and "writable" in message
            for hidden in ("INSERT", "UPDATE", "secret-model", "student-4", "teacher", "[SQL", "\n"):
                assert hidden not in message, message
    finally:
        for u in undo:
            u()


def test_an_unreachable_database_server_is_one_sentence_naming_the_url_without_password():
    with pytest.raises(StoreError) as refused:
        VoteStore("postgresql+psycopg://voter:hunter2@127.0.0.1:1/votes")
    message = str(refused.value)
    assert "postgresql+psycopg://voter:***@127.0.0.1:1/votes" in message and "hunter2" not in message and "DOLLAR_DB_URL" in message


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_votes_survive_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'v.sqlite'}"
    first = VoteStore(url)
    first.record_vote(shown_battle(first).id, "s1", ANSWERS)
    first.engine.dispose()
    assert VoteStore(url).count_votes() == 1


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DOLLAR_DB_URL", raising=False)
    monkeypatch.setenv("DOLLAR_DATA_DIR", str(tmp_path / "d"))
    assert default_db_url() == f"sqlite:///{tmp_path / 'd' / 'votes.sqlite'}"
    assert os.path.isdir(tmp_path / "d")
    monkeypatch.setenv("DOLLAR_DB_URL", "postgresql+psycopg://u@h/db")
    assert default_db_url() == "postgresql+psycopg://u@h/db"


def test_hub_mirror_appends_each_vote_under_the_scheduler_lock(tmp_path):
    class Scheduler:  # CommitScheduler's contract: uploads the folder, writers hold .lock
        def __init__(self):
            self.lock = threading.Lock()

    scheduler = Scheduler()
    mirror = HubMirror("me/votes", str(tmp_path / "mirror"), scheduler=scheduler)
    store = VoteStore(f"sqlite:///{tmp_path / 'v.sqlite'}", mirror=mirror)
    store.record_vote(shown_battle(store).id, "s1", ANSWERS)
    store.record_vote(shown_battle(store).id, "s1", dict(ANSWERS, overall="A"))
    with open(mirror.path) as f:
        assert [json.loads(line) for line in f] == store.votes()
    assert HubMirror.from_env(str(tmp_path)) is None  # off unless DOLLAR_HF_DATASET is set
