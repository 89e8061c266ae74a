"""Distil a tiny decoder (dollar.models.TinyVideoDecoder) from a video VAE's decoder.

    python train/train_tiny_decoder.py --vae teacher --generated_from student-1 student-2 student-4 teacher --output_dir assets/tiny-decoder
    python train/train_tiny_decoder.py --vae runs/wan-vae --output_dir runs/wan-vae/tiny_decoder   # any VAE folder
    python train/train_tiny_decoder.py --config tiny.yaml --max_steps 300   # fields from a YAML file; flags win over it

``--vae`` is a pipeline (a bundled name, a folder with model_index.json) or a VAE folder saved
with ``save_pretrained`` (ours, ``AutoencoderKLWan``, ``AutoencoderKLLTXVideo``, ...). The tiny
decoder's latent channels and compression are read from that VAE, so a new VAE needs only this
command again. Reads top to bottom: fill a pool once (the VAE's latents of clips, plus latents
that the ``--generated_from`` pipelines sample for training-split captions, each with the full
decoder's video; cached on disk), build, loop, log, save. The target is the full decoder's video
of the same latents (``--real_weight`` adds the real clip); inputs are the normalised latents a
pipeline holds, jittered by ``--latent_noise``. Sampled latents matter: a generator's latents
sit off the encoder's (std ~1.3 instead of 1), and a decoder distilled on encoded clips alone
matched the full decoder at 34 dB on held-out clips but at 19-27 dB on the bundled models'
videos. A ``--generated_from`` pipeline that decodes with another VAE is skipped with a note,
so the same command works while a new VAE's teacher and students are still being retrained.
``--resume latest`` continues from the newest complete checkpoint; a stop at
``--time_limit_minutes`` checkpoints and also writes the decoder and its model card.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import Subset
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.checkpointing import end_step, resume_or_exit, start_log, warmup_cosine  # noqa: E402
from dollar.config import TrainerRunConfig, parse_config  # noqa: E402
from dollar.data import VideoFolderDataset, WorldVideoDataset, tensor_to_video  # noqa: E402
from dollar.distill_setup import optimizer_step  # noqa: E402
from dollar.metrics import psnr  # noqa: E402
from dollar.models.tiny_decoder import TinyVideoDecoder, vae_family, vae_fingerprint, vae_geometry  # noqa: E402
from dollar.models.video_vae import latent_statistics, reconstruction_loss  # noqa: E402


@dataclass
class TinyDecoderTrainConfig(TrainerRunConfig):
    output_dir: str = "assets/tiny-decoder"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    vae: str = "teacher"  # a pipeline (bundled name or folder) or a VAE folder
    data: str = ""  # a CSV (video_path,caption) or folder of clips; empty = the procedural world
    num_frames: int = 0  # clip size for the world (0: the world's 17x64x64)
    height: int = 0
    width: int = 0
    pool_clips: int = 2048  # clips encoded and decoded once, then sampled from (cached in --cache_dir)
    # model specs (student-1, teacher:steps=8, a folder) whose samples join the pool
    generated_from: list[str] = field(default_factory=list)
    generated_clips: int = 512  # latents sampled per --generated_from model
    sampled_fraction: float = -1.0  # share of each batch drawn from the sampled latents (-1: as many as their share of the pool)
    cache_dir: str = ""  # default: <output_dir>/cache
    block_out_channels: str = ""  # channels per level, e.g. "64,32"; empty = sized for the VAE's compression
    blocks_per_level: str = "1"  # memory blocks per level: one number, or one per level (e.g. "3,1")
    max_steps: int = 3000
    batch_size: int = 8
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    latent_noise: float = 0.05  # std of Gaussian jitter on the (unit-scale) input latents
    real_weight: float = 0.0  # weight of the loss against the real clip (0: the full decoder's video alone)
    eval_every: int = 250
    eval_clips: int = 16
    checkpoint_every: int = 200  # the other run fields (seed, resume, time_limit_minutes, ...): TrainerRunConfig


def load_vae(source: str):
    """The VAE of a pipeline (bundled name, folder, hub id) or a VAE folder, in fp32, eval mode."""
    import diffusers

    import dollar.models
    from dollar.pipeline import ModelLoadError, read_model_index, resolve_model

    def vae_class(name: str):
        cls = getattr(diffusers, name, None) or getattr(dollar.models, name, None)
        if cls is None:
            raise SystemExit(f"error: {source} holds a VAE of class {name}, which neither diffusers nor dollar.models has.")
        return cls

    try:
        path = resolve_model(source)
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    config_file = os.path.join(path, "config.json")
    if os.path.isfile(config_file):  # a VAE folder
        with open(config_file) as f:
            cls = vae_class(json.load(f).get("_class_name", ""))
        return cls.from_pretrained(path, torch_dtype=torch.float32).float().eval().requires_grad_(False)
    try:
        index = read_model_index(path)
    except ModelLoadError as err:
        raise SystemExit(f"error: --vae {source} is neither a VAE folder (config.json) nor a pipeline ({err})") from None
    if not index.get("vae") or index["vae"][1] is None:
        raise SystemExit(f"error: the pipeline {source} has no vae; pass a pipeline with one or a VAE folder.")
    cls = vae_class(index["vae"][1])
    return cls.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32).float().eval().requires_grad_(False)


def clip_source(cfg: TinyDecoderTrainConfig, split: str):
    """Training (``split='train'``: ``pool_clips``) or held-out (``'eval'``: ``eval_clips``) clips:
    the world's at the configured size, or those of ``--data``, whose last ``eval_clips`` are held out."""
    frames, height, width = clip_size(cfg)
    if cfg.data:
        clips = VideoFolderDataset(cfg.data, frames, height, width)
        held_out = min(cfg.eval_clips, len(clips) - 1)
        keep = range(len(clips) - held_out, len(clips)) if split == "eval" else range(len(clips) - held_out)
        return Subset(clips, list(keep))
    n, seed = (cfg.pool_clips, 0) if split == "train" else (cfg.eval_clips, 10_000)
    return WorldVideoDataset(n, seed=seed, split=split, two_object_fraction=0.3, num_frames=frames, height=height, width=width)


