"""Measure the foundation: VAE reconstruction and decode time, teacher accuracy on the held-out
prompts (50 DDIM steps + CFG, and DDIM with 1, 2, 4 steps), and one teacher video end to end.

    python benchmarks/foundation.py [--model teacher] [--seeds 1] [--out benchmarks/results/foundation.json]

Writes JSON and a Markdown table beside it. Times hold only for the machine that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.evaluate import checker_figures, render_seeds, vae_quality  # noqa: E402
from dollar.model_specs import ModelSpec, load_pipeline  # noqa: E402
from dollar.reports import percent_ci  # noqa: E402


def heldout_accuracy(pipe, steps: int, guidance: float, seeds: int) -> dict:
    """The checker's accuracy on the 64 held-out prompts under evaluation seeds 0 .. seeds - 1."""
    prompts = world.heldout_prompt_specs()
    spec = ModelSpec(pipe.name_or_path, pipe.name_or_path, steps=steps, guidance=guidance)
    videos = render_seeds(pipe, spec, prompts, range(seeds))
    return {"steps": steps, "guidance_scale": guidance, "seeds": seeds, "prompts": len(prompts), **checker_figures(videos, prompts * seeds)}


def end_to_end(pipe, runs: int, guidance: float) -> dict:
    """One 50-step video with CFG, batch 1: text encoding + denoising + decoding, wall clock."""
    totals, parts = [], []
    for i in range(runs + 1):
        start = time.perf_counter()
        out = pipe(
            "a red circle moving left on a black background",
            num_inference_steps=50,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(i),
        )
        total = time.perf_counter() - start
        if i:  # the first run warms up
            totals.append(total)
            parts.append(out.timings)
    return {
        "runs": runs,
        "end_to_end_s_median": statistics.median(totals),
        "end_to_end_s_max": max(totals),
        "denoising_s_median": statistics.median(p["denoising_s"] for p in parts),
        "decoding_s_median": statistics.median(p["decoding_s"] for p in parts),
        "text_encoding_s_median": statistics.median(p["text_encoding_s"] for p in parts),
        "nfe": parts[0]["nfe"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", default="teacher")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument(
        "--guidance-sweep", default="1.0,2.5,4.5,7.5", help="teacher-50 guidance scales also measured (comma list, '' for none)"
    )
    parser.add_argument("--sweep-seeds", type=int, default=1)
    parser.add_argument("--vae-videos", type=int, default=64)
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/foundation.json")
    args = parser.parse_args()

    pipe = load_pipeline(args.model)
    guidance = pipe.config.default_guidance_scale if args.guidance is None else args.guidance
    result = {
        "model": args.model,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "vae": vae_quality(pipe.vae, args.vae_videos),
        "latency_teacher_50": end_to_end(pipe, args.latency_runs, guidance),
        "heldout": [heldout_accuracy(pipe, 50, guidance, args.seeds)]
        + [heldout_accuracy(pipe, k, guidance, args.seeds) for k in (1, 2, 4)],
        "guidance_sweep": [heldout_accuracy(pipe, 50, float(g), args.sweep_seeds) for g in args.guidance_sweep.split(",") if g],
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(to_markdown(result))
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    lines = [
        f"Held-out prompts ({r['heldout'][0]['prompts']} unseen colour-shape-motion combinations, "
        f"{r['heldout'][0]['seeds']} seed(s) each), judged by the analytic checker:",
        "",
        "| sampler | steps | guidance scale | NFE | colour acc. [95% CI] | motion acc. [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for h in r["heldout"]:
        name = "teacher DDIM + CFG" if h["steps"] == 50 else f"teacher DDIM-{h['steps']} + CFG"
        nfe = h["steps"] * (2 if h["guidance_scale"] > 1 else 1)
        lines.append(f"| {name} | {h['steps']} | {h['guidance_scale']} | {nfe} | {percent_ci(h, 'colour')} | {percent_ci(h, 'motion')} |")
    if r.get("guidance_sweep"):
        seeds = r["guidance_sweep"][0]["seeds"]
        lines += ["", f"Teacher, 50 DDIM steps, by guidance scale ({seeds} seed(s); diffusers convention, METHOD.md's w = scale - 1):", ""]
        lines += ["| guidance scale | colour acc. | motion acc. |", "|---|---|---|"]
        lines += [f"| {h['guidance_scale']} | {percent_ci(h, 'colour')} | {percent_ci(h, 'motion')} |" for h in r["guidance_sweep"]]
    v, lat = r["vae"], r["latency_teacher_50"]
    lines += [
        "",
        f"VAE: {v['compression']:.0f}x compression (latent {v['latent_shape']}), reconstruction PSNR "
        f"{v['psnr_db_mean']:.2f} dB mean / {v['psnr_db_min']:.2f} dB worst over {v['videos']} held-out clips, "
        f"decode {1000 * v['decode_s_median']:.0f} ms per video (median). The checker on the real held-out clips: "
        f"colour {100 * v['checker_on_real']['colour']:.1f}%, motion {100 * v['checker_on_real']['motion']:.1f}%; "
        f"on their VAE reconstructions: colour {100 * v['checker_on_reconstructions']['colour']:.1f}%, "
        f"motion {100 * v['checker_on_reconstructions']['motion']:.1f}% (the ceiling a generator in this latent space can reach)."
        + (
            f" Shape, read by the attribute probe: {100 * v['probe_shape_on_real']:.1f}% on the real clips, "
            f"{100 * v['probe_shape_on_reconstructions']:.1f}% on their reconstructions (the ceiling for shape)."
            if "probe_shape_on_real" in v
            else ""
        ),
        "",
        f"One 50-step teacher video with CFG ({lat['nfe']} network evaluations), end to end: "
        f"{lat['end_to_end_s_median']:.2f} s median, {lat['end_to_end_s_max']:.2f} s worst of {lat['runs']} "
        f"(text {1000 * lat['text_encoding_s_median']:.0f} ms, denoising {lat['denoising_s_median']:.2f} s, "
        f"decoding {1000 * lat['decoding_s_median']:.0f} ms) on {r['machine']['cpu_threads']} CPU threads.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
