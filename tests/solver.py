"""A brute-force Hex solver in plain Python: the independent reference for tiny boards.

It shares no code with hexzd. A position is a tuple of n*n cells (0 empty,
1 Black, 2 White) and the player to move; Black joins top to bottom, White
left to right. Fine for 3x3 anywhere and 4x4 positions with a few stones.
"""

from functools import cache

NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, 1), (1, -1))


def connected(cells, n, colour):
    """Does `colour` join its two edges?"""
    if colour == 1:
        frontier = [(0, c) for c in range(n) if cells[c] == 1]
    else:
        frontier = [(r, 0) for r in range(n) if cells[r * n] == 2]
    seen = set(frontier)
    while frontier:
        r, c = frontier.pop()
        if (colour == 1 and r == n - 1) or (colour == 2 and c == n - 1):
            return True
        for dr, dc in NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if 0 <= rr < n and 0 <= cc < n and (rr, cc) not in seen and cells[rr * n + cc] == colour:
                seen.add((rr, cc))
                frontier.append((rr, cc))
    return False


def winner(cells, n):
    """1 or 2 if that player has connected, else 0."""
    for colour in (1, 2):
        if connected(cells, n, colour):
            return colour
    return 0


@cache
def wins(cells, n, to_play):
    """True if the player to move wins with perfect play. Assumes no winner yet."""
    other = 3 - to_play
    for x in range(n * n):
        if cells[x] == 0:
            after = cells[:x] + (to_play,) + cells[x + 1 :]
            if connected(after, n, to_play) or not wins(after, n, other):
                return True
    return False


def winning_moves(cells, n, to_play):
    """The moves after which the player to move wins with perfect play."""
    cells = tuple(int(c) for c in cells)
    good = []
    for x in range(n * n):
        if cells[x] == 0:
            after = cells[:x] + (to_play,) + cells[x + 1 :]
            if connected(after, n, to_play) or not wins(after, n, 3 - to_play):
                good.append(x)
    return good


def to_play_of(cells):
    """Black moves first and players alternate (no swap)."""
    blacks = sum(1 for c in cells if c == 1)
    whites = sum(1 for c in cells if c == 2)
    return 1 if blacks == whites else 2
