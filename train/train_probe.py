"""Train the attribute probe (dollar/models/probe.py) on ground-truth world videos.

    python train/train_probe.py --threads 2 --output_dir assets/probe   # ~25 minutes on 2 CPU threads
    python train/train_probe.py --clips 512 --steps 30 --output_dir /tmp/probe   # a smoke run
    python train/train_probe.py ... --resume latest   # continue from the newest complete checkpoint

Reads top to bottom: render the training clips (split "train": the 64 held-out colour-shape-
motion combinations never appear), train, measure the probe on held-out clips (the 64 held-out
prompts, and two-object scenes), save ``diffusion_pytorch_model.safetensors`` + ``config.json``
+ ``probe_eval.json`` + a README.md model card with the measured accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.checkpointing import load_checkpoint, save_checkpoint  # noqa: E402
from dollar.models.probe import AttributeProbe, attribute_accuracy, probe_loss, probe_targets  # noqa: E402
from dollar.reports import probe_card  # noqa: E402

DEFAULTS = dict(
    output_dir="assets/probe",
    clips=3000,  # rendered once and kept in memory (~0.2 MB each)
    two_object_fraction=0.4,
    steps=1500,
    batch_size=32,
    learning_rate=4e-3,
    weight_decay=1e-4,
    warmup_steps=30,
    seed=0,
    eval_seeds=4,  # renders of each of the 64 held-out prompts
    eval_pairs=128,  # two-object held-out scenes
    threads=1,
    log_every=25,
    checkpoint_every=100,  # to <output_dir>/checkpoints/step-*, the newest keep_checkpoints kept
    keep_checkpoints=2,
    resume="",  # "latest": the newest complete checkpoint; or a checkpoint folder
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key}", type=type(value), default=value)
    args = p.parse_args(argv)
    for key in ("clips", "steps", "batch_size", "eval_seeds", "eval_pairs", "threads", "checkpoint_every", "keep_checkpoints"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be a positive integer, got {getattr(args, key)}")
    return args


def render_training_clips(n: int, two_object_fraction: float, seed: int, mask_frame_stride: int):
    """``n`` world clips (uint8 [n, T, H, W, 3]), their scenes (split "train"), and each
    object's visible coverage in every ``mask_frame_stride``-th frame (uint8 0-255
    [n, 2, T', H, W]; zeros where a clip has one object)."""
    rng = np.random.default_rng(seed)
    videos = np.empty((n, world.NUM_FRAMES, world.HEIGHT, world.WIDTH, 3), dtype=np.uint8)
    mask_frames = range(0, world.NUM_FRAMES, mask_frame_stride)
    masks = np.zeros((n, 2, len(mask_frames), world.HEIGHT, world.WIDTH), dtype=np.uint8)
    scenes = []
    for i in range(n):
        level = 2 if rng.random() < two_object_fraction else 1
        videos[i], _, scene = world.make_sample(seed * 1_000_003 + i, level=level, split="train")
        m = world.render_masks(scene, frames=mask_frames)
        masks[i, : len(m)] = np.rint(m * 255)
        scenes.append(scene)
    return videos, scenes, masks


def heldout_eval_sets(eval_seeds: int, eval_pairs: int):
    """The 64 held-out prompts rendered ``eval_seeds`` times, and two-object "eval" scenes."""
    singles, single_objs = [], []
    for p in world.heldout_prompts():
        for s in range(eval_seeds):
            singles.append(world.render(world.make_scene(p.objects, p.background, seed=900_000 + s)))
            single_objs.append(p.objects)
    pairs, pair_objs = [], []
    for s in range(eval_pairs):
        video, _, scene = world.make_sample(700_000 + s, level=2, split="eval")
        pairs.append(video)
        pair_objs.append(scene.objects)
    return (np.stack(singles), single_objs), (np.stack(pairs), pair_objs)


class GeneratorState:
    """A numpy Generator as accelerate checkpoints it (``state_dict`` / ``load_state_dict``)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def main(argv=None) -> dict:
    from accelerate import Accelerator

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    probe = AttributeProbe()
    videos, scenes, masks = render_training_clips(args.clips, args.two_object_fraction, args.seed, probe.config.silhouette_frame_stride)
    print(f"rendered {len(videos)} training clips in {time.perf_counter() - start:.0f} s")

    targets = [probe_targets(s, probe) for s in scenes]
    opt = torch.optim.AdamW(probe.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    accelerator = Accelerator(cpu=True)
    accelerator.register_for_checkpointing(probe, opt, GeneratorState(rng))  # with torch's and numpy's global RNG states
    ckpt_root = os.path.join(args.output_dir, "checkpoints")
    try:
        saved = load_checkpoint(accelerator, args.resume, ckpt_root)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    first, log = (saved["step"] + 1, saved["log"]) if saved else (1, [])
    probe.train()
    for step in range(first, args.steps + 1):
        lr = args.learning_rate * min(step / args.warmup_steps, 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(videos), args.batch_size)
        present = torch.stack([targets[i]["colours"] for i in idx])
        # one object per clip per step; two-object clips alternate between their objects
        which = [int(rng.integers(len(targets[i]["objects"]))) for i in idx]
        objects = torch.stack([targets[i]["objects"][j] for i, j in zip(idx, which)])
        object_masks = torch.from_numpy(masks[idx, which].astype(np.float32) / 255.0)
        losses = probe_loss(probe, probe.prepare(videos[idx]), present, objects, object_masks)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        if step % args.log_every == 0 or step == args.steps:
            row = {"step": step, "lr": lr, **{k: round(v.item(), 4) for k, v in losses.items()}}
            log.append(row)
            print(json.dumps(row), flush=True)
        if step % args.checkpoint_every == 0 and step < args.steps:
            save_checkpoint(
                accelerator, os.path.join(ckpt_root, f"step-{step:07d}"), {"step": step, "log": log}, keep=args.keep_checkpoints
            )
    train_seconds = time.perf_counter() - start

    probe.eval()
    (singles, single_objs), (pairs, pair_objs) = heldout_eval_sets(args.eval_seeds, args.eval_pairs)
    result = {
        "heldout_single_object": attribute_accuracy(probe, singles, single_objs),
        "heldout_two_object": attribute_accuracy(probe, pairs, pair_objs),
        # each clip against the next prompt's objects (clips come in runs of eval_seeds per prompt)
        "shuffled_prompts_single_object": attribute_accuracy(
            probe, singles, single_objs[args.eval_seeds :] + single_objs[: args.eval_seeds]
        ),
        "train_seconds": train_seconds,
        "threads": args.threads,
        "config": vars(args),
    }
    print(json.dumps({k: result[k] for k in ("heldout_single_object", "heldout_two_object", "shuffled_prompts_single_object")}, indent=1))

    os.makedirs(args.output_dir, exist_ok=True)
    probe.save_pretrained(args.output_dir, safe_serialization=True)
    with open(os.path.join(args.output_dir, "probe_eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.output_dir, "train_log.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in log)
    with open(os.path.join(args.output_dir, "README.md"), "w") as f:
        f.write(probe_card(result, probe))
    print(f"saved to {args.output_dir} ({time.perf_counter() - start:.0f} s in all)")
    return result


if __name__ == "__main__":
    main()
