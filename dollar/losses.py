"""The method's losses as pure functions of networks and tensors (METHOD.md sections 1 and 3).

No optimizer lives here; the trainers order the steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dollar.schedule import NoiseSchedule, add_noise, as_schedule, conjugate_velocity_target


def conjugate_velocity_loss(
    transformer: torch.nn.Module,
    x0: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    schedule: NoiseSchedule | torch.Tensor,
    t: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L_CV = E || v(x_t, t, c) - (x0 - eps) ||^2, t uniform on the 1000 DDPM steps.

    Trains the bundled teacher on data latents (the fake score uses :func:`fake_score_loss`).
    """
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, as_schedule(schedule).num_train_timesteps, (b,), generator=generator).to(x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = add_noise(x0, eps, t, schedule)
    dtype = next(transformer.parameters()).dtype
    v = transformer(x_t.to(dtype), t, encoder_hidden_states.to(dtype), return_dict=False)[0]
    return F.mse_loss(v.float(), conjugate_velocity_target(x0, eps).float())


# --- Distillation (METHOD.md section 3) -------------------------------------------------
# ``x0_fn(x_t, t)`` callables return x0_hat for a batch at timesteps ``t`` ([B] long); build
# them from a Denoiser (with or without guidance). Every loss is written in x0 terms, so any
# teacher that exposes x0_hat / eps_hat plugs in.


def fake_score_loss(
    fake, student_x0: torch.Tensor, encoder_hidden_states: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The fake score's loss on the student's (detached) samples at random t: the teacher's own
    training objective, read and trained through the same :class:`~dollar.denoiser.Denoiser`
    (``fake``), so its target is the teacher's parameterisation (eps, v, flow u or x0 - eps)."""
    return fake.denoising_loss(student_x0.detach(), encoder_hidden_states, generator=generator)


def vsd_loss(
    x: torch.Tensor,
    real_x0,
    fake_x0,
    schedule: NoiseSchedule | torch.Tensor,
    t: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    t_range: tuple[float, float] = (0.02, 0.98),
) -> torch.Tensor:
    """Variational score distillation (DMD form) for generator samples ``x`` (with grad).

    The gradient w.r.t. ``x`` is ``w_t (x0_fake - x0_real) / x.numel()`` with
    ``w_t = 1 / mean|x - x0_real|`` per sample: an MSE to a stop-gradient target. ``t`` is drawn
    over the fraction ``t_range`` of the schedule when not given.
    """
    schedule = as_schedule(schedule)
    b = x.shape[0]
    if t is None:
        t = schedule.sample_timesteps(b, generator, x.device, t_range)
    if eps is None:
        eps = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    with torch.no_grad():
        x_t = schedule.add_noise(x.detach(), eps, t)
        x0_real = real_x0(x_t, t)
        x0_fake = fake_x0(x_t, t)
        dims = tuple(range(1, x.ndim))
        weight = 1.0 / (x.detach() - x0_real).abs().mean(dim=dims, keepdim=True).clamp_min(1e-4)
        grad = torch.nan_to_num((x0_fake - x0_real) * weight)
        target = x.detach() - grad
    return 0.5 * F.mse_loss(x, target)


def lcm_boundary_scalings(t: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """(c_skip, c_out) of the LCM consistency function; as diffusers' LCMScheduler."""
    scaled = t.float() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def consistency_function(x0_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t)."""
    c_skip, c_out = lcm_boundary_scalings(t)
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    return c_skip.view(shape).to(x_t) * x_t + c_out.view(shape).to(x_t) * x0_hat


def teacher_ddim_target(
    teacher_denoise, x_start: torch.Tensor, grid: list, index: int, m: int, schedule: NoiseSchedule | torch.Tensor
) -> torch.Tensor:
    """m teacher DDIM steps along ``grid`` from ``grid[index]`` to ``grid[index + m]`` (or to x0)."""
    from dollar.sampling import ddim_sample

    end = index + m
    final = grid[end] if end < len(grid) else None
    return ddim_sample(teacher_denoise, x_start, grid[index:end], schedule, final_timestep=final)


def consistency_loss(
    student_x0,
    ema_x0,
    teacher_denoise,
    x0: torch.Tensor,
    schedule: NoiseSchedule | torch.Tensor,
    grid: list,
    m: int = 5,
    index: int | None = None,
    generator: torch.Generator | None = None,
    huber_c: float | None = None,
) -> torch.Tensor:
    """Consistency distillation on real latents ``x0`` (METHOD.md): the student's f at
    t_{n+m} matches the EMA student's f at the point m teacher DDIM steps (with CFG) later.

    ``teacher_denoise(x, t) -> (x0_hat, eps_hat)`` (guided), ``student_x0`` and ``ema_x0``
    are ``(x_t, t) -> x0_hat``. ``d`` is MSE, or pseudo-Huber with constant ``huber_c``.
    """
    schedule = as_schedule(schedule)
    b = x0.shape[0]
    if index is None:
        index = int(torch.randint(0, len(grid) - m + 1, (1,), generator=generator))
    t_start = torch.full((b,), grid[index], device=x0.device)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_start = schedule.add_noise(x0, eps, t_start)
    pred = consistency_function(student_x0(x_start, t_start), x_start, t_start)
    with torch.no_grad():
        x_end = teacher_ddim_target(teacher_denoise, x_start, grid, index, m, schedule)
        if index + m < len(grid):
            t_end = torch.full((b,), grid[index + m], device=x0.device)
            target = consistency_function(ema_x0(x_end, t_end), x_end, t_end)
        else:
            target = x_end  # the boundary: f(x, 0) = x
    if huber_c is None:
        return F.mse_loss(pred.float(), target.float())
    return (torch.sqrt((pred.float() - target.float()) ** 2 + huber_c**2) - huber_c).mean()


# --- Latent reward model (METHOD.md section 3, LRM) ---------------------------------------


def latent_reward_fit_loss(
    reward_model: torch.nn.Module, latents: torch.Tensor, rewards: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
) -> torch.Tensor:
    """L_LRM = E (R(Decode(z), c) - R_lat(z, c))^2 on real and generated latents (detached)."""
    return F.mse_loss(reward_model(latents.detach(), encoder_hidden_states), rewards.to(latents.dtype))


def reward_finetune_loss(
    reward_model: torch.nn.Module, student_latents: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
) -> torch.Tensor:
    """L_FT = -E R_lat(G_theta(eps), c): gradients reach the student through R_lat only."""
    return -reward_model(student_latents, encoder_hidden_states).mean()


# --- DDPO baseline (the paper's comparison point for LRM) ----------------------------------


def ddpo_loss(policy_mean, trajectory, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE over a stochastic rollout (DDPO-SF): -E[A * sum_k log N(x_{k+1}; mu_theta(x_k, t_k), s_k^2)].

    ``trajectory``: (x_k, t_k, x_{k+1}, s_k) tuples recorded without gradients, where x_{k+1}
    was drawn around ``policy_mean(x_k, t_k)`` with std ``s_k``. For a few-step student the
    policy is its own sampler: the mean is sqrt(a_{k+1}) x0_hat (re-noising has std
    sqrt(1 - a_{k+1})); the last step draws x0 around x0_hat with an exploration std.
    ``advantages`` [B]: normalised rewards. The log-density is averaged over elements rather
    than summed (a constant rescaling of the gradient, so learning rates carry over between
    resolutions). The reward itself is never differentiated: any black box works.
    """
    logp = 0.0
    for x, t, x_next, std in trajectory:
        mu = policy_mean(x, t)
        logp = logp - ((x_next.detach() - mu) ** 2).flatten(1).mean(1) / (2 * std**2)
    return -(advantages.detach().to(mu.dtype) * logp).mean()


@torch.no_grad()
def ddpo_rollout(
    student_x0, noise: torch.Tensor, grid: list, schedule: NoiseSchedule | torch.Tensor, exploration_std: float, generator=None
):
    """The few-step student's sampler as a stochastic policy, for :func:`ddpo_loss`.

    Each step predicts x0_hat and draws the next point around ``alpha(t_next) x0_hat`` with the
    re-noising std ``sigma(t_next)``; the last step draws x0 around x0_hat with ``exploration_std``.
    Returns the trajectory, the mean scale of each step (keyed by ``float(t[0])`` of its recorded
    timesteps) and the final samples.
    """
    schedule = as_schedule(schedule)
    trajectory, scales, x = [], {}, noise
    for k, t in enumerate(grid):
        tt = torch.full((x.shape[0],), t, device=x.device)
        x0_hat = student_x0(x, tt)
        if k + 1 < len(grid):
            alpha, sigma = schedule.alpha_sigma(grid[k + 1])
            scale, std = float(alpha), float(sigma)
        else:
            scale, std = 1.0, exploration_std
        x_next = scale * x0_hat + std * torch.randn(x.shape, generator=generator).to(x.device)
        trajectory.append((x, tt, x_next, std))
        scales[float(tt[0])] = scale
        x = x_next
    return trajectory, scales, x


def bradley_terry_loss(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The preference reward's loss: -E[y log sigmoid(r_a - r_b) + (1 - y) log sigmoid(r_b - r_a)],
    y = P(a preferred): 1 (a won), 0 (b won), 0.5 (a tie). The latent scores r are Bradley-Terry
    log-strengths, the same model dollar.ranking fits to whole models."""
    return F.binary_cross_entropy_with_logits(score_a - score_b, label.to(score_a.dtype))
