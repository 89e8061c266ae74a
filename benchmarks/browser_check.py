"""A new user's first visit, in a real (headless) browser (dollar/browser_walk.py): start
`python app.py`, open the page, generate a comparison, rate five blind battles, see them on the
leaderboard, try bad input. Screenshots go to docs/app/*.png, a summary to
benchmarks/results/browser_check.json.

apt-get install -y chromium && pip install playwright
python benchmarks/browser_check.py   # uses Debian chromium (no browser download); tests/test_system.py runs the same walk
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dollar.browser_walk import find_chromium, run_walk  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--chromium", default=find_chromium() or "/usr/bin/chromium")
    p.add_argument("--battles", type=int, default=5)
    p.add_argument("--shots", default=os.path.join(ROOT, "docs", "app"), help="folder for the screenshots")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "browser_check.json"))
    args = p.parse_args()
    report = run_walk(args.chromium, os.path.join(ROOT, "app.py"), args.shots, args.battles)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
