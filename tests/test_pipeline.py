import numpy as np
import pytest
import torch

from dollar import DollarPipeline
from dollar.pipeline import ModelLoadError


def _run(pipe, **kw):
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe("a red circle moving left", **kw)


def test_output_types_and_shapes(tiny_pipeline):
    out = _run(tiny_pipeline, num_inference_steps=3)
    assert out.frames.dtype == np.uint8 and out.frames.shape == (1, 17, 64, 64, 3)
    pt = _run(tiny_pipeline, num_inference_steps=3, output_type="pt").frames
    assert pt.shape == (1, 17, 3, 64, 64) and 0 <= pt.min() and pt.max() <= 1
    np.testing.assert_allclose((pt * 255).round().permute(0, 1, 3, 4, 2).numpy(), out.frames, atol=1)
    pil = _run(tiny_pipeline, num_inference_steps=3, output_type="pil").frames
    assert len(pil) == 1 and len(pil[0]) == 17 and pil[0][0].size == (64, 64)
    lat = _run(tiny_pipeline, num_inference_steps=3, output_type="latent").frames
    assert lat.shape == (1, 4, 5, 8, 8)


def test_teacher_mode_counts_two_evaluations_per_step_with_guidance(tiny_pipeline):
    assert _run(tiny_pipeline, num_inference_steps=5, guidance_scale=4.5).timings["nfe"] == 10
    assert _run(tiny_pipeline, num_inference_steps=5, guidance_scale=1.0).timings["nfe"] == 5


def test_seeded_runs_repeat_and_batch_prompts(tiny_pipeline):
    a = _run(tiny_pipeline, num_inference_steps=4).frames
    b = _run(tiny_pipeline, num_inference_steps=4).frames
    assert np.array_equal(a, b)
    both = tiny_pipeline(["a red circle", "a blue square"], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert both.shape[0] == 2


def test_save_load_round_trip_gives_identical_videos(tiny_pipeline, tmp_path):
    before = _run(tiny_pipeline, num_inference_steps=6).frames
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    assert not (tmp_path / "pipe" / "text_encoder").exists()  # the encoder ships in its own package
    loaded = DollarPipeline.from_pretrained(str(tmp_path / "pipe"))
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(_run(loaded, num_inference_steps=6).frames, before)


def test_student_mode_uses_the_student_grid_without_guidance(tiny_pipeline, tmp_path):
    tiny_pipeline.register_to_config(student_timesteps=[999, 749, 499, 249], default_guidance_scale=1.0)
    out = _run(tiny_pipeline)
    assert out.timings["nfe"] == 4
    tiny_pipeline.save_pretrained(tmp_path / "student")
    loaded = DollarPipeline.from_pretrained(str(tmp_path / "student"))
    assert loaded.is_student and loaded.config.student_timesteps == [999, 749, 499, 249]


def test_other_diffusers_schedulers_plug_in(tiny_pipeline):
    from diffusers import DPMSolverMultistepScheduler

    tiny_pipeline.scheduler = DPMSolverMultistepScheduler.from_config(
        tiny_pipeline.scheduler.config, algorithm_type="dpmsolver++", prediction_type="sample"
    )
    out = _run(tiny_pipeline, num_inference_steps=4)
    assert out.frames.shape == (1, 17, 64, 64, 3) and out.timings["nfe"] == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_inference_steps": 0}, "positive integer"),
        ({"num_inference_steps": 2.5}, "positive integer"),
        ({"num_frames": 16}, "4k\\+1"),
        ({"height": 60}, "multiples of 16"),
        ({"height": 72}, "multiples of 16"),
        ({"guidance_scale": float("nan")}, "finite"),
        ({"guidance_scale": float("inf")}, "finite"),
        ({"guidance_scale": 1000.0}, "between 0 and 50"),
        ({"output_type": "mp4"}, "output_type"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
    ],
)
def test_bad_arguments_get_one_clear_sentence(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _run(tiny_pipeline, **kwargs)


def test_long_prompt_is_truncated_with_a_warning(tiny_pipeline, caplog):
    out = tiny_pipeline("red " * 500, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape[0] == 1
    assert any("only the first" in r.message for r in caplog.records)


def test_empty_prompt_is_unconditional_generation(tiny_pipeline):
    out = tiny_pipeline("", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 17, 64, 64, 3)


def test_missing_and_corrupt_checkpoints_raise_a_clear_error(tiny_pipeline, tmp_path):
    with pytest.raises(ModelLoadError, match="Unknown model"):
        DollarPipeline.from_pretrained("no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        DollarPipeline.from_pretrained(str(empty))
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    weights = next((tmp_path / "pipe" / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="missing or corrupt"):
        DollarPipeline.from_pretrained(str(tmp_path / "pipe"))


def test_a_stock_diffusers_video_vae_drops_in(tiny_pipeline):
    from diffusers import AutoencoderKLLTXVideo

    from conftest import STOCK_LTX_VAE_CONFIG

    tiny_pipeline.vae = AutoencoderKLLTXVideo(**STOCK_LTX_VAE_CONFIG).eval()
    out = _run(tiny_pipeline, num_inference_steps=2)
    assert out.frames.shape == (1, 17, 64, 64, 3)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
def test_teachers_of_every_prediction_type_run_through_the_pipeline(tiny_pipeline, prediction_type, tmp_path):
    tiny_pipeline.register_to_config(prediction_type=prediction_type)
    assert tiny_pipeline.denoiser.prediction_type == prediction_type
    out = _run(tiny_pipeline, num_inference_steps=3)
    assert out.frames.shape == (1, 17, 64, 64, 3)
    tiny_pipeline.save_pretrained(tmp_path / "p")
    assert DollarPipeline.from_pretrained(str(tmp_path / "p")).config.prediction_type == prediction_type


def test_attention_backend_is_sdpa_on_cpu_and_leaves_outputs_unchanged(tiny_pipeline):
    from dollar.models import choose_attention_backend, set_attention_backend

    assert choose_attention_backend() == "native"
    before = _run(tiny_pipeline, num_inference_steps=2).frames
    assert set_attention_backend(tiny_pipeline.transformer) == "native"
    assert np.array_equal(_run(tiny_pipeline, num_inference_steps=2).frames, before)


@pytest.mark.parametrize("name, steps", [("teacher", 50), ("teacher", 4), ("student-1", None), ("student-2", None), ("student-4", None)])
def test_bundled_checkpoints_sample_what_they_sampled_when_docs_results_was_measured(name, steps):
    """Latents of the bundled models at a fixed seed, recorded before the stock-teacher refactor
    (commit 815a29d; bit-identical after it): every figure of docs/results.md rests on these."""
    import os

    reference = np.load(os.path.join(os.path.dirname(__file__), "data", "bundled_latents.npz"))[f"{name}-{steps}"]
    pipe = DollarPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle moving left", "a blue square growing"]
    latents = pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(7), output_type="latent").frames
    np.testing.assert_allclose(latents.numpy(), reference, rtol=0, atol=1e-4)
