"""The noise schedule and the conversions between a network's prediction and (x0_hat, eps_hat).

Every noisy point is ``x_t = alpha(t) x0 + sigma(t) eps`` at a network timestep ``t`` (the number
the network is fed). Two families of schedules cover the stock teachers (METHOD.md section 5):

- ``vp``: the 1000-step DDPM process, ``alpha = sqrt(a_t)``, ``sigma = sqrt(1 - a_t)`` with
  ``a_t = alpha-bar_t`` read from the scheduler (ours, SD-style epsilon, CogVideoX's zero-terminal
  SNR v-prediction), ``t`` an integer in [0, 999];
- ``flow``: rectified flow (Wan, LTX-Video), ``alpha = 1 - s``, ``sigma = s`` with ``s = t / 1000``
  and the scheduler's shift applied when a grid of ``s`` is chosen, ``t`` a float in [0, 1000].

The losses and samplers speak only in x0_hat / eps_hat and (alpha, sigma), so any prediction type
plugs in here. Wherever a :class:`NoiseSchedule` is expected, a plain ``alphas_cumprod`` tensor is
taken as the VP schedule it defines.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000
PREDICTION_TYPES = ("conjugate_velocity", "epsilon", "v_prediction", "flow")

# The student grids of METHOD.md section 2 (VP timesteps).
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


def _check_num_steps(num_steps, num_train_timesteps: int) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"the number of steps must be a positive integer, got {num_steps!r}")
    if num_steps > num_train_timesteps:
        raise ValueError(f"the number of steps must be at most {num_train_timesteps}, got {num_steps}")


def trailing_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The 'trailing' DDIM grid: 50 steps -> 999, 979, ..., 19; 4 steps -> 999, 749, 499, 249."""
    _check_num_steps(num_steps, num_train_timesteps)
    ratio = num_train_timesteps / num_steps
    return [int(round(num_train_timesteps - i * ratio)) - 1 for i in range(num_steps)]


def shift_sigmas(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching timestep shift of diffusers' schedulers: s' = k s / (1 + (k - 1) s)."""
    return shift * s / (1 + (shift - 1) * s)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """``x_t = alpha(t) x0 + sigma(t) eps`` at network timesteps ``t`` (see the module doc)."""

    kind: str  # "vp" or "flow"
    alphas_cumprod: torch.Tensor | None = None  # vp: alpha-bar per integer timestep
    shift: float = 1.0  # flow: the shift applied to grids and to training noise levels
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS

    @classmethod
    def vp(cls, alphas_cumprod: torch.Tensor) -> NoiseSchedule:
        return cls("vp", alphas_cumprod=alphas_cumprod.detach(), num_train_timesteps=len(alphas_cumprod))

    @classmethod
    def flow(cls, shift: float = 1.0, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> NoiseSchedule:
        if not shift > 0:
            raise ValueError(f"the flow shift must be positive, got {shift}")
        return cls("flow", shift=float(shift), num_train_timesteps=num_train_timesteps)

    @property
    def is_flow(self) -> bool:
        return self.kind == "flow"

    def alpha_sigma(self, t: torch.Tensor | float | int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) float32 at timesteps ``t`` (a tensor [B] or a number)."""
        t = torch.as_tensor(t, device=device)
        if self.kind == "flow":
            s = (t.double() / self.num_train_timesteps).clamp(0, 1)
            return (1 - s).float(), s.float()
        a = self.alphas_cumprod.to(t.device)[t.long()].float()  # float32 first, as the tests' references do
        return a.sqrt(), (1 - a).sqrt()

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, x0.device)
        return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * eps

    def grid(self, num_steps: int) -> list:
        """A descending sampling grid of ``num_steps`` network timesteps, starting at pure noise:
        DDIM's trailing grid (vp), or the shifted ``s = 1, 1 - 1/n, ...`` (flow, the stock Euler grid)."""
        if self.kind == "vp":
            return trailing_timesteps(num_steps, self.num_train_timesteps)
        _check_num_steps(num_steps, self.num_train_timesteps)
        s = shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1], self.shift)
        return [float(v) for v in s * self.num_train_timesteps]

    def check_grid(self, grid) -> list:
        """A user's grid (e.g. ``--timesteps``): distinct, descending, inside the schedule's range."""
        top = self.num_train_timesteps - (1 if self.kind == "vp" else 0)
        values = [int(v) if self.kind == "vp" else float(v) for v in grid]
        if not values or any(not 0 <= v <= top for v in values) or values != sorted(set(values), reverse=True):
            raise ValueError(f"timesteps must be distinct descending numbers in [0, {top}], got {list(grid)!r}")
        if self.kind == "vp" and any(float(v) != int(v) for v in grid):
            raise ValueError(f"timesteps of a DDPM-schedule teacher are integers, got {list(grid)!r}")
        return values

    def sample_timesteps(self, batch: int, generator=None, device=None, t_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """Training timesteps, uniform over the fraction ``t_range`` of the process (flow: of the
        unshifted s, then shifted, as the stock flow trainers sample)."""
        u = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(batch, generator=generator, dtype=torch.float64)
        if self.kind == "vp":
            n = self.num_train_timesteps
            return (u * n).long().clamp(0, n - 1).to(device)
        return (shift_sigmas(u, self.shift) * self.num_train_timesteps).float().to(device)


def as_schedule(schedule: NoiseSchedule | torch.Tensor) -> NoiseSchedule:
    """A NoiseSchedule, or the VP schedule of an ``alphas_cumprod`` tensor."""
    return schedule if isinstance(schedule, NoiseSchedule) else NoiseSchedule.vp(schedule)


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(a, device=like.device)
    return a.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule | torch.Tensor) -> torch.Tensor:
    """x_t = alpha(t) x0 + sigma(t) eps (VP: sqrt(a_t) x0 + sqrt(1 - a_t) eps)."""
    return as_schedule(schedule).add_noise(x0, eps, t)


