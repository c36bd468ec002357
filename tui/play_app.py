"""The Textual app of `hexzd play` on a terminal: arrow keys move a cursor, Enter plays there.

A module of its own so that `hexzd play` without a terminal (hexzd.tui.play's
text game) never imports textual.
"""

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from hexzd.tui.play import LEGEND, HumanGame


class PlayApp(App):
    """One game of `match` on the board, the engine's moves searched in a thread."""

    CSS = "Screen { align: center middle; } Static { width: auto; margin: 0 2; }"
    BINDINGS = [
        Binding("up", "cursor(-1, 0)", "up", show=False),
        Binding("down", "cursor(1, 0)", "down", show=False),
        Binding("left", "cursor(0, -1)", "left", show=False),
        Binding("right", "cursor(0, 1)", "right", show=False),
        Binding("enter", "place", "play here"),
        Binding("space", "place", "play here", show=False),
        Binding("u", "undo", "undo"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, match: HumanGame):
        super().__init__()
        self.match, self.n = match, match.engine.n
        self.row = self.col = self.n // 2
        self.thinking = False
        self.message = ""

    def compose(self) -> ComposeResult:
        yield Static(LEGEND)
        yield Static(id="board")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        self.maybe_think()

    def redraw(self) -> None:
        self.query_one("#board", Static).update(self.match.board(self.row * self.n + self.col))
        status = self.match.status() + (f"  ({self.message})" if self.message else "")
        self.query_one("#status", Static).update(status)

    def action_cursor(self, dr: int, dc: int) -> None:
        self.row = min(max(self.row + dr, 0), self.n - 1)
        self.col = min(max(self.col + dc, 0), self.n - 1)
        self.redraw()

    def action_place(self) -> None:
        if self.thinking:
            return
        self._try(lambda: self.match.human_move(self.row * self.n + self.col))
        self.maybe_think()

    def action_undo(self) -> None:
        if not self.thinking:
            self._try(self.match.undo)

    def _try(self, move) -> None:
        """Makes the human's move (or undo), or says why it may not be made."""
        try:
            move()
            self.message = ""
        except ValueError as e:
            self.message = str(e)
        self.redraw()

    def maybe_think(self) -> None:
        if not self.match.over and not self.match.human_to_move:
            self.thinking = True
            self.redraw()
            self.think()

    @work(thread=True, exclusive=True)
    def think(self) -> None:
        said = self.match.engine_move()
        self.call_from_thread(self.thought, said)

    def thought(self, said: str) -> None:
        self.thinking, self.message = False, said
        self.redraw()
