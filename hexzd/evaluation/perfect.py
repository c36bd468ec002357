"""`hexzd perfect`: an agent's strength against perfect play on solved small boards.

Elo against other agents says who is stronger; this says how far from
perfect an agent is, on boards small enough to solve exactly (n <= MAX_SIZE),
and in late positions of boards up to LATE_MAX_SIZE:

    positions      N random openings, the empty board first: 0 .. n*n - 2 plies
                   uniformly at random (no swap), finished games and repeats
                   dropped. Reproducible from the seed. On boards above
                   MAX_SIZE, late positions only: n*n - MAX_EMPTY .. n*n - 2
                   plies, so that the solver meets at most MAX_EMPTY empty
                   cells (the empty 5x5 board has 25 and takes it under a
                   second).
    solved         each by native/solver.py: won or lost for the player to move
    perfect-move   in each won position, does the agent's move keep the win?
    conversion     from each won position, the agent to move plays out the game
                   against the perfect player (the solver's `reply`). It wins only
                   if every move of its keeps the win: one slip, and perfect
                   defence wins. So games stop at the agent's first losing move.
    value sign     the raw network's value is > 0 exactly where the mover wins,
                   over every position, won or lost
    from games     (`--from-games`) the position after `ply` plies of each game in a
                   record file (`hexzd match --record`), so from the play of whoever
                   played them: random openings leave positions far easier than
                   strong play does. Where the player to move loses, the perfect
                   player moves first; so the agent always plays the winning side.
    openings       (`--openings`) every first move, played out by the agent from
                   the side it leaves won (after the perfect player's reply when
                   that is Black): n*n won openings, each converted or not, with
                   the agent's first losing move

An agent is the network with S simulations per move, as `hexzd htp` plays it
(PUCT, no noise), or S = 0 for the raw policy's best legal move; with
`--random-rollouts`, rollout MCTS, and S = 0 for a uniformly random move.
Rates come with 95% Wilson intervals. The state file is only read.
"""

import fcntl
import functools
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hexzd.config import SearchConfig
from hexzd.evaluation.stats import wilson
from hexzd.game.notation import cell_name
from hexzd.game.rules import BLACK, EMPTY, WHITE, Games
from hexzd.native import solver as kernels
from hexzd.native.board import canonical_indices
from hexzd.search.mcts import Evaluate
from hexzd.search.player import Player, subset

__all__ = [
    "GAMES_EMPTY",
    "LATE_MAX_SIZE",
    "MAX_EMPTY",
    "MAX_SIZE",
    "AgentResult",
    "OpeningGame",
    "OpeningsResult",
    "PerfectPlayer",
    "Rate",
    "Report",
    "Solver",
    "agent",
    "check_size",
    "first_ply",
    "measure",
    "positions_from_games",
    "openings",
    "undecided_positions",
]

MAX_SIZE = 5  # the empty 5x5 board is solved in under a second; the empty 6x6 not in five minutes
LATE_MAX_SIZE = 7  # the solver's bitmasks hold 7x7 (native/solver.py MAX_CELLS)
MAX_EMPTY = 29  # empty cells of a late position on boards above MAX_SIZE
# Positions of strong play are harder to prove than random ones: in 7x7 games between
# snapshots at 800 simulations, 20 positions with 29 empty cells took 15 s (up to 10 s
# each), with 27 1.1 s; a judge converting 181 of them at 29 took 10 to 15 minutes.
GAMES_EMPTY = 29  # empty cells of a position from recorded games, by default, above MAX_SIZE
DEFAULT_SIMS = (0, 64, 800)
DEFAULT_POSITIONS = 100
MAX_ANSWERS = 1_000_000  # positions a Solver remembers (about 150 MB), then it starts afresh


