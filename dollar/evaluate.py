"""Evaluate text-to-video models on the world, VBench-style: render, score, summarize.

    python -m dollar.evaluate --models teacher teacher:steps=4 real --seeds 0 1 2 --out eval.json

Each model renders every prompt once per seed. Figures (each with its mean and Student-t 95%
interval over seeds):

* semantic: colour and motion accuracy from the analytic checker (``dollar.checker``) and
  from the attribute probe; shape (probe only: the checker has no shape); composition on
  two-object prompts (every object's colour, motion and shape right);
* quality: subject consistency (probe appearance features of the object, VBench formula),
  background consistency (pixel cosine), temporal flicker, motion smoothness, dynamic degree
  (optical flow), imaging quality (sharpness);
* distribution: Frechet distance in probe-feature space to real world clips of the same
  prompts (the world's "FVD"), and diversity as the Vendi score over the seeds of one prompt,
  on pixels and on probe features (interval over prompts);
* aggregate: quality, semantic and total scores (``AGGREGATE_WEIGHTS``).

A model is a spec (:mod:`dollar.model_specs`): a bundled name or folder with optional settings,
``teacher:steps=4``, ``teacher:steps=4,scheduler=dpm++``, ``student-4``, ``teacher:guidance=1``;
``real`` scores the world's own clips (the ceiling). Prompts are the world's
(:class:`dollar.world.PromptSpec`). :func:`render` is the one renderer of prompts under an
evaluation seed: the benchmarks render through it too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import torch

from dollar import metrics, world
from dollar.arg_types import nonnegative_int, positive_int
from dollar.checker import check_video, checker_accuracy, object_mask
from dollar.model_specs import ModelSpec, load_pipeline, parse_model_spec, quiet_command
from dollar.reports import accuracy_cells, figure_cell, markdown_row, write_results
from dollar.rewards import motion_reward, sharpness_reward
from dollar.world import PromptSpec

DEFAULT_PROBE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "probe")
REAL = "real"

# VBench-style aggregate. Quality dimensions are in [0, 1]; dynamic degree and imaging quality
# enter as their ratio to the real clips of the same prompts, capped at 1. VBench weighs dynamic
# degree 0.5 and the rest 1, and the total as (4 quality + 1 semantic) / 5.
AGGREGATE_WEIGHTS = {
    "quality": {
        "subject_consistency": 1.0,
        "background_consistency": 1.0,
        "temporal_flicker": 1.0,
        "motion_smoothness": 1.0,
        "dynamic_degree_vs_real": 0.5,
        "imaging_quality_vs_real": 1.0,
    },
    "semantic": {"colour": 1.0, "motion": 1.0, "shape": 1.0, "composition": 1.0},
    "total": {"quality": 4.0, "semantic": 1.0},
}


# --- rendering ----------------------------------------------------------------------------


def video_seed(seed: int, index: int) -> int:
    """The generator seed of prompt ``index`` under evaluation seed ``seed``."""
    return seed * 100_000 + index


def render(pipe, spec: ModelSpec | None, prompts: list[PromptSpec], seed: int, batch_size: int = 16) -> tuple[np.ndarray, dict]:
    """Videos uint8 [N, T, H, W, 3] of every prompt under ``seed``, and summed timings.
    ``pipe=None`` renders the world's own clips of the prompts."""
    timings = {"text_encoding_s": 0.0, "denoising_s": 0.0, "decoding_s": 0.0, "nfe_per_video": 0}
    if pipe is None:
        return np.stack([world.render(world.scene_for_prompt(p, video_seed(seed, i))) for i, p in enumerate(prompts)]), timings
    videos = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(video_seed(seed, start + i)) for i in range(len(chunk))]
        out = pipe(
            [p.prompt for p in chunk],
            num_inference_steps=spec.steps if spec else None,
            guidance_scale=spec.guidance if spec else None,
            generator=generators,
            output_type="np",
        )
        videos.append(out.frames)
        for key in ("text_encoding_s", "denoising_s", "decoding_s"):
            timings[key] += out.timings[key]
        timings["nfe_per_video"] = out.timings["nfe"]
    return np.concatenate(videos), timings


def render_seeds(pipe, spec: ModelSpec | None, prompts: list[PromptSpec], seeds, batch_size: int = 16) -> np.ndarray:
    """Videos uint8 [len(seeds) * N, T, H, W, 3]: every prompt under each of ``seeds`` in turn."""
    return np.concatenate([render(pipe, spec, prompts, seed, batch_size)[0] for seed in seeds])


# --- the VAE ------------------------------------------------------------------------------


