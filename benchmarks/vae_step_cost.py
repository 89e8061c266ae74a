"""What one VAE training step costs on this machine: forward + backward of a batch of 8, whole
clips (17 x 64 x 64) against the object windows of ``train_vae.py --crop_size 32 --crop_frames 9``,
for the shapes issue's candidate decoders. Best of ``--repeats`` after one warm-up; run it quiet.

    python benchmarks/vae_step_cost.py [--threads 2] [--out benchmarks/results/vae_step_cost.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.models import CausalVideoAutoencoder  # noqa: E402
from dollar.reports import write_results  # noqa: E402

DEEP = dict(latent_channels=48, patch_size=2, block_out_channels=(32, 96, 128))
CANDIDATES = {"c48-8x-deep": DEEP, "c48-8x-deep-fr": {**DEEP, "full_rate_top": True}}
SHAPES = {"whole clips 17x64x64": (8, 3, 17, 64, 64), "windows 9x32x32": (8, 3, 9, 32, 32)}


def step_seconds(config: dict, shape: tuple[int, ...], repeats: int) -> float:
    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(**config)
    x = torch.randn(*shape)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        vae.decode(vae.encode(x).latent_dist.mode()).sample.square().mean().backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "vae_step_cost.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, config in CANDIDATES.items():
        for label, shape in SHAPES.items():
            seconds = step_seconds(config, shape, args.repeats)
            rows.append({"vae": name, "batch": label, "seconds_per_step": seconds})
            print(f"{name}, {label}: {seconds:.2f} s per step of 8", flush=True)
    lines = ["| VAE | batch of 8 | s per step |", "|---|---|---|"]
    lines += [f"| {r['vae']} | {r['batch']} | {r['seconds_per_step']:.2f} |" for r in rows]
    write_results(args.out, {"threads": args.threads, "load_before": os.getloadavg(), "rows": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
