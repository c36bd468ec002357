"""Batched MCTS kernels: B independent search trees stored as arrays.

Notation follows the AlphaGo Zero paper: N visits, W total value, Q = W / N,
P the prior, and PUCT picks argmax Q + c_puct * P * sqrt(N_parent) / (1 + N).

A tree is a `Tree` of arrays, one per field, in the style of mctx. Nodes are
positions; edges are the legal moves of an expanded node, stored in one
contiguous block per node, with each move's N and W beside its prior so
that PUCT reads one block of memory front to back. Memory grows with the
simulations done: each simulation adds one node (28 bytes) and, when it
expands it, one edge per legal move (18 bytes each). On 9x9 that is at most
28 + 82 * 18 = 1,504 bytes per simulation; the Python layer doubles the
capacity when it runs short.

One simulation is two halves of `step` for the whole batch, between which
the evaluator runs:
    select        descends each tree by PUCT to one leaf, plays the moves on a
                  copy of the root's board and writes the leaf's compact
                  network input into a uint8[B, n*n + 1] buffer (board.codes_one);
    backup        takes the evaluator's logits [B, n*n] and values [B], adds
                  the leaf's edges and backs the value up to the root.
One call can do a step's backup and the next step's select.
With random rollouts, search_rollouts runs all of a tree's simulations in
one call.

Wins and losses are proven as in MCTS-Solver (Winands et al. 2008). A node
with a move that wins at once, or that leads to a proven loss for the
opponent, is a proven win: search always takes that move and the node is
worth +1. A node whose every move leads to a proven win for the opponent is a
proven loss, and so is a finished game: search stops there (below the root)
and it is worth -1. node_win holds the winning edge, NO_WIN or LOST, and PUCT
passes over moves proven to lose while any other move is left.

What makes a simulation cheap (see the kernels for each):
  - PUCT scores only the moves tried so far and the best untried one, which
    the kernels keep just after them (node_scan), not every legal move;
  - the descent plays moves on the board alone; the one flood fill that a
    leaf needs replaces union-find updates at every level;
  - the kernels take the Tree's arrays one by one, unpacked once per call,
    and the per-simulation ones run without reference counting (board.hot).
"""
import math
from collections import namedtuple
from typing import NamedTuple

import numba
import numpy as np

from .board import (
    _DC,
    _DR,
    BLACK,
    EMPTY,
    WHITE,
    canonical_index,
    codes_one,
    fill_scratch,
    fill_value,
    hot,
    side,
    swap_cell,
    swap_legal,
    transpose,
)
from .rng import gamma, gumbel, uniform

ROOT = 0  # the root is always node 0: advance() moves a reused subtree down
NO_PARENT = -1
UNEXPANDED = -1  # node_first of a node whose edges are not made yet
UNVISITED = -1  # edge_child of a move never tried
NO_WIN = -1  # node_win of a node not proven either way
LOST = -2  # node_win of a proven loss for the player to move
NODE_BYTES = 4 + 4 + 4 + 2 + 4 + 4 + 4 + 2
EDGE_BYTES = 2 + 4 + 4 + 4 + 4

Tree = namedtuple(
    "Tree",
    [
        "node_parent",  # int32[B, N]   parent node, NO_PARENT at the root
        "node_edge",  # int32[B, N]     the parent's edge that leads here
        "node_first",  # int32[B, N]    first edge, UNEXPANDED until expanded
        "node_count",  # int16[B, N]    number of edges (legal moves)
        "node_visits",  # int32[B, N]   N: simulations through this node
        "node_value",  # float32[B, N]  W: their values, for the player to move here
        "node_win",  # int32[B, N]      a winning edge (at once or proven), NO_WIN or LOST
        "node_scan",  # int16[B, N]     edges PUCT scores one by one; see _puct
        "edge_action",  # int16[B, E]   the move
        "edge_prior",  # float32[B, E]  P
        "edge_visits",  # int32[B, E]   N of the move
        "edge_value",  # float32[B, E]  W of the move, for the player making it
        "edge_child",  # int32[B, E]    the node it leads to, or UNVISITED
        "num_nodes",  # int32[B]        nodes in use
        "num_edges",  # int32[B]        edges in use
    ],
)

State = namedtuple("State", ["board", "parent", "to_play", "winner", "ply"])  # see board.py


class Settings(NamedTuple):
    """A search's scalar settings, the same for every tree: step's and search_rollouts' one
    argument for them, where ten positional scalars could be swapped unseen. The caller
    builds it once per configuration (hexzd.search.mcts.kernel_settings), not per step.
    """

    c_puct: float  # PUCT's exploration constant
    fpu_reduction: float  # an unvisited move's Q is its parent's minus this
    noise_alpha: float  # Dirichlet noise at a fresh root: its concentration,
    noise_fraction: float  # and the share of the priors it replaces (0: none)
    gumbel_considered: int  # moves Gumbel search considers at the root; 0: PUCT there, and the noise
    gumbel_sample: bool  # Gumbel draws g at the root; false: g = 0 (play for evaluation)
    c_visit: float  # sigma's constants (Gumbel search)
    c_scale: float
    playouts: int  # random fills per rollout value (search_rollouts)


# -- one tree's steps, on arrays passed one by one ------------------------------


