"""Batched MCTS over many games at once: the thin Python layer over native/tree.py.

A `Search` holds B games (its roots), their trees and the buffers that one
simulation step passes between the kernels and the evaluator. Each step is a
few kernel calls for the whole batch, none per game:

    search.select()                     # leaves' network input -> search.codes
    logits, values = net(search.codes)  # uint8[B, n*n + 1]: native/board.py codes_one
    search.backup(logits, values)       # or backup_select: this backup and the next select, one pass

`run(sims, evaluate)` loops over these; `evaluate=None` means random-rollout
values with uniform priors, the cold start before any network exists. A
self-play worker may instead interleave the steps of two Searches, so that
one group's tree search overlaps the other's inference.
"""

import functools
import math
from collections.abc import Callable

import numpy as np

from hexzd.config import SearchConfig
from hexzd.game.rules import Games
from hexzd.native import tree as kernels
from hexzd.native.rng import seeds

Evaluate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

GUMBEL_C_VISIT = 50.0  # sigma's constants from Danihelka et al. 2022
GUMBEL_C_SCALE = 1.0
_NO_TABLE = np.zeros((0, 0), np.int32)
_NO_LOGITS, _NO_VALUES = np.zeros((0, 0), np.float32), np.zeros(0, np.float32)  # a select alone reads none