def vae_quality(vae, clips: int = 64, seeds: Sequence[int] = (3,), two_object_scenes: int = 0, probe_path: str = DEFAULT_PROBE) -> dict:
    """What a generator in this VAE's latent space can reach: reconstruction PSNR on ``clips``
    held-out world clips (split 'eval', one and two objects alternating) and decode time; the
    checker (colour, motion) and the attribute probe (shape; composition on ``two_object_scenes``
    two-object prompts) on the real clips of the held-out prompts under ``seeds`` and on their
    reconstructions."""
    from dollar.data import video_to_tensor
    from dollar.models.probe import AttributeProbe, attribute_accuracy
    from dollar.pipeline import postprocess_video

    def roundtrip(frames: np.ndarray) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, float]:
        x = video_to_tensor(frames)[None].to(vae.dtype)
        z = vae.encode(x).latent_dist.mode()
        start = time.perf_counter()
        recon = vae.decode(z).sample.float().clamp(-1, 1)
        return postprocess_video(recon, "np")[0], x.float(), recon, time.perf_counter() - start

    scores, decode_times = [], []
    with torch.no_grad():
        for seed in range(clips):
            frames, _, _ = world.make_sample(50_000 + seed, level=1 + seed % 2, split="eval")
            _, x, recon, seconds = roundtrip(frames)
            decode_times.append(seconds)
            scores.append(metrics.psnr(recon, x))
        z = vae.encode(x.to(vae.dtype)).latent_dist.mode()
        prompts = [p for _ in seeds for p in world.heldout_prompts()]
        real = [world.render(world.make_scene(p.objects, p.background, seed=s)) for s in seeds for p in world.heldout_prompts()]
        recon = [roundtrip(v)[0] for v in real]
        pairs = world.two_object_prompt_specs(two_object_scenes)
        real2 = [world.render(world.scene_for_prompt(p, seed=i)) for i, p in enumerate(pairs)]
        recon2 = [roundtrip(v)[0] for v in real2]
    objects = [p.objects for p in prompts]
    result = {
        "checker_on_real": checker_accuracy(real, objects),
        "checker_on_reconstructions": checker_accuracy(recon, objects),
    }
    # Shape is read by the attribute probe (the checker has no shape): how much of it survives the VAE?
    if os.path.exists(os.path.join(probe_path, "config.json")):
        probe = AttributeProbe.from_pretrained(probe_path).eval()
        result["probe_shape_on_real"] = attribute_accuracy(probe, np.stack(real), objects)["shape"]
        result["probe_shape_on_reconstructions"] = attribute_accuracy(probe, np.stack(recon), objects)["shape"]
        result["probe_videos"] = len(real)
        if pairs:
            two = [[dict(o) for o in p.objects] for p in pairs]
            result["probe_on_two_object_real"] = attribute_accuracy(probe, np.stack(real2), two)
            result["probe_on_two_object_reconstructions"] = attribute_accuracy(probe, np.stack(recon2), two)
    return {
        **result,
        "videos": clips,
        "psnr_db_mean": float(np.mean(scores)),
        "psnr_db_min": float(min(scores)),
        "decode_s_median": float(np.median(decode_times)),
        "latent_shape": tuple(z.shape[1:]),
        "compression": x[0].numel() / z[0].numel(),
    }


# --- scoring ------------------------------------------------------------------------------


def checker_figures(videos, prompts: list[PromptSpec]) -> dict:
    """The checker's colour and motion accuracy over ``videos`` of ``prompts`` (one per video),
    each with its 95% Wilson interval."""
    acc = checker_accuracy(videos, [p.objects for p in prompts])
    return {**acc, **{f"{k}_wilson95": metrics.wilson_interval(acc[k], acc["n"]) for k in ("colour", "motion")}}


