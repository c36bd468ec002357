"""The pair GSPRT: its LLR against a brute-force maximisation, and its error rates in simulation."""

import math

import numpy as np
import pytest

from hexzd.evaluation.sprt import ZERO_COUNT, Sprt
from hexzd.evaluation.stats import elo_to_score, score_to_elo


def _restricted_mle(counts: list[float], s: float) -> tuple[float, float, float]:
    """argmax of sum_i n_i log p_i over pair distributions p with mean per-game score s.

    Written independently of hexzd.evaluation.sprt: the constraint leaves one free
    parameter, t = p2 (then p1 = 2 (s - t), p0 = 1 - 2 s + t), and the log-
    likelihood is concave in t, so bisecting on the sign of its derivative
    finds the maximum to the last bit.
    """

    def p(t: float) -> tuple[float, float, float]:
        return 1 - 2 * s + t, 2 * (s - t), t

    def slope(t: float) -> float:  # d/dt sum n log p, with dp/dt = (1, -2, 1)
        return sum(n * dp / pi for n, dp, pi in zip(counts, (1, -2, 1), p(t)))

    lo, hi = max(0.0, 2 * s - 1), s
    for _ in range(2000):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return p((lo + hi) / 2)


def _brute_llr(counts: list[int], elo0: float, elo1: float) -> float:
    """sum_i n_i log(p1_i / p0_i), the p_j fitted to counts with empty cells set to ZERO_COUNT.

    With every cell seen this is the plain GLR, max L(H1) - max L(H0).
    """
    regular = [n if n > 0 else ZERO_COUNT for n in counts]
    p0 = _restricted_mle(regular, elo_to_score(elo0))
    p1 = _restricted_mle(regular, elo_to_score(elo1))
    return sum(n * math.log(b / a) for n, a, b in zip(counts, p0, p1) if n > 0)


def test_bounds_are_walds():
    lower, upper = Sprt(0, 50).bounds()
    assert lower == pytest.approx(-2.944439, abs=1e-6)
    assert upper == pytest.approx(2.944439, abs=1e-6)
    assert Sprt(0, 50, alpha=0.01, beta=0.1).bounds() == pytest.approx((math.log(0.1 / 0.99), math.log(90.0)))


@pytest.mark.parametrize(
    "elo0, elo1, counts",
    [
        (0, 50, [12, 30, 9]),
        (0, 50, [5, 20, 15]),
        (-10, 30, [40, 100, 60]),
        (0, 5, [3, 1, 7]),
        (100, 200, [2, 9, 30]),
        (-300, -200, [50, 8, 1]),
    ],
)
def test_llr_is_the_generalised_likelihood_ratio(elo0, elo1, counts):
    assert Sprt(elo0, elo1).llr(counts) == pytest.approx(_brute_llr(counts, elo0, elo1), abs=1e-6)


@pytest.mark.parametrize("counts", [[0, 7, 2], [0, 0, 4], [3, 0, 0], [0, 6, 0], [1, 0, 40]])
def test_unseen_outcomes_are_regularised_like_fishtest(counts):
    llr = Sprt(0, 50).llr(counts)
    assert llr == pytest.approx(_brute_llr(counts, 0, 50), abs=1e-6)
    mean = sum(n * a for n, a in zip(counts, (0, 0.5, 1))) / sum(counts)
    assert (llr > 0) == (mean > (elo_to_score(0) + elo_to_score(50)) / 2)


def test_llr_is_extensive_and_signed():
    test = Sprt(0, 50)
    counts = np.array([12, 30, 9])
    assert test.llr(3 * counts) == pytest.approx(3 * test.llr(counts), rel=1e-12)
    assert test.llr([0, 0, 0]) == 0.0
    assert test.llr([1, 10, 30]) > 0 > test.llr([30, 10, 1])
    batch = test.llr_batch(np.array([[[12, 30, 9], [1, 10, 30]]]))
    assert batch.shape == (1, 2)
    assert batch[0, 1] == pytest.approx(test.llr([1, 10, 30]), rel=1e-12)