@hot
def _init_node(node_parent, node_edge, node_first, node_count, node_visits, node_value,
               node_win, node_scan, b, node, parent, edge):
    """Makes `node` an unexpanded, unvisited node below edge `edge` of `parent`."""
    node_parent[b, node] = parent
    node_edge[b, node] = edge
    node_first[b, node] = UNEXPANDED
    node_count[b, node] = 0
    node_visits[b, node] = 0
    node_value[b, node] = 0.0
    node_win[b, node] = NO_WIN
    node_scan[b, node] = 0


@hot
def _clear(node_parent, node_edge, node_first, node_count, node_visits, node_value,
           node_win, node_scan, num_nodes, num_edges, b):
    _init_node(node_parent, node_edge, node_first, node_count, node_visits, node_value,
               node_win, node_scan, b, ROOT, NO_PARENT, -1)
    num_nodes[b] = 1
    num_edges[b] = 0


@hot
def _puct(node_first, node_count, node_visits, node_value, node_win, node_scan,
          edge_prior, edge_visits, edge_value, edge_child, b, node, c_puct, fpu_reduction):
    """The edge that maximises Q + U; unvisited moves get the parent's Q minus the FPU.

    Ties go to the first edge. Only the first node_scan edges are scored one
    by one: the edges after them are untried, so they all share Q (the FPU)
    and N = 0, and the one with the highest prior stands for the rest. The
    kernels keep that one first among them (_bring_forward), so a deep node
    costs its few tried moves, not all its legal ones. A move proven to lose
    is taken only when every move loses.

    A move is looked up for a proof only when it would lead so far: moves
    proven to lose are few, and the look-up is a load from another node.
    """
    visits = node_visits[b, node]
    parent_q = node_value[b, node] / visits if visits > 0 else 0.0
    fpu_q = parent_q - fpu_reduction
    scale = c_puct * math.sqrt(max(visits, 1))
    first = node_first[b, node]
    scan = first + node_scan[b, node]
    best, best_score = -1, -np.inf
    lost, lost_score = first, -np.inf  # the best move proven to lose
    for e in range(first, scan):
        n = edge_visits[b, e]
        q = fpu_q if n == 0 else edge_value[b, e] / n
        score = q + scale * edge_prior[b, e] / (1 + n)
        if score > best_score:
            if n > 0 and node_win[b, edge_child[b, e]] >= 0:
                if score > lost_score:
                    lost, lost_score = e, score
            else:
                best, best_score = e, score
    if scan < first + node_count[b, node]:
        score = fpu_q + scale * edge_prior[b, scan] / 1
        if score > best_score:
            best = scan
    return best if best >= 0 else lost


@hot
def _bring_forward(edge_action, edge_prior, b, at, end):
    """Moves the untried edge with the highest prior (the first such) to `at`.

    The edges between shift up by one, so the untried ones keep their order
    and PUCT breaks ties as if it scored them all.
    """
    best, top = at, edge_prior[b, at]
    for e in range(at + 1, end):
        if edge_prior[b, e] > top:
            best, top = e, edge_prior[b, e]
    _move_up(edge_action, edge_prior, b, at, best)


@hot
def _move_up(edge_action, edge_prior, b, at, edge):
    """Moves untried `edge` to `at`; the untried edges between shift up by one."""
    action, prior = edge_action[b, edge], edge_prior[b, edge]
    for e in range(edge, at, -1):
        edge_action[b, e] = edge_action[b, e - 1]
        edge_prior[b, e] = edge_prior[b, e - 1]
    edge_action[b, at] = action
    edge_prior[b, at] = prior


@hot
def _gumbel_edge(node_first, node_count, node_visits, node_value, edge_visits, edge_value,
                 b, gumbel_score, table, c_visit, c_scale):
    """Sequential halving at the root: the considered move due for a visit.

    `table[m, k]` is the visit count that simulation k wants a move to have
    when m moves are considered (get_table_of_considered_visits in mctx).
    Among the considered moves with that many visits, the one with the
    highest g + logit + sigma(Q) is taken. gumbel_score[b, i] holds g + logit
    of root edge i, or -inf for moves not considered, which come after the
    considered ones (_start_gumbel): only those are scanned.
    """
    first = node_first[b, ROOT]
    count = node_count[b, ROOT]
    considered = 0  # a prefix of the root's edges: see _start_gumbel
    max_visits = 0
    while considered < count and gumbel_score[b, considered] > -np.inf:
        max_visits = max(max_visits, edge_visits[b, first + considered])
        considered += 1
    k = min(node_visits[b, ROOT] - 1, table.shape[1] - 1)
    target = table[min(considered, table.shape[0] - 1), k]
    root_q = node_value[b, ROOT] / max(node_visits[b, ROOT], 1)
    best, best_score = -1, -np.inf
    fallback, fallback_visits = first, 1 << 30
    for i in range(considered):
        n = edge_visits[b, first + i]
        q = edge_value[b, first + i] / n if n > 0 else root_q
        if n < fallback_visits:
            fallback, fallback_visits = first + i, n
        if n == target:
            score = gumbel_score[b, i] + sigma(q, max_visits, c_visit, c_scale)
            if score > best_score:
                best, best_score = first + i, score
    return best if best >= 0 else fallback


