"""Why the bundled VAE is our own: stock diffusers video VAEs against ours at the same
compression (8x spatial, 4x temporal, 12 channels), measured in one run.

    python benchmarks/vae_choice.py [--steps 60] [--out benchmarks/results/vae_choice.json]

For each: parameters, encode and decode time for one 17x64x64 clip (median of 5), one
training step on 4 clips, and the PSNR reached after ``--steps`` steps fitting 4 world clips
(same data, optimizer and learning rate for all).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.data import WorldVideoDataset  # noqa: E402
from dollar.metrics import psnr  # noqa: E402
from dollar.models import TINY_VAE_CONFIG, CausalVideoAutoencoder, ltx_video_vae_config  # noqa: E402


def candidates():
    from diffusers import AutoencoderKLLTXVideo, AutoencoderKLWan

    yield "ours (CausalVideoAutoencoder)", lambda: CausalVideoAutoencoder(**TINY_VAE_CONFIG)
    yield (
        "AutoencoderKLLTXVideo (32,64,128), patch 2",
        lambda: AutoencoderKLLTXVideo(**ltx_video_vae_config(12, (32, 64, 128))),
    )
    yield (
        "AutoencoderKLWan base 32 (1,2,2), patch 2",
        lambda: AutoencoderKLWan(
            base_dim=32,
            z_dim=12,
            dim_mult=[1, 2, 2],
            num_res_blocks=1,
            temperal_downsample=[True, True],
            latents_mean=[0.0] * 12,
            latents_std=[1.0] * 12,
            patch_size=2,
            in_channels=12,
            out_channels=12,
            scale_factor_spatial=8,
        ),
    )


def measure(build, clips: torch.Tensor, steps: int) -> dict:
    torch.manual_seed(0)
    vae = build()
    one = clips[:1]
    enc, dec = [], []
    with torch.no_grad():
        for _ in range(6):
            start = time.perf_counter()
            z = vae.encode(one).latent_dist.mode()
            enc.append(time.perf_counter() - start)
            start = time.perf_counter()
            vae.decode(z)
            dec.append(time.perf_counter() - start)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        recon = vae.decode(vae.encode(clips).latent_dist.mode()).sample
        loss = (recon - clips).abs().mean() + (recon - clips).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - start)
    with torch.no_grad():
        final = psnr(vae.decode(vae.encode(clips).latent_dist.mode()).sample.clamp(-1, 1), clips)
    return {
        "parameters": sum(p.numel() for p in vae.parameters()),
        "latent_shape": tuple(z.shape[1:]),
        "encode_s_median": statistics.median(enc[1:]),
        "decode_s_median": statistics.median(dec[1:]),
        "train_step_s_median": statistics.median(step_times[1:]),
        "fit_steps": steps,
        "fit_psnr_db": final,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/vae_choice.json")
    args = parser.parse_args()
    dataset = WorldVideoDataset(4, seed=0)
    clips = torch.stack([dataset[i]["video"] for i in range(4)])
    results = {name: measure(build, clips, args.steps) for name, build in candidates()}
    results["_machine"] = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    for name, r in results.items():
        if not name.startswith("_"):
            print(
                f"{name}: {r['parameters'] / 1e6:.1f}M params, decode {1000 * r['decode_s_median']:.0f} ms, "
                f"train step {r['train_step_s_median']:.2f} s, PSNR after {r['fit_steps']} steps {r['fit_psnr_db']:.1f} dB"
            )


if __name__ == "__main__":
    main()
