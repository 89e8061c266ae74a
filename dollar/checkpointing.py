"""Training bookkeeping shared by the trainers: accelerate checkpoints with their step, and
JSONL logs that stay one row per step across resumes."""

from __future__ import annotations

import json
import os


def resume_step(accelerator, ckpt_dir: str) -> int:
    """Load the accelerate state in ``ckpt_dir`` and return its step (0 when there is none)."""
    if not os.path.isdir(ckpt_dir):
        return 0
    accelerator.load_state(ckpt_dir)
    with open(os.path.join(ckpt_dir, "step.json")) as f:
        step = json.load(f)["step"]
    accelerator.print(f"resumed from step {step}")
    return step


def save_checkpoint(accelerator, ckpt_dir: str, step: int) -> None:
    accelerator.save_state(ckpt_dir)
    if accelerator.is_main_process:
        with open(os.path.join(ckpt_dir, "step.json"), "w") as f:
            json.dump({"step": step}, f)


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
