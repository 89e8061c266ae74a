"""Checker motion accuracy broken down by motion word, with colour accuracy and the mean
dynamic-degree reward, for quick model comparisons (one seed by default).

    python benchmarks/motion_by_kind.py --models teacher /path/to/run ... --split train|heldout [--seeds N] [--out F.json]

``heldout``: the 64 held-out prompts; ``train``: 64 training-distribution prompts (seeds 900000+),
for choosing checkpoints without looking at the held-out set. Teachers run 50 DDIM steps with
their default guidance, students their own steps. A short diagnostic, not a report: the full
measurements are benchmarks/foundation.py and benchmarks/students.py, which render the same way.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.checker import check_video  # noqa: E402
from dollar.evaluate import render_seeds  # noqa: E402
from dollar.model_specs import ModelSpec, load_pipeline  # noqa: E402
from dollar.rewards import get_reward  # noqa: E402


def prompts_for(split: str) -> list[world.PromptSpec]:
    if split == "heldout":
        return world.heldout_prompt_specs()
    return world.sampled_prompt_specs(64, offset=900_000, level=1, split="train")


def motion_by_kind(model: str, split: str, seeds: int = 1, steps: int | None = None) -> dict:
    """Rendered as every evaluation (:func:`dollar.evaluate.render`). ``steps``: sample with this
    many steps instead of the model's own (a 4-step student at 1 step, say)."""
    pipe = load_pipeline(model)
    steps = steps or (50 if pipe.config.student_timesteps is None else None)
    prompts = prompts_for(split)
    videos = render_seeds(pipe, ModelSpec(model, model, steps=steps), prompts, range(seeds))
    every = prompts * seeds  # the prompt of each video
    rewards = get_reward("motion")(videos, [p.prompt for p in every]).tolist()
    hits, confusions = collections.defaultdict(lambda: [0, 0]), collections.Counter()
    colour_ok = []
    for frames, p in zip(videos, every):
        for obj, verdict in zip(p.objects, check_video(frames, p.objects)):
            hits[obj["motion"]][0] += verdict.motion_ok
            hits[obj["motion"]][1] += 1
            colour_ok.append(verdict.colour_ok)
            confusions[f"{obj['motion']} -> {verdict.motion}"] += 1
    total = sum(h for h, _ in hits.values()) / sum(n for _, n in hits.values())
    return {
        "model": model,
        "split": split,
        "seeds": seeds,
        "steps": steps or len(pipe.config.student_timesteps),
        "motion": total,
        "colour": float(np.mean(colour_ok)),
        "motion_reward_mean": float(np.mean(rewards)),
        "by_motion": {k: v for k, v in sorted(hits.items())},
        "read_as": dict(confusions),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--split", choices=("heldout", "train"), default="train")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="sampling steps for every model (default: each model's own)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    rows = []
    for m in args.models:
        rows.append(motion_by_kind(m, args.split, args.seeds, args.steps))
        r = rows[-1]
        print(
            f"{m}: motion {100 * r['motion']:.1f}%, colour {100 * r['colour']:.1f}%, motion reward {r['motion_reward_mean']:.4f} on {args.split} prompts",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
