import numpy as np
import pytest
import scipy.linalg
from scipy import stats

from dollar import metrics, world
from dollar.checker import object_mask
from dollar.rewards import get_reward


def _clip(motion="left", background="gray", seed=0, colour="red"):
    obj = world.ObjectSpec(colour, "square", motion, "fast", "large")
    return world.render(world.make_scene((obj,), background, seed=seed))


def _vendi_reference(x: np.ndarray) -> float:
    """Vendi straight from its definition: entropy of the eigenvalues of K / n, K = cosine kernel."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(x @ x.T / len(x))
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def _frechet_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The usual FID formula with scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# --- Vendi -----------------------------------------------------------------------------


def test_vendi_is_one_for_identical_videos():
    video = _clip()
    assert metrics.vendi_score(metrics.pixel_vectors(np.stack([video] * 5))) == pytest.approx(1.0, abs=1e-9)


def test_vendi_grows_with_distinct_videos():
    videos = [_clip(m, seed=s) for s, m in enumerate(("left", "up", "growing", "bouncing"))]
    scores = [metrics.vendi_score(metrics.pixel_vectors(np.stack(videos[:k] + [videos[0]] * (4 - k)))) for k in range(1, 5)]
    assert scores[0] == pytest.approx(1.0, abs=1e-9)
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] <= 4.0


@pytest.mark.parametrize("n, d", [(6, 50), (40, 8)])  # both Gram matrices of the implementation
def test_vendi_matches_direct_eigenvalue_computation(n, d):
    x = np.random.default_rng(n).normal(size=(n, d))
    assert metrics.vendi_score(x) == pytest.approx(_vendi_reference(x), rel=1e-9)


def test_vendi_of_orthogonal_items_is_their_count():
    assert metrics.vendi_score(np.eye(7)) == pytest.approx(7.0, rel=1e-9)


def test_vendi_rejects_a_zero_vector():
    with pytest.raises(ValueError, match="all-zero"):
        metrics.vendi_score(np.zeros((3, 4)))


# --- Frechet distance ------------------------------------------------------------------


def test_frechet_distance_of_a_set_to_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_sqrtm_reference_and_grows_with_noise():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    distances = []
    for sigma in (0.0, 0.5, 1.0, 2.0):
        fake = real + sigma * rng.normal(size=real.shape)
        fd = metrics.frechet_distance(fake, real)
        assert fd == pytest.approx(_frechet_reference(fake, real), rel=1e-6, abs=1e-6)
        distances.append(fd)
    assert distances[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    x = np.random.default_rng(2).normal(size=(100, 5))
    shift = np.array([3.0, 0, 0, 4.0, 0])
    assert metrics.frechet_distance(x + shift, x) == pytest.approx(25.0, rel=1e-9)


def test_frechet_distance_is_real_and_finite_for_rank_deficient_sets():
    """Fewer samples than dimensions (the usual small-set case): stays real, >= 0, ~0 to itself."""
    x = np.random.default_rng(3).normal(size=(10, 30))
    y = np.random.default_rng(4).normal(size=(10, 30))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(metrics.frechet_distance(x, y)) and metrics.frechet_distance(x, y) > 0


def test_gaussian_fit_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        metrics.gaussian_fit(np.ones((1, 3)))


# --- intervals -------------------------------------------------------------------------


def test_mean_interval_matches_scipy_t_interval():
    values = [0.61, 0.7, 0.66, 0.58]
    got = metrics.mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert got["mean"] == pytest.approx(np.mean(values))
    assert (got["low"], got["high"]) == pytest.approx((low, high))


def test_mean_interval_of_one_value_has_no_interval():
    assert metrics.mean_interval([0.5]) == {"mean": 0.5, "low": None, "high": None, "n": 1}


@pytest.mark.parametrize("k, n", [(183, 192), (192, 192), (0, 64), (37, 64)])
def test_wilson_interval_matches_scipy(k, n):
    # scipy takes z from the normal quantile (1.95996...), the benchmarks' reports 1.96
    expected = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    low, high = metrics.wilson_interval(k / n, n)
    assert low == pytest.approx(expected.low, abs=1e-4) and high == pytest.approx(expected.high, abs=1e-4)
    assert low <= k / n + 1e-12 and k / n - 1e-12 <= high  # the interval holds the proportion (up to rounding)


# --- per-video quality -----------------------------------------------------------------


def test_dynamic_degree_is_zero_for_a_static_video_and_positive_for_motion():
    motion = get_reward("motion")
    scores = motion(np.stack([_clip("static"), _clip("left")]), ["", ""])
    assert scores[0] < 1e-3 and scores[1] > 0.1  # mean flow over the frame; the object is a small part


def test_motion_smoothness_is_one_when_still_and_drops_when_frames_are_shuffled():
    video = _clip("left", seed=1)
    shuffled = video[np.random.default_rng(0).permutation(len(video))]
    assert metrics.motion_smoothness(_clip("static")) == pytest.approx(1.0)
    assert metrics.motion_smoothness(video) > 0.995
    assert metrics.motion_smoothness(shuffled) < metrics.motion_smoothness(video) - 0.02


def test_background_consistency_and_flicker_see_background_changes_not_the_object():
    video = _clip("left", "dark blue", seed=2)
    mask = object_mask(video)
    assert metrics.background_consistency(video, mask) == pytest.approx(1.0)
    assert metrics.temporal_flicker(video, mask) == pytest.approx(1.0)
    # the background turns from dark blue to red half way: consistency drops
    drift = video.copy()
    drift[9:, ..., 0] = np.where(mask[9:], drift[9:, ..., 0], 120)
    assert metrics.background_consistency(drift, mask) < 0.9
    # noise on the background: flicker drops
    noisy = np.clip(video + np.random.default_rng(0).normal(0, 15, video.shape), 0, 255).astype(np.uint8)
    assert metrics.temporal_flicker(noisy, mask) < 0.95


def test_temporal_consistency_formula():
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # t=1: (cos(f0,f1) + cos(f0,f1)) / 2 = 1; t=2: (cos(f0,f2) + cos(f1,f2)) / 2 = 0
    assert metrics.temporal_consistency(f) == pytest.approx(0.5)
    assert metrics.temporal_consistency(np.ones((5, 3))) == pytest.approx(1.0)
