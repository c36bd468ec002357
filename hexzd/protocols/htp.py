"""The HTP engine: hexzd as a Hex program for HexGui, MoHex matches and scripts.

HTP is GTP for Hex. A command is one line: an optional numeric id, the
command's name, its arguments. The answer is `= result` or `? message`,
then a blank line. `HtpServer.handle(line)` answers one line; `serve` reads
stdin line by line and flushes every answer.

Decisions where GTP, HexGui and MoHex leave room:

- Ids. As in GTP, an id given is echoed: `12 name` -> `=12 hexzd`. HexGui
  sends no ids, so it only ever sees the bare `= ` and `? ` it accepts.
- Colours. `play` and `genmove` take `b`, `black`, `w` or `white`, for either
  colour in any order, as GTP controllers expect (HexGui's setups do this):
  the stone goes down as given and the other colour is to move next. Refused,
  with the position left unchanged: malformed input, a cell off the board or
  occupied, and any move once the game is won. Stones are placed by the
  engine's own `Games.play` (for a move out of turn its `to_play` is set to
  the colour given first), so the union-find winner stays the engine's.
- Swap. On only where the state file's run used it (`[game] swap`). The move
  `swap` or `swap-pieces` (HexGui's and MoHex's name) is White's answer to a
  lone Black stone; `genmove` writes it `swap-pieces`. After it, HTP sees the
  board as MoHex and HexGui keep it: the stone where it was and White to
  move, while hexzd's own board (as OpenSpiel's) has White's stone on the
  transposed cell and Black to move. The two are mirror images in the long
  diagonal with the colours exchanged, a symmetry of Hex, so every move,
  board and score crosses over that way (`_across`).
- Resign. `genmove` answers `resign`, playing nothing, only when the search
  has proved the loss: every move leads to a proven win for the opponent
  (MCTS-Solver, native/tree.py). A network's value alone never resigns: an
  early 7x7 snapshot was confidently wrong in openings its self-play never
  visited and resigned won positions. `--no-resign` turns it off. After the
  game is over `genmove` answers `resign`, as MoHex does. `play COLOUR
  resign` changes nothing, as in MoHex, but is a move that `undo` takes back:
  HexGui sends it stepping onto a resignation in a game record, and `undo`
  stepping back.
- HexGui asks `hexgui-analyze_commands` on connecting and reports an error
  answer as a broken program: the answer lists `showboard` and `final_score`.
- Fall-back. The network's heads are sized for the board it was trained on.
  On any other `boardsize` (or before the first promotion) the engine plays
  random-rollout MCTS, says so in `name` and `version` and on stderr, and
  goes back to the network when the board size matches again.
- `final_score` answers `= B+`, `= W+` or, while no one has won, `= cannot
  score` (as MoHex does). `undo` takes back the last move of either colour.
"""

import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hexzd import __version__, store
from hexzd.config import SearchConfig
from hexzd.evaluation.engines import read_move
from hexzd.game.notation import HTP_RESIGN, HTP_SWAP, board_text, cell_name
from hexzd.game.rules import BLACK, EMPTY, WHITE, Games, IllegalMove, check_size
from hexzd.nn.loader import Network, find, load
from hexzd.search.mcts import Search
from hexzd.search.player import RESIGN

COLOURS = {"b": BLACK, "black": BLACK, "w": WHITE, "white": WHITE}
DEFAULT_SIZE = 11  # MoHex's, for an engine with no network to take the size from
DEFAULT_SIMS = 800
CHUNK = 32  # simulations between looks at the clock when searching for a time


class HtpError(ValueError):
    """A command that cannot be carried out: its message is the `? ` answer."""


class EngineError(RuntimeError):
    """An engine that cannot start: no state file, a missing or pruned model."""


def colour_of(word: str) -> int:
    colour = COLOURS.get(word.lower())
    if colour is None:
        raise HtpError(f"'{word}' is not a colour: b, black, w or white")
    return colour


def _played(games: Games, colour: int, action: int) -> Games:
    """A copy of `games` with `colour`'s stone at `action`. Raises IllegalMove."""
    after = games.copy()
    after.to_play[0] = colour
    after.play([action])
    return after


