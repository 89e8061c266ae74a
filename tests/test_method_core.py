"""The method core driven by EXACT networks of every prediction type (METHOD.md section 5).

An exact network of a known data law x0 ~ N(m(c), s^2 I) (s = 0: a point mass) returns the
posterior means E[x0 | x_t] and E[eps | x_t], which are closed form, written in its own prediction
type. Wrapped in a Denoiser, every loss and sampler must then do what it does in x0/eps space,
whichever type the network speaks; where it could go wrong the test also shows that it can tell.
"""

import pytest
import torch
import torch.nn.functional as F

from dollar.denoiser import Denoiser, x0_only
from dollar.losses import (
    conjugate_velocity_loss,
    consistency_function,
    consistency_loss,
    ddpo_rollout,
    fake_score_loss,
    teacher_ddim_target,
    vsd_loss,
)
from dollar.sampling import ddim_sample, multistep_sample, student_training_input
from dollar.schedule import PREDICTION_TYPES, NoiseSchedule, ddpm_alphas_cumprod, x0_eps_to_prediction

SHAPE = (4, 2, 4, 4)  # [C, F, H, W]


def _zero_snr_vp() -> NoiseSchedule:
    """CogVideoX's schedule: alpha-bar rescaled to zero terminal SNR (alpha(999) = 0)."""
    from diffusers import CogVideoXDDIMScheduler

    return NoiseSchedule.vp(CogVideoXDDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction").alphas_cumprod)


SCHEDULES = {
    "ddpm": lambda: NoiseSchedule.vp(ddpm_alphas_cumprod()),
    "zero_snr": _zero_snr_vp,
    "flow_shift3": lambda: NoiseSchedule.flow(3.0),
}
# Every type on the DDPM schedule, v and conjugate velocity also at zero terminal SNR (an epsilon
# network cannot be read at alpha = 0), flow on its own schedule and on DDPM timesteps.
CASES = [
    ("epsilon", "ddpm"),
    ("v_prediction", "ddpm"),
    ("conjugate_velocity", "ddpm"),
    ("v_prediction", "zero_snr"),
    ("conjugate_velocity", "zero_snr"),
    ("flow", "flow_shift3"),
    ("flow", "ddpm"),
]


def _b(a: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a).float().reshape(-1, 1, 1, 1, 1)


def gaussian_posterior(x_t, alpha, sigma, mean, std):
    """(E[x0 | x_t], E[eps | x_t]) for x0 ~ N(mean, std^2 I) and x_t = alpha x0 + sigma eps."""
    a, s = _b(alpha), _b(sigma)
    r = x_t - a * mean
    var = a**2 * std**2 + s**2
    return mean + a * std**2 * r / var, s * r / var


def text_mean(text: torch.Tensor) -> torch.Tensor:
    """The law's mean moves with the text, so a Denoiser that mixes up the text shows."""
    return text.mean((1, 2)).view(-1, 1, 1, 1, 1)


class ExactNetwork(torch.nn.Module):
    """The exact denoiser of x0 ~ N(mean + text_mean(c), std^2 I), with diffusers' call signature,
    answering in ``prediction_type`` at the input it is given (a flow network reads its input as
    the flow point at s = timestep / 1000, on a flow schedule or on DDPM timesteps alike)."""

    def __init__(self, schedule: NoiseSchedule, prediction_type: str, mean, std: float = 0.0):
        super().__init__()
        self.own_schedule = NoiseSchedule.flow() if prediction_type == "flow" else schedule
        self.prediction_type = prediction_type
        self.mean = torch.nn.Parameter(torch.as_tensor(mean, dtype=torch.float32), requires_grad=False)
        self.std = std

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        alpha, sigma = self.own_schedule.alpha_sigma(timestep, hidden_states.device)
        x0, eps = gaussian_posterior(hidden_states, alpha, sigma, self.mean + text_mean(encoder_hidden_states), self.std)
        return (x0_eps_to_prediction(x0, eps, alpha, sigma, self.prediction_type),)


def exact(kind: str, schedule: NoiseSchedule, mean, std: float = 0.0) -> Denoiser:
    return Denoiser(ExactNetwork(schedule, kind, mean, std), schedule, kind)


def _text(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 8, generator=torch.Generator().manual_seed(seed))


# --- (a) the fake score's objective --------------------------------------------------------


@pytest.mark.parametrize("kind, schedule_name", CASES)
def test_fake_score_loss_of_an_exact_network_is_zero_in_its_own_type_and_only_there(kind, schedule_name):
    schedule = SCHEDULES[schedule_name]()
    den = exact(kind, schedule, 1.5)
    text = _text(8)
    x0 = (1.5 + text_mean(text)).expand(8, *SHAPE)  # samples of the point mass, per text
    assert fake_score_loss(den, x0, text, generator=torch.Generator().manual_seed(0)).item() < 1e-8
    # an inexact network is not at zero, so the zero above is evidence
    assert fake_score_loss(exact(kind, schedule, 1.0), x0, text, generator=torch.Generator().manual_seed(0)).item() > 1e-3

    g = torch.Generator().manual_seed(1)
    t = schedule.sample_timesteps(8, g, t_range=(0.05, 0.95))
    eps = torch.randn(8, *SHAPE, generator=g)
    x_t = schedule.add_noise(x0, eps, t)
    raw = den.raw(x_t, t, text)
    torch.testing.assert_close(raw, den.target(x0, eps, t), rtol=1e-4, atol=1e-4)
    assert F.mse_loss(raw, den.target(x0, eps, t)).item() < 1e-8
    # the same output scored against a target written in any other type: clearly not zero
    alpha, sigma = schedule.alpha_sigma(t)
    for other in PREDICTION_TYPES:
        if other != kind:
            assert F.mse_loss(raw, x0_eps_to_prediction(x0, eps, alpha, sigma, other)).item() > 0.05, other


@pytest.mark.parametrize("kind, schedule_name", CASES)
def test_exact_denoiser_reads_the_posterior_and_guides_like_x0_space(kind, schedule_name):
    """Denoiser(x_t) is the closed-form posterior; CFG on it is CFG on the posterior means."""
    schedule = SCHEDULES[schedule_name]()
    den = exact(kind, schedule, 0.5, std=0.7)
    cond, uncond = _text(6, 1), _text(6, 2)
    g = torch.Generator().manual_seed(3)
    t = schedule.sample_timesteps(6, g, t_range=(0.05, 0.95))
    x_t = torch.randn(6, *SHAPE, generator=g)
    alpha, sigma = schedule.alpha_sigma(t)
    x0_c, eps_c = gaussian_posterior(x_t, alpha, sigma, 0.5 + text_mean(cond), 0.7)
    x0_u, eps_u = gaussian_posterior(x_t, alpha, sigma, 0.5 + text_mean(uncond), 0.7)
    for got, want in zip(den(x_t, t, cond), (x0_c, eps_c)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for got, want in zip(den.guided(x_t, t, cond, uncond, 2.0), (3 * x0_c - 2 * x0_u, 3 * eps_c - 2 * eps_u)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)
    for got, want in zip(den.conditioned(cond, uncond, 2.0)(x_t, t), den.guided(x_t, t, cond, uncond, 2.0)):
        torch.testing.assert_close(got, want)
    for got, want in zip(den.conditioned(cond, uncond)(x_t, t), (x0_c, eps_c)):  # no guidance by default
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # a number for t is every sample's timestep
    x0_one, _ = den(x_t, t[0].item() if schedule.is_flow else int(t[0]), cond)
    torch.testing.assert_close(x0_one, gaussian_posterior(x_t, alpha[0], sigma[0], 0.5 + text_mean(cond), 0.7)[0], rtol=1e-4, atol=1e-4)


# --- (b) VSD moves the generator toward the data --------------------------------------------


@pytest.mark.parametrize("kind, schedule_name", CASES)
def test_one_vsd_step_with_exact_scores_moves_the_generator_mean_to_the_data_mean(kind, schedule_name):
    schedule = SCHEDULES[schedule_name]()
    data_mean, data_std, gen_std, b = 1.0, 0.5, 0.8, 16
    text = torch.zeros(b, 3, 8)
    mu = torch.nn.Parameter(torch.full((1, *SHAPE), -1.0))
    z = torch.randn(b, *SHAPE, generator=torch.Generator().manual_seed(0))

    g = torch.Generator().manual_seed(1)
    t = schedule.sample_timesteps(b, g, t_range=(0.02, 0.98))
    eps = torch.randn(b, *SHAPE, generator=g)
    real = x0_only(exact(kind, schedule, data_mean, data_std).conditioned(text))
    fake = x0_only(exact(kind, schedule, mu.detach().clone(), gen_std).conditioned(text))
    vsd_loss(mu + gen_std * z, real, fake, schedule, t=t, eps=eps).backward()
    grad = mu.grad.clone()
    # DMD's gradient by hand, with the two posteriors written directly in x0 space
    x = (mu + gen_std * z).detach()
    alpha, sigma = schedule.alpha_sigma(t)
    x_t = _b(alpha) * x + _b(sigma) * eps
    x0_real = gaussian_posterior(x_t, alpha, sigma, data_mean, data_std)[0]
    x0_fake = gaussian_posterior(x_t, alpha, sigma, -1.0, gen_std)[0]
    weight = 1 / (x - x0_real).abs().mean((1, 2, 3, 4), keepdim=True)
    torch.testing.assert_close(grad, (weight * (x0_fake - x0_real) / x.numel()).sum(0, keepdim=True), rtol=1e-3, atol=1e-6)
    with torch.no_grad():
        before = (mu - data_mean).abs().mean()
        mu -= 100.0 * grad  # one SGD step
        after = (mu - data_mean).abs().mean()
    assert after < before - 0.05, (before, after)
    assert (grad < 0).float().mean() > 0.9  # nearly every coordinate moves up, toward the data


def test_vsd_draws_t_inside_t_range_and_its_weight_is_per_sample():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    seen = []

    def real(x_t, t):
        seen.append(t.clone())
        return torch.zeros_like(x_t)

    x = torch.cat([torch.ones(1, 4), 4 * torch.ones(1, 4)]).requires_grad_(True)
    for _ in range(50):
        vsd_loss(x, real, lambda x_t, t: torch.ones_like(x_t), schedule)
    t = torch.cat(seen)
    assert t.min() >= 20 and t.max() <= 979 and t.max() - t.min() > 700  # the default t_range (0.02, 0.98)
    x.grad = None
    vsd_loss(x, real, lambda x_t, t: torch.ones_like(x_t), schedule, t_range=(0.5, 0.6)).backward()
    assert 500 <= seen[-1].min() and seen[-1].max() <= 600
    torch.testing.assert_close(x.grad, torch.tensor([[1.0] * 4, [0.25] * 4]) / 8)  # 1 / mean|x - x0_real| per sample
    # where x equals x0_real the weight is capped (1e-4 floor), never infinite
    x = torch.zeros(1, 4, requires_grad=True)
    vsd_loss(x, real, lambda x_t, t: torch.full_like(x_t, 1e-6), schedule, t=torch.tensor([500])).backward()
    torch.testing.assert_close(x.grad, torch.full((1, 4), 1e-6 * 1e4 / 4))


# --- (c) consistency distillation -----------------------------------------------------------


def _spy(fn, calls):
    def wrapped(x, t):
        calls.append((x.clone(), t.clone() if torch.is_tensor(t) else t))
        return fn(x, t)

    return wrapped


@pytest.mark.parametrize("kind, schedule_name", CASES)
@pytest.mark.parametrize("huber_c", [None, 0.1])
def test_cd_target_is_the_ema_after_m_teacher_steps(kind, schedule_name, huber_c):
    """With a point-mass teacher, m DDIM steps from x_start = alpha c + sigma eps land exactly on
    alpha' c + sigma' eps. The student and the EMA are deliberately different and inconsistent, so
    a target read at the start point, or read by the student, gives another number."""
    schedule = SCHEDULES[schedule_name]()
    grid, m, index, c, b = schedule.grid(20), 3, 4, 2.0, 4
    text = _text(b)
    point = c + text_mean(text)
    teacher = exact(kind, schedule, c).conditioned(text)
    student_calls, ema_calls = [], []
    student = _spy(lambda x, t: 0.5 * x, student_calls)
    ema = _spy(lambda x, t: 0.3 * x + 0.1, ema_calls)
    x0 = point.expand(b, *SHAPE)
    loss = consistency_loss(
        student, ema, teacher, x0, schedule, grid, m=m, index=index, generator=torch.Generator().manual_seed(0), huber_c=huber_c
    )

    (x_start, t_start), (x_end, t_end) = student_calls[0], ema_calls[0]
    assert len(student_calls) == 1 and len(ema_calls) == 1
    torch.testing.assert_close(t_start.double(), torch.full((b,), float(grid[index]), dtype=torch.float64))
    torch.testing.assert_close(t_end.double(), torch.full((b,), float(grid[index + m]), dtype=torch.float64))
    a0, s0 = schedule.alpha_sigma(t_start)
    eps = (x_start - _b(a0) * point) / _b(s0)
    assert abs(eps.std().item() - 1) < 0.15 and abs(eps.mean().item()) < 0.15  # x_start is the data, noised
    a1, s1 = schedule.alpha_sigma(t_end)
    torch.testing.assert_close(x_end, _b(a1) * point + _b(s1) * eps, rtol=1e-4, atol=1e-4)
    pred = consistency_function(0.5 * x_start, x_start, t_start)
    target = consistency_function(0.3 * x_end + 0.1, x_end, t_end)
    d = pred - target
    want = (d**2).mean() if huber_c is None else (torch.sqrt(d**2 + huber_c**2) - huber_c).mean()
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-6)
    assert loss.item() > 1e-3


@pytest.mark.parametrize("kind, schedule_name", CASES)
def test_cd_at_the_end_of_the_grid_targets_the_teacher_x0(kind, schedule_name):
    schedule = SCHEDULES[schedule_name]()
    grid, m = schedule.grid(10), 3
    text = _text(2)
    point = 2.0 + text_mean(text)
    calls = []
    student = _spy(lambda x, t: torch.zeros_like(x), calls)
    loss = consistency_loss(
        student,
        lambda x, t: 1 / 0,
        exact(kind, schedule, 2.0).conditioned(text),
        point.expand(2, *SHAPE),
        schedule,
        grid,
        m=m,
        index=len(grid) - m,
    )
    x_start, t_start = calls[0]
    torch.testing.assert_close(loss, F.mse_loss(consistency_function(torch.zeros_like(x_start), x_start, t_start), point.expand(2, *SHAPE)))


def test_cd_draws_its_start_index_so_that_m_steps_fit_in_the_grid():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    grid, m = schedule.grid(8), 3
    starts = []
    teacher = exact("conjugate_velocity", schedule, 0.0).conditioned(torch.zeros(1, 3, 8))
    for seed in range(60):
        student = _spy(lambda x, t: x, starts)
        consistency_loss(
            student, lambda x, t: x, teacher, torch.zeros(1, *SHAPE), schedule, grid, m=m, generator=torch.Generator().manual_seed(seed)
        )
    assert {int(t[0]) for _, t in starts} == set(grid[: len(grid) - m + 1])  # every start from grid[0] to grid[-m]


@pytest.mark.parametrize("kind, schedule_name", CASES)
def test_teacher_ddim_target_follows_the_exact_trajectory(kind, schedule_name):
    schedule = SCHEDULES[schedule_name]()
    grid, text = schedule.grid(10), _text(2)
    point = -1.0 + text_mean(text)
    teacher = exact(kind, schedule, -1.0).conditioned(text)
    eps = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    x = schedule.add_noise(point.expand(2, *SHAPE), eps, torch.full((2,), grid[2]))
    got = teacher_ddim_target(teacher, x, grid, 2, 4, schedule)
    torch.testing.assert_close(got, schedule.add_noise(point.expand(2, *SHAPE), eps, torch.full((2,), grid[6])), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(teacher_ddim_target(teacher, x, grid, 2, 8, schedule), point.expand(2, *SHAPE), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ddim_sample(teacher, x, grid[2:], schedule), point.expand(2, *SHAPE), rtol=1e-4, atol=1e-4)


# --- (c) few-step sampling re-noises x0_hat ------------------------------------------------


@pytest.mark.parametrize("kind, schedule_name", CASES)
def test_multistep_student_renoises_its_x0_and_ends_on_it(kind, schedule_name):
    """An exact point-mass student: each later step's input is alpha(t) c + sigma(t) noise with
    fresh standard noise (re-noising pure noise, dropping x0, would centre it on 0), the output is c."""
    schedule = SCHEDULES[schedule_name]()
    grid, c, b = schedule.grid(4), 6.0, 3  # a batch size unlike the channel count
    text = _text(b)
    point = c + text_mean(text)
    den = exact(kind, schedule, c).conditioned(text)
    calls, steps = [], []
    noise = torch.randn(b, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = multistep_sample(
        _spy(den, calls), noise, grid, schedule, torch.Generator().manual_seed(1), callback=lambda i, t, x: steps.append((i, t, x))
    )
    torch.testing.assert_close(out, point.expand_as(out), rtol=1e-4, atol=1e-4)
    assert [t for _, t in calls] == list(grid) and [s[:2] for s in steps] == list(enumerate(grid)) and steps[-1][2] is out
    for (_, _, x), (x_next, _) in zip(steps, calls[1:]):
        torch.testing.assert_close(x, x_next)  # the callback sees each step's result
    torch.testing.assert_close(calls[0][0], noise)
    for i in range(1, len(grid)):
        x, t = calls[i]
        alpha, sigma = schedule.alpha_sigma(t)
        r = (x - alpha * point) / sigma
        assert abs(r.mean().item()) < 0.1 and abs(r.std().item() - 1) < 0.1, (i, r.mean(), r.std())
        # the backward-simulated training input of step i is that same input, for the same generator
        torch.testing.assert_close(student_training_input(den, noise, grid, schedule, i, torch.Generator().manual_seed(1)), x)
    # fresh noise at each step, drawn from the generator
    assert not torch.allclose(calls[1][0] / schedule.alpha_sigma(grid[1])[1], calls[2][0] / schedule.alpha_sigma(grid[2])[1], atol=0.5)
    again = []
    multistep_sample(_spy(den, again), noise, grid, schedule, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again[2][0], calls[2][0])
    other = []
    multistep_sample(_spy(den, other), noise, grid, schedule, torch.Generator().manual_seed(2))
    assert not torch.allclose(other[2][0], calls[2][0])
    torch.testing.assert_close(student_training_input(den, noise, grid, schedule, 0), noise)


def test_ddpo_rollout_is_the_student_sampler_as_a_policy():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    grid, c = list(schedule.grid(4)), 3.0
    trajectory, scales, x = ddpo_rollout(
        lambda x, t: torch.full_like(x, c), torch.randn(2, 4, 2, 8, 8), grid, schedule, 0.05, torch.Generator().manual_seed(0)
    )
    assert [float(t[0]) for _, t, _, _ in trajectory] == [float(t) for t in grid]
    for k, (x_k, _, x_next, std) in enumerate(trajectory):
        alpha, sigma = schedule.alpha_sigma(grid[k + 1]) if k + 1 < len(grid) else (1.0, 0.05)
        assert scales[float(grid[k])] == pytest.approx(float(alpha)) and std == pytest.approx(float(sigma))
        r = (x_next - float(alpha) * c) / float(sigma)
        assert abs(r.mean().item()) < 0.1 and abs(r.std().item() - 1) < 0.1
        if k:
            torch.testing.assert_close(x_k, trajectory[k - 1][2])
    torch.testing.assert_close(x, trajectory[-1][2])


@pytest.mark.parametrize("kind, schedule_name", [c for c in CASES if c[1] != "zero_snr"])
def test_diffusers_schedulers_driven_by_an_exact_network_land_on_its_point_mass(kind, schedule_name):
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    from dollar.sampling import scheduler_sample
    from dollar.schedule import DDIM_SCHEDULER_CONFIG

    schedule = SCHEDULES[schedule_name]()
    text = _text(2)
    point = 2.0 + text_mean(text)
    den = exact(kind, schedule, 2.0).conditioned(text)
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    types = ("flow",) if schedule.is_flow else ("epsilon", "v_prediction", "sample")
    for scheduler_type in types:
        if schedule.is_flow:
            scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        else:
            scheduler = DDIMScheduler(**{**DDIM_SCHEDULER_CONFIG, "prediction_type": scheduler_type})
        scheduler.set_timesteps(5)  # trailing 999, 799, ..., 199: the last step lands on alpha = 1
        steps = []
        out = scheduler_sample(
            den, noise, scheduler, schedule, scheduler_type, callback=lambda i, t, x, steps=steps: steps.append((i, float(t), x))
        )
        torch.testing.assert_close(out, point.expand_as(out), rtol=1e-4, atol=2e-4)
        assert [(i, t) for i, t, _ in steps] == list(enumerate(scheduler.timesteps.tolist())) and steps[-1][2] is out


# --- the teacher's objective and the latent reward losses -----------------------------------


def test_conjugate_velocity_loss_is_zero_for_the_exact_teacher_and_draws_t_over_the_whole_process():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    net = ExactNetwork(schedule, "conjugate_velocity", 1.5)
    text = _text(64)
    x0 = (1.5 + text_mean(text)).expand(64, *SHAPE)
    assert conjugate_velocity_loss(net, x0, text, schedule, generator=torch.Generator().manual_seed(0)).item() < 1e-8
    seen = []
    inexact = ExactNetwork(schedule, "conjugate_velocity", 1.0, std=0.5)  # its error depends on eps too
    spy = lambda hidden_states, timestep, *a, **k: seen.append(timestep) or inexact(hidden_states, timestep, *a, **k)  # noqa: E731
    spy.parameters = inexact.parameters
    losses = [conjugate_velocity_loss(spy, x0, text, schedule, generator=torch.Generator().manual_seed(s)).item() for s in (0, 0, 1)]
    assert losses[0] == losses[1] != losses[2] and losses[0] > 1e-3  # drawn from the generator
    assert seen[0].min() < 100 and seen[0].max() > 900 and seen[0].dtype == torch.long
    # given t and eps, it is || v - (x0 - eps) ||^2 at x_t = alpha x0 + sigma eps
    t, eps = torch.full((64,), 300), torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(2))
    x_t = schedule.add_noise(x0, eps, t)
    want = F.mse_loss(inexact(x_t, t, text)[0], x0 - eps)
    torch.testing.assert_close(conjugate_velocity_loss(inexact, x0, text, schedule, t=t, eps=eps), want)
    torch.testing.assert_close(conjugate_velocity_loss(inexact, x0, text, ddpm_alphas_cumprod(), t=t, eps=eps), want)


def test_fake_score_loss_draws_from_the_generator_and_trains_only_the_fake_score():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    den = exact("v_prediction", schedule, 1.0)
    den.transformer.mean.requires_grad_(True)
    text = _text(8)
    x0 = (1.5 + text_mean(text)).expand(8, *SHAPE).clone().requires_grad_(True)
    a, b, c = (fake_score_loss(den, x0, text, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert a.item() == b.item() != c.item()
    a.backward()
    assert x0.grad is None and den.transformer.mean.grad.abs().sum() > 0  # the student's samples are detached


def test_latent_reward_fit_and_finetune_losses():
    from dollar.losses import latent_reward_fit_loss, reward_finetune_loss

    calls = []

    class Reward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, z, text):
            calls.append((z, text))
            return self.w * z.flatten(1).mean(1) + (0 if text is None else text.mean((1, 2)))

    model, text = Reward(), _text(3)
    z = torch.randn(3, *SHAPE, dtype=torch.float64, requires_grad=True)
    rewards = torch.tensor([0.5, -1.0, 2.0])
    loss = latent_reward_fit_loss(model, z, rewards, text)
    torch.testing.assert_close(loss, F.mse_loss(2 * z.detach().flatten(1).mean(1) + text.mean((1, 2)), rewards.double()))
    assert loss.dtype == torch.float64 and calls[-1][1] is text and not calls[-1][0].requires_grad  # latents detached
    loss.backward()
    assert z.grad is None and model.w.grad != 0
    assert latent_reward_fit_loss(model, z, rewards).item() != loss.item() and calls[-1][1] is None
    ft = reward_finetune_loss(model, z, text)
    torch.testing.assert_close(ft, -(2 * z.detach().flatten(1).mean(1) + text.mean((1, 2))).mean())
    ft.backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, -2.0 / z[0].numel() / 3))  # the student is pushed up the reward
    assert calls[-1][1] is text
    torch.testing.assert_close(reward_finetune_loss(model, z), -(2 * z.detach().flatten(1).mean(1)).mean())


def test_vsd_and_cd_draw_their_noise_from_the_generator_and_noise_in_the_sample_dtype():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    real = x0_only(exact("epsilon", schedule, 1.0, 0.5).conditioned(torch.zeros(4, 3, 8)))
    fake = x0_only(exact("epsilon", schedule, 0.0, 0.5).conditioned(torch.zeros(4, 3, 8)))
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    a, b, c = (vsd_loss(x, real, fake, schedule, generator=torch.Generator().manual_seed(s)).item() for s in (1, 1, 2))
    assert a == b != c
    seen = []
    vsd_loss(x.bfloat16(), lambda x_t, t: seen.append(x_t.dtype) or x_t, lambda x_t, t: x_t, schedule)
    assert seen == [torch.bfloat16]
    teacher = exact("epsilon", schedule, 1.0).conditioned(torch.zeros(4, 3, 8))
    a, b, c = (
        consistency_loss(
            lambda x, t: 0.5 * x, lambda x, t: x, teacher, x, schedule, schedule.grid(10), m=2, generator=torch.Generator().manual_seed(s)
        )
        for s in (1, 1, 2)
    )
    assert a.item() == b.item() != c.item()


def test_ddpo_loss_is_reinforce_on_the_gaussian_log_density_of_each_step():
    from dollar.losses import ddpo_loss

    w, seen = torch.nn.Parameter(torch.tensor(0.5)), []

    def policy_mean(x, t):
        seen.append(t)
        return w * x + t.view(-1, 1).float() / 1000

    g = torch.Generator().manual_seed(0)
    x0, x1, x2 = (torch.randn(3, 4, generator=g) for _ in range(3))
    t0, t1 = torch.full((3,), 999), torch.full((3,), 499)
    advantages = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)  # not centred, so a constant in log p shows
    loss = ddpo_loss(policy_mean, [(x0, t0, x1, 0.8), (x1, t1, x2, 0.05)], advantages)
    log_p = -((x1 - w * x0 - 0.999) ** 2).mean(1) / (2 * 0.8**2) - ((x2 - w * x1 - 0.499) ** 2).mean(1) / (2 * 0.05**2)
    torch.testing.assert_close(loss, -(advantages.float() * log_p).mean())
    assert loss.dtype == torch.float32 and seen[0] is t0 and seen[1] is t1


