"""Batched Hex engine kernels: numpy arrays in, numpy arrays out.

Coordinates (hexzd/game/notation.py has the full table):
    cell     (r, c): row r from the top, column c from the left, 0-based
    action   r * n + c for a stone; n * n is the swap move
    Black connects the top row to the bottom row, White the left to the right.
    Neighbours of (r, c): (r, c-1) (r, c+1) (r-1, c) (r+1, c) (r-1, c+1) (r+1, c-1)

The state of B games is one array per field (the "state arrays"):
    board    int8[B, n*n]       EMPTY, BLACK or WHITE per cell
    parent   int16[B, n*n + 4]  union-find forest: cells, then the 4 edge nodes
    to_play  int8[B]            BLACK or WHITE
    winner   int8[B]            EMPTY while the game is running
    ply      int16[B]           moves played so far, the swap included

Each stone is joined to its same-coloured neighbours and to the virtual edge
nodes it touches, so the winner check after a move is two `find`s: O(alpha).
"""

import numba
import numpy as np

from .rng import below

EMPTY, BLACK, WHITE = 0, 1, 2
TOP, BOTTOM, LEFT, RIGHT = 0, 1, 2, 3  # edge nodes, stored at n*n + k
NUM_PLANES = 4  # own stones, opponent stones, on-board, swap available

# The network's input as the search sends it: one byte a cell and one for
# swap, uint8[B, n*n + 1] (codes_one; hexzd.nn.net.planes expands it to the
# NUM_PLANES planes on the evaluator's device).
CODE_EMPTY, CODE_OWN, CODE_OPPONENT = 0, 1, 2

_DR = np.array([0, 0, -1, 1, -1, 1], dtype=np.int64)  # neighbour offsets
_DC = np.array([-1, 1, 0, 0, 1, -1], dtype=np.int64)

# Kernels called once per simulation that neither allocate arrays nor keep
# them: compiled without numba's reference counting, which otherwise counts
# every array argument of every call atomically, at a cost above the work.
hot = numba.njit(nogil=True, cache=True, _nrt=False)


@numba.njit(nogil=True, cache=True, inline="always")
def side(board):
    """Board side n from a board array of n*n cells."""
    return np.int64(np.sqrt(board.shape[-1]) + 0.5)


@numba.njit(nogil=True, cache=True, inline="always")
def transpose(action, n):
    """The cell mirrored in the long diagonal: (r, c) -> (c, r)."""
    return (action % n) * n + action // n


@numba.njit(nogil=True, cache=True)
def _find(parent, b, x):
    while parent[b, x] != x:  # path halving
        parent[b, x] = parent[b, parent[b, x]]
        x = parent[b, x]
    return x


@numba.njit(nogil=True, cache=True)
def _union(parent, b, x, y):
    rx = _find(parent, b, x)
    ry = _find(parent, b, y)
    if rx != ry:
        parent[b, rx] = ry


@numba.njit(nogil=True, cache=True)
def _place(board, parent, b, n, cell, colour):
    """Puts a stone on an empty cell and joins it to its group and edges."""
    board[b, cell] = colour
    r = cell // n
    c = cell - r * n
    for k in range(6):
        rr = r + _DR[k]
        cc = c + _DC[k]
        if 0 <= rr < n and 0 <= cc < n and board[b, rr * n + cc] == colour:
            _union(parent, b, cell, rr * n + cc)
    nn = n * n
    if colour == BLACK:
        if r == 0:
            _union(parent, b, cell, nn + TOP)
        if r == n - 1:
            _union(parent, b, cell, nn + BOTTOM)
    else:
        if c == 0:
            _union(parent, b, cell, nn + LEFT)
        if c == n - 1:
            _union(parent, b, cell, nn + RIGHT)


@numba.njit(nogil=True, cache=True)
def reset_one(board, parent, to_play, winner, ply, b):
    board[b, :] = EMPTY
    for x in range(parent.shape[1]):
        parent[b, x] = x
    to_play[b] = BLACK
    winner[b] = EMPTY
    ply[b] = 0


@numba.njit(nogil=True, cache=True)
def reset(board, parent, to_play, winner, ply, mask):
    """Empties the boards of the games where mask is true."""
    for b in range(board.shape[0]):
        if mask[b]:
            reset_one(board, parent, to_play, winner, ply, b)