def score_videos(videos: np.ndarray, prompts: list[PromptSpec], probe=None) -> dict[str, list]:
    """Per-video (and per-object) verdicts and measurements of one set of videos."""
    from dollar.models.probe import SPEEDLESS_MOTIONS

    masks = np.stack([object_mask(v) for v in videos])
    names = ("colour", "shape", "motion", "size", "speed")
    out: dict[str, list] = {k: [] for k in ("checker_colour", "checker_motion", "composition", "composition_checker", "probe_composition")}
    out.update({f"probe_{name}": [] for name in names})
    reads = probe.read_objects(videos, [[o.get("colour") for o in p.objects] for p in prompts]) if probe is not None else None
    for i, (video, p) in enumerate(zip(videos, prompts)):
        verdicts = check_video(video, list(p.objects)) if p.objects else []
        checker_all, probe_all = True, True
        for j, (obj, v) in enumerate(zip(p.objects, verdicts)):
            for name, ok in (("colour", v.colour_ok), ("motion", v.motion_ok)):
                if obj.get(name):
                    out[f"checker_{name}"].append(ok)
                    checker_all &= ok
            if reads is None:
                continue
            for name in names:
                if obj.get(name) and not (name == "speed" and obj.get("motion") in SPEEDLESS_MOTIONS):
                    ok = reads[i][j][name] == obj[name]
                    out[f"probe_{name}"].append(ok)
                    probe_all &= ok or name in ("size", "speed")
        if len(p.objects) >= 2:
            # every object's colour and motion (checker) and shape (probe) right at once
            out["composition_checker"].append(checker_all)
            if reads is not None:
                shapes_ok = all(reads[i][j]["shape"] == o["shape"] for j, o in enumerate(p.objects) if o.get("shape"))
                out["composition"].append(checker_all and shapes_ok)
                out["probe_composition"].append(probe_all)
    out["background_consistency"] = [metrics.background_consistency(v, m) for v, m in zip(videos, masks)]
    out["temporal_flicker"] = [metrics.temporal_flicker(v, m) for v, m in zip(videos, masks)]
    out["motion_smoothness"] = [metrics.motion_smoothness(v) for v in videos]
    out["dynamic_degree"] = [float(x) for x in motion_reward(videos)]
    out["imaging_quality"] = [float(x) for x in sharpness_reward(videos)]
    if probe is not None:
        frame_feats = probe.frame_features(videos, masks)
        out["subject_consistency"] = [metrics.temporal_consistency(f) for f in frame_feats]
        out["features"] = list(probe.features(videos))
    return out


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


# The range each figure can take (intervals are clipped to it); the rest lie in [0, 1].
FIGURE_BOUNDS = {"dynamic_degree": (0.0, None), "imaging_quality": (0.0, None), "fvd_probe": (0.0, None)}


def _figure(per_seed: list, key: str) -> dict:
    return {**metrics.mean_interval(per_seed, bounds=FIGURE_BOUNDS.get(key, (0.0, 1.0))), "per_seed": per_seed}


def _weighted(values: dict, weights: dict) -> float | None:
    used = {k: w for k, w in weights.items() if values.get(k) is not None}
    return sum(values[k] * w for k, w in used.items()) / sum(used.values()) if used else None


