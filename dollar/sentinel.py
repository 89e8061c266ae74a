"""Collapse sentinel for distillation: notice when the student's outputs go static, solid or to
noise, or when it hacks its reward (training reward up, held-out checker down).

The trainer feeds it the validation videos it renders every N iterations; the verdict says
what went wrong so the trainer can warn and, if asked, roll back to the last healthy
checkpoint. Thresholds are ratios to statistics of real clips measured at the start of the
run, so they carry over to other data and resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def video_health(frames: np.ndarray) -> dict[str, float]:
    """Statistics of uint8 videos ``[B, T, H, W, 3]`` that collapse modes move.

    - ``temporal``: mean over pixels of the std over time (near 0: nothing moves);
    - ``spatial``: mean over frames of the std over pixels (near 0: one flat colour);
    - ``roughness``: mean |Laplacian| relative to the spatial std (high: per-pixel noise).
    """
    x = np.asarray(frames, dtype=np.float32) / 255.0
    if x.ndim == 4:
        x = x[None]
    temporal = float(x.std(axis=1).mean())
    spatial = float(x.std(axis=(2, 3)).mean())
    grey = x.mean(-1)
    lap = 4 * grey[..., 1:-1, 1:-1] - grey[..., :-2, 1:-1] - grey[..., 2:, 1:-1] - grey[..., 1:-1, :-2] - grey[..., 1:-1, 2:]
    roughness = float(np.abs(lap).mean() / max(grey.std(axis=(2, 3)).mean(), 1e-6))
    return {"temporal": temporal, "spatial": spatial, "roughness": roughness}


@dataclass
class CollapseSentinel:
    """Compare validation videos with real-clip statistics and the run's own history.

    ``reference`` is :func:`video_health` of real clips. A generated set is *static* when its
    temporal variation falls below ``static_ratio`` of the real one, *solid* below
    ``solid_ratio`` of the spatial variation, *noise* above ``noise_ratio`` times the real
    roughness. *Reward hacking*: the training reward rose by more than ``reward_margin``
    (relative) since the best held-out checker accuracy while that accuracy fell by more than
    ``accuracy_drop`` (absolute, 0-1).
    """

    reference: dict[str, float]
    static_ratio: float = 0.15
    solid_ratio: float = 0.25
    noise_ratio: float = 3.0
    accuracy_drop: float = 0.10
    reward_margin: float = 0.05
    best_accuracy: float | None = None
    reward_at_best: float | None = None
    history: list[dict] = field(default_factory=list)

    def check(self, frames: np.ndarray, accuracy: float | None = None, train_reward: float | None = None) -> list[str]:
        """Reasons the run looks collapsed (empty: healthy). Updates the best-accuracy record."""
        health = video_health(frames)
        reasons = []
        if health["temporal"] < self.static_ratio * self.reference["temporal"]:
            reasons.append(f"static: frame-to-frame variation {health['temporal']:.4f} vs {self.reference['temporal']:.4f} in real clips")
        if health["spatial"] < self.solid_ratio * self.reference["spatial"]:
            reasons.append(f"solid: spatial variation {health['spatial']:.4f} vs {self.reference['spatial']:.4f} in real clips")
        if health["roughness"] > self.noise_ratio * self.reference["roughness"]:
            reasons.append(f"noise: roughness {health['roughness']:.2f} vs {self.reference['roughness']:.2f} in real clips")
        if accuracy is not None:
            if self.best_accuracy is None or accuracy >= self.best_accuracy:
                self.best_accuracy, self.reward_at_best = accuracy, train_reward
            elif (
                train_reward is not None
                and self.reward_at_best is not None
                and accuracy < self.best_accuracy - self.accuracy_drop
                and train_reward > self.reward_at_best + self.reward_margin * max(abs(self.reward_at_best), 1e-6)
            ):
                reasons.append(
                    f"reward hacking: training reward {self.reward_at_best:.3f} -> {train_reward:.3f} while held-out "
                    f"checker accuracy fell {self.best_accuracy:.2f} -> {accuracy:.2f}"
                )
        self.history.append({**health, "accuracy": accuracy, "train_reward": train_reward, "reasons": reasons})
        return reasons

    def state_dict(self) -> dict:
        return {"best_accuracy": self.best_accuracy, "reward_at_best": self.reward_at_best}

    def load_state_dict(self, state: dict) -> None:
        self.best_accuracy, self.reward_at_best = state.get("best_accuracy"), state.get("reward_at_best")
