"""Pixel-space rewards: black boxes ``(frames uint8 [B, T, H, W, 3], prompts) -> scores [B]``.

None of them needs to be differentiable: the latent reward model learns them.
"""

from __future__ import annotations

from collections.abc import Callable

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
