"""The procedural text-to-video world: coloured shapes moving over simple backgrounds.

Every video is a pure function of a seed. Captions come from templates with several
phrasings per attribute; a fixed set of (colour, shape, motion) combinations is held out
of training so that evaluation measures compositional generalisation.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

NUM_FRAMES = 17  # 16 + 1: causal video VAEs take 4k+1 frames (first frame kept apart)
HEIGHT = 64
WIDTH = 64
FPS = 8

# Hue in degrees; ``None`` marks the achromatic colour.
COLOUR_HUES: dict[str, float | None] = {
    "red": 0.0,
    "orange": 28.0,
    "yellow": 56.0,
    "green": 120.0,
    "cyan": 185.0,
    "blue": 228.0,
    "purple": 280.0,
    "white": None,
}
COLOURS = tuple(COLOUR_HUES)
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
MOTIONS = ("left", "right", "up", "down", "static", "bouncing", "growing", "shrinking")
TRANSLATIONS = ("left", "right", "up", "down")
SPEEDS = ("slow", "fast")
SIZES = ("small", "large")
BACKGROUNDS = ("black", "gray", "dark blue")

# Phrasings: the first entry of each tuple is the canonical one.
COLOUR_PHRASES = {c: (c, f"{c}-colored", f"{c}-hued") for c in COLOURS}
SHAPE_PHRASES = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape", "wedge"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "cross": ("cross", "plus sign", "plus shape"),
}
MOTION_PHRASES = {
    "left": ("moving left", "heading to the left", "drifting leftward"),
    "right": ("moving right", "heading to the right", "drifting rightward"),
    "up": ("moving up", "rising", "heading upward"),
    "down": ("moving down", "falling", "sinking downward"),
    "static": ("staying still", "not moving", "resting in place"),
    "bouncing": ("bouncing", "hopping along", "bouncing like a ball"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shrinking": ("shrinking", "getting smaller", "contracting"),
}
SPEED_PHRASES = {
    "slow": ("slowly", "at a slow pace", "gently"),
    "fast": ("quickly", "fast", "rapidly"),
}
SIZE_PHRASES = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
BACKGROUND_PHRASES = {
    "black": ("on a black background", "against a plain black backdrop", "over black"),
    "gray": ("on a gray background", "against a grey backdrop", "over gray"),
    "dark blue": ("on a dark blue background", "against a navy backdrop", "over midnight blue"),
}

# Words a person would use that the world's own phrasings above never do. Captions draw from the
# training synonyms with ``vocabulary="rich"`` (the bundled teacher's data); the held-out synonyms
# never appear in any caption and measure how far the text encoder carries a colour or shape to
# words the teacher was not trained on (:func:`synonym_prompt_specs`). Both are parsed.
COLOUR_SYNONYMS = {
    "red": ("crimson", "scarlet", "cherry"),
    "orange": ("tangerine", "amber", "apricot"),
    "yellow": ("golden", "lemon", "canary"),
    "green": ("emerald", "lime", "grassy"),
    "cyan": ("turquoise", "aqua", "teal"),
    "blue": ("azure", "cobalt", "sapphire"),
    "purple": ("violet", "lavender", "plum"),
    "white": ("snowy", "ivory", "milky"),
}
HELDOUT_COLOUR_SYNONYMS = {
    "red": ("ruby", "vermilion"),
    "orange": ("copper", "marigold"),
    "yellow": ("mustard", "sunflower"),
    "green": ("jade", "mint"),
    "cyan": ("aquamarine", "seafoam"),
    "blue": ("cerulean", "ultramarine"),
    "purple": ("amethyst", "grape"),
    "white": ("pearl", "chalk"),
}
SHAPE_SYNONYMS = {
    "circle": ("round dot", "orb", "round spot"),
    "square": ("tile", "quadrate", "four-sided block"),
    "triangle": ("pyramid", "three-sided shape", "trigon"),
    "diamond": ("kite", "rhomb", "lozenge shape"),
    "cross": ("plus", "plus mark", "cross mark"),
}
HELDOUT_SHAPE_SYNONYMS = {
    "circle": ("sphere", "coin"),
    "square": ("cube", "slab"),
    "triangle": ("arrowhead", "delta"),
    "diamond": ("gem", "rhomboid"),
    "cross": ("crucifix", "addition sign"),
}
VOCABULARIES = ("world", "rich")


def _parse_table(*tables: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(p for t in tables for p in t[k]) for k in tables[0]}


_PARSE_COLOURS = _parse_table(COLOUR_PHRASES, COLOUR_SYNONYMS, HELDOUT_COLOUR_SYNONYMS)
_PARSE_SHAPES = _parse_table(SHAPE_PHRASES, SHAPE_SYNONYMS, HELDOUT_SHAPE_SYNONYMS)

_SPEED_PX = {"slow": (0.9, 1.3), "fast": (1.8, 2.4)}  # pixels per frame
_SIZE_PX = {"small": (5.5, 7.5), "large": (10.0, 12.5)}  # object radius


@dataclass(frozen=True)
class ObjectSpec:
    """One object's attributes, in the world's vocabulary."""

    colour: str
    shape: str
    motion: str
    speed: str = "slow"
    size: str = "small"


@dataclass(frozen=True)
class Scene:
    """A whole clip: its objects, its background and the numbers drawn for it."""

    objects: tuple[ObjectSpec, ...]
    background: str
    params: dict = field(default_factory=dict, compare=False, hash=False)


def heldout_combinations(n: int = 64) -> list[tuple[str, str, str]]:
    """(colour, shape, motion) triples never seen in training, fixed forever."""
    triples = [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]
    order = np.random.default_rng(20241220).permutation(len(triples))
    return [triples[i] for i in order[:n]]


_HELDOUT = frozenset(heldout_combinations())


@dataclass(frozen=True)
class HeldoutPrompt:
    prompt: str
    objects: tuple[ObjectSpec, ...]
    background: str


def heldout_prompts(n: int = 64) -> list[HeldoutPrompt]:
    """The evaluation prompts: one per held-out combination, with deterministic extras."""
    rng = np.random.default_rng(7)
    out = []
    for colour, shape, motion in heldout_combinations(n):
        obj = ObjectSpec(colour, shape, motion, str(rng.choice(SPEEDS)), str(rng.choice(SIZES)))
        background = str(rng.choice(BACKGROUNDS))
        out.append(HeldoutPrompt(caption(Scene((obj,), background), rng), (obj,), background))
    return out


def is_heldout(obj: ObjectSpec) -> bool:
    return (obj.colour, obj.shape, obj.motion) in _HELDOUT


def sample_scene(rng: np.random.Generator, level: int = 1, split: str = "train") -> Scene:
    """Draw a scene with ``level`` objects (1 or 2). ``split="train"`` avoids held-out triples."""
    if level not in (1, 2):
        raise ValueError(f"level must be 1 or 2, got {level}")
    objects: list[ObjectSpec] = []
    while len(objects) < level:
        obj = ObjectSpec(
            str(rng.choice(COLOURS)),
            str(rng.choice(SHAPES)),
            str(rng.choice(MOTIONS)),
            str(rng.choice(SPEEDS)),
            str(rng.choice(SIZES)),
        )
        if split == "train" and is_heldout(obj):
            continue
        if any(o.colour == obj.colour for o in objects):
            continue  # two objects always differ in colour, so captions stay unambiguous
        objects.append(obj)
    background = str(rng.choice(BACKGROUNDS))
    return Scene(tuple(objects), background, _draw_params(tuple(objects), background, rng))


def _draw_params(objects: tuple[ObjectSpec, ...], background: str, rng: np.random.Generator) -> dict:
    """Per-sample randomness: exact hue, size, speed, start position, background levels."""
    objs = []
    n = len(objects)
    for obj in objects:
        radius = rng.uniform(*_SIZE_PX[obj.size]) * (0.85 if n == 2 else 1.0)
        speed = rng.uniform(*_SPEED_PX[obj.speed])
        hue = COLOUR_HUES[obj.colour]
        if hue is None:
            rgb = np.array([rng.uniform(0.9, 1.0)] * 3) * rng.uniform(0.92, 1.0, 3) ** 0.1
        else:
            h = ((hue + rng.uniform(-5, 5)) % 360) / 360
            rgb = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.8, 1.0), rng.uniform(0.85, 1.0)))
        objs.append(
            {
                "radius": radius,
                "speed": speed,
                "rgb": rgb,
                "u": rng.uniform(0.0, 1.0, 2),  # free position within the feasible range
                "rows": (0, HEIGHT),
                "bounces": 1 if obj.speed == "slow" else 2,
            }
        )
    bg = {"black": rng.uniform(0, 10), "gray": rng.uniform(35, 50), "dark blue": rng.uniform(0.8, 1.2)}
    return {"objects": objs, "background": bg[background]}


def _trajectory(obj: ObjectSpec, p: dict, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (x, y) and radius per frame."""
    frames = len(t)
    r0 = p["radius"]
    scale = np.ones(frames)
    if obj.motion == "growing":
        scale = 0.55 + 0.8 * t / (frames - 1)
    elif obj.motion == "shrinking":
        scale = 1.35 - 0.8 * t / (frames - 1)
    radius = r0 * scale
    rmax = radius.max()
    lo, hi = p["rows"]
    margin = rmax + 1.5
    travel = min(p["speed"] * (frames - 1), WIDTH - 2 * margin - 1)
    ux, uy = p["u"]
    x = np.full(frames, margin + ux * (WIDTH - 2 * margin))
    y = np.full(frames, lo + margin + uy * max(hi - lo - 2 * margin, 0.0))
    if obj.motion in ("left", "right"):
        start = margin + ux * (WIDTH - 2 * margin - travel)
        x = start + travel * t / (frames - 1)
        if obj.motion == "left":
            x = WIDTH - x
    elif obj.motion in ("up", "down"):
        vtravel = min(travel, hi - lo - 2 * margin - 1)
        start = lo + margin + uy * (hi - lo - 2 * margin - vtravel)
        y = start + vtravel * t / (frames - 1)
        if obj.motion == "up":
            y = (lo + hi) - y
    elif obj.motion == "bouncing":
        floor = hi - margin
        amplitude = min(hi - lo - 2 * margin - 1, 10.0 + 8.0 * uy)
        y = floor - amplitude * np.abs(np.sin(np.pi * p["bounces"] * t / (frames - 1)))
    return x, y, radius


