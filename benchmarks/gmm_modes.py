"""Mode coverage on a 2-D Gaussian mixture with an exact teacher: does consistency distillation
keep more modes than VSD alone? (METHOD.md: VSD is mode-seeking, CD restores diversity.)

    python benchmarks/gmm_modes.py --out benchmarks/results/gmm_modes.json

Two scenarios, each with an exact teacher (the posterior mean E[x0 | x_t] of a 4-mode mixture),
run by ``dollar.toys.distil_one_step``:

- ``teacher`` start: an unbalanced mixture (one heavy mode, three light ones). The student f(x_t, t)
  starts as a regression of the teacher, so its one-step sample from pure noise sits near the
  mixture's mean, as a real student initialised from its teacher does.
- ``collapsed`` start: a balanced mixture, and the student's one-step map G(z) = f(z, 999) starts
  collapsed onto mode 0 (f regresses the teacher at every other t). How much of the three lost
  modes does training bring back?

Then f is trained as a one-step generator with the library's ``vsd_loss`` (fake score learnt
online, two steps per generator step), its ``consistency_loss`` on mixture samples, or both. A
mode counts as kept when at least 2% of 4000 samples land within 4 standard deviations of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dollar.toys import RingMixture, distil_one_step  # noqa: E402

START_WEIGHTS = {"teacher": [0.7, 0.1, 0.1, 0.1], "collapsed": [0.25, 0.25, 0.25, 0.25]}
METHODS = {"VSD": (1.0, 0.0), "VSD+CD": (1.0, 1.0), "CD": (0.0, 1.0)}  # (VSD weight, CD weight)


def summarise(runs: list[dict], starts, iters_list, methods) -> dict:
    summary = {}
    for start in starts:
        heavy = 0  # the heavy mode, and the mode a collapsed start sits on
        for iters in iters_list:
            for method in methods:
                rows = [r for r in runs if (r["start"], r["iters"], r["method"]) == (start, iters, method)]
                summary[f"{start} start: {method} @ {iters}"] = {
                    "modes_kept_mean": sum(r["modes_kept"] for r in rows) / len(rows),
                    "other_modes_mass_mean": sum(sum(r["mode_mass"]) - r["mode_mass"][heavy] for r in rows) / len(rows),
                    "mode0_share_of_on_mode_mean": sum(r["mode_mass"][heavy] / max(r["on_mode_mass"], 1e-9) for r in rows) / len(rows),
                    "on_mode_mass_mean": sum(r["on_mode_mass"] for r in rows) / len(rows),
                }
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--starts", nargs="+", default=list(START_WEIGHTS), choices=list(START_WEIGHTS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--iters", type=int, nargs="+", default=[500, 1500])
    p.add_argument("--cd-weight", type=float, default=1.0)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gmm_modes.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"std": 0.08, "target_mass": {s: START_WEIGHTS[s] for s in args.starts}, "cd_weight": args.cd_weight, "runs": []}
    for start in args.starts:
        data = RingMixture(START_WEIGHTS[start])
        for iters in args.iters:
            for seed in args.seeds:
                for method in args.methods:
                    vsd_w, cd_w = METHODS[method]
                    began = time.perf_counter()
                    r = distil_one_step(data, vsd_weight=vsd_w, cd_weight=cd_w * args.cd_weight, iters=iters, start=start, seed=seed)
                    result["runs"].append(
                        {"start": start, "method": method, "iters": iters, "seed": seed, **r, "seconds": time.perf_counter() - began}
                    )
                    print(start, method, iters, seed, r, flush=True)
    result["summary"] = summarise(result["runs"], args.starts, args.iters, args.methods)
    print(json.dumps(result["summary"], indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
