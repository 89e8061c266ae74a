"""The collapse sentinel flags static, solid and noisy outputs and reward hacking, not real clips."""

import numpy as np
import pytest

from dollar import world
from dollar.sentinel import CollapseSentinel, video_health


@pytest.fixture(scope="module")
def real():
    return np.stack([world.make_sample(i)[0] for i in range(8)])


@pytest.fixture(scope="module")
def sentinel(real):
    return CollapseSentinel(reference=video_health(real))


def test_real_clips_are_healthy(real):
    fresh = np.stack([world.make_sample(100 + i)[0] for i in range(8)])
    assert CollapseSentinel(reference=video_health(real)).check(fresh) == []


def test_static_solid_and_noise_are_flagged(real):
    s = CollapseSentinel(reference=video_health(real))
    static = np.repeat(real[:, :1], real.shape[1], axis=1)
    assert [r.split(":")[0] for r in s.check(static)] == ["static"]
    solid = np.full_like(real, 90)
    assert set(r.split(":")[0] for r in s.check(solid)) == {"static", "solid"}
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    assert "noise" in [r.split(":")[0] for r in s.check(noise)]


def test_reward_hacking_needs_both_signals(real):
    s = CollapseSentinel(reference=video_health(real), accuracy_drop=0.1)
    assert s.check(real, accuracy=0.8, train_reward=1.0) == []
    assert s.check(real, accuracy=0.75, train_reward=2.0) == []  # small drop: fine
    assert s.check(real, accuracy=0.5, train_reward=1.0) == []  # accuracy fell, reward did not rise
    reasons = s.check(real, accuracy=0.5, train_reward=2.0)
    assert len(reasons) == 1 and reasons[0].startswith("reward hacking")
    restored = CollapseSentinel(reference=s.reference)
    restored.load_state_dict(s.state_dict())
    assert restored.best_accuracy == 0.8 and restored.reward_at_best == 1.0
