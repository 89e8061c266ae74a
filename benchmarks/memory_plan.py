"""The README's "what fits where" table: `train/distill.py --plan` for Wan2.1-T2V-1.3B and -14B.

    python benchmarks/memory_plan.py      # ~2 min on 2 CPU cores; writes benchmarks/results/memory_plan.json

Each teacher is read from its configs alone (benchmarks/teacher_configs/, no weights), at 81 frames
of 480x832, batch 1 per GPU, gradient checkpointing on, LoRA rank 64, decoding 2 clips at a time.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import memory  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
CASES = [
    ("Wan2.1-T2V-1.3B-Diffusers", 1, 24),
    ("Wan2.1-T2V-1.3B-Diffusers", 1, 80),
    ("Wan2.1-T2V-14B-Diffusers", 8, 80),
    ("Wan2.1-T2V-14B-Diffusers", 8, 141),
]


def main() -> int:
    out = {"setup": "81 frames of 480x832, batch 1 per GPU, gradient checkpointing, LoRA rank 64, decode batch 2", "cases": []}
    for name, gpus, gb in CASES:
        teacher = os.path.join(ROOT, "teacher_configs", name)
        shape = memory.run_shape(teacher, 1, 81, 480, 832, 2000)
        counts, rows = memory.plan(teacher, shape, gpus, 64, gradient_checkpointing=True, decode_batch_size=2)
        budget = gb * memory.GiB
        fit = memory.first_fit(rows, budget)
        out["cases"].append(
            {
                "teacher": name,
                "num_gpus": gpus,
                "gpu_memory_gb": gb,
                **memory.to_json(counts, rows),
                "first_fit": fit[0].label() if fit else None,
                "table": memory.format_table(rows, budget),
            }
        )
        print(f"{name} on {gpus} x {gb} GB: {counts.parameters / 1e9:.2f} B parameters; first fit: {fit[0].label() if fit else 'none'}")
    path = os.path.join(ROOT, "results", "memory_plan.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
