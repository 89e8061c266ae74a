"""Votes that teach (issue 20): the preference export against the store, the Bradley-Terry loss
against references, the preference reward model's training and its use in distillation."""

import json
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
