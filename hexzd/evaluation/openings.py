"""The openings of paired games: duels, rating matches and `hexzd match`.

Hex's first player wins far more often than not, so games come in pairs:
each opening is played twice, colours swapped. The network players search
without noise, so the same two players from the same opening play the same
game: a 5x5 duel whose openings cycled through the 25 first moves held 46 to
50 distinct games in 200, and its SPRT counted each repeat as a new trial.

So every pair gets an opening of its own, and a pair's games differ from
every other pair's from the first moves on:

1. every first move once (n*n openings), in an order shuffled by the seed;
2. then two-stone openings (a Black and a White stone, Black to move), the
   most balanced first: sorted by how sure a network is of the result, |value|,
   in steps of `BALANCE_STEP`, the seed shuffling each step. Without a network
   (rollout players only) in the seed's order;
3. then three stones, and so on, up to n*n // 3 stones, so that the opening
   never decides a tiny board. (`hexzd match --plies K` starts at K stones.)

A balanced opening is one where the players still have to play well; an
opening the network already calls won yields a split pair from any pair of
decent players, and so little information. Rating by the network rather than
by the solver (on boards up to 5x5) is deliberate: the solver calls every
position won for one side, so it cannot say which openings are hard.

Positions of two stones and more are counted once up to the board's
180-degree rotation, which maps Hex to itself with each side's edges kept
(the first moves are all there, twins too: a network need not play a twin
the same way, and users ask about every first move); finished positions are
left out.
A level with more than `CANDIDATES` positions is sampled (by the seed).
`Openings` is reproducible from (n, seed, network): a restarted duel replays
its openings exactly, and a pairing's later matches go on down the same list
(`start`), so that no two of its games share an opening until the list runs
out (boards up to 3x3; `Openings.count`).
"""

import itertools
import math

import numpy as np

from hexzd.game.rules import BLACK, EMPTY, WHITE, Games
from hexzd.search.mcts import Evaluate

__all__ = ["BALANCE_STEP", "CANDIDATES", "Openings", "opening", "pairing_seed"]

BALANCE_STEP = 0.05  # |value| within one step counts as equally balanced: order by seed there
CANDIDATES = 4096  # positions rated per level at most; more are sampled


def pairing_seed(*players) -> int:
    """A seed for a pairing of players (model id or None, sims), the same whichever side each is on.

    Openings follow a pairing rather than a duel: two players that meet
    again go on down their list instead of replaying it.
    """
    key = sorted((-1 if model is None else int(model), int(sims)) for model, sims in players)
    return int(np.random.SeedSequence([v + 1 for pair in key for v in pair]).generate_state(1)[0])


class Openings:
    """The list of openings of one pairing: openings[i] is pair i's moves (Black first)."""

    def __init__(self, n: int, seed: int, evaluate: Evaluate | None = None, fewest: int = 1):
        """fewest: the shortest openings, in stones (`hexzd match --plies`); 1 for duels."""
        self.n, self.seed, self.evaluate = n, seed, evaluate
        self.most = max(1, n * n // 3)
        self.fewest = max(1, min(fewest, self.most))
        self._levels: dict[int, list[list[int]]] = {}

    def __getitem__(self, index: int) -> list[int]:
        """Opening `index`; IndexError once the list is exhausted (see `count`)."""
        if index < 0:
            raise IndexError(index)
        for stones in range(self.fewest, self.most + 1):
            level = self._level(stones)
            if index < len(level):
                return list(level[index])
            index -= len(level)
        raise IndexError("no more openings")

    @property
    def count(self) -> int:
        """How many openings there are in all (rates every level: for small boards)."""
        return sum(len(self._level(s)) for s in range(self.fewest, self.most + 1))

    def _level(self, stones: int) -> list[list[int]]:
        if stones not in self._levels:
            self._levels[stones] = self._make(stones)
        return self._levels[stones]

    def _make(self, stones: int) -> list[list[int]]:
        nn, rng = self.n * self.n, np.random.default_rng((self.seed, stones))
        if stones == 1:
            return [[int(a)] for a in rng.permutation(nn)]
        lines = _positions(self.n, stones, rng)
        if not lines:
            return []
        games = _play(self.n, lines)
        keep = np.flatnonzero(games.winner == EMPTY)
        lines, order = [lines[i] for i in keep], rng.permutation(len(keep))
        if self.evaluate is None or not len(keep):
            return [lines[i] for i in order]
        values = self.evaluate(_play(self.n, lines).features())[1]
        steps = np.floor(np.abs(values) / BALANCE_STEP)
        return [lines[i] for i in order[np.argsort(steps[order], kind="stable")]]


def _positions(n: int, stones: int, rng) -> list[list[int]]:
    """Distinct positions up to rotation with `stones` stones, Black's one more or equal, as move lists."""
    nn, black = n * n, (stones + 1) // 2
    white = stones - black
    total = math.comb(nn, black) * math.comb(nn - black, white)
    if total <= CANDIDATES:
        draws = (
            (b, w)
            for b in itertools.combinations(range(nn), black)
            for w in itertools.combinations([c for c in range(nn) if c not in b], white)
        )
    else:
        samples = (rng.choice(nn, stones, replace=False) for _ in range(4 * CANDIDATES))
        draws = ((cells[:black], cells[black:]) for cells in samples)
    seen, lines = set(), []
    for b, w in draws:
        key = min(_key(b, w, nn), _key([nn - 1 - c for c in b], [nn - 1 - c for c in w], nn))
        if key in seen:
            continue
        seen.add(key)
        line = [int(c) for pair in itertools.zip_longest(sorted(b), sorted(w)) for c in pair if c is not None]
        lines.append(line)
        if len(lines) >= CANDIDATES:
            break
    return lines


def _key(black, white, nn: int) -> bytes:
    board = np.zeros(nn, np.int8)
    board[list(black)], board[list(white)] = BLACK, WHITE
    return board.tobytes()


def _play(n: int, lines: list[list[int]]) -> Games:
    games = Games.new(len(lines), n)
    for ply in range(max(len(line) for line in lines)):
        games.play([line[ply] if ply < len(line) and not done else -1 for line, done in zip(lines, games.done)])
    return games


def opening(openings: Openings, index: int) -> list[int]:
    """Opening `index`, counting round again once the list runs out (boards up to 3x3)."""
    try:
        return openings[index]
    except IndexError:
        return openings[index % openings.count]
