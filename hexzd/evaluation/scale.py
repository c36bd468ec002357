"""Who plays whom for ratings, and the ratings that their games give.

A player is a network at a simulation count, or random-rollout MCTS at one:
`model 12 @64`, `rollouts @1000`, or an outside HTP engine of `[ratings]
engines`, rated on the same scale (never an anchor): `engine mohex`. Every duel
game (promotion duels and rating matches alike) is a result between two players.

The scale is fitted in two stages (`scale`):
1. The reference ladder: the games between references alone, with the first
   reference, pure rollout MCTS at `ratings.references[0]` simulations, at
   0 Elo. The same players on the same board give the same ladder in every
   run, so ratings compare across runs; the references' intervals say how
   precisely the ladder is fixed.
2. Everyone else, with each reference whose ladder rating is within
   +-FIXED_ELO held at it, as several anchors (as Ordo and BayesElo users
   anchor a pool on several engines). A snapshot's interval is therefore its
   precision relative to the ladder: the quantity a scaling curve within one
   scale needs. It does not add the ladder's own uncertainty, which shifts
   every rating of the scale together.

On boards the solver takes (up to 5x5, no swap) and with `[ratings] perfect`,
perfect play (hexzd.evaluation.perfect.PerfectPlayer) is the ladder's top
reference, `perfect`, above the strongest rollouts. A snapshot near perfect
meets it at even odds, where a game narrows an interval most: against
rollouts far below it a game says little (a 400 Elo gap is worth a third of
an even game). Its games are not cheap, though: solving each fresh opening
made them about 0.3 CPU-seconds each on 5x5 (less once its solver has
met the positions: it remembers its answers), and matchmaking prices them
so. Against it a near-perfect snapshot splits nearly every pair 1-1, and
pairs, not games, are the fit's trials (hexzd.evaluation.ratings,
"Intervals"): such pairs vary little, so they narrow the interval more than
as many independent games would.

Rating matches are chosen by information (hexzd.evaluation.matchmaking): the
match that narrows the intervals of the promoted snapshots and of the ladder
most per second of play. A reference not yet fixed (FIXED_ELO) within
NEAR_ELO of the newest snapshot counts as much as a snapshot: once fixed it
anchors the snapshots near even odds, where their games say the most.
"""

import statistics
from dataclasses import dataclass, replace
from itertools import combinations
from typing import NamedTuple

import numpy as np

from hexzd.config import SearchConfig
from hexzd.evaluation import matchmaking
from hexzd.evaluation.perfect import MAX_SIZE
from hexzd.evaluation.ratings import Fit, estimate
from hexzd.evaluation.stats import Z95
from hexzd.store.writes import PERFECT  # the perfect player's name: an engine built in, never one of [ratings] engines

PRIOR_GAMES = 2.0  # BayesElo-like: keeps a perfect record finite
FIXED_ELO = 150.0  # a reference anchors stage 2 once its ladder interval is this narrow (the "rated" bound)
LADDER_WEIGHT = 0.3  # a reference's interval against a snapshot's: stage 2 needs the ladder only within FIXED_ELO
NEAR_ELO = 400.0  # an unfixed reference this close to the newest snapshot counts as much as a snapshot:
# fixed, it anchors the snapshots at odds where their games say the most
NEWEST_WEIGHT = 3.0  # the newest promoted snapshot's interval counts this much more than the older ones'
DEFAULT_SECONDS = 1.0  # seconds per game guessed before any rating match was timed


# The reference players' search, whatever a run's [selfplay] says: rollout MCTS with
# PUCT's defaults, so that "rollouts @N" is the same player in every run and league.
# (With self-play's Gumbel search it considered 16 random moves of a uniform prior.)
REFERENCE_SEARCH = SearchConfig(gumbel=False)
# Bumped when the reference players change in a way REFERENCE_SEARCH does not show (the
# rollouts' kernels, the openings of rating matches): a new kept ladder then starts.
LADDER_VERSION = 1


def ladder_key(board_size: int, swap: bool) -> str:
    """The kept ladder (hexzd.store.ladder) that a run's reference games belong to: the same
    players on the same board."""
    rule = " swap" if swap else ""
    return f"{board_size}x{board_size}{rule} v{LADDER_VERSION} {REFERENCE_SEARCH!r}"


def has_perfect(board_size: int, swap: bool, wanted: bool = True) -> bool:
    """Whether perfect play tops the ladder: wanted ([ratings] perfect), and a board the solver takes."""
    return wanted and board_size <= MAX_SIZE and not swap


