"""Matchmaking by information: the next rating match is the one that narrows
the intervals that matter most, per second it costs.

A match of m games between players a and b, whose expected score is p, adds
h = m p (1 - p) x to the information along u = e_a - e_b, where x, the
pairing's efficiency (hexzd.evaluation.ratings, "Intervals"), says how many
independent games a paired game is worth: more than one where the first
move's edge splits pairs 1-1 (their score varies less than two independent
games'), about one for players whose games are independent. Taking the
covariance as the inverse of that information, Sherman-Morrison makes the
covariance C of the ratings

    C' = C - h (C u)(C u)^T / (1 + h u^T C u),

so every player k's variance falls by h (C u)_k^2 / (1 + h u^T C u): not only
a's and b's, but also that of every player rated through them. A match between
even players (p near 1/2) is worth the most; a lopsided one (a 600 Elo gap
gives p(1-p) = 0.03 against 0.25) almost nothing.

A candidate match scores sum_k w_k drop_k / seconds, with weights w_k saying
which intervals matter (the newest promoted snapshots, the reference ladder,
and, far less, intervals already within the target) and seconds the match's
expected cost. The best score plays next (hexzd.evaluation.scale).
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from hexzd.evaluation.ratings import ELO_PER_NAT, Fit
from hexzd.evaluation.stats import Z95, elo_to_score

DONE_WEIGHT = 0.05  # what an interval already within the target still weighs: a little, so that none is ever idle


@dataclass(frozen=True)
class Candidate:
    """A possible match: two players of a fit, its games and their cost in seconds each, and
    how many independent games each is worth (the pairing's efficiency)."""

    a: Hashable
    b: Hashable
    games: int
    seconds_per_game: float
    efficiency: float = 1.0


def variance_drops(fit: Fit, candidates: Sequence[Candidate]) -> np.ndarray:
    """float[K, N]: how much each candidate match would lower each player's variance (Elo squared)."""
    index = {p: i for i, p in enumerate(fit.players)}
    a = np.array([index[c.a] for c in candidates], np.int64)
    b = np.array([index[c.b] for c in candidates], np.int64)
    games = np.array([c.games * c.efficiency for c in candidates], float)
    p = elo_to_score(fit.elo[a] - fit.elo[b])
    h = games * p * (1 - p) / ELO_PER_NAT**2  # information in 1 / Elo squared
    cu = fit.covariance[:, a] - fit.covariance[:, b]  # [N, K]
    spread = cu[a, np.arange(len(a))] - cu[b, np.arange(len(b))]  # u^T C u
    return (h / (1.0 + h * spread))[:, None] * (cu**2).T


def weights(fit: Fit, important: dict[Hashable, float], target_elo: float) -> np.ndarray:
    """float[N]: each player's weight in `important` (0 for the rest), cut to DONE_WEIGHT
    of it once the player's 95% interval is within +-target_elo."""
    half = Z95 * np.sqrt(np.maximum(np.diag(fit.covariance), 0.0))
    w = np.array([important.get(p, 0.0) for p in fit.players])
    return np.where(half > target_elo, w, DONE_WEIGHT * w)


def scores(fit: Fit, candidates: Sequence[Candidate], important: dict[Hashable, float], target_elo: float):
    """float[K]: the weighted drop in variance that each candidate buys per second."""
    if not candidates:
        return np.zeros(0)
    gain = variance_drops(fit, candidates) @ weights(fit, important, target_elo)
    seconds = np.array([c.games * c.seconds_per_game for c in candidates])
    return gain / np.maximum(seconds, 1e-9)