def _shape_sdf(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels) to the shape's outline; negative inside."""
    if shape == "circle":
        return np.hypot(dx, dy) - r
    if shape == "square":
        h = 0.82 * r
        qx, qy = np.abs(dx) - h, np.abs(dy) - h
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - 1.15 * r) / np.sqrt(2)
    if shape == "triangle":
        # Equilateral triangle pointing up, circumradius ~1.15 r (Inigo Quilez's SDF).
        k = np.sqrt(3.0)
        s = 1.0 * r
        px, py = np.abs(dx) - s, -dy + s / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2 * s, 0)
        return -np.hypot(px, py) * np.sign(py)
    if shape == "cross":
        arm, half = 1.0 * r, 0.36 * r
        d = np.inf
        for ax, ay in ((arm, half), (half, arm)):
            qx, qy = np.abs(dx) - ax, np.abs(dy) - ay
            d = np.minimum(d, np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0))
        return d
    raise ValueError(f"unknown shape {shape!r}")


def _background(name: str, level: float) -> np.ndarray:
    rows = np.linspace(0, 1, HEIGHT)[:, None, None]
    if name == "black":
        top = bottom = np.full(3, level)
    elif name == "gray":
        top, bottom = np.full(3, level), np.full(3, level + 40)
    else:  # dark blue
        top, bottom = np.array([6, 8, 32]) * level, np.array([16, 22, 72]) * level
    img = top + (bottom - top) * rows
    return np.broadcast_to(img, (HEIGHT, WIDTH, 3)).astype(np.float64)


