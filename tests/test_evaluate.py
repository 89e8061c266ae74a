import json
import os
import sys

import numpy as np
import pytest
import torch

from dollar import world
from dollar.config import parse_config
from dollar.evaluate import evaluate, main, render, render_seeds, score_videos
from dollar.model_specs import ModelSpec, load_pipeline, parse_model_spec
from dollar.models.probe import AttributeProbe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_PROBE = os.path.join(ROOT, "assets", "probe")
sys.path.insert(0, os.path.join(ROOT, "train"))

requires_bundled_probe = pytest.mark.skipif(
    not os.path.exists(os.path.join(BUNDLED_PROBE, "config.json")),
    reason="assets/probe is not built (python train/train_probe.py)",
)


@pytest.fixture(scope="module")
def real_set():
    """Real world clips of 32 held-out prompts and 8 two-object prompts, and those prompts."""
    prompts = world.heldout_prompt_specs(32) + world.two_object_prompt_specs(8)
    videos, _ = render(None, None, prompts, seed=5)
    return videos, prompts


def _shuffled(prompts):
    return prompts[7:] + prompts[:7]


def _accuracy(scores, key):
    return float(np.mean(scores[key]))


# --- the instruments read real videos right and mismatched prompts at chance --------------


def test_checker_scores_real_videos_near_100_and_shuffled_prompts_near_chance(real_set):
    videos, prompts = real_set
    real = score_videos(videos, prompts)
    shuffled = score_videos(videos, _shuffled(prompts))
    assert _accuracy(real, "checker_colour") >= 0.97 and _accuracy(real, "checker_motion") >= 0.95
    assert _accuracy(real, "composition_checker") >= 0.85
    # 8 colours, 8 motions: chance is 1/8
    assert _accuracy(shuffled, "checker_colour") < 0.4 and _accuracy(shuffled, "checker_motion") < 0.4


@requires_bundled_probe
def test_bundled_probe_scores_real_videos_near_100_and_shuffled_prompts_near_chance(real_set):
    videos, prompts = real_set
    probe = AttributeProbe.from_pretrained(BUNDLED_PROBE).eval()
    real = score_videos(videos, prompts, probe)
    shuffled = score_videos(videos, _shuffled(prompts), probe)
    for name in ("colour", "shape", "motion", "size"):
        assert _accuracy(real, f"probe_{name}") >= 0.95, name
    # two-object scenes, every object's colour, motion and shape right (83.6% on 128 held-out
    # scenes, see assets/probe/README.md); 8 scenes here
    assert _accuracy(real, "composition") >= 0.6
    for name in ("colour", "shape", "motion"):
        assert _accuracy(shuffled, f"probe_{name}") < 0.45, name  # chance: 1/8 colours and motions, 1/5 shapes
    assert _accuracy(shuffled, "composition") <= 0.25


@requires_bundled_probe
def test_probe_frechet_distance_grows_with_noise_above_the_real_floor(real_set):
    from dollar.metrics import frechet_distance

    videos, prompts = real_set
    probe = AttributeProbe.from_pretrained(BUNDLED_PROBE).eval()
    other, _ = render(None, None, prompts, seed=6)
    ref = probe.features(videos)
    distances = [frechet_distance(probe.features(other), ref)]
    for sigma in (40, 80):
        noisy = np.clip(other + np.random.default_rng(0).normal(0, sigma, other.shape), 0, 255).astype(np.uint8)
        distances.append(frechet_distance(probe.features(noisy), ref))
    # 40 vs 40 clips: the real-vs-real distance is the small-sample floor; noise climbs above it
    assert distances[0] < distances[1] < distances[2], distances


def test_probe_object_crops_take_out_position_and_size():
    """The shape head's view: the same shape small and moving left, large and moving right, or
    growing (first and last frame) gives nearly the same crop; another shape does not."""
    probe = AttributeProbe()

    def crops(shape, size, motion, seed):
        scene = world.make_scene((world.ObjectSpec("red", shape, motion, "slow", size),), "black", seed)
        return probe.object_crops(torch.from_numpy(world.render_masks(scene, frames=[0, 16])[0]))[:, 0]

    def iou(x, y):
        return float(torch.minimum(x, y).sum() / torch.maximum(x, y).sum())

    small, large, cross = crops("triangle", "small", "left", 1), crops("triangle", "large", "right", 2), crops("cross", "large", "right", 2)
    growing = crops("diamond", "large", "growing", 3)
    assert iou(small[0], large[0]) > 0.85 and iou(growing[0], growing[1]) > 0.85
    assert iou(small[0], cross[0]) < 0.7