def test_flow_schedule_constructor():
    assert NoiseSchedule.flow().shift == 1.0 and NoiseSchedule.flow().grid(4) == [1000.0, 750.0, 500.0, 250.0]
    short = NoiseSchedule.flow(2.0, num_train_timesteps=500)
    assert short.num_train_timesteps == 500 and float(short.alpha_sigma(250)[1]) == 0.5
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="the flow shift must be positive, got"):
            NoiseSchedule.flow(bad)


def test_losses_hand_the_networks_their_own_dtype():
    from dollar.losses import latent_reward_fit_loss

    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    net, seen = ExactNetwork(schedule, "conjugate_velocity", 1.0).double(), []
    forward = net.forward
    net.forward = lambda x, t, text, **k: seen.append((x.dtype, text.dtype, t)) or forward(x, t, text, **k)
    conjugate_velocity_loss(net, torch.ones(2, *SHAPE), _text(2), schedule)
    assert seen[0][:2] == (torch.float64, torch.float64)
    conjugate_velocity_loss(
        net, torch.ones(20000, 1, 1, 1, 1), torch.zeros(20000, 1, 1), schedule, generator=torch.Generator().manual_seed(0)
    )
    assert seen[-1][2].min() == 0 and seen[-1][2].max() == 999  # t uniform on all 1000 DDPM steps
    z = torch.randn(2, *SHAPE).bfloat16()
    fit = latent_reward_fit_loss(lambda z, text: z.flatten(1).mean(1), z, torch.tensor([0.1, 0.2]))
    assert fit.dtype == torch.bfloat16  # rewards meet the latents in their dtype