@hot
def _new_node(node_parent, node_edge, node_first, node_count, node_visits, node_value,
              node_win, node_scan, edge_child, num_nodes, b, parent, edge):
    node = num_nodes[b]
    num_nodes[b] = node + 1
    _init_node(node_parent, node_edge, node_first, node_count, node_visits, node_value,
               node_win, node_scan, b, node, parent, edge)
    edge_child[b, edge] = node
    return node


@hot
def _joins(board, b, n, cell, stack, seen):
    """Does the group of the stone on `cell` join its owner's two edges?"""
    colour = board[b, cell]
    for x in range(n * n):
        seen[x] = False
    stack[0] = cell
    seen[cell] = True
    top = 1
    touch_a = touch_b = False
    while top > 0:
        top -= 1
        x = stack[top]
        r = x // n
        c = x - r * n
        if colour == BLACK:
            touch_a = touch_a or r == 0
            touch_b = touch_b or r == n - 1
        else:
            touch_a = touch_a or c == 0
            touch_b = touch_b or c == n - 1
        if touch_a and touch_b:
            return True
        for k in range(6):
            rr = r + _DR[k]
            cc = c + _DC[k]
            if 0 <= rr < n and 0 <= cc < n:
                y = rr * n + cc
                if board[b, y] == colour and not seen[y]:
                    seen[y] = True
                    stack[top] = y
                    top += 1
    return False


@hot
def _descend(node_parent, node_edge, node_first, node_count, node_visits, node_value,
             node_win, node_scan, edge_action, edge_prior, edge_visits, edge_value, edge_child,
             num_nodes, root_board, root_to_play, root_winner, root_ply, board, to_play, winner,
             ply, b, c_puct, fpu_reduction, gumbel_score, table, c_visit, c_scale, stack, seen,
             flat_prior):
    """Descends tree b to a new leaf, playing its moves on leaves[b]. Returns the leaf.

    With flat_prior (rollouts: every prior alike) the untried moves need no
    reordering: the first of them is already a best one.

    The descent stops at a finished game, at an unexpanded node, and below
    the root at a proven loss; a proven win always takes its winning move.

    The moves go on the board alone: every expanded node is a running game,
    so only the last move can end it, and a flood fill from its stone tells.
    The leaves' union-find forest is not kept; nothing after the descent
    reads it.
    """
    nn = board.shape[1]
    n = side(board)
    for x in range(nn):
        board[b, x] = root_board[b, x]
    winner[b] = root_winner[b]
    mover = root_to_play[b]
    plies = 0
    gumbel_root = table.shape[0] > 0
    node = ROOT
    action = -1
    first = node_first[b, ROOT] if winner[b] == EMPTY else UNEXPANDED
    while first != UNEXPANDED:
        win = node_win[b, node]
        if win >= 0:
            e = win  # a won position needs no search
        elif win == LOST and node != ROOT:
            break  # nor does a lost one, below the root
        elif gumbel_root and node == ROOT:
            e = _gumbel_edge(node_first, node_count, node_visits, node_value, edge_visits,
                             edge_value, b, gumbel_score, table, c_visit, c_scale)
        else:
            e = _puct(node_first, node_count, node_visits, node_value, node_win, node_scan,
                      edge_prior, edge_visits, edge_value, edge_child, b, node, c_puct,
                      fpu_reduction)
        if e - first >= node_scan[b, node]:
            scan = e - first + 1  # the edges past it stay untried
            node_scan[b, node] = scan
            root_kept = gumbel_root and node == ROOT  # gumbel_score is by position there
            if scan < node_count[b, node] and not flat_prior and not root_kept:
                _bring_forward(edge_action, edge_prior, b, first + scan, first + node_count[b, node])
        action = edge_action[b, e]
        if action == nn:  # swap: Black's lone stone becomes White's, transposed
            cell = swap_cell(board, b)
            board[b, cell] = EMPTY
            board[b, transpose(cell, n)] = WHITE
        else:
            board[b, action] = mover
        mover = WHITE if mover == BLACK else BLACK
        plies += 1
        child = edge_child[b, e]
        if child == UNVISITED:
            node = _new_node(node_parent, node_edge, node_first, node_count, node_visits,
                             node_value, node_win, node_scan, edge_child, num_nodes, b, node, e)
            break
        node = child
        first = node_first[b, node]
    to_play[b] = mover
    ply[b] = root_ply[b] + plies
    if 0 <= action < nn and node_first[b, node] == UNEXPANDED and (
        node_win[b, node] == LOST or _joins(board, b, n, action, stack, seen)
    ):
            winner[b] = board[b, action]
    return node


