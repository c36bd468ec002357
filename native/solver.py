"""An exact Hex solver for small boards: boolean negamax over bitmasks.

A position is two int64 bitmasks, bit r*n + c set where Black (or White)
has a stone, and the player to move; n*n <= MAX_CELLS (n <= 7) so that bit
63 stays free. The conventions are native/board.py's: Black joins the top
row to the bottom, White the left column to the right, and the neighbours
of (r, c) are (r, c-1) (r, c+1) (r-1, c) (r+1, c) (r-1, c+1) (r+1, c-1).
No swap rule.

Hex has no draws, so a position is won or lost for the player to move, and
alpha-beta shrinks to its one-bit form: a node stops at its first winning
move. At each node ("me" to move):
  1. a cell that joins my two edges at once wins;
  2. the opponent's cells that would join theirs (their threats): with two,
     I lose, since one stone blocks one and a block never joins my edges
     (step 1 would have found it); with one, that cell is my only move;
  3. a chain of bridges that joins either player's edges (see _virtual)
     decides the position, whoever is to move;
  4. semi-connections (see _semis): a cell after which I have a bridge
     chain wins; a cell after which the opponent would have one is a threat
     of theirs, and my move must fall on it or in its chain;
  5. otherwise the empty cells nearest the centre first, where Hex is won,
     and only those in the must-play region (below).
Threats take two flood fills per player, whole bitmasks at a time: an empty
cell wins when it touches the groups of both edges.

Every result comes with its carrier: empty cells such that the winner still
wins when the loser owns every other empty cell (a proof's support, as in
Hayward et al.'s Hex solvers). When my move x loses to a strategy on carrier
C, a move y outside C loses to the same strategy, so only cells inside every
such C are left to try: the must-play region. A loss's carrier is the union
of the moves tried and their carriers, and of the opponent's threats that
shrank the region; a win's is the winning move and the carrier below it; a
bridge chain's is its bridges' cells.

What each step is worth on the empty 5x5 board, on one core: plain
alpha-beta with the table, over ten minutes; with the must-play region,
6 s (35M nodes); with bridge chains, 0.4 s (1.5M nodes); with
semi-connections, 0.04 s (42k nodes). On 20 positions of 7x7 games between
strong snapshots, 27 cells empty: 70 s without semi-connections, 1.1 s with.

The transposition table keeps exact results and their carriers, keyed by
the whole position (no false hits) in replace-always slots: a `Table` of
arrays, one per field. A position and its 180-degree turn share a key, since
the turn keeps each player's edges.
"""

from collections import namedtuple

import numba
import numpy as np

from .board import BLACK, EMPTY, WHITE

MAX_CELLS = 63  # bit 63 of a key holds the player to move
UNKNOWN, WON, LOST = 0, 1, 2  # table value: the result for the player to move
WHITE_TO_PLAY = np.int64(-(2**63))  # bit 63, or-ed into the White key
FULL, NOT_FIRST, NOT_LAST, TOP, BOTTOM, LEFT, RIGHT = range(7)  # the rows of masks(n)
NODES = 0  # stats[NODES]: positions searched, table hits and threat checks included

Table = namedtuple(
    "Table",
    [
        "black",  # int64[S]    Black's stones in the slot's position (turned: see _key)
        "white",  # int64[S]    White's stones, or-ed with WHITE_TO_PLAY when White moves
        "value",  # int8[S]     UNKNOWN (an empty slot), WON or LOST for the player to move
        "carrier",  # int64[S]  the winner's carrier, in the same turn as the key
    ],
)


def new_table(bits: int = 22) -> Table:
    """An empty table of 2**bits slots, 25 bytes each (2**22: 105 MB, room for 5x5)."""
    size = 1 << bits
    return Table(np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, np.int8), np.zeros(size, np.int64))


