"""The arena: which models exist, rendering them, blind battles between them, and the
precomputed pool of battles that makes rounds instant for slow teachers.

Build a pool (videos rendered ahead, named by content hash so no file name reveals a model):

    python -m dollar.arena build-pool --out data/pool --rounds 60
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
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

from dollar.votes import VoteStore

TEACHER_STEPS = 50
BASELINE_STEPS = (1, 2, 4)
STUDENTS = ("student-1", "student-2", "student-4")
MAX_PROMPT_CHARS = 500
MAX_SEED = 2**32 - 1
POOL_MANIFEST = "pool.jsonl"


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

    @property
    def is_teacher(self) -> bool:
        return self.kind == "teacher"


def available_models(extra: Sequence[str] = ()) -> list[ModelEntry]:
    """The bundled models present in assets/ (the teacher brings its DDIM-k baselines), then
    each ``extra`` folder or hub id at its own defaults."""
    from dollar.pipeline import ModelLoadError, resolve_model

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
    for source in extra:
        resolve_model(source)  # a clear ModelLoadError for a name that cannot be a model
        if source not in {e.name for e in entries}:
            entries.append(ModelEntry(source, source, None, "custom"))
    return entries


# --- input checks (the boundary: one sentence that says what to do) ------------------------


def check_prompt(prompt: str | None) -> str:
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

_PIPELINES: dict = {}
_PIPELINE_LOCK = threading.Lock()


def load_pipeline(source: str):
    """Load once per process and keep (models load lazily, on their first use)."""
    with _PIPELINE_LOCK:
        if source not in _PIPELINES:
            import torch

            from dollar.pipeline import DollarPipeline

            pipe = DollarPipeline.from_pretrained(source)
            if torch.cuda.is_available():
                pipe = pipe.to("cuda")
            _PIPELINES[source] = pipe
        return _PIPELINES[source]


@gpu
def render_video(source: str, steps: int | None, prompt: str, seed: int, progress_bar: bool = False) -> tuple[np.ndarray, dict]:
    """One video, uint8 [T, H, W, 3], and its timings (plus ``end_to_end_s``, the whole call)."""
    import torch

    pipe = load_pipeline(source)
    pipe.set_progress_bar_config(disable=not progress_bar)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    out = pipe(prompt, num_inference_steps=steps, generator=generator, output_type="np")
    timings = dict(out.timings, end_to_end_s=time.perf_counter() - start)
    return out.frames[0], timings


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

    def generate(self, name: str, prompt: str, seed: int, named: bool = False) -> Generation:
        """Render one video. Its file name is random (nothing in it names the model: the arena
        serves these) unless ``named``, for the comparison's downloads."""
        from dollar.video import save_video

        entry = self.entry(name)
        with self._render_lock:
            frames, timings = render_video(entry.source, entry.steps, prompt, seed, self.progress_bars)
        stem = f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}_seed{seed}_{uuid.uuid4().hex[:8]}" if named else uuid.uuid4().hex
        path = os.path.join(self.video_dir, f"{stem}.mp4")
        save_video(frames, path)
        steps = entry.steps if entry.steps is not None else load_pipeline(entry.source).config.student_timesteps
        steps = len(steps) if isinstance(steps, list) else steps
        return Generation(name, prompt, seed, steps, path, video_hash(frames), timings)

    def compare(self, prompt: str, seed: int, names: Sequence[str]) -> list[Generation]:
        """Every selected model on the same prompt and seed, the teacher first."""
        prompt, seed = check_prompt(prompt), check_seed(seed)
        if not names:
            raise ArenaError("Select at least one model to run.")
        for n in names:
            self.entry(n)
        ordered = sorted(dict.fromkeys(names), key=lambda n: (not self.models[n].is_teacher, self.names.index(n)))
        return [self.generate(n, prompt, seed, named=True) for n in ordered]


def comparison_table(generations: Sequence[Generation], teacher_end_to_end_s: float | None = None):
    """One row per video: steps, network evaluations, denoising / decoding / end-to-end
    seconds and the speedup against the 50-step teacher (end to end)."""
    import pandas as pd

    teacher = next((g.timings["end_to_end_s"] for g in generations if g.model == "teacher"), teacher_end_to_end_s)
    rows = []
    for g in generations:
        t = g.timings
        rows.append(
            {
                "model": g.model,
                "steps": g.steps,
                "NFE": t["nfe"],
                "denoising (s)": round(t["denoising_s"], 3),
                "decoding (s)": round(t["decoding_s"], 3),
                "end to end (s)": round(t["end_to_end_s"], 3),
                "speedup vs teacher": round(teacher / t["end_to_end_s"], 1) if teacher else None,
            }
        )
    return pd.DataFrame(rows)


