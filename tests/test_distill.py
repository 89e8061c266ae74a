"""The DOLLAR trainer on a tiny teacher: every ablation runs, bad configs fail first, resume is exact."""

import json
import os
import sys

import pytest
import torch
import yaml

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "train"))
import distill  # noqa: E402


@pytest.fixture()
def tiny_teacher(tiny_pipeline, tmp_path):
    path = tmp_path / "teacher"
    tiny_pipeline.save_pretrained(path)
    return str(path)


def _cfg(teacher, out, *extra):
    return distill.parse_config(
        [
            "--teacher",
            teacher,
            "--output_dir",
            str(out),
            "--num_clips",
            "8",
            "--batch_size",
            "2",
            "--max_iters",
            "1",
            "--fake_steps",
            "1",
            "--checkpoint_every",
            "1",
            "--validation_prompts",
            "2",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "flags, losses",
    [
        (["--cd", "false", "--lrm", "false"], {"loss_vsd", "loss_fake"}),
        (["--vsd", "false", "--lrm", "false"], {"loss_cd"}),
        (["--lrm", "false"], {"loss_vsd", "loss_cd", "loss_fake"}),
        ([], {"loss_vsd", "loss_cd", "loss_fake", "loss_lrm_fit", "loss_ft"}),
        (["--reward_method", "ddpo", "--cd", "false"], {"loss_vsd", "loss_fake", "loss_ddpo", "reward_generated"}),
    ],
)
def test_one_iteration_of_each_ablation_writes_a_loadable_student(tiny_teacher, tmp_path, flags, losses):
    out = tmp_path / "student"
    result = distill.main(_cfg(tiny_teacher, out, *flags))
    record = result["history"][0]
    assert losses <= set(record) and all(torch.isfinite(torch.tensor(record[k])) for k in losses)
    from dollar import DollarPipeline

    student = DollarPipeline.from_pretrained(str(out))
    student.set_progress_bar_config(disable=True)
    assert student.is_student and student.config.student_timesteps == [999, 749, 499, 249]
    video = student("a red circle moving left", generator=torch.Generator().manual_seed(0))
    assert video.timings["nfe"] == 4 and video.frames.shape == (1, 17, 64, 64, 3)


def test_resume_reproduces_an_uninterrupted_run(tiny_teacher, tmp_path):
    full = distill.main(_cfg(tiny_teacher, tmp_path / "a", "--max_iters", "3", "--lrm", "false"))
    distill.main(_cfg(tiny_teacher, tmp_path / "b", "--max_iters", "2", "--lrm", "false"))
    resumed = distill.main(_cfg(tiny_teacher, tmp_path / "b", "--max_iters", "3", "--lrm", "false", "--resume", "latest"))
    assert resumed["iterations"] == 3 and len(resumed["history"]) == 1
    assert resumed["history"][0] == full["history"][2]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "transformer" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x)["iteration"] for x in open(tmp_path / "b" / "train_log.jsonl")]
    assert rows == [0, 1, 2, 3]  # 0: the validation before training


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reward", "beauty"], "Unknown reward"),
        (["--num_steps", "0"], "between 1 and 50"),
        (["--timesteps", "999,abc"], "comma-separated numbers"),
        (["--prediction_type", "x0"], "prediction_type must be one of"),
        (["--timesteps", "500,999"], "descending"),
        (["--vsd", "false", "--cd", "false", "--lrm", "false"], "every loss is off"),
        (["--vsd_weight", "0", "--cd_weight", "0", "--reward_weight", "0"], "every loss is off"),
        (["--reward_method", "ppo"], "reward_method"),
        (["--init_student", "./runs/not-trained-yet"], "Train that student first"),
    ],
)
def test_bad_configs_fail_before_any_work(tiny_teacher, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit, match=message):
        _cfg(tiny_teacher, tmp_path / "x", *flags)


def test_missing_teacher_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="Unknown model"):
        distill.main(_cfg("no-such-teacher", tmp_path / "x"))