def check_size(n: int, late: bool = False) -> int:
    """n, if `hexzd perfect` can solve n x n boards (late: in late positions); else ValueError
    naming the limit."""
    if n > (LATE_MAX_SIZE if late else MAX_SIZE):
        raise ValueError(
            f"{n}x{n} is too large to solve: `hexzd perfect` takes boards up to {MAX_SIZE}x{MAX_SIZE}, "
            f"and late positions up to {LATE_MAX_SIZE}x{LATE_MAX_SIZE}"
        )
    return n


def first_ply(n: int) -> int:
    """The fewest plies of a test position's opening: none up to MAX_SIZE, then enough that at
    most MAX_EMPTY cells are empty."""
    return 0 if n <= MAX_SIZE else n * n - MAX_EMPTY


class Solver:
    """Exact results for n x n positions (n*n <= 63), checked, with one table for all.

    Boards are int8[n*n] in the engine's cells (EMPTY, BLACK, WHITE), with
    the player to move given; no swap rule. The positions must be undecided.
    """

    def __init__(self, n: int, table_bits: int | None = None):
        if not n >= 2 or n * n > kernels.MAX_CELLS:
            raise ValueError(f"the solver takes boards of 2x2 to 7x7, not {n}x{n}")
        self.n = n
        # 4M slots (105 MB) hold the empty 5x5 board's search; 4x4 needs far fewer.
        self.table = kernels.new_table(table_bits or (22 if n >= 5 else 16))
        self.stats = np.zeros(1, np.int64)
        # Answers by position: the kernel's table keeps results, not the moves that prove
        # them, and a match against perfect play overwrites it (5x5: 30M nodes for 64
        # games, in 4M slots), so a position met again would be searched again.
        self._answers: dict[tuple, object] = {}

    @property
    def nodes(self) -> int:
        """Positions searched so far, over every call."""
        return int(self.stats[kernels.NODES])

    def winner(self, board) -> int:
        return int(kernels.winner(self._board(board), self.n))

    def wins(self, board, to_play: int) -> bool:
        """Does the player to move win with perfect play?"""
        return self._answer("wins", board, to_play, lambda *position: bool(kernels.wins(*position)))

    def _answer(self, question: str, board, to_play: int, ask):
        """ask(board, to_play, n, *table, stats), remembered by question and position."""
        key = (question, np.asarray(board, np.int8).tobytes(), int(to_play))
        if key not in self._answers:
            if len(self._answers) >= MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = ask(*self._position(board, to_play), *self.table, self.stats)
        return self._answers[key]

    def load_answers(self, path) -> None:
        """Adds the answers that save_answers kept in `path`, if there is such a file."""
        path = Path(path)
        if path.exists():
            self._answers.update(self._read_answers(path))

    def save_answers(self, path) -> None:
        """Writes every answer to `path` (JSON), merged with those already there, for later Solvers
        of this size: judges of the same positions then search nothing they have proved before.

        Answers are exact whoever found them; a lost position's reply is one of the moves
        perfect defence may make, which may depend on what the solver searched before. Writers
        take turns (an flock on `path`.lock), and the file is replaced whole, never half written.
        """
        path = Path(path)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            answers = {**(self._read_answers(path) if path.exists() else {}), **self._answers}
            rows = [[q, "".join(map(str, board)), to_play, value] for (q, board, to_play), value in answers.items()]
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"board_size": self.n, "answers": rows}, f)
                os.replace(temp, path)
            finally:
                if os.path.exists(temp):  # a full disk, say: the old file stays whole
                    os.unlink(temp)

    def _read_answers(self, path: Path) -> dict:
        try:
            saved = json.loads(path.read_text())
            size, rows = saved["board_size"], saved["answers"]
            answers = {(q, bytes(map(int, board)), int(to_play)): value for q, board, to_play, value in rows}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a file of solved positions ({e})") from None
        if size != self.n:
            raise ValueError(f"{path} holds solved {size}x{size} positions, not {self.n}x{self.n}")
        return answers

    def winning_moves(self, board, to_play: int) -> np.ndarray:
        """bool[n*n]: the cells after which the player to move wins."""
        return kernels.winning_moves(*self._position(board, to_play), *self.table, self.stats)

    def reply(self, board, to_play: int) -> int:
        """The perfect player's move: a winning one if any (see native/solver.py's reply)."""
        return self._answer("reply", board, to_play, lambda *position: int(kernels.reply(*position)[0]))

    def keeps_win(self, board, to_play: int, cell: int) -> bool:
        """Does the move `cell` win, at once or with perfect play after it?"""
        board, to_play, _ = self._position(board, to_play)
        if board[cell] != EMPTY:
            raise ValueError(f"cell {cell} is occupied")
        after = board.copy()
        after[cell] = to_play
        if kernels.winner(after, self.n) == to_play:
            return True
        return not self.wins(after, WHITE if to_play == BLACK else BLACK)

    def _board(self, board) -> np.ndarray:
        board = np.ascontiguousarray(board, np.int8)
        if board.shape != (self.n * self.n,):
            raise ValueError(f"a board of shape {board.shape}, expected ({self.n * self.n},)")
        if not np.isin(board, (EMPTY, BLACK, WHITE)).all():
            raise ValueError("cells are EMPTY, BLACK or WHITE")
        return board

    def _position(self, board, to_play: int) -> tuple:
        board = self._board(board)
        if to_play not in (BLACK, WHITE):
            raise ValueError(f"to_play is BLACK or WHITE, not {to_play}")
        if kernels.winner(board, self.n) != EMPTY:
            raise ValueError("the game is over")
        return board, int(to_play), self.n


