"""Ranking from pairwise human votes: Bradley-Terry scores with bootstrap intervals, win rates.

Pure functions of a votes table (the rows of :mod:`dollar.votes`: ``model_a``, ``model_b`` and
one column per criterion holding ``A``, ``B``, ``tie`` or ``both_bad``); no UI. A tie counts
half a win to each side; "both bad" is a tie too (the two are equally unacceptable), as in
Chatbot Arena. Scores are on the Elo scale: ``1000 + 400 * log10(odds)``, so a 400-point gap
means 10:1 odds of being preferred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# A vote's vocabulary, shared with the vote store (dollar/votes.py imports it from here, so the
# ranking math needs no database library).
CRITERIA = ("visual_quality", "text_alignment", "motion", "overall")
ANSWERS = ("A", "B", "tie", "both_bad")

ELO_SCALE = 400.0 / math.log(10.0)
ELO_BASE = 1000.0
MIN_BOOTSTRAP_ROUNDS = 500
DEFAULT_BOOTSTRAP_ROUNDS = 1000
DEFAULT_MIN_VOTES = 30
# A weak Gaussian prior on the log-strengths (variance 1/REG): keeps a model that never lost
# finite and the fit unique; negligible once a pair has a few dozen votes.
DEFAULT_REG = 0.01


@dataclass(frozen=True)
class PairwiseData:
    """Votes on one criterion as index arrays: battle k is ``models[a[k]]`` vs ``models[b[k]]``
    with ``score[k]`` = 1 (a won), 0 (b won) or 0.5 (tie / both bad)."""

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


def pairwise_data(votes: pd.DataFrame, criterion: str) -> PairwiseData:
    """A votes table -> the battles for one criterion (models sorted by name)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    if len(votes) == 0:
        return PairwiseData([], np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    index = {m: i for i, m in enumerate(models)}
    answers = votes[criterion].to_numpy()
    if not np.isin(answers, ANSWERS).all():
        raise ValueError(f"Column {criterion} holds answers other than A, B, tie, both_bad.")
    score = np.where(answers == "A", 1.0, np.where(answers == "B", 0.0, 0.5))
    a = votes["model_a"].map(index).to_numpy(int)
    b = votes["model_b"].map(index).to_numpy(int)
    return PairwiseData(models, a, b, score)


def _pair_totals(k: int, a: np.ndarray, b: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None):
    """(n, s): n[i, j] battles between i and j, s[i, j] points i scored against j."""
    w = np.ones(len(a)) if weight is None else weight
    n = np.zeros((k, k))
    s = np.zeros((k, k))
    np.add.at(n, (a, b), w)
    np.add.at(n, (b, a), w)
    np.add.at(s, (a, b), w * score)
    np.add.at(s, (b, a), w * (1.0 - score))
    return n, s


def fit_bradley_terry_totals(n: np.ndarray, s: np.ndarray, reg: float = DEFAULT_REG, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Maximum a posteriori log-strengths from pair totals by Newton's method on
    ``sum_ij s_ij log sigmoid(beta_i - beta_j) - reg/2 |beta|^2`` (concave, so Newton converges
    from zero). The prior centres the result: ``sum(beta) = 0``."""
    k = n.shape[0]
    beta = np.zeros(k)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(beta[:, None] - beta[None, :])))  # p[i, j] = P(i beats j)
        grad = (s - n * p).sum(axis=1) - reg * beta
        w = n * p * (1.0 - p)
        hess = w - np.diag(w.sum(axis=1)) - reg * np.eye(k)  # negative definite
        step = np.linalg.solve(hess, -grad)
        beta = beta + step
        if np.abs(step).max() < tol:
            break
    return beta


def fit_bradley_terry(data: PairwiseData, reg: float = DEFAULT_REG, weight: np.ndarray | None = None) -> np.ndarray:
    """Log-strengths (natural-log odds units, centred) of ``data.models``."""
    n, s = _pair_totals(len(data.models), data.a, data.b, data.score, weight)
    return fit_bradley_terry_totals(n, s, reg)


def order_uncertainty(n: np.ndarray, s: np.ndarray, reg: float = DEFAULT_REG) -> np.ndarray:
    """[K, K] posterior probability that the fitted order of models i and j is the wrong one,
    under the Laplace approximation of the Bradley-Terry posterior (the MAP fit and the inverse
    of the negative Hessian as its covariance): ``Phi(-|beta_i - beta_j| / sd(beta_i - beta_j))``.
    0.5 where the data say nothing; near 0 for a pair whose order is settled."""
    from scipy.stats import norm

    beta = fit_bradley_terry_totals(n, s, reg)
    p = 1.0 / (1.0 + np.exp(-(beta[:, None] - beta[None, :])))
    w = n * p * (1.0 - p)
    cov = np.linalg.inv(np.diag(w.sum(axis=1)) - w + reg * np.eye(len(beta)))
    var = np.diag(cov)[:, None] + np.diag(cov)[None, :] - 2.0 * cov
    gap = np.abs(beta[:, None] - beta[None, :])
    out = norm.cdf(-gap / np.sqrt(np.maximum(var, 1e-12)))
    np.fill_diagonal(out, 0.0)
    return out


PAIRING_RULES = ("least_compared", "active")


def pair_keys(n: np.ndarray, s: np.ndarray, rule: str, reg: float = DEFAULT_REG, shown: np.ndarray | None = None):
    """(i, j, keys): every pair i < j and its sort keys under ``rule``, the first key first
    (smaller = show sooner). ``least_compared``: (battles shown,). ``active``: (-P(order wrong),
    battles shown), the order's uncertainty from :func:`order_uncertainty`. ``shown``: [K, K]
    battles shown per pair for the tie-break (default ``n``; an arena counts its open battles too)."""
    if rule not in PAIRING_RULES:
        raise ValueError(f"rule must be one of {PAIRING_RULES}, got {rule!r}.")
    k = n.shape[0]
    if k < 2:
        raise ValueError("Pairing needs at least two models.")
    i, j = np.triu_indices(k, 1)
    keys = [(n if shown is None else shown)[i, j]]
    if rule == "active":
        keys.insert(0, -np.round(order_uncertainty(n, s, reg)[i, j], 9))
    return i, j, keys


def next_pair(
    n: np.ndarray, s: np.ndarray, rule: str, rng: np.random.Generator, reg: float = DEFAULT_REG, shown: np.ndarray | None = None
) -> tuple[int, int]:
    """The pair (i < j) to show next, from the pair totals so far. ``least_compared``: the pair
    with the fewest battles. ``active``: the pair whose order is least certain
    (:func:`order_uncertainty`), as active ranking and K-Sort Arena do; fewest battles breaks
    ties (:func:`pair_keys`). Remaining ties are broken at random."""
    i, j, keys = pair_keys(n, s, rule, reg, shown)
    best = np.lexsort([rng.random(len(i)), *reversed(keys)])[0]  # np.lexsort: the last key is the primary one
    return int(i[best]), int(j[best])


def pair_totals(votes: pd.DataFrame, criterion: str, models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, s) over ``models`` (in that order; models without votes get zeros) from a votes table:
    n[i, j] battles between i and j, s[i, j] points i scored against j (ties half)."""
    index = {m: i for i, m in enumerate(models)}
    if len(votes):
        votes = votes[votes["model_a"].isin(index) & votes["model_b"].isin(index)]
    data = pairwise_data(votes, criterion)
    remap = np.array([index[m] for m in data.models], dtype=int)
    if len(data) == 0:
        return np.zeros((len(models), len(models))), np.zeros((len(models), len(models)))
    return _pair_totals(len(models), remap[data.a], remap[data.b], data.score)


def simulate_pairing(
    true_beta: np.ndarray,
    rule: str,
    checkpoints: list[int],
    rng: np.random.Generator,
    random_share: float = 0.1,
    tie_share: float = 0.1,
    refit_every: int = 5,
    reg: float = DEFAULT_REG,
) -> np.ndarray:
    """Simulated raters vote on pairs chosen by ``rule``; returns, for each number of votes in
    ``checkpoints``, whether the Bradley-Terry fit orders the models exactly as ``true_beta``
    does. A rater answers at random with probability ``random_share``, calls a tie with
    ``tie_share``, and otherwise prefers i over j with probability sigmoid(beta_i - beta_j).
    The pair is re-chosen after every ``refit_every`` votes (an arena refits in batches)."""
    k = len(true_beta)
    n, s = np.zeros((k, k)), np.zeros((k, k))
    truth = np.argsort(-np.asarray(true_beta))
    hits, pair = [], None
    for vote in range(1, max(checkpoints) + 1):
        if pair is None or (vote - 1) % refit_every == 0:
            pair = next_pair(n, s, rule, rng, reg)
        i, j = pair
        u = rng.random()
        if u < random_share:
            score = float(rng.random() < 0.5)
        elif u < random_share + tie_share:
            score = 0.5
        else:
            score = float(rng.random() < 1.0 / (1.0 + math.exp(-(true_beta[i] - true_beta[j]))))
        n[i, j] += 1
        n[j, i] += 1
        s[i, j] += score
        s[j, i] += 1.0 - score
        if vote in checkpoints:
            hits.append(bool(np.array_equal(np.argsort(-fit_bradley_terry_totals(n, s, reg)), truth)))
    return np.array(hits)


def to_elo(beta: np.ndarray) -> np.ndarray:
    return ELO_BASE + ELO_SCALE * np.asarray(beta)


def bootstrap_bradley_terry(
    data: PairwiseData, rounds: int = DEFAULT_BOOTSTRAP_ROUNDS, seed: int = 0, reg: float = DEFAULT_REG
) -> np.ndarray:
    """[rounds, K] log-strengths refitted on battles resampled with replacement."""
    if rounds < MIN_BOOTSTRAP_ROUNDS:
        raise ValueError(f"Use at least {MIN_BOOTSTRAP_ROUNDS} bootstrap rounds for 95% intervals, got {rounds}.")
    rng = np.random.default_rng(seed)
    k, m = len(data.models), len(data)
    # Resampling battles with replacement = multinomial counts over the distinct
    # (a, b, outcome) kinds of battle, which keeps each round O(K^2) however many votes.
    kinds, kind_counts = np.unique(np.stack([data.a, data.b, data.score * 2]), axis=1, return_counts=True)
    a, b, score = kinds[0].astype(int), kinds[1].astype(int), kinds[2] / 2
    draws = rng.multinomial(m, kind_counts / m, size=rounds).astype(float)
    out = np.empty((rounds, k))
    for r in range(rounds):
        n, s = _pair_totals(k, a, b, score, draws[r])
        out[r] = fit_bradley_terry_totals(n, s, reg)
    return out


def ranks_from_intervals(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Rank = 1 + the number of models whose whole interval lies above this one's: models
    whose intervals overlap share a rank, as on Chatbot Arena."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def board_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """The votes that count for the public board: held-out prompts (not users' own), no check
    battles, and, where the table says so (``counted``, from the vote store), no flagged rater."""
    if len(votes) == 0:
        return votes
    keep = votes["counts_for_board"].astype(bool)
    if "check_side" in votes:
        keep &= votes["check_side"].isna()
    if "counted" in votes:
        keep &= votes["counted"].astype(bool)
    return votes[keep]


def leaderboard(
    votes: pd.DataFrame,
    criterion: str,
    rounds: int = DEFAULT_BOOTSTRAP_ROUNDS,
    seed: int = 0,
    min_votes: int = DEFAULT_MIN_VOTES,
    reg: float = DEFAULT_REG,
) -> pd.DataFrame:
    """One row per model, best first: rank, score and its 95% bootstrap interval, votes,
    wins/ties/losses and a ``status`` of "preliminary" under ``min_votes`` votes."""
    columns = ["rank", "model", "score", "ci_low", "ci_high", "votes", "wins", "ties", "losses", "status"]
    data = pairwise_data(votes, criterion)
    if len(data) == 0:
        return pd.DataFrame(columns=columns)
    beta = fit_bradley_terry(data, reg)
    boot = bootstrap_bradley_terry(data, rounds, seed, reg)
    lower, upper = np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
    k = len(data.models)
    n_votes = np.bincount(data.a, minlength=k) + np.bincount(data.b, minlength=k)
    wins = np.bincount(data.a, weights=data.score == 1.0, minlength=k) + np.bincount(data.b, weights=data.score == 0.0, minlength=k)
    ties = np.bincount(data.a, weights=data.score == 0.5, minlength=k) + np.bincount(data.b, weights=data.score == 0.5, minlength=k)
    table = pd.DataFrame(
        {
            "rank": ranks_from_intervals(lower, upper),
            "model": data.models,
            "score": to_elo(beta).round(1),
            "ci_low": to_elo(lower).round(1),
            "ci_high": to_elo(upper).round(1),
            "votes": n_votes,
            "wins": wins.astype(int),
            "ties": ties.astype(int),
            "losses": (n_votes - wins - ties).astype(int),
            "status": np.where(n_votes < min_votes, "preliminary", ""),
        }
    )
    return table.sort_values(["rank", "score"], ascending=[True, False]).reset_index(drop=True)[columns]


def win_rate_matrix(votes: pd.DataFrame, criterion: str, order: list[str] | None = None) -> pd.DataFrame:
    """P(row model preferred over column model), ties half; NaN where the pair never met."""
    data = pairwise_data(votes, criterion)
    n, s = _pair_totals(len(data.models), data.a, data.b, data.score)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)
    table = pd.DataFrame(rate, index=data.models, columns=data.models)
    if order is not None:
        table = table.loc[order, order]
    return table


def pair_outcomes(votes: pd.DataFrame, criterion: str, order: list[str] | None = None) -> pd.DataFrame:
    """Win / tie / both-bad / lose counts for every pair that met, from the first model's side
    (the first is the better-ranked one when ``order`` is given)."""
    rows = {}
    for _, v in votes.iterrows():
        first, second = sorted((v["model_a"], v["model_b"]), key=(order.index if order else str))
        key = (first, second)
        r = rows.setdefault(key, {"model": first, "opponent": second, "win": 0, "tie": 0, "both_bad": 0, "lose": 0})
        answer = v[criterion]
        if answer in ("tie", "both_bad"):
            r[answer] += 1
        elif (answer == "A") == (v["model_a"] == first):
            r["win"] += 1
        else:
            r["lose"] += 1
    rank = order.index if order else str
    ordered = sorted(rows.values(), key=lambda r: (rank(r["model"]), rank(r["opponent"])))
    table = pd.DataFrame(ordered, columns=["model", "opponent", "win", "tie", "both_bad", "lose"])
    table["total"] = table[["win", "tie", "both_bad", "lose"]].sum(axis=1)
    return table


# --- figures (matplotlib; the app shows them, the ranking above does not depend on them) ---


def plot_win_rate_heatmap(matrix: pd.DataFrame, title: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(matrix)
    fig, ax = plt.subplots(figsize=(2.5 + 0.9 * max(k, 2), 1.5 + 0.8 * max(k, 2)), dpi=100)
    values = matrix.to_numpy(dtype=float)
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(k), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(k), matrix.index)
    ax.set_xlabel("opponent")
    ax.set_ylabel("model")
    for i in range(k):
        for j in range(k):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="win rate (ties half)")
    ax.set_title(title or "win rate, row vs column", fontsize=10)
    fig.tight_layout()
    return fig


def plot_pair_outcomes(outcomes: pd.DataFrame, title: str = ""):
    """The paper's bars: one horizontal bar per pair, win / tie / both bad / lose in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(outcomes), 1)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.5 * n), dpi=100)
    colours = {"win": "#4c9a2a", "tie": "#b0b0b0", "both_bad": "#7a7a7a", "lose": "#c0392b"}
    left = np.zeros(len(outcomes))
    labels = [f"{m} vs {o}" for m, o in zip(outcomes["model"], outcomes["opponent"])]
    total = outcomes["total"].to_numpy(dtype=float) if len(outcomes) else np.zeros(0)
    for key, colour in colours.items():
        pct = 100 * outcomes[key].to_numpy(dtype=float) / np.maximum(total, 1)
        ax.barh(labels, pct, left=left, color=colour, label=key.replace("_", " "))
        for y, (x0, w) in enumerate(zip(left, pct)):
            if w >= 8:
                ax.text(x0 + w / 2, y, f"{w:.0f}%", ha="center", va="center", color="white", fontsize=8)
        left += pct
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("% of votes")
    ax.legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        ax.set_title(title, pad=24)
    fig.tight_layout()
    return fig