def clip_size(cfg: TinyDecoderTrainConfig) -> tuple[int, int, int]:
    return cfg.num_frames or world.NUM_FRAMES, cfg.height or world.HEIGHT, cfg.width or world.WIDTH


@torch.no_grad()
def encode_pool(vae, clips, n: int, keep_real: bool, progress: bool, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Normalised latents (fp16) of ``n`` clips, their full-decoder videos (uint8 [N, T, H, W, 3])
    and, with ``keep_real``, the clips themselves."""
    family = vae_family(vae)
    mean, std = latent_statistics(vae)
    out: dict[str, list] = {"latents": [], "targets": [], "real": []}
    for start in tqdm(range(0, n, batch_size), desc="encoding the pool", disable=not progress):
        x = torch.stack([clips[i % len(clips)]["video"] for i in range(start, min(start + batch_size, n))])
        z = vae.encode(x).latent_dist.mode()
        out["latents"].append(((z - mean) / std).half())
        out["targets"].append(torch.from_numpy(tensor_to_video(family.decode(vae, z).clamp(-1, 1))))
        if keep_real:
            out["real"].append(torch.from_numpy(tensor_to_video(x)))
    return {k: torch.cat(v) for k, v in out.items() if v}


def training_captions(cfg: TinyDecoderTrainConfig, n: int) -> list[str]:
    """``n`` captions to sample latents for: the world's training split (held-out combinations
    never appear), or those of ``--data``'s training clips."""
    clips = clip_source(cfg, "train")
    if cfg.data:
        return [clips.dataset.captions(clips.indices[i % len(clips)])[0] for i in range(n)]
    world_clips = WorldVideoDataset(n, seed=20_000, split="train", two_object_fraction=0.3)
    return [world_clips.captions(i, 1)[0] for i in range(n)]


@torch.no_grad()
def sample_pool(spec_text: str, vae, fingerprint: str, prompts: list[str], progress: bool, batch_size: int = 16) -> dict | None:
    """Normalised latents (fp16) that the pipeline of ``spec_text`` samples for ``prompts`` and
    their full-decoder videos (uint8); None, with a note, when that pipeline has another VAE."""
    from dollar.model_specs import load_pipeline, parse_model_spec
    from dollar.pipeline import ModelLoadError

    spec = parse_model_spec(spec_text)
    try:
        pipe = load_pipeline(spec, cache={})
    except ModelLoadError as err:
        raise SystemExit(f"error: --generated_from {spec_text}: {err}") from None
    if pipe.vae_fingerprint() != fingerprint:
        print(f"note: skipping --generated_from {spec_text}: it decodes with another VAE than --vae (retrain it on that VAE first)")
        return None
    family = vae_family(vae)
    mean, std = latent_statistics(vae)
    out: dict[str, list] = {"latents": [], "targets": []}
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"sampling {spec_text}", disable=not progress):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        z = pipe(chunk, num_inference_steps=spec.steps, guidance_scale=spec.guidance, generator=generators, output_type="latent").frames
        out["latents"].append(z.half())
        out["targets"].append(torch.from_numpy(tensor_to_video(family.decode(vae, z * std + mean).clamp(-1, 1))))
    return {k: torch.cat(v) for k, v in out.items()}


