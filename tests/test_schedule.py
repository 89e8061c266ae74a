import pytest
import torch
from diffusers import DDIMScheduler

from dollar.denoiser import Denoiser
from dollar.sampling import ddim_sample, multistep_sample
from dollar.schedule import (
    DDIM_SCHEDULER_CONFIG,
    STUDENT_TIMESTEPS,
    NoiseSchedule,
    add_noise,
    classifier_free_guidance,
    ddpm_alphas_cumprod,
    model_input,
    prediction_to_x0_eps,
    trailing_timesteps,
    x0_eps_to_prediction,
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


def _target(x0, eps, alpha, sigma, kind):
    """What an exact network of each kind outputs, from the standard definitions."""
    return {
        "conjugate_velocity": x0 - eps,  # METHOD.md: constant target
        "epsilon": eps,
        "v_prediction": alpha * eps - sigma * x0,  # Salimans & Ho
        "flow": eps - x0,  # rectified flow velocity
    }[kind]


def _zero_snr_vp():
    """CogVideoX's schedule: alpha-bar rescaled to zero terminal SNR (alpha(999) = 0)."""
    from diffusers import CogVideoXDDIMScheduler

    return NoiseSchedule.vp(CogVideoXDDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction").alphas_cumprod)


SCHEDULES = {
    "vp": lambda: NoiseSchedule.vp(ALPHAS),
    "zero_snr_vp": _zero_snr_vp,
    "flow_shift3": lambda: NoiseSchedule.flow(3.0),
}
# The combinations stock teachers use (an epsilon model has no zero-terminal-SNR point to read).
CASES = [(k, s) for k in PREDICTIONS for s in ("vp", "flow_shift3") if not (k == "flow") or s == "flow_shift3"] + [
    ("v_prediction", "zero_snr_vp"),
    ("flow", "vp"),
]


@pytest.mark.parametrize("kind, schedule_name", CASES)
@pytest.mark.parametrize("t", [0, 250, 999])
def test_exact_network_of_each_type_gives_back_x0_and_eps(kind, schedule_name, t):
    schedule = SCHEDULES[schedule_name]()
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    tt = torch.full((3,), t)
    x_t = add_noise(x0, eps, tt, schedule)
    inp, _ = model_input(x_t, tt, schedule, kind)
    # the network sees its own input space: the conjugate flow point for a flow model on a VP schedule
    alpha, sigma = schedule.alpha_sigma(tt)
    scale = (alpha + sigma).view(-1, 1, 1, 1, 1) if (kind == "flow" and not schedule.is_flow) else 1.0
    a_in, s_in = alpha.view(-1, 1, 1, 1, 1) / scale, sigma.view(-1, 1, 1, 1, 1) / scale
    torch.testing.assert_close(inp, a_in * x0 + s_in * eps, rtol=1e-5, atol=1e-5)
    prediction = _target(x0, eps, a_in, s_in, kind)
    x0_hat, eps_hat = prediction_to_x0_eps(prediction, x_t, alpha, sigma, kind)
    if not (kind == "epsilon" and t == 0):  # at t = 0 an epsilon model's eps is unobservable (sigma ~ 0.01)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=2e-4)
        torch.testing.assert_close(eps_hat, eps, rtol=1e-3, atol=2e-3)
    # and the way back is the network's own output (the target a fake score is trained to)
    torch.testing.assert_close(x0_eps_to_prediction(x0, eps, a_in.flatten(), s_in.flatten(), kind), prediction, rtol=1e-5, atol=1e-5)


def test_flow_schedule_matches_the_stock_flow_schedulers():
    """FlowMatchEulerDiscreteScheduler (shift 3) on the grid s = 1, 7/8, ..., 1/8 (LTX's stock grid,
    and CausVid's student grid): its timesteps are our grid, and one Euler step is our DDIM step
    between the same two points."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / 8, 8))
    schedule = NoiseSchedule.flow(3.0)
    torch.testing.assert_close(torch.tensor(schedule.grid(8)).float(), sched.timesteps.float(), rtol=1e-5, atol=1e-3)
    g = torch.Generator().manual_seed(0)
    x, u = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    t, t_next = sched.timesteps[2], sched.timesteps[3]
    sched.set_begin_index(2)
    euler = sched.step(u, t, x, return_dict=False)[0]
    x0, eps = prediction_to_x0_eps(u, x, *schedule.alpha_sigma(t.reshape(1)), "flow")
    a_next, s_next = schedule.alpha_sigma(t_next.reshape(1))
    torch.testing.assert_close(a_next * x0 + s_next * eps, euler, rtol=1e-5, atol=1e-5)


def test_flow_training_timesteps_follow_the_shift():
    schedule = NoiseSchedule.flow(5.0)
    t = schedule.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1000
    # P(s < shift(0.5)) = 0.5 under the shift: the median of s is 5 * 0.5 / (1 + 4 * 0.5) = 0.833
    assert abs(float((t / 1000).median()) - 5 / 6) < 0.01
    vp = NoiseSchedule.vp(ALPHAS).sample_timesteps(20000, torch.Generator().manual_seed(0), t_range=(0.02, 0.98))
    assert vp.dtype == torch.long and vp.min() >= 20 and vp.max() <= 979


def test_user_grids_are_checked():
    assert NoiseSchedule.vp(ALPHAS).check_grid([999, 600, 300]) == [999, 600, 300]
    assert NoiseSchedule.flow(3.0).check_grid([1000, 937.5]) == [1000.0, 937.5]
    for bad in ([999, 999], [300, 600], [1000], [], [999.5]):
        with pytest.raises(ValueError, match="timesteps"):
            NoiseSchedule.vp(ALPHAS).check_grid(bad)


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
    x0_hat, eps_hat = prediction_to_x0_eps(velocity, x_t, a[t].sqrt().expand(2), (1 - a[t]).sqrt().expand(2), "flow")
    x_prev = a[t_prev].sqrt() * x0_hat + (1 - a[t_prev]).sqrt() * eps_hat
    y_prev, timestep_prev = model_input(x_prev, torch.tensor([t_prev] * 2), a, "flow")
    euler = y + (timestep_prev[0] / 1000 - sigma) * velocity
    torch.testing.assert_close(y_prev, euler, rtol=1e-5, atol=1e-5)


class _Linear(torch.nn.Module):
    """A diffusers-shaped network: output depends on the sample, timestep and text."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4) * 0.2)

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        x, t, text = hidden_states, timestep, encoder_hidden_states
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
    a = ALPHAS[t].float()
    x0_ref, eps_ref = prediction_to_x0_eps(classifier_free_guidance(v_c, v_u, w), x, a.sqrt(), (1 - a).sqrt(), "conjugate_velocity")
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


def test_user_grids_keep_their_schedule_number_type_and_both_ends():
    vp = NoiseSchedule.vp(ALPHAS).check_grid([999.0, 0])
    assert vp == [999, 0] and all(type(v) is int for v in vp)
    flow = NoiseSchedule.flow(3.0).check_grid([1000, 0])
    assert flow == [1000.0, 0.0] and all(type(v) is float for v in flow)
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule.flow(3.0).check_grid([1000.5, 3])
