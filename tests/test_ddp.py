"""Two CPU processes of train/distill.py under accelerate (DDP over gloo) end with identical weights.

accelerate 1.15's `--cpu` flag alone starts one process unless MPI is set up; two CPU processes
come from `--multi_gpu --num_processes 2` with ACCELERATE_USE_CPU=true (torch.distributed.run +
gloo), which is what this runs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from dollar.local_servers import free_port


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tiny_pipeline, tmp_path):
    teacher = tmp_path / "teacher"
    tiny_pipeline.save_pretrained(teacher)
    out = tmp_path / "student"
    port = free_port()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    cmd += [os.path.join(ROOT, "tests", "ddp_worker.py"), "--teacher", str(teacher), "--output_dir", str(out)]
    cmd += ["--num_clips", "8", "--batch_size", "2", "--max_iters", "3", "--fake_steps", "1", "--validation_prompts", "2"]
    cmd += ["--validate_every", "3", "--checkpoint_every", "3", "--report_to", "none"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.load(open(out / f"weights-rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 3
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    # ... and training moved them: the student is not the teacher any more
    from dollar import DollarPipeline

    student = DollarPipeline.from_pretrained(str(out))
    moved = any((a - b).abs().max() > 0 for a, b in zip(student.transformer.parameters(), tiny_pipeline.transformer.parameters()))
    assert moved