def rungs(references: list[int], perfect: bool) -> list[tuple]:
    """The ladder's players, weakest first: rollouts by simulations, then perfect play."""
    return [(None, s) for s in references] + ([(None, 0, PERFECT)] if perfect else [])


def player(model_id: int | None, sims: int, engine: str | None = None) -> str:
    if engine == PERFECT:
        return PERFECT
    if engine is not None:
        return f"engine {engine}"
    return f"rollouts @{sims}" if model_id is None else f"model {model_id} @{sims}"


class Kind(NamedTuple):
    """A player's kind, for its cost: any network at `sims` costs about the same; a reference
    or an engine is its own. what: "model", "rollouts", "engine" (named) or "perfect"."""

    what: str
    sims: int = 0
    engine: str | None = None

    @property
    def rollouts(self) -> int | None:
        """A rollout player's simulations, else None."""
        return self.sims if self.what == "rollouts" else None


def kind(model_id: int | None, sims: int, engine: str | None = None) -> Kind:
    if engine == PERFECT:
        return Kind("perfect")
    if engine is not None:
        return Kind("engine", engine=engine)
    return Kind("rollouts" if model_id is None else "model", sims)


def side(model_id: int | None, sims: int, engine: str | None = None) -> tuple:
    """What Pairing, player and kind take: a player's (model_id, sims), an engine's (None, 0, name)."""
    return (model_id, sims) if engine is None else (model_id, sims, engine)


def seconds_per_game(matches) -> dict[frozenset, float]:
    """Seconds per game by the kinds of the two players, from the finished matches
    (candidate_id, sims, opponent_id, opponent_sims, seconds, games[, opponent_engine])."""
    totals: dict[frozenset, list[float]] = {}
    for candidate, sims, opponent, opponent_sims, seconds, games, *engine in matches:
        key = frozenset((kind(candidate, sims), kind(opponent, opponent_sims, *engine)))
        total = totals.setdefault(key, [0.0, 0.0])
        total[0] += seconds
        total[1] += games
    return {key: seconds / games for key, (seconds, games) in totals.items()}


def game_seconds(costs: dict[frozenset, float]):
    """seconds(a, b): what a game between two sides ((model_id, sims[, engine])) is expected
    to cost, from seconds_per_game's measured costs by kinds.

    A pairing not yet timed is priced as the sum of its two sides' shares. Rollouts cost in
    proportion to their simulations: a rollout player's share is its simulations times the
    seconds per simulation of the timed rollouts-only pairing nearest it. Any other kind's
    share is the least that its timed games leave it: half of one against its own kind, one
    against rollouts less their share, or at most a whole game. On 7x7, pricing the untimed
    `model @64` against `rollouts @102400` at the median of the timed pairings (0.1 s) had
    matchmaking choose a 64-game match that cost 3.4 s a game. What is left unknown (an
    engine never timed, or nothing timed at all) takes that median."""
    guess = statistics.median(costs.values()) if costs else DEFAULT_SECONDS
    per_sim: dict[int, float] = {}  # the larger side's simulations -> seconds per simulation of both
    for pair, seconds in costs.items():
        sims = [k.rollouts for k in pair]
        if len(sims) == 2 and all(sims):
            per_sim[max(sims)] = seconds / sum(sims)

    def rollout_share(sims: int) -> float:
        nearest = min(per_sim, key=lambda timed: abs(np.log(timed / sims)))
        return per_sim[nearest] * sims

    share: dict[Kind, float] = {}
    for pair, seconds in costs.items():
        for k in pair:
            other = next((o for o in pair if o != k), None)
            rollouts = other.rollouts if other else None
            if other is None:
                left = seconds / 2
            elif rollouts and per_sim:
                left = max(seconds - rollout_share(rollouts), 0.0)
            else:
                left = seconds
            share[k] = min(share.get(k, left), left)

    def side_share(side: tuple) -> float | None:
        sims = kind(*side).rollouts
        return rollout_share(sims) if sims and per_sim else share.get(kind(*side))

    def seconds(a: tuple, b: tuple) -> float:
        measured = costs.get(frozenset((kind(*a), kind(*b))))
        if measured is not None:
            return measured
        shares = side_share(a), side_share(b)
        return guess if None in shares else sum(shares)

    return seconds