@hot
def _winning_cells(board, b, n, colour, mark, stack):
    """mark[x] & 3 == 3 where a `colour` stone on x would join its two edges.

    Bit 1: x is on the first edge or beside a stone whose group touches it;
    bit 2 the same for the second edge (bits 4 and 8: the flood has been
    there). Two flood fills, from each edge's stones, instead of a look at
    every empty cell's neighbours.
    """
    nn = n * n
    for x in range(nn):
        mark[x] = 0
    for bit in (1, 2):
        top = 0
        for i in range(n):
            if colour == BLACK:
                x = i if bit == 1 else nn - n + i
            else:
                x = i * n if bit == 1 else i * n + n - 1
            mark[x] |= bit
            if board[b, x] == colour:
                mark[x] |= bit << 2
                stack[top] = x
                top += 1
        while top > 0:
            top -= 1
            x = stack[top]
            r = x // n
            c = x - r * n
            for k in range(6):
                rr = r + _DR[k]
                cc = c + _DC[k]
                if 0 <= rr < n and 0 <= cc < n:
                    y = rr * n + cc
                    mark[y] |= bit
                    if board[b, y] == colour and mark[y] & (bit << 2) == 0:
                        mark[y] |= bit << 2
                        stack[top] = y
                        top += 1


@hot
def _expand(node_first, node_count, node_win, node_scan, edge_action, edge_prior, edge_visits,
            edge_value, edge_child, num_edges, board, to_play, winner, ply, b, node,
            logits, swap, flat_prior, mark, stack):
    """Adds an edge per legal move, with priors softmax(logits) over them.

    flat_prior=True skips the logits: every move gets the same prior, as in
    plain MCTS with random rollouts.

    It also notes the first move that wins at once, if there is one: search
    then always takes it, and the node is worth a sure win to the player to
    move. The loops avoid branches on cells.
    """
    nn = board.shape[1]
    n = side(board)
    mover = to_play[b]
    stones = 0  # the mover's; fewer than n - 1 cannot win at once
    for a in range(nn):
        stones += board[b, a] == mover
    win_cell = -1
    if stones >= n - 1:
        _winning_cells(board, b, n, mover, mark, stack)
        for a in range(nn):
            if board[b, a] == EMPTY and mark[a] & 3 == 3:
                win_cell = a
                break
    first = num_edges[b]
    win = NO_WIN
    count = 0
    for a in range(nn):
        if a == win_cell:
            win = first + count
        edge_action[b, first + count] = a  # kept only where the cell is empty
        count += board[b, a] == EMPTY
    if swap_legal(winner, ply, b, swap):
        edge_action[b, first + count] = nn
        count += 1
    last = first + count
    # Slices: loops over first..last would check each index for wraparound.
    edge_child[b, first:last] = UNVISITED
    edge_visits[b, first:last] = 0
    edge_value[b, first:last] = 0.0
    if flat_prior:
        edge_prior[b, first:last] = 1.0 / count
    else:
        top, best = -np.inf, first
        for e in range(first, last):
            logit = logits[b, canonical_index(board, to_play, b, edge_action[b, e])]
            edge_prior[b, e] = logit
            if logit > top:
                top, best = logit, e
        total = 0.0
        for e in range(first, last):
            p = math.exp(edge_prior[b, e] - top)
            edge_prior[b, e] = p
            total += p
        scale = 1.0 / total
        for e in range(first, last):
            edge_prior[b, e] *= scale
        _move_up(edge_action, edge_prior, b, first, best)  # PUCT's first untried move: see _puct
        if first <= win < best:
            win += 1
        elif win == best:
            win = first
    node_win[b, node] = win
    node_first[b, node] = first
    node_count[b, node] = count
    node_scan[b, node] = 0
    num_edges[b] = last


@numba.njit(nogil=True, cache=True)
def _add_noise(node_first, node_count, node_scan, edge_prior, b, rng, alpha, fraction):
    """Mixes Dirichlet(alpha) noise into the root's priors (AlphaZero)."""
    first = node_first[b, ROOT]
    count = node_count[b, ROOT]
    if fraction <= 0.0 or first == UNEXPANDED or count == 0:
        return
    noise = np.empty(count)
    total = 0.0
    for i in range(count):
        noise[i] = gamma(rng, b, alpha)
        total += noise[i]
    if total <= 0.0:
        return
    for i in range(count):
        p = edge_prior[b, first + i]
        edge_prior[b, first + i] = (1.0 - fraction) * p + fraction * noise[i] / total
    node_scan[b, ROOT] = count  # the priors differ now


@numba.njit(nogil=True, cache=True)
def _start_gumbel(node_first, node_count, node_win, edge_action, edge_prior, b, rng,
                  gumbel_score, considered, sample):
    """Draws g for each root move and keeps the `considered` best g + logit.

    With sample false, g is zero: the deterministic choice used for
    evaluation. The considered moves go first in the root's block, in their
    order, so that sequential halving looks at them alone; the others get
    -inf. The root is fresh: its edges hold no visits yet.
    """
    first = node_first[b, ROOT]
    count = node_count[b, ROOT]
    score = np.empty(count, np.float32)
    for i in range(count):
        g = gumbel(rng, b) if sample else 0.0
        score[i] = g + math.log(max(edge_prior[b, first + i], 1e-30))
    kept = np.zeros(count, np.bool_)
    kept[np.argsort(-score)[:min(considered, count)]] = True
    actions = edge_action[b, first:first + count].copy()
    priors = edge_prior[b, first:first + count].copy()
    win = node_win[b, ROOT]
    gumbel_score[b, :] = -np.inf
    j = 0
    for keep in (True, False):  # a stable partition: the considered moves, then the rest
        for i in range(count):
            if kept[i] == keep:
                edge_action[b, first + j] = actions[i]
                edge_prior[b, first + j] = priors[i]
                if keep:
                    gumbel_score[b, j] = score[i]
                if win == first + i:
                    node_win[b, ROOT] = first + j
                j += 1


