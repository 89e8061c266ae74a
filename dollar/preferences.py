"""Human preferences as training data and as a reward (issue 20): the arena's counted votes out of
the vote store as a versioned dataset, and the preference latent reward model trained on it.

    python -m dollar.arena export-preferences --out prefs/       # the dataset (this module does the work)
    python train/train_preference_reward.py --prefs prefs/ --output_dir runs/prefs-lrm
    python train/distill.py --reward preference:runs/prefs-lrm=1.0,motion=0.5 ...

A dataset folder holds ``preferences.jsonl`` (one row per counted vote and criterion: prompt,
seed, both models with their checkpoint hashes and step counts, the answer and the winner),
``latents.safetensors`` (every video's latents, re-rendered from its model, prompt and seed:
the store keeps no latents; each row names its two by key), ``manifest.json`` (format and
dataset version, counts) and ``README.md`` (the dataset card). Only votes that count for the
board go in: held-out prompts, no check battles, no rater flagged by the checks
(:func:`dollar.votes.flagged_raters`). Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch

from dollar.ranking import CRITERIA

FORMAT_VERSION = 1
ROWS_FILE = "preferences.jsonl"
LATENTS_FILE = "latents.safetensors"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
WINNERS = {"A": "model_a", "B": "model_b", "tie": "tie", "both_bad": "tie"}
LABELS = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}  # P(a preferred), the Bradley-Terry target


class PreferenceError(ValueError):
    """A preference export or dataset that cannot be made or read; the message says what to do."""


# ----------------------------------------------------------------------------- export


def checkpoint_hash(source: str) -> str:
    """SHA-256 (first 16 hex digits) of a pipeline folder's transformer and scheduler files: which
    weights made a video. A hub id that is not on disk is named, not hashed."""
    from dollar.pipeline import resolve_model

    folder = resolve_model(source)
    if not os.path.isdir(folder):
        return f"hub:{source}"
    h = hashlib.sha256()
    for sub in ("transformer", "scheduler"):
        root = os.path.join(folder, sub)
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            h.update(name.encode())
            with open(os.path.join(root, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def check_out_folder(out: str, overwrite: bool = False) -> str:
    """``out`` as an absolute folder that can take a dataset, else one sentence."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise PreferenceError(f"--out {out} is a file; give a folder for the dataset.")
    if os.path.isdir(out) and os.path.exists(os.path.join(out, ROWS_FILE)) and not overwrite:
        raise PreferenceError(f"{out} already holds a preference dataset; choose a new folder or pass --overwrite.")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise PreferenceError(f"--out {out} cannot be created ({err.strerror}); give a writable folder.") from None
    if not os.access(out, os.W_OK):
        raise PreferenceError(f"--out {out} is not writable; give a writable folder.")
    return out


def preference_rows(votes, models: dict) -> list[dict]:
    """One row per vote and criterion from a table of counted votes (``VoteStore.board_votes``);
    ``models``: name -> :class:`~dollar.arena.ModelEntry` of every model the votes name."""
    voted = set(votes["model_a"]) | set(votes["model_b"])
    missing = sorted(voted - set(models))
    if missing:
        raise PreferenceError(f"The votes name model(s) {', '.join(missing)} that are not available here; pass each with --model.")
    facts = {name: (checkpoint_hash(e.source), e.steps) for name, e in models.items() if name in voted}
    rows = []
    for v in votes.to_dict("records"):
        sides = {}
        for side in ("a", "b"):
            name = v[f"model_{side}"]
            checkpoint, steps = facts[name]
            key = hashlib.sha256(json.dumps([name, checkpoint, steps, v["prompt"], int(v["seed"])]).encode()).hexdigest()[:20]
            sides.update({f"checkpoint_{side}": checkpoint, f"steps_{side}": steps, f"video_hash_{side}": v[f"video_hash_{side}"]})
            sides[f"latent_{side}"] = key
        for criterion in CRITERIA:
            winner = WINNERS[v[criterion]]
            rows.append(
                dict(
                    vote_id=int(v["id"]),
                    date=str(v["created_at"])[:10],
                    criterion=criterion,
                    prompt=v["prompt"],
                    seed=int(v["seed"]),
                    model_a=v["model_a"],
                    model_b=v["model_b"],
                    answer=v[criterion],
                    winner=winner,
                    label=LABELS[winner],
                    **sides,
                )
            )
    return rows


