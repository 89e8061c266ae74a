"""The analytic world checker: judges colour and motion of generated world videos from the pixels
alone (a background model per row, an object mask, mean hue, centroid track and area change). No
learned parts; shape is read by the attribute probe (:mod:`dollar.models.probe`)."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from dollar import world

MASK_THRESHOLD = 40.0  # max-channel distance (0-255) from the background that marks an object
WHITE_SATURATION = 0.3
MIN_PIXELS = 6  # an object smaller than this in a frame counts as absent there


@dataclass
class ObjectVerdict:
    colour: str | None
    motion: str | None
    speed: str | None
    colour_ok: bool
    motion_ok: bool


def _background_rows(frames: np.ndarray) -> np.ndarray:
    """Per-row background colour [H, 3]: the median over all frames and columns."""
    return np.median(frames.astype(np.float32), axis=(0, 2))


def object_mask(frames: np.ndarray) -> np.ndarray:
    """Boolean [T, H, W]: pixels far from the background, with specks removed."""
    import cv2

    f = frames.astype(np.float32)
    dist = np.abs(f - _background_rows(frames)[None, :, None, :]).max(-1)
    mask = dist > MASK_THRESHOLD
    kernel = np.ones((2, 2), np.uint8)
    return np.stack([cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0 for m in mask])


def classify_colour(rgb: np.ndarray) -> str:
    """Named colour of a mean RGB (0-255) by nearest hue; low saturation is white."""
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=np.float64) / 255.0))
    if s < WHITE_SATURATION:
        return "white"
    hue = h * 360
    named = [(c, x) for c, x in world.COLOUR_HUES.items() if x is not None]
    return min(named, key=lambda cx: min(abs(hue - cx[1]), 360 - abs(hue - cx[1])))[0]


def _pixel_colour_classes(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Colour class index (into world.COLOURS) of every masked pixel."""
    import cv2

    px = frames[mask].reshape(-1, 1, 3).astype(np.uint8)
    if len(px) == 0:
        return np.zeros(0, dtype=int)
    hsv = cv2.cvtColor(px, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float64)
    hue, sat = hsv[:, 0] * 360 / 256, hsv[:, 1] / 255
    named = [(i, x) for i, (c, x) in enumerate(world.COLOUR_HUES.items()) if x is not None]
    diffs = np.stack([np.minimum(np.abs(hue - x), 360 - np.abs(hue - x)) for _, x in named], 1)
    cls = np.array([i for i, _ in named])[diffs.argmin(1)]
    return np.where(sat < WHITE_SATURATION, world.COLOURS.index("white"), cls)


def classify_motion(mask: np.ndarray) -> tuple[str | None, str | None]:
    """(motion, speed) of the masked object from its centroid track and area change."""
    area = mask.sum((1, 2)).astype(np.float64)
    present = area >= MIN_PIXELS
    if present.sum() < len(area) // 2:
        return None, None
    ys, xs = np.nonzero(present)[0], None
    t = np.nonzero(present)[0].astype(np.float64)
    grid_y, grid_x = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]]
    cx = np.array([(grid_x * m).sum() / max(m.sum(), 1) for m in mask[present]])
    cy = np.array([(grid_y * m).sum() / max(m.sum(), 1) for m in mask[present]])
    del ys, xs
    a = area[present]
    k = max(len(a) // 4, 1)
    ratio = a[-k:].mean() / max(a[:k].mean(), 1.0)
    if ratio > 1.8:
        return "growing", None
    if ratio < 1 / 1.8:
        return "shrinking", None
    span = t[-1] - t[0] if len(t) > 1 else 1.0
    dx = np.polyfit(t, cx, 1)[0] * span if len(t) > 1 else 0.0
    dy = np.polyfit(t, cy, 1)[0] * span if len(t) > 1 else 0.0
    y_range = cy.max() - cy.min()
    if y_range > 6 and abs(dy) < 0.5 * y_range and abs(dx) < 6:
        return "bouncing", ("fast" if _direction_changes(cy) >= 2 else "slow")
    if max(abs(dx), abs(dy)) > 8:
        per_frame = max(abs(dx), abs(dy)) / max(span, 1.0)
        speed = "fast" if per_frame > 1.55 else "slow"
        if abs(dx) >= abs(dy):
            return ("right" if dx > 0 else "left"), speed
        return ("down" if dy > 0 else "up"), speed
    return "static", None


def _direction_changes(y: np.ndarray) -> int:
    """How many times a smoothed vertical track turns around (bounces)."""
    d = np.diff(np.convolve(y, np.ones(3) / 3, mode="valid"))
    d = d[np.abs(d) > 0.3]
    return int((np.sign(d[1:]) != np.sign(d[:-1])).sum()) if len(d) > 1 else 0


def check_video(frames: np.ndarray, objects) -> list[ObjectVerdict]:
    """Judge a generated video ``uint8 [T, H, W, 3]`` against the objects its prompt names.

    ``objects``: ObjectSpecs, or the dicts of :func:`dollar.world.parse_prompt` (a prompt
    string is parsed). One verdict per object.
    """
    if isinstance(objects, str):
        objects, _ = world.parse_prompt(objects)
    specs = [o if isinstance(o, dict) else o.__dict__ for o in objects]
    mask = object_mask(frames)
    classes = _pixel_colour_classes(frames, mask)
    counts = np.bincount(classes, minlength=len(world.COLOURS)) if len(classes) else np.zeros(len(world.COLOURS))
    verdicts = []
    for spec in specs:
        if len(specs) == 1:
            colour = world.COLOURS[int(counts.argmax())] if counts.sum() >= MIN_PIXELS else None
            obj_mask = mask
        else:
            # Several objects: each named colour needs a real share of the object pixels (more
            # than the fringe another object's edges leave), and its motion is read from the
            # pixels of that colour alone.
            want = world.COLOURS.index(spec["colour"]) if spec.get("colour") in world.COLOURS else -1
            enough = max(MIN_PIXELS * len(frames) / 2, 0.05 * counts.sum())
            colour = spec["colour"] if want >= 0 and counts[want] >= enough else None
            obj_mask = np.zeros_like(mask)
            if want >= 0:
                obj_mask[mask] = classes == want
        motion, speed = classify_motion(obj_mask)
        verdicts.append(
            ObjectVerdict(
                colour,
                motion,
                speed,
                colour is not None and colour == spec.get("colour"),
                motion is not None and motion == spec.get("motion"),
            )
        )
    return verdicts


def checker_accuracy(videos, prompts) -> dict[str, float]:
    """Colour and motion accuracy (fractions) over (video, prompt objects) pairs."""
    colour, motion = [], []
    for frames, objs in zip(videos, prompts):
        for v in check_video(frames, objs):
            colour.append(v.colour_ok)
            motion.append(v.motion_ok)
    return {"colour": float(np.mean(colour)), "motion": float(np.mean(motion)), "n": len(colour)}
