"""Checker motion accuracy broken down by motion word, with colour accuracy and the mean
dynamic-degree reward, for quick model comparisons (one seed by default).

    python benchmarks/motion_by_kind.py --models teacher /path/to/run ... --split train|heldout [--seeds N] [--out F.json]

``heldout``: the 64 held-out prompts; ``train``: 64 training-distribution prompts (seeds 900000+),
for choosing checkpoints without looking at the held-out set. Teachers run 50 DDIM steps with
their default guidance, students their own steps. A short diagnostic, not a report: the full
measurements are benchmarks/foundation.py and benchmarks/students.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import DollarPipeline, world  # noqa: E402
from dollar.evaluation import check_video  # noqa: E402
from dollar.rewards import get_reward  # noqa: E402


def prompts_for(split: str) -> list[tuple[str, tuple]]:
    if split == "heldout":
        return [(p.prompt, p.objects) for p in world.heldout_prompts()]
    return [(cap, scene.objects) for cap, scene in (world.make_sample(900_000 + s, level=1, split="train")[1:] for s in range(64))]


def motion_by_kind(model: str, split: str, seeds: int = 1, steps: int | None = None) -> dict:
    """Seed s, prompt i -> generator s * 100000 + i (as benchmarks/students.py). ``steps``: sample
    with this many steps instead of the model's own (a 4-step student at 1 step, say)."""
    pipe = DollarPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 50} if pipe.config.student_timesteps is None else {}
    if steps:
        kw = {"num_inference_steps": steps}
    reward_fn = get_reward("motion")
    hits, confusions = collections.defaultdict(lambda: [0, 0]), collections.Counter()
    colour_ok, rewards = [], []
    prompts = prompts_for(split)
    for seed in range(seeds):
        for start in range(0, len(prompts), 16):
            chunk = prompts[start : start + 16]
            gens = [torch.Generator().manual_seed(seed * 100_000 + start + i) for i in range(len(chunk))]
            out = pipe([c for c, _ in chunk], generator=gens, **kw)
            rewards.extend(reward_fn(np.stack(out.frames), [c for c, _ in chunk]).tolist())
            for frames, (_, objects) in zip(out.frames, chunk):
                for obj, verdict in zip(objects, check_video(frames, objects)):
                    hits[obj.motion][0] += verdict.motion_ok
                    hits[obj.motion][1] += 1
                    colour_ok.append(verdict.colour_ok)
                    confusions[f"{obj.motion} -> {verdict.motion}"] += 1
    total = sum(h for h, _ in hits.values()) / sum(n for _, n in hits.values())
    return {
        "model": model,
        "split": split,
        "seeds": seeds,
        "steps": steps or kw.get("num_inference_steps") or len(pipe.config.student_timesteps),
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