def test_yaml_config_with_command_line_override(tiny_teacher, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("num_steps: 2\nbatch_size: 3\ncd_weight: 0.25\n")
    cfg = _cfg(tiny_teacher, tmp_path / "x", "--config", str(config), "--batch_size", "5")
    assert cfg.num_steps == 2 and cfg.cd_weight == 0.25 and cfg.batch_size == 5
    config.write_text("num_stepz: 2\n")
    with pytest.raises(SystemExit, match="unknown keys"):
        _cfg(tiny_teacher, tmp_path / "y", "--config", str(config))


CONFIGS = sorted(os.listdir(os.path.join(ROOT, "train", "configs")))


@pytest.mark.parametrize("name", [f for f in CONFIGS if f.startswith("accelerate-")])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(os.path.join(ROOT, "train", "configs", name))
    assert config.distributed_type in ("FSDP", "MULTI_GPU") and config.num_processes > 1
    if config.distributed_type == "FSDP":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "WanTransformerBlock"


@pytest.mark.parametrize("name", [f for f in CONFIGS if f.startswith("student-")])
def test_shipped_configs_parse(name, tmp_path, monkeypatch):
    path = os.path.join(ROOT, "train", "configs", name)
    source = yaml.safe_load(open(path)).get("init_student")
    if source:  # the student it starts from must exist: stand a folder in for it
        monkeypatch.chdir(tmp_path)
        os.makedirs(tmp_path / source)
    cfg = distill.parse_config(["--config", path])
    assert cfg.num_steps in (1, 2, 4) and cfg.vsd and cfg.cd and cfg.lrm


def test_command_line_flags_win_over_the_config_file_including_negations():
    config = os.path.join(ROOT, "train", "configs", "student-4.yaml")
    cfg = distill.parse_config(["--config", config, "--no_cd", "--no-lrm", "--fake-lr=1e-3", "--reward_method", "ddpo"])
    assert (cfg.vsd, cfg.cd, cfg.lrm) == (True, False, False)
    assert cfg.fake_lr == 1e-3 and cfg.reward_method == "ddpo"
    cfg = distill.parse_config(["--config", config, "--vsd", "false"])
    assert (cfg.vsd, cfg.cd, cfg.lrm) == (False, True, True)


def test_validation_logs_checker_accuracy_and_videos(tiny_teacher, tmp_path):
    out = tmp_path / "v"
    result = distill.main(_cfg(tiny_teacher, out, "--lrm", "false", "--max_iters", "2", "--validate_every", "2"))
    record = result["history"][-1]
    assert 0.0 <= record["val_colour"] <= 1.0 and 0.0 <= record["val_motion"] <= 1.0 and "val_reward" in record
    assert sorted(os.listdir(out / "validation")) == ["iteration-0000000.mp4", "iteration-0000002.mp4"]
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(out / "distill") for name in files)


def test_collapse_sentinel_rolls_back_to_the_last_healthy_checkpoint(tiny_teacher, tmp_path):
    out = tmp_path / "r"
    distill.main(_cfg(tiny_teacher, out, "--lrm", "false", "--cd", "false", "--max_iters", "2", "--validate_every", "0"))
    # Now every validation looks "static" (threshold above any real clip): iteration 3 is flagged,
    # the run reloads iteration 2 (saved healthy), halves the generator lr and goes on.
    result = distill.main(
        _cfg(
            tiny_teacher,
            out,
            *("--lrm", "false", "--cd", "false", "--max_iters", "3", "--validate_every", "1", "--resume", "latest"),
            *("--sentinel_static_ratio", "1e9", "--max_rollbacks", "2"),
        )
    )
    assert result["rollbacks"] == 2 and result["iterations"] == 3
    flagged = [r for r in result["history"] if r.get("sentinel")]
    assert flagged[0]["rolled_back_to"] == 2 and "static" in flagged[0]["sentinel"][0]
    # each rollback halves the rate again (two rollbacks: a quarter), then the run goes on warning
    assert result["history"][-1]["lr_generator"] == pytest.approx(0.25 * flagged[0]["lr_generator"])
    assert len(flagged) == 3 and "rolled_back_to" not in flagged[-1]


def test_runs_share_a_cache_of_the_same_data_and_refuse_a_foreign_one(tiny_teacher, tmp_path, monkeypatch):
    shared = tmp_path / "cache"
    first = distill.main(_cfg(tiny_teacher, tmp_path / "a", "--lrm", "false", "--cache_dir", str(shared)))
    assert (shared / "data.safetensors").exists() and not (tmp_path / "a" / "cache").exists()
    calls = []
    import dollar.distill_setup

    monkeypatch.setattr(dollar.distill_setup, "encode_dataset", lambda *a, **k: calls.append(1))
    second = distill.main(_cfg(tiny_teacher, tmp_path / "b", "--lrm", "false", "--cache_dir", str(shared)))
    assert calls == [] and second["history"][0] == first["history"][0]
    with pytest.raises(SystemExit, match="another VAE, text encoder or data"):
        distill.main(_cfg(tiny_teacher, tmp_path / "c", "--lrm", "false", "--cache_dir", str(shared), "--num_clips", "6"))
    assert (shared / "data.safetensors").exists()  # nothing stored is lost