@hot
def _all_moves_lose(node_first, node_count, node_win, node_scan, edge_child, b, node):
    """Does every move of `node` lead to a proven win for the opponent?"""
    count = node_count[b, node]
    if node_scan[b, node] < count:
        return False  # some move is still untried
    first = node_first[b, node]
    for e in range(first, first + count):
        child = edge_child[b, e]
        if child == UNVISITED or node_win[b, child] < 0:
            return False
    return True


@hot
def _backup(node_parent, node_edge, node_first, node_count, node_visits, node_value, node_win,
            node_scan, edge_visits, edge_value, edge_child, b, node, v):
    """Adds value v (for the player to move at `node`) along the path to the root.

    A proof at the leaf climbs as far as it decides the parents (MCTS-Solver).
    """
    proved = node_win[b, node] != NO_WIN
    while True:
        node_visits[b, node] += 1
        node_value[b, node] += v
        v = -v
        up = node_parent[b, node]
        if up == NO_PARENT:
            return
        e = node_edge[b, node]
        edge_visits[b, e] += 1
        edge_value[b, e] += v
        if proved and node_win[b, up] == NO_WIN:
            if node_win[b, node] == LOST:
                node_win[b, up] = e  # the move into a lost position wins
            elif _all_moves_lose(node_first, node_count, node_win, node_scan, edge_child, b, up):
                node_win[b, up] = LOST
            else:
                proved = False
        else:
            proved = False
        node = up


@hot
def _settle(node_first, node_count, node_win, node_scan, edge_action, edge_prior, edge_visits,
            edge_value, edge_child, num_edges, board, to_play, winner, ply, b, node, logits,
            flat_prior, swap, mark, stack):
    """Expands leaf `node` if it needs it; returns (proof, fresh).

    proof is +1 or -1 when the leaf's value is known exactly, for the player
    to move there, and 0 when it takes the evaluator: a finished game is a
    proven loss (the previous move won), and a proof beats any guess. fresh
    tells that the root was expanded just now.
    """
    if winner[b] != EMPTY:
        node_win[b, node] = LOST
        return -1.0, False
    fresh = False
    if node_first[b, node] == UNEXPANDED:
        _expand(node_first, node_count, node_win, node_scan, edge_action, edge_prior,
                edge_visits, edge_value, edge_child, num_edges, board, to_play, winner, ply,
                b, node, logits, swap, flat_prior, mark, stack)
        fresh = node == ROOT
    win = node_win[b, node]
    if win >= 0:
        return 1.0, fresh
    if win == LOST:
        return -1.0, fresh
    return 0.0, fresh


@numba.njit(nogil=True, cache=True)
def _start_root(node_first, node_count, node_scan, node_win, edge_action, edge_prior, b, rng,
                noise_alpha, noise_fraction, gumbel_score, gumbel_considered, gumbel_sample):
    """A root expanded just now gets its Gumbel draw, or else Dirichlet noise."""
    if gumbel_considered > 0:
        _start_gumbel(node_first, node_count, node_win, edge_action, edge_prior, b, rng,
                      gumbel_score, gumbel_considered, gumbel_sample)
    else:
        _add_noise(node_first, node_count, node_scan, edge_prior, b, rng, noise_alpha,
                   noise_fraction)


# -- kernels over the batch ------------------------------------------------------


@numba.njit(nogil=True, cache=True)
def clear_one(tree, b):
    """Makes tree b a lone, unexpanded root."""
    _clear(tree.node_parent, tree.node_edge, tree.node_first, tree.node_count, tree.node_visits,
           tree.node_value, tree.node_win, tree.node_scan, tree.num_nodes, tree.num_edges, b)


@numba.njit(nogil=True, cache=True, inline="always")
def edge_q(tree, b, e, fpu_q):
    """(Q, N) of a move, from the view of the player making it."""
    n = tree.edge_visits[b, e]
    if n == 0:
        return fpu_q, 0
    return tree.edge_value[b, e] / n, n


@numba.njit(nogil=True, cache=True, inline="always")
def sigma(q, max_visits, c_visit, c_scale):
    """Gumbel search's monotone transform of a Q in [-1, 1] (Danihelka et al. 2022)."""
    return (c_visit + max_visits) * c_scale * (q + 1.0) * 0.5


@numba.njit(nogil=True, cache=True, inline="always")
def _select_one(tree, roots, leaves, leaf, swap, c_puct, fpu_reduction, gumbel_score, table,
                c_visit, c_scale, codes, b, stack, seen):
    """step's select in tree b."""
    (node_parent, node_edge, node_first, node_count, node_visits, node_value, node_win,
     node_scan, edge_action, edge_prior, edge_visits, edge_value, edge_child, num_nodes,
     num_edges) = tree
    board, to_play, winner, ply = leaves.board, leaves.to_play, leaves.winner, leaves.ply
    leaf[b] = _descend(node_parent, node_edge, node_first, node_count, node_visits,
                       node_value, node_win, node_scan, edge_action, edge_prior, edge_visits,
                       edge_value, edge_child, num_nodes, roots.board, roots.to_play,
                       roots.winner, roots.ply, board, to_play, winner, ply, b, c_puct,
                       fpu_reduction, gumbel_score, table, c_visit, c_scale, stack, seen,
                       False)
    codes_one(board, to_play, ply, b, swap, codes, b)


