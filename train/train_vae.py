"""Train the video VAE on the procedural world (dollar.models.CausalVideoAutoencoder).

    python train/train_vae.py --output_dir assets/vae --max_steps 1500
    python train/train_vae.py --config vae.yaml --max_steps 300      # fields from a YAML file; flags win over it

Reads top to bottom: build, loop, log, save. Resumes from the newest complete checkpoint in
``<output_dir>/checkpoints`` with ``--resume latest``. The loss is L1 + MSE on pixels (object pixels weighted up, an optional edge term) plus a small L2 pull on the latents.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.checkpointing import end_step, resume_or_exit, start_log, warmup_cosine  # noqa: E402
from dollar.config import TrainerRunConfig, parse_config  # noqa: E402
from dollar.data import WorldVideoDataset, foreground_mask, object_crops  # noqa: E402
from dollar.distill_setup import optimizer_step  # noqa: E402
from dollar.metrics import psnr  # noqa: E402
from dollar.models import TINY_VAE_CONFIG, CausalVideoAutoencoder  # noqa: E402
from dollar.models.video_vae import reconstruction_loss  # noqa: E402


@dataclass
class VAETrainConfig(TrainerRunConfig):
    output_dir: str = "assets/vae"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    max_steps: int = 1500
    batch_size: int = 4
    learning_rate: float = 6e-4
    warmup_steps: int = 100
    latent_weight: float = 1e-4  # L2 on latents keeps their scale tame
    foreground_weight: float = 4.0  # extra loss weight on object pixels (they are ~5% of a clip)
    edge_weight: float = 0.0  # weight of the image-gradient (edge) term of the pixel loss; corners are what tells shapes apart
    two_object_fraction: float = 0.3
    eval_every: int = 250
    eval_videos: int = 32
    init_from: str = ""  # start from a saved VAE folder
    decoder_only: bool = False  # with init_from: train the decoder alone, keeping the latent space
    vae_config: str = ""  # JSON (inline or a file) of CausalVideoAutoencoder kwargs over the default, e.g. '{"patch_size": 2}'
    # Train on windows of the clips (0: whole clips): a multiple of the spatial compression, and 4k+1 frames.
    # Each step then costs a fraction of a whole-clip step and sees the objects, not the background.
    crop_size: int = 0
    crop_frames: int = 0


# Every argument CausalVideoAutoencoder takes, the keys --vae_config may set.
ARCHITECTURE_KEYS = set(inspect.signature(CausalVideoAutoencoder.__init__).parameters) - {"self"}


def vae_kwargs(spec: str, base: dict | None = None) -> dict:
    """The architecture ``base`` (default ``TINY_VAE_CONFIG``) with the keys of ``spec`` (JSON text or a JSON file) over it."""
    kwargs = dict(TINY_VAE_CONFIG if base is None else base)
    if spec:
        try:
            text = open(spec).read() if os.path.isfile(spec) else spec
            extra = json.loads(text)
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"error: --vae_config must be JSON text or a JSON file of CausalVideoAutoencoder arguments ({err}).") from None
        unknown = sorted(set(extra) - set(kwargs) - ARCHITECTURE_KEYS)
        if unknown:
            raise SystemExit(f"error: --vae_config has unknown keys {unknown}; use {sorted(kwargs)}.")
        kwargs.update(extra)
    return kwargs


def grown_vae(init_from: str, spec: str) -> CausalVideoAutoencoder:
    """A VAE of ``init_from``'s architecture with ``spec``'s changes over it, starting from every
    weight of ``init_from`` whose name and shape still fit (the rest freshly initialised)."""
    old = CausalVideoAutoencoder.from_pretrained(init_from)
    vae = CausalVideoAutoencoder(**vae_kwargs(spec, {k: v for k, v in old.config.items() if k in ARCHITECTURE_KEYS}))
    mine = vae.state_dict()
    kept = {k: v for k, v in old.state_dict().items() if k in mine and mine[k].shape == v.shape}
    vae.load_state_dict(kept, strict=False)
    print(f"{init_from}: {len(kept)} of {len(mine)} tensors kept for the changed architecture")
    return vae


def evaluate(vae, n: int) -> float:
    """Mean reconstruction PSNR (dB) on held-out world videos (split 'eval')."""
    vae.eval()
    scores = []
    with torch.no_grad():
        for seed in range(n):
            ds = WorldVideoDataset(1, seed=10_000 + seed, split="eval", two_object_fraction=0.3)
            x = ds[0]["video"][None]
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
            scores.append(psnr(recon.clamp(-1, 1), x))
    vae.train()
    return float(np.mean(scores))


def main(cfg: VAETrainConfig) -> None:
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    if cfg.init_from and cfg.vae_config:
        vae = grown_vae(cfg.init_from, cfg.vae_config)
    elif cfg.init_from:
        vae = CausalVideoAutoencoder.from_pretrained(cfg.init_from)
    else:
        vae = CausalVideoAutoencoder(**vae_kwargs(cfg.vae_config))
    if cfg.decoder_only:
        # Fine-tune the decoder of a VAE a teacher already works with: the latent space (and
        # its statistics) stays exactly the same, so the teacher needs no retraining.
        if not cfg.init_from:
            raise SystemExit("error: --decoder_only needs --init_from <trained VAE folder>.")
        vae.encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, cfg.max_steps)
    # The clips follow --seed, so a fine-tune with another seed sees clips the first run never did.
    dataset = WorldVideoDataset(cfg.max_steps * cfg.batch_size, seed=cfg.seed, two_object_fraction=cfg.two_object_fraction)
    vae, optimizer, schedule = accelerator.prepare(vae, optimizer, schedule)
    saved = resume_or_exit(accelerator, cfg.resume, ckpt_root)
    step = saved["step"] if saved else 0
    log, start, bar = start_log(accelerator, cfg.output_dir, step, cfg.max_steps)
    crop_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # a resumed run draws new windows
    while step < cfg.max_steps:
        batch = torch.stack([dataset[step * cfg.batch_size + i]["video"] for i in range(cfg.batch_size)])
        if cfg.crop_size or cfg.crop_frames:
            batch = object_crops(batch, cfg.crop_size or batch.shape[-1], cfg.crop_frames or batch.shape[2], crop_rng)
        batch = batch.to(accelerator.device)
        # Deterministic latents (the posterior mean) with a small pull towards the prior: sampling
        # the untrained posterior buries the signal in unit noise and stalls training.
        with torch.set_grad_enabled(not cfg.decoder_only):
            z = vae.encode(batch).latent_dist.mode()
        recon = vae.decode(z).sample
        rec = reconstruction_loss(recon, batch, 1.0 + cfg.foreground_weight * foreground_mask(batch), cfg.edge_weight)
        kl = z.pow(2).mean()
        loss = rec + cfg.latent_weight * kl
        optimizer_step(accelerator, optimizer, loss, vae)
        schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {
            "step": step,
            "seconds": round(time.time() - start, 1),
            "loss": loss.item(),
            "rec": rec.item(),
            "latent_l2": kl.item(),
            "lr": schedule.get_last_lr()[0],
        }
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            record["eval_psnr"] = evaluate(accelerator.unwrap_model(vae), cfg.eval_videos)
            accelerator.print(f"step {step}: held-out PSNR {record['eval_psnr']:.2f} dB")
        if end_step(accelerator, cfg, log, record, ckpt_root, step, cfg.max_steps, start):
            break  # out of time: the weights so far are saved too, so the folder is a usable VAE
    bar.close()
    vae = accelerator.unwrap_model(vae)
    if not cfg.decoder_only:
        set_latent_statistics(vae, n=256)
    vae.save_pretrained(cfg.output_dir)
    accelerator.print(f"saved {cfg.output_dir} (step {step} of {cfg.max_steps})")


def set_latent_statistics(vae, n: int) -> None:
    """Per-channel latent mean/std over training clips, stored in the VAE's own buffers."""
    dataset = WorldVideoDataset(n, seed=123_456, two_object_fraction=0.3)
    with torch.no_grad():
        z = torch.cat([vae.encode(dataset[i]["video"][None]).latent_dist.mode() for i in range(n)])
    vae.latents_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
    vae.latents_std.copy_(z.std(dim=(0, 2, 3, 4)))


if __name__ == "__main__":
    main(parse_config(VAETrainConfig))