def test_llr_matches_the_normal_approximation_for_close_hypotheses():
    """For s1 - s0 small, LLR ~ N (s1 - s0)(2 mean - s0 - s1) / (2 var)."""
    counts = np.array([300.0, 1000.0, 460.0])
    q = counts / counts.sum()
    scores = np.array([0, 0.5, 1])
    mean = q @ scores
    var = q @ (scores - mean) ** 2
    s0, s1 = elo_to_score(0), elo_to_score(5)
    normal = counts.sum() * (s1 - s0) * (2 * mean - s0 - s1) / (2 * var)
    assert Sprt(0, 5).llr(counts) == pytest.approx(normal, rel=0.02)


def test_decide():
    test = Sprt(0, 50)
    assert test.decide([0, 0, 0]) is None
    assert test.decide([10, 20, 10]) is None
    assert test.decide([0, 10, 30]) == "accept"
    assert test.decide([30, 10, 0]) == "reject"


def test_elo_scores():
    assert elo_to_score(0) == 0.5
    assert elo_to_score(400) == pytest.approx(10 / 11)
    assert score_to_elo(0.75) == pytest.approx(400 * math.log10(3))
    assert score_to_elo(elo_to_score(-123.4)) == pytest.approx(-123.4)
    with pytest.raises(ValueError):
        score_to_elo(1.0)


@pytest.mark.parametrize(
    "args, counts",
    [
        ((50, 0), [1, 1, 1]),
        ((0, 50, 0.6, 0.5), [1, 1, 1]),
        ((0, 50), [1, 1]),
        ((0, 50), [1, -1, 1]),
        ((0, 50), [[1, 1, 1]]),
    ],
)
def test_bad_input_is_refused(args, counts):
    with pytest.raises(ValueError):
        Sprt(*args).llr(counts)


# -- error rates in simulation -------------------------------------------------

FIRST_MOVE_EDGE = 0.2  # at equal strength the first mover wins 70% of games
TRIALS = 4000
MAX_PAIRS = 3000


def _simulate(test: Sprt, true_elo: float, rng: np.random.Generator, sign: float = 1.0) -> dict[str, float]:
    """Run TRIALS duels in lockstep, one pair per step for every undecided duel.

    The candidate's mean per-game score is exactly score(true_elo), so the
    hypotheses' Elo is the true Elo; moving first adds FIRST_MOVE_EDGE to the
    winning chance and moving second takes it away. `sign = -1` runs the test
    on a negated LLR, to show the checks below would catch that.
    """
    s = elo_to_score(true_elo)
    counts = np.zeros((TRIALS, 3))
    verdict = np.zeros(TRIALS)
    active = np.arange(TRIALS)
    lower, upper = test.bounds()
    for _ in range(MAX_PAIRS):
        wins = (rng.random(len(active)) < s + FIRST_MOVE_EDGE).astype(int)
        wins += rng.random(len(active)) < s - FIRST_MOVE_EDGE
        counts[active, wins] += 1
        llr = sign * test.llr_batch(counts[active])
        verdict[active[llr >= upper]] = 1
        verdict[active[llr <= lower]] = -1
        active = active[(llr < upper) & (llr > lower)]
        if not len(active):
            break
    return {"accept": np.mean(verdict == 1), "reject": np.mean(verdict == -1), "open": np.mean(verdict == 0)}


def _tolerance(rate: float) -> float:
    """Three binomial standard errors over TRIALS trials."""
    return 3 * math.sqrt(rate * (1 - rate) / TRIALS)


@pytest.mark.parametrize("elo0, elo1", [(0, 50), (-20, 40)])
def test_false_promotions_are_rare_at_elo0(elo0, elo1):
    test = Sprt(elo0, elo1)
    rates = _simulate(test, elo0, np.random.default_rng(1))
    assert rates["open"] == 0
    assert rates["accept"] <= test.alpha + _tolerance(test.alpha)


@pytest.mark.parametrize("elo0, elo1", [(0, 50), (-20, 40)])
def test_missed_promotions_are_rare_at_elo1(elo0, elo1):
    test = Sprt(elo0, elo1, alpha=0.05, beta=0.1)
    rates = _simulate(test, elo1, np.random.default_rng(2))
    assert rates["open"] == 0
    assert rates["reject"] <= test.beta + _tolerance(test.beta)


def test_the_simulation_catches_a_flipped_llr():
    test = Sprt(0, 50)
    rates = _simulate(test, 0, np.random.default_rng(1), sign=-1.0)
    assert rates["accept"] > test.alpha + _tolerance(test.alpha)