def undecided_positions(solver: Solver, count: int, seed: int, first: int = 0) -> Games:
    """`count` distinct undecided positions: random openings, the empty board first if first = 0.

    An opening's length is uniform in first .. n*n - 2; Black moves first and
    the players alternate. Fewer come back only where the board has fewer
    (tiny boards): the draw gives up after 100 tries per position.
    """
    n, nn = solver.n, solver.n * solver.n
    rng = np.random.default_rng(seed)
    lines: list = [[]] if first == 0 else []
    seen = {bytes(nn)}
    for _ in range(100 * count):
        if len(lines) >= count:
            break
        line = rng.permutation(nn)[: rng.integers(first, nn - 1)]
        board = np.zeros(nn, np.int8)
        board[line[0::2]], board[line[1::2]] = BLACK, WHITE
        if board.tobytes() not in seen and solver.winner(board) == EMPTY:
            seen.add(board.tobytes())
            lines.append(line)
    games = Games.new(len(lines), n)
    for ply in range(max(len(line) for line in lines)):
        games.play([line[ply] if ply < len(line) else -1 for line in lines])
    return games


def positions_from_games(solver: Solver, lines: list[list[int]], ply: int) -> tuple[Games, int]:
    """(positions, how many the perfect player moved first in): one from each game in `lines`
    (actions from the empty board) that lasted beyond `ply` plies, its position after them.

    Where that position is lost for the player to move, the perfect player makes that
    move, so that every position comes back won for the player to move. Repeats are
    dropped.
    """
    n, nn = solver.n, solver.n * solver.n
    if not 0 <= ply <= nn - 2:
        raise ValueError(f"a position after {ply} plies: {n}x{n} games take 0 to {nn - 2}")
    kept, seen = [], set()
    for line in lines:
        board = np.zeros(nn, np.int8)
        board[line[:ply:2]], board[line[1:ply:2]] = BLACK, WHITE
        if len(line) > ply and board.tobytes() not in seen and solver.winner(board) == EMPTY:
            seen.add(board.tobytes())
            kept.append(line[:ply])
    if not kept:
        raise ValueError(f"no game lasted beyond {ply} plies")
    games = Games.new(len(kept), n)
    for i in range(ply):
        games.play([line[i] for line in kept])
    lost = [not solver.wins(board, to_play) for board, to_play in zip(games.board, games.to_play)]
    games.play([solver.reply(games.board[b], games.to_play[b]) if lost[b] else -1 for b in range(games.batch)])
    return games, sum(lost)


