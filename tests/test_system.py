"""The app as its users meet it, with real system programs: a new user's walk through
`python app.py` in headless Chromium (Playwright), and concurrent raters voting through the
API against SQLite and a real PostgreSQL server. `.ci/run` installs Chromium and PostgreSQL
(Debian) and sets DOLLAR_SYSTEM_TESTS=1, so these fail there instead of skipping.
The walk and the load are dollar/browser_walk.py and dollar/arena_load.py; the full-size runs are
`python benchmarks/browser_check.py` and `python benchmarks/arena_load.py`."""

import os

import pytest

from conftest import ROOT, require_chromium, require_postgres, requires_bundled_teacher
from dollar.arena_load import run_load
from dollar.browser_walk import run_walk

pytestmark = pytest.mark.slow  # minutes each; .ci/run runs them after the fast suite


@requires_bundled_teacher
def test_new_user_walk_in_a_real_browser(tmp_path):
    chromium = require_chromium()

    report = run_walk(chromium, os.path.join(ROOT, "app.py"), shots=str(tmp_path), battles=5)

    assert report["ok"], report.get("error", "") + "\n" + report.get("app_log_tail", "")
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["comparison generated"]["videos_shown"] >= 2
    assert "speedup" in steps["comparison generated"]["timings"]
    assert steps["battles rated"]["battles"] == 5
    assert all("vote stored" in r for r in steps["battles rated"]["reveals"])
    assert "5 votes from 1 raters count for the board" in steps["leaderboard"]["summary"]
    assert report["submit_enabled_after_vote"] is False
    assert {"01_start.png", "02_generate_compare.png", "05_leaderboard.png", "06_bad_input.png"} <= set(report["screenshots"])


@requires_bundled_teacher
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_raters_store_every_vote_exactly_once(backend):
    pytest.importorskip("gradio_client")
    if backend == "postgresql":
        require_postgres()
    # A smaller run than the benchmark's 20 x 1000 (benchmarks/results/arena_load*.json): 20
    # clients, 100 votes, battles from a small pool of the fast few-step models.
    models = ["teacher DDIM-1", "teacher DDIM-2", "teacher DDIM-4"]
    result = run_load(os.path.join(ROOT, "app.py"), clients=20, votes=100, pool_rounds=12, models=models, postgres=backend == "postgresql")

    assert result["backend"].startswith(backend)
    assert result["errors"] == 0, result["error_examples"]
    assert result["votes_stored"] == 100 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["second_vote_refused"] == "20/20"
    assert result["simultaneous_double_vote_ok"], result["simultaneous_double_vote"]
    assert result["ok"]
