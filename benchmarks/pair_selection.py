"""How many votes does the arena need to learn the true order? Active pair selection (the pair
whose order is least certain under the current Bradley-Terry fit) against least-compared.

    python benchmarks/pair_selection.py [--replicates 200] [--out benchmarks/results/pair_selection.json]

Simulated raters (``dollar.ranking.simulate_pairing``) vote on models with known strengths:
``--random_share`` of the answers are coin flips, ``--tie_share`` ties, the rest Bradley-Terry
draws. For each rule and each vote budget, the share of replicates whose fitted order is
exactly the true one (95% Wilson interval); the votes needed for 95% recovery (the first
budget on the grid where it is reached) with a bootstrap interval over replicates. Writes
JSON and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.metrics import wilson_interval  # noqa: E402
from dollar.ranking import ELO_SCALE, PAIRING_RULES, simulate_pairing  # noqa: E402

# Seven models as in the arena (teacher-50, teacher DDIM-1/2/4, students 1/2/4), with gaps of
# 30-70 Elo between neighbours: close enough that the order takes thousands of votes.
DEFAULT_ELO = (1130, 1080, 1050, 1000, 960, 920, 850)


def votes_to_target(hits: np.ndarray, grid: list[int], target: float) -> float:
    """The first budget on ``grid`` where the recovery rate over replicates reaches ``target``
    (inf when none does)."""
    rate = hits.mean(axis=0)
    reached = np.nonzero(rate >= target)[0]
    return float(grid[reached[0]]) if len(reached) else float("inf")


def finite(votes: float) -> float | None:
    """None for a target never reached within the grid (JSON has no infinity)."""
    return float(votes) if np.isfinite(votes) else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--elo", type=float, nargs="+", default=list(DEFAULT_ELO), help="true strengths (Elo) of the simulated models")
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--max_votes", type=int, default=6400)
    p.add_argument("--random_share", type=float, default=0.1)
    p.add_argument("--tie_share", type=float, default=0.1)
    p.add_argument("--grid_points", type=int, default=32, help="vote budgets checked, log-spaced from 50 to --max_votes")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "pair_selection.json"))
    args = p.parse_args()
    if len(args.elo) < 2 or args.replicates < 10 or args.max_votes < 50:
        raise SystemExit("Give at least two --elo values, --replicates >= 10 and --max_votes >= 50.")
    beta = (np.asarray(args.elo) - np.mean(args.elo)) / ELO_SCALE
    grid = sorted({int(round(v)) for v in np.geomspace(50, args.max_votes, args.grid_points)})
    start = time.perf_counter()
    result = {
        "true_elo": args.elo,
        "replicates": args.replicates,
        "random_share": args.random_share,
        "tie_share": args.tie_share,
        "target": args.target,
        "votes_grid": grid,
        "rules": {},
    }
    boot = np.random.default_rng(12345)
    for rule in PAIRING_RULES:
        hits = np.array(
            [
                simulate_pairing(beta, rule, grid, np.random.default_rng(r), random_share=args.random_share, tie_share=args.tie_share)
                for r in range(args.replicates)
            ]
        )
        rate = hits.mean(axis=0)
        draws = [votes_to_target(hits[boot.integers(0, len(hits), len(hits))], grid, args.target) for _ in range(args.bootstrap)]
        result["rules"][rule] = {
            "recovery_rate": rate.tolist(),
            "recovery_wilson95": [wilson_interval(float(r), len(hits)) for r in rate],
            "votes_to_target": finite(votes_to_target(hits, grid, args.target)),
            "votes_to_target_bootstrap95": [finite(np.percentile(draws, q, method="nearest")) for q in (2.5, 97.5)],
        }
        print(f"{rule}: {args.target:.0%} recovery after {result['rules'][rule]['votes_to_target']} votes", flush=True)
    lc, ac = (result["rules"][r]["votes_to_target"] for r in PAIRING_RULES)
    result["least_compared_over_active_votes"] = lc / ac if lc and ac else None
    result["seconds"] = time.perf_counter() - start
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.splitext(args.out)[0] + ".png")
    return 0


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = result["votes_grid"]
    for rule, r in result["rules"].items():
        lo, hi = zip(*r["recovery_wilson95"])
        ax.plot(grid, r["recovery_rate"], marker="o", label=f"{rule} ({r['votes_to_target'] or 'no'} votes to {result['target']:.0%})")
        ax.fill_between(grid, lo, hi, alpha=0.2)
    ax.axhline(result["target"], color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("votes")
    ax.set_ylabel("true order recovered (share of replicates)")
    ax.set_title(f"{len(result['true_elo'])} models, {result['replicates']} simulated arenas each")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
