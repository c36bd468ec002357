"""The one statistics helper: Elo and score, and the Wilson interval of a rate.

Every interval hexzd prints is a 95% interval (Z95), and says so.
"""

import math

import numpy as np

__all__ = ["Z95", "elo_or_none", "elo_to_score", "score_to_elo", "wilson"]

Z95 = 1.959964  # the standard normal's 97.5% quantile: two-sided 95% intervals


def elo_to_score(elo: float | np.ndarray) -> float | np.ndarray:
    """Expected per-game score of a player `elo` points stronger (logistic model)."""
    return 1.0 / (1.0 + 10.0 ** (-np.asarray(elo, dtype=float) / 400.0))


def score_to_elo(score: float | np.ndarray) -> float | np.ndarray:
    """The inverse of `elo_to_score`; score must lie strictly between 0 and 1."""
    score = np.asarray(score, dtype=float)
    if np.any((score <= 0) | (score >= 1)):
        raise ValueError("a score of 0 or 1 has no finite Elo")
    return -400.0 * np.log10(1.0 / score - 1.0)


def elo_or_none(score: float) -> float | None:
    """Elo of a score; None (unbounded) at 0 or 1 or when unknown."""
    if not 0 < score < 1:
        return None
    return float(score_to_elo(score))


def wilson(wins: int, games: int) -> tuple[float, float]:
    """The 95% Wilson interval of a win rate: sound at 0 and 1 wins and with few games.

    The games must be independent trials: a game repeated move for move is
    one trial, however often it is counted.
    """
    if games == 0:
        return 0.0, 1.0
    p, z2 = wins / games, Z95 * Z95
    centre = (p + z2 / (2 * games)) / (1 + z2 / games)
    half = Z95 * math.sqrt(p * (1 - p) / games + z2 / (4 * games * games)) / (1 + z2 / games)
    return max(0.0, centre - half), min(1.0, centre + half)
