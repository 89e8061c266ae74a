"""Which model, sampled how: the ``[label=]model[:settings]`` specs of the command lines, and the
one way to load a pipeline for them.

    teacher                      the bundled teacher, its own defaults
    teacher:steps=4              DDIM on a 4-step grid
    DPM++ 8=teacher:steps=8,scheduler=dpm++
    CD-only 4=runs/cd-4          a folder, named "CD-only 4" in the results
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCHEDULERS = ("ddim", "dpm++")


@dataclass(frozen=True)
class ModelSpec:
    """A model and how to sample it; ``None`` settings take the pipeline's defaults."""

    label: str
    model: str
    steps: int | None = None
    guidance: float | None = None
    scheduler: str = "ddim"


def parse_model_spec(text: str) -> ModelSpec:
    """``[label=]name[:steps=K,guidance=G,scheduler=ddim|dpm++]`` -> ModelSpec; the label
    (default: the spec text) names the model in the results, e.g. ``CD-only 4=runs/cd-4``."""
    label, eq, rest = text.partition("=")
    if eq and ":" not in label and rest:
        label, text = label.strip(), rest
        if not label:
            raise ValueError(f"Model spec '{label}={text}' has an empty label; write e.g. 'CD-only 4=runs/cd-4'.")
    else:
        label = text
    name, _, options = text.partition(":") if "=" in text.partition(":")[2] else (text, "", "")
    if not name:
        raise ValueError(f"Model spec '{text}' names no model; write e.g. teacher:steps=4.")
    kwargs: dict = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        try:
            if key == "steps":
                kwargs["steps"] = int(value)
                if kwargs["steps"] < 1:
                    raise ValueError
            elif key == "guidance":
                kwargs["guidance"] = float(value)
                if kwargs["guidance"] < 0:
                    raise ValueError
            elif key == "scheduler":
                if value not in SCHEDULERS:
                    raise ValueError
                kwargs["scheduler"] = value
            else:
                raise KeyError(key)
        except (ValueError, KeyError):
            raise ValueError(
                f"Bad setting '{item}' in model spec '{text}'; use steps=<positive int>, guidance=<float >= 0>, scheduler=ddim|dpm++."
            ) from None
    return ModelSpec(label=label, model=name, **kwargs)


def quiet_command(threads: int | None = None) -> None:
    """What a command that prints its own lines sets first: diffusers' and transformers' progress
    bars off (loading bars would bury its output), and ``threads`` torch CPU threads (None: torch's default)."""
    import diffusers.utils.logging as diffusers_logging
    import torch
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)


_LOADED: dict = {}  # the process's pipelines, when the caller keeps no cache of its own
_LOCK = threading.Lock()


def load_pipeline(model: ModelSpec | str, cache: dict | None = None, device: str | torch.device | None = None):
    """The DollarPipeline of ``model``, loaded once per ``cache`` (default: once per process) and
    shared by every spec of the same model. A ModelSpec gets its scheduler set on the shared
    pipeline (DDIM or DPM-Solver++ from the model's own config); a plain name or folder keeps the
    model's own scheduler. ``device``: where a newly loaded pipeline is moved (default: left on the CPU)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler  # here: reading a spec needs neither torch nor diffusers

    from dollar.pipeline import DollarPipeline

    cache = _LOADED if cache is None else cache
    name = model if isinstance(model, str) else model.model
    with _LOCK:
        if name not in cache:
            pipe = DollarPipeline.from_pretrained(name)
            pipe.set_progress_bar_config(disable=True)
            if device is not None:
                pipe = pipe.to(device)
            cache[name] = (pipe, pipe.scheduler)
        pipe, original = cache[name]
        if isinstance(model, str):
            pipe.scheduler = original
        elif model.scheduler == "dpm++":
            if pipe.is_student:
                raise ValueError(f"'{model.label}': a distilled student samples on its own grid; scheduler=dpm++ is for teachers.")
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config, algorithm_type="dpmsolver++")
        else:
            pipe.scheduler = original if isinstance(original, DDIMScheduler) else DDIMScheduler.from_config(original.config)
    return pipe
