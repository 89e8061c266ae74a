import pytest
import torch
from diffusers import DDIMScheduler

from dollar.denoiser import Denoiser
from dollar.sampling import ddim_sample, multistep_sample
from dollar.schedule import (
    DDIM_SCHEDULER_CONFIG,
    STUDENT_TIMESTEPS,
    add_noise,
    classifier_free_guidance,
    ddpm_alphas_cumprod,
    model_input,
    prediction_to_x0_eps,
    trailing_timesteps,
)

ALPHAS = ddpm_alphas_cumprod()


def test_alphas_match_diffusers():
    sched = DDIMScheduler(**DDIM_SCHEDULER_CONFIG)
    torch.testing.assert_close(ALPHAS.float(), sched.alphas_cumprod, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [1, 2, 4, 50])
def test_trailing_grid_matches_diffusers_and_student_grids(k):
    sched = DDIMScheduler(**DDIM_SCHEDULER_CONFIG)
    sched.set_timesteps(k)
    assert trailing_timesteps(k) == sched.timesteps.tolist()
    if k in STUDENT_TIMESTEPS:
        assert tuple(trailing_timesteps(k)) == STUDENT_TIMESTEPS[k]
    if k == 50:
        assert trailing_timesteps(50)[:3] == [999, 979, 959] and trailing_timesteps(50)[-1] == 19


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", True, 1001])
def test_trailing_grid_rejects_bad_step_counts(bad):
    with pytest.raises(ValueError, match="number of steps"):
        trailing_timesteps(bad)


def _toy_denoiser(seed=0):
    """A fixed nonlinear map standing in for a network: any (x_t, t) -> x0_hat works here."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 4, generator=g) * 0.3

    def x0_of(x, t):
        return torch.tanh(torch.einsum("ij,bj...->bi...", w, x)) * (1 + t / 1000)

    return x0_of


def test_ddim_matches_diffusers_ddim_fed_the_same_x0():
    x0_of = _toy_denoiser()
    a = ALPHAS.float()

    def denoise(x, t):
        x0 = x0_of(x, t)
        eps = (x - a[t].sqrt() * x0) / (1 - a[t]).sqrt()
        return x0, eps

    x_start = torch.randn(2, 4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    ours = ddim_sample(denoise, x_start.clone(), trailing_timesteps(50), a)

    sched = DDIMScheduler(**DDIM_SCHEDULER_CONFIG)
    sched.set_timesteps(50)
    x = x_start.clone()
    for t in sched.timesteps:
        x = sched.step(x0_of(x, int(t)), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-5)


PREDICTIONS = ["conjugate_velocity", "epsilon", "v_prediction", "flow"]


def _target(x0, eps, a, kind):
    """What an exact network of each kind outputs, from the standard definitions."""
    sa, s1a = a.sqrt(), (1 - a).sqrt()
    return {
        "conjugate_velocity": x0 - eps,  # METHOD.md: constant target
        "epsilon": eps,
        "v_prediction": sa * eps - s1a * x0,  # Salimans & Ho
        "flow": eps - x0,  # rectified flow velocity
    }[kind]


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("t", [0, 250, 999])
def test_exact_network_of_each_type_gives_back_x0_and_eps(kind, t):
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    tt = torch.full((3,), t)
    a = ALPHAS[t].float()
    x_t = add_noise(x0, eps, tt, ALPHAS.float())
    x0_hat, eps_hat = prediction_to_x0_eps(_target(x0, eps, a, kind), x_t, a.expand(3), kind)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-4, atol=2e-4)


def test_flow_input_is_the_conjugate_point_and_ddim_is_euler_in_flow_space():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    a = ALPHAS.float()
    t, t_prev = 700, 500
    x_t = add_noise(x0, eps, torch.tensor([t, t]), a)
    y, timestep = model_input(x_t, torch.tensor([t, t]), a, "flow")
    sigma = timestep[0] / 1000
    torch.testing.assert_close(y, (1 - sigma) * x0 + sigma * eps, rtol=1e-5, atol=1e-5)
    # a flow network's Euler step between the conjugate points equals our DDIM step in VP space
    velocity = 0.7 * (eps - x0) + 0.1  # any network output
    x0_hat, eps_hat = prediction_to_x0_eps(velocity, x_t, a[t].expand(2), "flow")
    x_prev = a[t_prev].sqrt() * x0_hat + (1 - a[t_prev]).sqrt() * eps_hat
    y_prev, timestep_prev = model_input(x_prev, torch.tensor([t_prev] * 2), a, "flow")
    euler = y + (timestep_prev[0] / 1000 - sigma) * velocity
    torch.testing.assert_close(y_prev, euler, rtol=1e-5, atol=1e-5)


class _Linear(torch.nn.Module):
    """A diffusers-shaped network: output depends on the sample, timestep and text."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4) * 0.2)

    def forward(self, x, t, text, return_dict=False):
        out = torch.einsum("ij,bj...->bi...", self.w, x) + text.mean((1, 2)).view(-1, 1, 1, 1, 1) + t.view(-1, 1, 1, 1, 1) / 1000
        return (out,)


def test_cfg_with_w_zero_is_the_conditional_prediction_and_guides_the_raw_velocity():
    torch.manual_seed(0)
    den = Denoiser(_Linear(), ALPHAS, "conjugate_velocity")
    x = torch.randn(2, 4, 2, 4, 4)
    t = torch.tensor([600, 600])
    cond, uncond = torch.randn(2, 5, 384), torch.randn(2, 5, 384)
    for got, want in zip(den.guided(x, t, cond, uncond, 0.0), den(x, t, cond)):
        torch.testing.assert_close(got, want)
    # guiding x0_hat / eps_hat equals guiding the network's velocity, then converting
    w = 3.5
    v_c, v_u = den.transformer(x, t, cond)[0], den.transformer(x, t, uncond)[0]
    x0_ref, eps_ref = prediction_to_x0_eps(classifier_free_guidance(v_c, v_u, w), x, ALPHAS[t].float(), "conjugate_velocity")
    x0, eps = den.guided(x, t, cond, uncond, w)
    torch.testing.assert_close(x0, x0_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps, eps_ref, rtol=1e-5, atol=1e-5)


def test_multistep_renoises_between_steps_and_returns_x0():
    calls = []

    def denoise(x, t):
        calls.append((t, x.clone()))
        return torch.full_like(x, 0.5), torch.zeros_like(x)

    out = multistep_sample(denoise, torch.randn(1, 4, 2, 4, 4), STUDENT_TIMESTEPS[4], ALPHAS.float(), torch.Generator().manual_seed(0))
    assert [c[0] for c in calls] == [999, 749, 499, 249]
    torch.testing.assert_close(out, torch.full_like(out, 0.5))
    # the input at t=749 is 0.5 re-noised to alpha-bar_749: its mean sits near sqrt(a) * 0.5
    a = ALPHAS[749].sqrt().item()
    assert abs(calls[1][1].mean().item() - 0.5 * a) < 0.3