class HtpServer:
    """One game of Hex and the search that plays it; see the module docstring."""

    def __init__(
        self,
        size: int | None = None,
        swap: bool = False,
        sims: int = DEFAULT_SIMS,
        seconds: float | None = None,
        network: Network | None = None,
        config: SearchConfig | None = None,
        resign: bool = True,
        seed: int = 0,
        note: str = "",
        warn: Callable[[str], None] | None = None,
    ):
        self.swap, self.sims, self.seconds = bool(swap), int(sims), seconds
        self.network, self.resign, self.seed = network, resign, seed
        # Play, not self-play: no root noise, and PUCT, whose chunks can add up.
        self.config = (config or SearchConfig()).model_copy(update={"gumbel": False})
        self.note = note  # why there is no network, when there is none
        self.warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.quitting = False
        self.commands = {
            "protocol_version": self.cmd_protocol_version,
            "name": self.cmd_name,
            "version": self.cmd_version,
            "list_commands": self.cmd_list_commands,
            "known_command": self.cmd_known_command,
            "boardsize": self.cmd_boardsize,
            "clear_board": self.cmd_clear_board,
            "play": self.cmd_play,
            "genmove": self.cmd_genmove,
            "undo": self.cmd_undo,
            "showboard": self.cmd_showboard,
            "final_score": self.cmd_final_score,
            "hexgui-analyze_commands": self.cmd_hexgui_analyze_commands,
            "quit": self.cmd_quit,
        }
        self.new_game(size or (network.board_size if network else DEFAULT_SIZE))

    # -- the game ---------------------------------------------------------------

    def new_game(self, n: int) -> None:
        n = check_size(n)
        first, changed = not hasattr(self, "n"), getattr(self, "n", None) != n
        self.n = n
        self.games = Games.new(1, n, self.swap)
        self.moves: list[tuple[int, int]] = []  # (colour, action), in order; action RESIGN: `play c resign`
        if changed and not self.uses_network and (first or self.network):
            self.warn(f"hexzd: {self.describe()}")

    @property
    def uses_network(self) -> bool:
        return self.network is not None and self.network.board_size == self.n

    @property
    def winner(self) -> int:
        return int(self.games.winner[0])

    @property
    def to_play(self) -> int:
        return int(self.games.to_play[0])

    @property
    def cells(self):
        return self.games.board[0]

    def play(self, colour: int, action: int) -> None:
        """Puts down `colour`'s stone; raises IllegalMove and changes nothing if it may not."""
        if action == self.n * self.n and not self._may_swap(colour):
            raise IllegalMove("swap is only legal as White's first move, with the swap rule on")
        self.games = _played(self.games, colour, action)
        self.moves.append((colour, action))

    @property
    def swapped(self) -> bool:
        """Whether the swap was played: from then on HTP's board is hexzd's mirrored (`_across`)."""
        return any(action == self.n * self.n for _, action in self.moves)

    def _colour_across(self, colour: int) -> int:
        """A colour between HTP's board and hexzd's: the other one once swapped."""
        return BLACK + WHITE - colour if self.swapped and colour != EMPTY else colour

    def _across(self, colour: int, action: int) -> tuple[int, int]:
        """A move between HTP's board and hexzd's, either way: once swapped, the other colour's
        stone on the transposed cell (see the module docstring)."""
        if not self.swapped or action == self.n * self.n:
            return colour, action
        r, c = divmod(action, self.n)
        return self._colour_across(colour), c * self.n + r

    def _cells_across(self) -> np.ndarray:
        """The board as HTP sees it: hexzd's, transposed and with the colours exchanged once swapped."""
        if not self.swapped:
            return self.cells
        mirrored = self.cells.reshape(self.n, self.n).T.reshape(-1)
        return np.where(mirrored == EMPTY, EMPTY, BLACK + WHITE - mirrored)

    def _may_swap(self, colour: int) -> bool:
        """Swap is White's answer to a lone Black stone (the engine checks the rule is on)."""
        return colour == WHITE and [c for c, _ in self.moves] == [BLACK]

    def undo(self) -> None:
        if not self.moves:
            raise IllegalMove("there is no move to undo")
        games = Games.new(1, self.n, self.swap)
        for colour, action in self.moves[:-1]:
            if action != RESIGN:
                games = _played(games, colour, action)
        self.games = games
        self.moves.pop()

    def think(self, colour: int) -> int | None:
        """`colour`'s move here by search, or None to resign. Plays nothing."""
        if self.winner != EMPTY:
            raise IllegalMove("the game is over")
        self.seed += 1  # fresh randomness each move, yet reproducible
        swap = self.swap and self._may_swap(colour)
        search = Search(1, self.n, swap, self.config, seed=self.seed, explore=False, reuse_tree=False)
        search.roots = self.games.copy()
        search.roots.swap, search.roots.to_play[0] = swap, colour
        evaluate = self.network.evaluate if self.uses_network else None
        if self.seconds:
            deadline = time.monotonic() + self.seconds
            search.run(CHUNK, evaluate)
            while time.monotonic() < deadline:
                search.run(CHUNK, evaluate)
        else:
            search.run(self.sims, evaluate)
        if self.resign and search.proven_lost()[0]:
            return None
        return int(search.choose()[0][0])

    def genmove(self, colour: int) -> int | None:
        """Searches and plays `colour`'s move; None when it resigns instead."""
        move = self.think(colour)
        if move is not None:
            self.play(colour, move)
        return move

    def describe(self) -> str:
        budget = f"{self.seconds:g} s per move" if self.seconds else f"{self.sims} simulations per move"
        net = self.network
        if self.uses_network:
            return f"model {net.model_id} ({net.blocks}x{net.channels} network), {budget}"
        if net:
            why = f"model {net.model_id} plays {net.board_size}x{net.board_size}, not {self.n}x{self.n}"
            return f"random-rollout MCTS ({why}), {budget}"
        return f"random-rollout MCTS{f' ({self.note})' if self.note else ''}, {budget}"

    # -- the protocol -----------------------------------------------------------

    def handle(self, line: str) -> str | None:
        """The full answer to one command line, blank line included; None for no command."""
        text = "".join(ch for ch in line.split("#", 1)[0] if ch >= " " or ch == "\t")
        words = text.replace("\t", " ").split()
        ident = words.pop(0) if words and words[0].isdigit() else ""
        if not words:
            return f"?{ident} no command after the id\n\n" if ident else None
        command = self.commands.get(words[0])
        if command is None:
            return f"?{ident} unknown command\n\n"
        try:
            return f"={ident} {command(words[1:])}\n\n"
        except ValueError as e:  # HtpError, IllegalMove and parse errors: the state is unchanged
            return f"?{ident} {e}\n\n"

    def serve(self, stdin=None, stdout=None) -> None:
        """Answers commands from stdin until `quit` or the end of the input."""
        stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
        while not self.quitting:
            line = stdin.readline()
            if not line:
                return
            answer = self.handle(line)
            if answer is not None:
                stdout.write(answer)
                stdout.flush()

    @staticmethod
    def _arguments(args: list[str], count: int, usage: str) -> list[str]:
        if len(args) != count:
            raise HtpError(f"usage: {usage}")
        return args

    def cmd_protocol_version(self, args) -> str:
        self._arguments(args, 0, "protocol_version")
        return "2"

    def cmd_name(self, args) -> str:
        self._arguments(args, 0, "name")
        return "hexzd" if self.uses_network else "hexzd random-rollouts"

    def cmd_version(self, args) -> str:
        self._arguments(args, 0, "version")
        return f"{__version__} {self.describe()}"

    def cmd_list_commands(self, args) -> str:
        self._arguments(args, 0, "list_commands")
        return "\n".join(self.commands)

    def cmd_known_command(self, args) -> str:
        (name,) = self._arguments(args, 1, "known_command NAME")
        return "true" if name in self.commands else "false"

    def cmd_boardsize(self, args) -> str:
        if len(args) not in (1, 2):
            raise HtpError("usage: boardsize N (or boardsize N N)")
        if not all(a.isdigit() for a in args):
            raise HtpError(f"'{' '.join(args)}' is not a board size")
        if len(set(map(int, args))) != 1:
            raise HtpError("hexzd plays square boards only")
        self.new_game(int(args[0]))
        return ""

    def cmd_clear_board(self, args) -> str:
        self._arguments(args, 0, "clear_board")
        self.new_game(self.n)
        return ""

    def cmd_play(self, args) -> str:
        colour, cell = self._arguments(args, 2, "play b|w CELL")
        colour, action = colour_of(colour), read_move(cell, self.n)
        if action == RESIGN:  # nothing on the board, but a move to undo (module docstring)
            self.moves.append((colour, RESIGN))
        else:
            self.play(*self._across(colour, action))
        return ""

    def cmd_genmove(self, args) -> str:
        (colour,) = self._arguments(args, 1, "genmove b|w")
        colour = colour_of(colour)
        if self.winner != EMPTY:
            return HTP_RESIGN  # as MoHex: nothing is left to play
        move = self.genmove(self._colour_across(colour))
        if move is None:
            return HTP_RESIGN
        _, move = self._across(colour, move)
        return HTP_SWAP if move == self.n * self.n else cell_name(move, self.n)

    def cmd_undo(self, args) -> str:
        self._arguments(args, 0, "undo")
        self.undo()
        return ""

    def cmd_showboard(self, args) -> str:
        self._arguments(args, 0, "showboard")
        return "\n" + board_text(self._cells_across(), self.n)

    def cmd_final_score(self, args) -> str:
        self._arguments(args, 0, "final_score")
        return {BLACK: "B+", WHITE: "W+"}.get(self._colour_across(self.winner), "cannot score")

    def cmd_hexgui_analyze_commands(self, args) -> str:
        """HexGui's menu of analyze commands, in GoGui's `type/label/command` lines (MoHex's labels)."""
        self._arguments(args, 0, "hexgui-analyze_commands")
        return "string/ShowBoard/showboard\nstring/Final Score/final_score"

    def cmd_quit(self, args) -> str:
        self._arguments(args, 0, "quit")
        self.quitting = True
        return ""


