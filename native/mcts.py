"""Batched MCTS kernels: B independent search trees stored as arrays.

Notation follows the AlphaGo Zero paper: N visits, W total value, Q = W / N,
P the prior, and PUCT picks argmax Q + c_puct * P * sqrt(N_parent) / (1 + N).

A tree is a `Tree` of arrays, one per field, in the style of mctx. Nodes are
positions; edges are the legal moves of an expanded node, stored in one
contiguous block per node, with each move's N and W beside its prior so
that PUCT reads one block of memory front to back. Memory grows with the
simulations done: each simulation adds one node (26 bytes) and, when it
expands it, one edge per legal move (18 bytes each). On 9x9 that is at most
26 + 82 * 18 = 1,502 bytes per simulation; the Python layer doubles the
capacity when it runs short.

One simulation is two kernel calls for the whole batch:
    select        descends each tree by PUCT to one leaf, plays the moves on a
                  copy of the root position and writes the leaf's canonical
                  planes into a [B, 4, n, n] buffer;
    expand_backup takes the evaluator's logits [B, n*n] and values [B], adds
                  the leaf's edges and backs the value up to the root.
"""
import math
from collections import namedtuple

import numba
import numpy as np

from .engine import (
    BLACK,
    EMPTY,
    canonical_index,
    copy_one,
    features_one,
    playout_scratch,
    playout_value,
    play_one,
    side,
    edge_roots,
    swap_legal,
    transpose,
    wins_at,
)
from .rng import gamma, gumbel, uniform

ROOT = 0  # the root is always node 0: advance() moves a reused subtree down
NO_PARENT = -1
UNEXPANDED = -1  # node_first of a node whose edges are not made yet
UNVISITED = -1  # edge_child of a move never tried
NO_WIN = -1  # node_win of a node with no winning move
NODE_BYTES = 4 + 4 + 4 + 2 + 4 + 4 + 4
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
        "node_win",  # int32[B, N]      an edge that wins at once, or NO_WIN
        "edge_action",  # int16[B, E]   the move
        "edge_prior",  # float32[B, E]  P
        "edge_visits",  # int32[B, E]   N of the move
        "edge_value",  # float32[B, E]  W of the move, for the player making it
        "edge_child",  # int32[B, E]    the node it leads to, or UNVISITED
        "num_nodes",  # int32[B]        nodes in use
        "num_edges",  # int32[B]        edges in use
    ],
)

State = namedtuple("State", ["board", "parent", "to_play", "winner", "ply"])  # see engine.py


@numba.njit(nogil=True, cache=True)
def clear_one(tree, b):
    """Makes tree b a lone, unexpanded root."""
    tree.node_parent[b, ROOT] = NO_PARENT
    tree.node_edge[b, ROOT] = -1
    tree.node_first[b, ROOT] = UNEXPANDED
    tree.node_count[b, ROOT] = 0
    tree.node_visits[b, ROOT] = 0
    tree.node_value[b, ROOT] = 0.0
    tree.node_win[b, ROOT] = NO_WIN
    tree.num_nodes[b] = 1
    tree.num_edges[b] = 0


@numba.njit(nogil=True, cache=True, inline="always")
def edge_q(tree, b, e, fpu_q):
    """(Q, N) of a move, from the view of the player making it."""
    n = tree.edge_visits[b, e]
    if n == 0:
        return fpu_q, 0
    return tree.edge_value[b, e] / n, n


@numba.njit(nogil=True, cache=True)
def puct_edge(tree, b, node, c_puct, fpu_reduction):
    """The edge that maximises Q + U; unvisited moves get the parent's Q minus the FPU."""
    visits = tree.node_visits[b, node]
    parent_q = tree.node_value[b, node] / visits if visits > 0 else 0.0
    fpu_q = parent_q - fpu_reduction
    scale = c_puct * math.sqrt(max(visits, 1))
    first = tree.node_first[b, node]
    best, best_score = first, -np.inf
    for e in range(first, first + tree.node_count[b, node]):
        q, n = edge_q(tree, b, e, fpu_q)
        score = q + scale * tree.edge_prior[b, e] / (1 + n)
        if score > best_score:
            best, best_score = e, score
    return best


@numba.njit(nogil=True, cache=True, inline="always")
def sigma(q, max_visits, c_visit, c_scale):
    """Gumbel search's monotone transform of a Q in [-1, 1] (Danihelka et al. 2022)."""
    return (c_visit + max_visits) * c_scale * (q + 1.0) * 0.5


