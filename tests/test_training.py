import json
import os
import subprocess
import sys

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file

from conftest import ROOT, TEST_TRANSFORMER_CONFIG, TEST_VAE_CONFIG
from dollar.data import WorldVideoDataset
from dollar.losses import conjugate_velocity_loss
from dollar.metrics import psnr
from dollar.models import CausalVideoAutoencoder
from dollar.schedule import ddpm_alphas_cumprod


def test_vae_round_trip_shapes_and_a_few_steps_improve_reconstruction():
    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(**TEST_VAE_CONFIG)
    x = torch.stack([WorldVideoDataset(2, seed=3)[i]["video"] for i in range(2)])
    z = vae.encode(x).latent_dist.mode()
    assert z.shape == (2, 4, 5, 8, 8)  # 8x spatial, 4x temporal with a causal first frame
    assert vae.decode(z).sample.shape == x.shape
    before = psnr(vae.decode(z).sample.clamp(-1, 1), x)
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    for _ in range(15):
        loss = (vae.decode(vae.encode(x).latent_dist.mode()).sample - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        after = psnr(vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1), x)
    assert after > before + 3


def test_vae_is_causal_in_time():
    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(**TEST_VAE_CONFIG).eval()
    x = torch.randn(1, 3, 17, 64, 64)
    y = x.clone()
    y[:, :, 9:] = torch.randn_like(y[:, :, 9:])  # change frames 9..16 (latent frames 3 and 4)
    with torch.no_grad():
        zx, zy = vae.encode(x).latent_dist.mode(), vae.encode(y).latent_dist.mode()
    torch.testing.assert_close(zx[:, :, :3], zy[:, :, :3])  # latent frame i sees video frames <= 4i
    assert not torch.allclose(zx[:, :, 3:], zy[:, :, 3:])


def test_a_few_teacher_steps_lower_the_conjugate_velocity_loss():
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TEST_TRANSFORMER_CONFIG)
    alphas = ddpm_alphas_cumprod().float()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 4, 5, 8, 8, generator=g) * 0.5 + 0.3
    text = torch.randn(8, 6, 384, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = conjugate_velocity_loss(model, x0, text, alphas, t=t, eps=eps).item()
    for _ in range(30):
        loss = conjugate_velocity_loss(model, x0, text, alphas, t=t, eps=eps)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.7 * first


def test_teacher_script_trains_saves_and_resumes(tmp_path):
    """The real script, tiny: trains, checkpoints, resumes, writes a loadable pipeline."""
    vae_dir = tmp_path / "vae"
    vae = CausalVideoAutoencoder(**TEST_VAE_CONFIG)
    vae.save_pretrained(vae_dir)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TEST_TRANSFORMER_CONFIG.items()}))
    out = tmp_path / "teacher"
    common = [sys.executable, os.path.join(ROOT, "train", "train_teacher.py"), "--vae", str(vae_dir), "--output_dir", str(out)]
    common += "--num_clips 8 --batch_size 4 --checkpoint_every 2 --save_fp16 false --two_object_fraction 0.5 --vocabulary rich".split()
    common += ["--model_config", str(cfg)]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    subprocess.run(common + ["--max_steps", "2"], check=True, env=env, capture_output=True)
    assert os.listdir(out / "cache") == ["latents-8x2-two0.5-rich.safetensors"]
    subprocess.run(common + ["--max_steps", "4", "--resume", "true"], check=True, env=env, capture_output=True)
    steps = [json.loads(line)["step"] for line in open(out / "train_log.jsonl")]
    assert steps == [1, 2, 3, 4]
    from dollar import DollarPipeline

    pipe = DollarPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 17, 64, 64, 3)