@numba.njit(nogil=True, cache=True)
def masks(n):
    """int64[7]: the masks of an n x n board, indexed FULL .. RIGHT."""
    out = np.zeros(7, np.int64)
    for r in range(n):
        for c in range(n):
            bit = np.int64(1) << (r * n + c)
            out[FULL] |= bit
            if c != 0:
                out[NOT_FIRST] |= bit
            if c != n - 1:
                out[NOT_LAST] |= bit
            if r == 0:
                out[TOP] |= bit
            if r == n - 1:
                out[BOTTOM] |= bit
            if c == 0:
                out[LEFT] |= bit
            if c == n - 1:
                out[RIGHT] |= bit
    return out


@numba.njit(nogil=True, cache=True)
def centre_order(n):
    """int64[n*n]: the cells nearest the centre first, on the real hex grid.

    Cell (r, c) sits at (c + r/2, r * sqrt(3)/2); ties go to the lower index,
    so the order is the same on every machine.
    """
    nn = n * n
    key = np.empty(nn, np.float64)
    mid = (n - 1) / 2.0
    for r in range(n):
        for c in range(n):
            x = (c - mid) + (r - mid) / 2.0
            y = (r - mid) * 0.8660254037844386
            key[r * n + c] = np.round(x * x + y * y, 6) * 1024.0 + r * n + c
    return np.argsort(key)


@numba.njit(nogil=True, cache=True, inline="always")
def _neighbours(x, n, m):
    """The cells next to any cell of the bitmask x."""
    out = ((x >> 1) & m[NOT_LAST]) | ((x << 1) & m[NOT_FIRST]) | (x >> n) | (x << n)
    out |= ((x >> (n - 1)) & m[NOT_FIRST]) | ((x << (n - 1)) & m[NOT_LAST])
    return out & m[FULL]


@numba.njit(nogil=True, cache=True)
def _spread(seed, stones, n, m):
    """The stones joined to the seed stones: a flood fill, a bitmask at a time."""
    reach = seed & stones
    while True:
        grown = reach | (_neighbours(reach, n, m) & stones)
        if grown == reach:
            return reach
        reach = grown


@numba.njit(nogil=True, cache=True, inline="always")
def _edges(colour, m):
    """The two edges that `colour` joins, as masks."""
    if colour == BLACK:
        return m[TOP], m[BOTTOM]
    return m[LEFT], m[RIGHT]


@numba.njit(nogil=True, cache=True)
def connected(stones, colour, n, m):
    """Do `colour`'s stones join its two edges?"""
    a, b = _edges(colour, m)
    return (_spread(a, stones, n, m) & b) != 0


@numba.njit(nogil=True, cache=True)
def threats(stones, empty, colour, n, m):
    """The empty cells where one `colour` stone would join its two edges."""
    a, b = _edges(colour, m)
    touch_a = _neighbours(_spread(a, stones, n, m), n, m) | a
    touch_b = _neighbours(_spread(b, stones, n, m), n, m) | b
    return empty & touch_a & touch_b


@numba.njit(nogil=True, cache=True, inline="always")
def _slot(black, white, size):
    """The table slot of a position: a 64-bit mix of its two keys."""
    h = np.uint64(black) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(white) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(size - 1))


@numba.njit(nogil=True, cache=True, inline="always")
def _swap_bits(v, shift, mask):
    """Swaps the bit groups of v picked by mask with those `shift` above them."""
    return ((v >> np.uint64(shift)) & np.uint64(mask)) | ((v & np.uint64(mask)) << np.uint64(shift))


@numba.njit(nogil=True, cache=True, inline="always")
def _rotate(x, nn):
    """The bitmask x turned 180 degrees: cell i to cell nn - 1 - i (bit reversal)."""
    v = np.uint64(x)
    v = _swap_bits(v, 1, 0x5555555555555555)
    v = _swap_bits(v, 2, 0x3333333333333333)
    v = _swap_bits(v, 4, 0x0F0F0F0F0F0F0F0F)
    v = _swap_bits(v, 8, 0x00FF00FF00FF00FF)
    v = _swap_bits(v, 16, 0x0000FFFF0000FFFF)
    v = (v >> np.uint64(32)) | (v << np.uint64(32))
    return np.int64(v >> np.uint64(64 - nn))


