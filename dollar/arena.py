"""The arena: which models exist, rendering them, blind battles between them, and the
precomputed pool of battles that makes rounds instant for slow teachers.

Build a pool (videos rendered ahead, named by content hash so no file name reveals a model):

    python -m dollar.arena build-pool --out data/pool --rounds 60

Blind by construction: a battle's two videos are served as fresh copies under random names,
each padded to the same size with random bytes (so no URL, name, hash or Content-Length repeats
or depends on the model); every round answers after the same floor time whichever models it
renders; a client (an address, whatever session it claims) never sees a pool battle twice, so
the reveal after one vote names nothing it will be shown again. Some rounds are check battles:
the teacher against a deliberately broken copy, with a known answer that flags careless raters.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import re
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dollar.ranking import PAIRING_RULES
from dollar.votes import VoteStore

TEACHER_STEPS = 50
BASELINE_STEPS = (1, 2, 4)
STUDENTS = ("student-1", "student-2", "student-4")
PREFERENCE_STUDENT = "student-preference"
MAX_PROMPT_CHARS = 500
MAX_SEED = 2**32 - 1
POOL_MANIFEST = "pool.jsonl"
COMPARISON_COLUMNS = ("model", "steps", "NFE", "text (ms)", "denoise (ms)", "decode (ms)", "end to end (s)", "speedup vs teacher")
# with the fast-decode toggle on, both decoders decode the same latents: their times and the tiny one's fidelity
DECODER_COLUMNS = ("full decode (ms)", "tiny decode (ms)", "decode speedup", "tiny vs full (dB)")
BROKEN_MODEL = "broken copy (check)"
SERVED_VIDEO_BYTES = 256 * 1024  # every served video is padded to this size (or the next multiple of it)
DEFAULT_CHECK_RATE = 0.08
DEFAULT_ROUND_FLOOR_S = 3.0


class ArenaError(ValueError):
    """A request the arena cannot serve (bad prompt, seed, model, failed render); the message
    says what to do."""


try:  # ZeroGPU: on a Space with `spaces`, rendering gets a GPU for the duration of the call
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn):
        return fn


# --- which models ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """A model as the app names it: ``name`` is shown and stored with votes; ``source`` is
    what ``DollarPipeline.from_pretrained`` takes; ``steps`` None means the checkpoint's own."""

    name: str
    source: str
    steps: int | None
    kind: str  # "teacher", "baseline", "student" or "custom"
    size: tuple[int, int, int] | None = None  # (height, width, num_frames); None: the checkpoint's own

    @property
    def is_teacher(self) -> bool:
        return self.kind == "teacher"


def available_models(extra: Sequence[str] = (), size: tuple[int, int, int] | None = None) -> list[ModelEntry]:
    """The bundled models present in assets/ (the teacher brings its DDIM-k baselines), then
    each ``extra`` folder or hub id at its own defaults, or at ``size`` (height, width, frames)."""
    from dollar.pipeline import ASSETS_DIR, ModelLoadError, resolve_model

    entries = []
    try:
        teacher = resolve_model("teacher")
    except ModelLoadError:
        teacher = None
    if teacher and os.path.exists(os.path.join(teacher, "model_index.json")):
        entries.append(ModelEntry("teacher", "teacher", TEACHER_STEPS, "teacher"))
        entries += [ModelEntry(f"teacher DDIM-{k}", "teacher", k, "baseline") for k in BASELINE_STEPS]
    for name in STUDENTS:
        try:
            path = resolve_model(name)
        except ModelLoadError:
            continue
        if os.path.exists(os.path.join(path, "model_index.json")):
            entries.append(ModelEntry(name, name, None, "student"))
    tuned = os.path.join(ASSETS_DIR, PREFERENCE_STUDENT)  # student-1 tuned on arena votes (benchmarks/preference_loop.py)
    if os.path.exists(os.path.join(tuned, "model_index.json")):
        entries.append(ModelEntry(PREFERENCE_STUDENT, tuned, None, "student"))
    for source in extra:
        resolve_model(source)  # a clear ModelLoadError for a name that cannot be a model
        if source not in {e.name for e in entries}:
            entries.append(ModelEntry(source, source, None, "custom", size))
    return entries


