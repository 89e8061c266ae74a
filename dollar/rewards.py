"""Pixel-space rewards: black boxes ``(frames uint8 [B, T, H, W, 3], prompts) -> scores [B]``.

None of them needs to be differentiable: the latent reward model learns them. A trainer's
``--reward`` names one or several, each with a weight (:func:`parse_reward_spec`), and may add
``preference:<folder>``, a latent reward model trained on arena votes (dollar/preferences.py)
that scores latents directly, so it is used frozen instead of being fitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dollar.checker import check_video

Reward = Callable[[np.ndarray, list[str]], np.ndarray]
REWARDS: dict[str, Reward] = {}


def register_reward(name: str):
    def wrap(fn: Reward) -> Reward:
        REWARDS[name] = fn
        return fn

    return wrap


def get_reward(name: str) -> Reward:
    """A registered reward by name, or ``clip:<path or hub id>`` for a CLIP text-video score."""
    if name in REWARDS:
        return REWARDS[name]
    if name.startswith("clip:"):
        return clip_reward(name[len("clip:") :])
    raise ValueError(f"Unknown reward '{name}'; use one of {', '.join(sorted(REWARDS))} or clip:<model path or hub id>.")


PREFERENCE_PREFIX = "preference:"


@dataclass(frozen=True)
class RewardTerm:
    """One term of ``--reward``: a black-box reward's name (or ``preference:<folder>``) and its weight."""

    name: str
    weight: float = 1.0

    @property
    def is_preference(self) -> bool:
        return self.name.startswith(PREFERENCE_PREFIX)

    @property
    def path(self) -> str:
        return self.name[len(PREFERENCE_PREFIX) :]


def parse_reward_spec(text: str) -> list[RewardTerm]:
    """``name[=weight],name[=weight],...`` -> the terms, e.g. ``motion`` or
    ``preference:runs/prefs-lrm=1.0,motion=0.5``. A name is a registered reward, ``clip:<model>``
    or ``preference:<folder>``; the weight (default 1) is any finite number but 0."""
    terms = []
    for item in filter(None, (t.strip() for t in str(text).split(","))):
        name, eq, weight = item.rpartition("=")
        if not eq:
            name, weight = item, "1"
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not name or not math.isfinite(value) or value == 0:
            raise ValueError(
                f"Bad reward term {item!r}; write name=weight with a nonzero number, e.g. preference:runs/prefs-lrm=1.0,motion=0.5."
            )
        term = RewardTerm(name, value)
        if not term.is_preference and not name.startswith("clip:"):
            get_reward(name)  # an unknown name: one sentence
        terms.append(term)
    if not terms:
        raise ValueError("--reward names no reward; give e.g. motion, or preference:<folder>=1.0,motion=0.5.")
    return terms


def weighted_reward(terms: list[RewardTerm]) -> Reward | None:
    """The black-box terms' weighted sum as one reward (what the online latent reward model fits); None without any."""
    parts = [(get_reward(t.name), t.weight) for t in terms if not t.is_preference]
    if not parts:
        return None
    if len(parts) == 1 and parts[0][1] == 1.0:
        return parts[0][0]

    def total(frames: np.ndarray, prompts: list[str]) -> np.ndarray:
        return sum(w * np.asarray(fn(frames, prompts), dtype=np.float32) for fn, w in parts)

    return total


@register_reward("motion")
def motion_reward(frames: np.ndarray, prompts: list[str] | None = None) -> np.ndarray:
    """Mean optical-flow magnitude (OpenCV Farneback, pixels per frame): the paper's dynamic degree."""
    import cv2

    scores = []
    for clip in frames:
        grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in clip]
        mags = []
        for a, b in zip(grey[:-1], grey[1:]):
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 3, 5, 1.1, 0)
            mags.append(np.linalg.norm(flow, axis=-1).mean())
        scores.append(float(np.mean(mags)) if mags else 0.0)
    return np.asarray(scores, dtype=np.float32)


@register_reward("alignment")
def alignment_reward(frames: np.ndarray, prompts: list[str]) -> np.ndarray:
    """The world checker's verdict: mean of colour-correct and motion-correct over the objects
    the prompt names (0, 0.5 or 1 for one object). Not differentiable."""
    scores = []
    for clip, prompt in zip(frames, prompts):
        verdicts = check_video(clip, prompt)
        scores.append(np.mean([(v.colour_ok + v.motion_ok) / 2 for v in verdicts]) if verdicts else 0.0)
    return np.asarray(scores, dtype=np.float32)


@register_reward("sharpness")
def sharpness_reward(frames: np.ndarray, prompts: list[str] | None = None) -> np.ndarray:
    """Image-quality proxy: log variance of the Laplacian, averaged over frames."""
    import cv2

    scores = []
    for clip in frames:
        v = [cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in clip]
        scores.append(float(np.log1p(np.mean(v))))
    return np.asarray(scores, dtype=np.float32)


def clip_reward(model: str) -> Reward:
    """CLIP similarity between the prompt and each frame (averaged): a hook for real reward
    models (any CLIP checkpoint transformers loads, e.g. a PickScore or HPSv2 backbone)."""
    import torch
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    net = AutoModel.from_pretrained(model).eval()

    @torch.no_grad()
    def score(frames: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = []
        for clip, prompt in zip(frames, prompts):
            inputs = processor(text=[prompt], images=list(clip), return_tensors="pt", padding=True)
            img = torch.nn.functional.normalize(net.get_image_features(pixel_values=inputs["pixel_values"]), dim=-1)
            txt = torch.nn.functional.normalize(
                net.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]), dim=-1
            )
            out.append(float((img @ txt.T).mean()))
        return np.asarray(out, dtype=np.float32)

    return score
