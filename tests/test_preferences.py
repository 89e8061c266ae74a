"""Votes that teach (issue 20): the preference export against the store, the Bradley-Terry loss
against references, the preference reward model's training and its use in distillation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import expit

from conftest import ROOT, requires_bundled_teacher
from dollar import ranking
from dollar.arena import ModelEntry, ModelZoo
from dollar.losses import bradley_terry_loss
from dollar.preferences import (
    PreferenceError,
    check_out_folder,
    export_preferences,
    load_preferences,
    pairwise_accuracy,
    split_by_prompt,
)
from dollar.votes import CRITERIA, VoteStore

PROMPTS = ["a red circle moving left on a black background", "a blue square moving up on a white background"]
MODELS = [ModelEntry(f"teacher DDIM-{k}", "teacher", k, "baseline") for k in (1, 2)]


# --- the Bradley-Terry loss ------------------------------------------------------------------


def test_bradley_terry_loss_matches_the_formula_and_the_ranking_fit():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    y = rng.choice([0.0, 0.5, 1.0], size=50)
    expected = -np.mean(y * np.log(expit(a - b)) + (1 - y) * np.log(expit(b - a)))
    got = bradley_terry_loss(torch.tensor(a), torch.tensor(b), torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([2.0]), torch.tensor([0.5])).item() == pytest.approx(np.log(2))
    # Free per-model scores trained with the loss (+ the same Gaussian prior) reach dollar.ranking's Newton fit.
    k, reg = 4, 0.01
    true = np.array([1.0, 0.2, -0.3, -0.9])
    ia, ib = rng.integers(0, k, 400), rng.integers(0, k, 400)
    keep = ia != ib
    ia, ib = ia[keep], ib[keep]
    outcome = (rng.random(len(ia)) < expit(true[ia] - true[ib])).astype(float)
    outcome[::7] = 0.5
    n, s = ranking._pair_totals(k, ia, ib, outcome)
    reference = ranking.fit_bradley_terry_totals(n, s, reg)
    beta = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")
    ta, tb, ty = torch.tensor(ia), torch.tensor(ib), torch.tensor(outcome)

    def closure():
        opt.zero_grad()
        loss = len(ty) * bradley_terry_loss(beta[ta], beta[tb], ty) + reg / 2 * (beta**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert np.allclose(beta.detach().numpy(), reference, atol=1e-6)


def test_split_holds_out_whole_prompts():
    prompts = [f"p{i % 10}" for i in range(100)]
    train, held = split_by_prompt(prompts, 0.2, seed=3)
    assert len(set(train) | set(held)) == 100 and not set(train) & set(held)
    assert len({prompts[i] for i in held}) == 2 and not {prompts[i] for i in held} & {prompts[i] for i in train}


# --- the export, checked against the store ---------------------------------------------------


def _vote(store, zoo, session, client, prompt, seed, pair, answers, check_side=None, origin="heldout"):
    a, b = pair
    hashes = [zoo.generate(m, prompt, seed).video_hash if m in zoo.models else "x" * 64 for m in (a, b)]
    battle = store.create_battle(session, prompt, origin, seed, a, b, False, client_key=client, check_side=check_side)
    store.mark_shown(battle.id, *hashes)
    return store.record_vote(battle.id, session, dict(zip(CRITERIA, answers)), client_key=client)


@pytest.fixture(scope="module")
def voted_store(tmp_path_factory):
    """Counted votes from two raters; a third rater fails both check rounds (flagged); one vote on a user's own prompt."""
    tmp = tmp_path_factory.mktemp("prefs")
    store = VoteStore(f"sqlite:///{tmp / 'votes.sqlite'}")
    zoo = ModelZoo(MODELS, str(tmp / "videos"))
    names = tuple(m.name for m in MODELS)
    kept = []
    for k, (prompt, answers) in enumerate(
        [(PROMPTS[0], ("A", "B", "tie", "A")), (PROMPTS[1], ("B", "B", "both_bad", "B")), (PROMPTS[0], ("A", "A", "A", "tie"))]
    ):
        kept.append(_vote(store, zoo, f"s{k}", f"rater{k % 2}", prompt, 100 + k, names, answers))
    _vote(store, zoo, "s9", "rater0", PROMPTS[1], 7, names, ("A",) * 4, origin="user")
    for k in range(2):  # the flagged rater: fails both checks (the broken copy is on B, says B), and votes once
        _vote(store, zoo, f"c{k}", "cheat", PROMPTS[0], 50 + k, ("teacher", "broken copy (check)"), ("B",) * 4, check_side="A")
    _vote(store, zoo, "c9", "cheat", PROMPTS[1], 60, names, ("A",) * 4)
    return store, kept, tmp