def select_models(entries: list[ModelEntry], names: str | None) -> list[ModelEntry]:
    """The ``entries`` a comma-separated list of model names keeps (all of them for None or ""), or one sentence."""
    if not names:
        return entries
    wanted = [m.strip() for m in names.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in {e.name for e in entries}]
    if unknown:
        raise ArenaError(f"Unknown model(s) {', '.join(unknown)}; available: {', '.join(e.name for e in entries)}.")
    return [e for e in entries if e.name in wanted]


def model_card(entry: ModelEntry) -> str | None:
    """The model card (README.md) of a model folder, without its YAML header; None when it has none."""
    from dollar.pipeline import ModelLoadError, resolve_model

    try:
        path = os.path.join(resolve_model(entry.source), "README.md")
    except ModelLoadError:
        return None
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text.split("---", 2)[2].strip() if text.startswith("---") and text.count("---") >= 2 else text.strip()


# --- input checks (the boundary: one sentence that says what to do) ------------------------


def check_prompt(prompt: str | None) -> str:
    if prompt is not None and not isinstance(prompt, str):
        raise ArenaError(f"The prompt must be text, got {type(prompt).__name__}; type what the video should show.")
    prompt = (prompt or "").strip()
    if not prompt:
        raise ArenaError("The prompt is empty; type what the video should show, e.g. 'a red circle moving left on a black background'.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ArenaError(
            f"The prompt has {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS} (the text encoder reads only the first 64 tokens)."
        )
    return prompt


def check_seed(seed) -> int:
    message = f"The seed must be a whole number from 0 to {MAX_SEED}; got {str(seed)[:40]!r}."
    if seed is None or isinstance(seed, bool):
        raise ArenaError(message)
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise ArenaError(message) from None
    if not np.isfinite(value) or value != int(value) or not 0 <= int(value) <= MAX_SEED:
        raise ArenaError(message)
    return int(value)


# --- rendering ---------------------------------------------------------------------------


def load_pipeline(source: str):
    """The shared, process-wide loader (dollar.model_specs), on the GPU when there is one."""
    import torch

    from dollar.model_specs import load_pipeline as shared_loader

    return shared_loader(source, device="cuda" if torch.cuda.is_available() else None)


@gpu
def render_video(
    source: str,
    steps: int | None,
    prompt: str,
    seed: int,
    progress_bar: bool = False,
    size: tuple[int, int, int] | None = None,
    compare_decoders: bool = False,
) -> tuple[np.ndarray, dict]:
    """One video, uint8 [T, H, W, 3], and its timings (plus ``end_to_end_s``, the whole call).
    ``compare_decoders``: the video of the tiny decoder (``--fast_decode``), and the same latents
    decoded by the full decoder too, for ``decoding_full_s``, ``decoding_tiny_s`` and
    ``tiny_psnr_db`` (the tiny decoder's video against the full one's); ``end_to_end_s`` counts
    the tiny decode only."""
    import torch

    from dollar.metrics import psnr
    from dollar.pipeline import postprocess_video

    pipe = load_pipeline(source)
    pipe.set_progress_bar_config(disable=not progress_bar)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    height, width, num_frames = size or (None, None, None)
    kwargs = dict(num_inference_steps=steps, generator=generator, height=height, width=width, num_frames=num_frames)
    if not compare_decoders:
        start = time.perf_counter()
        out = pipe(prompt, output_type="np", **kwargs)
        return out.frames[0], dict(out.timings, end_to_end_s=time.perf_counter() - start)
    pipe.tiny_decoder()  # a missing one fails before rendering
    start = time.perf_counter()
    out = pipe(prompt, output_type="latent", **kwargs)
    timings = dict(out.timings)
    until_latents = time.perf_counter() - start
    videos = {}
    for name in ("tiny", "full"):
        start = time.perf_counter()
        with torch.inference_mode():
            videos[name] = pipe.decode_latents(out.frames, decoder=name)
        timings[f"decoding_{name}_s"] = time.perf_counter() - start
    start = time.perf_counter()
    frames = postprocess_video(videos["tiny"], "np")[0]
    timings["decoding_s"] = timings["decoding_tiny_s"] + time.perf_counter() - start
    timings["end_to_end_s"] = until_latents + timings["decoding_s"]
    timings["tiny_psnr_db"] = psnr(videos["tiny"], videos["full"])
    return frames, timings


