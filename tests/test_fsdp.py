"""Sharded distillation on two CPU processes (gloo), launched the way a user launches it on GPUs:
`accelerate launch --config_file train/configs/accelerate-fsdp.yaml train/distill.py ...`.

FSDP2 shards the student, the fake score, the frozen teacher and the EMA target; the latent reward
model stays whole (DDP). Both processes draw the same batch (tests/ddp_worker.py,
DOLLAR_TEST_SAME_BATCH), so the averaged gradient is the one-process gradient and the sharded run
must reproduce a one-process run: same losses at every iteration, same saved student (gathered by
both processes, written by the main one), and a resume from its sharded checkpoint that continues
exactly. The same holds for LoRA under FSDP (the one frozen base sharded with its adapters); LoRA
under DDP (the base replicated, the adapters' gradients averaged) keeps one set of weights."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, TEST_TRANSFORMER_CONFIG, TEST_VAE_CONFIG
from dollar import tiny_teachers as st

RTOL = 1e-4  # relative, on every loss and every saved weight (measured: see the printed figures, pytest -s)
ATOL = 1e-6  # absolute, for weights near zero (losses are compared relatively only)
ARGS = ["--num_clips", "8", "--batch_size", "2", "--max_iters", "3", "--fake_steps", "1", "--validation_prompts", "2"]
ARGS += ["--validate_every", "3", "--checkpoint_every", "2", "--report_to", "none", "--generator_lr", "1e-3", "--fake_lr", "1e-3"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, text_encoder):
    """The tests' tiny teacher with two DiT blocks, so the sharding has several units."""
    from diffusers import DDIMScheduler, WanTransformer3DModel

    from dollar import DollarPipeline
    from dollar.models import CausalVideoAutoencoder
    from dollar.schedule import DDIM_SCHEDULER_CONFIG

    torch.manual_seed(0)
    tokenizer, encoder = text_encoder
    pipe = DollarPipeline(
        transformer=WanTransformer3DModel(**{**TEST_TRANSFORMER_CONFIG, "num_layers": 2}).eval(),
        vae=CausalVideoAutoencoder(**TEST_VAE_CONFIG).eval(),
        scheduler=DDIMScheduler(**DDIM_SCHEDULER_CONFIG),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    folder = tmp_path_factory.mktemp("fsdp") / "teacher"
    pipe.save_pretrained(folder)
    return str(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launch_args: list[str], args: list[str], fsdp: bool = False, processes: int = 2, same_batch: bool = True) -> list[dict]:
    """tests/ddp_worker.py (the trainer) on ``processes`` CPU processes of one thread each, under
    `accelerate launch` when more than one (the one-process reference runs in a process of its own
    too, so that both compute with the same kernels); each process's report."""
    worker = [os.path.join(ROOT, "tests", "ddp_worker.py"), *args]
    cmd = [sys.executable, *worker]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--num_processes", str(processes), "--num_machines", "1"]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *worker]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", DOLLAR_TEST_SAME_BATCH="1" if same_batch else "0")
    env.update(DOLLAR_TEST_CPU_AS_GPUS="1", ACCELERATE_TORCH_DEVICE="cpu") if fsdp else env.update(ACCELERATE_USE_CPU="true")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = args[args.index("--output_dir") + 1]
    return [json.load(open(os.path.join(out, f"weights-rank{r}.json"))) for r in range(processes)]


def one_process(args: list[str]) -> list[dict]:
    return launch([], args, processes=1)[0]["losses"]


def relative_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in a if a[k] is not None)


def assert_same_losses(runs: list[list[dict]], reference: list[dict], what: str) -> None:
    for run in runs:
        assert len(run) == len(reference)
        for got, want in zip(run, reference):
            assert got.keys() == want.keys()
            for k in want:
                if want[k] is not None:
                    assert got[k] == pytest.approx(want[k], rel=RTOL, abs=0), (what, k, got, want)
    gap = max(relative_gap(got, want) for run in runs for got, want in zip(run, reference))
    print(f"{what}: largest relative difference from the one-process losses {gap:.1e} (tolerance {RTOL:.0e})")


def saved_student(folder) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"))


FSDP_CONFIG = ["--config_file", os.path.join(ROOT, "train", "configs", "accelerate-fsdp.yaml")]


