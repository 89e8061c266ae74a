"""Train the attribute probe (dollar/models/probe.py) on ground-truth world videos.

    python train/train_probe.py --threads 2 --output_dir assets/probe   # ~25 minutes on 2 CPU threads
    python train/train_probe.py --clips 512 --steps 30 --output_dir /tmp/probe   # a smoke run
    python train/train_probe.py ... --resume latest   # continue from the newest complete checkpoint
    python train/train_probe.py --config probe.yaml --steps 300   # fields from a YAML file; flags win over it

Reads top to bottom: render the training clips (split "train": the 64 held-out colour-shape-
motion combinations never appear), train, measure the probe on held-out clips (the 64 held-out
prompts, and two-object scenes), save ``diffusion_pytorch_model.safetensors`` + ``config.json``
+ ``probe_eval.json`` + a README.md model card with the measured accuracy.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.checkpointing import resume_or_exit, save_checkpoint  # noqa: E402
from dollar.config import parse_config  # noqa: E402
from dollar.models.probe import AttributeProbe, attribute_accuracy, probe_loss, probe_targets  # noqa: E402
from dollar.reports import probe_card  # noqa: E402


@dataclass
class ProbeTrainConfig:
    output_dir: str = "assets/probe"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    clips: int = 3000  # rendered once and kept in memory (~0.2 MB each)
    two_object_fraction: float = 0.4
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 4e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    seed: int = 0
    eval_seeds: int = 4  # renders of each of the 64 held-out prompts
    eval_pairs: int = 128  # two-object held-out scenes
    threads: int = 1
    log_every: int = 25
    checkpoint_every: int = 100  # to <output_dir>/checkpoints/step-*, the newest keep_checkpoints kept
    keep_checkpoints: int = 2
    resume: str = ""  # "latest": the newest complete checkpoint; or a checkpoint folder


def validate(cfg: ProbeTrainConfig) -> None:
    """Every user error, with one sentence, before any work starts."""
    for key in (
        "clips",
        "steps",
        "batch_size",
        "warmup_steps",
        "eval_seeds",
        "eval_pairs",
        "threads",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
        if getattr(cfg, key) < 1:
            raise SystemExit(f"error: --{key} must be a positive whole number, got {getattr(cfg, key)}.")


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


def main(cfg: ProbeTrainConfig) -> dict:
    from accelerate import Accelerator

    validate(cfg)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()

    probe = AttributeProbe()
    videos, scenes, masks = render_training_clips(cfg.clips, cfg.two_object_fraction, cfg.seed, probe.config.silhouette_frame_stride)
    print(f"rendered {len(videos)} training clips in {time.perf_counter() - start:.0f} s")

    targets = [probe_targets(s, probe) for s in scenes]
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    accelerator = Accelerator(cpu=True)
    accelerator.register_for_checkpointing(probe, opt, GeneratorState(rng))  # with torch's and numpy's global RNG states
    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    saved = resume_or_exit(accelerator, cfg.resume, ckpt_root)
    first, log = (saved["step"] + 1, saved["log"]) if saved else (1, [])
    probe.train()
    for step in range(first, cfg.steps + 1):
        lr = cfg.learning_rate * min(step / cfg.warmup_steps, 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(videos), cfg.batch_size)
        present = torch.stack([targets[i]["colours"] for i in idx])
        # one object per clip per step; two-object clips alternate between their objects
        which = [int(rng.integers(len(targets[i]["objects"]))) for i in idx]
        objects = torch.stack([targets[i]["objects"][j] for i, j in zip(idx, which)])
        object_masks = torch.from_numpy(masks[idx, which].astype(np.float32) / 255.0)
        losses = probe_loss(probe, probe.prepare(videos[idx]), present, objects, object_masks)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "lr": lr, **{k: round(v.item(), 4) for k, v in losses.items()}}
            log.append(row)
            print(json.dumps(row), flush=True)
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(accelerator, os.path.join(ckpt_root, f"step-{step:07d}"), {"step": step, "log": log}, keep=cfg.keep_checkpoints)
    train_seconds = time.perf_counter() - start

    probe.eval()
    (singles, single_objs), (pairs, pair_objs) = heldout_eval_sets(cfg.eval_seeds, cfg.eval_pairs)
    result = {
        "heldout_single_object": attribute_accuracy(probe, singles, single_objs),
        "heldout_two_object": attribute_accuracy(probe, pairs, pair_objs),
        # each clip against the next prompt's objects (clips come in runs of eval_seeds per prompt)
        "shuffled_prompts_single_object": attribute_accuracy(probe, singles, single_objs[cfg.eval_seeds :] + single_objs[: cfg.eval_seeds]),
        "train_seconds": train_seconds,
        "threads": cfg.threads,
        "config": asdict(cfg),
    }
    print(json.dumps({k: result[k] for k in ("heldout_single_object", "heldout_two_object", "shuffled_prompts_single_object")}, indent=1))

    os.makedirs(cfg.output_dir, exist_ok=True)
    probe.save_pretrained(cfg.output_dir, safe_serialization=True)
    with open(os.path.join(cfg.output_dir, "probe_eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(cfg.output_dir, "train_log.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in log)
    with open(os.path.join(cfg.output_dir, "README.md"), "w") as f:
        f.write(probe_card(result, probe))
    print(f"saved to {cfg.output_dir} ({time.perf_counter() - start:.0f} s in all)")
    return result


if __name__ == "__main__":
    main(parse_config(ProbeTrainConfig))