@numba.njit(nogil=True, cache=True)
def gumbel_edge(tree, b, gumbel_score, table, c_visit, c_scale):
    """Sequential halving at the root: the considered move due for a visit.

    `table[m, k]` is the visit count that simulation k wants a move to have
    when m moves are considered (get_table_of_considered_visits in mctx).
    Among the considered moves with that many visits, the one with the
    highest g + logit + sigma(Q) is taken. gumbel_score[b, i] holds g + logit
    of root edge i, or -inf for moves not considered.
    """
    first = tree.node_first[b, ROOT]
    count = tree.node_count[b, ROOT]
    considered = 0
    max_visits = 0
    for i in range(count):
        if gumbel_score[b, i] > -np.inf:
            considered += 1
        max_visits = max(max_visits, tree.edge_visits[b, first + i])
    k = min(tree.node_visits[b, ROOT] - 1, table.shape[1] - 1)
    target = table[min(considered, table.shape[0] - 1), k]
    root_q = tree.node_value[b, ROOT] / max(tree.node_visits[b, ROOT], 1)
    best, best_score = -1, -np.inf
    fallback, fallback_visits = first, 1 << 30
    for i in range(count):
        if gumbel_score[b, i] == -np.inf:
            continue
        q, n = edge_q(tree, b, first + i, root_q)
        if n < fallback_visits:
            fallback, fallback_visits = first + i, n
        if n == target:
            score = gumbel_score[b, i] + sigma(q, max_visits, c_visit, c_scale)
            if score > best_score:
                best, best_score = first + i, score
    return best if best >= 0 else fallback


@numba.njit(nogil=True, cache=True)
def select_one(tree, roots, leaves, b, c_puct, fpu_reduction, gumbel_score, table, c_visit, c_scale):
    """Descends tree b to a new leaf, playing its moves on leaves[b]. Returns the leaf."""
    copy_one(roots.board, roots.parent, roots.to_play, roots.winner, roots.ply, b,
             leaves.board, leaves.parent, leaves.to_play, leaves.winner, leaves.ply, b)
    node = ROOT
    while leaves.winner[b] == EMPTY and tree.node_first[b, node] != UNEXPANDED:
        if tree.node_win[b, node] != NO_WIN:
            e = tree.node_win[b, node]  # a won position needs no search
        elif table.shape[0] > 0 and node == ROOT:
            e = gumbel_edge(tree, b, gumbel_score, table, c_visit, c_scale)
        else:
            e = puct_edge(tree, b, node, c_puct, fpu_reduction)
        play_one(leaves.board, leaves.parent, leaves.to_play, leaves.winner, leaves.ply,
                 b, tree.edge_action[b, e])
        child = tree.edge_child[b, e]
        if child == UNVISITED:
            return new_node(tree, b, node, e)
        node = child
    return node


@numba.njit(nogil=True, cache=True)
def select(tree, roots, leaves, leaf, swap, c_puct, fpu_reduction,
           gumbel_score, table, c_visit, c_scale, planes, write_planes):
    """Descends every tree to one new leaf; see the module docstring.

    roots, leaves: State of B games; leaves receives the leaf positions.
    leaf: int32[B] receives the leaf node of each tree. planes: float32[B, 4,
    n, n] receives their canonical planes when write_planes is true. An empty
    table turns Gumbel root selection off.
    """
    for b in range(tree.num_nodes.shape[0]):
        leaf[b] = select_one(tree, roots, leaves, b, c_puct, fpu_reduction,
                             gumbel_score, table, c_visit, c_scale)
        if write_planes:
            features_one(leaves.board, leaves.to_play, leaves.ply, b, swap, planes, b)


@numba.njit(nogil=True, cache=True)
def new_node(tree, b, parent, edge):
    node = tree.num_nodes[b]
    tree.num_nodes[b] = node + 1
    tree.node_parent[b, node] = parent
    tree.node_edge[b, node] = edge
    tree.node_first[b, node] = UNEXPANDED
    tree.node_count[b, node] = 0
    tree.node_visits[b, node] = 0
    tree.node_value[b, node] = 0.0
    tree.node_win[b, node] = NO_WIN
    tree.edge_child[b, edge] = node
    return node