def _coverage(obj: ObjectSpec, p: dict, frames: Sequence[int], num_frames: int) -> np.ndarray:
    """The object's anti-aliased alpha ``[len(frames), H, W]`` in [0, 1] (occlusion not applied)."""
    xs, ys, rs = _trajectory(obj, p, np.arange(num_frames, dtype=np.float64))
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64) + 0.5
    return np.stack([np.clip(0.5 - _shape_sdf(obj.shape, xx - xs[f], yy - ys[f], rs[f]), 0.0, 1.0) for f in frames])


def render(scene: Scene, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Draw the scene as uint8 frames ``[T, H, W, 3]``."""
    bg = _background(scene.background, scene.params["background"])
    video = np.repeat(bg[None], num_frames, axis=0).copy()
    for obj, p in zip(scene.objects, scene.params["objects"]):
        alpha = _coverage(obj, p, range(num_frames), num_frames)[..., None]
        video = video * (1 - alpha) + p["rgb"] * 255.0 * alpha
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def render_masks(scene: Scene, frames: Sequence[int] | None = None, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Visible coverage of each object in ``frames`` (default: all), float32
    ``[objects, len(frames), H, W]`` in [0, 1]: the alpha :func:`render` blends with, less what
    later objects draw over it (ground truth for learning where an object is)."""
    frames = list(range(num_frames)) if frames is None else list(frames)
    masks = np.zeros((len(scene.objects), len(frames), HEIGHT, WIDTH), dtype=np.float64)
    for k, (obj, p) in enumerate(zip(scene.objects, scene.params["objects"])):
        alpha = _coverage(obj, p, frames, num_frames)
        masks[:k] *= 1 - alpha
        masks[k] = alpha
    return masks.astype(np.float32)


def _describe(obj: ObjectSpec, rng: np.random.Generator, vocabulary: str = "world", words: tuple[str, str] | None = None) -> str:
    """One object in words; ``words`` = (colour, shape) phrases to use instead of drawn ones."""

    def pick(phrases):
        return phrases[int(rng.integers(len(phrases)))]

    size, colour, shape = pick(SIZE_PHRASES[obj.size]), pick(COLOUR_PHRASES[obj.colour]), pick(SHAPE_PHRASES[obj.shape])
    if vocabulary == "rich":  # half the time a training synonym instead, drawn after the world's words
        if rng.random() < 0.5:
            colour = pick(COLOUR_SYNONYMS[obj.colour])
        if rng.random() < 0.5:
            shape = pick(SHAPE_SYNONYMS[obj.shape])
    if words is not None:
        colour, shape = words
    motion = pick(MOTION_PHRASES[obj.motion])
    if obj.motion in TRANSLATIONS or obj.motion == "bouncing":
        motion = f"{motion} {pick(SPEED_PHRASES[obj.speed])}"
    if rng.random() < 0.5:
        text = f"{size} {colour} {shape} {motion}"
    else:
        text = f"{colour} {shape}, {size}, {motion}"
    return ("an " if text[0] in "aeiou" else "a ") + text


def caption(scene: Scene, rng: np.random.Generator, vocabulary: str = "world", words: list[tuple[str, str]] | None = None) -> str:
    """A templated caption; phrasing and word order are drawn from ``rng``. ``vocabulary="world"``
    uses the world's own phrasings, ``"rich"`` also the training synonyms; ``words`` fixes each
    object's (colour, shape) phrases."""
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {VOCABULARIES}, got {vocabulary!r}")
    objects = " and ".join(_describe(o, rng, vocabulary, None if words is None else words[i]) for i, o in enumerate(scene.objects))
    bg = BACKGROUND_PHRASES[scene.background][int(rng.integers(3))]
    if rng.random() < 0.5:
        return f"{objects} {bg}"
    return f"{bg[0].upper()}{bg[1:]}, {objects}"


def make_scene(objects: tuple[ObjectSpec, ...], background: str, seed: int) -> Scene:
    """A scene with the given attributes; positions, exact hues and sizes drawn from ``seed``."""
    rng = np.random.default_rng([seed, 12345])
    return Scene(tuple(objects), background, _draw_params(tuple(objects), background, rng))


def make_sample(seed: int, level: int = 1, split: str = "train", vocabulary: str = "world") -> tuple[np.ndarray, str, Scene]:
    """``(video uint8 [T,H,W,3], caption, scene)``, a pure function of its arguments."""
    rng = np.random.default_rng([seed, level, 0 if split == "train" else 1])
    scene = sample_scene(rng, level=level, split=split)
    return render(scene), caption(scene, rng, vocabulary), scene


def _find(text: str, table: dict[str, tuple[str, ...]]) -> tuple[str | None, str]:
    """First attribute whose phrase occurs in ``text`` (longest phrases first); text minus it."""
    candidates = sorted(((p, k) for k, ps in table.items() for p in ps), key=lambda pk: -len(pk[0]))
    for phrase, key in candidates:
        m = re.search(rf"\b{re.escape(phrase)}\b", text)
        if m:
            return key, text[: m.start()] + " " + text[m.end() :]
    return None, text


def parse_prompt(prompt: str) -> tuple[list[dict[str, str | None]], str | None]:
    """Attributes named in a free-text prompt: a dict per object, and the background.

    Unknown words are ignored; an attribute that is not named is ``None``.
    """
    text = " " + prompt.lower().strip() + " "
    background, text = _find(text, BACKGROUND_PHRASES)
    objects = []
    for part in re.split(r"\band\b", text):
        attrs: dict[str, str | None] = {}
        for name, table in (
            ("motion", MOTION_PHRASES),
            ("speed", SPEED_PHRASES),
            ("size", SIZE_PHRASES),
            ("shape", _PARSE_SHAPES),
            ("colour", _PARSE_COLOURS),
        ):
            attrs[name], part = _find(part, table)
        if any(v is not None for v in attrs.values()):
            objects.append(attrs)
    return objects, background


# --- prompts as an evaluation reads them ------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    """A prompt and the objects it names (dicts of colour, shape, motion, speed, size; None =
    not named), with the background when it names one."""

    prompt: str
    objects: tuple
    background: str | None = None


def heldout_prompt_specs(n: int = 64) -> list[PromptSpec]:
    """The first ``n`` of the world's 64 held-out single-object prompts."""
    if not 1 <= n <= 64:
        raise ValueError(f"The world has 64 held-out prompts; ask for 1 to 64, got {n}.")
    return [PromptSpec(p.prompt, tuple(asdict(o) for o in p.objects), p.background) for p in heldout_prompts(n)]


