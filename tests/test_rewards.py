import numpy as np
import pytest
import torch

from dollar import world
from dollar.losses import latent_reward_fit_loss, reward_finetune_loss
from dollar.models.latent_reward import LatentRewardModel
from dollar.rewards import get_reward


def _clip(motion, seed=0):
    obj = world.ObjectSpec("red", "circle", motion, "fast", "large")
    return world.render(world.make_scene((obj,), "black", seed=seed))


def test_motion_reward_is_zero_for_static_and_grows_with_speed():
    motion = get_reward("motion")
    static, slow, fast = _clip("static"), None, _clip("left")
    obj = world.ObjectSpec("red", "circle", "left", "slow", "large")
    slow = world.render(world.make_scene((obj,), "black", seed=0))
    scores = motion(np.stack([static, slow, fast]), [""] * 3)
    assert scores[0] < 1e-3 and scores[0] < scores[1] < scores[2]


def test_alignment_reward_from_the_checker():
    video, text, _ = world.make_sample(2)
    other = next(
        world.make_sample(s)[1]
        for s in range(3, 50)
        if world.make_sample(s)[2].objects[0].colour != world.make_sample(2)[2].objects[0].colour
    )
    scores = get_reward("alignment")(np.stack([video, video]), [text, other])
    assert scores[0] == 1.0 and scores[1] < 1.0


def test_sharpness_prefers_sharp_frames():
    import cv2

    video = _clip("static")
    blurred = np.stack([cv2.GaussianBlur(f, (9, 9), 3) for f in video])
    scores = get_reward("sharpness")(np.stack([video, blurred]), ["", ""])
    assert scores[0] > scores[1]


def test_unknown_reward_is_one_sentence():
    with pytest.raises(ValueError, match="Unknown reward 'beauty'"):
        get_reward("beauty")


@pytest.mark.parametrize("text_dim", [0, 384])
def test_latent_reward_model_fit_lowers_regression_error_on_a_known_reward(text_dim):
    torch.manual_seed(0)
    model = LatentRewardModel(latent_channels=4, hidden_channels=16, first_kernel=2, first_stride=2, text_dim=text_dim)
    opt = torch.optim.Adam(model.parameters(), 3e-3)

    def batch(n=32):
        z = torch.randn(n, 4, 3, 8, 8)
        return z, z[:, 0].mean((1, 2, 3)) * 3 + z[:, 1].abs().mean((1, 2, 3)), torch.randn(n, 5, 384)

    z_eval, r_eval, text_eval = batch(128)
    before = latent_reward_fit_loss(model, z_eval, r_eval, text_eval if text_dim else None).item()
    for _ in range(150):
        z, r, text = batch()
        loss = latent_reward_fit_loss(model, z, r, text if text_dim else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = latent_reward_fit_loss(model, z_eval, r_eval, text_eval if text_dim else None).item()
    assert after < 0.3 * before


def test_reward_finetune_gradient_reaches_the_latents_only_through_the_model():
    model = LatentRewardModel(latent_channels=4, hidden_channels=16, first_kernel=2, first_stride=2)
    z = torch.randn(2, 4, 3, 8, 8, requires_grad=True)
    reward_finetune_loss(model, z).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
