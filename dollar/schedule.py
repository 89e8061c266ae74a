"""The noise schedule and the conversions between a network's prediction and (x0_hat, eps_hat).

Everything here is a pure function of tensors. The forward process is the 1000-step DDPM
(VP) one, ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with ``a_t = alpha-bar_t``; the losses
and samplers speak only in x0_hat / eps_hat, so any prediction type plugs in here.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000
PREDICTION_TYPES = ("conjugate_velocity", "epsilon", "v_prediction", "flow")

# The student grids of METHOD.md section 2.
STUDENT_TIMESTEPS = {1: (999,), 2: (999, 499), 4: (999, 749, 499, 249)}

# The diffusers DDIMScheduler that matches this module (the pipeline's default scheduler).
DDIM_SCHEDULER_CONFIG = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="sample",
    timestep_spacing="trailing",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
)


def ddpm_alphas_cumprod(beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """alpha-bar_t of the linear DDPM schedule, float64, index t in [0, 999]."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def trailing_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The 'trailing' DDIM grid: 50 steps -> 999, 979, ..., 19; 4 steps -> 999, 749, 499, 249."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"the number of steps must be a positive integer, got {num_steps!r}")
    if num_steps > num_train_timesteps:
        raise ValueError(f"the number of steps must be at most {num_train_timesteps}, got {num_steps}")
    ratio = num_train_timesteps / num_steps
    return [int(round(num_train_timesteps - i * ratio)) - 1 for i in range(num_steps)]


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps."""
    a = _bcast(alphas_cumprod.to(x0.device)[t], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def conjugate_velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The teacher's constant regression target, v = x0 - eps (METHOD.md section 1)."""
    return x0 - eps


def conjugate_velocity_to_x0(v: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t + sqrt(1 - a) v) / (sqrt(a) + sqrt(1 - a))."""
    a = _bcast(a, x_t)
    return (x_t + (1 - a).sqrt() * v) / (a.sqrt() + (1 - a).sqrt())


def prediction_to_x0_eps(
    prediction: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network output into (x0_hat, eps_hat) at the VP point x_t with alpha-bar ``a``.

    For ``flow`` (rectified flow, ``y = (1 - s) x0 + s eps``, output ``eps - x0``) the network
    must have been evaluated at the conjugate point ``y_t`` given by :func:`model_input`.
    """
    ab = _bcast(a, x_t)
    sa, s1a = ab.sqrt(), (1 - ab).sqrt()
    if prediction_type == "conjugate_velocity":
        x0 = conjugate_velocity_to_x0(prediction, x_t, a)
        return x0, x0 - prediction
    if prediction_type == "epsilon":
        return (x_t - s1a * prediction) / sa, prediction
    if prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
        return sa * x_t - s1a * prediction, s1a * x_t + sa * prediction
    if prediction_type == "flow":
        sigma = s1a / (sa + s1a)
        y = x_t / (sa + s1a)
        return y - sigma * prediction, y + (1 - sigma) * prediction
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")


def model_input(
    x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the network is fed for the VP point (x_t, t): the sample and the timestep it expects.

    DDPM-family networks take (x_t, t). A flow network takes the conjugate rectified-flow point
    ``y_t = x_t / (sqrt(a) + sqrt(1 - a))`` at ``sigma = sqrt(1 - a) / (sqrt(a) + sqrt(1 - a))``
    and the timestep ``1000 * sigma`` (the diffusers flow-matching convention).
    """
    if prediction_type != "flow":
        return x_t, t
    a = alphas_cumprod.to(x_t.device)[t]
    sa, s1a = a.sqrt(), (1 - a).sqrt()
    return x_t / _bcast(sa + s1a, x_t), (NUM_TRAIN_TIMESTEPS * s1a / (sa + s1a)).to(x_t.dtype)


def x0_eps_to_prediction(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Inverse of :func:`prediction_to_x0_eps` (used to feed diffusers schedulers and in tests)."""
    ab = _bcast(a, x0)
    if prediction_type == "conjugate_velocity":
        return x0 - eps
    if prediction_type in ("epsilon",):
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    if prediction_type == "flow":
        return eps - x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    """LCM convention (METHOD.md): cond + w (cond - uncond), effective scale 1 + w.

    Every conversion above is affine in the prediction at fixed x_t, so guiding x0_hat and
    eps_hat is the same as guiding the raw velocity.
    """
    return cond + w * (cond - uncond)
