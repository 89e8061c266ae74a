"""The shapes issue's table: does the embedded default keep, draw and compose shapes?

    python benchmarks/shapes.py                       # bundled models -> benchmarks/results/shapes.json + shapes.md
    python benchmarks/shapes.py --teacher runs/teacher --students runs/s1 runs/s2 runs/s4 --out /tmp/shapes.json

Every figure is a proportion of videos (or objects) with its 95% Wilson interval:
- VAE: reconstruction PSNR on held-out clips and the attribute probe's shape accuracy on the
  reconstructions of the held-out prompts' real clips (``dollar.evaluate.vae_quality``).
- teacher (its default steps and guidance) and students on the 64 held-out single-object prompts:
  checker colour / motion, probe shape; on two-object prompts: composition (both objects' colour
  and motion by the checker and shape by the probe, all at once).
- the VBench-style total (``dollar.evaluate.summarize``, mean over seeds with its interval).
- synonyms: the held-out prompts with colour and shape said in words no training caption used
  (``world.synonym_prompt_specs('heldout')``) against the same prompts in the world's own words.
- end to end, one video, batch 1, on ``--threads`` CPU threads (median of ``--latency-runs``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.evaluate import DEFAULT_PROBE, render_seeds, score_videos, summarize, vae_quality  # noqa: E402
from dollar.metrics import wilson_interval  # noqa: E402
from dollar.model_specs import load_pipeline, parse_model_spec, quiet_command  # noqa: E402
from dollar.models.probe import AttributeProbe  # noqa: E402
from dollar.reports import write_results  # noqa: E402

GOALS = {  # the goal column
    "vae_probe_shape": 0.97,
    "vae_psnr_db": 30.0,
    "teacher_colour": 0.98,
    "teacher_motion": 0.92,
    "teacher_shape": 0.90,
    "teacher_composition": 0.60,
    "student_shape_gap": 0.05,
    "synonym_gap": 0.10,
    "teacher_end_to_end_s": 1.0,
    "student_1_end_to_end_s": 0.100,
}


def proportion(verdicts) -> dict:
    """Share of True with its 95% Wilson interval."""
    n = len(verdicts)
    p = float(np.mean(verdicts)) if n else float("nan")
    lo, hi = wilson_interval(p, n) if n else (float("nan"), float("nan"))
    return {"p": p, "n": n, "ci95": [lo, hi]}


def judged(pipe, spec, prompts, seeds, probe) -> list[dict]:
    """Per-seed score lists (``dollar.evaluate.score_videos``) of ``prompts`` under each seed."""
    return [score_videos(render_seeds(pipe, spec, prompts, [s]), prompts, probe) for s in seeds]


def pooled(per_seed: list[dict], key: str) -> dict:
    return proportion([v for s in per_seed for v in s[key]])


def end_to_end(pipe, spec, runs: int) -> dict:
    """Wall clock of one video with the spec's steps and guidance (first run not counted)."""
    totals = []
    for i in range(runs + 1):
        start = time.perf_counter()
        pipe(
            "a red triangle moving left on a black background",
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            generator=torch.Generator().manual_seed(i),
        )
        if i:
            totals.append(time.perf_counter() - start)
    return {"median_s": statistics.median(totals), "min_s": min(totals), "max_s": max(totals), "runs": runs}


def model_figures(label: str, source: str, args, probe, reference: dict, single, pairs, log) -> dict:
    spec = parse_model_spec(source)
    pipe = load_pipeline(spec, {})
    start = time.perf_counter()
    singles = judged(pipe, spec, single, args.seeds, probe)
    doubles = judged(pipe, spec, pairs, args.seeds, probe) if pairs else []
    summary = summarize(singles, reference, single)
    out = {
        "source": source,
        "colour": pooled(singles, "checker_colour"),
        "motion": pooled(singles, "checker_motion"),
        "shape": pooled(singles, "probe_shape"),
        "composition": pooled(doubles, "composition") if doubles else None,
        "two_object_shape": pooled(doubles, "probe_shape") if doubles else None,
        "vbench_total": summary["aggregate"]["total_score"],
    }
    if label in args.synonym_models:
        for words in ("heldout", "world"):
            prompts = world.synonym_prompt_specs(words)
            scores = judged(pipe, spec, prompts, args.seeds, probe)
            out[f"synonyms_{words}"] = {"colour": pooled(scores, "checker_colour"), "shape": pooled(scores, "probe_shape")}
    torch.set_num_threads(args.threads)
    out["end_to_end"] = end_to_end(pipe, spec, args.latency_runs)
    torch.set_num_threads(args.render_threads)
    log(f"{label}: {time.perf_counter() - start:.0f} s")
    return out


def fmt(x: dict | None) -> str:
    if x is None:
        return "not measured"
    return f"{100 * x['p']:.1f}% ({100 * x['ci95'][0]:.0f}-{100 * x['ci95'][1]:.0f}, n={x['n']})"


