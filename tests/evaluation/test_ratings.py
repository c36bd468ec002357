"""Bradley-Terry ratings: analytic two-player cases, the prior, anchors, and interval coverage."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from hexzd.evaluation.ratings import ELO_PER_NAT, fit

TRUE_ELO = np.array([0.0, 100.0, 250.0, 400.0, 600.0, 800.0])


def _round_robin(games_per_pair: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Aggregated results (i, j, wins_i, wins_j) of a round robin among TRUE_ELO's players."""
    results = []
    for i in range(len(TRUE_ELO)):
        for j in range(i + 1, len(TRUE_ELO)):
            p = 1 / (1 + 10 ** ((TRUE_ELO[j] - TRUE_ELO[i]) / 400))
            wins = int(rng.binomial(games_per_pair, p))
            results.append((i, j, wins, games_per_pair - wins))
    return results


def _sd(rating, confidence: float = 0.95) -> float:
    return (rating.hi - rating.lo) / 2 / NormalDist().inv_cdf(0.5 + confidence / 2)


def test_two_players_match_the_closed_form():
    """n wins, m losses, no prior: Elo difference 400 log10(n/m), sd 1/sqrt(N p q) nats."""
    n, m = 7, 3
    ratings = fit([("a", "b", n, m)], anchors={"b": 0.0}, prior_games=0)
    a, b = ratings["a"], ratings["b"]
    assert a.elo == pytest.approx(400 * math.log10(n / m), abs=1e-9)
    assert (b.elo, b.lo, b.hi) == (0.0, 0.0, 0.0)
    sd = ELO_PER_NAT / math.sqrt((n + m) * (n / (n + m)) * (m / (n + m)))
    assert _sd(a) == pytest.approx(sd, rel=1e-9)
    assert (a.games, b.games) == (10, 10)


def test_without_anchors_the_mean_is_zero():
    ratings = fit([("a", "b", 7, 3)], prior_games=0)
    assert ratings["a"].elo == pytest.approx(200 * math.log10(7 / 3), abs=1e-9)
    assert ratings["b"].elo == pytest.approx(-ratings["a"].elo, abs=1e-9)
    # Each rating, measured from the mean, carries half the difference's error.
    assert _sd(ratings["a"]) == pytest.approx(ELO_PER_NAT / 2 / math.sqrt(10 * 0.7 * 0.3), rel=1e-9)
    games = _round_robin(50, np.random.default_rng(3))
    assert sum(r.elo for r in fit(games).values()) == pytest.approx(0, abs=1e-9)


def test_single_games_and_aggregates_agree():
    single = [("x", "y", 1)] * 4 + [("y", "x", 1)] * 2 + [("y", "z", 0)] * 3 + [("z", "y", 0)] * 5
    aggregated = [("x", "y", 4, 2), ("z", "y", 3, 5)]
    for p, rating in fit(single, anchors={"y": 10}).items():
        assert rating == pytest.approx(fit(aggregated, anchors={"y": 10})[p])


def _prior_two_player_elo(n: int, m: int, k: float) -> float:
    """a's Elo against b (mean 0): the root x of n - N sigma(2x) + k (1/2 - sigma(x)), by bisection."""

    def sigma(y: float) -> float:
        return 1 / (1 + math.exp(-y))

    lo, hi = -20.0, 20.0
    for _ in range(200):
        x = (lo + hi) / 2
        lo, hi = (x, hi) if n - (n + m) * sigma(2 * x) + k * (0.5 - sigma(x)) > 0 else (lo, x)
    return lo * ELO_PER_NAT


@pytest.mark.parametrize("n, m", [(5, 0), (7, 3), (40, 1)])
def test_the_prior_is_half_a_win_and_half_a_loss_against_the_mean(n, m):
    ratings = fit([("a", "b", n, m)], prior_games=2.0)
    assert ratings["a"].elo == pytest.approx(_prior_two_player_elo(n, m, 2.0), abs=1e-6)
    assert math.isfinite(ratings["a"].hi)