def test_teacher_time_limit_and_export_only_write_the_ema_pipeline(tmp_path):
    """A run stopped by its time limit leaves a loadable pipeline; --export_only rebuilds the same
    one from the checkpoint; the run then resumes; exporting with no checkpoint is one sentence."""
    vae_dir = tmp_path / "vae"
    CausalVideoAutoencoder(**TEST_VAE_CONFIG).save_pretrained(vae_dir)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TEST_TRANSFORMER_CONFIG.items()}))
    out = tmp_path / "teacher"
    common = [sys.executable, os.path.join(ROOT, "train", "train_teacher.py"), "--vae", str(vae_dir), "--output_dir", str(out)]
    common += ["--model_config", str(cfg), *"--num_clips 8 --batch_size 4 --save_fp16 false".split()]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    missing = subprocess.run(common + ["--export_only", "true"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr and "no checkpoint" in missing.stderr
    subprocess.run(common + ["--max_steps", "4", "--time_limit_minutes", "1e-6"], check=True, env=env, capture_output=True)
    assert [json.loads(line)["step"] for line in open(out / "train_log.jsonl")] == [1]
    weights = out / "transformer" / "diffusion_pytorch_model.safetensors"
    stopped = load_file(weights)
    os.remove(weights)
    subprocess.run(common + ["--export_only", "true"], check=True, env=env, capture_output=True)
    exported = load_file(weights)
    assert stopped.keys() == exported.keys() and all(torch.equal(stopped[k], exported[k]) for k in stopped)
    subprocess.run(common + ["--max_steps", "2", "--resume", "true"], check=True, env=env, capture_output=True)
    assert [json.loads(line)["step"] for line in open(out / "train_log.jsonl")] == [1, 2]
    assert not all(torch.equal(exported[k], v) for k, v in load_file(weights).items())


def test_decoder_only_fine_tuning_keeps_the_latent_space(tmp_path):
    """A teacher trained on a VAE's latents stays valid: only the decoder moves."""
    sys.path.insert(0, os.path.join(ROOT, "train"))
    import train_vae

    torch.manual_seed(0)
    start = CausalVideoAutoencoder(**TEST_VAE_CONFIG)
    start.latents_mean.fill_(0.3)
    start.save_pretrained(tmp_path / "vae")
    cfg = train_vae.VAETrainConfig(
        output_dir=str(tmp_path / "out"),
        init_from=str(tmp_path / "vae"),
        decoder_only=True,
        max_steps=2,
        batch_size=1,
        eval_videos=1,
        checkpoint_every=100,
    )
    train_vae.main(cfg)
    after = CausalVideoAutoencoder.from_pretrained(tmp_path / "out")
    assert all(torch.equal(p, q) for p, q in zip(start.encoder.parameters(), after.encoder.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(start.decoder_high.parameters(), after.decoder_high.parameters()))
    assert torch.equal(after.latents_mean, start.latents_mean)


def test_vae_architecture_comes_from_vae_config(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    import pytest
    import train_vae

    from dollar.models import TINY_VAE_CONFIG, CausalVideoAutoencoder

    assert train_vae.vae_kwargs("") == TINY_VAE_CONFIG
    kwargs = train_vae.vae_kwargs('{"patch_size": 2, "latent_channels": 16}')
    assert kwargs == {**TINY_VAE_CONFIG, "patch_size": 2, "latent_channels": 16}
    spec = tmp_path / "vae.json"
    spec.write_text('{"latent_channels": 48}')
    vae = CausalVideoAutoencoder(**train_vae.vae_kwargs(str(spec)))
    z = vae.encode(torch.zeros(1, 3, 5, 32, 32)).latent_dist.mode()
    assert tuple(z.shape) == (1, 48, 2, 4, 4)
    with pytest.raises(SystemExit, match="unknown keys \\['patch'\\]"):
        train_vae.vae_kwargs('{"patch": 2}')
    with pytest.raises(SystemExit, match="must be JSON text or a JSON file"):
        train_vae.vae_kwargs("{patch_size: 2")


def test_vae_reconstruction_loss_matches_its_definition_and_its_edge_term_sees_corners():
    from dollar.models.video_vae import reconstruction_loss

    g = torch.Generator().manual_seed(0)
    recon, target = torch.randn(2, 3, 5, 8, 8, generator=g), torch.randn(2, 3, 5, 8, 8, generator=g)
    weight = 1 + 3 * (torch.rand(2, 1, 5, 8, 8, generator=g) > 0.8).float()
    err = recon - target
    plain = err.abs().mean() + err.pow(2).mean()
    assert reconstruction_loss(recon, target).item() == pytest.approx(plain.item(), rel=1e-6)
    weighted = (weight * (err.abs() + err.pow(2))).sum() / weight.expand_as(err).sum()
    assert reconstruction_loss(recon, target, weight).item() == pytest.approx(weighted.item(), rel=1e-6)
    # A square and the same square with its corners cut off: nearly equal pixels, different edges.
    square = torch.zeros(1, 1, 1, 8, 8)
    square[..., 2:6, 2:6] = 1
    cut = square.clone()
    cut[..., [2, 2, 5, 5], [2, 5, 2, 5]] = 0
    dx = (square[..., :, 1:] - square[..., :, :-1]) - (cut[..., :, 1:] - cut[..., :, :-1])
    dy = (square[..., 1:, :] - square[..., :-1, :]) - (cut[..., 1:, :] - cut[..., :-1, :])
    edge = dx.abs().mean() + dy.abs().mean()
    base = reconstruction_loss(cut, square).item()
    assert reconstruction_loss(cut, square, edge_weight=0.5).item() == pytest.approx(base + 0.5 * edge.item(), rel=1e-6)
    assert edge.item() > 0


@pytest.mark.parametrize(
    "levels, patch, spatial, full_rate_top",
    [
        ((16, 16), 4, 8, False),
        ((8, 16, 16), 2, 8, False),
        ((8, 8, 16, 16), 1, 8, False),
        ((8, 16, 16), 1, 4, False),
        ((16, 16), 4, 8, True),
        ((8, 16, 16), 2, 8, True),
    ],
)
def test_the_vae_takes_any_number_of_levels_and_stays_causal(levels, patch, spatial, full_rate_top):
    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(
        latent_channels=4, patch_size=patch, block_out_channels=levels, layers_per_block=1, full_rate_top=full_rate_top
    ).eval()
    assert vae.spatial_compression_ratio == spatial
    x = torch.randn(1, 3, 17, 32, 32)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert z.shape == (1, 4, 5, 32 // spatial, 32 // spatial)
        out = vae.decode(z).sample
        assert out.shape == x.shape
        y = x.clone()
        y[:, :, 9:] = torch.randn_like(y[:, :, 9:])  # frames 9.. feed latent frames 3 and 4 only
        assert torch.equal(vae.encode(y).latent_dist.mode()[:, :, :3], z[:, :, :3])
        z2 = z.clone()
        z2[:, :, 3:] += 1
        assert torch.equal(vae.decode(z2).sample[:, :, :9], out[:, :, :9])  # the decoder looks back only
        z3 = z.clone()
        z3[:, :, 1] += 1  # latent frame 1 is video frames 1..4: frame 0 stays, frame 1 changes
        out3 = vae.decode(z3).sample
        assert torch.equal(out3[:, :, :1], out[:, :, :1]) and not torch.allclose(out3[:, :, 1], out[:, :, 1])
    with pytest.raises(ValueError, match="at least two levels"):
        CausalVideoAutoencoder(block_out_channels=(16,))


def test_the_vae_trainer_saves_a_usable_vae_when_it_stops_at_the_time_limit(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    import train_vae

    torch.manual_seed(0)
    CausalVideoAutoencoder(**TEST_VAE_CONFIG).save_pretrained(tmp_path / "vae")
    common = dict(output_dir=str(tmp_path / "out"), init_from=str(tmp_path / "vae"), decoder_only=True, batch_size=1, eval_videos=1)
    train_vae.main(train_vae.VAETrainConfig(**common, max_steps=50, checkpoint_every=100, time_limit_minutes=1e-6))
    saved = CausalVideoAutoencoder.from_pretrained(tmp_path / "out")  # loadable after one step
    rows = [json.loads(line) for line in open(tmp_path / "out" / "train_log.jsonl")]
    assert [r["step"] for r in rows] == [1]
    assert os.path.isdir(tmp_path / "out" / "checkpoints" / "step-0000001")
    # and the run goes on from its checkpoint
    train_vae.main(train_vae.VAETrainConfig(**common, max_steps=2, checkpoint_every=100, resume="latest"))
    assert [json.loads(line)["step"] for line in open(tmp_path / "out" / "train_log.jsonl")] == [1, 2]
    assert not all(
        torch.equal(p, q) for p, q in zip(saved.parameters(), CausalVideoAutoencoder.from_pretrained(tmp_path / "out").parameters())
    )


def test_object_crops_are_windows_of_the_clips_that_hold_their_objects():
    from dollar.data import foreground_mask, object_crops

    video = torch.stack([WorldVideoDataset(1, seed=s)[0]["video"] for s in range(6)])
    g = torch.Generator().manual_seed(0)
    crops = object_crops(video, 32, 9, g)
    assert crops.shape == (6, 3, 9, 32, 32)
    for clip, crop in zip(video, crops):  # an exact window of its own clip
        _, t, h, w = clip.shape
        assert any(
            torch.equal(clip[:, t0 : t0 + 9, y : y + 32, x : x + 32], crop)
            for t0 in range(t - 8)
            for y in range(h - 31)
            for x in range(w - 31)
            if torch.equal(clip[:, t0, y, x : x + 32], crop[:, 0, 0])
        )
    assert foreground_mask(crops)[:, :, 0].flatten(1).sum(1).gt(0).all()  # each first frame shows part of an object
    # centred on an object: some of it lies within a quarter window of the centre (random windows miss it often)
    many = torch.stack([WorldVideoDataset(1, seed=s)[0]["video"] for s in range(100, 140)])
    centre = foreground_mask(object_crops(many, 16, 5, g))[:, 0, 0, 4:12, 4:12]
    assert centre.flatten(1).amax(1).mean() >= 0.85
    with pytest.raises(ValueError, match="does not fit"):
        object_crops(video, 72, 9, g)
    with pytest.raises(ValueError, match="does not fit"):
        object_crops(video, 32, 18, g)


def test_a_vae_grows_into_a_changed_architecture_keeping_the_weights_that_fit(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    import train_vae

    torch.manual_seed(0)
    old = CausalVideoAutoencoder(latent_channels=4, patch_size=2, block_out_channels=(8, 16, 16), layers_per_block=1)
    old.save_pretrained(tmp_path / "old")
    new = train_vae.grown_vae(str(tmp_path / "old"), '{"full_rate_top": true}')
    assert new.config.full_rate_top and tuple(new.config.block_out_channels) == (8, 16, 16)
    same = dict(old.state_dict())
    for name, tensor in new.state_dict().items():
        if name in same and same[name].shape == tensor.shape:
            assert torch.equal(tensor, same[name]), name
    assert new.decoder_up.weight.shape[0] == 4 * old.decoder_up.weight.shape[0]  # the time unfold needs 4x the channels
    assert "tensors kept" in capsys.readouterr().out