@numba.njit(nogil=True, cache=True)
def add_noise(tree, b, rng, alpha, fraction):
    """Mixes Dirichlet(alpha) noise into the root's priors (AlphaZero)."""
    _add_noise(tree.node_first, tree.node_count, tree.node_scan, tree.edge_prior, b, rng,
               alpha, fraction)


@numba.njit(nogil=True, cache=True, inline="always")
def _expand_backup_one(tree, leaves, leaf, logits, values, swap, rng, noise_alpha,
                       noise_fraction, gumbel_score, gumbel_considered, gumbel_sample, b,
                       mark, stack):
    """step's backup in tree b."""
    (node_parent, node_edge, node_first, node_count, node_visits, node_value, node_win,
     node_scan, edge_action, edge_prior, edge_visits, edge_value, edge_child, num_nodes,
     num_edges) = tree
    node = leaf[b]
    proof, fresh = _settle(node_first, node_count, node_win, node_scan, edge_action,
                           edge_prior, edge_visits, edge_value, edge_child, num_edges,
                           leaves.board, leaves.to_play, leaves.winner, leaves.ply, b, node,
                           logits, False, swap, mark, stack)
    value = proof if proof != 0.0 else values[b]
    if fresh:
        _start_root(node_first, node_count, node_scan, node_win, edge_action, edge_prior, b,
                    rng, noise_alpha, noise_fraction, gumbel_score, gumbel_considered,
                    gumbel_sample)
    _backup(node_parent, node_edge, node_first, node_count, node_visits, node_value,
            node_win, node_scan, edge_visits, edge_value, edge_child, b, node, value)


@numba.njit(nogil=True, cache=True)
def step(tree, roots, leaves, swap, leaf, logits, values, rng, gumbel_score, table, codes,
         settings, backup, select):
    """A simulation step's two halves in every tree: with backup, expand the leaves and back
    their values up; then with select, descend to new leaves. See the module docstring.

    backup: logits float32[B, n*n] and values float32[B] are the network's view
    of each leaf, for the player to move there. A finished game's leaf is worth
    -1 to the player to move: the previous move won. A proven leaf is worth its
    proof. A root expanded here gets Dirichlet noise, or its Gumbel draw when
    settings.gumbel_considered > 0. (Without backup they are not read.)

    select: roots, leaves: State of B games; leaves receives the leaf positions
    (their board, to_play, winner and ply: the union-find parent is left as it
    was, since nothing reads it). leaf: int32[B] receives the leaf node of each
    tree, codes: uint8[B, n*n + 1] their network input (board.codes_one). An
    empty table turns Gumbel root selection off.

    swap: the games' swap rule; settings: the search's scalars (Settings).

    Both at once end one step and start the next tree by tree, while each tree
    is in the CPU's cache, with one call into numba a step.
    """
    c_puct, fpu_reduction = settings.c_puct, settings.fpu_reduction
    noise_alpha, noise_fraction = settings.noise_alpha, settings.noise_fraction
    gumbel_considered, gumbel_sample = settings.gumbel_considered, settings.gumbel_sample
    c_visit, c_scale = settings.c_visit, settings.c_scale
    mark = np.empty(leaves.board.shape[1], np.int8)
    stack = np.empty(leaves.board.shape[1], np.int16)
    seen = np.empty(leaves.board.shape[1], np.bool_)
    for b in range(leaf.shape[0]):
        if backup:
            _expand_backup_one(tree, leaves, leaf, logits, values, swap, rng, noise_alpha,
                               noise_fraction, gumbel_score, gumbel_considered, gumbel_sample,
                               b, mark, stack)
        if select:
            _select_one(tree, roots, leaves, leaf, swap, c_puct, fpu_reduction, gumbel_score,
                        table, c_visit, c_scale, codes, b, stack, seen)