@dataclass(frozen=True)
class Pairing:
    """Two players to meet in a duel: the candidate side and the opponent side."""

    candidate_id: int | None
    sims: int
    opponent_id: int | None
    opponent_sims: int
    opponent_engine: str | None = None  # an outside engine's name (then opponent_id None, opponent_sims 0)


@dataclass
class Scale:
    """The two stages' fits, and each player's (model_id, sims), an engine's (None, 0, name)."""

    ladder: Fit
    players: Fit
    sides: dict[str, tuple]


def scale(results, references: list[int], registered=(), engines=(), perfect: bool = False) -> Scale:
    """Both stages from the duel results (candidate_id, sims, opponent_id, opponent_sims,
    candidate wins, games[, opponent_engine[, complete pairs with 0, 1, 2 candidate wins]])
    of hexzd.store.writes: with its pairs, a pairing's games count as the pairs they are
    (hexzd.evaluation.ratings, "Intervals"). Players in `registered`,
    pairs (model_id, sims), the `engines` by name and every reference (perfect play too,
    if `perfect`) are in the fits even before their first game."""
    games, sides = [], {}
    for candidate, sims, opponent, opponent_sims, wins, count, *rest in results:
        engine = rest[0] if rest else None  # six-column rows have none
        a, b = player(candidate, sims), player(opponent, opponent_sims, engine)
        sides[a], sides[b] = side(candidate, sims), side(opponent, opponent_sims, engine)
        games.append((a, b, wins, count - wins, tuple(rest[1:4])) if len(rest) >= 4 else (a, b, wins, count - wins))
    ladder_sides = {player(*rung): rung for rung in rungs(references, perfect)}
    sides |= ladder_sides
    refs = list(ladder_sides)
    anchor = refs[0]
    # A pair with no games puts a player in the fit (the prior alone rates it) without changing anything else.
    unplayed = [(anchor, r, 0, 0) for r in refs[1:]]
    ladder = estimate([g for g in games if g[0] in refs and g[1] in refs] + unplayed, {anchor: 0.0}, PRIOR_GAMES)
    fixed = {
        p: e for p, e, v in zip(ladder.players, ladder.elo, ladder.covariance.diagonal()) if Z95 * v**0.5 <= FIXED_ELO
    }
    for new in [*(side(model_id, sims) for model_id, sims in registered), *(side(None, 0, e) for e in engines)]:
        sides[player(*new)] = new
        unplayed.append((anchor, player(*new), 0, 0))
    return Scale(ladder, estimate(games + unplayed, fixed, PRIOR_GAMES), sides)


def rate(results, references: list[int], perfect: bool = False) -> list[tuple]:
    """Ratings rows (player, model_id, sims, rating, lo, hi, games, anchor) of every player
    with games: the references' ratings and intervals from the ladder, everyone else's
    from stage 2."""
    if not results:
        return []
    s = scale(results, references, perfect=perfect)
    ladder, anchor = s.ladder.ratings(), player(None, references[0])
    rows = []
    for name, r in s.players.ratings().items():
        if name in ladder and ladder[name].games:
            r = replace(ladder[name], games=r.games)
        if r.games or name == anchor:
            rows.append((name, *s.sides[name][:2], r.elo, r.lo, r.hi, r.games, int(name == anchor)))
    return rows