def test_consistency_function_uses_lcm_scalings_and_cd_takes_five_teacher_steps_by_default():
    from diffusers import LCMScheduler

    from dollar.losses import lcm_boundary_scalings

    lcm = LCMScheduler()
    t = torch.tensor([0, 1, 3, 40])
    c_skip, c_out = lcm_boundary_scalings(t)
    want = torch.tensor([lcm.get_scalings_for_boundary_condition_discrete(int(v)) for v in t])
    torch.testing.assert_close(torch.stack([c_skip, c_out], 1), want.float())
    x, x0 = torch.full((4, 2), 2.0), torch.full((4, 2), 3.0)
    torch.testing.assert_close(consistency_function(x0, x, t), (2 * c_skip + 3 * c_out).view(4, 1).expand(4, 2))
    assert consistency_function(x0.bfloat16(), x.bfloat16(), t).dtype == torch.bfloat16
    schedule, steps = NoiseSchedule.vp(ddpm_alphas_cumprod()), []
    teacher = exact("epsilon", schedule, 1.0).conditioned(torch.zeros(1, 3, 8))
    consistency_loss(lambda x, t: x, lambda x, t: x, _spy(teacher, steps), torch.zeros(1, *SHAPE), schedule, schedule.grid(50), index=3)
    assert [t for _, t in steps] == schedule.grid(50)[3:8]  # METHOD.md: m = 5 teacher steps


