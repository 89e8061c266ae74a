"""LoRA distillation (dollar/lora.py through peft) on a tiny stock Wan teacher: one frozen base,
adapters for the student, the fake score and the EMA target."""

import os
import sys

import pytest
import torch

from conftest import ROOT
from dollar import DollarPipeline
from dollar import tiny_teachers as st
from dollar.lora import AdapterView, active_adapter, adapter_parameters, add_adapters, merged_student

sys.path.insert(0, os.path.join(ROOT, "train"))
import distill  # noqa: E402


def _inputs(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, transformer.config.in_channels, 3, 2, 2, generator=g)
    return dict(
        hidden_states=x, timestep=torch.tensor([700.0, 300.0]), encoder_hidden_states=torch.randn(2, 8, 32, generator=g), return_dict=False
    )


def test_roles_share_one_base_and_switching_keeps_gradients():
    base = st.wan().transformer.float()
    ref = base(**_inputs(base))[0]
    add_adapters(base, rank=4)
    for p in adapter_parameters(base, "student").values():
        torch.nn.init.normal_(p, std=0.1)
    teacher, student, fake = AdapterView(base, None), AdapterView(base, "student"), AdapterView(base, "fake")
    out = student(**_inputs(base))[0]
    with torch.no_grad():  # other roles run between the student's forward and its backward
        torch.testing.assert_close(teacher(**_inputs(base))[0], ref)
        torch.testing.assert_close(fake(**_inputs(base))[0], ref)  # a fresh adapter is the teacher
    assert (out - ref).abs().max() > 1e-3
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter_parameters(base, "student").values())
    assert all(p.grad is None for p in adapter_parameters(base, "fake").values())
    assert not any(p.requires_grad for n, p in base.named_parameters() if "lora_" not in n)
    # outside a role the base keeps no adapter switched on or off by accident
    with active_adapter(base, None):
        torch.testing.assert_close(base(**_inputs(base))[0], ref)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    teacher = st.save("wan", root / "teacher")
    h, w, f = st.SIZES["wan"]
    cfg = distill.parse_config(
        ["--teacher", teacher, "--output_dir", str(root / "student"), "--num_clips", "4", "--batch_size", "2", "--max_iters", "10"]
        + ["--height", str(h), "--width", str(w), "--num_frames", str(f), "--validate_every", "0", "--report_to", "none"]
        + ["--lora_rank", "8", "--generator_lr", "1e-4", "--fake_lr", "5e-3", "--fake_steps", "4", "--checkpoint_every", "100"]
    )
    return teacher, root / "student", distill.main(cfg)


@pytest.mark.slow
def test_lora_distillation_trains_only_adapters_and_lowers_the_fake_score_loss(lora_run):
    teacher_folder, _, result = lora_run
    base = result["lora_base"]
    original = DollarPipeline.from_pretrained(teacher_folder).transformer.state_dict()
    own = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(own[k], original[k]) for k in original)  # the frozen base is the teacher, untouched
    assert any(p.abs().sum() > 0 for n, p in adapter_parameters(base, "student").items() if "lora_B" in n)
    # the fake score, on a fixed set of the student's samples: its loss is below where it started (the teacher)
    pipe = DollarPipeline.from_pretrained(teacher_folder)
    h, w, f = st.SIZES["wan"]
    shape = (16, *pipe.latent_shape(f, h, w))
    g = torch.Generator().manual_seed(1)
    text = pipe.encode_text(["a red circle moving left", "a blue square", "a green star growing", "a cyan cross"] * 4)
    with torch.no_grad():
        samples = pipe.make_denoiser(AdapterView(base, "student"), shape[1:])(torch.randn(shape, generator=g), 1000.0, text)[0]
        t, eps = pipe.noise_schedule(shape[1:]).sample_timesteps(16, g), torch.randn(shape, generator=g)
        losses = {
            role: pipe.make_denoiser(AdapterView(base, role), shape[1:]).denoising_loss(samples, text, t, eps).item()
            for role in (None, "fake")
        }
    print(f"fake-score loss on held-out student samples: {losses[None]:.2f} at the start (the teacher), {losses['fake']:.2f} after")
    assert losses["fake"] < 0.98 * losses[None], losses  # measured: 2.50 -> 2.39 (pytest -s)


@pytest.mark.slow
def test_merged_export_and_the_adapter_alone_give_the_same_student(lora_run):
    teacher_folder, student_folder, result = lora_run
    merged = DollarPipeline.from_pretrained(str(student_folder)).transformer
    stock = DollarPipeline.from_pretrained(teacher_folder).transformer
    stock.load_lora_adapter(
        str(student_folder / "student_lora"), weight_name="pytorch_lora_weights.safetensors", adapter_name="student", prefix=None
    )
    with torch.no_grad():
        want = AdapterView(result["lora_base"], "student")(**_inputs(stock))[0]
        torch.testing.assert_close(merged(**_inputs(stock))[0], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stock(**_inputs(stock))[0], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(merged_student(result["lora_base"])(**_inputs(stock))[0], want, rtol=1e-4, atol=1e-5)
    assert (want - DollarPipeline.from_pretrained(teacher_folder).transformer(**_inputs(stock))[0]).abs().max() > 1e-4