def build_pool(cfg: TinyDecoderTrainConfig, vae, fingerprint: str, accelerator) -> dict[str, torch.Tensor]:
    """The encoded clips and each generator's samples, each part cached on disk; ``has_real``
    marks the entries with a real clip (``real``, kept with ``--real_weight``)."""
    cache_dir = cfg.cache_dir or os.path.join(cfg.output_dir, "cache")
    size = "x".join(map(str, clip_size(cfg)))
    keep_real = cfg.real_weight > 0

    def cached(name: str, make) -> dict | None:
        path = os.path.join(cache_dir, f"{name}.safetensors")
        if os.path.exists(path):
            return load_file(path)
        part = make()
        if part is not None and accelerator.is_main_process:
            os.makedirs(cache_dir, exist_ok=True)
            save_file(part, path)
        return part

    encoded = cached(
        f"pool-{fingerprint}-{cfg.pool_clips}-{size}{'-real' if keep_real else ''}",
        lambda: encode_pool(vae, clip_source(cfg, "train"), cfg.pool_clips, keep_real, accelerator.is_main_process),
    )
    parts = [encoded]
    prompts = training_captions(cfg, cfg.generated_clips) if cfg.generated_from else []
    for spec in cfg.generated_from:
        slug = "".join(c if c.isalnum() else "_" for c in spec)[-60:]
        make = functools.partial(sample_pool, spec, vae, fingerprint, prompts, accelerator.is_main_process)
        part = cached(f"sampled-{fingerprint}-{slug}-{cfg.generated_clips}", make)
        if part is not None and part["targets"].shape[1:] != encoded["targets"].shape[1:]:
            raise SystemExit(f"error: {spec} samples videos of shape {tuple(part['targets'].shape[1:])}; the clips are {size}.")
        parts.append(part)
    parts = [p for p in parts if p is not None]
    pool = {k: torch.cat([p[k] for p in parts]) for k in ("latents", "targets")}
    pool["has_real"] = torch.zeros(len(pool["latents"]), dtype=torch.bool)
    if keep_real:
        pool["has_real"][: len(encoded["real"])] = True
        pool["real"] = encoded["real"]
    return pool


def draw_batch(n: int, n_encoded: int, batch_size: int, sampled_fraction: float, g: torch.Generator) -> torch.Tensor:
    """Pool indices of one batch: uniform over the pool, or with ``sampled_fraction`` (0..1) of
    the batch, on average, from the sampled latents (indices ``n_encoded`` and up)."""
    if sampled_fraction < 0 or n == n_encoded:
        return torch.randint(0, n, (batch_size,), generator=g)
    sampled = torch.rand(batch_size, generator=g) < sampled_fraction
    encoded_idx = torch.randint(0, n_encoded, (batch_size,), generator=g)
    sampled_idx = torch.randint(n_encoded, n, (batch_size,), generator=g)
    return torch.where(sampled, sampled_idx, encoded_idx)


def frames_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


@torch.no_grad()
def evaluate(tiny, vae, cfg: TinyDecoderTrainConfig, sampled: dict | None = None) -> dict:
    """Mean PSNR (dB) of the tiny decoder against the full decoder on held-out clips (split
    'eval'): ``clips`` on their encoded latents, ``sampled`` on latents a generator sampled for
    held-out captions (``sampled``: from :func:`sample_pool`; None: not measured)."""
    family = vae_family(vae)
    mean, std = latent_statistics(vae)
    clips = clip_source(cfg, "eval")
    scores = []
    tiny.eval()
    for i in range(len(clips)):
        z = vae.encode(clips[i]["video"][None]).latent_dist.mode()
        scores.append(psnr(tiny((z - mean) / std).sample.clamp(-1, 1), family.decode(vae, z).clamp(-1, 1)))
    result = {"clips": float(np.mean(scores)), "sampled": None}
    if sampled is not None:
        videos = tiny(sampled["latents"].float()).sample.clamp(-1, 1)
        result["sampled"] = float(np.mean([psnr(v, t) for v, t in zip(videos, frames_to_tensor(sampled["targets"]))]))
    tiny.train()
    return result