def video_hash(frames: np.ndarray) -> str:
    """SHA-256 of the raw frames: the same video has the same hash whatever the file format."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    return hashlib.sha256(str(frames.shape).encode() + frames.tobytes()).hexdigest()


@dataclass
class Generation:
    model: str
    prompt: str
    seed: int
    steps: int | None
    video_path: str
    video_hash: str
    timings: dict = field(default_factory=dict)


class ModelZoo:
    """The models the app offers, rendered to mp4 files in ``video_dir``. Renders one video at
    a time per process (a CPU or one GPU is saturated by one)."""

    def __init__(self, models: Sequence[ModelEntry], video_dir: str, progress_bars: bool = False):
        if not models:
            raise ArenaError("No models are available; build assets/teacher or pass --model with a pipeline folder or hub id.")
        self.models = {m.name: m for m in models}
        self.video_dir = video_dir
        self.progress_bars = progress_bars
        os.makedirs(video_dir, exist_ok=True)
        self._render_lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def entry(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise ArenaError(f"Unknown model {str(name)[:80]!r}; choose from: {', '.join(self.models)}.")
        return self.models[name]

    def generate(self, name: str, prompt: str, seed: int, named: bool = False, fast_decode: bool = False) -> Generation:
        """Render one video. Its file name is random (nothing in it names the model: the arena
        serves these) unless ``named``, for the comparison's downloads. ``fast_decode``: decoded
        by the tiny decoder, with the full decoder's time and the difference beside it."""
        from dollar.video import save_video

        entry = self.entry(name)
        with self._render_lock:
            frames, timings = render_video(entry.source, entry.steps, prompt, seed, self.progress_bars, entry.size, fast_decode)
        stem = f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}_seed{seed}_{uuid.uuid4().hex[:8]}" if named else uuid.uuid4().hex
        path = os.path.join(self.video_dir, f"{stem}.mp4")
        save_video(frames, path)
        steps = entry.steps if entry.steps is not None else load_pipeline(entry.source).config.student_timesteps
        steps = len(steps) if isinstance(steps, list) else steps
        return Generation(name, prompt, seed, steps, path, video_hash(frames), timings)

    def compare(self, prompt: str, seed: int, names: Sequence[str], fast_decode: bool = False) -> list[Generation]:
        """Every selected model on the same prompt and seed, the teacher first; ``fast_decode``:
        each decoded by the tiny decoder, the full decoder timed on the same latents."""
        prompt, seed = check_prompt(prompt), check_seed(seed)
        if not names:
            raise ArenaError("Select at least one model to run.")
        for n in names:
            self.entry(n)
        ordered = sorted(dict.fromkeys(names), key=lambda n: (not self.models[n].is_teacher, self.names.index(n)))
        return [self.generate(n, prompt, seed, named=True, fast_decode=fast_decode) for n in ordered]