@numba.njit(nogil=True, cache=True)
def swap_cell(board, b):
    """The cell of the lone stone, whose transpose the swap move takes."""
    for cell in range(board.shape[1]):
        if board[b, cell] != EMPTY:
            return cell
    return -1


@numba.njit(nogil=True, cache=True)
def play_one(board, parent, to_play, winner, ply, b, action):
    """Plays one legal move in game b and updates its winner."""
    n = side(board)
    nn = n * n
    mover = to_play[b]
    if action == nn:
        # Swap: Black's stone leaves, a White stone takes the transposed cell.
        cell = swap_cell(board, b)
        board[b, cell] = EMPTY
        for x in range(parent.shape[1]):
            parent[b, x] = x
        _place(board, parent, b, n, transpose(cell, n), WHITE)
    else:
        _place(board, parent, b, n, action, mover)
        if mover == BLACK:
            if _find(parent, b, nn + TOP) == _find(parent, b, nn + BOTTOM):
                winner[b] = BLACK
        elif _find(parent, b, nn + LEFT) == _find(parent, b, nn + RIGHT):
            winner[b] = WHITE
    to_play[b] = WHITE if mover == BLACK else BLACK
    ply[b] += 1


@numba.njit(nogil=True, cache=True)
def play(board, parent, to_play, winner, ply, actions):
    """Plays actions[b] in each game b; a negative action leaves it alone."""
    for b in range(board.shape[0]):
        if actions[b] >= 0:
            play_one(board, parent, to_play, winner, ply, b, actions[b])


@numba.njit(nogil=True, cache=True, inline="always")
def swap_legal(winner, ply, b, swap):
    return swap and ply[b] == 1 and winner[b] == EMPTY


@numba.njit(nogil=True, cache=True)
def legal(board, winner, ply, swap, out):
    """out[b, a] is true where action a is legal in game b: bool[B, n*n + 1]."""
    nn = board.shape[1]
    for b in range(board.shape[0]):
        running = winner[b] == EMPTY
        for a in range(nn):
            out[b, a] = running and board[b, a] == EMPTY
        out[b, nn] = swap_legal(winner, ply, b, swap)
    return out


@numba.njit(nogil=True, cache=True)
def canonical_index(board, to_play, b, action):
    """Where the network sees `action` of game b: its policy index in [0, n*n).

    The network sees the board as the player to move, who always connects top
    to bottom: White's boards are transposed. The swap move has no empty cell
    of its own, so it is read from the cell of the stone it takes over.
    """
    n = side(board)
    if action == n * n:
        action = swap_cell(board, b)
    return action if to_play[b] == BLACK else transpose(action, n)


@numba.njit(nogil=True, cache=True)
def canonical_indices(board, to_play):
    """canonical_index of every cell of every game: int64[B, n*n].

    Reads a policy in canonical indices by cell: the network's prior for
    cell a of game b is policy[b, out[b, a]].
    """
    out = np.empty(board.shape, np.int64)
    for b in range(board.shape[0]):
        for a in range(board.shape[1]):
            out[b, a] = canonical_index(board, to_play, b, a)
    return out


@numba.njit(nogil=True, cache=True)
def features_one(board, to_play, ply, b, swap, out, o):
    """Writes game b's canonical planes into out[o]: float32[4, n, n]."""
    n = side(board)
    me = to_play[b]
    white = me == WHITE
    can_swap = 1.0 if (swap and ply[b] == 1) else 0.0
    for r in range(n):
        for c in range(n):
            stone = board[b, c * n + r] if white else board[b, r * n + c]
            out[o, 0, r, c] = 1.0 if stone == me else 0.0
            out[o, 1, r, c] = 1.0 if (stone != EMPTY and stone != me) else 0.0
            out[o, 2, r, c] = 1.0
            out[o, 3, r, c] = can_swap


