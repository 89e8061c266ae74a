"""Votes that teach, end to end with simulated raters (issue 20, part 3).

Raters with a hidden taste for larger objects (the object mask of dollar.checker measures it),
plus a share of random and adversarial raters, vote through the served app's HTTP API
(python app.py, each rater its own address) into a real vote store. Then, for a few vote budgets:
export -> preference latent reward (train/train_preference_reward.py) -> a short fine-tune of the
bundled 1-step student on it (train/distill.py --reward preference:...), against the same run
with the votes' labels shuffled. Measured on the held-out prompts: how far the object area moved
and what the checker's accuracy cost, with 95% bootstrap intervals (paired by prompt and seed).

    python benchmarks/preference_loop.py                    # ~30 min on 2 CPU cores
    python benchmarks/preference_loop.py --budgets 40,80 --iters 20 --eval-seeds 1   # a smoke run

Small on purpose (2 CPU cores): a few hundred votes, 1-step students, reward-only fine-tunes of
tens of iterations. Writes benchmarks/results/preference_loop.json and .png; with --keep-student
the largest budget's tuned student goes to that folder (the app's assets/student-preference).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dollar.checker import object_mask  # noqa: E402
from dollar.local_servers import served_app  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
MODELS = "student-1,student-2,student-4,teacher DDIM-4"
RELAXED = ["--min-view-s", "0", "--battles-per-minute", "0", "--votes-per-day", "0", "--round-floor-s", "0", "--min-raters", "1"]


def object_area(frames: np.ndarray) -> float:
    """The hidden attribute: the share of pixels the objects cover, averaged over frames."""
    return float(object_mask(frames).mean())


def read_video(value) -> np.ndarray:
    import imageio.v3 as iio

    path = value["video"] if isinstance(value, dict) else value
    return np.asarray(iio.imread(path, plugin="FFMPEG", index=None))


def answer(kind: str, area_a: float, area_b: float, rng: random.Random, temperature: float, tie_below: float) -> str:
    """A rater's answer: ``taste`` prefers the larger objects (logistic in the area gap, a tie when
    the gap is below notice), ``adversarial`` the smaller, ``random`` anything."""
    if kind == "random":
        return rng.choice(["A", "B", "tie", "both_bad"])
    gap = (area_a - area_b) * (1 if kind == "taste" else -1)
    if abs(gap) < tie_below:
        return "tie"
    return "A" if rng.random() < 1 / (1 + np.exp(-gap / temperature)) else "B"


def collect_votes(url: str, votes: int, raters: list[str], seed: int, temperature: float, tie_below: float, log) -> dict:
    """Each vote: a rater drawn at random takes a round through /arena_new, watches both videos
    (measures their object area) and answers all four questions through /arena_vote."""
    from gradio_client import Client

    rng = random.Random(seed)
    clients = [Client(url, verbose=False, headers={"X-Forwarded-For": f"10.0.{i // 250}.{i % 250 + 1}"}) for i in range(len(raters))]
    tally = {"votes": 0, "errors": 0, "by_kind": {k: 0 for k in set(raters)}, "agree_with_taste": []}
    start = time.perf_counter()
    while tally["votes"] < votes:
        i = rng.randrange(len(raters))
        try:
            battle_id, _, video_a, video_b, *_ = clients[i].predict("", api_name="/arena_new")
            area_a, area_b = object_area(read_video(video_a)), object_area(read_video(video_b))
            choice = answer(raters[i], area_a, area_b, rng, temperature, tie_below)
            clients[i].predict(battle_id, *[choice] * 4, api_name="/arena_vote")
        except Exception as err:  # counted and reported: a lost vote must show up
            tally["errors"] += 1
            log(f"vote failed: {type(err).__name__}: {str(err)[:160]}")
            if tally["errors"] > 20:
                raise
            continue
        tally["votes"] += 1
        tally["by_kind"][raters[i]] += 1
        if choice in "AB":
            tally["agree_with_taste"].append((choice == "A") == (area_a > area_b))
        if tally["votes"] % 50 == 0:
            log(f"{tally['votes']} votes ({time.perf_counter() - start:.0f} s)")
    tally["seconds"] = time.perf_counter() - start
    tally["agree_with_taste"] = float(np.mean(tally["agree_with_taste"]))
    return tally


def shuffled_copy(prefs: str, out: str, seed: int) -> str:
    """The same dataset with each criterion's labels (and winners) permuted across its rows: a reward that learns nothing true."""
    os.makedirs(out, exist_ok=True)
    rows = [json.loads(line) for line in open(os.path.join(prefs, "preferences.jsonl"))]
    rng = np.random.default_rng(seed)
    for criterion in {r["criterion"] for r in rows}:
        mine = [r for r in rows if r["criterion"] == criterion]
        moved = [(r["label"], r["winner"], r["answer"]) for r in mine]
        for r, k in zip(mine, rng.permutation(len(mine))):
            r["label"], r["winner"], r["answer"] = moved[k]
    with open(os.path.join(out, "preferences.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    for name in ("latents.safetensors", "manifest.json", "README.md"):
        shutil.copy(os.path.join(prefs, name), os.path.join(out, name))
    return out


def run(cmd: list[str], log_path: str) -> None:
    with open(log_path, "w") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed; see {log_path}")


def evaluate(model: str, prompts: list[str], seeds: int) -> dict:
    """Object area and checker verdict (colour and motion right, mean over objects) per held-out video."""
    import torch

    from dollar.pipeline import DollarPipeline
    from dollar.rewards import alignment_reward

    pipe = DollarPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    area, correct = [], []
    for s in range(seeds):
        frames = pipe(prompts, generator=torch.Generator().manual_seed(5000 + s)).frames
        area += [object_area(f) for f in frames]
        correct += alignment_reward(frames, prompts).tolist()
    return {"area": np.array(area), "correct": np.array(correct)}


def paired_interval(diff: np.ndarray, rounds: int = 2000, seed: int = 0) -> list[float]:
    """[mean, low, high]: the mean of paired differences and its 95% bootstrap interval."""
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(1)
    return [float(diff.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="40,80,160,320", help="vote budgets (the votes are collected once, up to the largest)")
    p.add_argument("--raters", type=int, default=20)
    p.add_argument("--random-share", type=float, default=0.15)
    p.add_argument("--adversarial-share", type=float, default=0.15)
    p.add_argument("--temperature", type=float, default=0.004, help="a taste rater's logistic scale in object-area share")
    p.add_argument("--tie-below", type=float, default=0.001, help="area gaps below this are called a tie")
    p.add_argument("--reward-steps", type=int, default=300)
    p.add_argument("--iters", type=int, default=60, help="fine-tuning iterations per student")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--reward-weight", type=float, default=1.0)
    p.add_argument("--eval-seeds", type=int, default=2, help="renders of each of the 64 held-out prompts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="working folder (default: a fresh temporary one)")
    p.add_argument("--keep-student", default=None, help="copy the largest budget's tuned student here (e.g. assets/student-preference)")
    p.add_argument("--out", default=os.path.join(RESULTS, "preference_loop.json"))
    args = p.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    work = args.work or tempfile.mkdtemp(prefix="preference-loop-")
    os.makedirs(work, exist_ok=True)
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731
    start = time.perf_counter()

    # 1. votes through the app's API into a real store
    n_random = round(args.random_share * args.raters)
    n_adv = round(args.adversarial_share * args.raters)
    raters = ["random"] * n_random + ["adversarial"] * n_adv + ["taste"] * (args.raters - n_random - n_adv)
    random.Random(args.seed).shuffle(raters)
    data_dir = os.path.join(work, "data")
    app_args = ["--data-dir", data_dir, "--models", MODELS, "--trust-proxy", "--check-rate", "0", "--pairing", "active"]
    app_args += [*RELAXED, "--threads", str(args.threads)]
    with served_app(os.path.join(ROOT, "app.py"), app_args, os.path.join(work, "app.log")) as (url, _, _):
        tally = collect_votes(url, budgets[-1], raters, args.seed, args.temperature, args.tie_below, log)
    log(f"{tally['votes']} votes in {tally['seconds']:.0f} s; decided votes agreeing with the taste: {tally['agree_with_taste']:.2f}")

    # 2. export (the command a user runs), and its label-shuffled control
    prefs = os.path.join(work, "prefs")
    run(
        [sys.executable, "-m", "dollar.arena", "export-preferences", "--out", prefs, "--data-dir", data_dir],
        os.path.join(work, "export.log"),
    )
    manifest = json.load(open(os.path.join(prefs, "manifest.json")))
    log(f"exported {manifest['votes']} votes, {manifest['videos']} videos, {manifest['reproduced_share']:.2f} reproduced")
    datasets = {"real": prefs, "shuffled": shuffled_copy(prefs, os.path.join(work, "prefs-shuffled"), args.seed)}

    # 3. per budget and labels: preference reward -> fine-tuned student -> held-out measures
    from dollar import world

    prompts = [q.prompt for q in world.heldout_prompts(64)]
    base = evaluate("student-1", prompts, args.eval_seeds)
    rows = []
    for budget in budgets:
        for labels, folder in datasets.items():
            tag = f"{labels}-{budget}"
            lrm = os.path.join(work, f"lrm-{tag}")
            trainer = [sys.executable, "train/train_preference_reward.py", "--prefs", folder, "--output_dir", lrm]
            trainer += [
                "--max_votes",
                str(budget),
                "--steps",
                str(args.reward_steps),
                "--threads",
                str(args.threads),
                "--seed",
                str(args.seed),
            ]
            run(trainer, os.path.join(work, f"lrm-{tag}.log"))
            reward_eval = json.load(open(os.path.join(lrm, "preference_eval.json")))
            student = os.path.join(work, f"student-{tag}")
            distill = [sys.executable, "train/distill.py", "--teacher", "teacher", "--init_student", "student-1", "--num_steps", "1"]
            distill += ["--output_dir", student, "--cache_dir", os.path.join(work, "cache"), "--num_clips", "64", "--batch_size", "8"]
            distill += ["--max_iters", str(args.iters), "--vsd", "false", "--cd", "false", "--reward", f"preference:{lrm}"]
            distill += ["--reward_weight", str(args.reward_weight), "--generator_lr", str(args.lr), "--validate_every", "0"]
            distill += ["--report_to", "none", "--checkpoint_every", "100000", "--seed", str(args.seed)]
            run(distill, os.path.join(work, f"distill-{tag}.log"))
            tuned = evaluate(student, prompts, args.eval_seeds)
            row = {
                "budget": budget,
                "labels": labels,
                "heldout_pairwise_accuracy": reward_eval["heldout_pairwise_accuracy"],
                "heldout_pairs": reward_eval["heldout_pairs"],
                "area_base": float(base["area"].mean()),
                "area_tuned": float(tuned["area"].mean()),
                "area_shift": paired_interval(tuned["area"] - base["area"]),
                "area_shift_relative": float(tuned["area"].mean() / base["area"].mean() - 1),
                "checker_accuracy_base": float(base["correct"].mean()),
                "checker_accuracy_tuned": float(tuned["correct"].mean()),
                "checker_accuracy_cost": paired_interval(base["correct"] - tuned["correct"]),
                "student": student,
            }
            rows.append(row)
            log(
                f"{tag}: held-out pairwise accuracy {row['heldout_pairwise_accuracy']}, area shift {row['area_shift'][0]:+.4f} "
                f"[{row['area_shift'][1]:+.4f}, {row['area_shift'][2]:+.4f}], accuracy cost {row['checker_accuracy_cost'][0]:+.3f}"
            )

    # 4. votes needed: the smallest budget whose real shift's interval lies above zero and above the shuffled run's
    def clear(budget: int) -> bool:
        real = next(r for r in rows if r["budget"] == budget and r["labels"] == "real")["area_shift"]
        shuffled = next(r for r in rows if r["budget"] == budget and r["labels"] == "shuffled")["area_shift"]
        return real[1] > 0 and real[1] > shuffled[2]

    needed = next((b for b in budgets if clear(b)), None)
    result = {
        "what": "simulated raters (taste: larger objects) vote via the app's API; export -> preference LRM -> fine-tuned student-1",
        "raters": {"taste": raters.count("taste"), "random": n_random, "adversarial": n_adv},
        "votes": tally,
        "export": {k: manifest[k] for k in ("votes", "rows", "videos", "reproduced_share", "dataset_version")},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "eval_videos": len(base["area"]),
        "rows": rows,
        "votes_needed_for_clear_shift": needed,
        "seconds": time.perf_counter() - start,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, args.out.replace(".json", ".png"))
    if args.keep_student:
        keep_student(next(r for r in rows if r["budget"] == budgets[-1] and r["labels"] == "real"), result, args.keep_student)
    log(f"votes needed for a clear shift: {needed}; wrote {args.out} ({result['seconds'] / 60:.1f} min)")
    return result


def keep_student(row: dict, result: dict, folder: str) -> None:
    """The tuned student as a bundled model, with a card that says what data made it."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(row["student"], folder, ignore=shutil.ignore_patterns("checkpoints", "cache", "train_log.jsonl", "logs"))
    shift, cost = row["area_shift"], row["checker_accuracy_cost"]
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(f"""# student-preference: the 1-step student tuned on arena votes

The bundled `student-1`, fine-tuned for {result["settings"]["iters"]} iterations (reward only, learning rate
{result["settings"]["lr"]}) on a preference latent reward model (train/train_preference_reward.py) learnt from
**{row["budget"]} simulated arena votes** (benchmarks/preference_loop.py): {result["raters"]["taste"]} raters with a hidden taste for
larger objects, {result["raters"]["random"]} answering at random, {result["raters"]["adversarial"]} adversarial (preferring smaller ones),
voting through the app's API on {MODELS.replace(",", ", ")}; exported with `python -m dollar.arena export-preferences`
(dataset version `{result["export"]["dataset_version"]}`). No human votes: this model shows the loop, not people's taste.

- Preference model's held-out pairwise accuracy: {row["heldout_pairwise_accuracy"]} ({row["heldout_pairs"]} held-out pairs).
- Object area on the 64 held-out prompts: {row["area_base"]:.4f} -> {row["area_tuned"]:.4f} of the frame
  (shift {shift[0]:+.4f}, 95% interval [{shift[1]:+.4f}, {shift[2]:+.4f}]).
- Checker accuracy (colour and motion): {row["checker_accuracy_base"]:.3f} -> {row["checker_accuracy_tuned"]:.3f}
  (cost {cost[0]:+.3f}, [{cost[1]:+.3f}, {cost[2]:+.3f}]).

See benchmarks/results/preference_loop.json for the shuffled-label control and the other vote budgets.
""")


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    for labels, colour in (("real", "#2a7ab0"), ("shuffled", "#b0b0b0")):
        rows = [r for r in result["rows"] if r["labels"] == labels]
        x = [r["budget"] for r in rows]
        for ax, key in ((axes[0], "area_shift"), (axes[1], "checker_accuracy_cost")):
            mid = np.array([r[key][0] for r in rows])
            err = np.array([[m - r[key][1] for m, r in zip(mid, rows)], [r[key][2] - m for m, r in zip(mid, rows)]])
            ax.errorbar(x, mid, yerr=err, marker="o", capsize=3, color=colour, label=f"{labels} labels")
        axes[2].plot(
            x,
            [np.nan if r["heldout_pairwise_accuracy"] is None else r["heldout_pairwise_accuracy"] for r in rows],
            marker="o",
            color=colour,
            label=f"{labels} labels",
        )
    titles = ("object area shift (share of frame)", "checker accuracy cost", "preference model: held-out pairwise accuracy")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("votes")
        ax.set_title(title, fontsize=9)
        ax.axhline(0.5 if ax is axes[2] else 0.0, color="k", lw=0.6, ls=":")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