@torch.no_grad()
def decode_times(tiny, vae, z: torch.Tensor, rounds: int = 5) -> dict:
    """Median seconds of one decode of ``z`` (normalised) by the full and the tiny decoder, taking turns."""
    family = vae_family(vae)
    mean, std = latent_statistics(vae)
    times: dict[str, list] = {"full": [], "tiny": []}
    tiny.eval()
    for i in range(rounds + 2):
        for name, fn in (("full", lambda: family.decode(vae, z * std + mean)), ("tiny", lambda: tiny(z))):
            start = time.perf_counter()
            fn()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(cfg: TinyDecoderTrainConfig) -> dict:
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    vae = load_vae(cfg.vae).to(accelerator.device)
    channels, temporal, spatial = vae_geometry(vae)
    fingerprint = vae_fingerprint(vae)
    accelerator.print(f"VAE {type(vae).__name__} ({fingerprint}): {channels} latent channels, {temporal}x temporal, {spatial}x spatial")

    pool = build_pool(cfg, vae, fingerprint, accelerator)
    n, n_encoded = pool["latents"].shape[0], cfg.pool_clips
    accelerator.print(f"pool: {n} latents, {n_encoded} of them encoded clips")

    blocks = tuple(int(b) for b in str(cfg.blocks_per_level).split(","))
    arch = {"blocks_per_level": blocks[0] if len(blocks) == 1 else blocks}
    if cfg.block_out_channels:
        arch["block_out_channels"] = tuple(int(c) for c in cfg.block_out_channels.split(","))
    try:
        tiny = TinyVideoDecoder.for_vae(vae, **arch).train()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    accelerator.print(
        f"tiny decoder: {sum(p.numel() for p in tiny.parameters()) / 1e3:.0f}k parameters, levels {tiny.config.block_out_channels}"
    )
    optimizer = torch.optim.AdamW(tiny.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, cfg.max_steps)
    tiny, optimizer, schedule = accelerator.prepare(tiny, optimizer, schedule)

    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    saved = resume_or_exit(accelerator, cfg.resume, ckpt_root)
    step = saved["step"] if saved else 0
    log, start, bar = start_log(accelerator, cfg.output_dir, step, cfg.max_steps)
    last_eval = None
    held_out_sampled = None
    if cfg.generated_from:  # the first generator's samples for held-out captions: the fidelity a user sees
        eval_clips = clip_source(cfg, "eval")
        captions = [eval_clips[i]["caption"] for i in range(len(eval_clips))]
        held_out_sampled = sample_pool(cfg.generated_from[0], vae, fingerprint, captions, progress=False)
    while step < cfg.max_steps:
        # Batches are a function of the step, so a resumed run sees the same data.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = draw_batch(n, n_encoded, cfg.batch_size, cfg.sampled_fraction, g)
        z = pool["latents"][idx].float()
        z = z + cfg.latent_noise * torch.randn(z.shape, generator=g)
        pred = tiny(z.to(accelerator.device)).sample
        loss = reconstruction_loss(pred, frames_to_tensor(pool["targets"][idx]).to(accelerator.device))
        real = pool["has_real"][idx]
        if cfg.real_weight > 0 and real.any():  # sampled latents have no real clip
            target = frames_to_tensor(pool["real"][idx[real]]).to(accelerator.device)
            loss = loss + cfg.real_weight * real.float().mean() * reconstruction_loss(pred[real.to(pred.device)], target)
        optimizer_step(accelerator, optimizer, loss, tiny)
        schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"step": step, "seconds": round(time.time() - start, 1), "loss": loss.item(), "lr": schedule.get_last_lr()[0]}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            last_eval = evaluate(accelerator.unwrap_model(tiny), vae, cfg, held_out_sampled)
            record["eval_psnr_vs_full"], record["eval_psnr_sampled_vs_full"] = last_eval["clips"], last_eval["sampled"]
            sampled = f", {last_eval['sampled']:.2f} dB on {cfg.generated_from[0]}'s samples" if last_eval["sampled"] is not None else ""
            accelerator.print(f"step {step}: held-out PSNR against the full decoder {last_eval['clips']:.2f} dB on clips{sampled}")
        if end_step(accelerator, cfg, log, record, ckpt_root, step, cfg.max_steps, start):
            break  # out of time: the decoder so far is still written below
    bar.close()
    tiny = accelerator.unwrap_model(tiny).eval()
    final = evaluate(tiny, vae, cfg, held_out_sampled) if last_eval is None or step % cfg.eval_every else last_eval
    summary = {"step": step, "eval_psnr_vs_full": final["clips"], "eval_psnr_sampled_vs_full": final["sampled"]}
    if accelerator.is_main_process:
        summary["decode_s"] = decode_times(tiny, vae, pool["latents"][:1].float().to(accelerator.device))
        summary["threads"] = torch.get_num_threads()
        tiny.save_pretrained(cfg.output_dir)
        with open(os.path.join(cfg.output_dir, "train_summary.json"), "w") as f:
            json.dump({**summary, "config": asdict(cfg)}, f, indent=2)
        write_model_card(cfg, tiny, vae, summary)
        accelerator.print(
            f"saved the tiny decoder (step {step}, {summary['eval_psnr_vs_full']:.2f} dB against the full decoder) to {cfg.output_dir}"
        )
    return summary


