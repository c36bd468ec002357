"""The validating Python layer over the Hex kernels in `hexzd.native.board`.

The kernels trust their input; this module checks it, so that a bad move
from a user or a corrupt record raises a clear error instead of corrupting a
board.
"""

from dataclasses import dataclass

import numpy as np

from hexzd.game.notation import cell_name
from hexzd.native import board as kernels
from hexzd.native.board import BLACK, EMPTY, NUM_PLANES, WHITE

__all__ = ["BLACK", "EMPTY", "WHITE", "NUM_PLANES", "Games", "IllegalMove", "Positions", "replay"]

MIN_SIZE, MAX_SIZE = 2, 19


class IllegalMove(ValueError):
    """A move that the rules do not allow in that position."""


def check_size(n: int) -> int:
    if not MIN_SIZE <= int(n) <= MAX_SIZE:
        raise ValueError(f"board size {n} is not between {MIN_SIZE} and {MAX_SIZE}")
    return int(n)


@dataclass
class Games:
    """B Hex games on n x n boards, one array per field (see native/board.py)."""

    n: int
    swap: bool
    board: np.ndarray  # int8[B, n*n]
    parent: np.ndarray  # int16[B, n*n + 4]
    to_play: np.ndarray  # int8[B]
    winner: np.ndarray  # int8[B]
    ply: np.ndarray  # int16[B]

    @classmethod
    def new(cls, batch: int, n: int, swap: bool = False) -> "Games":
        n = check_size(n)
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        games = cls(
            n=n,
            swap=bool(swap),
            board=np.zeros((batch, n * n), np.int8),
            parent=np.zeros((batch, n * n + 4), np.int16),
            to_play=np.zeros(batch, np.int8),
            winner=np.zeros(batch, np.int8),
            ply=np.zeros(batch, np.int16),
        )
        games.reset()
        return games

    @property
    def batch(self) -> int:
        return self.board.shape[0]

    @property
    def arrays(self) -> tuple:
        """The state arrays in the order the kernels take them."""
        return self.board, self.parent, self.to_play, self.winner, self.ply

    @property
    def done(self) -> np.ndarray:
        return self.winner != EMPTY

    def reset(self, mask=None) -> None:
        """Empties every board, or those where mask is true."""
        mask = np.ones(self.batch, np.bool_) if mask is None else np.asarray(mask, np.bool_)
        kernels.reset(*self.arrays, mask)

    def copy(self) -> "Games":
        return Games(self.n, self.swap, *(a.copy() for a in self.arrays))

    def legal(self) -> np.ndarray:
        """bool[B, n*n + 1]: the legal actions of each game, swap last."""
        out = np.empty((self.batch, self.n * self.n + 1), np.bool_)
        return kernels.legal(self.board, self.winner, self.ply, self.swap, out)

    def play(self, actions) -> None:
        """Plays actions[b] in game b; -1 skips a game. Raises IllegalMove."""
        actions = np.asarray(actions, np.int64).reshape(-1)
        if actions.shape[0] != self.batch:
            raise ValueError(f"{actions.shape[0]} actions for {self.batch} games")
        nn = self.n * self.n
        games = np.flatnonzero(actions >= 0)
        moves = actions[games]
        ok = (moves <= nn) & self.legal()[games, np.minimum(moves, nn)]
        if not ok.all():
            b = games[np.argmin(ok)]
            raise IllegalMove(self._why_illegal(b, int(actions[b])))
        kernels.play(*self.arrays, actions)

    def resign(self, mask) -> None:
        """The player to move gives up where mask is true: the other colour wins there."""
        mask = np.asarray(mask, np.bool_) & ~self.done
        self.winner[mask] = np.where(self.to_play[mask] == BLACK, WHITE, BLACK)

    def _why_illegal(self, b: int, a: int) -> str:
        nn = self.n * self.n
        if self.winner[b] != EMPTY:
            return "the game is over"
        if a > nn:
            return f"action {a} is off the {self.n}x{self.n} board"
        if a == nn:
            return "swap is only legal as White's first move, with the swap rule on"
        return f"{cell_name(a, self.n)} is occupied"

    def codes(self, out=None) -> np.ndarray:
        """uint8[B, n*n + 1]: the compact network input of each game (native/board.py codes_one)."""
        if out is None:
            out = np.empty((self.batch, self.n * self.n + 1), np.uint8)
        return kernels.codes(self.board, self.to_play, self.ply, self.swap, out)

    def features(self, out=None) -> np.ndarray:
        """float32[B, 4, n, n]: the canonical planes of each game, as the trainer stores them."""
        if out is None:
            out = np.empty((self.batch, NUM_PLANES, self.n, self.n), np.float32)
        return kernels.features(self.board, self.to_play, self.ply, self.swap, out)

    def playouts(self, rng: np.ndarray, count: int = 1) -> np.ndarray:
        """float32[B]: the mean result of random fills, for the player to move."""
        if rng.dtype != np.uint64 or rng.shape != (self.batch,):
            raise ValueError("rng must be uint64[B]; see hexzd.native.rng.seeds")
        return kernels.fill_playouts(self.board, self.to_play, self.winner, rng, int(count))


@dataclass
class Positions:
    """The training positions of one recorded game, in canonical form."""

    planes: np.ndarray  # float32[T, 4, n, n]
    policy: np.ndarray  # float32[T, n*n], the search distribution
    value: np.ndarray  # float32[T], +1 where the player to move went on to win
    winner: int


def replay(n: int, swap: bool, actions, policies) -> Positions:
    """Rebuilds a recorded game's positions. Raises IllegalMove on a bad record."""
    n = check_size(n)
    actions = np.asarray(actions, np.int16)
    policies = np.asarray(policies, np.float32)
    if policies.shape != (actions.shape[0], n * n + 1):
        raise ValueError(f"policies of shape {policies.shape} for {actions.shape[0]} moves on {n}x{n}")
    planes, policy, movers, winner = kernels.replay(actions, policies, n, bool(swap))
    if winner < 0:
        raise IllegalMove(f"move {-winner} of the record is illegal")
    if winner == EMPTY:
        raise ValueError("the record ends before the game is decided")
    value = np.where(movers == winner, 1.0, -1.0).astype(np.float32)
    return Positions(planes, policy, value, int(winner))
