"""Self-play: groups of games searched by batched MCTS, finished games out.

A worker keeps `groups` groups of `games` games in flight, searched by
`threads` threads. With a network, one simulation step of a group is select
(numba, CPU) -> evaluate (the worker's inference service, hexzd.nn.inference_service)
-> backup (numba). A thread interleaves the steps of its groups, so that
while group A's leaves are being evaluated, group B's tree search runs: the
kernels are nogil, so searches of several threads and the accelerator's
inference all overlap, and the service joins the leaves that wait into one
batch. Before the first network exists, each group runs its rollout
simulations in one fused kernel call instead.
"""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from hexzd.config import SelfplayConfig
from hexzd.game.records import GameRecord
from hexzd.nn.inference_service import MAX_BATCH, InferenceService
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
        self.search = Search(config.batch, n, swap, config, seed=seed)
        self.actions = [[] for _ in range(config.batch)]
        self.policies = [[] for _ in range(config.batch)]
        self.models = [[] for _ in range(config.batch)]  # the model that searched each move
        self.evals = np.zeros(config.batch, np.int64)  # network evaluations spent on each game
        self.seconds = np.zeros(config.batch)  # inference time spent on each game
        self.rng = np.random.default_rng((seed, 1))  # the random first moves
        self.watched: tuple[list[int], np.ndarray, int] | None = None  # game 0: (moves so far, visits, chosen)

    def finish_move(
        self, sims: int, model_id: int | None, evals: int, restart: bool = True
    ) -> list[tuple[GameRecord, int, float]]:
        """Plays the searched moves; returns the games that ended: (record, evals, seconds).

        model_id searched this move (None: rollouts), spending `evals` network
        evaluations on each game. A game is stamped with the model that made
        most of its moves: a new best can be promoted mid-game. With restart
        false, a game that ends leaves its slot finished (a draining group).
        """
        search = self.search
        moves, policy = search.choose()
        self._randomise_first_moves(moves)
        if moves[0] >= 0:  # game 0 is the one the dashboard shows; a new game takes its slot when it ends
            self.watched = (list(self.actions[0]), policy[0], int(moves[0]))
        playing = np.flatnonzero(moves >= 0)
        self.evals[playing] += evals
        for b, move in zip(playing.tolist(), moves[playing].tolist()):
            self.actions[b].append(move)
            self.policies[b].append(policy[b])
            self.models[b].append(model_id)
        search.play(moves)
        done = np.flatnonzero(search.roots.done & (moves >= 0))  # ended now, not before (draining)
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
        if len(done) and restart:
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
    """The games of one self-play worker. `move()` advances every game one move.

    `threads` search threads share the groups; every group's leaves go to one
    inference service, which batches what the threads hand it. A new group
    shape (games per group, groups) never throws games away: the old groups
    play their games out without starting new ones (`settling` meanwhile)
    while the new groups start.
    """

    def __init__(self, config: SelfplayConfig, n: int, swap: bool, seed: int = 0):
        self.n, self.swap, self.seed = n, swap, seed
        self._network: Network | None = None
        self.service: InferenceService | None = None
        self._served = 0  # evaluations of services closed before this one
        self.config = config
        self.groups = self._new_groups()
        self.draining: list[Group] = []  # groups of an older shape, playing their games out
        self.pool = ThreadPoolExecutor(config.threads, thread_name_prefix="search")

    def _new_groups(self) -> list[Group]:
        c = self.config
        return [Group(c, self.n, self.swap, self.seed * 1000 + g) for g in range(c.groups)]

    @property
    def network(self) -> "Network | None":
        return self._network

    @network.setter
    def network(self, network: "Network | None") -> None:
        """Searches with this network (None: rollouts) from the next batch on; games in flight go on."""
        self._network = network
        if network is None:
            return
        evaluators = network.evaluators or [_Evaluate(network.evaluate)]
        in_flight = self.config.batch * self.config.groups  # the largest batch the service can form
        for evaluator in evaluators:
            if hasattr(evaluator, "warm"):  # CUDA graphs captured now, not in the middle of a search
                evaluator.warm(min(in_flight, MAX_BATCH))
        if self.service is None or self.service.in_flight != len(evaluators):
            old, self.service = self.service, InferenceService(evaluators)
            if old is not None:
                old.close()
                self._served += old.served
        else:
            self.service.swap(evaluators)

    def apply(self, config: SelfplayConfig) -> None:
        """Takes new live settings; a new group shape starts new groups beside the old ones."""
        reshape = (config.batch, config.groups) != (self.config.batch, self.config.groups)
        if config.threads != self.config.threads:
            self.pool.shutdown(wait=True)
            self.pool = ThreadPoolExecutor(config.threads, thread_name_prefix="search")
        self.config = config
        if reshape:
            self.seed += 1
            self.draining += self.groups
            self.groups = self._new_groups()
        for group in self.groups + self.draining:
            group.search.config = config

    @property
    def settling(self) -> bool:
        """True while groups of an older shape still play their games out."""
        return bool(self.draining)

    @property
    def served(self) -> int:
        """Network evaluations this worker's inference service ran."""
        return self._served + (self.service.served if self.service else 0)

    def move(self) -> list[tuple[GameRecord, int, float]]:
        """Searches and plays one move in every game; returns the games that ended."""
        sims = self.config.sims
        groups = self.groups + self.draining
        if self.network is None:
            steps = [0] * len(groups)  # no network evaluations
            self._in_threads(groups, lambda share: [group.search.run(sims) for group in share])
        else:
            # Search.run's plan: a fresh root gets at least two simulations, and Gumbel's schedule.
            steps = [group.search.begin_move(sims) for group in groups]
            self._in_threads(list(zip(groups, steps)), self._simulate)
        model_id = self.network.model_id if self.network else None
        finished = []
        for group, evals in zip(groups, steps):
            finished += group.finish_move(sims, model_id, evals, restart=group not in self.draining)
        self.draining = [g for g in self.draining if not g.search.roots.done.all()]
        return finished

    def _in_threads(self, items: list, work) -> None:
        """work(share) for each search thread's share of the items (groups), in parallel."""
        threads = min(self.config.threads, len(items))
        if threads <= 1:
            work(items)
            return
        for future in [self.pool.submit(work, items[t::threads]) for t in range(threads)]:
            future.result()

    def _simulate(self, plan: list[tuple[Group, int]]) -> None:
        """Each (group, steps) pair's steps: while one group's leaves are evaluated, the next searches."""
        service = self.service
        pending = {}  # index in plan -> the future of that group's evaluation

        def resolve(group, reply, then_select: bool):
            logits, values, seconds = reply.result()
            group.seconds += seconds / group.search.batch
            if then_select:
                group.search.backup_select(logits, values)
            else:
                group.search.backup(logits, values)

        for step in range(max((count for _, count in plan), default=0)):
            for i, (group, count) in enumerate(plan):
                if step >= count:
                    continue
                if i in pending:  # a group cannot search past its own evaluation
                    resolve(group, pending.pop(i), then_select=True)
                else:
                    group.search.select()
                pending[i] = service.submit(group.search.codes)
        for i, reply in pending.items():
            resolve(plan[i][0], reply, then_select=False)

    def watched(self) -> tuple[list[int], np.ndarray, int] | None:
        """The first game in flight: its moves so far, the visit shares of its next move, and that move."""
        return self.groups[0].watched

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.service is not None:
            self.service.close()


class _Evaluate:
    """A bare evaluate function as an evaluator (a Network built by hand, as tests do)."""

    def __init__(self, evaluate):
        self.evaluate = evaluate