def check_sharded_run_against_one_process(teacher: str, args: list[str], tmp_path, what: str) -> None:
    """Run ``args`` sharded on two processes and in one; compare what each process holds, the losses,
    the saved student, and a resume from the sharded checkpoint of iteration 2."""
    sharded_out, single_out = tmp_path / "fsdp", tmp_path / "single"
    ranks = launch(FSDP_CONFIG, ["--teacher", teacher, "--output_dir", str(sharded_out), *args], fsdp=True)
    reference = one_process(["--teacher", teacher, "--output_dir", str(single_out), *args])

    # every transformer (with LoRA: the one base, seen in every role) is split between the two
    # processes; the latent reward model is whole on each
    for role in ("teacher", "student", "fake", "ema"):
        held = [r["held"][role] for r in ranks]
        assert all(h["sharded"] for h in held), (role, held)
        assert sum(h["local"] for h in held) == held[0]["whole"] and max(h["local"] for h in held) < 0.6 * held[0]["whole"], (role, held)
    reward = [r["held"]["reward_model"] for r in ranks]
    assert not any(h["sharded"] for h in reward) and all(h["local"] == h["whole"] for h in reward)
    assert {r["reward_model_wrapper"] for r in ranks} == {"DistributedDataParallel"}

    # the same losses as one process, on both processes, at every iteration
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 3
    assert {"loss_vsd", "loss_cd", "loss_fake", "loss_lrm_fit", "loss_ft"} <= set(reference[0])
    assert_same_losses([r["losses"] for r in ranks], reference, what)

    # the saved student: gathered from the shards, the one-process student
    got, want = saved_student(sharded_out), saved_student(single_out)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL)
    gap = max(float((got[k] - want[k]).abs().max()) for k in want)
    start = load_file(os.path.join(teacher, "transformer", "diffusion_pytorch_model.safetensors"))
    moved = max(float((want[k] - v).abs().max()) for k, v in start.items())
    print(f"{what}: saved student differs from the one-process student by at most {gap:.1e} (training moved it by {moved:.1e})")
    assert moved > 100 * max(gap, ATOL)

    # a resume from the sharded checkpoint of iteration 2 continues exactly: iteration 3 again
    resumed_out = tmp_path / "resumed"
    checkpoint = sharded_out / "checkpoints" / "iteration-0000002"
    assert json.load(open(checkpoint / "checkpoint.json"))["info"]["iteration"] == 2
    resumed = launch(FSDP_CONFIG, ["--teacher", teacher, "--output_dir", str(resumed_out), *args, "--resume", str(checkpoint)], fsdp=True)
    assert all(r["iterations"] == 3 and len(r["losses"]) == 1 for r in resumed)
    assert_same_losses([r["losses"] for r in resumed], reference[2:], f"{what}, resumed at iteration 2")
    got = saved_student(resumed_out)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_fsdp_shards_every_transformer_and_reproduces_the_one_process_run(teacher, tmp_path):
    check_sharded_run_against_one_process(teacher, ARGS, tmp_path, "FSDP, two processes")


@pytest.mark.slow
def test_lora_under_fsdp_shards_the_base_and_reproduces_the_one_process_run(tmp_path):
    """One frozen base carries the student, fake and EMA adapters; sharded, it holds a half of each."""
    teacher = st.save("wan", tmp_path / "teacher")
    h, w, f = st.SIZES["wan"]
    args = [*ARGS, "--height", str(h), "--width", str(w), "--num_frames", str(f), "--lora_rank", "4"]
    check_sharded_run_against_one_process(teacher, args, tmp_path, "LoRA under FSDP, two processes")
    got, want = (load_file(tmp_path / run / "student_lora" / "pytorch_lora_weights.safetensors") for run in ("fsdp", "single"))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_lora_over_two_processes_averages_the_adapters_gradients(tmp_path):
    """Each process draws its own batch; averaging the adapters' gradients keeps the two replicas
    identical (without it they part after the first step), and the student learns."""
    teacher = st.save("wan", tmp_path / "teacher")
    h, w, f = st.SIZES["wan"]
    args = [*ARGS, "--height", str(h), "--width", str(w), "--num_frames", str(f), "--lora_rank", "4"]
    ranks = launch(["--multi_gpu"], ["--teacher", teacher, "--output_dir", str(tmp_path / "ddp"), *args], same_batch=False)
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 3
    assert ranks[0]["losses"] != ranks[1]["losses"]  # two different batches ...
    assert ranks[0]["sha256"] == ranks[1]["sha256"]  # ... one set of weights
    got = saved_student(tmp_path / "ddp")
    base = load_file(os.path.join(teacher, "transformer", "diffusion_pytorch_model.safetensors"))
    assert max(float((got[k] - base[k]).abs().max()) for k in base) > 1e-4  # the merged adapter moved the student
    assert os.path.exists(tmp_path / "ddp" / "student_lora" / "pytorch_lora_weights.safetensors")


def test_the_launch_configs_the_trainer_refuses_are_one_sentence():
    from types import SimpleNamespace

    from dollar.distill_setup import check_launch

    def accelerator(fsdp2=True, precision="no"):
        return SimpleNamespace(distributed_type="DistributedType.FSDP", is_fsdp2=fsdp2, mixed_precision=precision)

    for lora_rank in (0, 8):
        check_launch(SimpleNamespace(lora_rank=lora_rank), accelerator())
        check_launch(SimpleNamespace(lora_rank=lora_rank), accelerator(precision="bf16"))
    with pytest.raises(SystemExit, match="fsdp_version: 2"):
        check_launch(SimpleNamespace(lora_rank=0), accelerator(fsdp2=False))
    with pytest.raises(SystemExit, match="bf16 or no, not fp16"):
        check_launch(SimpleNamespace(lora_rank=0), accelerator(precision="fp16"))
