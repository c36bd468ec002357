"""Outside HTP engines: the client that drives one, and an engine as a `Player`.

`hexzd match` referees two engines through HtpClient (hexzd.protocols.referee).
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
              engine that dies or closes its output, an answer of more than
              MAX_LINES lines or with a line over MAX_LINE characters, an
              unreadable or illegal move raise EngineFailure: the engine is
              broken, not beaten, and (but for an error answer) killed
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
MAX_LINE = 16_384  # characters in a line of an answer: a longer line is a broken engine
MAX_LINES = 1_000  # lines of one answer before the blank line that ends it (a 19x19 showboard has 23)


class EngineFailure(RuntimeError):
    """An engine that answered with an error, nothing, too late or too much."""


TOO_LONG = "line too long"  # the reader's mark, in place of a line over MAX_LINE characters


class HtpClient:
    """One engine process, asked one command at a time.

    A reader thread turns its stdout into lines, so that an answer can be
    awaited with a timeout without select() on a pipe (which Windows lacks).
    It holds at most MAX_LINES lines of MAX_LINE characters: an engine that
    writes more than that in one answer, or a longer line, fails, as one that
    does not answer in time or dies. An engine that fails so is killed and
    reaped at once (`alive` is False: hexzd.protocols.referee starts another);
    `close` quits or kills it. Every wait has a deadline. A command that
    cannot start raises OSError.
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
                encoding="utf-8",
                errors="replace",  # bytes that are not UTF-8 make an unreadable answer, not a dead reader
                bufsize=1,
            )
        except (OSError, ValueError):
            if self._log is not subprocess.DEVNULL:
                self._log.close()
            raise
        self._lines: queue.Queue = queue.Queue(maxsize=MAX_LINES + 1)
        self._closing = threading.Event()
        self._answered = False
        self._killed = False  # by _stop: it failed, or would not quit
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """The engine's output line by line, then None at its end; TOO_LONG, and no more, for a line
        over MAX_LINE characters. Waits while the queue is full, until `close`."""
        try:
            while line := self.process.stdout.readline(MAX_LINE + 1):
                if len(line) > MAX_LINE and not line.endswith("\n"):
                    self._put(TOO_LONG)
                    return
                self._put(line)
        except (OSError, ValueError):  # the pipe was closed under it
            pass
        self._put(None)  # end of output: the engine has gone, or closed its stdout

    def _put(self, item) -> None:
        while not self._closing.is_set():
            try:
                self._lines.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def ask(self, command: str, timeout: float) -> str:
        """The answer's text without its `=`; raises EngineFailure on `?`, death, timeout or too much output."""
        if not self._answered:
            timeout = max(timeout, STARTUP_SECONDS)
        lines = self._exchange(command, timeout)
        self._answered = True
        answer = " ".join(lines)
        if answer.startswith("?"):
            raise EngineFailure(f"`{command}` refused: {answer[1:].strip()}")
        if not answer.startswith("="):
            raise EngineFailure(f"`{command}` gave an answer that is not HTP: {answer[:80]!r}")
        return answer[1:].lstrip("0123456789").strip()  # drop an echoed id

    def _exchange(self, command: str, timeout: float) -> list[str]:
        """Sends `command` and reads its answer's lines up to the blank line that ends it.
        Any failure but a refusal stops the engine: what it writes next cannot be trusted."""
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # a broken pipe, or one closed already
            raise EngineFailure(f"the engine has exited (code {self._stop()})") from None
        deadline, lines = time.monotonic() + timeout, []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                # A late answer would be read as the answer to the next command.
                self._stop()
                raise EngineFailure(f"no answer to `{command}` within {timeout:g} s") from None
            if line is None or line is TOO_LONG:
                self._lines.put_nowait(line)  # for the next command too: nothing more will come
                raise self._broken(command, line)
            if line.strip() == "" and lines:
                return lines
            if line.strip():
                if len(lines) == MAX_LINES:
                    self._stop()
                    raise EngineFailure(f"more than {MAX_LINES} lines and no blank line in the answer to `{command}`")
                lines.append(line.strip())

    def _broken(self, command: str, mark: str | None) -> EngineFailure:
        """The failure of an engine whose output has ended (None) or ran over MAX_LINE (TOO_LONG); stopped."""
        if mark is TOO_LONG:
            self._stop()
            return EngineFailure(f"a line of more than {MAX_LINE} characters in the answer to `{command}`")
        code = self._stop(grace=QUIT_SECONDS)
        if self._killed:
            return EngineFailure(
                f"the engine closed its output during `{command}` and had not exited {QUIT_SECONDS:g} s later: killed"
            )
        return EngineFailure(f"the engine exited during `{command}` (code {code})")

    def _stop(self, grace: float = 0.0) -> int | None:
        """The engine's exit code once it has gone: given `grace` seconds to exit, then killed
        and reaped. None if even a kill leaves it there QUIT_SECONDS later (stuck in the kernel)."""
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self._killed = True
        try:
            return self.process.wait(timeout=QUIT_SECONDS)
        except subprocess.TimeoutExpired:
            return None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """`quit`, then a kill if the engine is still there QUIT_SECONDS later; the reader,
        the pipes and the log closed. Safe to call again."""
        if self.alive:
            try:
                self._exchange("quit", QUIT_SECONDS)
            except EngineFailure:
                pass
        try:
            self.process.stdin.close()  # an engine that waits for the end of its input has it
        except OSError:  # unwritten input to an engine that has gone
            pass
        self._stop(grace=QUIT_SECONDS)
        self._closing.set()
        self._reader.join(timeout=QUIT_SECONDS)  # it reads to the end of the output, then the pipe can close
        if not self._reader.is_alive():  # else a child the engine left holds its stdout: the reader keeps it
            self.process.stdout.close()
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
