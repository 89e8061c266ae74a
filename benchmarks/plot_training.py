"""Plot training curves from the trainers' JSONL logs.

python benchmarks/plot_training.py docs/training/vae_log.jsonl docs/training/teacher_log.jsonl --out docs/training/curves.png
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(y: np.ndarray, k: int = 25) -> np.ndarray:
    k = max(1, min(k, len(y)))
    return np.convolve(y, np.ones(k) / k, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    panels = []
    for path in args.logs:
        rows = [json.loads(line) for line in open(path)]
        panels.append((os.path.basename(path), rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels):
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        ax.plot(steps, loss, alpha=0.25, lw=0.8, label="loss")
        ax.plot(steps[len(steps) - len(smooth(loss)) :], smooth(loss), lw=1.6, label="loss (moving mean)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(name)
        evals = [(r["step"], r["eval_psnr"]) for r in rows if "eval_psnr" in r]
        if evals:
            twin = ax.twinx()
            twin.plot(*zip(*evals), "o-", color="tab:red", label="held-out PSNR (dB)")
            twin.set_ylabel("held-out PSNR (dB)", color="tab:red")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
