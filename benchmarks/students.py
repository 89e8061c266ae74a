"""The distillation report (issue #3's must-show), measured in one run at the same seeds:
teacher-50 with CFG, teacher DDIM-1/2/4, the bundled students, and the same-recipe student
without the latent reward model, on the held-out prompts with the analytic checker; the
dynamic-degree reward on the same videos; the denoising speedup of student-1 over teacher-50.

    python benchmarks/students.py [--seeds 3] [--no_lrm runs/student-4-nolrm] [--out benchmarks/results/students.json]

Writes JSON and a Markdown report beside it (and the README's section between its markers).
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
from foundation import _pct, wilson_interval  # noqa: E402

from dollar import DollarPipeline, world  # noqa: E402
from dollar.evaluation import checker_accuracy  # noqa: E402
from dollar.pipeline import ASSETS_DIR  # noqa: E402
from dollar.rewards import get_reward  # noqa: E402


def render_heldout(pipe, steps, guidance, seeds: int, batch: int = 16) -> tuple[list[np.ndarray], list]:
    """Videos for every held-out prompt and seed; seed s, prompt i -> generator s * 100000 + i."""
    prompts = world.heldout_prompts()
    videos, objects = [], []
    for seed in range(seeds):
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            gens = [torch.Generator().manual_seed(seed * 100_000 + start + i) for i in range(len(chunk))]
            out = pipe([p.prompt for p in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=gens)
            videos.extend(out.frames)
            objects.extend(p.objects for p in chunk)
    return videos, objects


def score(videos, objects, prompts) -> dict:
    acc = checker_accuracy(videos, objects)
    reward = get_reward("motion")(np.stack(videos), prompts)
    return {
        **acc,
        **{f"{k}_wilson95": wilson_interval(acc[k], acc["n"]) for k in ("colour", "motion")},
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

    teacher = DollarPipeline.from_pretrained(args.teacher)
    teacher.set_progress_bar_config(disable=True)
    g = teacher.config.default_guidance_scale
    rows = {}
    for name, steps in (("teacher-50", 50), ("teacher DDIM-1", 1), ("teacher DDIM-2", 2), ("teacher DDIM-4", 4)):
        start = time.perf_counter()
        rows[name] = {"steps": steps, "guidance_scale": g, **score(*render_heldout(teacher, steps, g, args.seeds), prompts)}
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
        pipe = DollarPipeline.from_pretrained(name)
        pipe.set_progress_bar_config(disable=True)
        label = "student-4 without LRM" if name == args.no_lrm else (label_given or name)
        students[label] = pipe
        steps = len(pipe.config.student_timesteps)
        rows[label] = {"steps": steps, "guidance_scale": 1.0, **score(*render_heldout(pipe, None, None, args.seeds), prompts)}
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
        update_readme(md)
    write_cards(result)
    print(md)


def write_cards(r: dict) -> None:
    """assets/student-k/README.md: the recipe (its distill_config.json) and the measured rows."""
    for k in (1, 2, 4):
        name = f"student-{k}"
        folder = os.path.join(ASSETS_DIR, name)
        if name not in r["rows"] or not os.path.exists(os.path.join(folder, "distill_config.json")):
            continue
        c = json.load(open(os.path.join(folder, "distill_config.json")))
        regrid = ""
        if c.get("init_student") and c.get("iterations_done") == 0:  # another student's network on this grid
            source = os.path.basename(c["init_student"].rstrip("/"))
            regrid = (
                f"This student was not trained on its own grid: it is the network of `{source}` (the run below) set to the "
                f"{k}-step grid without further training (`train/configs/{name}.yaml`: `--init_student`, `--max_iters 0`), "
                "because that scored higher than distilling at this step count directly (see the config's comment).\n\n"
            )
            c = json.load(open(os.path.join("docs", "training", f"{source}_config.json")))
            log, config_file = f"docs/training/{source}_log.jsonl", f"docs/training/{source}_config.json"
        else:
            log, config_file = f"docs/training/{name}_log.jsonl", "distill_config.json"
        terms = " + ".join(
            t
            for t, on in (
                (f"{c['vsd_weight']} VSD", c["vsd"]),
                (f"{c['cd_weight']} CD", c["cd"]),
                (f"{c['reward_weight']} reward ({c['reward_method'].upper()}, `{c['reward']}`)", c["lrm"]),
            )
            if on
        )
        rows = [("teacher-50", r["rows"]["teacher-50"]), (f"teacher DDIM-{k}", r["rows"][f"teacher DDIM-{k}"]), (name, r["rows"][name])]
        table = "\n".join(
            f"| {n} | {row['steps']} | {_pct(row, 'colour')} | {_pct(row, 'motion')} | {row['motion_reward_mean']:.3f} |" for n, row in rows
        )
        speed = next(iter(r["speed"].values())).get(name)
        speed_line = (
            f"Denoising one video: {1000 * speed['denoising_s_median']:.1f} ms, {speed['speedup']:.0f}x faster than the 50-step teacher "
            f"with CFG ({speed['nfe']} network evaluation(s) against 100), at {next(iter(r['speed'])).replace('_', ' ')}, measured in one run."
            if speed
            else ""
        )
        card = f"""---
library_name: diffusers
pipeline_tag: text-to-video
tags: [dollar, text-to-video, distillation, few-step]
---
# DOLLAR {k}-step student (embedded default)

{regrid}Distilled from the bundled teacher (`assets/teacher`) with `train/distill.py` (`train/configs/{c["config"].split("/")[-1]}`;
full configuration in `{config_file}`). Same architecture and VAE as the teacher; samples on the grid
{c["timesteps"] or {1: "999", 2: "999, 499", 4: "999, 749, 499, 249"}[k]} with re-noising between steps and no guidance.

- **Objective**: {terms}; real-score guidance w = {c["real_guidance_w"]}, CD teacher guidance w = {c["cd_guidance_w"]},
  {c["cd_skip"]} teacher DDIM steps per CD target, {c["fake_steps"]} fake-score updates per generator step.
- **Training**: {c["iterations_done"]} iterations, batch {c["batch_size"]}, AdamW (generator lr {c["generator_lr"]}, fake score
  {c["fake_lr"]}, reward model {c["lrm_lr"]}), {c["rollbacks"]} sentinel rollback(s), {c["seconds"] / 60:.0f} minutes on 2 CPU cores.
  Log: `{log}`.

## Measured (`python benchmarks/students.py`)

{r["prompts"]} held-out prompts x {r["seeds"]} seeds (the same for every row), analytic checker; motion reward = dynamic degree.

| model | steps | colour accuracy | motion accuracy | motion reward |
|---|---|---|---|---|
{table}

{speed_line}
"""
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(card)


def update_readme(md: str) -> None:
    """Replace the README's students section (between its markers) with this report."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    text = open(path).read()
    start, end = "<!-- students:start -->", "<!-- students:end -->"
    i, j = text.index(start) + len(start), text.index(end)
    body = "Measured by `python benchmarks/students.py` (JSON: `benchmarks/results/students.json`):\n\n" + md.strip()
    with open(path, "w") as f:
        f.write(text[:i] + "\n" + body + "\n" + text[j:])


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
            f"| {name} | {row['steps']} | {row['guidance_scale']} | {_pct(row, 'colour')} | {_pct(row, 'motion')} | "
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