def comparison_table(generations: Sequence[Generation], teacher_end_to_end_s: float | None = None):
    """One row per video: steps, network evaluations, where the time went (text encoding,
    denoising, decoding, in ms), end-to-end seconds and the speedup against the 50-step teacher
    (end to end). Videos rendered with fast decode add both decoders' times on the same latents,
    the decode speedup and the tiny decoder's PSNR against the full one (``DECODER_COLUMNS``)."""
    import pandas as pd

    teacher = next((g.timings["end_to_end_s"] for g in generations if g.model == "teacher"), teacher_end_to_end_s)
    fast = any("decoding_tiny_s" in g.timings for g in generations)
    rows = []
    for g in generations:
        t = g.timings
        row = {
            "model": g.model,
            "steps": g.steps,
            "NFE": t["nfe"],
            "text (ms)": round(1000 * t["text_encoding_s"], 1),
            "denoise (ms)": round(1000 * t["denoising_s"], 1),
            "decode (ms)": round(1000 * t["decoding_s"], 1),
            "end to end (s)": round(t["end_to_end_s"], 3),
            "speedup vs teacher": round(teacher / t["end_to_end_s"], 1) if teacher else None,
        }
        if "decoding_tiny_s" in t:
            row["full decode (ms)"] = round(1000 * t["decoding_full_s"], 1)
            row["tiny decode (ms)"] = round(1000 * t["decoding_tiny_s"], 1)
            row["decode speedup"] = round(t["decoding_full_s"] / t["decoding_tiny_s"], 1)
            row["tiny vs full (dB)"] = round(t["tiny_psnr_db"], 1)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS) + (list(DECODER_COLUMNS) if fast else []))


# --- pairing -----------------------------------------------------------------------------


def pair_priority(
    models: Sequence[str], pair_counts: dict[frozenset, int], rule: str = "least_compared", votes=None
) -> dict[frozenset, tuple]:
    """Every pair of ``models`` and its sort key under the pairing ``rule`` (smaller = show sooner;
    :func:`dollar.ranking.pair_keys`). ``least_compared``: the battles shown (``pair_counts``, open
    ones included). ``active``: first how uncertain the pair's order is under the Bradley-Terry fit
    of ``votes`` (the counted votes, overall preference), then the battles shown."""
    from dollar import ranking

    if len(models) < 2:
        raise ArenaError("The arena needs at least two models; build a student or pass another --model.")
    if rule not in PAIRING_RULES:
        raise ArenaError(f"The pairing rule must be one of {', '.join(PAIRING_RULES)}, got {str(rule)[:40]!r}.")
    names = sorted(models)
    shown = np.array([[pair_counts.get(frozenset((a, b)), 0) if a != b else 0 for b in names] for a in names], dtype=float)
    empty = votes is None or len(votes) == 0
    n, s = (np.zeros_like(shown), np.zeros_like(shown)) if empty else ranking.pair_totals(votes, "overall", names)
    i, j, keys = ranking.pair_keys(n, s, rule, shown=shown)
    return {frozenset((names[a], names[b])): tuple(float(k[p]) for k in keys) for p, (a, b) in enumerate(zip(i, j))}


def choose_pair(
    models: Sequence[str], pair_counts: dict[frozenset, int], rng: random.Random, rule: str = "least_compared", votes=None
) -> tuple[str, str]:
    """The pair to show next under ``rule`` (:func:`pair_priority`; ties broken at random), in sorted order."""
    return first_pair(pair_priority(models, pair_counts, rule, votes), rng)


def first_pair(priority: dict[frozenset, tuple], rng: random.Random) -> tuple[str, str]:
    """The pair whose key comes first in ``priority``, ties broken at random, in sorted order."""
    if not priority:
        raise ArenaError("The arena needs at least two models; build a student or pass another --model.")
    best = min(priority.values())
    return rng.choice(sorted(tuple(sorted(p)) for p, key in priority.items() if key == best))


def assign_sides(pair: tuple[str, str], rng: random.Random) -> tuple[str, str, bool]:
    """(model_a, model_b, swapped): a fair coin decides which model is shown on the left."""
    swapped = rng.random() < 0.5
    return (pair[1], pair[0], True) if swapped else (pair[0], pair[1], False)


# --- the precomputed pool ----------------------------------------------------------------


@dataclass(frozen=True)
class PoolItem:
    id: str
    prompt: str
    seed: int
    models: tuple[str, str]
    videos: tuple[str, str]  # absolute paths
    hashes: tuple[str, str]


