"""The teacher class: Wan plus absolute positions, exactly Wan until trained, loadable by diffusers."""

import json
import os
import subprocess
import sys

import torch
from diffusers import WanTransformer3DModel

from conftest import ROOT, TEST_TRANSFORMER_CONFIG, TEST_VAE_CONFIG
from dollar.models import CausalVideoAutoencoder, DollarWanTransformer3DModel


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 5, 8, 8, generator=g), torch.tensor([10, 900]), torch.randn(2, 7, 384, generator=g)


def test_a_converted_wan_computes_exactly_what_wan_computes():
    torch.manual_seed(0)
    wan = WanTransformer3DModel(**TEST_TRANSFORMER_CONFIG).eval()
    ours = DollarWanTransformer3DModel.from_wan(wan).eval()
    x, t, e = _inputs()
    with torch.no_grad():
        assert torch.equal(wan(x, t, e).sample, ours(x, t, e).sample)
        torch.nn.init.normal_(ours.position_projection.weight, std=0.1)
        moved = ours(x, t, e).sample
    assert not torch.allclose(wan(x, t, e).sample, moved)  # the positions reach the output
    # ... and they are absolute: the same content shifted by one frame no longer gives shifted outputs
    rolled = ours(torch.roll(x, 1, dims=2), t, e).sample
    assert not torch.allclose(torch.roll(moved, 1, dims=2)[:, :, 1:], rolled[:, :, 1:], atol=1e-4)


def test_switched_off_it_is_stock_wan_and_round_trips(tmp_path):
    plain = DollarWanTransformer3DModel(**TEST_TRANSFORMER_CONFIG, absolute_positions=False)
    assert plain.position_projection is None
    assert set(plain.state_dict()) == set(WanTransformer3DModel(**TEST_TRANSFORMER_CONFIG).state_dict())
    model = DollarWanTransformer3DModel(**TEST_TRANSFORMER_CONFIG).eval()
    torch.nn.init.normal_(model.position_projection.weight, std=0.1)
    model.save_pretrained(tmp_path / "m")
    loaded = DollarWanTransformer3DModel.from_pretrained(tmp_path / "m").eval()
    x, t, e = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, e).sample, loaded(x, t, e).sample)
    assert loaded.config.absolute_positions is True


def test_teacher_fine_tune_starts_from_a_stock_wan_pipeline(tiny_pipeline, tmp_path):
    """--init_from a stock-Wan teacher: trains, saves a pipeline whose transformer is ours."""
    tiny_pipeline.save_pretrained(tmp_path / "stock")
    vae_dir = tmp_path / "vae"
    CausalVideoAutoencoder(**TEST_VAE_CONFIG).save_pretrained(vae_dir)
    out = tmp_path / "ft"
    cmd = [sys.executable, os.path.join(ROOT, "train", "train_teacher.py"), "--vae", str(vae_dir), "--output_dir", str(out)]
    cmd += ["--num_clips", "4", "--batch_size", "2", "--max_steps", "1", "--save_fp16", "false", "--init_from", str(tmp_path / "stock")]
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"), capture_output=True)
    index = json.load(open(out / "model_index.json"))
    assert index["transformer"] == ["dollar.models.transformer", "DollarWanTransformer3DModel"]
    from dollar import DollarPipeline

    pipe = DollarPipeline.from_pretrained(str(out))
    assert isinstance(pipe.transformer, DollarWanTransformer3DModel)


def test_init_from_a_folder_without_a_transformer_is_one_sentence(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "train", "train_teacher.py"), "--init_from", str(tmp_path), "--vae", str(tmp_path)]
    done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "config.json" in done.stderr


def test_a_teacher_adapts_to_a_new_latent_space_keeping_its_blocks():
    sys.path.insert(0, os.path.join(ROOT, "train"))
    from train_teacher import adapt_to_latents

    torch.manual_seed(0)
    old = DollarWanTransformer3DModel(**TEST_TRANSFORMER_CONFIG)
    assert adapt_to_latents(old, dict(TEST_TRANSFORMER_CONFIG), log=lambda *a: None) is old  # same geometry: untouched
    new = adapt_to_latents(old, {**TEST_TRANSFORMER_CONFIG, "in_channels": 16, "out_channels": 16}, log=lambda *a: None)
    assert (new.config.in_channels, new.config.out_channels) == (16, 16)
    old_state, new_state = old.state_dict(), new.state_dict()
    changed = sorted(k for k in new_state if new_state[k].shape != old_state[k].shape)
    assert changed and all(k.startswith(("patch_embedding", "proj_out", "pos_proj")) for k in changed), changed
    for key in new_state:
        if key not in changed:
            assert torch.equal(new_state[key], old_state[key]), key
    x = torch.randn(1, 16, 2, 4, 4)
    out = new(x, torch.tensor([10]), torch.randn(1, 3, 384)).sample
    assert out.shape == x.shape


def test_the_default_teacher_keeps_a_4x4_token_grid_whatever_the_vae_compression():
    sys.path.insert(0, os.path.join(ROOT, "train"))
    from train_teacher import default_patch_size

    assert default_patch_size(8, 8) == (1, 2, 2)  # 8x spatial compression of 64x64 frames: the bundled teacher's patches
    assert default_patch_size(16, 16) == (1, 4, 4)  # 4x compression
    assert default_patch_size(4, 8) == (1, 1, 2)
    assert default_patch_size(2, 2) == (1, 1, 1)