@numba.njit(nogil=True, cache=True)
def expand(tree, leaves, b, node, logits, swap, flat_prior):
    """Adds an edge per legal move, with priors softmax(logits) over them.

    flat_prior=True skips the logits: every move gets the same prior, as in
    plain MCTS with random rollouts.

    It also notes a move that wins at once, if there is one: search then
    always takes it, and the node is worth a sure win to the player to move.
    """
    nn = leaves.board.shape[1]
    n = side(leaves.board)
    mover = leaves.to_play[b]
    first = tree.num_edges[b]
    count = 0
    stones = 0  # the mover's; fewer than n - 1 cannot win at once
    top = -np.inf
    for a in range(nn + 1):
        if a < nn:
            stone = leaves.board[b, a]
            stones += stone == mover
            if stone != EMPTY:
                continue
            logit = 0.0 if flat_prior else logits[b, a if mover == BLACK else transpose(a, n)]
        elif swap_legal(leaves.winner, leaves.ply, b, swap):
            logit = 0.0 if flat_prior else logits[b, canonical_index(leaves.board, leaves.to_play, b, a)]
        else:
            continue
        e = first + count
        tree.edge_action[b, e] = a
        tree.edge_prior[b, e] = logit
        tree.edge_child[b, e] = UNVISITED
        tree.edge_visits[b, e] = 0
        tree.edge_value[b, e] = 0.0
        top = max(top, logit)
        count += 1
    if stones >= n - 1:
        root_a, root_b = edge_roots(leaves.parent, b, n, mover)
        for e in range(first, first + count):
            a = tree.edge_action[b, e]
            if a < nn and wins_at(leaves.board, leaves.parent, b, n, a, mover, root_a, root_b):
                tree.node_win[b, node] = e
                break
    if flat_prior:
        for e in range(first, first + count):
            tree.edge_prior[b, e] = 1.0 / count
    else:
        total = 0.0
        for e in range(first, first + count):
            p = math.exp(tree.edge_prior[b, e] - top)
            tree.edge_prior[b, e] = p
            total += p
        for e in range(first, first + count):
            tree.edge_prior[b, e] /= total
    tree.node_first[b, node] = first
    tree.node_count[b, node] = count
    tree.num_edges[b] = first + count


@numba.njit(nogil=True, cache=True)
def add_noise(tree, b, rng, alpha, fraction):
    """Mixes Dirichlet(alpha) noise into the root's priors (AlphaZero)."""
    first = tree.node_first[b, ROOT]
    count = tree.node_count[b, ROOT]
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
        p = tree.edge_prior[b, first + i]
        tree.edge_prior[b, first + i] = (1.0 - fraction) * p + fraction * noise[i] / total


@numba.njit(nogil=True, cache=True)
def start_gumbel(tree, b, rng, gumbel_score, considered, sample):
    """Draws g for each root move and keeps the `considered` best g + logit.

    With sample false, g is zero: the deterministic choice used for
    evaluation. Moves not considered get -inf.
    """
    first = tree.node_first[b, ROOT]
    count = tree.node_count[b, ROOT]
    gumbel_score[b, :] = -np.inf
    for i in range(count):
        g = gumbel(rng, b) if sample else 0.0
        gumbel_score[b, i] = g + math.log(max(tree.edge_prior[b, first + i], 1e-30))
    m = min(considered, count)
    order = np.argsort(-gumbel_score[b, :count])
    for j in range(m, count):
        gumbel_score[b, order[j]] = -np.inf


@numba.njit(nogil=True, cache=True)
def expand_backup_one(tree, leaves, b, node, logits, flat_prior, value, swap, rng,
                      noise_alpha, noise_fraction, gumbel_score, gumbel_considered, gumbel_sample):
    """Expands leaf `node` of tree b and backs its value up (see expand_backup)."""
    if leaves.winner[b] != EMPTY:
        value = -1.0
    else:
        if tree.node_first[b, node] == UNEXPANDED:
            expand(tree, leaves, b, node, logits, swap, flat_prior)
            if node == ROOT:
                if gumbel_considered > 0:
                    start_gumbel(tree, b, rng, gumbel_score, gumbel_considered, gumbel_sample)
                else:
                    add_noise(tree, b, rng, noise_alpha, noise_fraction)
        if tree.node_win[b, node] != NO_WIN:
            value = 1.0  # the exact value beats the evaluator's guess
    backup(tree, b, node, value)


@numba.njit(nogil=True, cache=True)
def expand_backup(tree, leaves, leaf, logits, values, swap, rng,
                  noise_alpha, noise_fraction, gumbel_score, gumbel_considered, gumbel_sample):
    """Expands each leaf with the evaluator's output and backs its value up.

    logits float32[B, n*n] and values float32[B] are the network's view of the
    leaf, for the player to move there. A finished game's leaf is worth -1 to
    the player to move: the previous move won. A root expanded here gets
    Dirichlet noise, or its Gumbel draw when gumbel_considered > 0.
    """
    for b in range(tree.num_nodes.shape[0]):
        expand_backup_one(tree, leaves, b, leaf[b], logits, False, values[b], swap, rng,
                          noise_alpha, noise_fraction, gumbel_score, gumbel_considered, gumbel_sample)