def next_match(
    s: Scale,
    references: list[int],
    promoted: list[int],
    sims: int,
    games: int,
    costs: dict,
    target_elo: float,
    newest_weight: float = NEWEST_WEIGHT,
    engines=(),
    perfect: bool = False,
) -> Pairing | None:
    """The rating match of `games` games worth the most per second: two references for the
    ladder, or a promoted snapshot (at `sims`, newest last in `promoted`) against a reference
    or another promoted snapshot. costs[frozenset of two kinds] = seconds per game measured.
    newest_weight: how much the newest snapshot's interval counts (hexzd league: 1, every
    snapshot of every run alike). engines: outside engines by name (in `s` already), each
    a match against every reference and promoted snapshot, its interval counted as one.
    perfect: perfect play tops the ladder (always the opponent side, as engines are)."""
    refs = [player(*rung) for rung in rungs(references, perfect)]
    rollouts = [r for r in refs if r != PERFECT]
    snapshots = [player(m, sims) for m in promoted]
    price = game_seconds(costs)

    def kinds(a, b):
        return frozenset((kind(*s.sides[a]), kind(*s.sides[b])))

    def candidate(efficiency, a, b):
        return matchmaking.Candidate(a, b, games, price(s.sides[a], s.sides[b]), efficiency(a, b))

    ladder_efficiency, efficiency = _efficiencies(s.ladder, kinds), _efficiencies(s.players, kinds)
    ladder = [candidate(ladder_efficiency, *((a, b) if b == PERFECT else (b, a))) for a, b in combinations(refs, 2)]
    rated = [candidate(efficiency, m, r) for m in snapshots for r in refs]
    rated += [candidate(efficiency, m, n) for n, m in combinations(snapshots, 2)]  # the newer first
    outside = [player(None, 0, e) for e in engines]
    rated += [candidate(efficiency, m, e) for e in outside for m in rollouts + snapshots]  # an engine is the opponent
    important = dict.fromkeys(snapshots, 1.0) | ({snapshots[-1]: newest_weight} if snapshots else {})
    important |= dict.fromkeys(outside, 1.0)
    options = [
        *zip(ladder, matchmaking.scores(s.ladder, ladder, _ladder_weights(s, refs, snapshots), target_elo)),
        *zip(rated, matchmaking.scores(s.players, rated, important, target_elo)),
    ]
    if not options:
        return None
    chosen, score = max(options, key=lambda o: o[1])
    if score <= 0:
        return None
    return Pairing(*s.sides[chosen.a], *s.sides[chosen.b])


def _ladder_weights(s: Scale, refs: list[str], snapshots: list[str]) -> dict[str, float]:
    """What each reference's ladder interval counts: LADDER_WEIGHT, or as much as a snapshot's
    while it is not yet fixed (FIXED_ELO) and within NEAR_ELO of the newest snapshot, which
    it would then anchor near even odds."""
    weights = dict.fromkeys(refs, LADDER_WEIGHT)
    if not snapshots:
        return weights
    newest = s.players.elo[s.players.players.index(snapshots[-1])]
    for r, elo, variance in zip(s.ladder.players, s.ladder.elo, s.ladder.covariance.diagonal()):
        if r in weights and abs(elo - newest) <= NEAR_ELO and Z95 * variance**0.5 > FIXED_ELO:
            weights[r] = 1.0
    return weights


def _efficiencies(fit: Fit, kinds):
    """efficiency(a, b): how many independent games a game of the pairing is worth (Fit.efficiency);
    for a pairing with no complete pair yet, the median of the pairings of the same kinds
    (kinds(a, b)) that have some, else 1."""
    index = {p: i for i, p in enumerate(fit.players)}
    pooled: dict[frozenset, list[float]] = {}
    for i, j in zip(*np.nonzero(~np.isnan(fit.efficiency))):
        if i < j:
            pooled.setdefault(kinds(fit.players[i], fit.players[j]), []).append(float(fit.efficiency[i, j]))

    def efficiency(a, b) -> float:
        own = fit.efficiency[index[a], index[b]]
        if not np.isnan(own):
            return float(own)
        return statistics.median(pooled.get(kinds(a, b), [1.0]))

    return efficiency


def ladder_match(references: list[int], played: dict[tuple, int], ladder_pairs: int, perfect: bool = False):
    """The next neighbouring references to play (a Pairing), while the ladder has too few pairs.

    played[(sims_a, sims_b)] counts the games between rollouts @sims_a and @sims_b, either
    way round; played[(sims, PERFECT)] those of rollouts @sims against perfect play.
    """
    top = [PERFECT] if perfect else []
    for low, high in zip(references, [*references[1:], *top]):
        if played.get((low, high), 0) + played.get((high, low), 0) < 2 * ladder_pairs:
            return Pairing(None, low, None, 0, PERFECT) if high == PERFECT else Pairing(None, high, None, low)
    return None


def rating_cells(row: dict) -> tuple[str, str, str, str]:
    """A rating table row's rating, 95% interval, train step and PFLOP as `hexzd ratings`
    and `hexzd league` print them; a rating without enough games says so."""
    rating, ci = f"{row['rating']:7.0f}", "anchor" if row["anchor"] else f"[{row['lo']:.0f}, {row['hi']:.0f}]"
    if row["status"] == "too few games":
        rating, ci = "      -", "too few games"
    step = "" if row["step"] is None else f"{row['step']:,}"
    flops = "" if row["flops"] is None else f"{row['flops'] / 1e15:.4f}"
    return rating, ci, step, flops
