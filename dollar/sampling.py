"""Samplers as plain functions of (denoise, x, timesteps) -> x, in the k-diffusion style.

``denoise(x_t, t)`` returns ``(x0_hat, eps_hat)`` for a network timestep ``t`` (a number);
guidance, text conditioning and the prediction type all live inside it (see
:mod:`dollar.denoiser`). ``schedule`` is a :class:`~dollar.schedule.NoiseSchedule` (or a DDPM
``alphas_cumprod`` tensor): DDIM between its points is also the Euler step of a flow model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from dollar.schedule import NoiseSchedule, as_schedule, x0_eps_to_prediction

Denoise = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
Schedule = NoiseSchedule | torch.Tensor


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_prev: float | torch.Tensor, sigma_prev: float | torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta = 0): x_prev = alpha_prev x0_hat + sigma_prev eps_hat."""
    alpha_prev = torch.as_tensor(alpha_prev, dtype=x0.dtype, device=x0.device)
    sigma_prev = torch.as_tensor(sigma_prev, dtype=x0.dtype, device=x0.device)
    return alpha_prev * x0 + sigma_prev * eps


def _renoise(x0: torch.Tensor, t_next, schedule: NoiseSchedule, generator) -> torch.Tensor:
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return schedule.add_noise(x0, noise, torch.full((x0.shape[0],), t_next, device=x0.device))


def ddim_sample(
    denoise: Denoise,
    x: torch.Tensor,
    timesteps: Sequence,
    schedule: Schedule,
    final_timestep=None,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DDIM along ``timesteps`` (descending). Ends at x0 (alpha 1, sigma 0), or at ``final_timestep``
    (the CD target: m teacher steps from t_{n+m} to t_n)."""
    schedule = as_schedule(schedule)
    for i, t in enumerate(timesteps):
        x0, eps = denoise(x, t)
        nxt = timesteps[i + 1] if i + 1 < len(timesteps) else final_timestep
        alpha_prev, sigma_prev = schedule.alpha_sigma(nxt) if nxt is not None else (1.0, 0.0)
        x = ddim_step(x0, eps, alpha_prev, sigma_prev)
        if callback is not None:
            callback(i, t, x)
    return x


def multistep_sample(
    denoise: Denoise,
    x: torch.Tensor,
    timesteps: Sequence,
    schedule: Schedule,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Few-step student sampling: predict x0_hat, re-noise it to the next t with fresh noise."""
    schedule = as_schedule(schedule)
    for i, t in enumerate(timesteps):
        x0, _ = denoise(x, t)
        x = _renoise(x0, timesteps[i + 1], schedule, generator) if i + 1 < len(timesteps) else x0
        if callback is not None:
            callback(i, t, x)
    return x


def scheduler_sample(
    denoise: Denoise,
    x: torch.Tensor,
    scheduler,
    schedule: Schedule,
    prediction_type: str,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Any diffusers scheduler (DDIM, DPM-Solver++, UniPC, flow-matching Euler, ...) driven by
    x0_hat / eps_hat, on the timesteps already set on it (``scheduler.set_timesteps``): each step
    hands the scheduler the output an exact network of its ``prediction_type`` would give."""
    schedule = as_schedule(schedule)
    for i, t in enumerate(scheduler.timesteps):
        x0, eps = denoise(x, t)
        alpha, sigma = schedule.alpha_sigma(t.reshape(1), x.device)
        out = x0_eps_to_prediction(x0, eps, alpha, sigma, prediction_type)
        x = scheduler.step(out, t, x, return_dict=False)[0]
        if callback is not None:
            callback(i, t, x)
    return x


def student_training_input(
    denoise: Denoise,
    noise: torch.Tensor,
    timesteps: Sequence,
    schedule: Schedule,
    step: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    """The input a multi-step student sees at its ``step``-th step (backward simulation, as in
    DMD2): run the student without gradients for the earlier steps, re-noising in between.
    The caller then evaluates the student at ``timesteps[step]`` with gradients."""
    schedule = as_schedule(schedule)
    x = noise
    with torch.no_grad():
        for i in range(step):
            x0, _ = denoise(x, timesteps[i])
            x = _renoise(x0, timesteps[i + 1], schedule, generator)
    return x