def test_probe_track_features_follow_the_object():
    """The motion/size/speed heads' view of the queried object: centroid offsets from the first
    frame, radius of gyration and area per frame, here from ground-truth masks."""
    probe = AttributeProbe()
    t = len(range(0, world.NUM_FRAMES, probe.config.silhouette_frame_stride))

    def track(motion, size="large"):
        scene = world.make_scene((world.ObjectSpec("red", "square", motion, "fast", size),), "black", 0)
        masks = torch.from_numpy(world.render_masks(scene, frames=range(0, world.NUM_FRAMES, probe.config.silhouette_frame_stride)))
        return probe.track_features(masks)[0]

    left, up, growing, small = track("left"), track("up"), track("growing"), track("static", "small")
    assert left[t - 1] < -0.3 and abs(float(left[2 * t - 1])) < 0.05  # x falls, y stays
    assert up[2 * t - 1] < -0.1 and abs(float(up[t - 1])) < 0.05  # y falls (image rows grow downwards)
    assert growing[3 * t - 1] > 1.5 * growing[2 * t] and growing[4 * t - 1] > 2 * growing[3 * t]  # radius and area grow
    assert small[3 * t] < growing[3 * t - 1]


def test_a_tiny_probe_trains_saves_as_safetensors_and_reloads(tmp_path):
    import train_probe

    out = tmp_path / "probe"
    argv = ["--clips", "48", "--steps", "3", "--batch_size", "8", "--eval_seeds", "1", "--eval_pairs", "2", "--output_dir", str(out)]
    result = train_probe.main(parse_config(train_probe.ProbeTrainConfig, argv))
    files = set(os.listdir(out))
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md", "probe_eval.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    assert os.path.getsize(out / "diffusion_pytorch_model.safetensors") < 3 * 2**20
    card = (out / "README.md").read_text()
    assert f"{100 * result['heldout_single_object']['colour']:.1f}%" in card
    probe = AttributeProbe.from_pretrained(out).eval()
    videos = np.stack([world.make_sample(s)[0] for s in range(2)])
    assert not np.allclose(probe.features(videos), AttributeProbe().eval().features(videos))  # the weights were loaded
    np.testing.assert_allclose(probe.features(videos), AttributeProbe.from_pretrained(out).eval().features(videos), rtol=1e-6)
    assert probe.frame_features(videos).shape == (2, 9, probe.config.stem_channels[1])


# --- evaluate(): the whole report ----------------------------------------------------------


@pytest.fixture()
def tiny_folder(tiny_pipeline, tmp_path):
    path = tmp_path / "tiny"
    tiny_pipeline.save_pretrained(path)
    return str(path)


def _figures(section):
    return [f for f in section.values() if isinstance(f, dict) and "mean" in f]


def test_evaluate_reports_every_figure_with_an_interval(tiny_folder):
    torch.manual_seed(0)
    probe = AttributeProbe().eval()  # untrained: the report's shape, not its values, is tested here
    prompts = world.heldout_prompt_specs(3) + world.two_object_prompt_specs(1)
    result = evaluate(
        ["real", f"{tiny_folder}:steps=2", f"{tiny_folder}:steps=3,scheduler=dpm++"], prompts, [0, 1], probe, reference_per_prompt=2
    )
    json.dumps(result)  # JSON-ready
    real, tiny, dpm = (result["models"][k] for k in ("real", f"{tiny_folder}:steps=2", f"{tiny_folder}:steps=3,scheduler=dpm++"))
    assert tiny["nfe_per_video"] == 4 and dpm["nfe_per_video"] == 6  # CFG: two evaluations per step
    assert real["semantic"]["colour"]["mean"] == 1.0 and real["semantic"]["composition_checker"]["mean"] == 1.0
    for model in (real, tiny):
        assert model["videos"] == 8
        for group in ("semantic", "quality", "distribution", "aggregate"):
            for fig in _figures(model[group]):
                assert fig["mean"] is not None and fig["low"] <= fig["mean"] <= fig["high"]
        assert len(model["quality"]["motion_smoothness"]["per_seed"]) == 2
        assert 1.0 <= model["distribution"]["vendi_pixels"]["mean"] <= 2.0
    assert result["config"]["two_object_prompts"] == 1 and result["config"]["reference_clips"] == 8


