"""Latency benchmark: every model timed in one run on the same machine.

    python -m dollar.bench --models teacher teacher:steps=4 student-4 --runs 10 --out bench.json

    python -m dollar.bench --models teacher student-1 --decoders full tiny --runs 20 --out fast.json

For each model and decoder (``--decoders``: the VAE's "full" decoder, the distilled "tiny" one):
median and spread (interquartile range, min, max) of text encoding, denoising, decoding and
end-to-end seconds over ``--runs`` timed runs after ``--warmup`` untimed ones, for a cold prompt
(the pipeline's prompt cache emptied first, so the text encoder runs) and a warm one (the same
prompt again, its states cached); network evaluations, peak memory, and the speedup over the
reference (the 50-step teacher, full decoder) in the same prompt mode: the ratio of medians and,
because the models take turns round by round, the median of the per-round (paired) ratios,
which a drifting machine does not bias. The machine's load averages are recorded beside them.
Writes JSON (cold figures at the top level of each model, warm ones under "warm") and a bar
chart (PNG, cold) beside it. Models are specs (:mod:`dollar.model_specs`), as in ``python -m dollar.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from dollar.arg_types import nonnegative_int, positive_int
from dollar.model_specs import ModelSpec, load_pipeline, parse_model_spec, quiet_command

PARTS = ("text_encoding_s", "denoising_s", "decoding_s", "end_to_end_s")
PROMPT_MODES = ("cold", "warm")


def _rss_bytes() -> int | None:
    """Resident set size of this process now (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory over a block. CUDA: ``torch.cuda.max_memory_allocated``. CPU: the resident set
    size sampled every millisecond by a thread (torch's CPU allocator is invisible to
    tracemalloc), reported as the peak and as the rise above the level at entry."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = self.start = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            rss = _rss_bytes()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            rss = _rss_bytes()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)
        return False

    def report(self) -> dict:
        kind = "cuda_max_memory_allocated" if self.device.type == "cuda" else "cpu_peak_rss"
        if self.peak is None:
            return {"kind": kind, "peak_mib": None, "increase_mib": None}
        return {"kind": kind, "peak_mib": self.peak / 2**20, "increase_mib": (self.peak - self.start) / 2**20}


def spread(values) -> dict:
    x = np.asarray(values, dtype=np.float64)
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75), "min": float(x.min()), "max": float(x.max()), "runs": len(x)}


@dataclass(frozen=True)
class BenchJob:
    """One timed configuration: a model spec decoded by ``decoder`` ("full" or "tiny")."""

    spec: ModelSpec
    get_pipeline: Callable
    decoder: str = "full"

    @property
    def label(self) -> str:
        return self.spec.label if self.decoder == "full" else f"{self.spec.label} [tiny decoder]"


