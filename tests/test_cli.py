import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, requires_bundled_teacher
from dollar.generate import main


@pytest.fixture()
def saved_tiny(tiny_pipeline, tmp_path):
    path = tmp_path / "tiny"
    tiny_pipeline.save_pretrained(path)
    return str(path)


def test_writes_npy_gif_and_mp4(saved_tiny, tmp_path, capsys):
    for ext in ("npy", "gif", "mp4"):
        out = tmp_path / f"v.{ext}"
        assert main(["--model", saved_tiny, "--prompt", "a red circle moving left", "--steps", "2", "--out", str(out)]) == 0
        assert out.stat().st_size > 0
    video = np.load(tmp_path / "v.npy")
    assert video.dtype == np.uint8 and video.shape == (17, 64, 64, 3)
    assert "denoising" in capsys.readouterr().out


def test_same_seed_same_video(saved_tiny, tmp_path):
    for name in ("a", "b"):
        main(["--model", saved_tiny, "--prompt", "a blue square", "--steps", "2", "--seed", "7", "--out", str(tmp_path / f"{name}.npy")])
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_empty_prompt_is_allowed_and_said(saved_tiny, tmp_path, capsys):
    assert main(["--model", saved_tiny, "--prompt", "", "--steps", "1", "--out", str(tmp_path / "e.npy")]) == 0
    assert "unconditionally" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "Unknown model"),
        (["--out", "/no/such/folder/x.mp4"], "does not exist"),
        (["--out", "{tmp}/x.avi"], "Unsupported output extension"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_input_gets_one_sentence_and_exit_2(saved_tiny, tmp_path, capsys, args, message):
    base = {"--model": saved_tiny, "--prompt": "a red circle", "--steps": "1", "--out": str(tmp_path / "x.npy")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v.replace("{tmp}", str(tmp_path))
    assert main([x for kv in base.items() for x in kv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and "Traceback" not in err


@pytest.mark.parametrize("steps", ["0", "2.5", "many"])
def test_bad_step_counts_are_refused_by_the_parser(saved_tiny, tmp_path, capsys, steps):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", saved_tiny, "--prompt", "x", "--steps", steps, "--out", str(tmp_path / "x.npy")])
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_corrupt_checkpoint_is_one_sentence(saved_tiny, tmp_path, capsys):
    weights = next(p for p in os.scandir(os.path.join(saved_tiny, "vae")) if p.name.endswith(".safetensors"))
    with open(weights.path, "wb") as f:
        f.write(b"not a safetensors file")
    assert main(["--model", saved_tiny, "--prompt", "x", "--out", str(tmp_path / "x.npy")]) == 2
    assert "missing or corrupt" in capsys.readouterr().err


@requires_bundled_teacher
def test_cli_end_to_end_on_the_bundled_teacher(tmp_path):
    out = tmp_path / "red.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dollar.generate",
            "--model",
            "teacher",
            "--prompt",
            "a red circle moving left",
            "--seed",
            "0",
            "--steps",
            "10",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    video = np.load(out)
    assert video.shape == (17, 64, 64, 3) and video.std() > 5  # a real picture, not a flat field