def test_evaluate_is_reproducible_for_the_same_seeds(tiny_pipeline):
    prompts = world.heldout_prompt_specs(2)
    a = evaluate({"tiny": tiny_pipeline}, prompts, [3], reference_per_prompt=1)
    b = evaluate({"tiny": tiny_pipeline}, prompts, [3], reference_per_prompt=1)
    assert a["models"]["tiny"]["quality"] == b["models"]["tiny"]["quality"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[], seeds=[0]), "No prompts"),
        (dict(prompts=["a red circle"], seeds=[]), "Seeds must be"),
        (dict(prompts=["a red circle"], seeds=[0, 0]), "distinct"),
        (dict(prompts=["a red circle"], seeds=[-1]), "Seeds must be"),
    ],
)
def test_evaluate_rejects_bad_input_in_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(["real"], **kwargs)


def test_model_specs():
    assert parse_model_spec("teacher") == ModelSpec("teacher", "teacher")
    assert parse_model_spec("teacher:steps=4,scheduler=dpm++") == ModelSpec("teacher:steps=4,scheduler=dpm++", "teacher", 4, None, "dpm++")
    assert parse_model_spec("runs/s4:guidance=1").guidance == 1.0
    assert parse_model_spec("DDIM 4=teacher:steps=4") == ModelSpec("DDIM 4", "teacher", 4)
    assert parse_model_spec("CD-only 1=runs/cd-1") == ModelSpec("CD-only 1", "runs/cd-1")
    with pytest.raises(ValueError, match="empty label"):
        parse_model_spec(" =runs/cd-1")
    for bad in ("teacher:steps=0", "teacher:steps=x", "teacher:scheduler=euler", "teacher:foo=1"):
        with pytest.raises(ValueError, match="Bad setting"):
            parse_model_spec(bad)


def test_load_pipeline_shares_one_pipeline_and_sets_each_specs_scheduler(tiny_folder):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cache: dict = {}
    dpm = load_pipeline(parse_model_spec(f"{tiny_folder}:steps=4,scheduler=dpm++"), cache)
    assert isinstance(dpm.scheduler, DPMSolverMultistepScheduler)
    ddim = load_pipeline(parse_model_spec(tiny_folder), cache)
    assert ddim is dpm and isinstance(ddim.scheduler, DDIMScheduler)
    load_pipeline(parse_model_spec(f"{tiny_folder}:scheduler=dpm++"), cache)
    assert load_pipeline(tiny_folder, cache).scheduler is cache[tiny_folder][1]  # a plain name: the model's own scheduler
    with pytest.raises(ValueError, match="Unknown model|not found|does not exist|no file|Can't"):
        load_pipeline("no-such-model", cache)


def test_render_seeds_generates_prompt_i_of_seed_s_from_s_times_100000_plus_i(tiny_pipeline):
    """The seed rule every evaluation and benchmark shares."""
    prompts = world.heldout_prompt_specs(3)
    videos = render_seeds(tiny_pipeline, ModelSpec("tiny", "tiny", steps=2), prompts, [0, 2], batch_size=2)
    assert videos.shape[0] == 6 and videos.dtype == np.uint8
    # prompt 2 is alone in its batch of 2, so its call is the same as this one
    alone = tiny_pipeline(prompts[2].prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(200_002)).frames[0]
    np.testing.assert_array_equal(videos[5], alone)


