"""A new user's first visit, in a real (headless) browser: start `python app.py`, open the page,
generate a comparison, rate five blind battles, see them on the leaderboard, try bad input.
benchmarks/browser_check.py runs it (screenshots in docs/app/), tests/test_system.py too.
Needs Debian's chromium (no browser download) and Playwright.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from dollar.local_servers import free_port, wait_for_http

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # on a closed network Chromium's own connections fail noisily
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """Debian's Chromium (or any `chromium` on PATH); None when absent."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def run_walk(chromium: str, app_path: str, shots: str, battles: int = 5) -> dict:
    """Start ``python app_path`` (app.py) on a fresh data folder, walk through it in the headless
    Chromium at ``chromium``, screenshots to the folder ``shots``, and return the report (``ok``
    is False with ``error`` set when a step failed)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=180_000)  # rendering on a busy 2-core machine can take a while

    os.makedirs(shots, exist_ok=True)
    data = tempfile.mkdtemp(prefix="browser-check-")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, DOLLAR_DATA_DIR=data, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    log = open(os.path.join(data, "app.log"), "w")
    t0 = time.perf_counter()
    # One browser rates five rounds in a row: the per-address limits, check rounds and the board's
    # rater minimum would stop it (tests/test_app.py checks them), so they are off for this walk.
    relaxed = ["--min-view-s", "0", "--battles-per-minute", "0", "--votes-per-day", "0", "--check-rate", "0", "--min-raters", "1"]
    app = subprocess.Popen(
        [sys.executable, app_path, *relaxed], cwd=os.path.dirname(os.path.abspath(app_path)), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    report: dict = {"steps": []}

    def step(name: str, **facts):
        report["steps"].append(dict(step=name, t_s=round(time.perf_counter() - t0, 1), **facts))
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} {facts if facts else ''}")

    def shot(page, name: str):
        page.screenshot(path=os.path.join(shots, name), full_page=True)

    try:
        wait_for_http(url, app, timeout=180, name="app.py")
        step("python app.py serving", url=url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            expect(page.locator("#generate")).to_be_visible()
            shot(page, "01_start.png")
            step("page open")

            # 1. Generate & compare: every model, one prompt, one seed.
            page.locator("#prompt textarea").fill("a red circle moving left on a black background")
            page.locator("#generate").click()
            expect(page.locator("#timings")).to_contain_text("teacher DDIM-4")
            videos = page.locator("video")
            expect(videos.first).to_be_visible()
            page.wait_for_timeout(1500)
            n_videos = sum(1 for i in range(videos.count()) if videos.nth(i).is_visible())
            shot(page, "02_generate_compare.png")
            step("comparison generated", videos_shown=n_videos, timings=page.locator("#timings").inner_text()[:600])

            # 2. Arena: five blind battles.
            page.get_by_role("tab", name="Arena (blind rating)").click()
            reveals = []
            picks = ["A is better", "B is better", "Tie", "Both are bad"]
            previous = ""
            for i in range(battles):
                page.locator("#new-round").click()
                battle = page.locator("#battle-id input, #battle-id textarea").first
                page.wait_for_function(
                    "([sel, prev]) => { const e = document.querySelector(sel); return e && e.value && e.value !== prev; }",
                    arg=["#battle-id input, #battle-id textarea", previous],
                )
                previous = battle.input_value()
                expect(page.locator("#video-a video")).to_be_visible()
                expect(page.locator("#video-b video")).to_be_visible()
                if i == 0:
                    page.wait_for_timeout(1000)
                    shot(page, "03_arena_battle.png")
                for j, criterion in enumerate(("visual_quality", "text_alignment", "motion", "overall")):
                    page.locator(f"#q-{criterion}").get_by_text(picks[(i + j) % 4], exact=True).click()
                page.locator("#submit-vote").click()
                expect(page.locator("#vote-result")).to_contain_text("vote stored")
                reveals.append(page.locator("#vote-result").inner_text())
                if i == 0:
                    shot(page, "04_arena_revealed.png")
            step("battles rated", battles=len(reveals), reveals=reveals)

            # A second vote on the same battle: the button is off, and the server refuses it anyway (tested in tests/).
            submit_enabled = page.locator("#submit-vote").is_enabled()

            # 3. Leaderboard.
            page.get_by_role("tab", name="Leaderboard").click()
            page.locator("#refresh").click()
            expect(page.locator("#board-summary")).to_contain_text(f"{battles} votes from 1 raters count for the board")
            page.wait_for_timeout(1500)
            shot(page, "05_leaderboard.png")
            step("leaderboard", summary=page.locator("#board-summary").inner_text()[:200], board=page.locator("#board").inner_text()[:600])

            # 4. Bad input: an empty prompt, then a negative seed; the page says what to do and keeps working.
            page.get_by_role("tab", name="Generate & compare").click()
            page.locator("#prompt textarea").fill("")
            page.locator("#generate").click()
            expect(page.get_by_text("The prompt is empty").first).to_be_visible()
            page.wait_for_timeout(1200)  # let the message finish fading in
            shot(page, "06_bad_input.png")
            page.locator("#prompt textarea").fill("a blue square bouncing")
            page.locator("#seed input").fill("-5")
            page.locator("#generate").click()
            expect(page.get_by_text("whole number from 0").first).to_be_visible()
            step("bad input answered", empty_prompt=True, negative_seed=True)
            browser.close()
        report.update(ok=True, submit_enabled_after_vote=submit_enabled, videos_in_comparison=n_videos)
    except Exception as err:
        report.update(ok=False, error=f"{type(err).__name__}: {err}"[:2000])
        print(report["error"], file=sys.stderr)
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()
    report["screenshots"] = sorted(f for f in os.listdir(shots) if f.endswith(".png"))
    if not report["ok"]:
        with open(os.path.join(data, "app.log")) as f:
            report["app_log_tail"] = f.read()[-3000:]
    shutil.rmtree(data, ignore_errors=True)
    return report
