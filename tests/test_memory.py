"""The memory plan (dollar/memory.py, `train/distill.py --plan`): parameter counts from configs on
the meta device, the plan against peaks measured while a tiny teacher distils, and a launch that
will not fit refused before anything loads."""

import os
import sys

import pytest
from diffusers import WanTransformer3DModel

from conftest import ROOT
from dollar import memory
from dollar import tiny_teachers as st

sys.path.insert(0, os.path.join(ROOT, "train"))
import distill  # noqa: E402

CONFIGS = os.path.join(ROOT, "benchmarks", "teacher_configs")


@pytest.mark.parametrize("name, billions", [("Wan2.1-T2V-1.3B-Diffusers", 1.419), ("Wan2.1-T2V-14B-Diffusers", 14.288)])
def test_parameter_counts_come_from_the_configs_alone(name, billions):
    counts = memory.teacher_counts(os.path.join(CONFIGS, name), lora_rank=64)
    assert abs(counts.parameters / 1e9 - billions) < 0.001
    assert counts.text_encoder_parameters > 5e9  # UMT5-XXL's encoder
    assert 0 < counts.lora_parameters < 0.1 * counts.parameters


def test_the_plan_lays_out_the_trainers_copies():
    counts = memory.TeacherCounts("WanTransformer3DModel", 1000, 10, 8, 2, 0, 0)
    full = memory.plan_bytes(counts, memory.Setting("full", "fp32"), 1, 4, (0.0, 0.0))
    # teacher + EMA + student + fake in fp32, two sets of fp32 gradients, two AdamW moments each, one step's buffer
    assert (full["weights"], full["gradients"], full["optimizer"]) == (16000, 8000, 16000 + 4000)
    bf16 = memory.plan_bytes(counts, memory.Setting("full", "bf16"), 1, 4, (0.0, 0.0))
    assert bf16["weights"] == 2 * 1000 * 2 + 2 * 1000 * 4  # frozen copies in bf16, trainable masters in fp32
    lora = memory.plan_bytes(counts, memory.Setting("lora", "bf16"), 1, 4, (0.0, 0.0))
    assert lora["weights"] == 1000 * 2 + 10 * 4 + 2 * 10 * 4 and lora["gradients"] == 2 * 10 * 4
    fsdp = memory.plan_bytes(counts, memory.Setting("full", "fp32", "fsdp", 4), 1, 4, (0.0, 0.0))
    assert fsdp["weights"] == full["weights"] / 4 and fsdp["optimizer"] == full["optimizer"] / 4


@pytest.fixture(scope="module")
def small_wan(tmp_path_factory):
    """A stock Wan pipeline whose transformer is big enough (4.9 M parameters) to dominate its
    tiny VAE and text encoder, so the plan's terms are what the run holds."""
    pipe = st.wan()
    config = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}
    pipe.transformer = WanTransformer3DModel(
        **{**config, "num_attention_heads": 4, "attention_head_dim": 64, "ffn_dim": 1024, "num_layers": 4}
    )
    folder = tmp_path_factory.mktemp("small") / "wan"
    pipe.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
@pytest.mark.parametrize("flags, row", [([], "full / fp32 / ddp x 1"), (["--lora_rank", "16"], "lora / fp32 / ddp x 1")])
def test_plan_is_within_25_percent_of_the_measured_peak(small_wan, tmp_path, flags, row):
    args = ["--teacher", small_wan, "--output_dir", str(tmp_path / "s"), "--num_clips", "4", "--batch_size", "2", "--max_iters", "2"]
    args += ["--fake_steps", "1", "--height", "32", "--width", "32", "--num_frames", "9", "--validate_every", "0", "--report_to", "none"]
    args += ["--checkpoint_every", "100", "--measure_memory", "true", *flags]
    measured = distill.main(distill.parse_config(args))["memory"]
    shape = memory.run_shape(small_wan, 2, 9, 32, 32, 4)
    _, rows = memory.plan(small_wan, shape, 1, lora_rank=16)
    planned = next(b for s, b in rows if s.label() == row)
    peak = measured["resident_tensor_bytes"] + measured["loop_peak_tensor_bytes"]
    print(f"{row}: plan {planned['total'] / 2**20:.1f} MiB, measured {peak / 2**20:.1f} MiB")  # pytest -s shows the figures the README cites
    assert abs(planned["total"] - peak) <= 0.25 * peak, (planned, measured)
    resident = planned["weights"] + planned["vae_and_text_encoder"]
    assert abs(resident - measured["resident_tensor_bytes"]) <= 0.1 * measured["resident_tensor_bytes"]


def test_a_launch_that_does_not_fit_is_refused_in_one_sentence_before_loading(small_wan, tmp_path, monkeypatch):
    monkeypatch.setattr(distill, "load_teacher", lambda *a: pytest.fail("the teacher was loaded"))
    base = [
        "--teacher",
        small_wan,
        "--output_dir",
        str(tmp_path / "s"),
        "--height",
        "32",
        "--width",
        "32",
        "--num_frames",
        "9",
        "--report_to",
        "none",
    ]
    shape = memory.run_shape(small_wan, 16, 9, 32, 32, 2000)
    _, rows = memory.plan(small_wan, shape, 1, lora_rank=64)
    totals = {s.label(): b["total"] for s, b in rows}
    budget = (totals["full / fp32 / ddp x 1"] + totals["full / bf16 / ddp x 1"]) / 2
    # the least compromise that fits: full fine-tuning with bf16 frozen copies, before LoRA
    with pytest.raises(SystemExit, match=r"full / fp32 / ddp x 1 needs about .* available; use full / bf16 / ddp x 1 .*see --plan"):
        distill.main(distill.parse_config([*base, "--gpu_memory_gb", str(budget / memory.GiB)]))
    budget = totals["lora / bf16 / ddp x 1"] * 1.01
    assert all(total > budget for label, total in totals.items() if label != "lora / bf16 / ddp x 1")
    with pytest.raises(SystemExit, match=r"use lora / bf16 / ddp x 1"):
        distill.main(distill.parse_config([*base, "--gpu_memory_gb", str(budget / memory.GiB)]))
    with pytest.raises(SystemExit, match="no setting fits"):
        distill.main(distill.parse_config([*base, "--gpu_memory_gb", "0.00001"]))


def test_plan_prints_every_setting_and_stops(small_wan, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(distill, "load_teacher", lambda *a: pytest.fail("the teacher was loaded"))
    args = ["--teacher", small_wan, "--output_dir", str(tmp_path / "s"), "--plan", "--num_gpus", "2", "--height", "32", "--width", "32"]
    result = distill.main(distill.parse_config([*args, "--num_frames", "9", "--report_to", "none"]))
    assert result["iterations"] == 0
    out = capsys.readouterr().out
    assert "4.85 B" not in out and "WanTransformer3DModel: 0.00 B parameters" in out
    assert all(f"{m} / {p} / {s} x 2" in out for m in ("full", "lora") for p in ("fp32", "bf16") for s in ("ddp", "fsdp"))