# --- the command lines: bad input is one sentence and exit code 2 ---------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "no-such-model"], "Unknown model 'no-such-model'"),
        (["--models", "real", "--seeds", "1", "1"], "distinct"),
        (["--models", "teacher:steps=zero"], "Bad setting"),
        (["--models", "real", "--prompt-file", "/nonexistent.txt"], "does not exist"),
        (["--models", "real", "--probe", "/nonexistent-probe"], "No attribute probe"),
    ],
)
def test_evaluate_cli_bad_input_exits_2(argv, message, capsys):
    assert main(argv + ([] if "--probe" in argv else ["--probe", "none"]) + ["--num-prompts", "2", "--pairs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_evaluate_cli_empty_prompt_file_exits_2(tmp_path, capsys):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    assert main(["--models", "real", "--probe", "none", "--prompt-file", str(empty)]) == 2
    assert "has no prompts" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--seeds", "-1"], ["--num-prompts", "0"], ["--seeds", "x"]])
def test_evaluate_cli_rejects_bad_numbers(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_evaluate_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["--models", "real", "--probe", "none", "--num-prompts", "3", "--pairs", "1", "--seeds", "0", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["models"]["real"]["semantic"]["colour"]["mean"] == 1.0
    assert result["models"]["real"]["semantic"]["shape"]["mean"] is None  # no probe, no shape
    assert "| real |" in (tmp_path / "eval.md").read_text()


# --- bench ----------------------------------------------------------------------------------


def test_bench_times_every_model_and_the_speedup(tiny_folder, tmp_path):
    from dollar import bench

    out = tmp_path / "bench.json"
    assert (
        bench.main(["--models", f"{tiny_folder}:steps=2", "--reference", tiny_folder, "--runs", "2", "--warmup", "0", "--out", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    ref, fast = result["models"][tiny_folder], result["models"][f"{tiny_folder}:steps=2"]
    assert ref["nfe"] == 100 and fast["nfe"] == 4
    assert ref["speedup_end_to_end"] == pytest.approx(1.0)
    assert fast["denoising_s"]["median"] < ref["denoising_s"]["median"] and fast["speedup_denoising"] > 1
    for part in ("text_encoding_s", "denoising_s", "decoding_s", "end_to_end_s"):
        s = fast[part]
        assert s["runs"] == 2 and s["min"] <= s["q25"] <= s["median"] <= s["q75"] <= s["max"]
    assert fast["memory"]["peak_mib"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_unknown_model_exits_2(capsys, tmp_path):
    from dollar import bench

    assert bench.main(["--models", "no-such-model", "--out", str(tmp_path / "b.json")]) == 2
    assert "Unknown model" in capsys.readouterr().err


# --- VBench export ---------------------------------------------------------------------------


def test_vbench_export_names_files_as_vbench_does(tiny_folder, tmp_path):
    from dollar import vbench_export

    info = tmp_path / "VBench_full_info.json"
    info.write_text(
        json.dumps(
            [
                {"prompt_en": "a red circle moving left", "dimension": ["color", "subject_consistency"]},
                {"prompt_en": "a blue square, frozen in time", "dimension": ["temporal_flickering"]},
            ]
        )
    )
    out = tmp_path / "videos"
    argv = ["--model", f"{tiny_folder}:steps=1", "--prompt-file", str(info), "--dimension", "color", "--samples", "2", "--out", str(out)]
    assert vbench_export.main(argv) == 0
    assert sorted(os.listdir(out)) == ["a red circle moving left-0.mp4", "a red circle moving left-1.mp4"]
    everything = ["--model", f"{tiny_folder}:steps=1", "--prompt-file", str(info), "--samples", "2", "--out", str(out)]
    assert vbench_export.main(everything) == 0  # all dimensions; the existing files are kept
    assert len(os.listdir(out)) == 4 and "a blue square, frozen in time-1.mp4" in os.listdir(out)


def test_vbench_export_bad_input_exits_2(tmp_path, capsys):
    from dollar import vbench_export

    info = tmp_path / "VBench_full_info.json"
    info.write_text(json.dumps([{"prompt_en": "a cat", "dimension": ["color"]}]))
    assert vbench_export.main(["--prompt-file", str(info), "--dimension", "colour", "--out", str(tmp_path / "v")]) == 2
    assert "Unknown VBench dimension(s) colour" in capsys.readouterr().err
    if vbench_export.vbench_prompt_file() is None:
        assert vbench_export.main(["--out", str(tmp_path / "v")]) == 2
        assert "VBench is not installed" in capsys.readouterr().err