def considered_visits(considered: int, sims: int) -> list[int]:
    """Sequential halving's visit schedule (mctx's get_sequence_of_considered_visits).

    Entry k is the number of visits that simulation k brings a considered
    move up to, when `considered` moves share `sims` simulations.
    """
    if considered <= 1:
        return list(range(sims))
    log2max = math.ceil(math.log2(considered))
    sequence, visits, m = [], [0] * considered, considered
    while len(sequence) < sims:
        extra = max(1, int(sims / (log2max * m)))
        for _ in range(extra):
            sequence.extend(visits[:m])
            for i in range(m):
                visits[i] += 1
        m = max(2, m // 2)
    return sequence[:sims]


@functools.cache
def considered_table(max_considered: int, sims: int) -> np.ndarray:
    """int32[max_considered + 1, sims]: the schedule for each number of moves.

    Cached: every group plans every move with it, and building it cost a
    search step's worth of Python per move. Shared, so read only.
    """
    return np.array([considered_visits(m, sims) for m in range(max_considered + 1)], np.int32)


def kernel_settings(config: SearchConfig, explore: bool) -> kernels.Settings:
    """The kernels' scalar settings for a search with this config: built when the config is set, not per step."""
    return kernels.Settings(
        c_puct=float(config.c_puct),
        fpu_reduction=float(config.fpu_reduction),
        noise_alpha=float(config.dirichlet_alpha),
        noise_fraction=float(config.dirichlet_fraction) if explore else 0.0,
        gumbel_considered=int(config.gumbel_actions) if config.gumbel else 0,
        gumbel_sample=bool(explore),
        c_visit=GUMBEL_C_VISIT,
        c_scale=GUMBEL_C_SCALE,
        playouts=int(config.rollouts),
    )


def new_tree(batch: int, nodes: int, edges: int) -> kernels.Tree:
    tree = kernels.Tree(
        node_parent=np.zeros((batch, nodes), np.int32),
        node_edge=np.zeros((batch, nodes), np.int32),
        node_first=np.zeros((batch, nodes), np.int32),
        node_count=np.zeros((batch, nodes), np.int16),
        node_visits=np.zeros((batch, nodes), np.int32),
        node_value=np.zeros((batch, nodes), np.float32),
        node_win=np.zeros((batch, nodes), np.int32),
        node_scan=np.zeros((batch, nodes), np.int16),
        edge_action=np.zeros((batch, edges), np.int16),
        edge_prior=np.zeros((batch, edges), np.float32),
        edge_visits=np.zeros((batch, edges), np.int32),
        edge_value=np.zeros((batch, edges), np.float32),
        edge_child=np.zeros((batch, edges), np.int32),
        num_nodes=np.zeros(batch, np.int32),
        num_edges=np.zeros(batch, np.int32),
    )
    kernels.clear(tree, np.ones(batch, np.bool_))
    return tree


def grow(tree: kernels.Tree, nodes: int, edges: int) -> kernels.Tree:
    """A copy of the tree with room for `nodes` nodes and `edges` edges.

    Each tree copies only the entries it uses: the kernels never read past
    num_nodes and num_edges, and memory not yet touched costs nothing. The
    largest tree sets the width of all; the others leave most of it untouched.
    """

    def widen(a, width, used):
        if a.ndim == 1 or a.shape[1] >= width:
            return a
        out = np.empty((a.shape[0], width), a.dtype)
        for b, count in enumerate(used):
            out[b, :count] = a[b, :count]
        return out

    return kernels.Tree(
        *(
            widen(a, *((nodes, tree.num_nodes) if name.startswith("node") else (edges, tree.num_edges)))
            for name, a in zip(kernels.Tree._fields, tree)
        )
    )


class Search:
    """B games and their search trees. See the module docstring."""

    def __init__(
        self,
        batch: int,
        n: int,
        swap: bool = False,
        config: SearchConfig | None = None,
        seed: int = 0,
        explore: bool = True,
        reuse_tree: bool = True,
    ):
        """explore=False turns off root noise and sampling: play for evaluation."""
        self.explore = explore
        self.config = config or SearchConfig()  # and the kernels' settings: see the config setter
        self.reuse_tree = reuse_tree and not self.config.gumbel  # Gumbel searches afresh
        self.roots = Games.new(batch, n, swap)
        self._leaves = Games.new(batch, n, swap)
        self.leaves = kernels.State(*self._leaves.arrays)
        self.tree = new_tree(batch, 64, 4 * (n * n + 1))
        self.leaf = np.zeros(batch, np.int32)
        # The leaves' compact network input (native/board.py codes_one), not float planes:
        # the evaluator expands it on its own device (hexzd.nn.net.planes).
        self.codes = np.zeros((batch, n * n + 1), np.uint8)
        self.rng = seeds(batch, seed)
        self.gumbel_score = np.full((batch, n * n + 1), -np.inf, np.float32)
        self._uniform = np.zeros((batch, n * n), np.float32)
        self._table = _NO_TABLE
        self._room = 0  # steps that fit in the tree arrays without checking again (see _reserve)

    @property
    def config(self) -> SearchConfig:
        return self._config

    @config.setter
    def config(self, config: SearchConfig) -> None:
        """A new config holds from the next kernel call on; the kernels' scalars are built here, once."""
        self._config = config
        self._settings = kernel_settings(config, self.explore)

    @property
    def n(self) -> int:
        return self.roots.n

    @property
    def batch(self) -> int:
        return self.roots.batch

    # -- one simulation step ------------------------------------------------

    def select(self) -> None:
        """Descends every tree to a leaf and writes its network input to self.codes."""
        self._reserve()
        self._step(_NO_LOGITS, _NO_VALUES, backup=False, select=True)

    def backup(self, logits: np.ndarray, values: np.ndarray) -> None:
        """Expands the leaves with the evaluator's output and backs values up."""
        self._step(*self._outputs(logits, values), backup=True, select=False)

    def backup_select(self, logits: np.ndarray, values: np.ndarray) -> None:
        """backup, then select: the same trees and leaves, in one pass over the trees (see kernels.step)."""
        outputs = self._outputs(logits, values)
        self._reserve(pending=1)  # the room for this next step; the expansion now is the last one's
        self._step(*outputs, backup=True, select=True)

    def _step(self, logits: np.ndarray, values: np.ndarray, backup: bool, select: bool) -> None:
        kernels.step(
            self.tree,
            kernels.State(*self.roots.arrays),
            self.leaves,
            self.roots.swap,
            self.leaf,
            logits,
            values,
            self.rng,
            self.gumbel_score,
            self._table,
            self.codes,
            self._settings,
            backup,
            select,
        )

    def _outputs(self, logits: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The evaluator's answer, checked, as the kernels take it."""
        nn = self.n * self.n
        if logits.shape != (self.batch, nn) or values.shape != (self.batch,):
            raise ValueError(
                f"evaluator returned logits {logits.shape} and values {values.shape}; "
                f"expected ({self.batch}, {nn}) and ({self.batch},)"
            )
        return np.ascontiguousarray(logits, np.float32), np.ascontiguousarray(values, np.float32)

    def rollouts(self) -> tuple[np.ndarray, np.ndarray]:
        """Uniform logits and random-fill values for the current leaves."""
        return self._uniform, self._leaves.playouts(self.rng, self.config.rollouts)

    def begin_move(self, sims: int) -> int:
        """Plans a move's search of `sims` simulations; returns how many to run.

        From a fresh root it runs at least two: the first only expands the
        root, and a move needs a visit (the second visits the highest prior).
        The plan (Gumbel's halving schedule) is for that many. run() calls
        it; a caller driving select() and backup() itself calls it once
        before each move's simulations, and runs as many as it returns.
        """
        if sims < 2 and (self.tree.node_visits[:, 0] == 0).any():
            sims = 2
        c = self.config
        self._table = considered_table(c.gumbel_actions, sims) if c.gumbel else _NO_TABLE
        return sims

    def run(self, sims: int, evaluate: Evaluate | None = None) -> None:
        """Runs `sims` simulations in every tree (see begin_move). evaluate=None: random rollouts."""
        sims = self.begin_move(sims)
        if evaluate is None:
            self._search_rollouts(sims)
            return
        self.select()
        for step in range(sims):
            outputs = evaluate(self.codes)
            if step + 1 < sims:
                self.backup_select(*outputs)
            else:
                self.backup(*outputs)

    def _search_rollouts(self, sims: int) -> None:
        """All of a tree's rollout simulations in one kernel call: see search_rollouts."""
        self._reserve(sims)
        kernels.search_rollouts(
            self.tree,
            kernels.State(*self.roots.arrays),
            self.leaves,
            self.roots.swap,
            self.rng,
            self.gumbel_score,
            self._table,
            self._settings,
            sims,
        )

    def _reserve(self, steps: int = 1, pending: int = 0) -> None:
        """Grows the tree arrays, doubling, so that `steps` more steps fit.

        pending: steps selected whose expansion is not in the trees yet (their
        room was counted when they were selected).

        A growth leaves room for as many steps again: the subtree that reuse
        keeps adds to the next move's steps, and each growth copies every tree.
        The room left over is counted down, so that the trees' sizes are read
        once a growth (or a move), not at every step: a step is a few hundred
        microseconds, and the reads were a few of them, holding the GIL.
        """
        if steps <= self._room:
            self._room -= steps
            return
        t = self.tree
        per_step = self.n * self.n + 1  # edges a step adds to a tree at most, as it adds a node
        room_nodes, room_edges = steps + pending, (steps + pending) * per_step
        used_nodes, used_edges = int(t.num_nodes.max()), int(t.num_edges.max())
        nodes, edges = t.node_parent.shape[1], t.edge_action.shape[1]
        if used_nodes + room_nodes > nodes:
            while nodes < used_nodes + 2 * room_nodes:
                nodes *= 2
        if used_edges + room_edges > edges:
            while edges < used_edges + 2 * room_edges:
                edges *= 2
        if (nodes, edges) != (t.node_parent.shape[1], t.edge_action.shape[1]):
            self.tree = grow(t, nodes, edges)
        self._room = min(nodes - used_nodes, (edges - used_edges) // per_step) - steps - pending

    # -- after the search ---------------------------------------------------

    def visits(self) -> np.ndarray:
        """float32[B, n*n + 1]: the roots' visit counts per action, swap last."""
        return kernels.root_visits(self.tree, self.n * self.n)

    def proven_lost(self) -> np.ndarray:
        """bool[B]: roots that search proved lost, every move leading to a proven win for the opponent."""
        return self.tree.node_win[:, kernels.ROOT] == kernels.LOST

    def choose(self) -> tuple[np.ndarray, np.ndarray]:
        """The move to play in each game and the policy to train on.

        PUCT: the visit distribution, and a move sampled from it for the first
        `temperature_moves` plies (the most visited after, or when not
        exploring). Gumbel: the improved policy and sequential halving's move.
        A move that wins at once, or that search proved to win, overrides
        both; moves proven to lose are left out of both while a visited move
        is not proven to lose.
        Returns int64[B] (-1 for a finished game) and float32[B, n*n + 1].
        """
        nn = self.n * self.n
        losing = kernels.root_losing(self.tree, nn)
        if self.config.gumbel:
            moves, policy = kernels.gumbel_moves(self.tree, self.gumbel_score, nn, GUMBEL_C_VISIT, GUMBEL_C_SCALE)
            policy[losing] = 0.0
            policy /= np.maximum(policy.sum(axis=1, keepdims=True), 1e-30)
        else:
            visits = self.visits()
            visits[losing] = 0.0
            early = self.roots.ply < self.config.temperature_moves
            temperature = np.where(early & self.explore, 1.0, 0.0)
            moves = kernels.sample_moves(visits, temperature, self.rng)
            policy = visits / np.maximum(visits.sum(axis=1, keepdims=True), 1.0)
        # A proven win (at once or deeper) is played, and taught, whatever the
        # search's spread; a move proven to lose is neither, while another is left.
        wins = kernels.root_wins(self.tree)
        won = np.flatnonzero(wins >= 0)
        moves[won] = wins[won]
        policy[won] = 0.0
        policy[won, wins[won]] = 1.0
        return moves, policy

    def play(self, moves) -> None:
        """Plays moves[b] in game b (-1 skips it) and moves the trees along."""
        moves = np.asarray(moves, np.int64)
        self.roots.play(moves)
        s = self._settings
        kernels.advance(self.tree, moves, self.reuse_tree, self.rng, s.noise_alpha, s.noise_fraction)
        self._room = 0  # the kept subtrees decide the next move's room

    def new_games(self, mask) -> None:
        """Starts fresh games, with fresh trees, where mask is true."""
        mask = np.asarray(mask, np.bool_)
        self.roots.reset(mask)
        kernels.clear(self.tree, mask)
        self._room = 0