@numba.njit(nogil=True, cache=True)
def codes_one(board, to_play, ply, b, swap, out, o):
    """Writes game b's compact network input into out[o]: uint8[n*n + 1].

    The one definition of the layout. out[o, r*n + c] is the canonical cell
    (r, c), as the player to move sees it (White's board transposed, as in
    features_one): CODE_EMPTY, CODE_OWN for a stone of the player to move,
    CODE_OPPONENT for the other's. out[o, n*n] is 1 when the swap move is
    available, else 0. Plane k of features_one is, cell by cell: plane 0
    code == CODE_OWN, plane 1 code == CODE_OPPONENT, plane 2 all ones,
    plane 3 the swap byte.
    """
    n = side(board)
    me = to_play[b]
    white = me == WHITE
    for r in range(n):
        for c in range(n):
            stone = board[b, c * n + r] if white else board[b, r * n + c]
            if stone == EMPTY:
                out[o, r * n + c] = CODE_EMPTY
            elif stone == me:
                out[o, r * n + c] = CODE_OWN
            else:
                out[o, r * n + c] = CODE_OPPONENT
    out[o, n * n] = 1 if (swap and ply[b] == 1) else 0


@numba.njit(nogil=True, cache=True)
def codes(board, to_play, ply, swap, out):
    """The compact network input of every game: uint8[B, n*n + 1] (codes_one)."""
    for b in range(board.shape[0]):
        codes_one(board, to_play, ply, b, swap, out, b)
    return out


@numba.njit(nogil=True, cache=True)
def features(board, to_play, ply, swap, out):
    """Canonical input planes for every game: float32[B, 4, n, n].

    Plane 0 holds the stones of the player to move, plane 1 the opponent's,
    plane 2 is all ones (so that zero padding marks the border), plane 3 is
    all ones when the swap move is available.
    """
    for b in range(board.shape[0]):
        features_one(board, to_play, ply, b, swap, out, b)
    return out


@numba.njit(nogil=True, cache=True)
def rotate180(planes, policy):
    """The 180-degree rotation of planes [B, C, n, n] and policies [B, n*n].

    Rotation keeps every edge with its owner, so the labels stay valid.
    """
    n = planes.shape[2]
    nn = n * n
    out_planes = np.empty_like(planes)
    out_policy = np.empty_like(policy)
    for b in range(planes.shape[0]):
        for k in range(planes.shape[1]):
            for r in range(n):
                for c in range(n):
                    out_planes[b, k, r, c] = planes[b, k, n - 1 - r, n - 1 - c]
        for a in range(nn):
            out_policy[b, a] = policy[b, nn - 1 - a]
    return out_planes, out_policy


@numba.njit(nogil=True, cache=True)
def random_moves(board, winner, rng):
    """A uniformly random empty cell per running game, -1 for finished ones."""
    out = np.full(board.shape[0], -1, np.int64)
    for b in range(board.shape[0]):
        if winner[b] != EMPTY:
            continue
        count = 0
        for x in range(board.shape[1]):
            count += board[b, x] == EMPTY
        k = below(rng, b, count)
        for x in range(board.shape[1]):
            if board[b, x] == EMPTY:
                if k == 0:
                    out[b] = x
                    break
                k -= 1
    return out


@hot
def _deal(board, to_play, b, rng, empty):
    """Deals game b's empty cells for a random fill; returns (count, k).

    The count empty cells go to empty[:count] as r << 5 | c, and a uniformly
    random k = ceil(count / 2) of them to empty[:k]: the player to move's
    share, the same as when the players alternate over a shuffled order.
    Only the share is drawn (Fisher-Yates stopped halfway).
    """
    n = side(board)
    count = 0
    for r in range(n):
        for c in range(n):
            empty[count] = (r << 5) | c  # kept only where the cell is empty
            count += board[b, r * n + c] == EMPTY
    k = (count + 1) // 2
    for i in range(k):
        j = i + below(rng, b, count - i)
        v = empty[j]
        empty[j] = empty[i]
        empty[i] = v
    return count, k


@hot
def _reach_row(rows, reach, n, r):
    """Grows reach[r] from its neighbour rows, then along row r; did it grow?

    (r, c) touches (r-1, c), (r-1, c+1), (r+1, c-1) and (r+1, c).
    """
    own = rows[r]
    g = reach[r]
    if r > 0:
        g |= (reach[r - 1] | (reach[r - 1] >> 1)) & own
    if r < n - 1:
        g |= (reach[r + 1] | (reach[r + 1] << 1)) & own
    if g == reach[r]:
        return False
    while True:
        grown = g | (((g << 1) | (g >> 1)) & own)
        if grown == g:
            break
        g = grown
    reach[r] = g
    return True


