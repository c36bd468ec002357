"""Matchmaking by information, checked against refits of the rating model itself
(hexzd.evaluation.ratings, which tests/evaluation/test_ratings.py checks against closed forms)
and against fixed schedules on simulated players of known strength."""

import numpy as np
import pytest

from hexzd.evaluation import scale
from hexzd.evaluation.matchmaking import Candidate, variance_drops
from hexzd.evaluation.ratings import estimate
from hexzd.evaluation.stats import elo_to_score


def test_predicted_drops_match_a_refit_with_the_expected_results():
    """Sherman-Morrison's prediction against the covariance that a refit with the match
    actually gives, for the two players and for a third rated through one of them."""
    games = [("r0", "r1", 12, 8), ("r1", "m", 5, 15), ("m", "n", 9, 11)]
    before = estimate(games, {"r0": 0.0})
    a, b, m = "r1", "m", 40
    [drop] = variance_drops(before, [Candidate(a, b, m, 1.0)])
    i, j = before.players.index(a), before.players.index(b)
    p = float(elo_to_score(before.elo[i] - before.elo[j]))
    after = estimate([*games, (a, b, m * p, m * (1 - p))], {"r0": 0.0})
    predicted = np.diag(before.covariance) - drop
    np.testing.assert_allclose(np.diag(after.covariance), predicted, rtol=0.03, atol=1.0)
    assert drop[before.players.index("n")] > 0  # n never plays, yet its interval narrows


def test_a_pairing_whose_pairs_split_is_worth_more_per_game():
    """Two snapshots that split every pair (each wins with the first move) say more per
    game than the model's independent games would: matchmaking reads the pairing's
    efficiency from the fit and counts a game of it as that many."""
    games = [("r0", "m", 10, 30), ("m", "n", 20, 20, (0, 20, 0)), ("n", "r0", 28, 12)]
    fit = estimate(games, {"r0": 0.0})
    i, j = fit.players.index("m"), fit.players.index("n")
    assert fit.efficiency[i, j] > 3 and np.isnan(fit.efficiency[0, i])  # r0 against m: no pairs given
    efficient = scale._efficiencies(fit, lambda a, b: frozenset((a[0], b[0])))
    assert efficient("m", "n") == pytest.approx(fit.efficiency[i, j]) and efficient("m", "r0") == 1.0
    [plain, paired] = variance_drops(fit, [Candidate("m", "n", 8, 1.0), Candidate("m", "n", 8, 1.0, 3.0)])
    [triple] = variance_drops(fit, [Candidate("m", "n", 24, 1.0)])
    np.testing.assert_allclose(paired, triple)
    assert paired[i] > plain[i] > 0


def test_an_even_opponent_is_worth_more_than_a_lopsided_one():
    # The snapshot is about +400 against r0 and even with r400.
    games = [("r0", "r400", 20, 180), ("m", "r0", 45, 5), ("m", "r400", 25, 25)]
    fit = estimate(games, {"r0": 0.0, "r400": 400.0})
    drops = variance_drops(fit, [Candidate("m", "r0", 8, 1.0), Candidate("m", "r400", 8, 1.0)])
    k = fit.players.index("m")
    assert drops[1, k] > 2.5 * drops[0, k]


def _simulate(choose, true: dict, rng, games: int, pairs_per_match: int = 4):
    """Plays `games` games of matches chosen by choose(scale) between players of known
    Elo (rollouts @s and model m @64), returning the final scale."""
    results: dict[tuple, list[int]] = {}
    refs = sorted(s for (m, s) in true if m is None)
    promoted = sorted(m for (m, _) in true if m is not None)
    # Each snapshot's promotion duel against the previous one, as the daemon plays it.
    for old, new in zip(promoted, promoted[1:]):
        p = elo_to_score(true[(new, 64)] - true[(old, 64)])
        wins = rng.binomial(40, p)
        results[(new, 64, old, 64)] = [wins, 40]
    played = 0
    while played < games:
        rows = [(*k, w, n) for k, (w, n) in results.items()]
        s = scale.scale(rows, refs, [(m, 64) for m in promoted])
        pairing = choose(s, refs, promoted, results)
        key = (pairing.candidate_id, pairing.sims, pairing.opponent_id, pairing.opponent_sims)
        p = elo_to_score(true[key[:2]] - true[key[2:]])
        n = 2 * pairs_per_match
        total = results.setdefault(key, [0, 0])
        total[0] += rng.binomial(n, p)
        total[1] += n
        played += n
    rows = [(*k, w, n) for k, (w, n) in results.items()]
    return scale.scale(rows, refs, [(m, 64) for m in promoted])


def _half_widths(s: scale.Scale, promoted) -> np.ndarray:
    ratings = s.players.ratings()
    return np.array([(ratings[scale.player(m, 64)].hi - ratings[scale.player(m, 64)].lo) / 2 for m in promoted])


TRUE = {
    **{(None, s): 180 * np.log2(s / 100) for s in (100, 200, 400, 800, 1600, 3200, 6400)},
    (1, 64): 250.0,
    (2, 64): 600.0,
    (3, 64): 900.0,
    (4, 64): 1150.0,
}


