import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from dollar import ranking

MODELS = ["teacher", "student-4", "student-2", "teacher DDIM-4", "student-1", "teacher DDIM-1"]
STRENGTHS = np.array([1.2, 0.9, 0.4, 0.0, -0.5, -1.4])  # natural-log odds units


def synthetic_votes(n: int, seed: int = 0, tie_rate: float = 0.15, strengths=STRENGTHS, models=MODELS) -> pd.DataFrame:
    """Battles drawn from known Bradley-Terry strengths, with some ties and both-bad answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        i, j = rng.choice(len(models), 2, replace=False)
        p = 1 / (1 + np.exp(-(strengths[i] - strengths[j])))
        u = rng.random()
        answer = ("tie" if rng.random() < 0.5 else "both_bad") if u < tie_rate else ("A" if rng.random() < p else "B")
        rows.append(dict(model_a=models[i], model_b=models[j], overall=answer, counts_for_board=True))
    return pd.DataFrame(rows)


def test_fit_agrees_with_scikit_learn_logistic_regression():
    """The same model as a logistic regression on +1/-1 design rows, ties as two half-weight
    rows, L2 penalty 1/C = reg: FastChat's formulation, fitted by a different solver."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    votes = synthetic_votes(1500, seed=1)
    data = ranking.pairwise_data(votes, "overall")
    k, m = len(data.models), len(data)
    x = np.zeros((m, k))
    x[np.arange(m), data.a] = 1.0
    x[np.arange(m), data.b] = -1.0
    design = np.concatenate([x, x])
    y = np.concatenate([np.ones(m), np.zeros(m)])
    weight = np.concatenate([data.score, 1.0 - data.score])
    keep = weight > 0
    reg = 0.05
    lr = linear_model.LogisticRegression(fit_intercept=False, C=1.0 / reg, tol=1e-12, max_iter=10_000)
    lr.fit(design[keep], y[keep], sample_weight=weight[keep])
    ours = ranking.fit_bradley_terry(data, reg=reg)
    np.testing.assert_allclose(ours, lr.coef_[0], atol=1e-5)


def test_fit_agrees_with_scipy_on_the_per_battle_likelihood():
    votes = synthetic_votes(800, seed=2)
    data = ranking.pairwise_data(votes, "overall")
    reg = 0.01

    def neg_log_posterior(beta):
        d = beta[data.a] - beta[data.b]
        return -(data.score * -np.logaddexp(0, -d) + (1 - data.score) * -np.logaddexp(0, d)).sum() + 0.5 * reg * beta @ beta

    reference = minimize(neg_log_posterior, np.zeros(len(data.models)), method="BFGS", options={"gtol": 1e-9}).x
    np.testing.assert_allclose(ranking.fit_bradley_terry(data, reg=reg), reference, atol=1e-4)


def test_known_strengths_are_recovered_in_order_and_inside_the_intervals():
    table = ranking.leaderboard(synthetic_votes(6000, seed=3, tie_rate=0.0), "overall", rounds=500, seed=0)
    assert list(table["model"]) == MODELS  # best first, as drawn
    assert list(table["rank"]) == [1, 2, 3, 4, 5, 6]
    truth = dict(zip(MODELS, ranking.to_elo(STRENGTHS - STRENGTHS.mean())))
    assert all(r.ci_low <= truth[r.model] <= r.ci_high for r in table.itertuples()), table
    assert (table["ci_low"] < table["score"]).all() and (table["score"] < table["ci_high"]).all()
    # With ties (which pull the gaps in: half a win each way) the order still comes out right.
    with_ties = ranking.leaderboard(synthetic_votes(6000, seed=3, tie_rate=0.15), "overall", rounds=500, seed=0)
    assert list(with_ties["model"]) == MODELS


def test_ties_and_both_bad_count_half():
    votes = pd.DataFrame(
        dict(model_a=["x", "x", "x", "x"], model_b=["y", "y", "y", "y"], overall=["A", "B", "tie", "both_bad"], counts_for_board=True)
    )
    beta = ranking.fit_bradley_terry(ranking.pairwise_data(votes, "overall"))
    np.testing.assert_allclose(beta, [0.0, 0.0], atol=1e-9)
    rates = ranking.win_rate_matrix(votes, "overall")
    assert rates.loc["x", "y"] == 0.5 and rates.loc["y", "x"] == 0.5
    one_sided = votes.assign(overall=["A", "A", "tie", "tie"])  # 3 of 4 points to x
    rates = ranking.win_rate_matrix(one_sided, "overall")
    assert rates.loc["x", "y"] == 0.75 and np.isnan(rates.loc["x", "x"])


