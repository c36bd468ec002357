"""Sequential probability ratio test for promotion duels, on game pairs.

A duel plays each opening twice with colours swapped, because Hex's first
player wins far more often than not. Hex has no draws, so a pair ends with 0, 1
or 2 wins for the candidate, a per-game score a in {0, 1/2, 1}; the data after
N pairs are the counts n = [n0, n1, n2]. Pairing removes the colour from the
comparison and, since the two games of a pair tend to split, makes the pair
score less noisy than two independent games.

Hypotheses are about the candidate's mean per-game score s, tied to an Elo
difference by the logistic model s = 1 / (1 + 10**(-elo/400)):

    H0: s = s0 = score(elo0)    (not stronger: reject, keep the best)
    H1: s = s1 = score(elo1)    (stronger: accept, promote)

The pair-outcome distribution p = (p0, p1, p2) is otherwise unknown, so this is
the generalized SPRT (GSPRT) of Fishtest, after Michel Van den Bergh's notes
("Maximum likelihood estimation for multinomial distributions with a fixed
expectation value"). Under each hypothesis p is replaced by its maximum
likelihood estimate restricted to mean s_j:

    maximise sum_i q_i log p_i  subject to  sum_i p_i = 1,  sum_i p_i a_i = s_j

where q = n / N are the observed frequencies. The Lagrange conditions give

    p_i = q_i / (1 + lam * (a_i - s_j)),   sum_i q_i (a_i - s_j) / (1 + lam (a_i - s_j)) = 0,

a one-dimensional "secular equation" in lam whose left side decreases
strictly between its poles -1/max(a - s) and -1/min(a - s), so it has exactly
one root there. Then

    LLR = sum_i n_i log(p1_i / p0_i) = sum_i n_i [log(1 + lam0 x0_i) - log(1 + lam1 x1_i)]

with x_j = a - s_j. We use this exact form rather than the normal
approximation LLR ~ N (s1 - s0)(2 mean - s0 - s1) / (2 var): with three
outcomes the secular equation is a quadratic, so it costs next to nothing; it
has no trouble when the sample variance is zero (the first pairs of a duel are
often all split); and it stays right when the hypotheses are far apart, as
they are for small, cheap duels, where the approximation drifts.

Observed frequencies of zero are raised to 1e-3 pairs before the fit, as
Fishtest does, so that s_j always lies strictly inside the support; the LLR
is still weighted by the real counts, so an empty test has LLR 0.

Wald's bounds: accept H1 once LLR >= log((1 - beta) / alpha), accept H0 once
LLR <= log(beta / (1 - alpha)). The real error rates are usually a little
below alpha and beta because the LLR overshoots the bound when it crosses.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hexzd.evaluation.stats import elo_to_score

PAIR_SCORES = np.array([0.0, 0.5, 1.0])  # per-game score of 0, 1, 2 wins out of a pair
ZERO_COUNT = 1e-3  # Fishtest's regularisation of empty outcome cells


def _secular_root(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The root lam of f(lam) = sum_i q_i x_i / (1 + lam x_i) = 0 for each row of q.

    q: float[B, 3] positive frequencies; x: float[3] with min < 0 < max. f
    falls from +inf to -inf between its poles lo = -1/max(x), hi = -1/min(x),
    where every 1 + lam x_i > 0. With three outcomes, multiplying f by
    prod_i (1 + lam x_i) > 0 leaves a quadratic with the same sign there,

        g(lam) = sum_i q_i x_i prod_{j != i} (1 + lam x_j) = A + B lam + C lam^2,

    so the root is exact, no iteration. Iterating on f itself is slow: when an
    outcome has not been seen, the root sits within ~1e-6 of a pole.
    """
    a = q @ x  # g(0) = mean - s
    b = q @ (x * (x.sum() - x))
    c = np.prod(x)  # times sum(q) = 1
    lo, hi = -1.0 / x.max(), -1.0 / x.min()
    if c == 0.0:  # s is the middle score 1/2, g is linear and b = -sum q x^2 < 0
        return -a / b
    # Stable quadratic formula: t has no cancellation, the roots are t/c and a/t.
    t = -0.5 * (b + np.copysign(np.sqrt(np.maximum(b * b - 4.0 * a * c, 0.0)), b))
    with np.errstate(divide="ignore", invalid="ignore"):
        first, second = t / c, a / t
    return np.where((first > lo) & (first < hi), first, second)


def _log_denominators(q: np.ndarray, s: float) -> np.ndarray:
    """log(1 + lam (a_i - s)) = log(q_i / p_i) for the MLE p with mean s; [B, 3]."""
    x = PAIR_SCORES - s
    lam = _secular_root(q, x)
    return np.log1p(lam[:, None] * x)


@dataclass(frozen=True)
class Sprt:
    """GSPRT of H0: Elo = elo0 against H1: Elo = elo1 on pair counts [n0, n1, n2]."""

    elo0: float
    elo1: float
    alpha: float = 0.05
    beta: float = 0.05

    def __post_init__(self) -> None:
        if not self.elo0 < self.elo1:
            raise ValueError(f"need elo0 < elo1, got {self.elo0} and {self.elo1}")
        if not (0 < self.alpha < 1 and 0 < self.beta < 1 and self.alpha + self.beta < 1):
            raise ValueError(f"need 0 < alpha, beta and alpha + beta < 1, got {self.alpha}, {self.beta}")

    def bounds(self) -> tuple[float, float]:
        """Wald's (lower, upper) LLR thresholds."""
        return float(np.log(self.beta / (1 - self.alpha))), float(np.log((1 - self.beta) / self.alpha))

    def llr(self, pairs: Sequence[int] | np.ndarray) -> float:
        """Log-likelihood ratio of H1 over H0 for counts [n0, n1, n2]."""
        counts = _check_counts(pairs)
        if counts.shape != (3,):
            raise ValueError(f"llr takes one [n0, n1, n2], got shape {counts.shape}; see llr_batch")
        return float(self.llr_batch(counts[None])[0])

    def llr_batch(self, pairs: np.ndarray) -> np.ndarray:
        """`llr` for many tests at once: float[..., 3] counts -> float[...]."""
        counts = _check_counts(pairs)
        flat = counts.reshape(-1, 3)
        regular = np.where(flat > 0, flat, ZERO_COUNT)
        q = regular / regular.sum(axis=1, keepdims=True)
        s0, s1 = elo_to_score(self.elo0), elo_to_score(self.elo1)
        log_ratio = _log_denominators(q, s0) - _log_denominators(q, s1)  # log(p1 / p0)
        return (flat * log_ratio).sum(axis=1).reshape(counts.shape[:-1])

    def decide(self, pairs: Sequence[int] | np.ndarray) -> str | None:
        """ "accept" (promote the candidate), "reject", or None to play on."""
        lower, upper = self.bounds()
        llr = self.llr(pairs)
        if llr >= upper:
            return "accept"
        if llr <= lower:
            return "reject"
        return None


def _check_counts(pairs: np.ndarray) -> np.ndarray:
    counts = np.asarray(pairs, dtype=float)
    if counts.shape[-1:] != (3,):
        raise ValueError(f"pair counts need a last axis of 3 (0, 1, 2 wins), got shape {counts.shape}")
    if not np.all(np.isfinite(counts) & (counts >= 0)):
        raise ValueError("pair counts must be finite and non-negative")
    return counts