@numba.njit(nogil=True, cache=True, inline="always")
def _key(black, white, me, nn):
    """The table key of a position: (black, white | mover bit, turned?).

    A position and its 180-degree turn have the same value (each player
    keeps its edges), so both share the key of the smaller of the two.
    """
    rb, rw = _rotate(black, nn), _rotate(white, nn)
    turned = rb < black or (rb == black and rw < white)
    if turned:
        black, white = rb, rw
    return black, white | WHITE_TO_PLAY if me == WHITE else white, turned


@numba.njit(nogil=True, cache=True, inline="always")
def _two(x):
    """Does the bitmask x hold two cells or more?"""
    return (x & (x - 1)) != 0


@numba.njit(nogil=True, cache=True)
def _nodes(stones, colour, n, m, scratch):
    """The nodes of `colour`'s bridge chains in scratch, and their count.

    Nodes are the two edges and the groups of stones: scratch[0] holds a
    node's stones (none for an edge), scratch[1] the cells next to it.
    """
    a, b = _edges(colour, m)
    cells, touch = scratch[0], scratch[1]
    cells[0], touch[0], cells[1], touch[1] = 0, a, 0, b
    k, rest = 2, stones
    while rest != 0:
        g = _spread(rest & -rest, stones, n, m)
        cells[k], touch[k] = g, _neighbours(g, n, m)
        rest &= ~g
        k += 1
    return k


@numba.njit(nogil=True, cache=True)
def _chain(k, empty, scratch):
    """The carrier of a bridge chain joining nodes 0 and 1 of the first k, or 0 if none is found.

    A group on an edge is joined to it; two nodes that share two empty
    neighbours are joined by a bridge (for an edge, its cells next to the
    group: edge template II). A path whose bridges have disjoint carriers
    wins against any defence: an intrusion takes one cell of one bridge, and
    the other cell restores it. Breadth-first search finds a path and its
    carriers are taken greedily, so a chain may be missed, never invented.
    """
    cells, touch, parent, queue = scratch[0], scratch[1], scratch[2], scratch[3]
    parent[:k] = -1
    parent[0] = 0
    queue[0], head, tail = 0, 0, 1
    while head < tail and parent[1] < 0:
        i = queue[head]
        head += 1
        for j in range(1, k):
            if parent[j] < 0 and (
                (cells[i] & touch[j]) != 0 or (cells[j] & touch[i]) != 0 or _two(touch[i] & touch[j] & empty)
            ):
                parent[j] = i
                queue[tail] = j
                tail += 1
    if parent[1] < 0:
        return np.int64(0)
    used, j = np.int64(0), 1
    while j != 0:
        i = parent[j]
        if (cells[i] & touch[j]) == 0 and (cells[j] & touch[i]) == 0:
            free = touch[i] & touch[j] & empty & ~used
            if not _two(free):
                return np.int64(0)
            first = free & -free
            free &= free - 1
            used |= first | (free & -free)
        j = i
    return used


@numba.njit(nogil=True, cache=True)
def _virtual(stones, empty, colour, n, m, scratch):
    """The carrier of a bridge chain joining `colour`'s edges, or 0 if none is found (see _chain)."""
    return _chain(_nodes(stones, colour, n, m, scratch), empty, scratch)


@numba.njit(nogil=True, cache=True)
def _with(k, bit, empty, n, m, scratch):
    """_virtual after one more stone, on `bit`, its k nodes being in scratch already.

    The stone and the groups it touches make one more node (those groups
    stay, joined to it), so no group is found again for each cell tried.
    """
    cells, touch = scratch[0], scratch[1]
    joined, near = bit, _neighbours(bit, n, m)
    for i in range(2, k):
        if (cells[i] & near) != 0:
            joined |= cells[i]
    cells[k], touch[k] = joined, _neighbours(joined, n, m)
    return _chain(k + 1, empty & ~bit, scratch)