def test_an_unbeaten_model_gets_a_finite_score():
    votes = pd.DataFrame(dict(model_a=["x"] * 20, model_b=["y"] * 20, overall=["A"] * 20, counts_for_board=True))
    beta = ranking.fit_bradley_terry(ranking.pairwise_data(votes, "overall"))
    assert np.isfinite(beta).all() and beta[0] > 2 and abs(beta.sum()) < 1e-9


def test_ranks_respect_the_intervals():
    lower = np.array([10.0, 8.0, 1.0, 0.0])
    upper = np.array([14.0, 11.0, 5.0, 2.0])
    # model 1 overlaps model 0 -> both rank 1; model 2 is below both; model 3 overlaps 2
    np.testing.assert_array_equal(ranking.ranks_from_intervals(lower, upper), [1, 1, 3, 3])


def test_preliminary_below_the_minimum_votes_and_the_board_filter():
    votes = synthetic_votes(200, seed=4, models=MODELS[:3], strengths=STRENGTHS[:3])
    votes.loc[:9, "counts_for_board"] = False
    board = ranking.board_votes(votes)
    assert len(board) == 190
    table = ranking.leaderboard(board, "overall", rounds=500, min_votes=200)
    assert table["votes"].max() < 200 and set(table["status"]) == {"preliminary"}
    table = ranking.leaderboard(board, "overall", rounds=500, min_votes=10)
    assert set(table["status"]) == {""}
    assert table["votes"].sum() == 2 * len(board)
    assert (table["wins"] + table["ties"] + table["losses"] == table["votes"]).all()


def test_bootstrap_needs_enough_rounds_and_is_reproducible():
    data = ranking.pairwise_data(synthetic_votes(300, seed=5), "overall")
    with pytest.raises(ValueError, match="at least 500"):
        ranking.bootstrap_bradley_terry(data, rounds=100)
    a = ranking.bootstrap_bradley_terry(data, rounds=500, seed=1)
    np.testing.assert_array_equal(a, ranking.bootstrap_bradley_terry(data, rounds=500, seed=1))
    assert a.shape == (500, len(MODELS)) and a.std(axis=0).min() > 0


def test_pair_outcomes_are_counted_from_the_better_models_side():
    votes = pd.DataFrame(
        dict(
            model_a=["x", "y", "y", "x", "z"],
            model_b=["y", "x", "x", "y", "x"],
            overall=["A", "A", "B", "both_bad", "tie"],
            counts_for_board=True,
        )
    )
    out = ranking.pair_outcomes(votes, "overall", order=["x", "y", "z"]).set_index("opponent")
    assert out.loc["y", ["model", "win", "tie", "both_bad", "lose", "total"]].tolist() == ["x", 2, 0, 1, 1, 4]
    assert out.loc["z", ["model", "win", "tie", "both_bad", "lose", "total"]].tolist() == ["x", 0, 1, 0, 0, 1]


def test_empty_votes_and_bad_input():
    empty = pd.DataFrame(columns=["model_a", "model_b", "overall", "counts_for_board"])
    assert ranking.leaderboard(empty, "overall").empty
    with pytest.raises(ValueError, match="criterion"):
        ranking.leaderboard(empty, "speed")
    with pytest.raises(ValueError, match="answers other than"):
        ranking.pairwise_data(pd.DataFrame(dict(model_a=["x"], model_b=["y"], overall=["C"])), "overall")


def test_figures_show_every_measured_cell():
    votes = synthetic_votes(300, seed=6, models=MODELS[:3], strengths=STRENGTHS[:3])
    matrix = ranking.win_rate_matrix(votes, "overall")
    fig = ranking.plot_win_rate_heatmap(matrix)
    assert len(fig.axes[0].texts) == int(matrix.notna().to_numpy().sum()) == 6
    bars = ranking.plot_pair_outcomes(ranking.pair_outcomes(votes, "overall"))
    assert len(bars.axes[0].patches) == 3 * 4  # three pairs, four segments each


