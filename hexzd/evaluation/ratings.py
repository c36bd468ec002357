"""Elo ratings by maximum likelihood (Bradley-Terry), with a BayesElo-like prior.

Model. Player i has a strength r_i in natural units (nats); Elo = r * 400 / ln 10.
Player a beats player b with probability

    P(a beats b) = sigma(r_a - r_b) = 1 / (1 + 10**((Elo_b - Elo_a) / 400)),

and games are independent. For each pair of players we keep w_ab, the points a
scored against b, and n_ab, the games they played; the log-likelihood is

    L(r) = sum_pairs w log sigma(r_a - r_b) + (n - w) log sigma(r_b - r_a).

Prior. Each player also gets `prior_games` virtual games, half won and half
lost, against a virtual opponent at the pool's mean rating m = mean(r):

    L_prior(r) = sum_i (k / 2) [log sigma(r_i - m) + log sigma(m - r_i)],   k = prior_games.

It is the Bayes-like part of BayesElo: a player who won every game (whose
maximum likelihood rating is +inf) gets a finite rating, and so does a group
of players that never met, even indirectly, an anchored player: with nothing
tying it to the anchors, such a group sits around the pool's mean, its
intervals as wide as the prior alone makes them. Measuring the prior from the
pool's mean rather than from a fixed level keeps it translation invariant: it
pulls ratings towards each other, never towards 0, so moving every anchor by
+100 moves every rating by +100. It weighs as much as k games against an equal
opponent: nothing next to a few hundred real games, but games between
mismatched players say little (a 600 Elo gap is worth about a tenth of an even
game), so a few lopsided results leave extreme ratings visibly pulled in.

Anchors. Anchored players (reference players such as random-rollout MCTS at
0 Elo) keep their given rating; the others are fitted. With no anchors the
model only fixes differences, so the mean rating is set to 0.

Fit. L + L_prior is concave. Newton's method with a backtracking line search
maximises it: the gradient and the Fisher information F = -Hessian are sums
over pairs (dense F, fine for a few thousand players),

    dL/dr_a = w - n sigma(d),   F_aa += n sigma(d) sigma(-d),   F_ab -= n sigma(d) sigma(-d),

with d = r_a - r_b; the prior adds P diag(k sigma(u) sigma(-u)) P, where
u = r - m and P = I - 11^T / N centres a vector. Without anchors F is singular
along 1 (a common shift changes nothing), and the step solves
(F + 11^T) s = g instead, whose solution is the minimum-norm Newton step, with
sum(s) = 0 so the mean stays 0.

Intervals. Games come in pairs (one opening, colours swapped), and a pair
is the independent trial, not a game: in Hex the first player's edge splits
many pairs 1-1 whatever the players' strength, so the two games of a pair
are far from independent, and a pair's score varies less than two
independent games at the fitted odds would. The covariance is therefore the
sandwich (cluster-robust) estimate of an M-estimator whose units are pairs,

    C = F^-1 J F^-1,   J = sum over units of (score - expected) (score - expected)^T,

with F the Fisher information at the optimum and a unit's score the gradient
of its log-likelihood: for a pair of a against b, (s - 2 sigma(d)) along
e_a - e_b, s in {0, 1, 2} the pair's wins of a. A game outside a complete
pair, and every game given without its pairs, is its own unit at the model's
variance (J = F there), so results without pairs get the plain inverse
Fisher information. Each pairing's empirical pair variance is shrunk toward
the model's, 2 sigma(d) sigma(-d), by PRIOR_PAIRS pseudo-pairs: a short match
whose pairs all split says little about how often they would not (30 split
pairs, all alike, still allow one in ten to be 2-0 or 0-2 at 95%). The prior's
virtual games count at the model's variance. Restricted to the free players;
anchored players have zero width. Without anchors F^-1 is replaced by
(F + 11^T)^-1, which gives the covariance of ratings measured from the pool's
mean (with J = F, (F + 11^T)^-1 - 11^T / N^2). Interval = Elo +- z * sd,
with z the normal quantile for `confidence`. Matchmaking reads each
pairing's `efficiency`, the model's pair variance over the shrunk empirical
one: how many independent games' worth of information a game of that
pairing is. In simulated 40-pair matches where seven openings in ten give
the first player an edge of 4 nats, these 95% intervals held the colour-blind
truth 97% of the time and were 0.64 times as wide as intervals that count
games as trials (which held it 100% of the time); with independent games
the two agree (tests/evaluation/test_ratings.py).

Without a prior (prior_games = 0) the maximum exists only when no group of
free players won, or lost, every game it played against the rest, or played
none (anchors counting as one player): that is, when the graph "a beat b" is
strongly connected. Otherwise `fit` raises ValueError rather than return ratings that
run off to infinity.
"""

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