def summarize(scores_by_seed: list[dict], reference: dict, prompts: list[PromptSpec]) -> dict:
    """Figures of one model from its per-seed scores; ``reference``: scores of real clips."""
    ref_dd = _mean(reference["dynamic_degree"])
    ref_iq = _mean(reference["imaging_quality"])
    per_seed: dict[str, list] = {}
    for s in scores_by_seed:
        row = {
            "colour": _mean(s["checker_colour"]),
            "motion": _mean(s["checker_motion"]),
            "shape": _mean(s["probe_shape"]),
            "composition": _mean(s["composition"]),
            "composition_checker": _mean(s["composition_checker"]),
            "probe_composition": _mean(s["probe_composition"]),
            **{f"probe_{k}": _mean(s[f"probe_{k}"]) for k in ("colour", "motion", "size", "speed")},
            **{k: _mean(s.get(k, [])) for k in ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness")},
            "dynamic_degree": _mean(s["dynamic_degree"]),
            "imaging_quality": _mean(s["imaging_quality"]),
        }
        row["dynamic_degree_vs_real"] = min(row["dynamic_degree"] / ref_dd, 1.0) if ref_dd > 1e-6 else 1.0
        row["imaging_quality_vs_real"] = min(row["imaging_quality"] / ref_iq, 1.0) if ref_iq > 1e-6 else 1.0
        row["fvd_probe"] = metrics.frechet_distance(np.stack(s["features"]), np.stack(reference["features"])) if "features" in s else None
        row["quality_score"] = _weighted(row, AGGREGATE_WEIGHTS["quality"])
        row["semantic_score"] = _weighted(row, AGGREGATE_WEIGHTS["semantic"])
        row["total_score"] = _weighted({"quality": row["quality_score"], "semantic": row["semantic_score"]}, AGGREGATE_WEIGHTS["total"])
        for k, v in row.items():
            per_seed.setdefault(k, []).append(v)
    groups = {
        "semantic": (
            "colour",
            "motion",
            "shape",
            "composition",
            "composition_checker",
            "probe_colour",
            "probe_motion",
            "probe_size",
            "probe_speed",
            "probe_composition",
        ),
        "quality": (
            "subject_consistency",
            "background_consistency",
            "temporal_flicker",
            "motion_smoothness",
            "dynamic_degree",
            "dynamic_degree_vs_real",
            "imaging_quality",
            "imaging_quality_vs_real",
        ),
        "distribution": ("fvd_probe",),
        "aggregate": ("quality_score", "semantic_score", "total_score"),
    }
    result = {g: {k: _figure(per_seed[k], k) for k in keys} for g, keys in groups.items()}
    result["distribution"].update(diversity(scores_by_seed, prompts))
    return result


def diversity(scores_by_seed: list[dict], prompts: list[PromptSpec]) -> dict:
    """Vendi score over the seeds of each prompt, on pixels and on probe features; mean and
    interval over prompts. Needs at least two seeds."""
    if len(scores_by_seed) < 2:
        return {"vendi_pixels": metrics.mean_interval([]), "vendi_features": metrics.mean_interval([])}
    pix, feat = [], []
    for i in range(len(prompts)):
        pix.append(metrics.vendi_score(metrics.pixel_vectors(np.stack([s["videos"][i] for s in scores_by_seed]))))
        if "features" in scores_by_seed[0]:
            feat.append(metrics.vendi_score(np.stack([s["features"][i] for s in scores_by_seed])))
    return {
        "vendi_pixels": metrics.mean_interval(pix, bounds=(1.0, None)),
        "vendi_features": metrics.mean_interval(feat, bounds=(1.0, None)),
    }


def evaluate(
    models: Sequence[str | ModelSpec] | Mapping[str, object],
    prompts: Sequence,
    seeds: Sequence[int],
    probe=None,
    reference_per_prompt: int = 4,
    batch_size: int = 16,
    log=None,
) -> dict:
    """Render and score every model on ``prompts`` x ``seeds``.

    ``models``: spec strings / ModelSpecs (``"teacher:steps=4"``, ``"real"``), or a mapping
    label -> loaded DollarPipeline (sampled with its defaults) or spec. ``probe``: an
    AttributeProbe, a folder, or None (probe figures are then null). Returns a JSON-ready dict.
    """
    start = time.perf_counter()
    say = log or (lambda msg: None)
    prompts = world.as_prompt_specs(prompts)
    if not prompts:
        raise ValueError("No prompts to evaluate; give at least one.")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"Seeds must be a non-empty list of integers >= 0, got {seeds}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"Seeds must be distinct, got {seeds}.")
    if reference_per_prompt < 1:
        raise ValueError(f"reference_per_prompt must be >= 1, got {reference_per_prompt}.")
    if isinstance(probe, str):
        from dollar.models.probe import AttributeProbe

        probe = AttributeProbe.from_pretrained(probe).eval()
    entries = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    if not entries:
        raise ValueError("No models to evaluate; give at least one (e.g. teacher).")
    # load everything first, so that a bad model name fails before any rendering
    cache: dict = {}
    jobs = []
    for label, m in entries:
        if isinstance(m, str | ModelSpec):
            spec = parse_model_spec(m) if isinstance(m, str) else m
            spec = ModelSpec(label or spec.label, spec.model, spec.steps, spec.guidance, spec.scheduler)
            jobs.append((spec, None if spec.model == REAL else load_pipeline(spec, cache), True))
        else:
            jobs.append((ModelSpec(label, label), m, False))

    say(f"rendering {reference_per_prompt} real reference clip(s) per prompt")
    ref_videos = np.stack(
        [
            world.render(world.scene_for_prompt(p, 10**9 + r * 100_000 + i))
            for r in range(reference_per_prompt)
            for i, p in enumerate(prompts)
        ]
    )
    reference = score_videos(ref_videos, prompts * reference_per_prompt, probe)
    result = {
        "config": {
            "prompts": len(prompts),
            "two_object_prompts": sum(len(p.objects) >= 2 for p in prompts),
            "seeds": seeds,
            "reference_clips": len(ref_videos),
            "probe": getattr(getattr(probe, "config", None), "_name_or_path", None) if probe is not None else None,
            "aggregate_weights": AGGREGATE_WEIGHTS,
            "threads": torch.get_num_threads(),
        },
        "models": {},
    }
    for spec, pipe, from_spec in jobs:
        model_start = time.perf_counter()
        by_seed, timings = [], []
        if pipe is not None and from_spec:
            pipe = load_pipeline(spec, cache)  # re-apply this spec's scheduler (pipelines are shared)
        for seed in seeds:
            t0 = time.perf_counter()
            videos, t = render(pipe, spec, prompts, seed, batch_size)
            t["render_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores = score_videos(videos, prompts, probe)
            scores["videos"] = videos  # kept for the pixel diversity across seeds
            t["score_s"] = time.perf_counter() - t0
            by_seed.append(scores)
            timings.append(t)
            say(f"{spec.label} seed {seed}: rendered in {t['render_s']:.1f} s, scored in {t['score_s']:.1f} s")
        result["models"][spec.label] = {
            "spec": asdict(spec),
            "videos": len(prompts) * len(seeds),
            "nfe_per_video": timings[0]["nfe_per_video"],
            "timings_s": {
                k: float(sum(t[k] for t in timings)) for k in ("text_encoding_s", "denoising_s", "decoding_s", "render_s", "score_s")
            },
            "wall_s": time.perf_counter() - model_start,
            **summarize(by_seed, reference, prompts),
        }
    result["reference"] = {"dynamic_degree": _mean(reference["dynamic_degree"]), "imaging_quality": _mean(reference["imaging_quality"])}
    result["wall_s"] = time.perf_counter() - start
    return result


# --- command line -----------------------------------------------------------------------


def to_markdown(result: dict) -> str:
    lines = [
        "| model | NFE | colour % | motion % | shape % | composition % | subject cons. | background cons. | flicker | smoothness | dynamic deg. | sharpness | FVD (probe) | Vendi px | Vendi feat | quality | semantic | total |",
        "|" + "---|" * 18,
    ]
    for label, m in result["models"].items():
        s, q, d, a = m["semantic"], m["quality"], m["distribution"], m["aggregate"]
        lines.append(
            markdown_row(
                [
                    label,
                    str(m["nfe_per_video"]),
                    *accuracy_cells(s),
                    *(
                        figure_cell(q[k])
                        for k in ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness")
                    ),
                    figure_cell(q["dynamic_degree"], digits=2),
                    figure_cell(q["imaging_quality"], digits=2),
                    figure_cell(d["fvd_probe"], digits=2),
                    figure_cell(d["vendi_pixels"], digits=2),
                    figure_cell(d["vendi_features"], digits=2),
                    *(figure_cell(a[k]) for k in ("quality_score", "semantic_score", "total_score")),
                ]
            )
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dollar.evaluate", description=__doc__.strip().splitlines()[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=["teacher"],
        help="model specs, each [label=]model[:settings]: teacher, teacher:steps=4, teacher:steps=4,scheduler=dpm++, student-4, a folder, real",
    )
    p.add_argument("--seeds", nargs="+", type=nonnegative_int, default=[0, 1, 2])
    p.add_argument("--num-prompts", type=positive_int, default=64, help="how many of the 64 held-out single-object prompts")
    p.add_argument("--pairs", type=nonnegative_int, default=16, help="two-object prompts added (composition)")
    p.add_argument("--prompt-file", default=None, help="a text file, one prompt per line, used instead of the held-out prompts")
    p.add_argument("--probe", default=DEFAULT_PROBE, help="attribute probe folder, or 'none'")
    p.add_argument("--reference-per-prompt", type=positive_int, default=4, help="real clips per prompt for the Frechet distance")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="write the JSON here (and a Markdown table beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_command(args.threads)
    try:
        if args.prompt_file:
            if not os.path.isfile(args.prompt_file):
                raise FileNotFoundError(f"The prompt file {args.prompt_file} does not exist; give a text file with one prompt per line.")
            with open(args.prompt_file) as f:
                prompts = [world.prompt_spec(line.strip()) for line in f if line.strip()]
            if not prompts:
                raise ValueError(f"The prompt file {args.prompt_file} has no prompts; write one prompt per line.")
        else:
            prompts = world.heldout_prompt_specs(args.num_prompts) + world.two_object_prompt_specs(args.pairs)
        probe = None
        if args.probe != "none":
            if not os.path.exists(os.path.join(args.probe, "config.json")):
                raise FileNotFoundError(
                    f"No attribute probe at {args.probe}; train one with python train/train_probe.py, or pass --probe none to skip the probe figures."
                )
            from dollar.models.probe import AttributeProbe

            probe = AttributeProbe.from_pretrained(args.probe).eval()
        if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise FileNotFoundError(f"The output folder of {args.out} does not exist; create it first.")
        result = evaluate(
            args.models, prompts, args.seeds, probe, args.reference_per_prompt, args.batch_size, log=lambda m: print(m, file=sys.stderr)
        )
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["config"]["probe"] = None if args.probe == "none" else args.probe
    table = to_markdown(result)
    if args.out:
        write_results(args.out, result, table)
    print(table)
    print(f"{sum(m['videos'] for m in result['models'].values())} videos evaluated in {result['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