def conjugate_velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The teacher's constant regression target, v = x0 - eps (METHOD.md section 1)."""
    return x0 - eps


def conjugate_velocity_to_x0(v: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t + sigma v) / (alpha + sigma) (VP: (x_t + sqrt(1 - a) v) / (sqrt(a) + sqrt(1 - a)))."""
    alpha, sigma = _bcast(alpha, x_t), _bcast(sigma, x_t)
    return (x_t + sigma * v) / (alpha + sigma)


def prediction_to_x0_eps(
    prediction: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network output at ``x_t = alpha x0 + sigma eps`` into (x0_hat, eps_hat).

    ``flow`` (output ``u = eps - x0`` at the rectified-flow point ``y = (1 - s) x0 + s eps``) takes
    the network's input to have been ``y = x_t / (alpha + sigma)`` at ``s = sigma / (alpha + sigma)``
    (:func:`model_input`); on a flow schedule that is ``x_t`` itself.
    """
    a, s = _bcast(alpha, x_t), _bcast(sigma, x_t)
    if prediction_type == "conjugate_velocity":
        x0 = conjugate_velocity_to_x0(prediction, x_t, alpha, sigma)
        return x0, x0 - prediction
    if prediction_type == "epsilon":
        return (x_t - s * prediction) / a, prediction
    if prediction_type == "v_prediction":  # v = alpha eps - sigma x0; no division by alpha (it is 0 at zero terminal SNR)
        norm = a**2 + s**2
        return (a * x_t - s * prediction) / norm, (s * x_t + a * prediction) / norm
    if prediction_type == "flow":
        level = s / (a + s)
        y = x_t / (a + s)
        return y - level * prediction, y + (1 - level) * prediction
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")


def model_input(
    x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule | torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the network is fed for the point (x_t, t): the sample and the timestep it expects.

    Every network takes (x_t, t) on its own schedule. A flow network on a VP schedule (a flow model
    run on DDPM timesteps) takes the conjugate rectified-flow point ``y_t = x_t / (alpha + sigma)``
    at ``s = sigma / (alpha + sigma)`` and the timestep ``1000 s`` (the diffusers flow convention).
    """
    schedule = as_schedule(schedule)
    if prediction_type != "flow" or schedule.is_flow:
        return x_t, t
    alpha, sigma = schedule.alpha_sigma(t, x_t.device)
    return x_t / _bcast(alpha + sigma, x_t), (NUM_TRAIN_TIMESTEPS * sigma / (alpha + sigma)).to(x_t.dtype)


def x0_eps_to_prediction(
    x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Inverse of :func:`prediction_to_x0_eps`: the output an exact network of the type gives
    (a training target, or what a diffusers scheduler's ``step`` expects)."""
    a, s = _bcast(alpha, x0), _bcast(sigma, x0)
    if prediction_type == "conjugate_velocity":
        return x0 - eps
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return a * eps - s * x0
    if prediction_type in ("flow", "flow_prediction"):
        return eps - x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    """LCM convention (METHOD.md): cond + w (cond - uncond), effective scale 1 + w.

    Every conversion above is affine in the prediction at fixed x_t, so guiding x0_hat and
    eps_hat is the same as guiding the raw velocity.
    """
    return cond + w * (cond - uncond)
