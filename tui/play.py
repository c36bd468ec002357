"""`hexzd play`: a human against the engine, in the terminal.

On a terminal the board is a small Textual app: the arrow keys move a
cursor, Enter (or space) puts a stone under it, `u` takes back your last
move with the engine's answer, `q` quits. When stdin or stdout is not a
terminal (a pipe, a script, a test) it reads moves as typed cells instead,
one per line: `c3`, `undo`, `quit`. Both drive one `HumanGame` over the same
`HtpServer` that `hexzd htp` serves, so the rules and the search are the
engine's.
"""

import sys

from rich.console import Console
from rich.text import Text

from hexzd.game.notation import LETTERS, cell_name, parse_cell
from hexzd.game.rules import BLACK, EMPTY, WHITE, IllegalMove
from hexzd.protocols.htp import HtpServer

COLOUR_NAMES = {BLACK: "Black", WHITE: "White"}
EDGE_STYLE = {BLACK: "bold red", WHITE: "bold blue"}
STONES = {EMPTY: (".", "dim"), BLACK: ("X", EDGE_STYLE[BLACK]), WHITE: ("O", EDGE_STYLE[WHITE])}
LEGEND = "X Black: top to bottom (red edges)   O White: left to right (blue edges)"


def render(cells, n: int, cursor: int | None = None, last: int | None = None) -> Text:
    """The rhombus, each row a step right of the one above, stones and edges coloured.

    The cursor's cell is shown in reverse video, the last move underlined.
    """
    letters = " ".join(LETTERS[:n])
    text = Text("   " + letters + "\n", style=EDGE_STYLE[BLACK])
    for r in range(n):
        text.append(" " * r + f"{r + 1:>2} ", style=EDGE_STYLE[WHITE])
        for c in range(n):
            a = r * n + c
            glyph, style = STONES[int(cells[a])]
            style += " reverse" if a == cursor else ""
            style += " underline" if a == last else ""
            text.append(glyph, style=style)
            text.append(" ")
        text.append(f"{r + 1}\n", style=EDGE_STYLE[WHITE])
    text.append(" " * (n + 2) + letters, style=EDGE_STYLE[BLACK])
    return text


class HumanGame:
    """A game between a human of colour `human` and the engine."""

    def __init__(self, engine: HtpServer, human: int):
        self.engine, self.human = engine, human
        self.machine = WHITE if human == BLACK else BLACK
        self.resigned = None  # the colour that resigned

    @property
    def over(self) -> bool:
        return self.engine.winner != EMPTY or self.resigned is not None

    @property
    def human_to_move(self) -> bool:
        return not self.over and self.engine.to_play == self.human

    @property
    def last(self) -> int | None:
        return self.engine.moves[-1][1] if self.engine.moves else None

    def board(self, cursor: int | None = None) -> Text:
        return render(self.engine.cells, self.engine.n, cursor, self.last)

    def human_move(self, action: int) -> None:
        """Raises IllegalMove (a ValueError) when it may not be played."""
        if not self.human_to_move:
            raise IllegalMove("the game is over" if self.over else "it is not your move")
        self.engine.play(self.human, action)

    def engine_move(self) -> str:
        move = self.engine.genmove(self.machine)
        if move is None:
            self.resigned = self.machine
            return "hexzd resigns"
        return f"hexzd plays {cell_name(move, self.engine.n)}"

    def undo(self) -> None:
        """Takes back the human's last move and everything after it."""
        if not any(colour == self.human for colour, _ in self.engine.moves):
            raise IllegalMove("you have no move to take back")
        self.resigned = None
        while self._undo_one() != self.human:
            pass

    def _undo_one(self) -> int:
        colour = self.engine.moves[-1][0]
        self.engine.undo()
        return colour

    def result(self) -> str:
        if self.resigned is not None:
            return "hexzd resigns: you win" if self.resigned == self.machine else "you resign"
        if self.engine.winner == EMPTY:
            return "game abandoned"
        won = self.engine.winner == self.human
        return f"{COLOUR_NAMES[self.engine.winner]} wins: " + ("you win" if won else "hexzd wins")

    def status(self) -> str:
        if self.over:
            return self.result()
        return f"you play {COLOUR_NAMES[self.human]}; " + (
            "your move" if self.human_to_move else "hexzd is thinking..."
        )


def text_game(match: HumanGame, console: Console, stdin) -> None:
    """Moves typed as cells, one per line; for pipes and scripts."""
    n = match.engine.n
    echo = not stdin.isatty()  # a terminal shows what was typed; show piped moves too
    console.print(LEGEND)
    console.print(match.board())
    while not match.over:
        if not match.human_to_move:
            console.print(match.engine_move())
            console.print(match.board())
            continue
        console.print("your move (a cell such as c3, undo, quit): ", end="")
        line = stdin.readline()
        word = line.strip().lower()
        if echo or not line:
            console.print(word if line else "quit")
        if not line or word in ("quit", "q", "exit"):
            return
        try:
            if word == "undo":
                match.undo()
            elif word:
                match.human_move(parse_cell(word, n))
        except ValueError as e:
            console.print(str(e))
            continue
        console.print(match.board())
    console.print(match.result())


def cursor_app(match: HumanGame):
    """The Textual app (hexzd.tui.play_app): arrow keys move the cursor, Enter plays there."""
    from hexzd.tui.play_app import PlayApp  # textual, imported only for a game on a terminal

    return PlayApp(match)


def play_game(engine: HtpServer, colour: str, cursor: bool | None = None, stdin=None) -> None:
    """Plays one game against `engine`; the human has `colour` ("black" or "white")."""
    match = HumanGame(engine, BLACK if colour == "black" else WHITE)
    stdin = stdin or sys.stdin
    if cursor is None:
        cursor = stdin.isatty() and sys.stdout.isatty()
    console = Console()
    if not cursor:
        text_game(match, console, stdin)
        return
    cursor_app(match).run()
    console.print(match.board())
    console.print(match.result())