def sampled_prompt_specs(n: int, offset: int, level: int, split: str) -> list[PromptSpec]:
    """The captions of the world's samples ``offset`` .. ``offset + n - 1`` (:func:`make_sample`)."""
    out = []
    for i in range(n):
        _, text, scene = make_sample(offset + i, level=level, split=split)
        out.append(PromptSpec(text, tuple(asdict(o) for o in scene.objects), scene.background))
    return out


def synonym_prompt_specs(synonyms: str = "heldout", n: int = 64) -> list[PromptSpec]:
    """The held-out prompts (same objects and backgrounds, same other words) with each colour and
    shape said in a synonym: ``"heldout"`` words no caption ever used, ``"train"`` the training
    synonyms, ``"world"`` the world's own words (the reference they are compared with). Synonyms
    rotate over the prompts, so each is used about equally."""
    tables = {
        "heldout": (HELDOUT_COLOUR_SYNONYMS, HELDOUT_SHAPE_SYNONYMS),
        "train": (COLOUR_SYNONYMS, SHAPE_SYNONYMS),
        "world": ({c: (c,) for c in COLOURS}, {s: (s,) for s in SHAPES}),
    }
    if synonyms not in tables:
        raise ValueError(f"synonyms must be one of {sorted(tables)}, got {synonyms!r}")
    colours, shapes = tables[synonyms]
    out = []
    for i, p in enumerate(heldout_prompts(n)):
        obj = p.objects[0]
        words = (colours[obj.colour][i % len(colours[obj.colour])], shapes[obj.shape][(i // 2) % len(shapes[obj.shape])])
        text = caption(Scene(p.objects, p.background), np.random.default_rng([i, 2024]), words=[words])
        out.append(PromptSpec(text, tuple(asdict(o) for o in p.objects), p.background))
    return out


def two_object_prompt_specs(n: int, offset: int = 500_000) -> list[PromptSpec]:
    """``n`` two-object prompts from the world's evaluation split (any combination)."""
    return sampled_prompt_specs(n, offset, level=2, split="eval")


def prompt_spec(text: str) -> PromptSpec:
    """A free-text prompt, read with the world's parser."""
    objects, background = parse_prompt(text)
    return PromptSpec(text, tuple(objects), background)


def as_prompt_specs(prompts) -> list[PromptSpec]:
    """Strings, PromptSpecs or HeldoutPrompts -> PromptSpecs."""
    out = []
    for p in prompts:
        if isinstance(p, PromptSpec):
            out.append(p)
        elif isinstance(p, HeldoutPrompt):
            out.append(PromptSpec(p.prompt, tuple(asdict(o) for o in p.objects), p.background))
        elif isinstance(p, str):
            out.append(prompt_spec(p))
        else:
            raise ValueError(f"A prompt must be a string, a PromptSpec or a world.HeldoutPrompt, got {type(p).__name__}.")
    return out


def scene_for_prompt(spec: PromptSpec, seed: int) -> Scene:
    """A world scene that fits the prompt; attributes it does not name are drawn from ``seed``."""
    rng = np.random.default_rng([seed, 31337])
    if not spec.objects:
        return sample_scene(rng, level=1, split="eval")
    choices = {"colour": COLOURS, "shape": SHAPES, "motion": MOTIONS, "speed": SPEEDS, "size": SIZES}
    objects = tuple(ObjectSpec(**{k: o.get(k) or str(rng.choice(v)) for k, v in choices.items()}) for o in spec.objects)
    return make_scene(objects, spec.background or str(rng.choice(BACKGROUNDS)), seed)