def bench_models(jobs, prompt: str, runs: int, warmup: int, batch_size: int, modes=PROMPT_MODES) -> tuple[dict[str, dict], dict[str, dict]]:
    """Time ``runs`` generations of ``batch_size`` videos per job, after ``warmup`` untimed
    rounds. ``jobs``: BenchJobs (or (spec, get_pipeline) pairs: the full decoder). Each job runs
    once per mode of ``modes``: "cold", the prompt cache emptied first (the text encoder runs,
    as for a new prompt), then "warm", the same prompt again (its states come from the cache).
    The jobs take turns, one generation each per round, so a slow drift of the machine
    (another tenant, clocks) hits every job alike and per-round ratios are paired. Peak memory
    comes from one more, untimed, generation per job: the memory sampler's thread would
    otherwise compete with a millisecond-long denoising step for the GIL and inflate it.
    Returns the per-job summaries (the cold figures at the top level, the warm ones under
    "warm") and the raw per-round seconds (label -> mode -> part -> list)."""
    jobs = [j if isinstance(j, BenchJob) else BenchJob(*j) for j in jobs]
    samples = {job.label: {mode: {k: [] for k in PARTS} for mode in modes} for job in jobs}
    nfe: dict[str, int] = {}

    def generate(pipe, job: BenchJob, i: int):
        generators = [torch.Generator().manual_seed(1000 * i + j) for j in range(batch_size)]
        spec = job.spec
        return pipe(
            [prompt] * batch_size, num_inference_steps=spec.steps, guidance_scale=spec.guidance, generator=generators, decoder=job.decoder
        )

    for i in range(warmup + runs):
        for job in jobs:
            pipe = job.get_pipeline()
            device = pipe._execution_device
            for mode in modes:
                if mode == "cold":
                    pipe.prompt_cache.clear()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                out = generate(pipe, job, i)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                total = time.perf_counter() - start
                if i < warmup:
                    continue
                for key in PARTS[:-1]:
                    samples[job.label][mode][key].append(out.timings[key])
                samples[job.label][mode]["end_to_end_s"].append(total)
                nfe[job.label] = out.timings["nfe"]
    results = {}
    for job in jobs:
        pipe = job.get_pipeline()
        with PeakMemory(pipe._execution_device) as memory:
            generate(pipe, job, warmup + runs)
        by_mode = {mode: {k: spread(v) for k, v in samples[job.label][mode].items()} for mode in modes}
        results[job.label] = {
            "spec": asdict(job.spec),
            "decoder": job.decoder,
            "nfe": nfe.get(job.label),
            "batch_size": batch_size,
            "prompt": modes[0],
            **by_mode[modes[0]],
            **{mode: by_mode[mode] for mode in modes[1:]},
            "memory": memory.report(),
        }
    return results, samples


def paired_speedups(results: dict, samples: dict, reference: str) -> None:
    """Add the speedups over ``reference`` to ``results`` (each mode against the reference in
    the same mode): ratio of medians, and the spread of per-round ratios (``samples`` from
    :func:`bench_models`)."""
    ref = results[reference]
    for label, r in results.items():
        for mode, by_part in samples[label].items():
            target = r if mode == r["prompt"] else r[mode]
            ref_mode = ref if mode == ref["prompt"] else ref[mode]
            target["speedup_end_to_end"] = ref_mode["end_to_end_s"]["median"] / target["end_to_end_s"]["median"]
            target["speedup_denoising"] = ref_mode["denoising_s"]["median"] / max(target["denoising_s"]["median"], 1e-12)
            for key in ("denoising_s", "end_to_end_s"):
                ratios = [a / max(b, 1e-12) for a, b in zip(samples[reference][mode][key], by_part[key], strict=True)]
                target[f"speedup_{key[:-2]}_paired"] = spread(ratios)


def paired_ratio(samples: dict, numerator: str, denominator: str, part: str, mode: str = "cold") -> dict:
    """Spread of the per-round ratios ``numerator`` / ``denominator`` of one part (e.g. the full
    decoder's decoding seconds over the tiny decoder's, both in the same rounds)."""
    a, b = samples[numerator][mode][part], samples[denominator][mode][part]
    return spread([x / max(y, 1e-12) for x, y in zip(a, b, strict=True)])