def test_init_student_starts_from_another_students_weights(tiny_teacher, tmp_path, tiny_pipeline):
    four = tmp_path / "four"
    distill.main(_cfg(tiny_teacher, four, "--lrm", "false", "--max_iters", "2"))
    from dollar import DollarPipeline

    source = DollarPipeline.from_pretrained(str(four)).transformer.state_dict()
    one = distill.main(
        _cfg(tiny_teacher, tmp_path / "one", "--num_steps", "1", "--lrm", "false", "--init_student", str(four), "--generator_lr", "0")
    )
    assert one["iterations"] == 1
    started = DollarPipeline.from_pretrained(str(tmp_path / "one")).transformer.state_dict()
    assert all(torch.allclose(started[k].float(), source[k].float()) for k in source)  # lr 0: still the 4-step weights
    regrid = distill.main(_cfg(tiny_teacher, tmp_path / "regrid", "--num_steps", "1", "--init_student", str(four), "--max_iters", "0"))
    assert regrid["iterations"] == 0 and not (tmp_path / "regrid" / "latent_reward_model").exists()
    regridded = DollarPipeline.from_pretrained(str(tmp_path / "regrid"))
    assert regridded.config.student_timesteps == [999]
    assert all(torch.equal(regridded.transformer.state_dict()[k], source[k]) for k in source)
    # the re-gridded student records the recipe its weights came from, not only its own zero-iteration run
    record = json.load(open(tmp_path / "regrid" / "distill_config.json"))
    assert record["iterations_done"] == 0 and record["weights_from"]["init_student"] == str(four)
    assert record["weights_from"]["distill_config"]["iterations_done"] == 2 and record["weights_from"]["distill_config"]["num_steps"] == 4
    with pytest.raises(SystemExit, match="max_iters 0 is allowed with --init_student"):
        _cfg(tiny_teacher, tmp_path / "zero", "--max_iters", "0")
    smaller = type(tiny_pipeline.transformer)(**{**tiny_pipeline.transformer.config, "num_layers": 2})
    DollarPipeline(**{**tiny_pipeline.components, "transformer": smaller}).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="different transformer architecture"):
        distill.main(_cfg(tiny_teacher, tmp_path / "bad", "--init_student", str(tmp_path / "other")))
    with pytest.raises(SystemExit, match="init_student"):
        distill.main(_cfg(tiny_teacher, tmp_path / "bad", "--init_student", str(tmp_path / "nowhere")))


def test_paper_config_holds_method_md_values():
    """train/configs/paper.yaml is the paper's recipe (shared/METHOD.md), not the CPU-sized one."""
    cfg = distill.parse_config(["--config", os.path.join(ROOT, "train", "configs", "paper.yaml")])
    assert (cfg.real_guidance_w, cfg.cd_guidance_w, cfg.cd_skip, cfg.fake_steps, cfg.num_steps) == (3.5, 7.5, 5, 5, 4)
    assert (cfg.vsd_weight, cfg.cd_weight, cfg.reward_weight) == (1.0, 0.5, 1.0) and cfg.vsd and cfg.cd and cfg.lrm


def test_prepared_data_means_no_text_encoder_while_training(tiny_teacher, tmp_path, monkeypatch):
    """--prepare_only encodes clips, captions and validation prompts into the cache; a run on that
    cache never loads the text encoder, and a run that had to encode drops it before training."""
    cache = tmp_path / "cache"
    prepared = distill.main(_cfg(tiny_teacher, tmp_path / "prep", "--prepare_only", "true", "--cache_dir", str(cache)))
    assert prepared["iterations"] == 0 and os.path.exists(cache / "data.safetensors")
    import dollar.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder was loaded")

    monkeypatch.setattr(dollar.pipeline, "load_pipeline_text_encoder", refuse)
    result = distill.main(_cfg(tiny_teacher, tmp_path / "s", "--cache_dir", str(cache), "--lrm", "false", "--validate_every", "1"))
    assert result["iterations"] == 1 and "val_colour" in result["history"][0]


def test_each_fake_score_update_gets_fresh_student_samples(tiny_teacher, tmp_path, monkeypatch):
    """DMD2's rule: every fake-score update trains on new generator samples (and prompts), not the
    batch the generator step used."""
    seen = []
    real = distill.fake_score_loss

    def spy(fake, samples, text, generator=None):
        seen.append((samples.detach().clone(), text.detach().clone()))
        return real(fake, samples, text, generator=generator)

    monkeypatch.setattr(distill, "fake_score_loss", spy)
    distill.main(_cfg(tiny_teacher, tmp_path / "s", "--fake_steps", "3", "--lrm", "false", "--cd", "false", "--validate_every", "0"))
    assert len(seen) == 3
    for (a, ta), (b, tb) in zip(seen, seen[1:]):
        assert not torch.equal(a, b) and not torch.equal(ta, tb)