@numba.njit(nogil=True, cache=True)
def search_rollouts(tree, roots, leaves, swap, rng, gumbel_score, table, settings, sims):
    """`sims` simulations per tree with random-fill values and uniform priors.

    The same steps as step's select and backup, but a tree's simulations run
    back to back: random rollouts need no batch for an accelerator, and a
    tree that stays in the CPU's cache searches several times faster than B
    trees visited in turn. The tree arrays must have room for `sims` steps.
    """
    c_puct, fpu_reduction = settings.c_puct, settings.fpu_reduction
    noise_alpha, noise_fraction = settings.noise_alpha, settings.noise_fraction
    gumbel_considered, gumbel_sample = settings.gumbel_considered, settings.gumbel_sample
    c_visit, c_scale, playouts = settings.c_visit, settings.c_scale, settings.playouts
    (node_parent, node_edge, node_first, node_count, node_visits, node_value, node_win,
     node_scan, edge_action, edge_prior, edge_visits, edge_value, edge_child, num_nodes,
     num_edges) = tree
    root_board, root_to_play = roots.board, roots.to_play
    root_winner, root_ply = roots.winner, roots.ply
    board, to_play, winner, ply = leaves.board, leaves.to_play, leaves.winner, leaves.ply
    no_logits = np.zeros((0, 0), np.float32)
    nn = board.shape[1]
    mark = np.empty(nn, np.int8)
    stack = np.empty(nn, np.int16)
    seen = np.empty(nn, np.bool_)
    empty, rows, reach = fill_scratch(side(board))
    for b in range(num_nodes.shape[0]):
        for _ in range(sims):
            node = _descend(node_parent, node_edge, node_first, node_count, node_visits,
                            node_value, node_win, node_scan, edge_action, edge_prior,
                            edge_visits, edge_value, edge_child, num_nodes, root_board,
                            root_to_play, root_winner, root_ply, board, to_play, winner, ply, b,
                            c_puct, fpu_reduction, gumbel_score, table, c_visit, c_scale,
                            stack, seen, True)
            value, fresh = _settle(node_first, node_count, node_win, node_scan, edge_action,
                                   edge_prior, edge_visits, edge_value, edge_child, num_edges,
                                   board, to_play, winner, ply, b, node, no_logits, True, swap,
                                   mark, stack)
            if value == 0.0:  # no proof: a random fill decides
                value = fill_value(board, to_play, winner, b, rng, playouts, empty, rows,
                                   reach)
            if fresh:
                _start_root(node_first, node_count, node_scan, node_win, edge_action, edge_prior,
                            b, rng, noise_alpha, noise_fraction, gumbel_score,
                            gumbel_considered, gumbel_sample)
            _backup(node_parent, node_edge, node_first, node_count, node_visits, node_value,
                    node_win, node_scan, edge_visits, edge_value, edge_child, b, node, value)


@numba.njit(nogil=True, cache=True)
def root_visits(tree, nn):
    """float32[B, n*n + 1]: the root's visit counts per action, swap last."""
    B = tree.num_nodes.shape[0]
    out = np.zeros((B, nn + 1), np.float32)
    for b in range(B):
        first = tree.node_first[b, ROOT]
        if first == UNEXPANDED:
            continue
        for e in range(first, first + tree.node_count[b, ROOT]):
            out[b, tree.edge_action[b, e]] = tree.edge_visits[b, e]
    return out


@numba.njit(nogil=True, cache=True)
def root_losing(tree, nn):
    """bool[B, n*n + 1]: the root's moves proven to lose.

    Marked only where some visited move is not proven to lose, so that a
    choice among the visited moves is always left.
    """
    B = tree.num_nodes.shape[0]
    out = np.zeros((B, nn + 1), np.bool_)
    for b in range(B):
        first = tree.node_first[b, ROOT]
        if first == UNEXPANDED:
            continue
        hold = False
        for e in range(first, first + tree.node_count[b, ROOT]):
            child = tree.edge_child[b, e]
            if child == UNVISITED:
                continue
            if tree.node_win[b, child] >= 0:
                out[b, tree.edge_action[b, e]] = True
            elif tree.edge_visits[b, e] > 0:
                hold = True
        if not hold:
            out[b, :] = False
    return out


@numba.njit(nogil=True, cache=True)
def sample_moves(visits, temperature, rng):
    """A move per game from visits ** (1 / T); T = 0 takes the most visited.

    Returns int64[B]; -1 where a game has no visited move.
    """
    B, A = visits.shape
    out = np.full(B, -1, np.int64)
    for b in range(B):
        best, best_n = -1, 0.0
        for a in range(A):
            if visits[b, a] > best_n:
                best, best_n = a, visits[b, a]
        if best < 0 or temperature[b] <= 0.0:
            out[b] = best
            continue
        total = 0.0
        for a in range(A):
            if visits[b, a] > 0:
                total += (visits[b, a] / best_n) ** (1.0 / temperature[b])
        r = uniform(rng, b) * total
        out[b] = best
        for a in range(A):
            if visits[b, a] > 0:
                r -= (visits[b, a] / best_n) ** (1.0 / temperature[b])
                if r < 0.0:
                    out[b] = a
                    break
    return out