# -- agents: each has a name and moves(games) -> int64[B], -1 for finished games


class PolicyAgent:
    """The raw network: the legal move its policy likes best, no search."""

    def __init__(self, evaluate: Evaluate):
        self.evaluate, self.name = evaluate, "net-0"

    def moves(self, games: Games) -> np.ndarray:
        n = games.n
        logits, _ = self.evaluate(games.features())
        # The policy is indexed as the network sees the board (canonical
        # indices, native/board.py canonical_index): read it back by cell.
        index = canonical_indices(games.board, games.to_play)
        logits = np.take_along_axis(logits.reshape(-1, n * n), index, axis=1)
        logits[games.board != EMPTY] = -np.inf
        return np.where(games.done, -1, logits.argmax(axis=1))


class RandomAgent:
    """A uniformly random legal move: rollout MCTS with no simulations."""

    def __init__(self, seed: int):
        self.rng, self.name = np.random.default_rng(seed), "random"

    def moves(self, games: Games) -> np.ndarray:
        out = np.full(games.batch, -1, np.int64)
        for b in np.flatnonzero(~games.done):
            out[b] = self.rng.choice(np.flatnonzero(games.board[b] == EMPTY))
        return out


@functools.cache
def shared_solver(n: int) -> Solver:
    """One solver per board size and process, for the perfect player and the perfect-play
    checks alike: models meet the same positions, so its table (105 MB on 5x5) answers
    most of the next one's questions."""
    return Solver(n)


class PerfectPlayer:
    """Perfect play: the solver's reply, a winning move whenever there is one; when
    lost, the move that makes the winner work (native/solver.py's reply).

    The ladder's top reference on the boards it solves (hexzd.evaluation.scale):
    a player near perfect meets it at even odds, where a game says the most.
    """

    def __init__(self, n: int):
        self.solver, self.name = shared_solver(check_size(n)), "perfect"

    def moves(self, games: Games) -> np.ndarray:
        out = np.full(games.batch, -1, np.int64)
        for b in np.flatnonzero(~games.done):
            out[b] = self.solver.reply(games.board[b], int(games.to_play[b]))
        return out


def agent(sims: int, evaluate: Evaluate | None, config: SearchConfig | None = None, seed: int = 0):
    """The agent at `sims` simulations: network (evaluate) or rollout MCTS (None)."""
    if sims == 0:
        return PolicyAgent(evaluate) if evaluate is not None else RandomAgent(seed)
    # As `hexzd htp` plays: PUCT, whose move is the most visited (or a proven win).
    config = (config or SearchConfig()).model_copy(update={"gumbel": False})
    return Player(sims, evaluate, config, seed=seed)


# -- the measurements ---------------------------------------------------------------


@dataclass
class Rate:
    """k of n, with its 95% Wilson interval."""

    hits: int
    total: int

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.total)

    def as_dict(self) -> dict:
        lo, hi = self.interval
        return {"hits": self.hits, "total": self.total, "rate": self.rate, "lo": lo, "hi": hi}

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.rate:.3f} [{lo:.2f}, {hi:.2f}]"


@dataclass
class AgentResult:
    name: str
    sims: int
    perfect_moves: Rate
    conversion: Rate
    seconds: float
    slip_plies: list[int]  # where conversion failed: the ply (from the empty board) of the losing move


@dataclass
class Report:
    board_size: int
    seed: int
    first_ply: int  # the shortest opening of a position; from games, the plies taken
    positions: int
    won: int  # positions won for the player to move
    lost: int
    value_sign: Rate | None  # the raw network's; None without one
    agents: list[AgentResult]
    solver_nodes: int
    solver_seconds: float
    replied: int = 0  # positions from games lost for the player to move: the perfect player moved first

    def as_dict(self) -> dict:
        d = asdict(self)
        d["value_sign"] = self.value_sign.as_dict() if self.value_sign else None
        for a, result in zip(d["agents"], self.agents):
            a["perfect_moves"] = result.perfect_moves.as_dict()
            a["conversion"] = result.conversion.as_dict()
        return d