@torch.no_grad()
def render_latents(entry, prompt: str, seed: int) -> tuple[torch.Tensor, str]:
    """The latents a model rendered for (prompt, seed) in the arena (the same generator and
    steps as :func:`dollar.arena.render_video`) and the hash of their decoded video."""
    from dollar.arena import load_pipeline, video_hash
    from dollar.pipeline import postprocess_video

    pipe = load_pipeline(entry.source)
    height, width, num_frames = entry.size or (None, None, None)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(
        prompt,
        num_inference_steps=entry.steps,
        generator=generator,
        height=height,
        width=width,
        num_frames=num_frames,
        output_type="latent",
    )
    with torch.inference_mode():
        frames = postprocess_video(pipe.decode_latents(out.frames), "np")[0]
    return out.frames[0].float().cpu(), video_hash(frames)


def export_preferences(store, out: str, models: Sequence, limit: int | None = None, overwrite: bool = False, log=print) -> dict:
    """Write the counted votes of ``store`` (the first ``limit`` when given) as a preference
    dataset in ``out``; ``models``: the :class:`~dollar.arena.ModelEntry` of every model voted on.
    Returns the manifest."""
    from safetensors.torch import save_file

    votes = store.board_votes()
    if len(votes) == 0:
        raise PreferenceError(
            f"The vote store at {store.where()} has no counted votes; collect votes in the arena first "
            "(check rounds, users' own prompts and raters who failed their checks do not count)."
        )
    if limit:
        votes = votes.iloc[:limit]
    out = check_out_folder(out, overwrite)
    rows = preference_rows(votes, {m.name: m for m in models})
    entries = {m.name: m for m in models}
    latents, reproduced = {}, {}
    for k, row in enumerate(rows[:: len(CRITERIA)], 1):
        for side in ("a", "b"):
            key = row[f"latent_{side}"]
            if key not in latents:
                latents[key], reproduced[key] = render_latents(entries[row[f"model_{side}"]], row["prompt"], row["seed"])
        if k % 100 == 0:
            log(f"{k} votes' videos re-rendered")
    for row in rows:  # whether the re-rendered video is, bit for bit, the one the rater saw
        for side in ("a", "b"):
            row[f"reproduced_{side}"] = reproduced[row[f"latent_{side}"]] == row[f"video_hash_{side}"]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    shapes = {tuple(t.shape) for t in latents.values()}
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset_version": hashlib.sha256(body.encode()).hexdigest()[:12],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "store": store.where(),
        "votes": len(votes),
        "rows": len(rows),
        "videos": len(latents),
        "raters": int(votes["rater"].nunique()),
        "latent_shapes": sorted(list(s) for s in shapes),
        "reproduced_share": float(np.mean([r[f"reproduced_{s}"] for r in rows for s in "ab"])),
        "models": {name: {"checkpoint": checkpoint, "steps": steps} for name, (checkpoint, steps) in _model_facts(rows).items()},
        "app_versions": sorted(set(map(str, votes["app_version"]))),
    }
    with open(os.path.join(out, ROWS_FILE), "w", encoding="utf-8") as f:
        f.write(body)
    save_file(
        {k: v.contiguous() for k, v in latents.items()}, os.path.join(out, LATENTS_FILE), metadata={"format_version": str(FORMAT_VERSION)}
    )
    with open(os.path.join(out, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=2)
    with open(os.path.join(out, CARD_FILE), "w") as f:
        f.write(dataset_card(manifest))
    return manifest


def _model_facts(rows: list[dict]) -> dict:
    return {r[f"model_{s}"]: (r[f"checkpoint_{s}"], r[f"steps_{s}"]) for r in rows for s in "ab"}


def dataset_card(manifest: dict) -> str:
    """The dataset card (README.md with the Hub's YAML header)."""
    models = "\n".join(f"| {name} | `{m['checkpoint']}` | {m['steps']} |" for name, m in sorted(manifest["models"].items()))
    return f"""---
pretty_name: DOLLAR arena preferences
task_categories: [text-to-video]
tags: [human-preferences, pairwise, bradley-terry, dollar]
configs:
- config_name: default
  data_files: {ROWS_FILE}
---
# DOLLAR arena preferences, version {manifest["dataset_version"]} (format {manifest["format_version"]})

Blind pairwise votes from the DOLLAR arena, exported by `python -m dollar.arena export-preferences`
on {manifest["created_at"]} from the store at `{manifest["store"]}`.

- **{manifest["votes"]} votes** from {manifest["raters"]} raters, {manifest["rows"]} rows (one per vote and criterion:
  {", ".join(CRITERIA)}), {manifest["videos"]} distinct videos.
- **What counts**: held-out prompts only; no check battles (the teacher against a broken copy of it);
  no rater who failed half of their check battles. Users' own prompts, checks and flagged raters are left out.
- **Rows** (`{ROWS_FILE}`): `vote_id, date, criterion, prompt, seed, model_a, model_b, answer` (A, B, tie, both_bad),
  `winner` (model_a, model_b or tie; "both bad" is a tie), `label` (P(a preferred): 1, 0 or 0.5),
  `checkpoint_a/b` (SHA-256 of the model's transformer and scheduler files, 16 hex digits), `steps_a/b`
  (null: the checkpoint's own), `video_hash_a/b` (the shown video's frames), `latent_a/b` (keys into
  `{LATENTS_FILE}`), `reproduced_a/b` (the re-rendered video hashes to the shown one).
- **Latents** (`{LATENTS_FILE}`, safetensors, float32, [C, T, h, w], normalised as the transformer sees them):
  re-rendered from each model, prompt and seed with the arena's generator; {100 * manifest["reproduced_share"]:.1f}% of the
  videos reproduce bit for bit the one the rater saw.
- **Raters** are kept apart only by the store: no session, address or rater key is exported.

| model | checkpoint | steps |
|---|---|---|
{models}

Train a preference latent reward model on it with `python train/train_preference_reward.py --prefs <this folder>`.
"""


# ----------------------------------------------------------------------------- reading and training


@dataclass
class PreferencePairs:
    """One criterion's rows: ``latents_a/b`` [N, C, T, h, w], ``label`` [N] (P(a preferred)), the prompts."""

    latents_a: torch.Tensor
    latents_b: torch.Tensor
    label: torch.Tensor
    prompts: list[str]
    manifest: dict

    def __len__(self) -> int:
        return len(self.label)


def load_preferences(folder: str, criterion: str = "overall", max_votes: int = 0) -> PreferencePairs:
    """A dataset written by :func:`export_preferences`, one criterion's rows (of the first
    ``max_votes`` votes when given: a learning curve); one sentence when it cannot be read."""
    from safetensors.torch import load_file

    if criterion not in CRITERIA:
        raise PreferenceError(f"The criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    paths = [os.path.join(folder, name) for name in (ROWS_FILE, LATENTS_FILE, MANIFEST_FILE)]
    if not all(os.path.exists(p) for p in paths):
        raise PreferenceError(
            f"{folder} is not a preference dataset (it needs {ROWS_FILE}, {LATENTS_FILE} and {MANIFEST_FILE}); make one with `python -m dollar.arena export-preferences --out {folder}`."
        )
    with open(paths[2]) as f:
        manifest = json.load(f)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PreferenceError(
            f"{folder} has format version {manifest.get('format_version')}, this code reads {FORMAT_VERSION}; export it again."
        )
    with open(paths[0], encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["criterion"] == criterion]
    if max_votes:
        first = set(sorted({r["vote_id"] for r in rows})[:max_votes])
        rows = [r for r in rows if r["vote_id"] in first]
    if not rows:
        raise PreferenceError(f"{folder} has no rows for {criterion}; export more votes.")
    latents = load_file(paths[1])
    return PreferencePairs(
        torch.stack([latents[r["latent_a"]] for r in rows]),
        torch.stack([latents[r["latent_b"]] for r in rows]),
        torch.tensor([r["label"] for r in rows], dtype=torch.float32),
        [r["prompt"] for r in rows],
        manifest,
    )


def split_by_prompt(prompts: Sequence[str], heldout_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices; whole prompts are held out, so accuracy is measured on prompts the model never saw."""
    unique = sorted(set(prompts))
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(unique)[: max(1, round(heldout_fraction * len(unique)))]) if heldout_fraction > 0 else set()
    mask = np.array([p in held for p in prompts])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


@torch.no_grad()
def pairwise_accuracy(reward_model, pairs: PreferencePairs, index: np.ndarray) -> float | None:
    """Share of the decided (not tied) pairs in ``index`` whose winner the model scores higher; None without any."""
    decided = [i for i in index.tolist() if pairs.label[i] != 0.5]
    if not decided:
        return None
    score_a = reward_model(pairs.latents_a[decided])
    score_b = reward_model(pairs.latents_b[decided])
    return float(((score_a > score_b).float() == pairs.label[decided]).float().mean())


def load_preference_reward(path: str):
    """A trained preference latent reward model, frozen (eval mode, no gradients to its weights)."""
    from dollar.models import LatentRewardModel

    if not os.path.exists(os.path.join(path, "config.json")):
        raise PreferenceError(
            f"{path} is not a trained preference reward model; train one with `python train/train_preference_reward.py --output_dir {path}`."
        )
    model = LatentRewardModel.from_pretrained(path)
    if model.config.text_dim:
        raise PreferenceError(f"{path} is text-conditioned; preference rewards are trained on latents alone (train_preference_reward.py).")
    return model.eval().requires_grad_(False)