@hot
def black_joins(rows, reach, n):
    """Does Black join the top row to the bottom on a full board?

    rows[r] has bit c set where (r, c) is Black; reach[r] receives the
    stones joined to the top edge. Whole rows grow at a time, in sweeps down
    and up until none grows: word operations instead of a flood fill's look
    at each stone's neighbours. On a full board exactly one player is
    connected, so False means that White is.
    """
    reach[0] = rows[0]  # the top row touches the edge
    for r in range(1, n):
        reach[r] = 0
    while True:
        grew = False
        for r in range(1, n):
            grew |= _reach_row(rows, reach, n, r)
        if reach[n - 1] != 0:
            return True
        if not grew:
            return False
        grew = False
        for r in range(n - 2, 0, -1):
            grew |= _reach_row(rows, reach, n, r)
        if not grew:
            return False


@hot
def fill_value(board, to_play, winner, b, rng, playouts, empty, rows, reach):
    """Mean result of `playouts` random fills of game b, for the player to move.

    A fill puts stones on the empty cells in a random order: players alternate, so
    the player to move gets half the empty cells (rounded up), drawn
    uniformly (_deal). Hex has no draws, so one winner check at the end,
    read from row bitmasks (black_joins), decides the game. Scratch from
    fill_scratch.
    """
    me = to_play[b]
    if winner[b] != EMPTY:
        return 1.0 if winner[b] == me else -1.0
    n = side(board)
    total = 0.0
    for _ in range(playouts):
        count, k = _deal(board, to_play, b, rng, empty)
        for r in range(n):
            row = 0
            for c in range(n):
                row |= (board[b, r * n + c] == BLACK) << c
            rows[r] = row
        lo, hi = (0, k) if me == BLACK else (k, count)  # Black's share
        for i in range(lo, hi):
            v = empty[i]
            rows[v >> 5] |= 1 << (v & 31)
        total += 1.0 if black_joins(rows, reach, n) == (me == BLACK) else -1.0
    return total / playouts


@numba.njit(nogil=True, cache=True)
def fill_scratch(n):
    """The scratch arrays that fill_value needs: empty, rows, reach."""
    return np.empty(n * n, np.int16), np.empty(n, np.int64), np.empty(n, np.int64)


@numba.njit(nogil=True, cache=True)
def fill_playouts(board, to_play, winner, rng, playouts):
    """Mean result of `playouts` random fills per game, for the player to move.

    Returns float32[B] in [-1, 1]: +1 when every playout is won by the player
    to move in that game.
    """
    empty, rows, reach = fill_scratch(side(board))
    out = np.empty(board.shape[0], np.float32)
    for b in range(board.shape[0]):
        out[b] = fill_value(board, to_play, winner, b, rng, playouts, empty, rows, reach)
    return out


@numba.njit(nogil=True, cache=True)
def replay(actions, policies, n, swap):
    """Rebuilds the training positions of one recorded game.

    actions: int16[T] the moves; policies: float32[T, n*n + 1] the search
    distribution before each move, over actions. Returns the canonical planes
    float32[T, 4, n, n], the policies in canonical indices float32[T, n*n],
    the player to move int8[T] and the final winner. When move t is illegal
    the winner is -1 - t and the outputs hold only the first t positions.
    """
    nn = n * n
    count = actions.shape[0]
    board = np.zeros((1, nn), np.int8)
    parent = np.empty((1, nn + 4), np.int16)
    to_play = np.empty(1, np.int8)
    winner = np.empty(1, np.int8)
    ply = np.empty(1, np.int16)
    reset_one(board, parent, to_play, winner, ply, 0)
    planes = np.zeros((count, NUM_PLANES, n, n), np.float32)
    policy = np.zeros((count, nn), np.float32)
    movers = np.zeros(count, np.int8)
    for t in range(count):
        a = actions[t]
        ok = winner[0] == EMPTY and 0 <= a <= nn
        if ok and a == nn:
            ok = swap_legal(winner, ply, 0, swap)
        elif ok:
            ok = board[0, a] == EMPTY
        if not ok:
            return planes[:t], policy[:t], movers[:t], -1 - t
        features_one(board, to_play, ply, 0, swap, planes, t)
        can_swap = swap_legal(winner, ply, 0, swap)
        for x in range(nn + 1):
            if policies[t, x] > 0.0 and (x < nn or can_swap):
                policy[t, canonical_index(board, to_play, 0, x)] += policies[t, x]
        movers[t] = to_play[0]
        play_one(board, parent, to_play, winner, ply, 0, a)
    return planes, policy, movers, np.int64(winner[0])