ELO_PER_NAT = 400.0 / math.log(10.0)
TOLERANCE_ELO = 1e-9  # Newton stops when no rating moves by more than this
STALL_ELO = 1e-6  # ...or when steps this small no longer raise the likelihood at all
MAX_ITERATIONS = 100
PRIOR_PAIRS = 4.0  # pseudo-pairs at the model's variance in each pairing's empirical pair variance


@dataclass
class Rating:
    """A fitted rating: Elo and its confidence interval [lo, hi]."""

    player: Hashable
    elo: float
    lo: float
    hi: float
    games: int  # real games played, the prior's virtual ones left out


@dataclass
class _Pairs:
    """Results aggregated per pair of player indices (a < b)."""

    a: np.ndarray  # int[P]
    b: np.ndarray  # int[P]
    points: np.ndarray  # float[P], what a scored against b
    games: np.ndarray  # float[P]
    pairs: np.ndarray  # float[P], complete pairs among the games
    pair_points: np.ndarray  # float[P], sum of the pairs' scores s of a (0, 1 or 2)
    pair_squares: np.ndarray  # float[P], sum of s squared


@dataclass
class Fit:
    """A fit's estimate: each player's Elo and the covariance of the estimates (Elo squared).

    Anchored players have zero rows and columns. Matchmaking reads the
    covariance to see how much a new game would narrow every interval.
    """

    players: list
    elo: np.ndarray  # float[N]
    covariance: np.ndarray  # float[N, N]
    games: np.ndarray  # float[N], real games played
    anchored: np.ndarray  # bool[N]
    # float[N, N]: a game of each pairing counts as this many independent games (the model's
    # pair variance over its shrunk empirical one); NaN where a pairing has no complete pair.
    efficiency: np.ndarray

    def ratings(self, confidence: float = 0.95) -> dict[Hashable, Rating]:
        if not 0 < confidence < 1:
            raise ValueError(f"need 0 < confidence < 1, got {confidence}")
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        half = z * np.sqrt(np.maximum(np.diag(self.covariance), 0.0))  # clip rounding below zero
        return {
            p: Rating(p, float(e), float(e - h), float(e + h), int(round(g)))
            for p, e, h, g in zip(self.players, self.elo, half, self.games)
        }


def fit(
    games: Iterable[tuple],
    anchors: dict[Hashable, float] | None = None,
    prior_games: float = 2.0,
    confidence: float = 0.95,
) -> dict[Hashable, Rating]:
    """Maximum-likelihood ratings of every player named in `games` or `anchors`.

    Each item of `games` is either one game (a, b, score), score = 1 if a won
    and 0 if b won (a fraction counts as a draw-like split), or aggregated
    results (a, b, wins_of_a, wins_of_b), or aggregated results with their
    complete pairs (a, b, wins_of_a, wins_of_b, (pairs a lost both games of,
    pairs split, pairs a won both)), the pairs' games among the wins. Ratings are keyed by player, in the
    order players first appear (anchors that never played come last).
    """
    return estimate(games, anchors, prior_games).ratings(confidence)


