"""Outside HTP engines: the client that drives one, and an engine as a `Player`.

`hexzd match` referees two engines through HtpClient (hexzd.protocols.match).
The daemon rates the engines of `[ratings] engines` (MoHex, say) on the
run's scale through EnginePlayer, in the same colour-swapped pairs as every
other rating match (hexzd.evaluation.matches.play_pairs).

    process   one per rating match: started when the match opens, then
              `quit`, and killed if it has not gone within QUIT_SECONDS
    position  set up afresh before every move (boardsize, clear_board, the
              stones), so that one process serves a whole batch of games.
              A Hex position does not depend on the order of its stones,
              so the board is enough: Black's and White's stones alternate
    answer    a cell is the engine's move and `resign` gives the game up
              (RESIGN). An error answer, no answer within the timeout, an
              engine that dies, an unreadable or illegal move raise
              EngineFailure: the engine is broken, not beaten
    swap      not played: MoHex turns it on with `param_game allow_swap`,
              other engines not at all, and MoHex's swap keeps the stone
              where hexzd's moves it (docs/guides/htp-play.md, "Where hexzd differs")
"""

import queue
import resource
import shlex
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from hexzd.game.notation import HTP_RESIGN, SWAP_NAMES, cell_name, parse_cell
from hexzd.game.rules import BLACK, WHITE, Games
from hexzd.search.player import RESIGN

__all__ = ["EngineFailure", "EnginePlayer", "HtpClient", "children_cpu_seconds", "read_move", "set_up"]

COLOUR = {BLACK: "b", WHITE: "w"}
STARTUP_SECONDS = 120.0  # the first answer of a process waits for its start-up (imports, network loading)
ANSWER_SECONDS = 120.0  # the longest a rating match waits for one answer before the engine counts as broken
QUIT_SECONDS = 5.0  # an engine that has not exited this long after `quit` is killed


class EngineFailure(RuntimeError):
    """An engine that answered with an error, nothing, or too late."""


class HtpClient:
    """One engine process, asked one command at a time.

    A reader thread turns its stdout into lines, so that an answer can be
    awaited with a timeout without select() on a pipe (which Windows lacks).
    A command that cannot start raises OSError.
    """

    def __init__(self, command: str, log_path: Path | None = None):
        self.command = command
        self._log = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed in close())
        try:
            self.process = subprocess.Popen(
                shlex.split(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                bufsize=1,
            )
        except (OSError, ValueError):
            if self._log is not subprocess.DEVNULL:
                self._log.close()
            raise
        self._lines: queue.Queue = queue.Queue()
        self._answered = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the engine has gone

    def ask(self, command: str, timeout: float) -> str:
        """The answer's text without its `=`; raises EngineFailure on `?`, death or timeout."""
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise EngineFailure(f"the engine has exited (code {self.process.poll()})") from None
        if not self._answered:
            timeout = max(timeout, STARTUP_SECONDS)
        deadline, lines = time.monotonic() + timeout, []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                # A late answer would be read as the answer to the next
                # command: the engine is stopped, and started afresh.
                self.process.kill()
                self.process.wait()  # so that `alive` is False at once and it is restarted
                raise EngineFailure(f"no answer to `{command}` within {timeout:g} s") from None
            if line is None:
                self._lines.put(None)
                raise EngineFailure(f"the engine exited during `{command}` (code {self.process.wait()})")
            if line.strip() == "" and lines:
                break
            if line.strip():
                lines.append(line.strip())
        self._answered = True
        answer = " ".join(lines)
        if answer.startswith("?"):
            raise EngineFailure(f"`{command}` refused: {answer[1:].strip()}")
        if not answer.startswith("="):
            raise EngineFailure(f"`{command}` gave an answer that is not HTP: {answer[:80]!r}")
        return answer[1:].lstrip("0123456789").strip()  # drop an echoed id

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """`quit`, then a kill if the engine is still there QUIT_SECONDS later."""
        if self.alive:
            try:
                self.ask("quit", timeout=QUIT_SECONDS)
                self.process.wait(timeout=QUIT_SECONDS)
            except (EngineFailure, subprocess.TimeoutExpired):
                pass
        if self.alive:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=QUIT_SECONDS)  # it reads to the end of the output, then the pipes can close
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:  # unwritten input to an engine that has gone
                pass
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def read_move(answer: str, n: int) -> int:
    """The action an HTP move names (a `genmove` answer, `play`'s argument): a cell, n * n for
    the swap, or RESIGN. Raises ValueError."""
    word = answer.strip().lower()
    if word == HTP_RESIGN:
        return RESIGN
    return n * n if word in SWAP_NAMES else parse_cell(word, n)


def set_up(engine: HtpClient, n: int, moves: list[int], timeout: float) -> None:
    """A new game on the engine's board, with `moves` played in turn from Black's."""
    engine.ask(f"boardsize {n}", timeout)
    engine.ask("clear_board", timeout)
    for ply, action in enumerate(moves):
        engine.ask(f"play {COLOUR[BLACK if ply % 2 == 0 else WHITE]} {cell_name(action, n)}", timeout)


def stones(games: Games, b: int) -> list[int]:
    """Game b's stones in an order that plays to its position: Black's and White's alternating."""
    black, white = (np.flatnonzero(games.board[b] == colour).tolist() for colour in (BLACK, WHITE))
    return [a for pair in zip(black, white + [None]) for a in pair if a is not None]


class EnginePlayer:
    """An outside engine as a Player (hexzd.search.player): a move for each game of a batch."""

    def __init__(self, command: str, timeout: float = ANSWER_SECONDS, log_path: Path | None = None, name: str = ""):
        try:
            self.client = HtpClient(command, log_path)
        except (OSError, ValueError) as e:  # no such program, or a command line shlex cannot split
            raise EngineFailure(f"cannot start `{command}`: {e}") from None
        self.timeout, self.name = timeout, name or command

    def moves(self, games: Games) -> np.ndarray:
        """int64[B]: each live game's move, RESIGN where the engine gives up, -1 where the game
        is over. Raises EngineFailure."""
        if games.swap:
            raise EngineFailure("outside engines play without the swap rule only")
        out = np.full(games.batch, -1, np.int64)
        for b in np.flatnonzero(~games.done):
            set_up(self.client, games.n, stones(games, b), self.timeout)
            out[b] = self._genmove(games, int(b))
        return out

    def _genmove(self, games: Games, b: int) -> int:
        answer = self.client.ask(f"genmove {COLOUR[int(games.to_play[b])]}", self.timeout)
        try:
            action = read_move(answer, games.n)
        except ValueError as e:
            raise EngineFailure(f"an unreadable move {answer!r}: {e}") from None
        if action != RESIGN and not games.legal()[b, action]:
            raise EngineFailure(f"an illegal move {answer!r}")
        return action

    def close(self) -> None:
        self.client.close()


def children_cpu_seconds() -> float:
    """CPU seconds of this process's child processes that have exited: the engines it closed.

    An engine's CPU time is not its referee's; counted this way, a rating
    match against an engine costs what both sides used (hexzd.daemon.workers).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