def test_cd_noises_real_latents_in_their_dtype():
    schedule, seen = NoiseSchedule.vp(ddpm_alphas_cumprod()), []
    x0 = torch.ones(2, *SHAPE, dtype=torch.bfloat16)
    consistency_loss(_spy(lambda x, t: x, seen), lambda x, t: x, lambda x, t: (x, x), x0, schedule, schedule.grid(10), m=2, index=0)
    assert seen[0][0].dtype == torch.bfloat16


def test_schedule_edges():
    vp = NoiseSchedule.vp(ddpm_alphas_cumprod())
    assert set(vp.sample_timesteps(64, torch.Generator().manual_seed(0), t_range=(0.99995, 1.0)).tolist()) == {999}
    assert set(vp.sample_timesteps(64, torch.Generator().manual_seed(0), t_range=(0.0, 0.0005)).tolist()) == {0}
    assert NoiseSchedule.vp(ddpm_alphas_cumprod(num_train_timesteps=500)).grid(2) == [499, 249]  # its own length, not 1000


def test_denoiser_defaults_and_call_forms():
    """The remaining gaps mutation testing listed: the default prediction type, a family given as an
    object, a number for t, guidance without an unconditional input, the diffusers alias of flow."""
    from dollar.teachers import FAMILIES

    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    net = ExactNetwork(schedule, "conjugate_velocity", torch.zeros(4), 0.0)
    default = Denoiser(net, schedule)
    assert default.prediction_type == "conjugate_velocity" and default.family is FAMILIES["dollar"]
    assert Denoiser(net, schedule, "conjugate_velocity", FAMILIES["wan"]).family is FAMILIES["wan"]
    x, text = torch.randn(3, 4), _text(3)
    by_number, by_tensor = default(x, 600, text), default(x, torch.full((3,), 600), text)
    for a, b in zip(by_number, by_tensor):
        torch.testing.assert_close(a, b)
    for a, b in zip(default.guided(x, 600, text, None, 3.0), by_number):  # no unconditional input: conditional
        torch.testing.assert_close(a, b)
    x0, eps = torch.randn(2, 4), torch.randn(2, 4)
    one = torch.ones(2)
    torch.testing.assert_close(x0_eps_to_prediction(x0, eps, one, one, "flow_prediction"), eps - x0)


def test_ddim_sample_reports_each_step_to_its_callback():
    schedule = NoiseSchedule.vp(ddpm_alphas_cumprod())
    seen = []

    def denoise(x, t):
        return torch.zeros_like(x), torch.zeros_like(x)

    out = ddim_sample(denoise, torch.ones(1, 2), [999, 499], schedule, callback=lambda i, t, x: seen.append((i, t, x.clone())))
    assert [(i, t) for i, t, _ in seen] == [(0, 999), (1, 499)]
    torch.testing.assert_close(seen[-1][2], out)


def test_the_longest_grid_is_every_training_timestep():
    from dollar.schedule import trailing_timesteps

    assert trailing_timesteps(1000) == list(range(999, -1, -1))
    assert len(NoiseSchedule.flow(3.0).grid(1000)) == 1000
