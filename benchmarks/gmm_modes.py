"""Mode coverage on a 2-D Gaussian mixture with an exact teacher: does consistency distillation
keep more modes than VSD alone? (METHOD.md: VSD is mode-seeking, CD restores diversity.)

    python benchmarks/gmm_modes.py --seeds 0 1 2 3 4 --out benchmarks/results/gmm_modes.json

The target is an unbalanced mixture (one heavy mode and three light ones) whose posterior mean
E[x0 | x_t] is exact. The student f(x_t, t) starts as a regression of that teacher (so its one-step
sample from pure noise sits near the mixture's mean, as a real student initialised from its
teacher does); then it is trained as a one-step generator G(z) = f(z, 999) with the library's
``vsd_loss`` (fake score learnt online from the generator's samples, two steps per generator
step), with or without the library's ``consistency_loss`` on mixture samples. A mode counts as
kept when at least 2% of 4000 samples land within 4 standard deviations of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dollar.losses import consistency_loss, vsd_loss  # noqa: E402
from dollar.schedule import ddpm_alphas_cumprod, trailing_timesteps  # noqa: E402

ALPHAS = ddpm_alphas_cumprod().float()
K, STD = 4, 0.08
WEIGHTS = torch.tensor([0.7, 0.1, 0.1, 0.1])
MEANS = torch.tensor([[math.cos(2 * math.pi * k / K), math.sin(2 * math.pi * k / K)] for k in range(K)])


def exact_x0(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] of the mixture under the VP forward process."""
    a = ALPHAS[t].view(-1, 1)
    v = a * STD**2 + 1 - a
    d2 = ((x[:, None, :] - a.sqrt()[:, None] * MEANS[None]) ** 2).sum(-1)
    r = torch.softmax(-d2 / (2 * v) + WEIGHTS.log()[None], dim=1)
    post = MEANS[None] + (a.sqrt() * STD**2 / v)[:, None] * (x[:, None, :] - a.sqrt()[:, None] * MEANS[None])
    return (r[..., None] * post).sum(1)


def teacher(x: torch.Tensor, t: int):
    tt = torch.full((x.shape[0],), t)
    x0 = exact_x0(x, tt)
    a = ALPHAS[t]
    return x0, (x - a.sqrt() * x0) / (1 - a).sqrt()


class Net(torch.nn.Module):
    """x0 predictor f(x_t, t) with a periodic time embedding."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.f = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 2)
        )

    def forward(self, x, t):
        tt = (t.float() if torch.is_tensor(t) else torch.full((x.shape[0],), float(t))).view(-1, 1) / 1000
        return self.f(torch.cat([x, torch.sin(math.pi * tt), torch.cos(math.pi * tt)], 1))


def sample_mixture(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, True, generator=g)
    return MEANS[k] + STD * torch.randn(n, 2, generator=g)


def mode_mass(x: torch.Tensor) -> list[float]:
    d = torch.cdist(x, MEANS)
    near = d.min(1)
    ok = near.values < 4 * STD
    return (torch.bincount(near.indices[ok], minlength=K).float() / len(x)).tolist()


def run(cd_weight: float, iters: int, seed: int, batch: int = 256) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    student = Net()
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    for _ in range(500):  # the student starts as its teacher
        x0 = sample_mixture(batch, g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        a = ALPHAS[t].view(-1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(batch, 2, generator=g)
        loss = ((student(xt, t) - exact_x0(xt, t)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ema = copy.deepcopy(student).requires_grad_(False)
    fake = copy.deepcopy(student)
    fake_opt = torch.optim.Adam(fake.parameters(), 1e-3)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    grid = trailing_timesteps(10)
    for _ in range(iters):
        x = student(torch.randn(batch, 2, generator=g), 999)
        for _ in range(2):  # the fake score follows the generator
            t = torch.randint(20, 980, (batch,), generator=g)
            a = ALPHAS[t].view(-1, 1)
            xt = a.sqrt() * x.detach() + (1 - a).sqrt() * torch.randn(batch, 2, generator=g)
            fake_loss = ((fake(xt, t) - x.detach()) ** 2).mean()
            fake_opt.zero_grad()
            fake_loss.backward()
            fake_opt.step()
        loss = vsd_loss(x, exact_x0, lambda xt, t: fake(xt, t).detach(), ALPHAS, generator=g)
        if cd_weight:
            loss = loss + cd_weight * consistency_loss(student, ema, teacher, sample_mixture(batch, g), ALPHAS, grid, m=2, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, q in zip(ema.parameters(), student.parameters(), strict=True):
                p.lerp_(q, 0.05)
    with torch.no_grad():
        mass = mode_mass(student(torch.randn(4000, 2, generator=g), 999))
    return {"mode_mass": mass, "modes_kept": sum(m >= 0.02 for m in mass), "on_mode_mass": sum(mass)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--iters", type=int, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--cd-weight", type=float, default=1.0)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gmm_modes.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"target_mass": WEIGHTS.tolist(), "std": STD, "runs": []}
    for iters in args.iters:
        for seed in args.seeds:
            for name, w in (("VSD", 0.0), ("VSD+CD", args.cd_weight)):
                start = time.perf_counter()
                r = run(w, iters, seed)
                result["runs"].append({"method": name, "iters": iters, "seed": seed, **r, "seconds": time.perf_counter() - start})
                print(name, iters, seed, r, flush=True)
    summary = {}
    for iters in args.iters:
        for name in ("VSD", "VSD+CD"):
            rows = [r for r in result["runs"] if r["iters"] == iters and r["method"] == name]
            summary[f"{name} @ {iters}"] = {
                "modes_kept_mean": sum(r["modes_kept"] for r in rows) / len(rows),
                "light_mode_mass_mean": sum(sum(r["mode_mass"][1:]) for r in rows) / len(rows),
                "on_mode_mass_mean": sum(r["on_mode_mass"] for r in rows) / len(rows),
            }
    result["summary"] = summary
    print(json.dumps(summary, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
