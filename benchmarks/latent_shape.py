"""Where does the VAE lose shape? The same small classifier learns an object's shape from real
clips, from the VAE's latents of them, and from the VAE's reconstructions.

    python benchmarks/latent_shape.py [--clips 3000] [--out benchmarks/results/latent_shape.json]

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
from dollar.models import CausalVideoAutoencoder  # noqa: E402
from dollar.pipeline import resolve_model  # noqa: E402


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--vae", default="teacher", help="bundled name or pipeline folder (its vae/ is used)")
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "latent_shape.json"))
    args = p.parse_args()
    folder = resolve_model(args.vae)
    vae = CausalVideoAutoencoder.from_pretrained(os.path.join(folder, "vae")).float().eval()
    start = time.perf_counter()
    data = build_data(args.clips, vae)
    y = data["labels"]
    classes = len(world.SHAPES)
    result = {"vae": folder, "clips": args.clips, "classifier_steps": args.steps, "shapes": list(world.SHAPES), "test_accuracy": {}}
    for name in ("real", "latent", "reconstruction"):
        result["test_accuracy"][name] = fit_and_test(data[name], y, classes, args.steps, seed=0)
        print(f"{name}: shape accuracy {100 * result['test_accuracy'][name]:.1f}%", flush=True)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    result["test_accuracy"]["latent, shuffled labels"] = fit_and_test(data["latent"], shuffled, classes, args.steps, seed=0)
    result["chance"] = float(np.bincount(y[int(0.8 * len(y)) :].numpy()).max() / (len(y) - int(0.8 * len(y))))
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