def write_model_card(cfg: TinyDecoderTrainConfig, tiny, vae, summary: dict) -> None:
    c = tiny.config
    params = sum(p.numel() for p in tiny.parameters())
    t = summary["decode_s"]
    stopped = (
        " (stopped by --time_limit_minutes; the same command with `--resume latest` continues)" if summary["step"] < cfg.max_steps else ""
    )
    generated = f" --generated_from {' '.join(cfg.generated_from)}" if cfg.generated_from else ""
    command = (
        f"python train/train_tiny_decoder.py --vae {cfg.vae}{generated} --output_dir {cfg.output_dir} "
        f"--max_steps {cfg.max_steps} --time_limit_minutes {cfg.time_limit_minutes:g}"
    )
    sampled = (
        f"\n- on latents that `{cfg.generated_from[0]}` samples for those clips' (held-out) captions: **{summary['eval_psnr_sampled_vs_full']:.2f} dB**"
        if summary.get("eval_psnr_sampled_vs_full") is not None
        else ""
    )
    pool = f"{cfg.pool_clips} encoded clips" + (
        f" and {cfg.generated_clips} samples of each of {', '.join(cfg.generated_from)}" if generated else ""
    )
    text = f"""---
library_name: diffusers
tags: [video, vae, tiny-decoder, distillation]
license: apache-2.0
---

# Tiny video decoder

A TAEHV-style decoder ({params / 1e3:.0f}k parameters; 2-D convolutions, memory blocks across
frames, temporal upsampling) distilled from the decoder of `{cfg.vae}` ({c.vae_class}, fingerprint
`{c.vae_fingerprint}`): {c.latent_channels} latent channels, {c.temporal_compression}x temporal and
{c.spatial_compression}x spatial compression, levels {list(c.block_out_channels)}. It reads the
normalised latents a pipeline holds after denoising and gives the video, for previews and fast
apps; the full decoder stays the reference.

Use it with `pipe(prompt, decoder="tiny")` or `python -m dollar.generate ... --fast_decode`. A
pipeline takes it from `<pipeline folder>/tiny_decoder`, else from the bundled `assets/tiny-decoder`,
and only when its fingerprint matches the pipeline's VAE.

## Measured at the end of training

- step {summary["step"]} of {cfg.max_steps}{stopped}, batch {cfg.batch_size}, on a pool of {pool}
- PSNR against the full decoder on {cfg.eval_clips} held-out clips' encoded latents: **{summary["eval_psnr_vs_full"]:.2f} dB**{sampled}
- one clip's decode on {summary["threads"]} CPU thread(s): full {1000 * t["full"]:.1f} ms, tiny {1000 * t["tiny"]:.1f} ms
  ({t["full"] / t["tiny"]:.1f}x; timed during training, so the machine may have been busy: see
  `benchmarks/results/fast_decode.json` for the paired benchmark and the checker's verdicts)

## Retrain it (a new VAE: one command)

```bash
{command}
```

The latent channels and compression come from the VAE's config, so the same command serves a
VAE with other latents (48 channels, 4x spatial, a stock Wan or LTX VAE); `--generated_from`
models that decode with another VAE are skipped with a note. Training config:
`train_summary.json`; curve: `train_log.jsonl`.
"""
    with open(os.path.join(cfg.output_dir, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(parse_config(TinyDecoderTrainConfig))