@numba.njit(nogil=True, cache=True)
def gumbel_moves(tree, gumbel_score, nn, c_visit, c_scale):
    """Gumbel search's move and improved policy per tree.

    The move is the most visited considered move, ties broken by
    g + logit + sigma(Q), passing over moves proven to lose while another
    considered move is not. The policy, the training target, is
    softmax(logit + sigma(completed Q)) over all legal moves, where an
    unvisited move's Q is completed by the root's value. Returns int64[B]
    and float32[B, n*n + 1].
    """
    B = tree.num_nodes.shape[0]
    moves = np.full(B, -1, np.int64)
    policy = np.zeros((B, nn + 1), np.float32)
    for b in range(B):
        first = tree.node_first[b, ROOT]
        if first == UNEXPANDED:
            continue
        count = tree.node_count[b, ROOT]
        root_q = tree.node_value[b, ROOT] / max(tree.node_visits[b, ROOT], 1)
        max_visits = 0
        some_hold = False  # a considered move not proven to lose
        for i in range(count):
            e = first + i
            max_visits = max(max_visits, tree.edge_visits[b, e])
            child = tree.edge_child[b, e]
            if gumbel_score[b, i] > -np.inf and (child == UNVISITED or tree.node_win[b, child] < 0):
                some_hold = True
        best, best_n, best_score = -1, -1, -np.inf
        top = -np.inf
        for i in range(count):
            e = first + i
            q, n = edge_q(tree, b, e, root_q)
            s = sigma(q, max_visits, c_visit, c_scale)
            score = gumbel_score[b, i] + s
            child = tree.edge_child[b, e]
            losing = child != UNVISITED and tree.node_win[b, child] >= 0
            if (score > -np.inf and not (losing and some_hold)
                    and (n > best_n or (n == best_n and score > best_score))):
                best, best_n, best_score = tree.edge_action[b, e], n, score
            z = math.log(max(tree.edge_prior[b, e], 1e-30)) + s
            policy[b, tree.edge_action[b, e]] = z
            top = max(top, z)
        total = 0.0
        for i in range(count):
            a = tree.edge_action[b, first + i]
            policy[b, a] = math.exp(policy[b, a] - top)
            total += policy[b, a]
        for i in range(count):
            policy[b, tree.edge_action[b, first + i]] /= total
        moves[b] = best
    return moves, policy


@numba.njit(nogil=True, cache=True)
def advance(tree, actions, reuse, rng, noise_alpha, noise_fraction):
    """Moves each root down the played action, keeping that subtree.

    With reuse false, or when the move was never searched, the tree restarts
    from a lone root. actions[b] < 0 clears tree b (a new game). The kept
    subtree is moved to the front of the arrays in place: nodes and their
    edge blocks were allocated in increasing order, and a node's children
    come after it, so every entry moves down, never up.
    """
    for b in range(tree.num_nodes.shape[0]):
        child = UNVISITED
        first = tree.node_first[b, ROOT]
        if reuse and actions[b] >= 0 and first != UNEXPANDED:
            for e in range(first, first + tree.node_count[b, ROOT]):
                if tree.edge_action[b, e] == actions[b]:
                    child = tree.edge_child[b, e]
        if child == UNVISITED:
            clear_one(tree, b)
        else:
            compact(tree, b, child)
            add_noise(tree, b, rng, noise_alpha, noise_fraction)


@numba.njit(nogil=True, cache=True)
def compact(tree, b, new_root):
    """Keeps only the subtree under new_root, which becomes node 0."""
    (node_parent, node_edge, node_first, node_count, node_visits, node_value, node_win,
     node_scan, edge_action, edge_prior, edge_visits, edge_value, edge_child, num_nodes,
     num_edges) = tree
    action, prior, visits = edge_action[b], edge_prior[b], edge_visits[b]
    value, child = edge_value[b], edge_child[b]
    total = num_nodes[b]
    remap = np.full(total, -1, np.int32)
    shift = np.zeros(total, np.int32)  # old first edge - new first edge
    kept, edges = 0, 0
    for i in range(new_root, total):  # pass 1: new places
        if i == new_root or remap[node_parent[b, i]] >= 0:
            remap[i] = kept
            kept += 1
            if node_first[b, i] != UNEXPANDED:
                shift[i] = node_first[b, i] - edges
                edges += node_count[b, i]
    for i in range(new_root, total):  # pass 2: move down, ascending
        j = remap[i]
        if j < 0:
            continue
        p = node_parent[b, i]
        if i == new_root:
            node_parent[b, j] = NO_PARENT
            node_edge[b, j] = -1
        else:
            node_parent[b, j] = remap[p]
            node_edge[b, j] = node_edge[b, i] - shift[p]
        node_count[b, j] = node_count[b, i]
        node_scan[b, j] = node_scan[b, i]
        node_visits[b, j] = node_visits[b, i]
        node_value[b, j] = node_value[b, i]
        win = node_win[b, i]
        node_win[b, j] = win - shift[i] if win >= 0 else win
        old_first = node_first[b, i]
        if old_first == UNEXPANDED:
            node_first[b, j] = UNEXPANDED
            continue
        new_first = old_first - shift[i]
        node_first[b, j] = new_first
        # Unsigned indices: numba then skips its per-access wraparound check.
        src, dst = np.uint64(old_first), np.uint64(new_first)
        for k in range(np.uint64(node_count[b, i])):
            action[dst + k] = action[src + k]
            prior[dst + k] = prior[src + k]
            visits[dst + k] = visits[src + k]
            value[dst + k] = value[src + k]
            c = child[src + k]
            child[dst + k] = remap[c] if c != UNVISITED else UNVISITED
    num_nodes[b] = kept
    num_edges[b] = edges


@numba.njit(nogil=True, cache=True)
def clear(tree, mask):
    for b in range(tree.num_nodes.shape[0]):
        if mask[b]:
            clear_one(tree, b)


@numba.njit(nogil=True, cache=True)
def root_wins(tree):
    """int64[B]: a move that wins from each root (at once or proven), or -1."""
    B = tree.num_nodes.shape[0]
    out = np.full(B, -1, np.int64)
    for b in range(B):
        e = tree.node_win[b, ROOT]
        if e >= 0:
            out[b] = tree.edge_action[b, e]
    return out
