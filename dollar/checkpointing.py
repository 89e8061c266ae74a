"""Training bookkeeping shared by the trainers: accelerate checkpoints written atomically, the
newest complete one found again, and JSONL logs that stay one row per step across resumes.

A checkpoint is written into ``<folder>.incomplete`` and renamed to ``<folder>`` only once every
file is on disk, with ``checkpoint.json`` (the trainer's info and the size of every file)
written last; so a run killed mid-save leaves either the previous checkpoints untouched or an
``.incomplete`` folder that resuming skips with a warning, as it skips a folder whose files do
not match its manifest (missing or truncated).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings

import torch
from tqdm.auto import tqdm

from dollar.config import TrainerRunConfig

MANIFEST = "checkpoint.json"
INCOMPLETE = ".incomplete"
REPLACED = ".replaced"


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: str) -> dict[str, int]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = os.path.getsize(path)
    return out


def save_checkpoint(accelerator, folder: str, info: dict, keep: int | None = None) -> None:
    """``accelerator.save_state`` into ``folder`` atomically, with ``info`` (JSON) beside it;
    a ``folder`` that exists is replaced. ``keep``: afterwards keep only this many newest
    complete checkpoints beside it. Every process calls it, as ``save_state`` wants."""
    folder = os.path.abspath(folder)
    root = os.path.dirname(folder)
    staging = folder + INCOMPLETE
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = _files(staging)
        for name in files:
            _fsync(os.path.join(staging, name))
        manifest = os.path.join(staging, MANIFEST)
        with open(manifest, "w") as f:
            json.dump({"info": info, "files": files}, f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(folder):  # a re-save (distill after a rollback): the old one goes only after the new one is in place
            os.replace(folder, folder + REPLACED)
        os.replace(staging, folder)
        _fsync(root)
        shutil.rmtree(folder + REPLACED, ignore_errors=True)
        if keep:
            for old, _ in complete_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def checkpoint_when_due(accelerator, cfg: TrainerRunConfig, root: str, step: int, last_step: int, start: float) -> bool:
    """After ``step``: save a checkpoint into ``root`` when one is due (every ``cfg.checkpoint_every``
    steps, at ``last_step``, or once ``cfg.time_limit_minutes`` since ``start`` (``time.time()``)
    have passed). True when the time limit was reached (the caller stops), having said how to resume."""
    out_of_time = bool(cfg.time_limit_minutes) and (time.time() - start) > 60 * cfg.time_limit_minutes
    if step % cfg.checkpoint_every == 0 or step == last_step or out_of_time:
        save_checkpoint(accelerator, os.path.join(root, f"step-{step:07d}"), {"step": step}, keep=cfg.keep_checkpoints)
    if out_of_time:
        accelerator.print(f"time limit reached at step {step}; rerun with --resume latest to continue")
    return out_of_time


def end_step(accelerator, cfg: TrainerRunConfig, log, record: dict, root: str, step: int, last_step: int, start: float) -> bool:
    """The end of a training step: ``record`` appended to the JSONL ``log`` (flushed), then
    :func:`checkpoint_when_due`. True when the time limit was reached (the caller stops)."""
    log.write(json.dumps(record) + "\n")
    log.flush()
    return checkpoint_when_due(accelerator, cfg, root, step, last_step, start)


def checkpoint_problem(folder: str) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None when it is): a missing or unreadable
    manifest, a missing file, or a file of another size than when it was written."""
    if folder.endswith(INCOMPLETE):
        return "it was being written when the run stopped"
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            manifest = json.load(f)
        files, _ = manifest["files"], manifest["info"]
    except FileNotFoundError:
        return f"it has no {MANIFEST} (written last, so the save never finished)"
    except (ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    for name, size in files.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes, {size} were written"
    return None


def checkpoint_info(folder: str) -> dict:
    with open(os.path.join(folder, MANIFEST)) as f:
        return json.load(f)["info"]


def complete_checkpoints(root: str, warn: bool = False) -> list[tuple[str, dict]]:
    """(folder, info) of every complete checkpoint in ``root``, oldest first (by name: the
    trainers name them by zero-padded step). ``warn``: say which folders were skipped and why."""
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    found = []
    for name in names:
        folder = os.path.join(root, name)
        if name.endswith(REPLACED):
            # killed between the two renames of a re-save: the old copy stands in until the new one exists
            if name[: -len(REPLACED)] in names:
                continue
        problem = checkpoint_problem(folder)
        if problem:
            if warn:
                warnings.warn(f"skipping the checkpoint {folder}: {problem}", stacklevel=2)
            continue
        found.append((folder, checkpoint_info(folder)))
    return found


def latest_checkpoint(root: str) -> tuple[str, dict] | None:
    """The newest complete checkpoint in ``root`` and its info (None when there is none),
    warning about each incomplete one skipped."""
    found = complete_checkpoints(root, warn=True)
    return found[-1] if found else None


def load_checkpoint(accelerator, resume: str, root: str) -> dict | None:
    """Resolve ``--resume`` ('latest' or a checkpoint folder; 'true' means 'latest', '' and
    'false' nothing), load it into ``accelerator``, return its info; None when there is nothing
    to resume. A folder that is not a complete checkpoint raises ValueError with one sentence."""
    if str(resume).lower() in ("", "false", "no", "0"):
        return None
    if str(resume).lower() in ("latest", "true", "yes", "1"):
        found = latest_checkpoint(root)
        if found is None:
            return None
        folder, info = found
    else:
        folder = resume
        problem = checkpoint_problem(folder) if os.path.isdir(folder) else "it does not exist"
        if problem:
            raise ValueError(f"--resume {folder} is not a complete checkpoint ({problem}); use 'latest' or another checkpoint folder.")
        info = checkpoint_info(folder)
    accelerator.load_state(folder)
    accelerator.print(f"resumed from {folder}")
    return info


def open_log(path: str, resumed_step: int):
    """Append to a JSONL training log, first dropping rows past ``resumed_step`` (a resumed run
    repeats those steps, so the log keeps one row per step)."""
    if os.path.exists(path):
        with open(path) as f:
            rows = [
                line for line in f if line.strip() and json.loads(line).get("step", json.loads(line).get("iteration", 0)) <= resumed_step
            ]
        with open(path, "w") as f:
            f.writelines(rows)
    return open(path, "a")


def resume_or_exit(accelerator, resume: str, root: str) -> dict | None:
    """:func:`load_checkpoint` for a training script: a checkpoint that cannot be resumed stops
    the script with its one sentence instead of a traceback."""
    try:
        return load_checkpoint(accelerator, resume, root)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def warmup_cosine(optimizer, warmup_steps: int, max_steps: int, floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then a cosine from the peak down to ``floor`` times
    the peak at ``max_steps`` (the trainers' learning-rate schedule; it resumes with the checkpoint)."""

    def factor(s: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(s / max(max_steps, 1), 1.0)))
        return min(1.0, (s + 1) / max(warmup_steps, 1)) * (floor + (1 - floor) * cosine)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def start_log(accelerator, output_dir: str, step: int, max_steps: int):
    """The JSONL log (``<output_dir>/train_log.jsonl``, rows past ``step`` dropped), the run's
    start time and its progress bar, for a run starting (or resumed) at ``step``."""
    os.makedirs(output_dir, exist_ok=True)
    log = open_log(os.path.join(output_dir, "train_log.jsonl"), step)
    bar = tqdm(total=max_steps, initial=step, disable=not accelerator.is_main_process)
    return log, time.time(), bar
