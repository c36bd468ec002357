"""Self-play: groups of games searched by batched MCTS, finished games out.

A worker keeps `groups` groups of `games` games in flight. With a network,
one simulation step of a group is select (numba, CPU) -> evaluate (torch,
in the inference thread) -> backup (numba). The steps of the groups are
interleaved so that while group A's leaves are being evaluated, group B's
tree search runs: the kernels are nogil, so the CPU search and the
accelerator's inference overlap. Before the first network exists, each group
runs its rollout simulations in one fused kernel call instead.
"""

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from hexzd.config import SelfplayConfig
from hexzd.game.records import GameRecord
from hexzd.search.mcts import Search

if TYPE_CHECKING:  # the type alone: self-play before the first network never imports torch
    from hexzd.nn.loader import Network


def majority(models: list[int | None]) -> int | None:
    """The model that made most of a game's moves (None: rollouts); a tie goes to the later model."""
    counts = Counter(models)
    last = {model: i for i, model in enumerate(models)}
    return max(counts, key=lambda model: (counts[model], last[model]))


class Group:
    """One batch of games and the moves and visit distributions played so far."""

    def __init__(self, config: SelfplayConfig, n: int, swap: bool, seed: int):
        self.search = Search(config.games, n, swap, config, seed=seed)
        self.actions = [[] for _ in range(config.games)]
        self.policies = [[] for _ in range(config.games)]
        self.models = [[] for _ in range(config.games)]  # the model that searched each move
        self.evals = np.zeros(config.games, np.int64)  # network evaluations spent on each game
        self.seconds = np.zeros(config.games)  # inference time spent on each game
        self.rng = np.random.default_rng((seed, 1))  # the random first moves
        self.watched: tuple[list[int], np.ndarray, int] | None = None  # game 0: (moves so far, visits, chosen)

    def finish_move(self, sims: int, model_id: int | None, evals: int) -> list[tuple[GameRecord, int, float]]:
        """Plays the searched moves; returns the games that ended: (record, evals, seconds).

        model_id searched this move (None: rollouts), spending `evals` network
        evaluations on each game. A game is stamped with the model that made
        most of its moves: a new best can be promoted mid-game.
        """
        search = self.search
        moves, policy = search.choose()
        self._randomise_first_moves(moves)
        if moves[0] >= 0:  # game 0 is the one the dashboard shows; a new game takes its slot when it ends
            self.watched = (list(self.actions[0]), policy[0], int(moves[0]))
        for b in np.flatnonzero(moves >= 0):
            self.actions[b].append(int(moves[b]))
            self.policies[b].append(policy[b])
            self.models[b].append(model_id)
            self.evals[b] += evals
        search.play(moves)
        done = np.flatnonzero(search.roots.done)
        finished = []
        for b in done:
            record = GameRecord.from_arrays(
                search.n,
                self.actions[b],
                np.array(self.policies[b]),
                search.roots.winner[b],
                sims=sims,
                model_id=majority(self.models[b]),
            )
            finished.append((record, int(self.evals[b]), float(self.seconds[b])))
            self.actions[b], self.policies[b], self.models[b] = [], [], []
            self.evals[b] = 0
            self.seconds[b] = 0.0
        if len(done):
            search.new_games(search.roots.done)
        return finished

    def _randomise_first_moves(self, moves: np.ndarray) -> None:
        """A `random_first_moves` share of the games opens on a uniformly random cell.

        Played only: the empty board's policy target stays the search's. Without it,
        self-play rarely opens anywhere but the centre, and the network never learns
        the openings users and evaluations play, every first move from both sides.
        """
        share = self.search.config.random_first_moves
        first = np.flatnonzero((self.search.roots.ply == 0) & (moves >= 0))
        if share <= 0 or not len(first):
            return
        chosen = first[self.rng.random(len(first)) < share]
        moves[chosen] = self.rng.integers(0, self.search.n**2, len(chosen))


class SelfPlay:
    """The games of one self-play worker. `move()` advances every game one move."""

    def __init__(self, config: SelfplayConfig, n: int, swap: bool, seed: int = 0):
        self.n, self.swap, self.seed = n, swap, seed
        self.network: Network | None = None
        self.config = config
        self.groups = self._new_groups()
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="inference")

    def _new_groups(self) -> list[Group]:
        c = self.config
        return [Group(c, self.n, self.swap, self.seed * 1000 + g) for g in range(c.groups)]

    def apply(self, config: SelfplayConfig) -> None:
        """Takes new live settings; a new group shape restarts the games in flight."""
        reshape = (config.games, config.groups) != (self.config.games, self.config.groups)
        self.config = config
        if reshape:
            self.seed += 1
            self.groups = self._new_groups()
        for group in self.groups:
            group.search.config = config

    def move(self) -> list[tuple[GameRecord, int, float]]:
        """Searches and plays one move in every game; returns the games that ended."""
        sims = self.config.sims
        if self.network is None:
            for group in self.groups:
                group.search.run(sims)
            steps = [0] * len(self.groups)  # no network evaluations
        else:
            # Search.run's plan: a fresh root gets at least two simulations, and Gumbel's schedule.
            steps = [group.search.begin_move(sims) for group in self.groups]
            self._simulate(steps)
        model_id = self.network.model_id if self.network else None
        return [game for group, evals in zip(self.groups, steps) for game in group.finish_move(sims, model_id, evals)]

    def _simulate(self, steps: list[int]) -> None:
        """steps[g] steps of group g, each group's search overlapping another's inference."""
        evaluate = self.network.evaluate

        def timed(planes):  # runs in the inference thread: its time is the evaluation's alone
            started = time.perf_counter()
            return evaluate(planes), time.perf_counter() - started

        def resolve(group, future):
            (logits, values), seconds = future.result()
            group.seconds += seconds / group.search.batch
            group.search.backup(logits, values)

        pending = None  # (group, future of its evaluation)
        for step in range(max(steps)):
            for group, count in zip(self.groups, steps):
                if step >= count:
                    continue
                if pending is not None and pending[0] is group:
                    resolve(*pending)  # a single group cannot overlap with itself
                    pending = None
                group.search.select()
                submitted = (group, self.inference.submit(timed, group.search.planes))
                if pending is not None:
                    resolve(*pending)
                pending = submitted
        if pending is not None:
            resolve(*pending)

    def watched(self) -> tuple[list[int], np.ndarray, int] | None:
        """The first game in flight: its moves so far, the visit shares of its next move, and that move."""
        return self.groups[0].watched

    def close(self) -> None:
        self.inference.shutdown(wait=True)