@pytest.mark.slow
@requires_bundled_teacher
def test_export_holds_the_counted_votes_with_reproduced_latents(voted_store):
    store, kept, tmp = voted_store
    out = tmp / "dataset"
    manifest = export_preferences(store, str(out), MODELS, log=lambda *_: None)
    rows = [json.loads(line) for line in open(out / "preferences.jsonl")]
    assert manifest["votes"] == 3 and len(rows) == 3 * len(CRITERIA) and manifest["raters"] == 2
    by_vote = {v["id"]: v for v in kept}
    assert {r["vote_id"] for r in rows} == set(by_vote)  # no flagged rater, no check, no user's prompt
    for r in rows:
        v = by_vote[r["vote_id"]]
        assert (r["prompt"], r["seed"], r["model_a"], r["model_b"], r["answer"]) == (
            v["prompt"],
            v["seed"],
            v["model_a"],
            v["model_b"],
            v[r["criterion"]],
        )
        assert r["winner"] == {"A": "model_a", "B": "model_b", "tie": "tie", "both_bad": "tie"}[r["answer"]]
        assert r["label"] == {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[r["winner"]]
        assert (r["steps_a"], r["steps_b"]) == (1, 2) and r["checkpoint_a"] == r["checkpoint_b"] and len(r["checkpoint_a"]) == 16
        assert (r["video_hash_a"], r["video_hash_b"]) == (v["video_hash_a"], v["video_hash_b"])
        assert r["reproduced_a"] and r["reproduced_b"]  # the re-rendered latents decode to the very video the rater saw
    from safetensors.torch import load_file

    latents = load_file(out / "latents.safetensors")
    assert len(latents) == manifest["videos"] == 6 and {tuple(t.shape) for t in latents.values()} == {(12, 5, 8, 8)}
    card = open(out / "README.md").read()
    assert manifest["dataset_version"] in card and "3 votes" in card
    pairs = load_preferences(str(out), "overall")
    assert len(pairs) == 3 and pairs.label.tolist() == [1.0, 0.0, 0.5]
    assert torch.equal(pairs.latents_a[0], latents[rows[3]["latent_a"]])
    with pytest.raises(PreferenceError, match="already holds a preference dataset"):
        export_preferences(store, str(out), MODELS)
    with pytest.raises(PreferenceError, match="not available here; pass each with --model"):
        export_preferences(store, str(tmp / "other"), MODELS[:1])


def test_export_errors_are_one_sentence(tmp_path):
    empty = VoteStore(f"sqlite:///{tmp_path / 'votes.sqlite'}")
    with pytest.raises(PreferenceError, match="has no counted votes; collect votes in the arena first"):
        export_preferences(empty, str(tmp_path / "out"), MODELS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreferenceError, match="is a file; give a folder"):
        check_out_folder(str(tmp_path / "file"))
    with pytest.raises(PreferenceError, match="is not a preference dataset"):
        load_preferences(str(tmp_path))


@pytest.mark.slow
def test_export_command_says_what_is_missing(tmp_path):
    VoteStore(f"sqlite:///{tmp_path / 'votes.sqlite'}")
    cmd = [sys.executable, "-m", "dollar.arena", "export-preferences", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "none")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().startswith("error: There is no vote store at") and "Traceback" not in run.stderr
    cmd[cmd.index("--data-dir") + 1] = str(tmp_path)
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "has no counted votes" in run.stderr and "Traceback" not in run.stderr


def test_pairwise_accuracy_counts_decided_pairs_only():
    from dollar.preferences import PreferencePairs

    latents = torch.zeros(4, 1, 1, 1, 1)
    pairs = PreferencePairs(
        latents + torch.tensor([3.0, 0, 5, 1]).view(4, 1, 1, 1, 1), latents + 2, torch.tensor([1.0, 1, 0, 0.5]), [""] * 4, {}
    )
    model = lambda z: z.flatten(1).mean(1)  # noqa: E731
    assert pairwise_accuracy(model, pairs, np.arange(4)) == pytest.approx(1 / 3)
    assert pairwise_accuracy(model, pairs, np.array([3])) is None


# --- the preference reward model and its use in distillation ----------------------------------


def write_dataset(folder, n=240, prompts=12, channels=12, shape=(5, 8, 8), seed=0, shuffle=False):
    """A preference dataset in the export's format whose raters prefer the video with the larger
    mean of latent channel 0 (logistic noise; 10% ties); ``shuffle``: the labels permuted."""
    from safetensors.torch import save_file

    from dollar.preferences import FORMAT_VERSION

    g = torch.Generator().manual_seed(seed)
    latents, rows = {}, []
    for i in range(n):
        za, zb = torch.randn(channels, *shape, generator=g), torch.randn(channels, *shape, generator=g)
        za[0] += torch.randn((), generator=g)
        zb[0] += torch.randn((), generator=g)
        latents[f"a{i}"], latents[f"b{i}"] = za, zb
        gap = float(za[0].mean() - zb[0].mean())
        u = float(torch.rand((), generator=g))
        label = 0.5 if u < 0.1 else float(torch.rand((), generator=g) < torch.sigmoid(torch.tensor(8 * gap)))
        rows.append(dict(criterion="overall", prompt=f"p{i % prompts}", label=label, latent_a=f"a{i}", latent_b=f"b{i}"))
    if shuffle:
        labels = [r["label"] for r in rows]
        for r, k in zip(rows, np.random.default_rng(seed).permutation(n)):
            r["label"] = labels[k]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "preferences.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    save_file(latents, os.path.join(folder, "latents.safetensors"))
    manifest = dict(format_version=FORMAT_VERSION, dataset_version="test", votes=n, raters=3, store="test", created_at="today")
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return str(folder)


def _train(prefs, out, *extra):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    import train_preference_reward as trainer

    cfg = trainer.parse_config(trainer.PreferenceRewardConfig, ["--prefs", prefs, "--output_dir", str(out), "--steps", "150", *extra])
    return trainer.main(cfg)


def test_preference_reward_learns_the_raters_preference_and_not_shuffled_labels(tmp_path):
    real = _train(write_dataset(tmp_path / "real"), tmp_path / "lrm", "--threads", "1")
    assert real["heldout_pairwise_accuracy"] >= 0.8 and real["heldout_pairs"] == 40, real
    shuffled = _train(write_dataset(tmp_path / "shuffled", shuffle=True), tmp_path / "lrm-shuffled", "--threads", "1")
    assert shuffled["heldout_pairwise_accuracy"] <= 0.7, shuffled
    from dollar.preferences import load_preference_reward

    model = load_preference_reward(str(tmp_path / "lrm"))
    assert not any(p.requires_grad for p in model.parameters())
    card = open(tmp_path / "lrm" / "README.md").read()
    assert "dataset version `test`" in card and f"{100 * real['heldout_pairwise_accuracy']:.1f}%" in card
    with pytest.raises(SystemExit, match="is not a preference dataset"):
        _train(str(tmp_path), tmp_path / "none")


def test_reward_spec_names_weights_and_refusals():
    from dollar.rewards import RewardTerm, parse_reward_spec, weighted_reward

    assert parse_reward_spec("motion") == [RewardTerm("motion", 1.0)]
    terms = parse_reward_spec("preference:runs/a=b=1.5, motion=0.5,sharpness")
    assert terms == [RewardTerm("preference:runs/a=b", 1.5), RewardTerm("motion", 0.5), RewardTerm("sharpness", 1.0)]
    assert terms[0].is_preference and terms[0].path == "runs/a=b"
    frames = np.random.default_rng(0).integers(0, 255, (2, 4, 16, 16, 3), dtype=np.uint8)
    from dollar.rewards import motion_reward, sharpness_reward

    expected = 0.5 * motion_reward(frames) + sharpness_reward(frames)
    assert np.allclose(weighted_reward(terms)(frames, ["", ""]), expected)
    assert weighted_reward(parse_reward_spec("preference:x")) is None
    for bad, message in [
        ("motion=0", "nonzero number"),
        ("motion=abc", "nonzero number"),
        ("beauty", "Unknown reward"),
        (" , ", "names no reward"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_reward_spec(bad)


@pytest.mark.slow
def test_distill_climbs_a_frozen_preference_reward_alone_or_with_a_black_box(tiny_pipeline, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    import distill
    from dollar.distill_setup import reward_network

    teacher = tmp_path / "teacher"
    tiny_pipeline.save_pretrained(teacher)
    c = tiny_pipeline.transformer.config.in_channels
    prefs = tmp_path / "prefs-lrm"
    torch.manual_seed(0)
    reward_network(c, 8, hidden_channels=16).save_pretrained(prefs)
    before = {k: v.clone() for k, v in reward_network(c, 8, hidden_channels=16).from_pretrained(prefs).state_dict().items()}
    base = ["--teacher", str(teacher), "--num_clips", "8", "--batch_size", "2", "--max_iters", "1", "--fake_steps", "1"]
    base += ["--validate_every", "0", "--report_to", "none", "--cd", "false"]
    alone = distill.main(distill.parse_config([*base, "--output_dir", str(tmp_path / "a"), "--reward", f"preference:{prefs}=2.0"]))
    record = alone["history"][0]
    assert "loss_lrm_fit" not in record and np.isfinite(record["reward_preference"])  # nothing decoded, nothing fitted
    assert record["loss_ft"] == pytest.approx(-record["reward_preference"], rel=1e-6)  # the weighted score, climbed
    assert not os.path.exists(tmp_path / "a" / "latent_reward_model")
    both = distill.main(
        distill.parse_config([*base, "--output_dir", str(tmp_path / "b"), "--reward", f"preference:{prefs}=1.0,motion=0.5"])
    )
    assert {"loss_lrm_fit", "reward_preference", "loss_ft"} <= set(both["history"][0])
    after = reward_network(c, 8).from_pretrained(prefs).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: never trained, never saved over
    for flags, message in [
        (["--reward", f"preference:{tmp_path}"], "is not a trained preference reward model"),
        (["--reward", f"preference:{prefs}", "--reward_method", "ddpo"], "use it with --reward_method lrm"),
    ]:
        with pytest.raises(SystemExit, match=message):
            distill.parse_config([*base, "--output_dir", str(tmp_path / "c"), *flags])