def load_context() -> dict:
    """What else the machine was doing: load averages (1, 5, 15 min) and CPUs, to read timings by."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"loadavg": load, "cpus": os.cpu_count(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["models"])
    rows = [result["models"][k] for k in labels]
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.5))
    left = np.zeros(len(labels))
    for key, colour in zip(PARTS[:-1], ("#999999", "#4477aa", "#ee6677")):
        width = np.array([r[key]["median"] for r in rows])
        ax.barh(y, width, left=left, color=colour, label=key.replace("_s", "").replace("_", " "))
        left += width
    e2e = np.array([r["end_to_end_s"]["median"] for r in rows])
    err = np.array([[m - r["end_to_end_s"]["q25"], r["end_to_end_s"]["q75"] - m] for m, r in zip(e2e, rows)]).T
    ax.errorbar(e2e, y, xerr=err, fmt="none", ecolor="black", capsize=3, label="end to end (IQR)")
    for yi, r, m in zip(y, rows, e2e):
        ax.text(m, yi, f"  {r['speedup_end_to_end']:.1f}x, {r['nfe']} NFE", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(
        f"seconds per batch of {rows[0]['batch_size']}, {rows[0]['prompt']} prompt (median of {rows[0]['end_to_end_s']['runs']} runs)"
    )
    ax.set_title(f"Latency on {result['machine']['device']} ({result['machine']['threads']} threads); speedup vs {result['reference']}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dollar.bench", description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", nargs="+", default=["teacher", "teacher:steps=4"], help="model specs (see python -m dollar.evaluate --help)")
    p.add_argument(
        "--reference", default="teacher", help="the model the speedup is measured against (run too); default: the 50-step teacher"
    )
    p.add_argument("--prompt", default="a red circle moving left on a black background")
    p.add_argument("--runs", type=positive_int, default=5)
    p.add_argument("--warmup", type=nonnegative_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument(
        "--decoders",
        nargs="+",
        choices=("full", "tiny"),
        default=["full"],
        help="time each model with these decoders (tiny: --fast_decode)",
    )
    p.add_argument(
        "--prompt-cache",
        choices=("both", "cold", "warm"),
        default="both",
        help="cold: the prompt cache emptied before each call; warm: the prompt already cached; both (default)",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every transformer first (same for teacher and students; raise --warmup: compiling happens in the first calls)",
    )
    p.add_argument("--out", default="bench.json", help="JSON path; the plot is written beside it as .png")
    args = p.parse_args(argv)
    quiet_command(args.threads)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is visible; use --device cpu.")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise FileNotFoundError(f"The output folder of {args.out} does not exist; create it first.")
        specs = [parse_model_spec(m) for m in dict.fromkeys([args.reference, *args.models])]
        cache: dict = {}
        pipes = {spec.model: load_pipeline(spec, cache, device) for spec in specs}  # all first: a bad name fails before any timing
        if "tiny" in args.decoders:
            for pipe in pipes.values():
                pipe.tiny_decoder()  # a missing tiny decoder fails here, in one sentence
        if args.compile:
            for pipe in pipes.values():
                pipe.transformer.compile(dynamic=False)
        result = {
            "machine": {
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "torch": torch.__version__,
                "compiled": args.compile,
                "load_before": load_context(),
            },
            "prompt": args.prompt,
            "reference": specs[0].label,
            "models": {},
        }
        jobs = [BenchJob(spec, lambda spec=spec: load_pipeline(spec, cache), decoder) for spec in specs for decoder in args.decoders]
        modes = PROMPT_MODES if args.prompt_cache == "both" else (args.prompt_cache,)
        result["models"], samples = bench_models(jobs, args.prompt, args.runs, args.warmup, args.batch_size, modes)
        result["machine"]["load_after"] = load_context()
        paired_speedups(result["models"], samples, jobs[0].label)
        for label, r in result["models"].items():
            for mode in modes:
                m = r if mode == r["prompt"] else r[mode]
                print(
                    f"{label} ({mode} prompt): {r['nfe']} NFE, end to end {m['end_to_end_s']['median']:.3f} s "
                    f"[{m['end_to_end_s']['q25']:.3f}, {m['end_to_end_s']['q75']:.3f}]: text {m['text_encoding_s']['median']:.4f} s, "
                    f"denoising {m['denoising_s']['median']:.3f} s, decoding {m['decoding_s']['median']:.4f} s; "
                    f"{m['speedup_end_to_end_paired']['median']:.1f}x (paired)",
                    file=sys.stderr,
                )
            print(f"{label}: peak memory {r['memory']['peak_mib'] or float('nan'):.0f} MiB", file=sys.stderr)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.splitext(args.out)[0] + ".png")
    for label, r in result["models"].items():
        print(f"{label}\t{r['nfe']} NFE\t{r['end_to_end_s']['median']:.3f} s\t{r['speedup_end_to_end']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