@numba.njit(nogil=True, cache=True)
def _semis(mine, theirs, empty, me, mustplay, n, m, order, scratch):
    """Semi-connections, by bridge chains: (do I win?, carrier, what is left to try).

    A cell of mustplay after which I have a bridge chain wins. A cell after
    which the opponent would have one is their threat: my move must fall on
    it or in its chain's carrier, so mustplay shrinks to the cells common to
    every such threat; with none left, I lose, and the threats' cells and
    carriers are the loss's carrier.
    """
    k = _nodes(mine, me, n, m, scratch)
    for i in range(order.shape[0]):
        bit = np.int64(1) << order[i]
        if (mustplay & bit) != 0:
            chain = _with(k, bit, empty, n, m, scratch)
            if chain != 0:
                return True, chain | bit, np.int64(0)
    k = _nodes(theirs, WHITE if me == BLACK else BLACK, n, m, scratch)
    carrier, rest = np.int64(0), empty
    while rest != 0 and mustplay != 0:
        bit = rest & -rest
        rest &= rest - 1
        chain = _with(k, bit, empty, n, m, scratch)
        if chain != 0 and (mustplay & ~(chain | bit)) != 0:
            mustplay &= chain | bit
            carrier |= chain | bit
    return False, carrier, mustplay


@numba.njit(nogil=True, cache=True, inline="always")
def _play(black, white, me, bit):
    """The position after my stone on `bit`: (black, white, the opponent)."""
    if me == BLACK:
        return black | bit, white, WHITE
    return black, white | bit, BLACK


@numba.njit(nogil=True, cache=True)
def _solve(black, white, me, n, m, order, tb, tw, tv, tc, scratch, stats):
    """(does the player to move win?, the win's carrier). Undecided positions only."""
    stats[NODES] += 1
    nn = n * n
    empty = m[FULL] & ~(black | white)
    mine, theirs = (black, white) if me == BLACK else (white, black)
    now = threats(mine, empty, me, n, m)
    if now != 0:
        return True, now & -now  # the lowest winning cell
    forced = threats(theirs, empty, WHITE if me == BLACK else BLACK, n, m)
    t = forced & -forced
    rest = forced & (forced - 1)
    if rest != 0:  # two threats: one block cannot stop both
        return False, t | (rest & -rest)
    kb, kw, turned = _key(black, white, me, nn)
    s = _slot(kb, kw, tv.shape[0])
    if tv[s] != UNKNOWN and tb[s] == kb and tw[s] == kw:
        return tv[s] == WON, _rotate(tc[s], nn) if turned else tc[s]
    won, carrier, mustplay = False, np.int64(0), t if t != 0 else empty  # one threat: one move
    chain = _virtual(mine, empty, me, n, m, scratch)
    if chain != 0:  # my bridge chain: I win, whoever moves
        won, carrier, mustplay = True, chain, 0
    else:
        chain = _virtual(theirs, empty, WHITE if me == BLACK else BLACK, n, m, scratch)
        if chain != 0:
            carrier, mustplay = chain, 0
        else:
            won, carrier, mustplay = _semis(mine, theirs, empty, me, mustplay, n, m, order, scratch)
    # My move x loses to a strategy of the opponent's on carrier C: then any
    # move outside C loses to the same strategy, so only cells in every such
    # C are left to try (the must-play region).
    for i in range(order.shape[0]):
        bit = np.int64(1) << order[i]
        if (mustplay & bit) != 0:
            b, w, you = _play(black, white, me, bit)
            lost, c = _solve(b, w, you, n, m, order, tb, tw, tv, tc, scratch, stats)
            if not lost:
                won, carrier = True, c | bit
                break
            mustplay &= c
            carrier |= c | bit
    carrier |= t  # a loss with a threat also rests on the threat's cell
    tb[s], tw[s], tv[s] = kb, kw, WON if won else LOST  # replacing any child stored there
    tc[s] = _rotate(carrier, nn) if turned else carrier
    return won, carrier


