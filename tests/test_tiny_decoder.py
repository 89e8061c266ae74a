"""The tiny decoder: sized from any VAE's config, distilled by train/train_tiny_decoder.py from
ours and from stock diffusers VAEs, found by the pipeline only when it was distilled from the
pipeline's own VAE, and fast and faithful on the bundled models."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, STOCK_LTX_VAE_CONFIG, TEST_VAE_CONFIG
from dollar import DollarPipeline
from dollar.models import CausalVideoAutoencoder
from dollar.models.tiny_decoder import TinyVideoDecoder, vae_fingerprint, vae_geometry
from dollar.pipeline import BUNDLED_TINY_DECODER, ModelLoadError, postprocess_video

sys.path.insert(0, os.path.join(ROOT, "train"))
import train_tiny_decoder  # noqa: E402

WAN_VAE_CONFIG = dict(
    base_dim=8,
    z_dim=4,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    latents_mean=[0.1] * 4,
    latents_std=[2.0] * 4,
)


def stock_vae(kind: str):
    from diffusers import AutoencoderKLLTXVideo, AutoencoderKLWan

    torch.manual_seed(0)
    if kind == "wan":
        return AutoencoderKLWan(**WAN_VAE_CONFIG).eval()
    if kind == "ltx":
        return AutoencoderKLLTXVideo(**STOCK_LTX_VAE_CONFIG).eval()
    return CausalVideoAutoencoder(**TEST_VAE_CONFIG).eval()


@pytest.mark.parametrize(
    "vae_kwargs, latent",
    [
        (dict(TEST_VAE_CONFIG), (4, 5, 8, 8)),  # 8x spatial, 4x temporal
        (dict(TEST_VAE_CONFIG, latent_channels=48), (48, 5, 8, 8)),  # the redesign's 48 channels
        (dict(TEST_VAE_CONFIG, patch_size=2), (4, 5, 16, 16)),  # or 4x spatial: 12x5x16x16 latents
        (dict(TEST_VAE_CONFIG, patch_size_t=2), (4, 9, 8, 8)),  # 2x temporal
    ],
)
def test_the_tiny_decoder_takes_its_size_from_the_vae_config(vae_kwargs, latent):
    vae = CausalVideoAutoencoder(**vae_kwargs).eval()
    x = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    z = vae.encode(x).latent_dist.mode()
    assert tuple(z.shape[1:]) == latent
    tiny = TinyVideoDecoder.for_vae(vae).eval()
    assert (tiny.config.latent_channels, tiny.config.temporal_compression, tiny.config.spatial_compression) == vae_geometry(vae)
    assert tiny(z).sample.shape == vae.decode(z).sample.shape == (1, 3, 17, 64, 64)


@pytest.mark.parametrize("kind", ["wan", "ltx"])
def test_the_tiny_decoder_fits_stock_diffusers_vaes(kind):
    vae = stock_vae(kind)
    z = vae.encode(torch.rand(1, 3, 9, 32, 32) * 2 - 1).latent_dist.mode()
    tiny = TinyVideoDecoder.for_vae(vae).eval()
    assert tiny.config.vae_class == type(vae).__name__
    assert tiny(z).sample.shape == vae.decode(z).sample.shape == (1, 3, 9, 32, 32)


def test_tiny_decoder_is_causal_in_time():
    tiny = TinyVideoDecoder(latent_channels=4).eval()
    z = torch.randn(1, 4, 5, 8, 8)
    later = z.clone()
    later[:, :, 3:] += 1.0  # change only latent frames 3 and 4
    a, b = tiny(z).sample, tiny(later).sample
    assert torch.equal(a[:, :, :9], b[:, :, :9])  # video frames up to 4*2 depend on latent frames 0..2 alone
    assert not torch.equal(a[:, :, 9:], b[:, :, 9:])


def test_save_load_round_trip_and_fingerprint(tmp_path):
    vae = CausalVideoAutoencoder(**TEST_VAE_CONFIG).eval()
    tiny = TinyVideoDecoder.for_vae(vae).eval()
    tiny.save_pretrained(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "diffusion_pytorch_model.safetensors").exists()
    loaded = TinyVideoDecoder.from_pretrained(tmp_path / "tiny").eval()
    z = torch.randn(2, 4, 5, 8, 8)
    assert torch.equal(loaded(z).sample, tiny(z).sample)
    assert loaded.config.vae_fingerprint == vae_fingerprint(vae) == vae_fingerprint(vae.half())  # stable across fp16/fp32
    with torch.no_grad():
        vae.decoder_up.weight[0, 0, 0, 0, 0] += 0.1
    assert vae_fingerprint(vae) != loaded.config.vae_fingerprint


# --- training -----------------------------------------------------------------------------


def _train(tmp_path, vae_dir, **kw):
    defaults = dict(
        vae=str(vae_dir),
        output_dir=str(tmp_path / "tiny"),
        num_frames=5,
        height=32,
        width=32,
        pool_clips=4,
        block_out_channels="16,8",
        batch_size=2,
        max_steps=4,
        eval_every=4,
        eval_clips=1,
        checkpoint_every=2,
        warmup_steps=1,
    )
    return train_tiny_decoder.main(train_tiny_decoder.TinyDecoderTrainConfig(**{**defaults, **kw}))


@pytest.mark.parametrize("kind", ["ours", "wan", "ltx"])
def test_the_trainer_distils_from_any_vae_folder(tmp_path, kind):
    vae = stock_vae(kind)
    vae.save_pretrained(tmp_path / "vae")
    # one batch over and over (two clips, no jitter): the loss must fall if the decoder learns at all
    summary = _train(
        tmp_path, tmp_path / "vae", pool_clips=2, latent_noise=0.0, max_steps=12, learning_rate=1e-2, eval_every=12, checkpoint_every=12
    )
    tiny = TinyVideoDecoder.from_pretrained(tmp_path / "tiny")
    assert tiny.config.vae_fingerprint == vae_fingerprint(vae) and tiny.config.latent_channels == 4
    assert tiny.config.vae_class == type(vae).__name__
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "tiny" / "train_log.jsonl")]
    assert len(losses) == 12 and min(losses[-3:]) < 0.9 * losses[0]
    assert "train/train_tiny_decoder.py --vae" in (tmp_path / "tiny" / "README.md").read_text()
    print(f"{kind}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, {summary['eval_psnr_vs_full']:.1f} dB against the full decoder")


def test_the_trainer_reads_a_pipeline_folder_and_resumes_exactly(tmp_path, tiny_pipeline):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    _train(tmp_path, tmp_path / "pipe", output_dir=str(tmp_path / "straight"))
    assert _train(tmp_path, tmp_path / "pipe", time_limit_minutes=1e-6)["step"] == 1  # stopped (and checkpointed) after one step
    _train(tmp_path, tmp_path / "pipe", resume="latest")
    rows = [json.loads(line) for line in open(tmp_path / "tiny" / "train_log.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    straight = TinyVideoDecoder.from_pretrained(tmp_path / "straight").state_dict()
    resumed = TinyVideoDecoder.from_pretrained(tmp_path / "tiny").state_dict()
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


def test_a_generators_samples_join_the_pool_and_one_with_another_vae_is_skipped(tmp_path, tiny_pipeline, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    other = CausalVideoAutoencoder(**TEST_VAE_CONFIG)  # the same architecture, other weights
    tiny_pipeline.vae = other.eval()
    tiny_pipeline.save_pretrained(tmp_path / "other")
    size = dict(num_frames=17, height=64, width=64, pool_clips=2, generated_clips=2, max_steps=2, eval_every=2)
    summary = _train(tmp_path, tmp_path / "pipe", generated_from=[str(tmp_path / "pipe"), str(tmp_path / "other")], **size)
    out = capsys.readouterr().out
    assert "pool: 4 latents, 2 of them encoded clips" in out  # 2 clips + 2 samples; the other VAE's pipeline skipped
    assert f"skipping --generated_from {tmp_path / 'other'}" in out
    assert summary["eval_psnr_sampled_vs_full"] is not None  # measured on the generator's samples of held-out captions


def test_the_time_limit_stops_with_a_checkpoint_and_a_usable_decoder(tmp_path, tiny_pipeline):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    summary = _train(tmp_path, tmp_path / "pipe", max_steps=1000, time_limit_minutes=1e-6)
    assert summary["step"] == 1
    assert (tmp_path / "tiny" / "checkpoints" / "step-0000001" / "checkpoint.json").exists()
    assert "--resume latest" in (tmp_path / "tiny" / "README.md").read_text()
    assert TinyVideoDecoder.from_pretrained(tmp_path / "tiny").config.vae_fingerprint == tiny_pipeline.vae_fingerprint()


def test_the_trainer_refuses_what_is_not_a_vae(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="neither a VAE folder"):
        _train(tmp_path, tmp_path / "empty")


# --- the pipeline ---------------------------------------------------------------------------


def _run(pipe, **kw):
    return pipe("a red circle moving left", num_inference_steps=2, generator=torch.Generator().manual_seed(0), **kw)


def test_decoder_tiny_is_one_option_and_leaves_the_full_decoder_alone(tiny_pipeline, tmp_path):
    full = _run(tiny_pipeline).frames
    with pytest.raises(ModelLoadError, match=r"No tiny decoder for this pipeline's VAE.*train/train_tiny_decoder.py --vae") as err:
        _run(tiny_pipeline, decoder="tiny")  # none of its own, and the bundled one belongs to the bundled VAE
    print(err.value)
    tiny = TinyVideoDecoder.for_vae(tiny_pipeline.vae).eval()
    tiny_pipeline.set_tiny_decoder(tiny)
    fast = _run(tiny_pipeline, decoder="tiny")
    assert fast.frames.shape == full.shape and fast.timings["decoding_s"] > 0
    latents = _run(tiny_pipeline, output_type="latent").frames
    with torch.no_grad():
        assert np.array_equal(fast.frames, postprocess_video(tiny(latents).sample.clamp(-1, 1), "np"))  # the tiny decoder's own video
    assert np.array_equal(_run(tiny_pipeline).frames, full)  # the default still decodes with the VAE
    with pytest.raises(ValueError, match="decoder must be one of"):
        _run(tiny_pipeline, decoder="fast")
    other = TinyVideoDecoder.for_vae(CausalVideoAutoencoder(**TEST_VAE_CONFIG))
    with pytest.raises(ValueError, match="distilled from another VAE"):
        tiny_pipeline.set_tiny_decoder(other)


def test_a_saved_pipeline_finds_its_own_tiny_decoder_and_a_missing_one_says_how_to_train_it(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "plain")
    plain = DollarPipeline.from_pretrained(str(tmp_path / "plain"))
    with pytest.raises(ModelLoadError, match=r"train/train_tiny_decoder.py --vae .*plain --output_dir .*plain/tiny_decoder"):
        plain("a red circle", num_inference_steps=1, decoder="tiny")
    tiny_pipeline.set_tiny_decoder(TinyVideoDecoder.for_vae(tiny_pipeline.vae).eval())
    expected = _run(tiny_pipeline, decoder="tiny").frames
    tiny_pipeline.save_pretrained(tmp_path / "with")
    assert (tmp_path / "with" / "tiny_decoder" / "config.json").exists()
    loaded = DollarPipeline.from_pretrained(str(tmp_path / "with"))
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(_run(loaded, decoder="tiny").frames, expected)
    TinyVideoDecoder.for_vae(CausalVideoAutoencoder(**TEST_VAE_CONFIG)).save_pretrained(tmp_path / "with" / "tiny_decoder")
    stale = DollarPipeline.from_pretrained(str(tmp_path / "with"))  # its VAE was replaced, its tiny decoder was not
    with pytest.raises(ModelLoadError, match=r"with/tiny_decoder.*distilled from another VAE.*--output_dir .*with/tiny_decoder"):
        stale("a red circle", num_inference_steps=1, decoder="tiny")


def test_generate_fast_decode(tiny_pipeline, tmp_path, capsys):
    from dollar import generate

    tiny_pipeline.set_tiny_decoder(TinyVideoDecoder.for_vae(tiny_pipeline.vae).eval())
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    args = ["--model", str(tmp_path / "pipe"), "--prompt", "a red circle", "--steps", "1"]
    assert generate.main([*args, "--fast_decode", "--out", str(tmp_path / "v.npy")]) == 0
    assert "(tiny decoder)" in capsys.readouterr().out and np.load(tmp_path / "v.npy").shape == (17, 64, 64, 3)
    (tmp_path / "pipe" / "tiny_decoder" / "config.json").unlink()
    assert generate.main([*args, "--fast-decode", "--out", str(tmp_path / "w.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No tiny decoder") and "train/train_tiny_decoder.py" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not os.path.exists(os.path.join(BUNDLED_TINY_DECODER, "config.json")), reason="assets/tiny-decoder is not built")
def test_the_bundled_tiny_decoder_serves_every_bundled_model_and_matches_the_full_decoder():
    from dollar import world
    from dollar.metrics import psnr

    prompts = [p.prompt for p in world.heldout_prompts()[:4]]
    # benchmarks/results/fast_decode.json, 240 videos each: student-1 27.7 dB, student-4 30.6 dB (mean over videos)
    for name, floor in (("student-1", 25.0), ("student-4", 28.0)):
        pipe = DollarPipeline.from_pretrained(name)
        pipe.set_progress_bar_config(disable=True)
        latents = pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="latent").frames
        with torch.no_grad():
            full, tiny = pipe.decode_latents(latents), pipe.decode_latents(latents, decoder="tiny")
        score = float(np.mean([psnr(t, f) for t, f in zip(tiny, full)]))
        print(f"{name}: tiny decoder {score:.1f} dB against the full decoder")
        assert score > floor


# --- the app's compare tab ---------------------------------------------------------------------


def test_the_comparison_shows_where_the_time_goes_and_both_decoders_with_fast_decode(tiny_pipeline, tmp_path):
    from dollar.arena import COMPARISON_COLUMNS, DECODER_COLUMNS, ModelEntry, ModelZoo, comparison_table

    tiny_pipeline.set_tiny_decoder(TinyVideoDecoder.for_vae(tiny_pipeline.vae).eval())
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    zoo = ModelZoo([ModelEntry("tiny", str(tmp_path / "pipe"), 2, "custom")], str(tmp_path / "videos"))
    plain = comparison_table(zoo.compare("a red circle moving left", 0, ["tiny"]))
    assert list(plain.columns) == list(COMPARISON_COLUMNS)
    row = plain.iloc[0]
    assert row["text (ms)"] > 0 and row["denoise (ms)"] > 0 and row["decode (ms)"] > 0
    assert row["text (ms)"] + row["denoise (ms)"] + row["decode (ms)"] <= 1000 * row["end to end (s)"] + 1
    gens = zoo.compare("a red circle moving left", 0, ["tiny"], fast_decode=True)
    t = gens[0].timings
    assert t["decoding_s"] >= t["decoding_tiny_s"] and t["decoding_full_s"] > 0 and np.isfinite(t["tiny_psnr_db"])
    fast = comparison_table(gens)
    assert list(fast.columns) == list(COMPARISON_COLUMNS) + list(DECODER_COLUMNS)
    row = fast.iloc[0]
    assert row["tiny decode (ms)"] == round(1000 * t["decoding_tiny_s"], 1) and row["tiny vs full (dB)"] == round(t["tiny_psnr_db"], 1)
    assert row["decode speedup"] == round(t["decoding_full_s"] / t["decoding_tiny_s"], 1)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(BUNDLED_TINY_DECODER, "config.json")), reason="assets/tiny-decoder is not built")
def test_the_app_compare_tab_toggles_fast_decode(tmp_path):
    from gradio_client import Client

    import app
    from dollar.local_servers import free_port

    port = free_port()
    demo, launch_kwargs = app.create_app(["--data-dir", str(tmp_path), "--port", str(port), "--threads", "2"])
    demo.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for fast in (False, True):
            out = client.predict("a red circle moving left", 3, ["student-1"], fast, api_name="/compare")
            table = out[-2]
            row = dict(zip(table["headers"], table["data"][0]))
            captions = " ".join(str(o.get("value")) for o in out if isinstance(o, dict) and isinstance(o.get("value"), str))
            assert row["text (ms)"] > 0 and row["decode (ms)"] > 0 and "denoise" in captions
            assert ("tiny vs full (dB)" in row) == fast and ("tiny decoder" in captions) == fast
            if fast:
                print(f"app, fast decode: {row}")
                assert row["tiny vs full (dB)"] > 18 and row["full decode (ms)"] > 0  # 20-35 dB on held-out prompts (README)
        out = client.predict("a red circle moving left", 3, ["student-1"], api_name="/generate")  # the API's three inputs still work
        assert "tiny vs full (dB)" not in out[-2]["headers"]
    finally:
        demo.close()


def test_the_trainer_reads_a_yaml_config_and_flags_win(tmp_path):
    from dollar.config import parse_config

    (tmp_path / "tiny.yaml").write_text(
        "vae: student-1\ngenerated_from: [student-1, 'teacher:steps=8']\nmax_steps: 100\nblocks_per_level: '3,1'\n"
    )
    cfg = parse_config(train_tiny_decoder.TinyDecoderTrainConfig, ["--config", str(tmp_path / "tiny.yaml"), "--max_steps", "7"])
    assert cfg.vae == "student-1" and cfg.generated_from == ["student-1", "teacher:steps=8"] and cfg.blocks_per_level == "3,1"
    assert cfg.max_steps == 7 and cfg.checkpoint_every == 200  # the flag over the file; the trainer's own default


def test_bench_times_cold_and_warm_prompts_per_stage_for_both_decoders(tiny_pipeline, tmp_path):
    from dollar import bench

    tiny_pipeline.set_tiny_decoder(TinyVideoDecoder.for_vae(tiny_pipeline.vae).eval())
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    model, out = str(tmp_path / "pipe"), tmp_path / "bench.json"
    args = ["--models", f"{model}:steps=1", "--reference", model, "--decoders", "full", "tiny", "--runs", "3", "--warmup", "1"]
    assert bench.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["models"]) == {model, f"{model} [tiny decoder]", f"{model}:steps=1", f"{model}:steps=1 [tiny decoder]"}
    fast = result["models"][f"{model}:steps=1 [tiny decoder]"]
    assert fast["decoder"] == "tiny" and fast["prompt"] == "cold" and fast["nfe"] == 2  # one step with guidance
    for part in ("text_encoding_s", "denoising_s", "decoding_s", "end_to_end_s"):
        assert fast[part]["runs"] == 3 and fast["warm"][part]["runs"] == 3
    # a warm prompt's states come from the cache: the text stage is a lookup
    assert fast["warm"]["text_encoding_s"]["median"] < 0.5 * fast["text_encoding_s"]["median"]
    assert fast["speedup_end_to_end_paired"]["median"] > 1 and fast["warm"]["speedup_end_to_end_paired"]["median"] > 1
    assert result["machine"]["load_before"]["cpus"] >= 1
    tiny_pipeline.set_tiny_decoder(None)
    (tmp_path / "pipe" / "tiny_decoder" / "config.json").unlink()
    assert bench.main([*args, "--out", str(out)]) == 2  # no tiny decoder: one sentence before any timing