@numba.njit(nogil=True, cache=True)
def search_rollouts(tree, roots, leaves, sims, swap, c_puct, fpu_reduction, rng, playouts,
                    noise_alpha, noise_fraction, gumbel_score, table, gumbel_considered,
                    gumbel_sample, c_visit, c_scale):
    """`sims` simulations per tree with random-fill values and uniform priors.

    The same steps as select + expand_backup, but a tree's simulations run
    back to back: random rollouts need no batch for an accelerator, and a
    tree that stays in the CPU's cache searches several times faster than B
    trees visited in turn. The tree arrays must have room for `sims` steps.
    """
    no_logits = np.zeros((0, 0), np.float32)
    cells, empty, stack, seen = playout_scratch(side(leaves.board))
    for b in range(tree.num_nodes.shape[0]):
        for _ in range(sims):
            node = select_one(tree, roots, leaves, b, c_puct, fpu_reduction,
                              gumbel_score, table, c_visit, c_scale)
            value = playout_value(leaves.board, leaves.to_play, leaves.winner, b, rng, playouts,
                                  cells, empty, stack, seen)
            expand_backup_one(tree, leaves, b, node, no_logits, True, value, swap, rng,
                              noise_alpha, noise_fraction, gumbel_score, gumbel_considered,
                              gumbel_sample)


@numba.njit(nogil=True, cache=True)
def backup(tree, b, node, v):
    """Adds value v (for the player to move at `node`) along the path to the root."""
    while node != NO_PARENT:
        tree.node_visits[b, node] += 1
        tree.node_value[b, node] += v
        v = -v
        e = tree.node_edge[b, node]
        if e >= 0:
            tree.edge_visits[b, e] += 1
            tree.edge_value[b, e] += v
        node = tree.node_parent[b, node]


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
    g + logit + sigma(Q). The policy, the training target, is
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
        for e in range(first, first + count):
            max_visits = max(max_visits, tree.edge_visits[b, e])
        best, best_n, best_score = -1, -1, -np.inf
        top = -np.inf
        for i in range(count):
            e = first + i
            q, n = edge_q(tree, b, e, root_q)
            s = sigma(q, max_visits, c_visit, c_scale)
            score = gumbel_score[b, i] + s
            if score > -np.inf and (n > best_n or (n == best_n and score > best_score)):
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
    total = tree.num_nodes[b]
    remap = np.full(total, -1, np.int32)
    shift = np.zeros(total, np.int32)  # old first edge - new first edge
    kept, edges = 0, 0
    for i in range(new_root, total):  # pass 1: new places
        if i == new_root or remap[tree.node_parent[b, i]] >= 0:
            remap[i] = kept
            kept += 1
            if tree.node_first[b, i] != UNEXPANDED:
                shift[i] = tree.node_first[b, i] - edges
                edges += tree.node_count[b, i]
    for i in range(new_root, total):  # pass 2: move down, ascending
        j = remap[i]
        if j < 0:
            continue
        p = tree.node_parent[b, i]
        if i == new_root:
            tree.node_parent[b, j] = NO_PARENT
            tree.node_edge[b, j] = -1
        else:
            tree.node_parent[b, j] = remap[p]
            tree.node_edge[b, j] = tree.node_edge[b, i] - shift[p]
        tree.node_count[b, j] = tree.node_count[b, i]
        tree.node_visits[b, j] = tree.node_visits[b, i]
        tree.node_value[b, j] = tree.node_value[b, i]
        win = tree.node_win[b, i]
        tree.node_win[b, j] = win - shift[i] if win != NO_WIN else NO_WIN
        old_first = tree.node_first[b, i]
        if old_first == UNEXPANDED:
            tree.node_first[b, j] = UNEXPANDED
            continue
        new_first = old_first - shift[i]
        tree.node_first[b, j] = new_first
        for k in range(tree.node_count[b, i]):
            tree.edge_action[b, new_first + k] = tree.edge_action[b, old_first + k]
            tree.edge_prior[b, new_first + k] = tree.edge_prior[b, old_first + k]
            tree.edge_visits[b, new_first + k] = tree.edge_visits[b, old_first + k]
            tree.edge_value[b, new_first + k] = tree.edge_value[b, old_first + k]
            c = tree.edge_child[b, old_first + k]
            tree.edge_child[b, new_first + k] = remap[c] if c != UNVISITED else UNVISITED
    tree.num_nodes[b] = kept
    tree.num_edges[b] = edges


@numba.njit(nogil=True, cache=True)
def clear(tree, mask):
    for b in range(tree.num_nodes.shape[0]):
        if mask[b]:
            clear_one(tree, b)


@numba.njit(nogil=True, cache=True)
def root_wins(tree):
    """int64[B]: a move that wins at once from each root, or -1."""
    B = tree.num_nodes.shape[0]
    out = np.full(B, -1, np.int64)
    for b in range(B):
        e = tree.node_win[b, ROOT]
        if e != NO_WIN:
            out[b] = tree.edge_action[b, e]
    return out
