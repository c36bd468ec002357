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

Intervals. The covariance of the estimate is the inverse of F at the optimum,
restricted to the free players; anchored players have zero width. Without
anchors it is the pseudo-inverse (F + 11^T)^-1 - 11^T / N^2, the covariance of
ratings measured from the pool's mean. Interval = Elo +- z * sd, with z the
normal quantile for `confidence`.

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
    results (a, b, wins_of_a, wins_of_b). Ratings are keyed by player, in the
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
        return Fit([], np.zeros(0), np.zeros((0, 0)), np.zeros(0), fixed)
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
    return Fit(players, elo, covariance, played, fixed)


def _aggregate(games: Iterable[tuple], anchors: dict[Hashable, float]) -> tuple[list, _Pairs]:
    """Index the players and sum each pair's points and games."""
    index: dict[Hashable, int] = {}
    totals: dict[tuple[int, int], list[float]] = {}
    for game in games:
        a, b, points, lost = _parse(game)
        i, j = index.setdefault(a, len(index)), index.setdefault(b, len(index))
        if i > j:  # store each pair once, from its lower index's side
            i, j, points, lost = j, i, lost, points
        total = totals.setdefault((i, j), [0.0, 0.0])
        total[0] += points
        total[1] += points + lost
    for p, elo in anchors.items():
        if not math.isfinite(elo):
            raise ValueError(f"anchor {p!r} has a rating of {elo}")
        index.setdefault(p, len(index))
    keys = np.array(list(totals), dtype=np.int64).reshape(-1, 2)
    values = np.array(list(totals.values()), dtype=float).reshape(-1, 2)
    return list(index), _Pairs(keys[:, 0], keys[:, 1], values[:, 0], values[:, 1])


def _parse(game: tuple) -> tuple[Hashable, Hashable, float, float]:
    """(a, b, score) or (a, b, wins_a, wins_b) -> (a, b, points of a, points of b)."""
    if len(game) == 3:
        a, b, score = game
        won, lost = float(score), 1.0 - float(score)
    elif len(game) == 4:
        a, b, won, lost = game[0], game[1], float(game[2]), float(game[3])
    else:
        raise ValueError(f"a game is (a, b, score) or (a, b, wins_a, wins_b), got {game!r}")
    if a == b:
        raise ValueError(f"player {a!r} cannot play itself")
    if not (won >= 0 and lost >= 0 and math.isfinite(won + lost)):
        raise ValueError(f"scores must be finite, with 0 <= score <= 1, got {game!r}")
    return a, b, won, lost


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
    h = pairs.games * p * p_not
    grad = np.bincount(pairs.a, g, n) - np.bincount(pairs.b, g, n).astype(float)  # float even with no games
    info = np.zeros((n, n))
    np.add.at(info, (pairs.a, pairs.a), h)
    np.add.at(info, (pairs.b, pairs.b), h)
    np.add.at(info, (pairs.a, pairs.b), -h)
    np.add.at(info, (pairs.b, pairs.a), -h)
    # The prior, through u = P r: its gradient is P g_u and its information P D P.
    u = r - r.mean()
    q, q_not = _sigmoid(u), _sigmoid(-u)
    g_u = prior_games / 2 * (q_not - q)
    d_u = prior_games * q * q_not
    grad += g_u - g_u.mean()
    info += np.diag(d_u) - (d_u[:, None] + d_u[None, :]) / n + d_u.sum() / n**2
    return grad, info


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
    """The covariance of the estimate in nats squared, from the inverse Fisher information; 0 for anchors."""
    _, info = _gradient_information(r, pairs, prior_games)
    n = len(r)
    covariance = np.zeros((n, n))
    free = ~fixed
    if fixed.any():
        if free.any():
            covariance[np.ix_(free, free)] = np.linalg.inv(info[np.ix_(free, free)])
    else:
        covariance = np.linalg.inv(info + 1.0) - 1.0 / n**2
    return covariance


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