def to_markdown(r: dict) -> str:
    t, vae = r["models"]["teacher"], r["vae"]
    students = {k: v for k, v in r["models"].items() if k != "teacher"}
    rows = [
        ("VAE reconstructions: probe shape / PSNR", f"{fmt(vae['probe_shape'])} / {vae['psnr_db']:.1f} dB", ">= 97% / >= 30 dB"),
        (f"{r['teacher_label']}, held-out prompts: colour", fmt(t["colour"]), ">= 98%"),
        (f"{r['teacher_label']}, held-out prompts: motion", fmt(t["motion"]), ">= 92%"),
        (f"{r['teacher_label']}, held-out prompts: shape", fmt(t["shape"]), ">= 90%"),
        (f"{r['teacher_label']}, two-object prompts: composition", fmt(t["composition"]), ">= 60%"),
    ]
    for k, s in students.items():
        rows.append((f"{k}: shape (teacher minus student, points)", f"{fmt(s['shape'])} ({r['shape_gap_points'][k]:+.1f})", "gap <= 5"))
    for k, s in r["models"].items():
        v = s["vbench_total"]
        interval = f" ({v['low']:.3f}-{v['high']:.3f}, {v['n']} seeds)" if v["low"] is not None else f" ({v['n']} seed)"
        rows.append((f"{k}: VBench-style total", f"{v['mean']:.3f}{interval}", "student-4 above teacher"))
    for k, s in r["models"].items():
        if "synonyms_heldout" in s:
            for a in ("colour", "shape"):
                h, w = s["synonyms_heldout"][a], s["synonyms_world"][a]
                rows.append(
                    (
                        f"{k}: {a} with unseen synonyms vs the world's words",
                        f"{fmt(h)} vs {fmt(w)} ({100 * (h['p'] - w['p']):+.1f} points)",
                        "within 10 points",
                    )
                )
    for k, s in r["models"].items():
        e = s["end_to_end"]
        rows.append((f"{k}: end to end, {r['config']['threads']} threads", f"{1000 * e['median_s']:.0f} ms (median of {e['runs']})", ""))
    lines = ["| measure | measured (95% CI) | goal |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--teacher", default="teacher", help="teacher model spec (bundled name, folder, or name:steps=..)")
    p.add_argument("--students", nargs="*", default=["student-1", "student-2", "student-4"])
    p.add_argument("--synonym-models", nargs="*", default=["teacher", "student-4"], help="labels measured on synonym prompts")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pairs", type=int, default=32, help="two-object prompts (composition)")
    p.add_argument("--vae-clips", type=int, default=64)
    p.add_argument("--probe", default=DEFAULT_PROBE)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the end-to-end timing")
    p.add_argument("--render-threads", type=int, default=None, help="CPU threads for rendering (default: torch's)")
    p.add_argument("--latency-runs", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/shapes.json")
    args = p.parse_args(argv)
    quiet_command(args.render_threads)
    args.render_threads = torch.get_num_threads()
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if not os.path.exists(os.path.join(args.probe, "config.json")):
        print(f"error: no attribute probe at {args.probe}; train one with python train/train_probe.py.", file=sys.stderr)
        return 2
    probe = AttributeProbe.from_pretrained(args.probe).eval()
    single = world.heldout_prompt_specs(64)
    pairs = world.two_object_prompt_specs(args.pairs)
    ref_videos = np.stack([world.render(world.scene_for_prompt(q, 10**9 + i)) for i, q in enumerate(single)])
    reference = score_videos(ref_videos, single, probe)
    models = {"teacher": args.teacher, **{parse_model_spec(s).label: s for s in args.students}}
    result = {"config": {**vars(args), "prompts": len(single)}, "teacher_label": f"{parse_model_spec(args.teacher).label}", "models": {}}
    vae = load_pipeline(parse_model_spec(args.teacher), {}).vae
    q = vae_quality(vae, clips=args.vae_clips, seeds=args.seeds, two_object_scenes=0, probe_path=args.probe)
    hits = round(q["probe_shape_on_reconstructions"] * q["probe_videos"])
    result["vae"] = {
        "psnr_db": q["psnr_db_mean"],
        "psnr_clips": q["videos"],
        "probe_shape": proportion([True] * hits + [False] * (q["probe_videos"] - hits)),
        "probe_shape_on_real": q["probe_shape_on_real"],
        "latent_shape": q["latent_shape"],
    }
    for label, source in models.items():
        result["models"][label] = model_figures(label, source, args, probe, reference, single, pairs, log)
    teacher_shape = result["models"]["teacher"]["shape"]["p"]
    result["shape_gap_points"] = {k: 100 * (teacher_shape - v["shape"]["p"]) for k, v in result["models"].items() if k != "teacher"}
    result["goals"] = GOALS
    table = to_markdown(result)
    write_results(args.out, result, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