class BattlePool:
    """Battles rendered ahead by ``python -m dollar.arena build-pool``, read from ``pool.jsonl``."""

    def __init__(self, folder: str, models: Sequence[str] | None = None):
        self.folder = os.path.abspath(folder)
        self.items: list[PoolItem] = []
        path = os.path.join(self.folder, POOL_MANIFEST)
        if not os.path.exists(path):
            raise ArenaError(f"{self.folder} has no {POOL_MANIFEST}; build it with `python -m dollar.arena build-pool --out {folder}`.")
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                videos = tuple(os.path.join(self.folder, v) for v in rec["videos"])
                if (models is None or all(m in models for m in rec["models"])) and all(os.path.exists(v) for v in videos):
                    self.items.append(PoolItem(rec["id"], rec["prompt"], rec["seed"], tuple(rec["models"]), videos, tuple(rec["hashes"])))

    def __len__(self) -> int:
        return len(self.items)

    def pick(
        self, priority: dict[frozenset, tuple], seen: set[str], uses: dict[str, int], rng: random.Random, where=None
    ) -> PoolItem | None:
        """From the pair that comes first under ``priority`` (:func:`pair_priority`) among the
        items not ``seen`` (by this client) and matching ``where`` (when given), the least-used
        item; None when there is none."""
        fresh = [it for it in self.items if it.id not in seen and (where is None or where(it))]
        if not fresh:
            return None
        best = min(priority.get(frozenset(it.models), ()) for it in fresh)
        fresh = [it for it in fresh if priority.get(frozenset(it.models), ()) == best]
        least = min(uses.get(it.id, 0) for it in fresh)
        return rng.choice([it for it in fresh if uses.get(it.id, 0) == least])


def build_pool(out_dir: str, rounds: int, zoo: ModelZoo, prompts: Sequence[str] | None = None, seed: int = 0, log=print) -> BattlePool:
    """Render ``rounds`` battles: every pair of ``zoo``'s models in turn, each on a held-out
    prompt and a fresh seed. Appends to ``pool.jsonl`` as it goes and skips battles already
    there, so an interrupted build resumes."""
    if rounds < 1:
        raise ArenaError(f"--rounds must be a positive integer, got {rounds}.")
    from dollar import world

    prompts = list(prompts) if prompts else [p.prompt for p in world.heldout_prompts(64)]
    pairs = list(itertools.combinations(zoo.names, 2))
    if not pairs:
        raise ArenaError("A pool needs at least two models; build a student or pass another --model.")
    os.makedirs(out_dir, exist_ok=True)
    manifest = os.path.join(out_dir, POOL_MANIFEST)
    done = set()
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as f:
            done = {json.loads(line)["id"] for line in f if line.strip()}
    start = time.perf_counter()
    for r in range(rounds):
        pair, prompt, battle_seed = pairs[r % len(pairs)], prompts[r % len(prompts)], seed * 1_000_003 + r
        item_id = hashlib.sha256(json.dumps([prompt, battle_seed, pair]).encode()).hexdigest()[:16]
        if item_id in done:
            continue
        files, hashes = [], []
        for name in pair:
            gen = zoo.generate(name, prompt, battle_seed)
            target = os.path.join(out_dir, f"{gen.video_hash[:32]}.mp4")
            os.replace(gen.video_path, target)
            files.append(os.path.basename(target))
            hashes.append(gen.video_hash)
        with open(manifest, "a", encoding="utf-8") as f:
            rec = {"id": item_id, "prompt": prompt, "seed": battle_seed, "models": list(pair), "videos": files, "hashes": hashes}
            f.write(json.dumps(rec) + "\n")
        log(f"[{r + 1}/{rounds}] {pair[0]} vs {pair[1]}: {prompt!r} ({time.perf_counter() - start:.1f} s)")
    return BattlePool(out_dir)


# --- serving: what reaches the client -------------------------------------------------------


