"""The distillation report (issue #3's must-show), measured in one run at the same seeds:
teacher-50 with CFG, teacher DDIM-1/2/4, the bundled students, and the same-recipe student
without the latent reward model, on the held-out prompts with the analytic checker; the
dynamic-degree reward on the same videos; the denoising speedup of student-1 over teacher-50.

    python benchmarks/students.py [--seeds 3] [--no_lrm runs/student-4-nolrm] [--out benchmarks/results/students.json]

Writes JSON and a Markdown report beside it, the students' model cards and (``--update_readme``) the
README's section, through dollar/reports.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.evaluate import checker_figures, render_seeds  # noqa: E402
from dollar.model_specs import ModelSpec, load_pipeline  # noqa: E402
from dollar.pipeline import ASSETS_DIR  # noqa: E402
from dollar.reports import percent_ci, write_readme_section, write_student_cards  # noqa: E402
from dollar.rewards import get_reward  # noqa: E402


def score(pipe, steps, guidance, seeds: int) -> dict:
    """Checker accuracy and motion reward of the held-out prompts under evaluation seeds 0 .. seeds - 1."""
    prompts = world.heldout_prompt_specs()
    videos = render_seeds(pipe, ModelSpec(pipe.name_or_path, pipe.name_or_path, steps, guidance), prompts, range(seeds))
    reward = get_reward("motion")(videos, [p.prompt for p in prompts * seeds])
    return {
        **checker_figures(videos, prompts * seeds),
        "motion_reward_mean": float(np.mean(reward)),
        "motion_reward_sem": float(np.std(reward) / np.sqrt(len(reward))),
    }


def denoising_time(pipe, steps, guidance, runs: int = 7, batch: int = 1) -> tuple[float, int]:
    times, nfe = [], 0
    for r in range(runs + 1):
        out = pipe(
            ["a red circle moving left"] * batch,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(r * 100 + i) for i in range(batch)],
        )
        if r:  # the first run warms up
            times.append(out.timings["denoising_s"])
        nfe = out.timings["nfe"]
    return statistics.median(times), nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="teacher")
    parser.add_argument("--students", nargs="*", default=[f"student-{k}" for k in (1, 2, 4)], help="names, folders, or label=folder")
    parser.add_argument("--no_lrm", default="", help="the student-4 recipe trained without the latent reward model")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "students.json"))
    parser.add_argument("--update_readme", action="store_true", help="also write the report into README.md")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    prompts = [p.prompt for p in world.heldout_prompts()]

    teacher = load_pipeline(args.teacher)
    g = teacher.config.default_guidance_scale
    rows = {}
    for name, steps in (("teacher-50", 50), ("teacher DDIM-1", 1), ("teacher DDIM-2", 2), ("teacher DDIM-4", 4)):
        start = time.perf_counter()
        rows[name] = {"steps": steps, "guidance_scale": g, **score(teacher, steps, g, args.seeds)}
        print(
            name, {k: rows[name][k] for k in ("colour", "motion", "motion_reward_mean")}, f"{time.perf_counter() - start:.0f} s", flush=True
        )
    students = {}
    # bundled names that are not built yet are skipped; folders and label=folder specs are kept
    names = [s for s in args.students if "=" in s or not s.startswith("student-") or os.path.isdir(os.path.join(ASSETS_DIR, s))]
    if args.no_lrm:
        names.append(args.no_lrm)
    for spec in names:
        label_given, _, name = spec.rpartition("=")  # "label=path" names a row
        pipe = load_pipeline(name)
        label = "student-4 without LRM" if name == args.no_lrm else (label_given or name)
        students[label] = pipe
        steps = len(pipe.config.student_timesteps)
        rows[label] = {"steps": steps, "guidance_scale": 1.0, **score(pipe, None, None, args.seeds)}
        print(label, {k: rows[label][k] for k in ("colour", "motion", "motion_reward_mean")}, flush=True)

    # Speed at 2 threads and at 1: a 1-step student is a single small forward pass, where waking a
    # second thread costs about as much as the pass itself, so the thread count changes the ratio.
    speed = {}
    threads_before = torch.get_num_threads()
    for threads in sorted({1, threads_before}, reverse=True):
        torch.set_num_threads(threads)
        t50, nfe50 = denoising_time(teacher, 50, g)
        table = {"teacher-50": {"denoising_s_median": t50, "nfe": nfe50, "speedup": 1.0, "nfe_ratio": 1.0}}
        for name, pipe in students.items():
            if name == "student-4 without LRM":
                continue
            t, nfe = denoising_time(pipe, None, None)
            table[name] = {"denoising_s_median": t, "nfe": nfe, "speedup": t50 / t, "nfe_ratio": nfe50 / nfe}
        speed[f"{threads}_threads"] = table
    torch.set_num_threads(threads_before)
    # Batch 8 (throughput): the fixed cost of a forward pass is shared by 8 videos.
    if "student-1" in students:
        t50, nfe50 = denoising_time(teacher, 50, g, batch=8)
        t1, nfe1 = denoising_time(students["student-1"], None, None, batch=8)
        speed[f"{threads_before}_threads_batch_8"] = {
            "teacher-50": {"denoising_s_median": t50, "nfe": nfe50, "speedup": 1.0, "nfe_ratio": 1.0},
            "student-1": {"denoising_s_median": t1, "nfe": nfe1, "speedup": t50 / t1, "nfe_ratio": nfe50 / nfe1},
        }

    checks = {}
    t = rows["teacher-50"]
    for name, margin, baseline in (("student-4", 0.02, "teacher DDIM-4"), ("student-1", 0.08, "teacher DDIM-1")):
        if name in rows:
            s = rows[name]
            checks[name] = {
                k: {
                    "student": s[k],
                    "needed": t[k] - margin,
                    "meets_teacher_margin": s[k] >= t[k] - margin,
                    "baseline": rows[baseline][k],
                    "above_baseline": s[k] > rows[baseline][k],
                }
                for k in ("colour", "motion")
            }
    for setting, table in speed.items():
        if "student-1" in table:
            measured = table["student-1"]["speedup"]
            checks[f"speedup_student1_{setting}"] = {"measured": measured, "needed": 80.0, "meets": measured >= 80, "setting": setting}
    if "student-4 without LRM" in rows and "student-4" in rows:
        a, b = rows["student-4"], rows["student-4 without LRM"]
        gain = a["motion_reward_mean"] / b["motion_reward_mean"] - 1
        drop = max(b["colour"] - a["colour"], b["motion"] - a["motion"])
        checks["lrm"] = {"reward_gain": gain, "needed_gain": 0.20, "accuracy_drop": drop, "allowed_drop": 0.02}
        checks["lrm"]["meets"] = gain >= 0.20 and drop <= 0.02
    result = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__},
        "seeds": args.seeds,
        "prompts": len(prompts),
        "rows": rows,
        "speed": speed,
        "checks": checks,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    md = report(result)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(md)
    if args.update_readme:
        write_readme_section("students", "Measured by `python benchmarks/students.py` (JSON: `benchmarks/results/students.json`):\n\n" + md)
    write_student_cards(result)
    print(md)


def report(r: dict) -> str:
    lines = [
        f"Held-out prompts ({r['prompts']} unseen colour-shape-motion combinations x {r['seeds']} seeds, the same seeds for every row), "
        "analytic checker; motion reward = mean optical-flow magnitude (the paper's dynamic degree) on the same videos:",
        "",
        "| model | steps | guidance scale | colour acc. [95% CI] | motion acc. [95% CI] | motion reward |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in r["rows"].items():
        lines.append(
            f"| {name} | {row['steps']} | {row['guidance_scale']} | {percent_ci(row, 'colour')} | {percent_ci(row, 'motion')} | "
            f"{row['motion_reward_mean']:.3f} ± {row['motion_reward_sem']:.3f} |"
        )
    lines += ["", "Denoising time per call (one video, or a batch of 8), median of 7 runs after a warm-up, all in one run:", ""]
    lines += ["| CPU threads | batch | model | NFE | denoising (s) | speedup vs teacher-50 | NFE ratio |", "|---|---|---|---|---|---|---|"]
    for setting, table in r["speed"].items():
        batch = setting.split("_batch_")[1] if "_batch_" in setting else "1"
        for name, s in table.items():
            lines.append(
                f"| {setting.split('_')[0]} | {batch} | {name} | {s['nfe']} | {s['denoising_s_median']:.4f} | {s['speedup']:.1f}x | {s['nfe_ratio']:.0f}x |"
            )
    lines += ["", "Must-show checks (issue #3):", ""]
    for name, c in r["checks"].items():
        if name.startswith("student"):
            for k, v in c.items():
                lines.append(
                    f"- {name} {k}: {100 * v['student']:.1f}% (needs >= {100 * v['needed']:.1f}%: "
                    f"{'met' if v['meets_teacher_margin'] else 'NOT met'}; baseline {100 * v['baseline']:.1f}%: "
                    f"{'above' if v['above_baseline'] else 'NOT above'})"
                )
        elif name.startswith("speedup_student1"):
            lines.append(
                f"- student-1 denoising speedup at {c['setting'].replace('_', ' ')}: {c['measured']:.1f}x "
                f"(needs >= 80x: {'met' if c['meets'] else 'NOT met'})"
            )
        elif name == "lrm":
            lines.append(
                f"- LRM: motion reward {100 * c['reward_gain']:+.1f}% over the same run without LRM (needs >= +20%), "
                f"largest checker-accuracy drop {100 * c['accuracy_drop']:.1f} points (allowed 2): {'met' if c['meets'] else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
