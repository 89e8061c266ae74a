"""Checkpoints are written atomically and resuming skips a half-written one: in-process on a tiny
model, then a real trainer killed with SIGKILL and resumed from the previous complete checkpoint."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from conftest import ROOT
from dollar.checkpointing import (
    checkpoint_problem,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    resume_or_exit,
    save_checkpoint,
)


@pytest.fixture()
def trained(tmp_path):
    """An accelerator with a tiny model and optimizer, and a function that takes a step and saves it."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    accelerator = Accelerator(cpu=True)
    model, opt = accelerator.prepare(model, opt)
    root = tmp_path / "checkpoints"

    def step_and_save(step: int, keep=None) -> str:
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        folder = str(root / f"step-{step:07d}")
        save_checkpoint(accelerator, folder, {"step": step}, keep=keep)
        return folder

    return accelerator, model, root, step_and_save


def test_a_saved_checkpoint_is_complete_and_loads_back(trained):
    accelerator, model, root, step_and_save = trained
    folder = step_and_save(1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    assert checkpoint_problem(folder) is None and not os.path.exists(folder + ".incomplete")
    step_and_save(2)
    assert load_checkpoint(accelerator, folder, str(root)) == {"step": 1}
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert load_checkpoint(accelerator, "false", str(root)) is None
    assert load_checkpoint(accelerator, "latest", str(root / "nowhere")) is None


def test_resume_latest_skips_half_written_checkpoints_with_a_warning(trained):
    accelerator, _, root, step_and_save = trained
    step_and_save(1)
    second = step_and_save(2)
    third = step_and_save(3)
    with open(os.path.join(third, "random_states_0.pkl"), "r+b") as f:  # killed while this file was written
        f.truncate(os.path.getsize(f.name) // 2)
    missing = root / "step-0000004"  # an old-style folder that got only some of its files
    missing.mkdir()
    (missing / "random_states_0.pkl").write_bytes(b"\x80")
    (root / "step-0000005.incomplete").mkdir()  # a save that never finished
    with pytest.warns(UserWarning) as caught:
        folder, info = latest_checkpoint(str(root))
    assert (folder, info) == (second, {"step": 2})
    reasons = " ".join(str(w.message) for w in caught)
    assert "random_states_0.pkl has" in reasons and "no checkpoint.json" in reasons and "being written" in reasons
    with pytest.warns(UserWarning):
        assert load_checkpoint(accelerator, "latest", str(root)) == {"step": 2}
    with pytest.raises(ValueError, match=r"is not a complete checkpoint \(random_states_0.pkl has"):
        load_checkpoint(accelerator, third, str(root))
    # A training script stops with that one sentence, not a traceback.
    with pytest.raises(SystemExit, match=r"^error: .*is not a complete checkpoint"):
        resume_or_exit(accelerator, third, str(root))


def test_a_save_interrupted_midway_leaves_the_previous_checkpoints_intact(trained, monkeypatch):
    accelerator, _, root, step_and_save = trained
    first = step_and_save(1)
    original = accelerator.save_state

    def dies_halfway(folder):
        original(folder)
        os.remove(os.path.join(folder, "random_states_0.pkl"))
        raise KeyboardInterrupt  # the process stops here

    monkeypatch.setattr(accelerator, "save_state", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        step_and_save(2)
    assert not os.path.exists(root / "step-0000002")
    with pytest.warns(UserWarning, match="being written"):
        assert [f for f, _ in complete_checkpoints(str(root), warn=True)] == [first]
    monkeypatch.setattr(accelerator, "save_state", original)
    step_and_save(2)  # the next save clears the leftover and completes
    assert [i["step"] for _, i in complete_checkpoints(str(root))] == [1, 2]
    assert not os.path.exists(str(root / "step-0000002") + ".incomplete")


def test_keep_prunes_old_checkpoints_and_a_resave_replaces_one(trained):
    _, _, root, step_and_save = trained
    for step in range(1, 5):
        step_and_save(step, keep=2)
    assert [i["step"] for _, i in complete_checkpoints(str(root))] == [3, 4]
    step_and_save(4, keep=2)  # distill saves the same iteration again after a rollback
    assert [i["step"] for _, i in complete_checkpoints(str(root))] == [3, 4]
    assert sorted(os.listdir(root)) == ["step-0000003", "step-0000004"]


PROBE = [sys.executable, os.path.join(ROOT, "train", "train_probe.py"), "--clips", "24", "--steps", "8", "--batch_size", "4"]
PROBE += ["--eval_seeds", "1", "--eval_pairs", "1", "--checkpoint_every", "2", "--log_every", "1"]


@pytest.mark.slow  # three short trainer runs, ~20 s on 2 cores
def test_trainer_killed_after_a_checkpoint_resumes_from_the_last_complete_one(tmp_path):
    """The real probe trainer, SIGKILLed right after a checkpoint folder appears; then the newest
    checkpoint is damaged as a kill mid-save would have left it (a truncated random_states pickle),
    with a half-written folder beside it. ``--resume latest`` warns, takes the previous complete
    checkpoint, and ends bit-identical to a run never interrupted."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    subprocess.run([*PROBE, "--output_dir", str(tmp_path / "whole")], check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen([*PROBE, "--output_dir", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-0000004").is_dir():
        assert proc.poll() is None and time.time() < deadline, "the trainer ended before its second checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "diffusion_pytorch_model.safetensors").exists()  # killed before the end

    found = complete_checkpoints(str(out / "checkpoints"))
    assert len(found) >= 2, found
    newest, previous = found[-1][0], found[-2]
    with open(os.path.join(newest, "random_states_0.pkl"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    (out / "checkpoints" / "step-0000099.incomplete").mkdir()
    resumed = subprocess.run([*PROBE, "--output_dir", str(out), "--resume", "latest"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"skipping the checkpoint {newest}: random_states_0.pkl has" in resumed.stderr
    assert f"resumed from {previous[0]}" in resumed.stdout

    whole = load_file(tmp_path / "whole" / "diffusion_pytorch_model.safetensors")
    again = load_file(out / "diffusion_pytorch_model.safetensors")
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)


def test_warmup_cosine_warms_up_linearly_then_decays_to_its_floor():
    from dollar.checkpointing import warmup_cosine

    for floor in (0.0, 0.1):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
        schedule = warmup_cosine(opt, warmup_steps=4, max_steps=20, floor=floor)
        lrs = []
        for _ in range(25):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        cosine = [0.5 * (1 + math.cos(math.pi * min(s / 20, 1.0))) for s in range(25)]
        expected = [2.0 * min(1.0, (s + 1) / 4) * (floor + (1 - floor) * c) for s, c in enumerate(cosine)]
        assert lrs == pytest.approx(expected)
        assert lrs[0] == pytest.approx(0.5 * (floor + (1 - floor)))  # a quarter of the way up
        assert lrs[-1] == pytest.approx(2.0 * floor)  # held at the floor after max_steps


def test_start_log_drops_rows_past_the_resumed_step(tmp_path):
    from dollar.checkpointing import start_log

    (tmp_path / "train_log.jsonl").write_text("".join(f'{{"step": {s}}}\n' for s in range(1, 6)))
    log, start, bar = start_log(Accelerator(cpu=True), str(tmp_path), 3, 10)
    log.write('{"step": 4}\n')
    log.close()
    bar.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert bar.n == 3 and bar.total == 10
