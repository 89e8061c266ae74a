"""The GPU check of the GPU-scale issue: distil tiny stock Wan and CogVideoX teachers on CUDA and
compare each run's peak memory with the plan.

    python benchmarks/cuda_check.py                       # on a CUDA machine: bf16, xformers when installed
    accelerate launch --num_processes N benchmarks/cuda_check.py   # adds FSDP runs when N > 1 (not yet: see the README)
    python benchmarks/cuda_check.py --device cpu --iters 2 --out /tmp/cpu_check.json   # the same code path on a CPU

For each family x {full, LoRA}: 20 distillation iterations (bf16 frozen copies, bf16 autocast),
the attention backend used, iterations per second, the measured peak (CUDA's allocator peak; on a
CPU, resident tensors + the training loop's peak from --measure_memory) and the plan's total for the
same setting. Writes benchmarks/results/cuda_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dollar import memory, tiny_teachers  # noqa: E402


def run(name: str, folder: str, lora: bool, iters: int, device: str) -> dict:
    h, w, f = tiny_teachers.SIZES[name]
    cuda = device == "cuda"
    output_dir = os.path.join(folder, "..", f"student-{name}-{'lora' if lora else 'full'}")
    args = ["--teacher", folder, "--output_dir", output_dir]
    args += ["--num_clips", "8", "--batch_size", "2", "--max_iters", str(iters), "--fake_steps", "2", "--height", str(h), "--width", str(w)]
    args += ["--num_frames", str(f), "--validate_every", "0", "--report_to", "none", "--checkpoint_every", str(iters)]
    args += ["--weight_dtype", "bf16", "--mixed_precision", "bf16" if cuda else "no", "--attention_backend", "auto"]
    args += ["--lora_rank", "8"] if lora else []
    args += [] if cuda else ["--measure_memory", "true"]
    # The trainer as a user runs it, in its own process, so its CUDA peak is this run's alone.
    env = dict(os.environ, PYTHONPATH=ROOT, **({} if cuda else {"CUDA_VISIBLE_DEVICES": ""}))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train", "distill.py"), *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: train/distill.py failed on the {name} teacher ({'LoRA' if lora else 'full'}):\n{done.stderr[-4000:]}")
    with open(os.path.join(output_dir, "distill_config.json")) as fh:
        record = json.load(fh)  # the config, iterations_done, peak memory and (with --measure_memory) the tensor bytes
    with open(os.path.join(output_dir, "train_log.jsonl")) as fh:
        history = [json.loads(line) for line in fh if line.strip()]
    backend = next((line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("attention backend: ")), None)
    if cuda:
        peak = round(record["peak_cuda_mb"] * 2**20)  # torch.cuda.max_memory_allocated() of the run's process
    else:
        peak = record["resident_tensor_bytes"] + record["loop_peak_tensor_bytes"]
    shape = memory.run_shape(folder, 2, f, h, w, 8)
    _, rows = memory.plan(folder, shape, 1, lora_rank=8)
    label = f"{'lora' if lora else 'full'} / bf16 / ddp x 1"
    planned = next(b["total"] for s, b in rows if s.label() == label)
    return {
        "family": name,
        "setting": label,
        "iterations": record["iterations_done"],
        "iterations_per_s": record["iterations_done"] / seconds,
        "attention_backend": str(backend),
        "peak_bytes": peak,
        "planned_bytes": planned,
        "plan_error": (planned - peak) / peak,
        "losses_finite": all(all(v == v for k, v in r.items() if k.startswith("loss_") and v is not None) for r in history),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--families", default="wan,cogvideox")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "cuda_check.json"))
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; pass --device cpu to run the same code on the CPU.", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families.split(","):
            folder = tiny_teachers.save(name, os.path.join(tmp, name))
            for lora in (False, True):
                runs.append(run(name, folder, lora, args.iters, args.device))
                print(json.dumps(runs[-1]))
    report = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "xformers": _xformers_version(),
        "runs": runs,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    return 0


def _xformers_version() -> str | None:
    try:
        import xformers

        return xformers.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
