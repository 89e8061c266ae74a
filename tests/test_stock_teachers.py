"""Stock diffusers teachers end to end (README: "Teachers"): tiny, randomly initialised Wan (flow
Euler, and UniPC in flow mode as Wan-AI ship it), CogVideoX (v-prediction, zero terminal SNR) and
LTX-Video pipelines, saved with ``save_pretrained`` and loaded by folder. Each test here is one cell
of the README's family table."""

import json
import os
import sys

import diffusers
import numpy as np
import pytest
import torch

from conftest import ROOT
from dollar import DollarPipeline
from dollar import tiny_teachers as st
from dollar.local_servers import free_port
from dollar.pipeline import ModelLoadError

sys.path.insert(0, os.path.join(ROOT, "train"))
import distill  # noqa: E402

FAMILIES = list(st.BUILDERS)
# Largest |difference| of the [0, 1] video against the stock pipeline's, same latents and steps.
TOLERANCE = {"wan": 1e-5, "wan-unipc": 1e-5, "cogvideox": 1e-5, "ltx": 1e-5}
PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stock")
    return {name: st.save(name, root / name) for name in FAMILIES}


def _kwargs(name, **kw):
    h, w, f = st.SIZES[name]
    return dict(height=h, width=w, num_frames=f, max_sequence_length=st.TEXT_LENGTH, **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_sampling_equals_the_stock_pipeline_with_and_without_guidance(folders, name):
    stock = getattr(diffusers, st.PIPELINE_CLASSES[name]).from_pretrained(folders[name])
    ours = DollarPipeline.from_pretrained(folders[name])
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    assert ours.config.teacher_family == st.FAMILY[name] and not ours.is_student
    expected_type = {"wan": "flow", "wan-unipc": "flow", "cogvideox": "v_prediction", "ltx": "flow"}[name]
    assert ours.config.prediction_type == expected_type
    videos = {}
    for guidance in (1.0, 5.0):
        latents = st.stock_latents(name, stock, torch.Generator().manual_seed(0))
        kw = _kwargs(name, prompt=PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=guidance, output_type="pt")
        ref = stock(latents=latents.clone(), **kw).frames.float()
        got = ours(latents=latents.clone(), **kw).frames.float()
        assert got.shape == ref.shape
        print(f"{name}, guidance {guidance}: max |ours - stock| = {(got - ref).abs().max().item():.2g}")  # pytest -s: the README's figures
        assert (got - ref).abs().max().item() <= TOLERANCE[name], (guidance, (got - ref).abs().max().item())
        videos[guidance] = ref
    # guidance changes the stock video far beyond the tolerance, so the guided match is not vacuous
    assert (videos[5.0] - videos[1.0]).abs().max().item() > 100 * TOLERANCE[name]
    # and a seed (no latents given) draws the same noise as the stock pipeline
    kw = _kwargs(name, prompt=PROMPT, num_inference_steps=2, guidance_scale=1.0, output_type="pt")
    ref = stock(generator=torch.Generator().manual_seed(3), **kw).frames.float()
    got = ours(generator=torch.Generator().manual_seed(3), **kw).frames.float()
    assert (got - ref).abs().max().item() <= TOLERANCE[name]


@pytest.mark.parametrize("name", FAMILIES)
def test_generate_cli_renders_a_stock_folder(folders, name, tmp_path):
    from dollar.generate import main

    h, w, f = st.SIZES[name]
    out = tmp_path / "v.npy"
    args = ["--model", folders[name], "--prompt", PROMPT, "--steps", "2", "--height", str(h), "--width", str(w), "--num-frames", str(f)]
    assert main([*args, "--out", str(out)]) == 0
    assert np.load(out).shape == (f, h, w, 3)


def _distil(folder, name, out, *extra):
    h, w, f = st.SIZES[name]
    cfg = distill.parse_config(
        ["--teacher", folder, "--output_dir", str(out), "--num_clips", "4", "--batch_size", "2", "--max_iters", "3", "--fake_steps", "2"]
        + ["--height", str(h), "--width", str(w), "--num_frames", str(f), "--validate_every", "0", "--report_to", "none"]
        + ["--checkpoint_every", "100", *extra]
    )
    return distill.main(cfg)


@pytest.mark.parametrize("name", FAMILIES)
def test_distil_three_iterations_then_the_student_loads_alone(folders, name, tmp_path):
    out = tmp_path / "student"
    result = _distil(folders[name], name, out, "--num_steps", "2")
    assert result["iterations"] == 3
    for record in result["history"]:
        for key in ("loss_vsd", "loss_cd", "loss_fake", "loss_lrm_fit", "loss_ft"):
            assert np.isfinite(record[key]), (key, record)
    # the student folder stands alone: no text encoder passed, it is found through the config
    student = DollarPipeline.from_pretrained(str(out))
    student.set_progress_bar_config(disable=True)
    config = json.load(open(out / "model_index.json"))
    assert config["teacher_family"] == st.FAMILY[name] and config["text_encoder_source"] == os.path.abspath(folders[name])
    assert student.is_student
    schedule = student.noise_schedule()
    assert student.config.student_timesteps == [pytest.approx(t) for t in schedule.grid(2)]
    h, w, f = st.SIZES[name]
    video = student(PROMPT, generator=torch.Generator().manual_seed(0))
    assert video.frames.shape == (1, f, h, w, 3) and video.timings["nfe"] == 2
    from dollar.generate import main  # and from the command line, at the size it was trained at

    assert main(["--model", str(out), "--prompt", PROMPT, "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (f, h, w, 3)


def test_a_custom_student_grid_is_the_grid_it_samples_on(folders, tmp_path):
    """--timesteps is recorded and used for sampling (it used to be re-derived from the step count)."""
    out = tmp_path / "student"
    _distil(folders["wan"], "wan", out, "--timesteps", "1000,600,300", "--max_iters", "1", "--lrm", "false")
    student = DollarPipeline.from_pretrained(str(out))
    student.set_progress_bar_config(disable=True)
    assert student.config.student_timesteps == [1000.0, 600.0, 300.0]
    seen = []
    original = student.family.call_transformer

    def spy(transformer, x, timestep, text, vae_scale):
        seen.append(float(timestep[0]))
        return original(transformer, x, timestep, text, vae_scale)

    object.__setattr__(student.family, "call_transformer", spy)
    try:
        student(PROMPT, generator=torch.Generator().manual_seed(0))
    finally:
        object.__delattr__(student.family, "call_transformer")
    assert seen == [1000.0, 600.0, 300.0]


def test_teacher_weights_never_change_and_the_ema_moves_by_its_rate(folders, tmp_path):
    before = DollarPipeline.from_pretrained(folders["cogvideox"]).transformer.state_dict()
    result = _distil(folders["cogvideox"], "cogvideox", tmp_path / "s", "--max_iters", "1", "--lrm", "false", "--ema_decay", "0.9")
    teacher, student, ema = result["teacher"].state_dict(), result["student"].state_dict(), result["ema"].state_dict()
    assert all(torch.equal(before[k], teacher[k]) for k in before)
    moved = [k for k in teacher if not torch.equal(student[k], teacher[k])]
    assert moved, "the student did not train"
    for k in moved:  # one step: ema = 0.9 teacher + 0.1 student
        torch.testing.assert_close(ema[k], 0.9 * teacher[k] + 0.1 * student[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"height": 20}, "multiples of 16"),
        ({"num_frames": 8}, "4k\\+1"),
    ],
)
def test_bad_sizes_for_a_stock_teacher_are_one_sentence(folders, change, message):
    pipe = DollarPipeline.from_pretrained(folders["wan"])
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, num_inference_steps=1, **{**_kwargs("wan"), **change})


