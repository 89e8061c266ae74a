"""Samplers as plain functions of (denoise, x, timesteps) -> x, in the k-diffusion style.

``denoise(x_t, t)`` returns ``(x0_hat, eps_hat)`` for an integer timestep ``t``; guidance, text
conditioning and the prediction type all live inside it (see :mod:`dollar.denoiser`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from dollar.schedule import add_noise

Denoise = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, a_prev: float | torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta = 0): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps_hat."""
    a_prev = torch.as_tensor(a_prev, dtype=x0.dtype, device=x0.device)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def ddim_sample(
    denoise: Denoise,
    x: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
    final_timestep: int | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DDIM along ``timesteps`` (descending). Ends at x0 (alpha-bar 1), or at ``final_timestep``
    (the CD target: m teacher steps from t_{n+m} to t_n)."""
    for i, t in enumerate(timesteps):
        x0, eps = denoise(x, int(t))
        if i + 1 < len(timesteps):
            a_prev = alphas_cumprod[timesteps[i + 1]]
        else:
            a_prev = alphas_cumprod[final_timestep] if final_timestep is not None else 1.0
        x = ddim_step(x0, eps, a_prev)
        if callback is not None:
            callback(i, int(t), x)
    return x


def multistep_sample(
    denoise: Denoise,
    x: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Few-step student sampling: predict x0_hat, re-noise it to the next t with fresh noise."""
    for i, t in enumerate(timesteps):
        x0, _ = denoise(x, int(t))
        if i + 1 < len(timesteps):
            noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            t_next = torch.full((x0.shape[0],), timesteps[i + 1], dtype=torch.long, device=x0.device)
            x = add_noise(x0, noise, t_next, alphas_cumprod)
        else:
            x = x0
        if callback is not None:
            callback(i, int(t), x)
    return x


def scheduler_sample(
    denoise: Denoise,
    x: torch.Tensor,
    scheduler,
    num_steps: int,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Any diffusers scheduler (DPM-Solver++, UniPC, ...) driven by x0_hat / eps_hat."""
    from dollar.schedule import x0_eps_to_prediction

    scheduler.set_timesteps(num_steps, device=x.device)
    prediction_type = scheduler.config.prediction_type
    for i, t in enumerate(scheduler.timesteps):
        x0, eps = denoise(x, int(t))
        a = scheduler.alphas_cumprod.to(x.device)[int(t)].reshape(1)
        out = x0_eps_to_prediction(x0, eps, a, prediction_type)
        x = scheduler.step(out, t, x, return_dict=False)[0]
        if callback is not None:
            callback(i, int(t), x)
    return x


def student_training_input(
    denoise: Denoise,
    noise: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
    step: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    """The input a multi-step student sees at its ``step``-th step (backward simulation, as in
    DMD2): run the student without gradients for the earlier steps, re-noising in between.
    The caller then evaluates the student at ``timesteps[step]`` with gradients."""
    x = noise
    with torch.no_grad():
        for i in range(step):
            x0, _ = denoise(x, int(timesteps[i]))
            t_next = torch.full((x0.shape[0],), timesteps[i + 1], dtype=torch.long, device=x0.device)
            x = add_noise(x0, randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype), t_next, alphas_cumprod)
    return x
