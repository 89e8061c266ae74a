"""Write videos for VBench: every prompt of a VBench prompt list, sampled ``--samples`` times.

    python -m dollar.vbench_export --model teacher --out vbench_videos/teacher
    python -m dollar.vbench_export --model student-4 --dimension subject_consistency color --out ...
    python -m dollar.vbench_export --model teacher --prompt-file my_prompts.txt --out ...

Files are named as VBench looks them up, ``{prompt}-{index}.mp4`` with index 0..samples-1, all in
one folder (VBench's standard mode). Prompts come from ``VBench_full_info.json`` of the installed
``vbench`` package, or from ``--prompt-file``: that JSON format (a list of ``{"prompt_en",
"dimension"}``) or a text file with one prompt per line. The seed of sample ``index`` of prompt
``i`` is ``seed + i * samples + index``, so every video can be regenerated on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from dollar.arg_types import nonnegative_int, positive_int
from dollar.model_specs import load_pipeline, parse_model_spec, quiet_command

VBENCH_SAMPLES = 5  # VBench samples five videos per prompt


def vbench_prompt_file() -> str | None:
    """``VBench_full_info.json`` inside the installed vbench package, if there is one."""
    import importlib.util

    spec = importlib.util.find_spec("vbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "VBench_full_info.json")
    return path if os.path.isfile(path) else None


def read_prompts(path: str, dimensions: list[str] | None = None) -> list[str]:
    """Prompts of a VBench full-info JSON (filtered to ``dimensions``) or of a text file, in
    order, each once."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The prompt file {path} does not exist; give VBench_full_info.json or a text file, one prompt per line.")
    if path.endswith(".json"):
        with open(path) as f:
            try:
                entries = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); give VBench_full_info.json or a text file.") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "prompt_en" in e for e in entries):
            raise ValueError(f"{path} is not in VBench's format: a JSON list of objects with a 'prompt_en' key.")
        if dimensions:
            known = {d for e in entries for d in e.get("dimension", [])}
            unknown = sorted(set(dimensions) - known)
            if unknown:
                raise ValueError(f"Unknown VBench dimension(s) {', '.join(unknown)}; this file has {', '.join(sorted(known))}.")
            entries = [e for e in entries if set(e.get("dimension", [])) & set(dimensions)]
        prompts = [e["prompt_en"].strip() for e in entries]
    else:
        if dimensions:
            raise ValueError("--dimension needs a VBench JSON prompt file; a text file has no dimensions.")
        with open(path) as f:
            prompts = [line.strip() for line in f]
    prompts = list(dict.fromkeys(p for p in prompts if p))
    if not prompts:
        raise ValueError(f"{path} lists no prompts.")
    return prompts


def video_path(folder: str, prompt: str, index: int) -> str:
    """VBench's file name for sample ``index`` of ``prompt``."""
    if os.sep in prompt or (os.altsep and os.altsep in prompt):
        raise ValueError(f"The prompt {prompt!r} contains a path separator and cannot be a VBench file name.")
    return os.path.join(folder, f"{prompt}-{index}.mp4")


def export(
    pipe,
    spec,
    prompts: list[str],
    folder: str,
    samples: int = VBENCH_SAMPLES,
    seed: int = 0,
    batch_size: int = 8,
    skip_existing: bool = True,
    log=None,
) -> list[str]:
    """Generate and write every (prompt, index) video; returns the paths written."""
    from dollar.video import save_video

    jobs = [(i, p, k) for i, p in enumerate(prompts) for k in range(samples)]
    jobs = [(i, p, k) for i, p, k in jobs if not (skip_existing and os.path.exists(video_path(folder, p, k)))]
    written = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + i * samples + k) for i, _, k in chunk]
        out = pipe([p for _, p, _ in chunk], num_inference_steps=spec.steps, guidance_scale=spec.guidance, generator=generators)
        for (_, p, k), frames in zip(chunk, out.frames):
            written.append(save_video(frames, video_path(folder, p, k)))
        if log:
            log(f"{len(written)}/{len(jobs)} videos")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dollar.vbench_export", description=__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="teacher", help="model spec, [label=]model[:settings] (dollar.model_specs), e.g. teacher:steps=4")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--prompt-file", default=None, help="VBench_full_info.json or a text file (default: the installed vbench package's)")
    p.add_argument("--dimension", nargs="+", default=None, help="only the prompts of these VBench dimensions")
    p.add_argument("--samples", type=positive_int, default=VBENCH_SAMPLES)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--overwrite", action="store_true", help="regenerate videos that already exist")
    args = p.parse_args(argv)
    quiet_command()
    try:
        path = args.prompt_file or vbench_prompt_file()
        if path is None:
            raise FileNotFoundError("VBench is not installed (pip install vbench) and no --prompt-file was given; give one of them.")
        prompts = read_prompts(path, args.dimension)[: args.limit]
        for prompt in prompts:
            video_path(args.out, prompt, 0)  # fail on an unusable name before generating anything
        spec = parse_model_spec(args.model)
        pipe = load_pipeline(spec)
        os.makedirs(args.out, exist_ok=True)
        written = export(
            pipe,
            spec,
            prompts,
            args.out,
            args.samples,
            args.seed,
            args.batch_size,
            not args.overwrite,
            log=lambda m: print(m, file=sys.stderr),
        )
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} videos for {len(prompts)} prompts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
