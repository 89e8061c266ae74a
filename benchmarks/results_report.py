"""The paper's Tables 1-4, reproduced on the embedded world: docs/results.md and its plots,
generated from the measured JSON in benchmarks/results/ (no number is typed in by hand, except
the paper's own figures quoted beside each table, from shared/METHOD.md).

    python benchmarks/results_report.py

Inputs (each written by a committed command; see docs/results.md for the exact commands):
  benchmarks/results/eval_*.json      python -m dollar.evaluate ... --out benchmarks/results/eval_<group>.json
  benchmarks/results/bench.json       python -m dollar.bench --out benchmarks/results/bench.json
  benchmarks/results/ablation/*/distill_config.json   the training runs' own records (time, memory)
  docs/results_discussion.md          the written interpretation, included verbatim per table
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.reports import accuracy_cells, figure_cell, markdown_row  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DOCS = os.path.join(ROOT, "docs")

# (evaluation label, method, steps). Labels are the ones the commands in docs/results.md use.
TABLE1_ROWS = [
    ("teacher-50", "teacher, DDIM + CFG 7.5", 50),
    ("DDIM-1", "teacher, DDIM + CFG", 1),
    ("DDIM-2", "teacher, DDIM + CFG", 2),
    ("DDIM-4", "teacher, DDIM + CFG", 4),
    ("DPM++ 4", "teacher, DPM-Solver++ + CFG", 4),
    ("DPM++ 8", "teacher, DPM-Solver++ + CFG", 8),
    ("CD-only 1", "CD only (LCM / T2V-Turbo, no reward)", 1),
    ("CD-only 2", "CD only (LCM / T2V-Turbo, no reward)", 2),
    ("CD-only 4", "CD only (LCM / T2V-Turbo, no reward)", 4),
    ("VSD-only 1", "VSD only (DMD)", 1),
    ("VSD-only 2", "VSD only (DMD)", 2),
    ("VSD-only 4", "VSD only (DMD)", 4),
    ("VSD+CD 1", "VSD + CD", 1),
    ("VSD+CD 2", "VSD + CD", 2),
    ("VSD+CD 4", "VSD + CD", 4),
    ("VSD+CD+LRM 1 (1-step recipe)", "VSD + CD + LRM distilled at one step (student-1-onestep.yaml)", 1),
    ("VSD+CD+LRM 1", "VSD + CD + LRM (DOLLAR, bundled student-1 = the 4-step network at reward weight 0.25, one step)", 1),
    ("VSD+CD+LRM 2", "VSD + CD + LRM (DOLLAR, bundled student-2)", 2),
    ("VSD+CD+LRM 4", "VSD + CD + LRM (DOLLAR, bundled student-4)", 4),
    ("real", "real world clips (the ceiling)", None),
]
TABLE2_ROWS = ["teacher-50"] + [f"{m} {k}" for k in (1, 2, 4) for m in ("VSD-only", "VSD+CD", "VSD+CD+LRM")] + ["real"]
TABLE3_ROWS = [
    ("VSD+CD 4", "no reward", None),
    ("LRM 4", "LRM (latent reward model)", "lrm-4"),
    ("DDPO 4", "DDPO (REINFORCE on decoded rewards)", "ddpo-4"),
]
PAPER_SHARE = {"teacher-50": 91.94, "4": 5.88, "2": 2.16, "1": 0.33}


def load_evaluations() -> tuple[dict, dict]:
    """All models of every eval_*.json (a later file's label wins), and their configs."""
    models, configs = {}, {}
    for path in sorted(glob.glob(os.path.join(RESULTS, "eval_*.json"))):
        with open(path) as f:
            result = json.load(f)
        for label, m in result["models"].items():
            models[label] = {**m, "file": os.path.basename(path)}
            configs[label] = result["config"]
    return models, configs


def compare(a: dict, b: dict) -> str:
    """'higher' / 'lower' when the 95% intervals are disjoint, else 'within noise'."""
    if a["low"] is None or b["low"] is None:
        return "higher than" if a["mean"] > b["mean"] else "lower than"
    if a["low"] > b["high"]:
        return "higher than"
    if a["high"] < b["low"]:
        return "lower than"
    return "within noise of"


def discussion() -> dict[str, str]:
    """Sections of docs/results_discussion.md keyed by their '## Table N' heading."""
    path = os.path.join(DOCS, "results_discussion.md")
    if not os.path.exists(path):
        return {}
    text = open(path).read()
    parts = re.split(r"^## (Table \d)[^\n]*\n", text, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def table1(models: dict) -> list[str]:
    lines = [
        "| method | steps | NFE | colour % | motion % | shape % (probe) | composition % | dynamic degree | FVD (probe) | quality | semantic | total |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, method, steps in TABLE1_ROWS:
        m = models.get(label)
        if m is None:
            lines.append(f"| {method} | {steps or ''} | | not measured |" + " |" * 8)
            continue
        s, q, d, a = m["semantic"], m["quality"], m["distribution"], m["aggregate"]
        cells = [
            method,
            str(steps or ""),
            str(m["nfe_per_video"]),
            *accuracy_cells(s),
            figure_cell(q["dynamic_degree"], digits=2),
            figure_cell(d["fvd_probe"], digits=1, ci=False),
            figure_cell(a["quality_score"], pct=True, ci=False),
            figure_cell(a["semantic_score"], pct=True, ci=False),
            figure_cell(a["total_score"], pct=True),
        ]
        lines.append(markdown_row(cells))
    return lines


def table1_checks(models: dict) -> list[str]:
    """The paper's Table 1 claims, checked on our figures."""
    out = []
    t = models.get("teacher-50")
    for k in (1, 2, 4):
        rows = {name: models.get(f"{name} {k}") for name in ("VSD-only", "VSD+CD", "VSD+CD+LRM")}
        if t and all(rows.values()):
            total = {n: r["aggregate"]["total_score"] for n, r in rows.items()}
            out.append(
                f"- {k} step{'s' if k > 1 else ''}: total score VSD {100 * total['VSD-only']['mean']:.1f}, VSD+CD {100 * total['VSD+CD']['mean']:.1f}, "
                f"VSD+CD+LRM {100 * total['VSD+CD+LRM']['mean']:.1f}; teacher-50 {100 * t['aggregate']['total_score']['mean']:.1f}. "
                f"VSD+CD+LRM is {compare(total['VSD+CD+LRM'], t['aggregate']['total_score'])} the teacher "
                f"and {compare(total['VSD+CD+LRM'], total['VSD+CD'])} VSD+CD (95% intervals over seeds)."
            )
    return out


def table2(models: dict) -> list[str]:
    lines = ["| model | NFE | Vendi (pixels) | Vendi (probe features) | motion % |", "|---|---|---|---|---|"]
    for label in TABLE2_ROWS:
        m = models.get(label)
        if m is None:
            lines.append(f"| {label} | | not measured | | |")
            continue
        d = m["distribution"]
        lines.append(
            f"| {label} | {m['nfe_per_video']} | {figure_cell(d['vendi_pixels'], digits=3)} | {figure_cell(d['vendi_features'], digits=3)} | {figure_cell(m['semantic']['motion'], pct=True, ci=False)} |"
        )
    return lines


def table3(models: dict) -> list[str]:
    lines = [
        "| run | reward method | reward reached (dynamic degree, held-out) | vs no reward | colour % | motion % | total | training time (s) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = models.get("VSD+CD 4")
    for label, method, run in TABLE3_ROWS:
        m = models.get(label)
        if m is None:
            lines.append(f"| {label} | {method} | not measured |" + " |" * 6)
            continue
        rec = {}
        if run:
            path = os.path.join(RESULTS, "ablation", run, "distill_config.json")
            if os.path.exists(path):
                with open(path) as f:
                    rec = json.load(f)
        dd = m["quality"]["dynamic_degree"]
        gain = f"{100 * (dd['mean'] / base['quality']['dynamic_degree']['mean'] - 1):+.1f}%" if base and run else ""
        lines.append(
            markdown_row(
                [
                    label,
                    method,
                    figure_cell(dd, digits=3),
                    gain,
                    figure_cell(m["semantic"]["colour"], pct=True),
                    figure_cell(m["semantic"]["motion"], pct=True),
                    figure_cell(m["aggregate"]["total_score"], pct=True),
                    f"{rec['seconds']:.0f}" if "seconds" in rec else "",
                    f"{rec['peak_rss_mb']:.0f}" if "peak_rss_mb" in rec else "",
                ]
            )
        )
    return lines


def paired(m: dict) -> str:
    p = m.get("speedup_denoising_paired")
    if not p:
        return f"{m['speedup_denoising']:.1f}x"
    return f"{p['median']:.1f}x [{p['q25']:.1f}, {p['q75']:.1f}]"


def table4(bench: dict) -> list[str]:
    ref = bench["models"][bench["reference"]]
    ref_e2e = ref["end_to_end_s"]["median"]
    lines = [
        "| model | NFE | denoising (s, median) | end to end (s) | denoising as % of the teacher's end-to-end time | paper (A100) | denoising speedup, paired [IQR] | end-to-end speedup | NFE limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in bench["models"].items():
        paper = ""
        if label == bench["reference"]:
            paper = f"{PAPER_SHARE['teacher-50']}%"
        elif label.startswith("student-"):
            paper = f"{PAPER_SHARE.get(label.split('-')[1], '')}%"
        lines.append(
            f"| {label} | {m['nfe']} | {m['denoising_s']['median']:.4f} | {m['end_to_end_s']['median']:.4f} | "
            f"{100 * m['denoising_s']['median'] / ref_e2e:.2f}% | {paper} | {paired(m)} | "
            f"{m['speedup_end_to_end']:.1f}x | {ref['nfe'] / m['nfe']:.0f}x |"
        )
    return lines


def plots(models: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig_, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    families = [
        ("VSD-only", "tab:red"),
        ("CD-only", "tab:blue"),
        ("VSD+CD", "tab:purple"),
        ("VSD+CD+LRM", "tab:green"),
        ("DDIM", "tab:gray"),
    ]
    for ax, (key, group, title) in zip(
        axes,
        [("total_score", "aggregate", "total score (VBench-style)"), ("motion", "semantic", "motion accuracy (checker)")],
        strict=True,
    ):
        for fam, colour in families:
            xs, ys, lo, hi = [], [], [], []
            for k in (1, 2, 4):
                m = models.get(f"{fam} {k}") if fam != "DDIM" else models.get(f"DDIM-{k}")
                if m:
                    f = m[group][key]
                    xs.append(k)
                    ys.append(100 * f["mean"])
                    lo.append(100 * (f["mean"] - (f["low"] if f["low"] is not None else f["mean"])))
                    hi.append(100 * ((f["high"] if f["high"] is not None else f["mean"]) - f["mean"]))
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=fam, color=colour)
        t = models.get("teacher-50")
        if t:
            ax.axhline(100 * t[group][key]["mean"], color="black", ls="--", label="teacher-50 (CFG)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4], ["1", "2", "4"])
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(f"{title} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig_.tight_layout()
    path = os.path.join(DOCS, "results_table1.png")
    fig_.savefig(path, dpi=110)
    plt.close(fig_)
    written.append(path)

    labels = [label for label in TABLE2_ROWS if label in models]
    if labels:
        fig_, ax = plt.subplots(figsize=(10, 3.8))
        vals = [models[label]["distribution"]["vendi_pixels"] for label in labels]
        ax.bar(
            range(len(labels)),
            [v["mean"] for v in vals],
            yerr=[[v["mean"] - v["low"] for v in vals], [v["high"] - v["mean"] for v in vals]],
            capsize=3,
            color=[
                "black"
                if label.startswith("teacher")
                else "tab:red"
                if "VSD-only" in label
                else "tab:purple"
                if label.startswith("VSD+CD ")
                else "tab:green"
                if "LRM" in label
                else "tab:gray"
                for label in labels
            ],
        )
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("Vendi score over 3 seeds (pixels)")
        ax.set_ylim(1.0, None)
        ax.grid(axis="y", alpha=0.3)
        fig_.tight_layout()
        path = os.path.join(DOCS, "results_table2.png")
        fig_.savefig(path, dpi=110)
        plt.close(fig_)
        written.append(path)
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", default=os.path.join(DOCS, "results.md"))
    args = p.parse_args()
    models, configs = load_evaluations()
    if not models:
        raise SystemExit("error: no benchmarks/results/eval_*.json; run the evaluations listed in docs/results.md first.")
    notes = discussion()
    lrm_path = os.path.join(RESULTS, "ablation", "lrm-4", "distill_config.json")
    lrm_cfg = json.load(open(lrm_path)) if os.path.exists(lrm_path) else {}
    cfg = next(iter(configs.values()))
    with open(os.path.join(RESULTS, "bench.json")) as f:
        bench = json.load(f)
    compiled_path = os.path.join(RESULTS, "bench_compiled.json")
    compiled = json.load(open(compiled_path)) if os.path.exists(compiled_path) else None
    plots(models)
    files = sorted({m["file"] for m in models.values()})
    wall = {label: m["wall_s"] for label, m in models.items()}

    out = [
        "# Results: the paper's tables on the embedded world",
        "",
        "Generated by `python benchmarks/results_report.py` from "
        + ", ".join(f"`benchmarks/results/{f}`" for f in files)
        + ", `benchmarks/results/bench.json` and the training records in `benchmarks/results/ablation/`. "
        "Every figure is measured here; the paper's figures (from `shared/METHOD.md`) are quoted only beside the tables.",
        "",
        f"Evaluation: {cfg['prompts'] - cfg['two_object_prompts']} held-out single-object prompts + {cfg['two_object_prompts']} two-object prompts, "
        f"seeds {cfg['seeds']}, every figure a mean with its Student-t 95% interval over the seeds "
        f"(Vendi: over prompts), {cfg['reference_clips']} real reference clips for the Frechet distance. "
        "Scores (quality / semantic / total) follow `dollar.evaluate.AGGREGATE_WEIGHTS` (VBench-style: total = (4 quality + 1 semantic) / 5). "
        "The ablation students are trained by `train/distill.py` with the bundled students' recipe (`train/configs/student-<k>.yaml`, 400 iterations, batch 8) "
        "and only the losses switched: `--no_lrm` (VSD+CD), `--no_cd --no_lrm` (VSD only), `--no_vsd --no_lrm` (CD only), `--reward_method ddpo` (DDPO).",
        "",
        "## Table 1: quality and text alignment",
        "",
        *table1(models),
        "",
        "![Table 1](results_table1.png)",
        "",
        "Paper (VBench total, 4 steps): teacher-50 80.25, VSD 80.08, VSD+CD 80.65, VSD+CD+LRM 82.57.",
        "",
        *table1_checks(models),
        "",
        notes.get("Table 1", "_No discussion written yet._"),
        "",
        "## Table 2: diversity",
        "",
        "Vendi score of the 3 seeds of each prompt (1 = identical videos, 3 = all different), mean over prompts with its 95% interval.",
        "",
        *table2(models),
        "",
        "![Table 2](results_table2.png)",
        "",
        "Paper (Vendi, pixels, 4 steps): teacher 1.46, VSD 1.49, VSD+CD 1.59, VSD+CD+LRM 1.60.",
        "",
        notes.get("Table 2", "_No discussion written yet._"),
        "",
        "## Table 3: latent reward model against DDPO (same reward, same budget)",
        "",
        f"Both runs: the student-4 recipe (VSD + CD + reward, {lrm_cfg.get('max_iters', '?')} iterations, reward weight {lrm_cfg.get('reward_weight', '?')}, "
        f"the {'dynamic-degree' if lrm_cfg.get('reward') == 'motion' else lrm_cfg.get('reward', '?')} reward), "
        "trained at the same time on the same machine, one torch thread each; peak memory is the process's resident-set high-water mark.",
        "",
        *table3(models),
        "",
        "Paper (HPSv2 reward, VBench): VSD+LRM 81.96 against VSD+DDPO 81.29; the LRM backward needs ~18-26 MB where backpropagating HPSv2 through the decoder needs > 90 GB.",
        "",
        notes.get("Table 3", "_No discussion written yet._"),
        "",
        "## Table 4: speed",
        "",
        f"`python -m dollar.bench`, batch 1, {bench['machine'].get('threads')} torch thread(s) on {bench['machine'].get('device')} "
        f"({bench['machine'].get('torch')}), prompt '{bench['prompt']}'; medians of 30 rounds in one run, the models taking turns each round (so the paired speedup is a median of per-round ratios).",
        "",
        "Eager PyTorch (`benchmarks/results/bench.json`):",
        "",
        *table4(bench),
        "",
        *(
            [
                "With `--compile` (`torch.compile` of every transformer, teacher and students alike; `benchmarks/results/bench_compiled.json`):",
                "",
                *table4(compiled),
                "",
            ]
            if compiled
            else ["_No compiled benchmark (benchmarks/results/bench_compiled.json) yet._", ""]
        ),
        "Paper (one A100): denoising as a share of the teacher's total time: teacher-50 91.94%, 4 steps 5.88%, 2 steps 2.16%, 1 step 0.33% "
        "(the 278.6x of sampling alone; about 13x end to end for 1 step).",
        "",
        notes.get("Table 4", "_No discussion written yet._"),
        "",
        "## Evaluation cost",
        "",
        "Wall time of `python -m dollar.evaluate` per model (render + score, all prompts x seeds, as run for these tables; "
        "several jobs shared the 2 cores, so these are upper bounds; `benchmarks/results/eval_timing.json` is a run alone):",
        "",
        "| model | wall (s) |",
        "|---|---|",
        *[f"| {label} | {w:.0f} |" for label, w in wall.items()],
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
