"""dollar.config.parse_config: defaults <- YAML file (--config) <- command-line flags, for every trainer."""

import dataclasses
import os
import sys
from dataclasses import dataclass

import pytest

from conftest import ROOT
from dollar.config import parse_config

sys.path.insert(0, os.path.join(ROOT, "train"))
import train_probe  # noqa: E402
import train_teacher  # noqa: E402
import train_vae  # noqa: E402

import distill  # noqa: E402

TRAINERS = [train_vae.VAETrainConfig, train_teacher.TeacherTrainConfig, train_probe.ProbeTrainConfig]


@dataclass
class RunConfig:
    output_dir: str = "runs/x"
    config: str = ""
    max_steps: int = 100
    learning_rate: float = 1e-4
    ema: bool = True
    resume: str = ""


def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("cls", TRAINERS, ids=lambda c: c.__name__)
def test_each_trainer_parses_its_defaults_and_a_yaml_file(cls, tmp_path):
    assert parse_config(cls, []) == cls()
    path = _yaml(tmp_path, "output_dir: /tmp/elsewhere\nseed: 7\n")
    cfg = parse_config(cls, ["--config", path, "--seed", "3"])
    assert cfg == dataclasses.replace(cls(), config=path, output_dir="/tmp/elsewhere", seed=3)


def test_command_line_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path):
    path = _yaml(tmp_path, "max_steps: 5\nlearning_rate: 1e-3\nema: false\noutput_dir: from-file\n")
    cfg = parse_config(RunConfig, ["--config", path])
    assert (cfg.max_steps, cfg.learning_rate, cfg.ema, cfg.output_dir) == (5, 1e-3, False, "from-file")
    assert isinstance(cfg.learning_rate, float)  # YAML reads 1e-3 (no dot) as text
    cfg = parse_config(RunConfig, ["--max_steps=9", "--config", path, "--ema", "true", "--learning-rate", "2e-3"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.ema, cfg.output_dir) == (9, 2e-3, True, "from-file")
    cfg = parse_config(RunConfig, ["--config", _yaml(tmp_path, "ema: true\n"), "--no_ema"])
    assert cfg.ema is False


def test_an_unknown_key_is_named_with_the_field_it_may_mean(tmp_path):
    path = _yaml(tmp_path, "max_step: 5\nbogus: 1\n")
    with pytest.raises(SystemExit, match=r"unknown keys 'bogus', 'max_step' \(did you mean 'max_steps'\?\); use the trainer's flags"):
        parse_config(RunConfig, ["--config", path])


def test_a_missing_or_malformed_file_gets_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="config file .*nope.yaml not found; pass an existing YAML file"):
        parse_config(RunConfig, ["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit, match=r"run.yaml is not valid YAML \(mapping values are not allowed here at line 2\); fix it"):
        parse_config(RunConfig, ["--config", _yaml(tmp_path, "max_steps: 5\n  learning_rate: 1e-3\n")])
    with pytest.raises(SystemExit, match="must hold `name: value` lines .*not a list"):
        parse_config(RunConfig, ["--config", _yaml(tmp_path, "- max_steps\n- 5\n")])
    with pytest.raises(SystemExit, match=r"run.yaml: max_steps must be a whole number, got 'many'; fix that line"):
        parse_config(RunConfig, ["--config", _yaml(tmp_path, "max_steps: many\n")])
    with pytest.raises(SystemExit, match="ema must be true or false, got 1"):
        parse_config(RunConfig, ["--config", _yaml(tmp_path, "ema: 1\n")])
    assert parse_config(RunConfig, ["--config", _yaml(tmp_path, "# nothing yet\n")]) == RunConfig(config=str(tmp_path / "run.yaml"))


def test_yaml_scalars_become_the_field_types(tmp_path):
    cfg = parse_config(RunConfig, ["--config", _yaml(tmp_path, "learning_rate: 1\nresume: true\noutput_dir: 2024\n")])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert (cfg.resume, cfg.output_dir) == ("True", "2024")  # `resume: true` means latest (dollar.checkpointing)


def test_a_config_class_needs_a_config_field():
    @dataclass
    class NoFile:
        steps: int = 1

    with pytest.raises(TypeError, match="needs a `config: str` field"):
        parse_config(NoFile, [])


@pytest.mark.parametrize("name", ["student-4.yaml", "student-1-onestep.yaml", "paper.yaml"])
def test_a_drop_in_for_the_distill_parser(name):
    """Same YAML semantics as train/distill.py's own parser (values, types, flag precedence)."""
    path = os.path.join(ROOT, "train", "configs", name)
    argv = ["--config", path, "--no_cd", "--fake-lr=1e-3", "--max_iters", "7"]
    ours, theirs = parse_config(distill.DistillConfig, argv), distill.parse_config(argv)
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert [type(v) for v in dataclasses.asdict(ours).values()] == [type(v) for v in dataclasses.asdict(theirs).values()]


def test_train_probe_keeps_its_flags_and_refuses_nonpositive_sizes(tmp_path):
    argv = ["--clips", "24", "--steps", "8", "--batch_size", "4", "--eval_seeds", "1", "--eval_pairs", "1", "--checkpoint_every", "2"]
    argv += ["--log_every", "1", "--threads", "2", "--output_dir", str(tmp_path), "--resume", "latest", "--learning_rate", "0.01"]
    cfg = parse_config(train_probe.ProbeTrainConfig, argv)
    assert (cfg.clips, cfg.steps, cfg.batch_size, cfg.threads, cfg.resume, cfg.learning_rate) == (24, 8, 4, 2, "latest", 0.01)
    with pytest.raises(SystemExit, match="--clips must be a positive whole number, got 0"):
        train_probe.main(parse_config(train_probe.ProbeTrainConfig, ["--clips", "0"]))
