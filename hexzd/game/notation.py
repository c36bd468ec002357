"""Names for Hex cells, moves and boards, as MoHex, HexGui and OpenSpiel write them.

Every coordinate system in the project, for a cell in row r and column c of
an n x n board (0-based, r from the top, c from the left):

    system          example (n = 9, r = 2, c = 1)   where
    (r, c)          (2, 1)                          kernels, loops
    action          r * n + c = 19                  native/, the network's policy
    swap action     n * n = 81                      native/, games.policy column n*n
    cell name       column letter, row number: b3   HTP, the CLI, the docs
    trmph moves     names one after another: a1b3   games.moves, duel_games.moves
    canonical index action, or its transpose        the network's view (native/board.py)
                    c * n + r when White is to move

Black connects row 1 to row n, White column `a` to the last column. `a1` is
the top-left, acute corner. The swap move is written `swap` (trmph; in HTP
also `swap-pieces`, as MoHex and HexGui write it).
"""

import re

from hexzd.native.board import BLACK, EMPTY, WHITE

LETTERS = "abcdefghijklmnopqrs"  # columns of the largest board, 19 x 19
SWAP = "swap"
HTP_SWAP = "swap-pieces"  # MoHex's and HexGui's name for it in HTP
SWAP_NAMES = (SWAP, HTP_SWAP)
HTP_RESIGN = "resign"  # a move in HTP: `genmove` answers it, `play` may be given it
_MOVE = re.compile(r"swap|[a-s](?:1[0-9]|[1-9])")


def cell_name(action: int, n: int) -> str:
    """`a1` for action 0. The swap action (n * n) is `swap`."""
    if action == n * n:
        return SWAP
    if not 0 <= action < n * n:
        raise ValueError(f"action {action} is off a {n}x{n} board")
    r, c = divmod(action, n)
    return f"{LETTERS[c]}{r + 1}"


def parse_cell(name: str, n: int) -> int:
    """The action for a cell name such as `c3`, or `swap`.

    Raises ValueError with a message fit for a user when the name is not a
    cell of this board.
    """
    text = name.strip().lower()
    if text == SWAP:
        return n * n
    if not _MOVE.fullmatch(text):
        raise ValueError(f"'{name}' is not a cell name such as a1")
    c = LETTERS.index(text[0])
    r = int(text[1:]) - 1
    if c >= n or r >= n:
        raise ValueError(f"{name} is off the {n}x{n} board")
    return r * n + c


def to_trmph(actions, n: int) -> str:
    """Moves written one after another: `a1b2swap`."""
    return "".join(cell_name(int(a), n) for a in actions)


def parse_trmph(text: str, n: int) -> list[int]:
    """The actions of a trmph move string. Raises ValueError on bad input."""
    moves = _MOVE.findall(text.lower())
    if "".join(moves) != text.lower():
        raise ValueError(f"'{text}' is not a trmph move string")
    return [parse_cell(m, n) for m in moves]


def board_text(cells, n: int) -> str:
    """An ASCII board in the style of MoHex's `showboard`.

    Each row is shifted one step right of the one above, so that the six
    neighbours of a cell sit around it as on a real Hex board.
    """
    glyph = {EMPTY: ".", BLACK: "X", WHITE: "O"}
    header = "  " + " ".join(LETTERS[:n])
    lines = [header]
    for r in range(n):
        row = " ".join(glyph[int(cells[r * n + c])] for c in range(n))
        lines.append(f"{' ' * r}{r + 1:>2}\\{row}\\{r + 1}")
    lines.append(" " * (n + 2) + " ".join(LETTERS[:n]))
    return "\n".join(lines)