class _Clock:
    """Seconds spent inside `with clock:` blocks, added up: the solver's, apart from the agents'."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start


@dataclass
class PlayOut:
    """Games of an agent against perfect defence, from positions it wins (bool and int64 [B])."""

    first: np.ndarray  # its first move kept the win
    won: np.ndarray  # it won the game
    slip: np.ndarray  # its first move that lost the win; -1 where none did
    slip_ply: np.ndarray  # that move's ply from the empty board; -1 where none
    moves: list[list[int]]  # every move from the start position, the defence's included


def play_out(player, solver: Solver, games: Games, clock: _Clock, should_stop=lambda: False) -> PlayOut:
    """The agent to move in every game, against perfect defence.

    A game stops at the agent's first move that loses the win, since perfect
    defence then wins it. `should_stop` is asked once a ply; when it says
    so, the results are partial and the caller drops them.
    """
    games, me = games.copy(), games.to_play.copy()
    first = np.zeros(games.batch, np.bool_)
    slip, slip_ply = np.full(games.batch, -1, np.int64), np.full(games.batch, -1, np.int64)
    lines = [[] for _ in range(games.batch)]
    alive = np.arange(games.batch)  # the games the agent still wins, agent to move
    for ply in range(games.n * games.n):
        if len(alive) == 0 or should_stop():
            break
        moves = player.moves(subset(games, alive))
        with clock:
            kept = np.array(
                [solver.keeps_win(games.board[b], games.to_play[b], moves[i]) for i, b in enumerate(alive)], np.bool_
            )
        if ply == 0:
            first = kept
        slip[alive[~kept]] = moves[~kept]
        slip_ply[alive[~kept]] = games.ply[alive[~kept]]
        _record(lines, alive, moves)
        games.play(_spread(moves, alive, games.batch))
        alive = alive[kept & ~games.done[alive]]
        with clock:
            replies = np.array([solver.reply(games.board[b], games.to_play[b]) for b in alive], np.int64)
        _record(lines, alive, replies)
        games.play(_spread(replies, alive, games.batch))
    return PlayOut(first, games.winner == me, slip, slip_ply, lines)


def _record(lines: list[list[int]], index: np.ndarray, moves: np.ndarray) -> None:
    for b, move in zip(index, moves):
        lines[b].append(int(move))


def _spread(moves: np.ndarray, index: np.ndarray, batch: int) -> np.ndarray:
    """int64[batch]: moves[i] for game index[i], -1 for the other games."""
    out = np.full(batch, -1, np.int64)
    out[index] = moves
    return out


def measure(
    n: int,
    evaluate: Evaluate | None,
    sims=DEFAULT_SIMS,
    positions: int = DEFAULT_POSITIONS,
    seed: int = 0,
    config: SearchConfig | None = None,
    solver: Solver | None = None,
    on_agent=None,
    should_stop=lambda: False,
    from_games: tuple[list[list[int]], int] | None = None,
) -> Report | None:
    """Every figure of the module docstring for one network (or rollouts, evaluate=None).

    from_games: (games as actions, ply) for positions_from_games' positions, not
    random ones. None if `should_stop()` said so on the way (a worker asked to stop).
    """
    check_size(n, late=True)
    solver, clock = solver or Solver(n), _Clock()
    with clock:
        games, replied = (
            positions_from_games(solver, *from_games)
            if from_games
            else (undecided_positions(solver, positions, seed, first_ply(n)), 0)
        )
        won = np.array([solver.wins(games.board[b], games.to_play[b]) for b in range(games.batch)], np.bool_)
    value_sign = None
    if evaluate is not None:
        values = evaluate(games.features())[1]
        value_sign = Rate(int(((values > 0) == won).sum()), games.batch)
    winning = subset(games, np.flatnonzero(won))
    results = []
    for s in sims:
        start, before = time.perf_counter(), clock.seconds
        player = agent(s, evaluate, config, seed)
        out = play_out(player, solver, winning, clock, should_stop)
        if should_stop():
            return None
        seconds = time.perf_counter() - start - (clock.seconds - before)
        rates = Rate(int(out.first.sum()), winning.batch), Rate(int(out.won.sum()), winning.batch)
        result = AgentResult(player.name, s, *rates, seconds, sorted(int(p) for p in out.slip_ply if p >= 0))
        results.append(result)
        if on_agent:
            on_agent(result)
    return Report(
        n,
        seed,
        from_games[1] if from_games else first_ply(n),
        games.batch,
        int(won.sum()),
        int((~won).sum()),
        value_sign,
        results,
        solver.nodes,
        clock.seconds,
        replied,
    )


# -- every opening ------------------------------------------------------------------


@dataclass
class OpeningGame:
    """One first move, its winning side played by the agent against perfect defence."""

    opening: str  # Black's first move
    colour: str  # the agent's: "black" where the opening wins, else "white"
    converted: bool
    slip: str | None  # the agent's first move that lost the win
    moves: str  # the game from the empty board, to the end or the slip's punishment


@dataclass
class OpeningsResult:
    name: str
    sims: int
    games: list[OpeningGame]
    seconds: float

    def rate(self, colour: str | None = None) -> Rate:
        games = [g for g in self.games if colour in (None, g.colour)]
        return Rate(sum(g.converted for g in games), len(games))

    def as_dict(self) -> dict:
        return {
            "agent": self.name,
            "sims": self.sims,
            "converted": self.rate().as_dict(),
            "black": self.rate("black").as_dict(),
            "white": self.rate("white").as_dict(),
            "seconds": self.seconds,
            "games": [asdict(g) for g in self.games],
        }


def openings(
    n: int,
    evaluate: Evaluate | None,
    sims=DEFAULT_SIMS,
    seed: int = 0,
    config: SearchConfig | None = None,
    solver: Solver | None = None,
    on_agent=None,
) -> list[OpeningsResult]:
    """Every first move, played out from the side it leaves won, by each agent.

    After Black's first move one side wins with perfect play. Where it is
    White, the agent takes White and moves next; where it is Black, the
    perfect player answers as White first and the agent goes on as Black.
    Either way the agent must keep a won game against perfect defence: n*n
    won openings, the headline of `hexzd perfect --openings`.
    """
    check_size(n)
    solver, clock = solver or Solver(n), _Clock()
    start = Games.new(n * n, n)
    start.play(np.arange(n * n))
    with clock:
        white_wins = np.array([solver.wins(board, WHITE) for board in start.board], np.bool_)
        replies = np.array([-1 if w else solver.reply(board, WHITE) for board, w in zip(start.board, white_wins)])
    start.play(replies)
    results = []
    for s in sims:
        began, before = time.perf_counter(), clock.seconds
        player = agent(s, evaluate, config, seed)
        out = play_out(player, solver, start, clock)
        games = []
        for cell in range(n * n):
            line = [cell] + ([int(replies[cell])] if replies[cell] >= 0 else []) + out.moves[cell]
            slip = int(out.slip[cell])
            games.append(
                OpeningGame(
                    cell_name(cell, n),
                    "white" if white_wins[cell] else "black",
                    bool(out.won[cell]),
                    cell_name(slip, n) if slip >= 0 else None,
                    " ".join(cell_name(a, n) for a in line),
                )
            )
        result = OpeningsResult(player.name, s, games, time.perf_counter() - began - (clock.seconds - before))
        results.append(result)
        if on_agent:
            on_agent(result)
    return results