# -- starting an engine from the command line's options ---------------------------


def open_engine(
    db=None,
    model: str = "best",
    sims: int | None = None,
    seconds: float | None = None,
    random_rollouts: bool = False,
    size: int | None = None,
    resign: bool = True,
    warn: Callable[[str], None] | None = None,
) -> HtpServer:
    """The engine that `hexzd htp` and `hexzd play` run. Raises EngineError."""
    if sims is not None and seconds is not None:
        raise EngineError("give --sims or --seconds, not both")
    budget = {"sims": sims or DEFAULT_SIMS, "seconds": seconds, "resign": resign, "size": size, "warn": warn}
    if random_rollouts:
        return HtpServer(**budget, note="asked for")
    network, config, swap, note = load_network(db, model)
    if size is None and network is None and config is not None:
        budget["size"] = config.game.board_size
    return HtpServer(**budget, swap=swap, network=network, note=note, config=config.selfplay if config else None)


def load_network(db, model: str = "best"):
    """(Network or None, the run's Config or None, swap, note) from the state file.

    model: `best` or a model id. The note says why there is no network (none
    promoted yet). Raises EngineError for a missing file, a bad --model, or a
    model that is missing or pruned; store.StateFileError for a file that is not
    a state file this hexzd can read (damaged, another program's, newer).
    Shared with `hexzd perfect`.
    """
    if not Path(db).is_file():
        raise EngineError(f"no state file {db}: give --db FILE, or --random-rollouts for plain MCTS")
    try:
        model_id, config = find(db, model)
    except ValueError as e:  # a --model that is neither `best` nor an id
        raise EngineError(str(e)) from None
    if model_id is None:
        return None, config, bool(config and config.game.swap), f"no model of {db} is promoted yet"
    try:
        network = load(db, model_id, config.device if config else None)
    except KeyError as e:
        raise EngineError(e.args[0]) from None
    except sqlite3.Error as e:  # a page of the weights that cannot be read
        raise store.refusal(e) from None
    return network, config, bool(config and config.game.swap), ""
