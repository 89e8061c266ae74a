"""Toy problems with exact scores, for checking the distillation losses where the answer is known.

A 2-D Gaussian mixture on a circle has a closed-form posterior mean E[x0 | x_t] at every noise
level, so it is an exact teacher. ``distil_one_step`` runs METHOD.md's iteration in miniature on
it (fake-score steps, then a generator step on VSD and/or CD, EMA for the CD target) with the
library's own ``vsd_loss`` and ``consistency_loss``, and reports how the one-step generator's
samples spread over the modes. Used by ``tests/test_losses.py`` and ``benchmarks/gmm_modes.py``.
"""

from __future__ import annotations

import copy
import math

import torch

from dollar.losses import consistency_loss, vsd_loss
from dollar.schedule import add_noise, ddpm_alphas_cumprod, trailing_timesteps

ALPHAS = ddpm_alphas_cumprod().float()


class RingMixture:
    """Modes on the unit circle with weights ``weights`` and standard deviation ``std``."""

    def __init__(self, weights, std: float = 0.08):
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        self.weights = self.weights / self.weights.sum()
        self.std = std
        k = len(self.weights)
        self.means = torch.tensor([[math.cos(2 * math.pi * i / k), math.sin(2 * math.pi * i / k)] for i in range(k)])

    def exact_x0(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] under the VP forward process, ``t`` a [B] tensor of DDPM steps."""
        a = ALPHAS[t].view(-1, 1)
        var = a * self.std**2 + 1 - a
        diff = x[:, None, :] - a.sqrt()[:, None] * self.means[None]
        resp = torch.softmax(-(diff**2).sum(-1) / (2 * var) + self.weights.clamp_min(1e-12).log()[None], dim=1)
        post = self.means[None] + (a.sqrt() * self.std**2 / var)[:, None] * diff
        return (resp[..., None] * post).sum(1)

    def teacher(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at the integer step ``t``: the teacher interface of ``consistency_loss``."""
        x0 = self.exact_x0(x, torch.full((x.shape[0],), t))
        a = ALPHAS[t]
        return x0, (x - a.sqrt() * x0) / (1 - a).sqrt()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, True, generator=generator)
        return self.means[k] + self.std * torch.randn(n, 2, generator=generator)

    def mode_mass(self, x: torch.Tensor, within: float = 4.0) -> list[float]:
        """Fraction of the samples ``x`` within ``within`` standard deviations of each mode."""
        near = torch.cdist(x, self.means).min(1)
        hit = near.values < within * self.std
        return (torch.bincount(near.indices[hit], minlength=len(self.means)).float() / len(x)).tolist()


class ToyDenoiser(torch.nn.Module):
    """x0 predictor f(x_t, t): an MLP with a periodic time embedding."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.f = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 2)
        )

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        tt = (t.float() if torch.is_tensor(t) else torch.full((x.shape[0],), float(t))).view(-1, 1) / 1000
        return self.f(torch.cat([x, torch.sin(math.pi * tt), torch.cos(math.pi * tt)], 1))


def distil_one_step(
    data: RingMixture,
    *,
    teacher: RingMixture | None = None,
    vsd_weight: float = 1.0,
    cd_weight: float = 0.0,
    iters: int = 500,
    start: str = "teacher",
    seed: int = 0,
    batch: int = 256,
    pretrain_steps: int = 800,
    fake_steps: int = 2,
    grid_steps: int = 10,
    m: int = 2,
    lr: float = 1e-3,
    ema_rate: float = 0.05,
    eval_samples: int = 4000,
) -> dict:
    """Distil ``teacher`` (default: the exact teacher of ``data``) into G(z) = f(z, 999).

    The student f first regresses the data's exact posterior mean at uniform t (as a real
    student starts as a copy of its teacher). With ``start="collapsed"`` it also learns to send
    every z to mode 0 at t = 999, the state VSD's mode collapse leaves a generator in. Then
    ``iters`` iterations of: ``fake_steps`` fake-score steps on the generator's samples (only
    when VSD is on), one generator step on ``vsd_weight * L_VSD + cd_weight * L_CD`` (CD on
    samples of ``data``, ``m`` teacher DDIM steps on a ``grid_steps`` grid), EMA update.
    Returns the mode masses of 4000 one-step samples before and after.
    """
    if start not in ("teacher", "collapsed"):
        raise ValueError(f"start must be 'teacher' or 'collapsed', got {start!r}.")
    if not (vsd_weight or cd_weight):
        raise ValueError("vsd_weight and cd_weight are both zero: nothing would train the generator.")
    teacher = teacher or data
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    student = ToyDenoiser()
    opt = torch.optim.Adam(student.parameters(), lr)
    for _ in range(pretrain_steps):
        t = torch.randint(0, 1000, (batch,), generator=g)
        x_t = add_noise(data.sample(batch, g), torch.randn(batch, 2, generator=g), t, ALPHAS)
        loss = ((student(x_t, t) - data.exact_x0(x_t, t)) ** 2).mean()
        if start == "collapsed":
            z = torch.randn(batch, 2, generator=g)
            loss = loss + ((student(z, 999) - (data.means[0] + data.std * z)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def one_step_mass() -> list[float]:
        with torch.no_grad():
            return data.mode_mass(student(torch.randn(eval_samples, 2, generator=g), 999))

    before = one_step_mass()
    ema = copy.deepcopy(student).requires_grad_(False)
    fake = copy.deepcopy(student)
    fake_opt = torch.optim.Adam(fake.parameters(), lr)
    opt = torch.optim.Adam(student.parameters(), lr)
    grid = trailing_timesteps(grid_steps)
    for _ in range(iters):
        loss = torch.zeros(())
        if vsd_weight:
            x = student(torch.randn(batch, 2, generator=g), 999)
            for _ in range(fake_steps):  # the fake score follows the generator
                t = torch.randint(20, 980, (batch,), generator=g)
                x_t = add_noise(x.detach(), torch.randn(batch, 2, generator=g), t, ALPHAS)
                fake_loss = ((fake(x_t, t) - x.detach()) ** 2).mean()
                fake_opt.zero_grad()
                fake_loss.backward()
                fake_opt.step()
            loss = loss + vsd_weight * vsd_loss(x, teacher.exact_x0, lambda x_t, t: fake(x_t, t).detach(), ALPHAS, generator=g)
        if cd_weight:
            loss = loss + cd_weight * consistency_loss(student, ema, teacher.teacher, data.sample(batch, g), ALPHAS, grid, m=m, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, q in zip(ema.parameters(), student.parameters(), strict=True):
                p.lerp_(q, ema_rate)
    after = one_step_mass()
    return {"start_mode_mass": before, "mode_mass": after, "modes_kept": sum(v >= 0.02 for v in after), "on_mode_mass": sum(after)}