@numba.njit(nogil=True, cache=True)
def bitmasks(board):
    """(Black's, White's) stones of a board int8[n*n] as int64 bitmasks."""
    black, white = np.int64(0), np.int64(0)
    for x in range(board.shape[0]):
        if board[x] == BLACK:
            black |= np.int64(1) << x
        elif board[x] == WHITE:
            white |= np.int64(1) << x
    return black, white


@numba.njit(nogil=True, cache=True)
def winner(board, n):
    """BLACK or WHITE where that player has joined its edges, else EMPTY."""
    m = masks(n)
    black, white = bitmasks(board)
    if connected(black, BLACK, n, m):
        return BLACK
    if connected(white, WHITE, n, m):
        return WHITE
    return EMPTY


# -- the public kernels: board int8[n*n], the player to move, a Table's arrays, stats int64[1]


@numba.njit(nogil=True, cache=True)
def _setup(board, n):
    """What a search of board needs: masks, cell order, _virtual's scratch, the stones."""
    black, white = bitmasks(board)
    return masks(n), centre_order(n), np.empty((4, n * n + 2), np.int64), black, white


@numba.njit(nogil=True, cache=True)
def wins(board, to_play, n, tb, tw, tv, tc, stats):
    """Does `to_play` win the undecided board with perfect play?"""
    m, order, scratch, black, white = _setup(board, n)
    return _solve(black, white, to_play, n, m, order, tb, tw, tv, tc, scratch, stats)[0]


@numba.njit(nogil=True, cache=True)
def _wins_after(black, white, me, bit, now, n, m, order, tb, tw, tv, tc, scratch, stats):
    """Does my stone on `bit` win? `now`: my threats, which win at once."""
    if (now & bit) != 0:
        return True
    b, w, you = _play(black, white, me, bit)
    return not _solve(b, w, you, n, m, order, tb, tw, tv, tc, scratch, stats)[0]


@numba.njit(nogil=True, cache=True)
def winning_moves(board, to_play, n, tb, tw, tv, tc, stats):
    """bool[n*n]: the empty cells after which `to_play` wins with perfect play."""
    m, order, scratch, black, white = _setup(board, n)
    empty = m[FULL] & ~(black | white)
    now = threats(black if to_play == BLACK else white, empty, to_play, n, m)
    out = np.zeros(n * n, np.bool_)
    for cell in range(n * n):
        bit = np.int64(1) << cell
        if (empty & bit) != 0:
            out[cell] = _wins_after(black, white, to_play, bit, now, n, m, order, tb, tw, tv, tc, scratch, stats)
    return out


@numba.njit(nogil=True, cache=True)
def reply(board, to_play, n, tb, tw, tv, tc, stats):
    """The perfect player's move on an undecided board: (cell, does it win?).

    Winning: a move that wins at once, else the first winning move in
    centre order. Losing, it makes the winner work: it blocks a threat
    (a cell that would win at once) if there is one, else it plays the first
    cell in centre order inside the winner's carrier, since a stone outside
    it leaves the winner's strategy untouched.
    """
    m, order, scratch, black, white = _setup(board, n)
    empty = m[FULL] & ~(black | white)
    mine, theirs = (black, white) if to_play == BLACK else (white, black)
    now = threats(mine, empty, to_play, n, m)
    danger = threats(theirs, empty, WHITE if to_play == BLACK else BLACK, n, m)
    won, carrier = _solve(black, white, to_play, n, m, order, tb, tw, tv, tc, scratch, stats)
    target = now if now != 0 else (empty if won else (danger if danger != 0 else carrier))
    for i in range(order.shape[0]):
        bit = np.int64(1) << order[i]
        if (target & bit) != 0 and (
            not won or _wins_after(black, white, to_play, bit, now, n, m, order, tb, tw, tv, tc, scratch, stats)
        ):
            return order[i], won
    return -1, won  # not reached on an undecided board
