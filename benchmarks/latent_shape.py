"""Where does the VAE lose shape? The same small classifier learns an object's shape from real
clips, from the VAE's latents of them, and from the VAE's reconstructions.

    python benchmarks/latent_shape.py [--vae teacher] [--clips 3000] [--out benchmarks/results/latent_shape.json]
    python benchmarks/latent_shape.py --vae runs/vae-a runs/vae-b --out benchmarks/results/latent_candidates.json

Several ``--vae`` (VAE folders or pipelines) compare latent-space candidates: for each, besides the
classifier, :func:`dollar.evaluate.vae_quality` (PSNR, the attribute probe's shape and two-object
composition on reconstructions) and the run's steps and minutes from its ``train_log.jsonl``.

If latents classify about as well as real pixels but reconstructions do not, the decoder loses the
shape and a stronger decoder (``train_vae.py --decoder_only``) keeps the teacher's latent space. If
latents are already poor, the encoder must change, and with it the teacher. Single-object clips of
the training split (seeds 2,000,000+); 80% train the classifier, 20% test it. Shuffled labels give
the chance level of the same pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.data import video_to_tensor  # noqa: E402
from dollar.evaluate import vae_quality  # noqa: E402
from dollar.models import CausalVideoAutoencoder  # noqa: E402
from dollar.pipeline import resolve_model  # noqa: E402
from dollar.reports import write_results  # noqa: E402


def build_data(n: int, vae, batch: int = 16) -> dict[str, torch.Tensor]:
    """Real frames (every 4th), latents and reconstructed frames (every 4th) of ``n`` clips, and shape labels."""
    shapes = list(world.SHAPES)
    real, lat, rec, labels = [], [], [], []
    for start in range(0, n, batch):
        videos = []
        for i in range(start, min(start + batch, n)):
            frames, _, scene = world.make_sample(2_000_000 + i, level=1, split="train")
            videos.append(video_to_tensor(frames))
            labels.append(shapes.index(scene.objects[0].shape))
        v = torch.stack(videos)  # [B, 3, T, H, W] in [-1, 1]
        with torch.no_grad():
            z = vae.encode(v).latent_dist.mode()
            x = vae.decode(z).sample.clamp(-1, 1)
        real.append(v[:, :, ::4].half())
        lat.append(z.half())
        rec.append(x[:, :, ::4].half())
    return {"real": torch.cat(real), "latent": torch.cat(lat), "reconstruction": torch.cat(rec), "labels": torch.tensor(labels)}


class Classifier(nn.Module):
    """Frames (or latent frames) stacked as channels, a small 2-D CNN, global pooling."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 64):
        super().__init__()
        layers, c = [], channels
        while size > 8:  # pixels: stride-2 stages down to the latent grid (8x8)
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            c, size = width, size // 2
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        h = self.body(x.flatten(1, 2))
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def fit_and_test(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    n_train = int(0.8 * len(x))
    x = x.float()
    x = (x - x[:n_train].mean()) / x[:n_train].std()
    model = Classifier(x.shape[1] * x.shape[2], x.shape[-1], classes)
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(n_train, len(x), 256)])
    return float((pred == y[n_train:]).float().mean())


def load_vae(name: str) -> CausalVideoAutoencoder:
    """A VAE folder, or a pipeline (bundled name or folder) whose ``vae/`` is used."""
    folder = name if os.path.isfile(os.path.join(name, "config.json")) else os.path.join(resolve_model(name), "vae")
    return CausalVideoAutoencoder.from_pretrained(folder).float().eval()


def training_record(name: str) -> dict:
    """Steps and seconds of the run that wrote a VAE folder, from its ``train_log.jsonl``."""
    path = os.path.join(name, "train_log.jsonl")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {"steps": rows[-1]["step"], "seconds": rows[-1].get("seconds"), "final_loss": rows[-1]["loss"]}


def measure(name: str, clips: int, steps: int, with_real: bool) -> dict:
    vae = load_vae(name)
    start = time.perf_counter()
    data = build_data(clips, vae)
    y = data["labels"]
    classes = len(world.SHAPES)
    result = {
        "vae": name,
        "config": dict(vae.config),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "training": training_record(name),
    }
    result["test_accuracy"] = {}
    for key in ("real", "latent", "reconstruction") if with_real else ("latent", "reconstruction"):
        result["test_accuracy"][key] = fit_and_test(data[key], y, classes, steps, seed=0)
        print(f"{name} {key}: shape accuracy {100 * result['test_accuracy'][key]:.1f}%", flush=True)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    result["test_accuracy"]["latent, shuffled labels"] = fit_and_test(data["latent"], shuffled, classes, steps, seed=0)
    result["chance"] = float(np.bincount(y[int(0.8 * len(y)) :].numpy()).max() / (len(y) - int(0.8 * len(y))))
    # The figures the table uses: PSNR, and the attribute probe on reconstructions.
    result["quality"] = vae_quality(vae, clips=64, seeds=(3, 4, 5), two_object_scenes=64)
    result["seconds"] = time.perf_counter() - start
    return result


def to_markdown(results: list[dict]) -> str:
    rows = [
        "| VAE | latent | params | trained | PSNR dB (mean / worst) | probe shape on recon. (real) | two-object composition on recon. (real) "
        "| classifier shape: latents / recon. | decode ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q, t, acc = r["quality"], r["training"], r["test_accuracy"]
        two, two_real = q.get("probe_on_two_object_reconstructions", {}), q.get("probe_on_two_object_real", {})
        trained = f"{t['steps']} steps, {t['seconds'] / 60:.0f} min" if t.get("seconds") else "-"
        rows.append(
            f"| {r['vae']} | {'x'.join(map(str, q['latent_shape']))} | {r['parameters'] / 1e6:.1f} M | {trained} "
            f"| {q['psnr_db_mean']:.2f} / {q['psnr_db_min']:.2f} "
            f"| {100 * q.get('probe_shape_on_reconstructions', float('nan')):.1f}% ({100 * q.get('probe_shape_on_real', float('nan')):.1f}%) "
            f"| {100 * two.get('composition', float('nan')):.1f}% ({100 * two_real.get('composition', float('nan')):.1f}%) "
            f"| {100 * acc['latent']:.1f}% / {100 * acc['reconstruction']:.1f}% | {1000 * q['decode_s_median']:.0f} |"
        )
    return "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--vae", nargs="+", default=["teacher"], help="VAE folders, or bundled names / pipeline folders (their vae/ is used)")
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "latent_shape.json"))
    args = p.parse_args()
    results = [measure(name, args.clips, args.steps, with_real=i == 0) for i, name in enumerate(args.vae)]
    out = results[0] if len(results) == 1 else {"candidates": results}
    table = to_markdown(results)
    write_results(args.out, out, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