# --- pairing -----------------------------------------------------------------------------


def choose_pair(models: Sequence[str], pair_counts: dict[frozenset, int], rng: random.Random) -> tuple[str, str]:
    """The least-compared pair (ties broken at random), in sorted order."""
    if len(models) < 2:
        raise ArenaError("The arena needs at least two models; build a student or pass another --model.")
    pairs = list(itertools.combinations(sorted(models), 2))
    fewest = min(pair_counts.get(frozenset(p), 0) for p in pairs)
    return rng.choice([p for p in pairs if pair_counts.get(frozenset(p), 0) == fewest])


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

    def pick(self, pair_counts: dict[frozenset, int], seen: set[str], uses: dict[str, int], rng: random.Random) -> PoolItem | None:
        """From the least-compared pair in the pool, an item this session has not seen, the
        least-used first; None when the session has seen the whole pool."""
        fresh = [it for it in self.items if it.id not in seen]
        if not fresh:
            return None
        fewest = min(pair_counts.get(frozenset(it.models), 0) for it in fresh)
        fresh = [it for it in fresh if pair_counts.get(frozenset(it.models), 0) == fewest]
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


# --- battles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BattleView:
    """What the rater sees: no model names, no timings."""

    battle_id: str
    prompt: str
    video_a: str
    video_b: str


class Arena:
    """Blind battles: balanced pairing, random sides, identities kept in the store only."""

    def __init__(self, store: VoteStore, zoo: ModelZoo, pool: BattlePool | None = None, prompts: Sequence[str] | None = None, seed=None):
        from dollar import world

        self.store = store
        self.zoo = zoo
        self.pool = pool if pool is not None and len(pool) else None
        self.prompts = list(prompts) if prompts else [p.prompt for p in world.heldout_prompts(64)]
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def new_battle(self, session_hash: str, user_prompt: str | None = None) -> BattleView:
        """A battle on the user's prompt (stored, not counted on the board) or, when none is
        given, on a held-out prompt: from the pool when it has one this session has not seen,
        otherwise rendered now. A failed render voids the battle."""
        user_prompt = (user_prompt or "").strip()
        counts = self.store.pair_counts()
        with self._rng_lock:
            if not user_prompt and self.pool is not None:
                item = self.pool.pick(counts, self.store.pool_items_seen(session_hash), self.store.pool_item_uses(), self.rng)
                if item is not None:
                    a, b, swapped = assign_sides(item.models, self.rng)
                    va, vb = (item.videos[1], item.videos[0]) if swapped else item.videos
                    ha, hb = (item.hashes[1], item.hashes[0]) if swapped else item.hashes
                    battle = self.store.create_battle(session_hash, item.prompt, "heldout", item.seed, a, b, swapped, pool_item=item.id)
                    self.store.mark_shown(battle.id, ha, hb)
                    return BattleView(battle.id, item.prompt, va, vb)
            prompt = check_prompt(user_prompt) if user_prompt else self.rng.choice(self.prompts)
            a, b, swapped = assign_sides(choose_pair(self.zoo.names, counts, self.rng), self.rng)
            seed = self.rng.randrange(2**31)
        battle = self.store.create_battle(session_hash, prompt, "user" if user_prompt else "heldout", seed, a, b, swapped)
        try:
            ga = self.zoo.generate(a, prompt, seed)
            gb = self.zoo.generate(b, prompt, seed)
        except Exception as err:  # any failure: never leave a one-sided battle open
            self.store.void_battle(battle.id, f"{type(err).__name__}: {err}")
            raise ArenaError(f"Rendering this battle failed ({type(err).__name__}); it was voided, press New round.") from err
        self.store.mark_shown(battle.id, ga.video_hash, gb.video_hash)
        return BattleView(battle.id, prompt, ga.video_path, gb.video_path)

    def vote(self, battle_id: str, session_hash: str, answers: dict[str, str]) -> dict:
        """Store the vote; returns it, identities included (revealed only now)."""
        return self.store.record_vote(battle_id, session_hash, answers)

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
    args = p.parse_args(argv)
    import diffusers.utils.logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    try:
        entries = available_models(args.model)
        if args.models:
            wanted = [m.strip() for m in args.models.split(",") if m.strip()]
            unknown = [m for m in wanted if m not in {e.name for e in entries}]
            if unknown:
                raise ArenaError(f"Unknown model(s) {', '.join(unknown)}; available: {', '.join(e.name for e in entries)}.")
            entries = [e for e in entries if e.name in wanted]
        zoo = ModelZoo(entries, os.path.join(args.out, ".tmp"))
        pool = build_pool(args.out, args.rounds, zoo, seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(pool)} battles in {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