def test_the_ranking_math_imports_no_database_library():
    import subprocess
    import sys

    code = "import dollar.ranking, sys; bad = [m for m in ('sqlalchemy', 'gradio', 'torch') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- choosing the next pair ----------------------------------------------------------------


def _totals(strengths, battles: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = len(strengths)
    n, s = np.zeros((k, k)), np.zeros((k, k))
    for _ in range(battles):
        i, j = rng.choice(k, 2, replace=False)
        win = float(rng.random() < 1 / (1 + np.exp(-(strengths[i] - strengths[j]))))
        n[i, j] += 1
        n[j, i] += 1
        s[i, j] += win
        s[j, i] += 1 - win
    return n, s


def test_order_uncertainty_is_the_laplace_posterior_of_each_gap():
    from scipy.stats import norm

    n, s = _totals(STRENGTHS, 300)
    reg = ranking.DEFAULT_REG
    beta = ranking.fit_bradley_terry_totals(n, s, reg)

    def log_post(b):
        d = b[:, None] - b[None, :]
        return float((s * -np.log1p(np.exp(-d))).sum() - reg / 2 * b @ b)

    # A second implementation: the Hessian by central finite differences of the log posterior.
    k, h = len(beta), 1e-4
    hess = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            ea, eb = np.eye(k)[a] * h, np.eye(k)[b] * h
            hess[a, b] = (log_post(beta + ea + eb) - log_post(beta + ea - eb) - log_post(beta - ea + eb) + log_post(beta - ea - eb)) / (4 * h * h)
    cov = np.linalg.inv(-hess)
    i, j = 1, 2
    expected = norm.cdf(-abs(beta[i] - beta[j]) / np.sqrt(cov[i, i] + cov[j, j] - 2 * cov[i, j]))
    got = ranking.order_uncertainty(n, s, reg)
    assert got[i, j] == pytest.approx(expected, rel=1e-3)
    assert np.allclose(got, got.T) and np.all(np.diag(got) == 0)
    assert got[0, 5] < 1e-3 < got[1, 2]  # far apart: settled; neighbours: open
    assert np.allclose(ranking.order_uncertainty(np.zeros((3, 3)), np.zeros((3, 3)))[np.triu_indices(3, 1)], 0.5)


def test_next_pair_rules():
    rng = np.random.default_rng(0)
    n, s = _totals(np.array([3.0, 0.0, 0.05, -3.0]), 400)
    n[1, 2] += 200  # the close pair is already the most compared...
    n[2, 1] += 200
    s[1, 2] += 100
    s[2, 1] += 100
    assert ranking.next_pair(n, s, "active", rng) == (1, 2)  # ...but its order is still the least certain
    fewest = min((n[i, j], (i, j)) for i in range(4) for j in range(i + 1, 4))[1]
    assert ranking.next_pair(n, s, "least_compared", rng) == fewest
    picks = {ranking.next_pair(np.zeros((3, 3)), np.zeros((3, 3)), "active", np.random.default_rng(t)) for t in range(30)}
    assert picks == {(0, 1), (0, 2), (1, 2)}  # nothing known: ties broken at random
    with pytest.raises(ValueError, match="rule must be one of"):
        ranking.next_pair(n, s, "ucb", rng)


def test_active_pairing_recovers_the_true_order_with_fewer_votes():
    # One close pair among far-apart models: least-compared spends most votes on settled pairs.
    beta = (np.array([1400, 1000, 960, 600.0]) - 990) / ranking.ELO_SCALE
    rates = {
        rule: np.mean([ranking.simulate_pairing(beta, rule, [200], np.random.default_rng(r))[0] for r in range(30)])
        for rule in ranking.PAIRING_RULES
    }
    assert rates["active"] >= 0.85 and rates["active"] > rates["least_compared"] + 0.1, rates
    # Raters who answer at random teach nothing: the order is recovered by chance at most.
    noise = np.mean([ranking.simulate_pairing(beta, "active", [200], np.random.default_rng(r), random_share=1.0)[0] for r in range(10)])
    assert noise <= 0.2