@pytest.mark.parametrize("order", [1, -1])
def test_a_perfect_record_needs_the_prior(order):
    """An undefeated player (order 1) or a winless one (order -1) has no finite MLE."""
    games = [("extreme", "b", 6 * (order > 0), 6 * (order < 0)), ("b", "c", 3, 2)]
    ratings = fit(games)
    assert order * (ratings["extreme"].elo - ratings["b"].elo) > 0
    assert math.isfinite(ratings["extreme"].hi) and math.isfinite(ratings["extreme"].lo)
    with pytest.raises(ValueError, match="no finite maximum-likelihood"):
        fit(games, prior_games=0)


def test_players_cut_off_from_the_anchor_stay_finite_only_with_the_prior():
    games = [("a", "b", 3, 2), ("c", "d", 4, 4)]
    ratings = fit(games, anchors={"a": 0.0})
    assert all(math.isfinite(r.lo) and math.isfinite(r.hi) for r in ratings.values())
    assert ratings["c"].elo == pytest.approx(ratings["d"].elo)
    with pytest.raises(ValueError):
        fit(games, anchors={"a": 0.0}, prior_games=0)


def test_anchors_are_held_and_shift_everyone_together():
    games = _round_robin(40, np.random.default_rng(4))
    base = fit(games, anchors={0: 0.0, 5: 800.0})
    shifted = fit(games, anchors={0: 100.0, 5: 900.0})
    for p in range(6):
        assert shifted[p].elo == pytest.approx(base[p].elo + 100, abs=1e-6)
        assert shifted[p].hi - shifted[p].lo == pytest.approx(base[p].hi - base[p].lo, abs=1e-6)
    assert (base[5].elo, base[5].lo, base[5].hi) == (800.0, 800.0, 800.0)
    alone = fit([], anchors={"random": 0.0})["random"]
    assert (alone.elo, alone.lo, alone.hi, alone.games) == (0.0, 0.0, 0.0, 0)


def test_round_robin_recovers_the_true_ratings():
    games = _round_robin(200, np.random.default_rng(0))  # 3,000 games
    ratings = fit(games, anchors={0: 0.0})
    z = [(ratings[p].elo - TRUE_ELO[p]) / _sd(ratings[p]) for p in range(1, 6)]
    assert all(abs(x) < 3 for x in z), z
    assert sum(ratings[p].lo <= TRUE_ELO[p] <= ratings[p].hi for p in range(1, 6)) >= 4
    assert all(r.games == 1000 for r in ratings.values())


def test_intervals_halve_when_games_quadruple():
    rng = np.random.default_rng(0)
    few = fit(_round_robin(200, rng), anchors={0: 0.0})
    many = fit(_round_robin(800, rng), anchors={0: 0.0})
    for p in range(1, 6):
        assert _sd(many[p]) / _sd(few[p]) == pytest.approx(0.5, abs=0.05)
    # The same results counted four times: exactly half as wide, at the same ratings.
    games = _round_robin(50, rng)
    once = fit(games, anchors={0: 0.0}, prior_games=0)
    four = fit([(a, b, 4 * won, 4 * lost) for a, b, won, lost in games], anchors={0: 0.0}, prior_games=0)
    for p in range(1, 6):
        assert four[p].elo == pytest.approx(once[p].elo, abs=1e-6)
        assert _sd(four[p]) == pytest.approx(_sd(once[p]) / 2, rel=1e-6)


def test_intervals_cover_the_truth_at_their_confidence():
    """Over many simulated round robins, the 90% intervals hold the true rating ~90% of the time."""
    rng = np.random.default_rng(5)
    hits = []
    for _ in range(200):
        ratings = fit(_round_robin(100, rng), anchors={0: 0.0}, confidence=0.9)
        hits += [ratings[p].lo <= TRUE_ELO[p] <= ratings[p].hi for p in range(1, 6)]
    assert np.mean(hits) == pytest.approx(0.9, abs=0.035)