def estimate(games: Iterable[tuple], anchors: dict[Hashable, float] | None = None, prior_games: float = 2.0) -> Fit:
    """The fit behind `fit`, with the full covariance of the ratings."""
    anchors = dict(anchors or {})
    if prior_games < 0:
        raise ValueError(f"need prior_games >= 0, got {prior_games}")
    players, pairs = _aggregate(games, anchors)
    fixed = np.array([p in anchors for p in players], dtype=np.bool_)
    if not players:
        return Fit([], np.zeros(0), np.zeros((0, 0)), np.zeros(0), fixed, np.zeros((0, 0)))
    r = np.array([anchors.get(p, 0.0) / ELO_PER_NAT for p in players])
    if prior_games == 0 and not _mle_exists(len(players), pairs, fixed):
        raise ValueError(
            "no finite maximum-likelihood ratings: some players won (or lost) all their games against "
            "the rest, or never met them; use prior_games > 0 or add games"
        )
    r = _maximise(r, pairs, fixed, prior_games)
    covariance = _covariance(r, pairs, fixed, prior_games) * ELO_PER_NAT**2
    played = np.bincount(pairs.a, pairs.games, len(players)) + np.bincount(pairs.b, pairs.games, len(players))
    elo = r * ELO_PER_NAT
    elo[fixed] = [anchors[p] for p in players if p in anchors]  # exactly, not via nats
    return Fit(players, elo, covariance, played, fixed, _efficiency(r, pairs))


def _aggregate(games: Iterable[tuple], anchors: dict[Hashable, float]) -> tuple[list, _Pairs]:
    """Index the players and sum each pair's points and games."""
    index: dict[Hashable, int] = {}
    totals: dict[tuple[int, int], list[float]] = {}
    for game in games:
        a, b, points, lost, (none, split, both) = _parse(game)
        i, j = index.setdefault(a, len(index)), index.setdefault(b, len(index))
        if i > j:  # store each pair once, from its lower index's side
            i, j, points, lost, none, both = j, i, lost, points, both, none
        total = totals.setdefault((i, j), [0.0] * 5)
        total[0] += points
        total[1] += points + lost
        total[2] += none + split + both
        total[3] += split + 2 * both
        total[4] += split + 4 * both
    for p, elo in anchors.items():
        if not math.isfinite(elo):
            raise ValueError(f"anchor {p!r} has a rating of {elo}")
        index.setdefault(p, len(index))
    keys = np.array(list(totals), dtype=np.int64).reshape(-1, 2)
    values = np.array(list(totals.values()), dtype=float).reshape(-1, 5)
    return list(index), _Pairs(keys[:, 0], keys[:, 1], *values.T)


def _parse(game: tuple) -> tuple[Hashable, Hashable, float, float, tuple[float, float, float]]:
    """(a, b, score), (a, b, wins_a, wins_b) or (a, b, wins_a, wins_b, (pairs with 0, 1, 2
    wins of a)) -> (a, b, points of a, points of b, those pairs)."""
    none = split = both = 0.0
    if len(game) == 3:
        a, b, score = game
        won, lost = float(score), 1.0 - float(score)
    elif len(game) in (4, 5):
        a, b, won, lost = game[0], game[1], float(game[2]), float(game[3])
        if len(game) == 5:
            if len(game[4]) != 3:
                raise ValueError(f"pairs are (pairs with 0, 1, 2 wins of a), got {game!r}")
            none, split, both = (float(k) for k in game[4])
    else:
        raise ValueError(f"a game is (a, b, score) or (a, b, wins_a, wins_b[, pairs]), got {game!r}")
    if a == b:
        raise ValueError(f"player {a!r} cannot play itself")
    if not (won >= 0 and lost >= 0 and math.isfinite(won + lost)):
        raise ValueError(f"scores must be finite, with 0 <= score <= 1, got {game!r}")
    if min(none, split, both) < 0 or split + 2 * both > won or split + 2 * none > lost:
        raise ValueError(f"pairs (0, 1, 2 wins of a) must be counts within the games, got {game!r}")
    return a, b, won, lost, (none, split, both)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(x))


