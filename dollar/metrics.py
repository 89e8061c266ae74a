"""Evaluation metrics as pure functions: numbers in, numbers out.

Distribution: the Frechet distance between Gaussian fits of two feature sets (FID/FVD) and
the Vendi score (diversity). Per-video quality in the spirit of VBench, adapted to the world's
64x64 clips: subject and background consistency, temporal flicker, motion smoothness. Dynamic
degree and imaging quality are the rewards of :mod:`dollar.rewards` (optical-flow magnitude,
log Laplacian variance). Intervals: Student-t over independent repeats (seeds), Wilson for a
proportion of independent verdicts. Reconstruction: PSNR.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

# --- summary statistics ---------------------------------------------------------------


def mean_interval(values, confidence: float = 0.95, bounds: tuple[float | None, float | None] = (None, None)) -> dict:
    """Mean and Student-t ``confidence`` interval of independent repeats (e.g. one value per
    seed), the interval clipped to the figure's possible range ``bounds``. With fewer than two
    finite values the interval is None."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    low, high = mean - half, mean + half
    if bounds[0] is not None:
        low = max(low, bounds[0])
    if bounds[1] is not None:
        high = min(high, bounds[1])
    return {"mean": mean, "low": low, "high": high, "n": int(len(x))}


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (``z`` = 1.96) Wilson score interval of a proportion ``p`` of ``n`` verdicts."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (centre - half, centre + half)


# --- reconstruction ---------------------------------------------------------------------


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two videos in [-1, 1] (peak-to-peak range 2)."""
    mse = (x.float() - y.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(4.0 / mse)).item()


# --- distribution -----------------------------------------------------------------------


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``features`` [N, D]."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors [N, D] to fit a Gaussian, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance_gaussians(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2), which stays real and
    stable for the rank-deficient covariances of small sets, where sqrtm of S1 S2 does not.
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt, 0.0))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets [N, D] and [M, D]."""
    return frechet_distance_gaussians(*gaussian_fit(features_a), *gaussian_fit(features_b))


def vendi_score(features: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng, 2023) with the cosine-similarity kernel: exp of the
    Shannon entropy of the eigenvalues of K / n. 1 for identical items, n for orthogonal ones.

    The non-zero eigenvalues of K / n = X X^T / n equal those of X^T X / n (X = unit rows), so
    the smaller of the two Gram matrices is decomposed.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if len(x) == 0 or np.any(norms == 0):
        raise ValueError("the Vendi score needs at least one item and no all-zero feature vector")
    x = x / norms
    n = len(x)
    gram = x.T @ x if x.shape[1] < n else x @ x.T
    eig = np.clip(np.linalg.eigvalsh(gram / n), 0, None)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def pixel_vectors(videos: np.ndarray) -> np.ndarray:
    """uint8 videos [B, ...] -> float vectors [B, D], each value v mapped to (v + 1) / 256 so that
    a black video is a valid direction for cosine similarity."""
    return (np.asarray(videos, dtype=np.float64).reshape(len(videos), -1) + 1.0) / 256.0


# --- per-video quality ------------------------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def temporal_consistency(frame_vectors: np.ndarray) -> float:
    """VBench's consistency: mean over frames t >= 1 of the average cosine similarity of frame t
    to the first frame and to the previous frame. ``frame_vectors`` [T, D]."""
    f = np.asarray(frame_vectors, dtype=np.float64)
    if len(f) < 2:
        raise ValueError("consistency needs at least two frames")
    return float(np.mean([(_cosine(f[0], f[t]) + _cosine(f[t - 1], f[t])) / 2 for t in range(1, len(f))]))


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a boolean mask [T, H, W] by ``pixels`` (anti-aliased edges belong to the object)."""
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in mask])


def background_consistency(frames: np.ndarray, object_mask: np.ndarray, border: int = 2) -> float:
    """VBench-style background consistency on pixels: the consistency of frame t's background
    with the first and the previous frame, over pixels that are background in both frames
    (the object mask grown by ``border`` pixels is left out). 1.0 for a still background."""
    grown = _grow(object_mask, border)
    f = pixel_vectors(frames[None])[0].reshape(frames.shape)
    scores = []
    for t in range(1, len(frames)):
        pair = []
        for s in (0, t - 1):
            keep = ~(grown[t] | grown[s])
            pair.append(_cosine(f[s][keep].ravel(), f[t][keep].ravel()) if keep.any() else 1.0)
        scores.append(np.mean(pair))
    return float(np.mean(scores))


def temporal_flicker(frames: np.ndarray, object_mask: np.ndarray, border: int = 2) -> float:
    """1 - mean absolute change (0-255 scale, normalized) between consecutive frames over the
    background pixels of both frames: VBench's temporal flickering, restricted to the
    background so that the object's own motion is not counted as flicker."""
    grown = _grow(object_mask, border)
    f = frames.astype(np.float64)
    diffs = []
    for t in range(1, len(frames)):
        keep = ~(grown[t] | grown[t - 1])
        if keep.any():
            diffs.append(np.abs(f[t][keep] - f[t - 1][keep]).mean())
    return float(1.0 - np.mean(diffs) / 255.0) if diffs else 1.0


def motion_smoothness(frames: np.ndarray) -> float:
    """VBench's motion smoothness with optical flow in place of a learned interpolator: rebuild
    each inner frame t from frames t-1 and t+1 (each warped halfway along the Farneback flow
    between them) and score 1 - mean |rebuilt - actual| / 255. Smooth motion is rebuilt
    exactly; jumps, flicker and objects that pop in and out are not."""
    import cv2

    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    h, w = grey[0].shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    errors = []
    for t in range(1, len(frames) - 1):
        flow = cv2.calcOpticalFlowFarneback(grey[t - 1], grey[t + 1], None, 0.5, 2, 9, 3, 5, 1.1, 0)
        half_x, half_y = 0.5 * flow[..., 0], 0.5 * flow[..., 1]
        # a point at x in frame t came from x - flow/2 in t-1 and goes to x + flow/2 in t+1
        prev = cv2.remap(frames[t - 1], gx - half_x, gy - half_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        nxt = cv2.remap(frames[t + 1], gx + half_x, gy + half_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rebuilt = (prev.astype(np.float64) + nxt.astype(np.float64)) / 2
        errors.append(np.abs(rebuilt - frames[t].astype(np.float64)).mean())
    return float(1.0 - np.mean(errors) / 255.0) if errors else 1.0