@pytest.mark.parametrize(
    "games, kwargs",
    [
        ([("a", "a", 1)], {}),
        ([("a", "b", 1.5)], {}),
        ([("a", "b", -1, 2)], {}),
        ([("a", "b")], {}),
        ([("a", "b", 1)], {"prior_games": -1}),
        ([("a", "b", 1)], {"confidence": 1.0}),
        ([("a", "b", 1)], {"anchors": {"a": math.inf}}),
    ],
)
def test_bad_input_is_refused(games, kwargs):
    with pytest.raises(ValueError):
        fit(games, **kwargs)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _paired(d: float, pairs: int, edge: float, decided: float, rng) -> tuple[int, int, tuple]:
    """Pairs of a (d nats above b) against b, colours swapped, as Hex plays them: in a share
    `decided` of the openings the first player's edge is `edge` nats, so such pairs mostly
    split 1-1 whoever is stronger. (wins of a, wins of b, pairs with 0, 1, 2 wins of a)."""
    e = np.where(rng.random(pairs) < decided, edge, 0.0)
    s = (rng.random(pairs) < _sigmoid(d + e)).astype(int) + (rng.random(pairs) < _sigmoid(d - e))
    return int(s.sum()), 2 * pairs - int(s.sum()), tuple(int((s == k).sum()) for k in range(3))


def _pseudo_true(d: float, edge: float, decided: float) -> float:
    """The colour-blind model's rating difference (Elo) that matches the pairs' expected score."""
    score = decided * (_sigmoid(d + edge) + _sigmoid(d - edge)) / 2 + (1 - decided) * _sigmoid(d)
    return ELO_PER_NAT * math.log(score / (1 - score))


@pytest.mark.parametrize("edge, decided, ratio", [(4.0, 0.7, (0.5, 0.75)), (0.0, 0.0, (0.95, 1.05))])
def test_paired_intervals_count_pairs_as_the_trials(edge, decided, ratio):
    """Simulated paired games with a first-move edge (a chain: a against the anchor, b
    against a): the intervals from pairs cover the colour-blind truth about 95% of the
    time, where counting games as independent trials covers it nearly always; and they
    are narrower by as much as the pairs' splits say. Without an edge they are the same."""
    rng = np.random.default_rng(11)
    truth = {"a": _pseudo_true(0.4, edge, decided)}
    truth["b"] = truth["a"] + _pseudo_true(0.5, edge, decided)
    hits, game_hits, widths, game_widths = [], [], [], []
    for _ in range(300):
        (wa, la, pa), (wb, lb, pb) = _paired(0.4, 40, edge, decided, rng), _paired(0.5, 40, edge, decided, rng)
        by_pair = fit([("a", "r", wa, la, pa), ("b", "a", wb, lb, pb)], {"r": 0.0})
        by_game = fit([("a", "r", wa, la), ("b", "a", wb, lb)], {"r": 0.0})
        for p in "ab":
            hits.append(by_pair[p].lo <= truth[p] <= by_pair[p].hi)
            game_hits.append(by_game[p].lo <= truth[p] <= by_game[p].hi)
            widths.append(by_pair[p].hi - by_pair[p].lo)
            game_widths.append(by_game[p].hi - by_game[p].lo)
    assert 0.93 <= np.mean(hits) <= 0.99
    assert ratio[0] <= np.mean(widths) / np.mean(game_widths) <= ratio[1]
    if edge:
        assert np.mean(game_hits) > 0.99  # games counted as trials: far wider than 95% needs


def test_pairs_must_fit_within_the_games():
    with pytest.raises(ValueError, match="pairs"):
        fit([("a", "b", 1, 3, (0, 2, 0))])  # two split pairs need two wins of a
    with pytest.raises(ValueError, match="pairs"):
        fit([("a", "b", 3, 1, (1, 0, 0))])  # a pair lost twice needs two losses
    assert fit([("a", "b", 3, 1, (0, 1, 1))], {"b": 0.0})["a"].games == 4