def _log_likelihood(r: np.ndarray, pairs: _Pairs, prior_games: float) -> float:
    d = r[pairs.a] - r[pairs.b]
    games = pairs.points @ _log_sigmoid(d) + (pairs.games - pairs.points) @ _log_sigmoid(-d)
    u = r - r.mean()
    return float(games + prior_games / 2 * np.sum(_log_sigmoid(u) + _log_sigmoid(-u)))


def _gradient_information(r: np.ndarray, pairs: _Pairs, prior_games: float) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of the log-likelihood and the Fisher information -Hessian, in nats."""
    n = len(r)
    d = r[pairs.a] - r[pairs.b]
    p, p_not = _sigmoid(d), _sigmoid(-d)
    # w - n p written as w (1 - p) - (n - w) p, and 1 - p as sigma(-d): for a
    # lopsided pair (1000-0, p near 1) the difference w - n p would cancel to
    # noise far above the TOLERANCE_ELO we ask of the steps.
    g = pairs.points * p_not - (pairs.games - pairs.points) * p
    grad = np.bincount(pairs.a, g, n) - np.bincount(pairs.b, g, n).astype(float)  # float even with no games
    info = _along_pairs(n, pairs, pairs.games * p * p_not)
    # The prior, through u = P r: its gradient is P g_u and its information P D P.
    u = r - r.mean()
    q, q_not = _sigmoid(u), _sigmoid(-u)
    g_u = prior_games / 2 * (q_not - q)
    d_u = prior_games * q * q_not
    grad += g_u - g_u.mean()
    info += np.diag(d_u) - (d_u[:, None] + d_u[None, :]) / n + d_u.sum() / n**2
    return grad, info


def _along_pairs(n: int, pairs: _Pairs, h: np.ndarray) -> np.ndarray:
    """float[N, N]: sum over pairings of h (e_a - e_b)(e_a - e_b)^T."""
    out = np.zeros((n, n))
    np.add.at(out, (pairs.a, pairs.a), h)
    np.add.at(out, (pairs.b, pairs.b), h)
    np.add.at(out, (pairs.a, pairs.b), -h)
    np.add.at(out, (pairs.b, pairs.a), -h)
    return out


def _pair_variances(r: np.ndarray, pairs: _Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Per pairing, in nats: a game's variance p q under the model, and a complete pair's
    empirical variance of its score, shrunk toward the model's 2 p q by PRIOR_PAIRS."""
    d = r[pairs.a] - r[pairs.b]
    p, m = _sigmoid(d), pairs.pairs
    pq = p * _sigmoid(-d)
    residuals = np.maximum(pairs.pair_squares - 4 * p * pairs.pair_points + 4 * p**2 * m, 0.0)
    return pq, (residuals + PRIOR_PAIRS * 2 * pq) / (m + PRIOR_PAIRS)