@pytest.mark.parametrize("seed", [0, 1])
def test_matchmaking_narrows_the_snapshots_intervals_more_than_a_fixed_schedule(seed):
    """Same number of games: matchmaking by information against the old schedule (a
    16-pair ladder, then each snapshot in turn against the reference nearest its rating).
    Measured over seeds 0-3: the widest of the four +-70 to 79 against +-170 to 187."""
    promoted = [1, 2, 3, 4]

    def informed(s, refs, promoted, results):
        return scale.ladder_match(refs, _ladder_played(results), 2) or scale.next_match(
            s, refs, promoted, 64, 8, {}, 50.0
        )

    turn = iter(range(10**6))

    def fixed(s, refs, promoted, results):
        match = scale.ladder_match(refs, _ladder_played(results), 16)
        if match:
            return match
        m = promoted[next(turn) % len(promoted)]
        rating = s.players.ratings()[scale.player(m, 64)].elo
        ladder = s.ladder.ratings()
        nearest = min(refs, key=lambda r: abs(ladder[scale.player(None, r)].elo - rating))
        return scale.Pairing(m, 64, None, nearest)

    smart = _simulate(informed, TRUE, np.random.default_rng(seed), 1200)
    plain = _simulate(fixed, TRUE, np.random.default_rng(seed), 1200)
    assert _half_widths(smart, promoted).max() < 0.6 * _half_widths(plain, promoted).max()
    # And the newest snapshot, which matters most, is at least as precise.
    assert _half_widths(smart, promoted)[-1] <= 1.05 * _half_widths(plain, promoted)[-1]


def _ladder_played(results: dict) -> dict:
    """Games between references so far, by (sims, opponent sims), as the store counts them."""
    return {(k[1], k[3]): n for k, (_, n) in results.items() if k[0] is None and k[2] is None}


def test_an_unfixed_reference_near_the_newest_snapshot_counts_as_much_as_a_snapshot():
    """Until its ladder interval is within FIXED_ELO, a reference near the newest snapshot
    is not yet an anchor for it: fixing it is worth as much as a snapshot's interval.
    Far ones, and fixed ones, keep LADDER_WEIGHT."""
    refs = [100, 200, 400, 800]
    rows = [
        (None, 200, None, 100, 500, 800),  # fixed: 800 games
        (None, 400, None, 200, 3, 4),  # 4 games: not fixed
        (None, 800, None, 400, 3, 4),
        (1, 64, None, 400, 6, 10),
    ]
    s = scale.scale(rows, refs, [(1, 64)])
    assert s.ladder.ratings()["rollouts @200"].hi - s.ladder.ratings()["rollouts @200"].elo < scale.FIXED_ELO
    weights = scale._ladder_weights(s, [scale.player(None, r) for r in refs], ["model 1 @64"])
    assert weights == {
        "rollouts @100": scale.LADDER_WEIGHT,
        "rollouts @200": scale.LADDER_WEIGHT,
        "rollouts @400": 1.0,
        "rollouts @800": 1.0,
    }
    assert set(scale._ladder_weights(s, [scale.player(None, r) for r in refs], []).values()) == {scale.LADDER_WEIGHT}


# Seconds per game measured in a 30-minute 7x7 run (2026-12-03, this 2-core VM) with
# rollouts up to @102400 on the ladder, before its first match of a snapshot against them.
TIMED_7X7 = {
    frozenset((scale.Kind("model", 64),)): 0.22,
    frozenset((scale.Kind("model", 64), scale.Kind("rollouts", 400))): 0.08,
    frozenset((scale.Kind("model", 64), scale.Kind("rollouts", 1600))): 0.098,
    frozenset((scale.Kind("rollouts", 200), scale.Kind("rollouts", 100))): 0.007,
    frozenset((scale.Kind("rollouts", 3200), scale.Kind("rollouts", 1600))): 0.088,
    frozenset((scale.Kind("rollouts", 6400), scale.Kind("rollouts", 3200))): 0.171,
    frozenset((scale.Kind("rollouts", 51200), scale.Kind("rollouts", 200))): 1.164,
    frozenset((scale.Kind("rollouts", 102400), scale.Kind("rollouts", 6400))): 2.906,
}


def test_an_untimed_pairing_is_priced_from_what_its_sides_cost():
    """The run then played model 16 @64 against rollouts @102400: 3.42 s a game. Priced at the
    median of the timed pairings, it looked 30 times cheaper, and matchmaking chose it."""
    price = scale.game_seconds(TIMED_7X7)
    assert price((16, 64), (None, 102400)) == pytest.approx(3.42, rel=0.25)
    assert price((None, 6400), (None, 3200)) == 0.171  # timed: as measured, whoever plays it
    # Rollouts in proportion to their simulations, at the nearest timed rollouts-only pairing's rate.
    assert price((None, 12800), (None, 6400)) == pytest.approx(0.171 / 9600 * 19200)
    assert price((None, 12800), (None, 6400)) == pytest.approx(0.246, rel=0.5)  # the run timed 0.246
    assert price((None, 800), (None, 400)) == pytest.approx(0.021, rel=0.5)  # and 0.021 (0.017, 0.025)
    # An engine never timed: nothing to go on but the median.
    assert price((16, 64), (None, 0, "mohex")) == pytest.approx(np.median(list(TIMED_7X7.values())))
    assert scale.game_seconds({})((1, 64), (None, 100)) == scale.DEFAULT_SECONDS