def test_folders_that_are_not_text_to_video_teachers_are_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        DollarPipeline.from_pretrained(str(tmp_path / "empty"))
    image = tmp_path / "image"
    image.mkdir()
    (image / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(ModelLoadError, match="image pipeline.*supported teachers are: .*Wan.*CogVideoX.*LTX"):
        DollarPipeline.from_pretrained(str(image))
    other = tmp_path / "audio"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline", "unet": None}))
    with pytest.raises(ModelLoadError, match="not a text-to-video pipeline"):
        DollarPipeline.from_pretrained(str(other))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        DollarPipeline.from_pretrained(str(broken))


def test_a_hub_id_while_offline_says_to_pass_a_local_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import: the variable alone comes too late
    with pytest.raises(ModelLoadError, match="pass the local folder"):
        DollarPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def test_prediction_type_override_is_applied(folders):
    pipe = DollarPipeline.from_pretrained(folders["cogvideox"], prediction_type="epsilon")
    assert pipe.config.prediction_type == "epsilon" and pipe.denoiser.prediction_type == "epsilon"
    with pytest.raises(ModelLoadError, match="prediction_type must be one of"):
        DollarPipeline.from_pretrained(folders["cogvideox"], prediction_type="x0")


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_app_renders_a_stock_teacher_and_its_student(folders, name, tmp_path):
    """`python app.py --model <stock folder> --model <its student> --size HxWxF`, driven through
    gradio_client as an API user would: both render side by side with their timings."""
    from gradio_client import Client

    sys.path.insert(0, ROOT)
    import app

    student = tmp_path / "student"
    _distil(folders[name], name, student, "--max_iters", "1", "--num_steps", "1", "--lrm", "false")
    h, w, f = st.SIZES[name]
    port = free_port()
    argv = ["--data-dir", str(tmp_path / "data"), "--port", str(port), "--threads", "2", "--round-floor-s", "0"]
    argv += ["--model", folders[name], "--model", str(student), "--size", f"{h}x{w}x{f}"]
    demo, launch_kwargs = app.create_app(argv)
    demo.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(PROMPT, 3, [folders[name], str(student)], api_name="/generate")
    finally:
        demo.close()
    table, files = out[-2], out[-1]
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert rows[str(student)]["NFE"] == 1 and rows[folders[name]]["NFE"] == 100  # the student's 1 step; the teacher's 50 with CFG
    assert len(files) == 2 and all(os.path.getsize(p) > 0 for p in files)