def serve_copy(source: str, folder: str, size: int = SERVED_VIDEO_BYTES) -> str:
    """A copy of the mp4 ``source`` under a random name in ``folder``, padded with an MP4
    ``free`` box of random bytes (players skip it) to ``size`` bytes, or the next multiple of
    ``size`` for a larger file: its name, content hash and length say nothing about the model,
    and no two copies are alike."""
    with open(source, "rb") as f:
        data = f.read()
    total = max(size, -(-(len(data) + 8) // size) * size)
    pad = total - len(data)
    path = os.path.join(folder, f"{uuid.uuid4().hex}.mp4")
    with open(path, "wb") as f:
        f.write(data + pad.to_bytes(4, "big") + b"free" + os.urandom(pad - 8))
    return path


def broken_copy(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A deliberately broken version of a video (frames shuffled, heavy noise): any attentive
    rater prefers the original, which makes a check battle's answer known."""
    noisy = frames[rng.permutation(len(frames))].astype(np.float32) + rng.normal(0.0, 80.0, frames.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def prune_files(folder: str, max_age_s: float, max_files: int) -> int:
    """Delete files older than ``max_age_s`` and all but the newest ``max_files`` in ``folder``
    (the app's video folders stay bounded); returns how many were deleted."""
    try:
        entries = sorted(((e.stat().st_mtime, e.path) for e in os.scandir(folder) if e.is_file()), reverse=True)
    except FileNotFoundError:
        return 0
    cutoff = time.time() - max_age_s
    doomed = [p for i, (mtime, p) in enumerate(entries) if i >= max_files or mtime < cutoff]
    for path in doomed:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return len(doomed)


# --- battles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BattleView:
    """What the rater sees: no model names, no timings, videos under names used once."""

    battle_id: str
    prompt: str
    video_a: str
    video_b: str


class Arena:
    """Blind battles: pairs chosen by ``pairing`` (``active``: the pair whose order the counted votes
    leave least certain; ``least_compared``: balanced), random sides, identities kept in the store only.

    ``round_floor_s``: every round is answered after a whole multiple of this (the first, unless
    rendering takes longer), so timing does not tell which models are rendering; ``check_rate``:
    the share of held-out rounds that are check battles."""

    def __init__(
        self,
        store: VoteStore,
        zoo: ModelZoo,
        pool: BattlePool | None = None,
        prompts: Sequence[str] | None = None,
        seed=None,
        round_floor_s: float = 0.0,
        check_rate: float = 0.0,
        served_dir: str | None = None,
        pairing: str = "active",
    ):
        from dollar import world

        self.store = store
        self.zoo = zoo
        self.pool = pool if pool is not None and len(pool) else None
        self.prompts = list(prompts) if prompts else [p.prompt for p in world.heldout_prompts(64)]
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.round_floor_s = round_floor_s
        self.check_rate = check_rate
        self.served_dir = served_dir or os.path.join(zoo.video_dir, "served")
        os.makedirs(self.served_dir, exist_ok=True)
        self.teacher = next((m.name for m in zoo.models.values() if m.is_teacher), None)
        if pairing not in PAIRING_RULES:
            raise ArenaError(f"The pairing rule must be one of {', '.join(PAIRING_RULES)}, got {str(pairing)[:40]!r}.")
        self.pairing = pairing

    def pair_priority(self) -> dict[frozenset, tuple]:
        """Every pair of the zoo's models and when it comes (:func:`pair_priority`), from the store now."""
        counts = self.store.pair_counts()
        votes = self.store.board_votes() if self.pairing == "active" else None
        return pair_priority(self.zoo.names, counts, self.pairing, votes)

    def new_battle(self, session_hash: str, user_prompt: str | None = None, client_key: str | None = None) -> BattleView:
        """A battle on the user's prompt (stored, not counted on the board) or, when none is
        given, on a held-out prompt: from the pool when it has one this client has not seen,
        otherwise rendered now; now and then a check battle. A failed render voids the battle."""
        blank = user_prompt is None or (isinstance(user_prompt, str) and not user_prompt.strip())
        user_prompt = "" if blank else check_prompt(user_prompt)
        self.store.check_battle_rate(client_key)
        start = time.monotonic()
        try:
            return self._new_battle(session_hash, user_prompt, client_key)
        finally:
            if self.round_floor_s > 0:  # the answer leaves at a multiple of the floor, whatever was rendered
                elapsed = time.monotonic() - start
                time.sleep(max(1, math.ceil(elapsed / self.round_floor_s)) * self.round_floor_s - elapsed)
            prune_files(self.served_dir, max_age_s=600, max_files=400)
            prune_files(self.zoo.video_dir, max_age_s=600, max_files=400)

    def _new_battle(self, session_hash: str, user_prompt: str, client_key: str | None) -> BattleView:
        priority = self.pair_priority() if len(self.zoo.names) > 1 else {}
        with self._rng_lock:
            check = not user_prompt and self.teacher is not None and self.rng.random() < self.check_rate
            item = None
            if not user_prompt and self.pool is not None:
                seen = self.store.pool_items_seen(session_hash, client_key)
                wanted = (lambda it: self.teacher in it.models) if check else None
                item = self.pool.pick(priority, seen, self.store.pool_item_uses(), self.rng, where=wanted)
            if check:
                return self._check_battle(session_hash, client_key, item)
            if item is not None:
                a, b, swapped = assign_sides(item.models, self.rng)
                va, vb = (item.videos[1], item.videos[0]) if swapped else item.videos
                ha, hb = (item.hashes[1], item.hashes[0]) if swapped else item.hashes
                battle = self.store.create_battle(
                    session_hash, item.prompt, "heldout", item.seed, a, b, swapped, pool_item=item.id, client_key=client_key
                )
                view = BattleView(battle.id, item.prompt, serve_copy(va, self.served_dir), serve_copy(vb, self.served_dir))
                self.store.mark_shown(battle.id, ha, hb)
                return view
            prompt = user_prompt or self.rng.choice(self.prompts)
            a, b, swapped = assign_sides(first_pair(priority, self.rng), self.rng)
            seed = self.rng.randrange(2**31)
        battle = self.store.create_battle(
            session_hash, prompt, "user" if user_prompt else "heldout", seed, a, b, swapped, client_key=client_key
        )
        try:
            ga = self.zoo.generate(a, prompt, seed)
            gb = self.zoo.generate(b, prompt, seed)
            view = BattleView(battle.id, prompt, serve_copy(ga.video_path, self.served_dir), serve_copy(gb.video_path, self.served_dir))
        except Exception as err:  # any failure: never leave a one-sided battle open
            self.store.void_battle(battle.id, f"{type(err).__name__}: {err}")
            raise ArenaError("Making the videos for this round failed; it was voided, press New round.") from err
        self.store.mark_shown(battle.id, ga.video_hash, gb.video_hash)
        return view

    def _check_battle(self, session_hash: str, client_key: str | None, item: PoolItem | None) -> BattleView:
        """The teacher's video against a broken copy of it, on a random side; from the pool (the
        item then counts as seen by this client) or rendered now. Called under the rng lock."""
        import imageio.v3 as iio

        from dollar.video import save_video

        teacher_first = self.rng.random() < 0.5
        noise = np.random.default_rng(self.rng.randrange(2**63))
        prompt, seed = (item.prompt, item.seed) if item is not None else (self.rng.choice(self.prompts), self.rng.randrange(2**31))
        a, b = (self.teacher, BROKEN_MODEL) if teacher_first else (BROKEN_MODEL, self.teacher)
        battle = self.store.create_battle(
            session_hash,
            prompt,
            "heldout",
            seed,
            a,
            b,
            not teacher_first,
            pool_item=item.id if item is not None else None,
            client_key=client_key,
            check_side="A" if teacher_first else "B",
        )
        try:
            original = (
                item.videos[item.models.index(self.teacher)]
                if item is not None
                else self.zoo.generate(self.teacher, prompt, seed).video_path
            )
            frames = np.asarray(iio.imread(original, plugin="FFMPEG", index=None))
            broken = broken_copy(frames, noise)
            broken_path = os.path.join(self.zoo.video_dir, f"{uuid.uuid4().hex}.mp4")
            save_video(broken, broken_path)
            served = (serve_copy(original, self.served_dir), serve_copy(broken_path, self.served_dir))
            os.remove(broken_path)
        except Exception as err:
            self.store.void_battle(battle.id, f"{type(err).__name__}: {err}")
            raise ArenaError("Making the videos for this round failed; it was voided, press New round.") from err
        hashes = (video_hash(frames), video_hash(broken))
        first, second = (0, 1) if teacher_first else (1, 0)
        self.store.mark_shown(battle.id, hashes[first], hashes[second])
        return BattleView(battle.id, prompt, served[first], served[second])

    def vote(self, battle_id: str, session_hash: str, answers: dict[str, str], client_key: str | None = None) -> dict:
        """Store the vote; returns it, identities included (revealed only now)."""
        return self.store.record_vote(battle_id, session_hash, answers, client_key)

    def skip(self, battle_id: str, session_hash: str) -> None:
        self.store.skip_battle(battle_id, session_hash)


def example_prompts(n: int = 8, seed: int = 0) -> list[str]:
    """Prompts in the world's vocabulary (canonical phrasings), for the example list."""
    from dollar import world

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c, s, m = rng.choice(world.COLOURS), rng.choice(world.SHAPES), rng.choice(world.MOTIONS)
        bg = rng.choice(world.BACKGROUNDS)
        article = "an" if c[0] in "aeiou" else "a"
        out.append(f"{article} {c} {s} {world.MOTION_PHRASES[m][0]} on a {bg} background")
    return out


# --- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dollar.arena", description="Arena tools.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-pool", help="render battles ahead so that arena rounds are instant")
    b.add_argument("--out", required=True, help="pool folder (videos + pool.jsonl); the app reads it with --pool")
    b.add_argument("--rounds", type=int, default=60, help="battles to render (pairs are cycled evenly)")
    b.add_argument("--model", action="append", default=[], help="extra pipeline folder or hub id (repeatable)")
    b.add_argument("--models", default=None, help="comma-separated subset of model names to pit against each other")
    b.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export-preferences", help="the counted votes as a preference dataset (rows, re-rendered latents, card)")
    e.add_argument("--out", required=True, help="folder for the dataset (preferences.jsonl, latents.safetensors, manifest.json, README.md)")
    e.add_argument(
        "--db", default=None, help="SQLAlchemy URL of the vote store (default: $DOLLAR_DB_URL, else the data folder's SQLite file)"
    )
    e.add_argument("--data-dir", default=None, help="the app's data folder (default: $DOLLAR_DATA_DIR, /data, ./data)")
    e.add_argument("--model", action="append", default=[], help="extra pipeline folder or hub id the votes name (repeatable)")
    e.add_argument("--limit", type=int, default=0, help="only the first N counted votes (0: all)")
    e.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    args = p.parse_args(argv)
    from dollar.model_specs import quiet_command

    quiet_command()
    if args.command == "export-preferences":
        return export_preferences_command(args)
    try:
        entries = select_models(available_models(args.model), args.models)
        zoo = ModelZoo(entries, os.path.join(args.out, ".tmp"))
        pool = build_pool(args.out, args.rounds, zoo, seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(pool)} battles in {os.path.abspath(args.out)}")
    return 0


def open_store(db: str | None, data_dir: str | None) -> VoteStore:
    """The app's vote store, read-only in spirit: a SQLite file that does not exist is an error, not a new store."""
    from dollar.votes import ENV_DB_URL, default_data_dir

    url = db or os.environ.get(ENV_DB_URL)
    if not url:
        path = os.path.join(os.path.abspath(data_dir or default_data_dir()), "votes.sqlite")
        if not os.path.exists(path):
            raise ArenaError(f"There is no vote store at {path}; pass --data-dir (the app's data folder) or --db (its database URL).")
        url = f"sqlite:///{path}"
    return VoteStore(url)


def export_preferences_command(args) -> int:
    from dollar.preferences import export_preferences

    try:
        store = open_store(args.db, args.data_dir)
        if args.limit < 0:
            raise ArenaError(f"--limit must be 0 (all votes) or a positive number, got {args.limit}.")
        manifest = export_preferences(store, args.out, available_models(args.model), args.limit or None, args.overwrite)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{manifest['votes']} votes ({manifest['rows']} rows, {manifest['videos']} videos, {100 * manifest['reproduced_share']:.0f}% "
        f"reproduced bit for bit) -> {os.path.abspath(args.out)}, dataset version {manifest['dataset_version']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