def _spread(r: np.ndarray, pairs: _Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Per pairing: the model's information h = games p q, and j, the variance of its score
    over its units (module docstring, "Intervals"): lone games at the model's variance,
    complete pairs at their shrunk empirical one."""
    pq, pair = _pair_variances(r, pairs)
    return pairs.games * pq, (pairs.games - 2 * pairs.pairs) * pq + pairs.pairs * pair


def _efficiency(r: np.ndarray, pairs: _Pairs) -> np.ndarray:
    """Fit.efficiency: the model's pair variance 2 p q over the pairing's shrunk empirical one."""
    n = len(r)
    out = np.full((n, n), np.nan)
    pq, pair = _pair_variances(r, pairs)
    has = pairs.pairs > 0
    ratio = 2 * pq[has] / np.maximum(pair[has], 1e-300)
    out[pairs.a[has], pairs.b[has]] = out[pairs.b[has], pairs.a[has]] = ratio
    return out


def _newton_step(grad: np.ndarray, info: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The Newton step on the free players; see the module docstring for the no-anchor case."""
    step = np.zeros_like(grad)
    free = ~fixed
    if fixed.any():
        step[free] = np.linalg.solve(info[np.ix_(free, free)], grad[free])
    else:
        step = np.linalg.solve(info + 1.0, grad)  # info + 11^T
        step -= step.mean()  # sum(step) = sum(grad) / N, zero but for rounding
    return step


def _maximise(r: np.ndarray, pairs: _Pairs, fixed: np.ndarray, prior_games: float) -> np.ndarray:
    """Damped Newton from r until no rating moves by TOLERANCE_ELO."""
    value = _log_likelihood(r, pairs, prior_games)
    for _ in range(MAX_ITERATIONS):
        grad, info = _gradient_information(r, pairs, prior_games)
        step = _newton_step(grad, info, fixed)
        size = np.max(np.abs(step), initial=0.0) * ELO_PER_NAT
        if size < TOLERANCE_ELO:
            return r + step
        r, new = _line_search(r, step, grad @ step, value, pairs, prior_games)
        if new <= value and size < STALL_ELO:  # at the rounding floor of this data set
            return r
        value = new
    raise RuntimeError(f"ratings did not converge in {MAX_ITERATIONS} Newton steps")


def _line_search(
    r: np.ndarray, step: np.ndarray, slope: float, value: float, pairs: _Pairs, prior_games: float
) -> tuple[np.ndarray, float]:
    """Halve the step until the log-likelihood rises enough (Armijo): far from
    the optimum a full Newton step along the flat tails of sigma can overshoot."""
    t = 1.0
    for _ in range(60):
        candidate = r + t * step
        new = _log_likelihood(candidate, pairs, prior_games)
        # The slack lets through steps whose gain is lost in rounding: near the
        # optimum the log-likelihood, a sum of many terms, cannot see them.
        if new >= value + 1e-4 * t * slope - 1e-12 * abs(value):
            break
        t /= 2
    return candidate, new


def _covariance(r: np.ndarray, pairs: _Pairs, fixed: np.ndarray, prior_games: float) -> np.ndarray:
    """The sandwich covariance F^-1 J F^-1 of the estimate in nats squared (module docstring,
    "Intervals"); 0 for anchors."""
    _, info = _gradient_information(r, pairs, prior_games)
    n = len(r)
    h, j = _spread(r, pairs)
    spread = info + _along_pairs(n, pairs, j - h)  # J: the prior's and lone games' terms as in F
    covariance = np.zeros((n, n))
    free = ~fixed
    if fixed.any():
        if free.any():
            inverse = np.linalg.inv(info[np.ix_(free, free)])
            covariance[np.ix_(free, free)] = inverse @ spread[np.ix_(free, free)] @ inverse
    else:
        inverse = np.linalg.inv(info + 1.0)  # J 1 = 0, so M J M is already orthogonal to 1
        covariance = inverse @ spread @ inverse
    return (covariance + covariance.T) / 2  # symmetric to the last bit


def _mle_exists(n: int, pairs: _Pairs, fixed: np.ndarray) -> bool:
    """Whether the graph 'loser -> winner', with all anchors merged, is strongly connected.

    If it is not, some group of free players is a sink (or a source) of it: it
    never lost (or never won) against the rest, and raising (or lowering) the
    whole group raises the likelihood forever.
    """
    node = np.arange(n)
    node[fixed] = np.flatnonzero(fixed)[0] if fixed.any() else 0
    wins = pairs.points > 0  # a scored against b: edge b -> a
    losses = pairs.games - pairs.points > 0
    forward = list(zip(node[pairs.b[wins]], node[pairs.a[wins]])) + list(
        zip(node[pairs.a[losses]], node[pairs.b[losses]])
    )
    nodes = set(node.tolist())
    start = next(iter(nodes))
    backward = [(v, u) for u, v in forward]
    return _reachable(start, forward) == nodes and _reachable(start, backward) == nodes


def _reachable(start: int, edges: list[tuple[int, int]]) -> set[int]:
    adjacent: dict[int, list[int]] = {}
    for u, v in edges:
        adjacent.setdefault(int(u), []).append(int(v))
    seen, todo = {start}, [start]
    while todo:
        for v in adjacent.get(todo.pop(), []):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen
